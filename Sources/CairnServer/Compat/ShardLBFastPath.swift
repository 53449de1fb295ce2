import CairnAuth
import CairnCompat
import CairnJSON
import CairnSQLite
import HTTPTypes
import NIOCore

/// Seed 004's `/write` and `/read` on the event loop (`FastDataPath`), as CairnDB's own data
/// endpoints are: its workload is these two, and the router's path (a task per request, its
/// middleware and body collection) was most of a request's cost. The same planning as the router's
/// handlers (`planWrite`, `planRead`), the same checks and answers; what needs waiting (the layout not
/// read within the last second, the students' table not made yet, an id a fresher layout may place)
/// runs the router's handler body in a task.
extension ShardLBAPI: FastDataServer {
    func fastRequest(_ head: FastHead, remote: String) -> FastRequest? {
        guard head.method == .post, let path = head.path else { return nil }
        let endpoint: FastRequest.Endpoint
        switch path {
        case "/write": endpoint = .write
        case "/read": endpoint = .read
        default: return nil
        }
        // Chunked, waiting for a 100, or closing: the router's.
        guard head.field(.transferEncoding) == nil, head.field(.expect) == nil, head.field(.connection).map({ !$0.lowercased().contains("close") }) ?? true,
              let length = head.field(.contentLength).flatMap({ Int($0) }), (0...api.fastPathMaxBodyBytes).contains(length) else { return nil }
        // A refusal is the router's to answer (in the seed's shape, after the catalog is looked at again).
        guard let who = try? api.compatPrincipal(), (try? require(who, endpoint == .write ? .write : .read)) != nil else { return nil }
        return FastRequest(endpoint: endpoint, database: ShardLB.database, principal: who)
    }

    func serveFast(_ request: FastRequest, body: ByteBuffer, reply: @escaping @Sendable (FastResponse) -> Void) {
        let started = ContinuousClock.now
        let path = request.endpoint == .write ? "/write" : "/read"
        let finish: @Sendable (Reply) -> Void = { answer in
            RequestMetrics.record(method: "POST", endpoint: path, status: answer.status, since: started)
            reply(answer.fastResponse())
        }
        let answered: @Sendable (() throws -> JSON) -> Void = { body in
            do { finish(API.jsonReply(200, try body())) } catch { finish(self.failure(error)) }
        }
        let who = request.principal
        do {
            let json = try Self.parsed(Array(buffer: body), maxValues: api.options.maxRequestValues)
            switch request.endpoint {
            case .write:
                guard case .array? = json["data"] else { throw CompatFailure(status: 422, body: Self.missing(["data"])) }
                guard let layout = cachedLayout, let plan = try Self.planWrite(json, layout, fresh: false), plan.statements.isEmpty || tableExists else {
                    return slowly(answered) { try await self.write(json, who) }
                }
                if plan.statements.isEmpty { return answered { plan.reply } }
                api.audit.record(who, statements: plan.statements, database: ShardLB.database)
                // Placed by the records' Stud_ids, not by planning the inserts' text.
                api.writeRowsFast(plan.statements, keys: plan.keys, db: ShardLB.database, table: ShardLB.table.lowercased(),
                                  keyColumns: [ShardLB.key.lowercased()], atomic: true) { result in
                    answered {
                        try PlannedWrite.check(try result.get().results)
                        return plan.reply
                    }
                }
            case .read:
                _ = try Self.readRange(json)
                guard let layout = cachedLayout, let plan = try Self.planRead(json, layout, fresh: false) else {
                    return slowly(answered) { try await self.read(json, who) }
                }
                guard let statement = plan.statement else { return answered { try plan.reply(nil) } }
                // Placed by the Stud_id range the statement reads (`LBLayout.select`'s two bounds), not by planning its text.
                let (low, high) = (statement.positional.first ?? .null, statement.positional.last ?? .null)
                api.readKeyRangeFast(statement, db: ShardLB.database, table: ShardLB.table.lowercased(), key: ShardLB.key.lowercased(), from: low, to: high,
                                     consistency: .linearizable) { result in
                    answered { try plan.reply(try result.get().results[0]) }
                }
            }
        } catch {
            finish(failure(error))
        }
    }

    private func slowly(_ answered: @escaping @Sendable (() throws -> JSON) -> Void, _ body: @escaping @Sendable () async throws -> JSON) {
        Task {
            let result: Result<JSON, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            answered { try result.get() }
        }
    }
}
