import CairnAuth
import CairnCluster
import CairnNode
import CairnQuery
import CairnRaft
import CairnRouter
import CairnSQLite
import Foundation
import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore


/// The fast path's side of the API (`FastDataPath` keeps HTTP's order). Every step is one the
/// router's handlers take, in their order (`respond`, `execute`, `query`, `write`, `read`); what this
/// side cannot decide without waiting (a token not seen before, a write or read across shards, a
/// refusal that a fresher catalog might lift) goes the router's way, before anything was done, or
/// through the same async functions, after.
extension API: FastDataServer {
    /// Bodies the fast path collects, at most (the router takes the rest, with the API's own limit).
    static let fastPathMaxBodyBytes = 64 << 10
    /// Within the API's own limit (`--max-body-bytes`): a body over it is the router's to refuse (413).
    var fastPathMaxBodyBytes: Int { min(Self.fastPathMaxBodyBytes, options.maxBodyBytes) }

    func fastRequest(_ head: FastHead, remote: String) -> FastRequest? {
        guard head.method == .post, let path = head.path, path.utf8.count <= 160 else { return nil }
        let bytes = Array(path.utf8)
        let prefix = Array("/v1/db/".utf8)
        guard bytes.starts(with: prefix), let slash = bytes[prefix.count...].firstIndex(of: UInt8(ascii: "/")) else { return nil }
        let name = bytes[prefix.count..<slash], tail = bytes[(slash + 1)...]
        let endpoint: FastRequest.Endpoint
        if tail.elementsEqual("execute".utf8) {
            endpoint = .write
        } else if tail.elementsEqual("query".utf8) {
            endpoint = .read
        } else {
            return nil
        }
        // A plain name: anything escaped or unusual is the router's to decode and judge.
        guard !name.isEmpty, name.allSatisfy(Self.isPlainNameByte) else { return nil }
        // Forwarded between nodes, cross-origin, closing, chunked or waiting for a 100: the router's.
        guard head.field(Self.hops) == nil, options.corsOrigins.isEmpty || head.field(.origin) == nil, head.field(.transferEncoding) == nil,
              head.field(.expect) == nil, head.field(.connection).map({ !$0.lowercased().contains("close") }) ?? true,
              let length = head.field(.contentLength).flatMap({ Int($0) }), (0...fastPathMaxBodyBytes).contains(length) else { return nil }
        let database = String(decoding: name, as: UTF8.self)
        guard let who = auth.knownPrincipal(authorization: head.field(.authorization), remote: remote) else { return nil }
        if auth.enabled {
            // A refusal may be lifted by a grant given through another node a moment ago: the router's
            // path looks at the committed catalog before it refuses.
            guard (try? auth.require(who, endpoint == .write ? .write : .read, database: database)) != nil else { return nil }
        }
        return FastRequest(endpoint: endpoint, database: database, principal: who)
    }

    static func isPlainNameByte(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39) || b == 0x5F || b == 0x2D
    }

    func serveFast(_ request: FastRequest, body: ByteBuffer, reply: @escaping @Sendable (FastResponse) -> Void) {
        let started = ContinuousClock.now
        let finish: @Sendable (Reply) -> Void = { answer in
            RequestMetrics.record(method: "POST", endpoint: request.endpoint == .write ? "/v1/db/{db}/execute" : "/v1/db/{db}/query", status: answer.status, since: started)
            reply(answer.fastResponse())
        }
        let answered: @Sendable (Result<Answer, any Error>, (Answer) -> Reply) -> Void = { result, body in
            switch result {
            case .success(let answer): finish(body(answer))
            case .failure(let error): finish(self.failure(error))
            }
        }
        let db = request.database
        do {
            switch request.endpoint {
            case .write:
                let (statements, atomic) = try writeArguments(Array(buffer: body))
                audit.record(request.principal, statements: statements, database: db)
                writeFast(statements, db: db, atomic: atomic) { answered($0, Self.executed) }
            case .read:
                let (statements, consistency) = try readArguments(Array(buffer: body))
                readFast(statements, db: db, consistency: consistency) { answered($0, Self.queried) }
            }
        } catch {
            finish(failure(error))
        }
    }

    /// `write` without a task when it goes to one group (the database's home group, or the one shard
    /// its statements are pinned to) and this node holds a copy: its first try, on this node's copy or
    /// as one call to the leader this node names. Whatever follows a first try on the router's path
    /// (waiting out a transaction across shards that holds the group, a table sharded through another
    /// node a moment ago, a shard map changed by a split) follows it here, in a task; a plan that is
    /// not one group's, or a try that did not commit (no leader known), is `write` itself.
    func writeFast(_ statements: [SQLStatement], db: String, atomic: Bool, _ done: @escaping @Sendable (Result<Answer, any Error>) -> Void) {
        let (catalog, shards) = currentShardView(db)
        guard catalog.exists, let database = catalog.databases[db], !Catalog.isInternalName(db),
              statements.allSatisfy({ Self.declaresNoShards($0.sql) && !Self.dropsIndex($0.sql) }) else {
            return slowly(done) { try await self.write(statements, db: db, atomic: atomic) }
        }
        var command = SQLCommand.now(statements, atomic: atomic)
        var group = database.group
        var shard: Int?
        if let view = shards {
            // Planned as `writeSharded` plans; anything but one shard's write (or a refusal, which the
            // router's path reports) is the router's.
            switch try? planWrite(statements, db: db, view: view, firstAttempt: true) {
            case .unsharded?:
                break
            case .parts(let parts, let reindexed)? where parts.count == 1 && reindexed.isEmpty:
                let (part, planned) = parts.first!
                command = SQLCommand.now(planned.statements, atomic: atomic)
                command.mapVersion = view.map.version
                group = view.group(ofPart: part)
                shard = part
            default:
                return slowly(done) { try await self.write(statements, db: db, atomic: atomic) }
            }
        }
        writeOneGroup(command, group: group, shard: shard, statements, db: db, atomic: atomic, done)
    }

    /// Statements that insert rows of a sharded `table`, one row key in `keys` (the values of
    /// `keyColumns`, lowercased, which must be the table's shard key) per row, placed by those keys (`WritePlanner.rowShard`, the planner's own placement of an INSERT's rows) instead of by
    /// planning their text: for an API that built the INSERTs from a request it has already read (seed
    /// 004's `/write`). Rows of one shard go there unchanged, as a planned single-shard write does (and
    /// the shard's guard refuses any row not its own); anything else is `writeFast`'s.
    func writeRowsFast(_ statements: [SQLStatement], keys: [[SQLValue]], db: String, table: String, keyColumns: [String], atomic: Bool,
                       _ done: @escaping @Sendable (Result<Answer, any Error>) -> Void) {
        let (catalog, shards) = currentShardView(db)
        guard catalog.exists, catalog.databases[db] != nil, !Catalog.isInternalName(db), let view = shards, !keys.isEmpty,
              let schema = try? schemaCopies.schema(database: db, tables: view.tables), let described = schema.sharded[table],
              described.keyColumns == keyColumns else {
            return writeFast(statements, db: db, atomic: atomic, done)
        }
        let planner = WritePlanner(schema: schema, map: view.map)
        guard let shard = planner.rowShard(described, key: keys[0]), keys.allSatisfy({ planner.rowShard(described, key: $0) == shard }) else {
            return writeFast(statements, db: db, atomic: atomic, done)
        }
        var command = SQLCommand.now(statements, atomic: atomic)
        command.mapVersion = view.map.version
        writeOneGroup(command, group: view.groups[shard], shard: shard, statements, db: db, atomic: atomic, done)
    }

    /// The first try of a write that goes to one group (`shard`: the shard it is, when it is one), and
    /// what follows it, as `writeFast` describes.
    private func writeOneGroup(_ command: SQLCommand, group: GroupID, shard: Int?, _ statements: [SQLStatement], db: String, atomic: Bool,
                               _ done: @escaping @Sendable (Result<Answer, any Error>) -> Void) {
        guard let first = groupRouter.executeHere(command, group: group) else {
            return slowly(done) { try await self.write(statements, db: db, atomic: atomic) }
        }
        let target = group, pinned = shard
        let timeoutMillis = options.requestTimeoutMillis
        first.whenComplete { result in
            switch result {
            case .success(.routed(let routed)) where routed.results.contains(where: { $0.error == TransactionStep.lockedMessage }):
                // Nothing was written. Once a replica here shows the group free, the general path again
                // (`executeWaitingOutLocks`: held again, it waits in line at the group's leader).
                self.slowly(done) {
                    await self.waitUntilFree(target, until: ContinuousClock.now + .milliseconds(timeoutMillis))
                    return try await self.write(statements, db: db, atomic: atomic)
                }
            case .success(.routed(let routed)) where pinned != nil && Self.refusedWholly(routed.results, atomic: atomic) != nil:
                // The shard split under this node's catalog copy, and nothing was written: `write`
                // reads the committed map when refused again.
                self.slowly(done) { try await self.write(statements, db: db, atomic: atomic) }
            case .success(.routed(let routed)) where pinned != nil:
                // Counted once per request, as `writeSharded` counts (its own tries are not counted again).
                Self.countShard(db, pinned!, "write")
                done(.success(Answer(results: routed.results)))
            case .success(.routed(let routed)) where Self.missedShardedTable(routed.results, allFailed: true):
                self.slowly(done) { try await self.writtenHome(routed, statements, db: db, atomic: atomic) }
            case .success(.routed(let routed)):
                done(.success(Answer(results: routed.results, node: routed.node, index: routed.index)))
            case .success(.retry):
                self.slowly(done) { try await self.write(statements, db: db, atomic: atomic) }
            case .failure(let error):
                done(.failure(error))
            }
        }
    }

    /// `read` without a task when it goes to one group this node holds a copy of (the database's home
    /// group, or the one shard a single statement is pinned to), as `writeFast` is for `write`.
    func readFast(_ statements: [SQLStatement], db: String, consistency: ReadConsistency, _ done: @escaping @Sendable (Result<Answer, any Error>) -> Void) {
        let (catalog, shards) = currentShardView(db)
        guard catalog.exists, let database = catalog.databases[db], !Catalog.isInternalName(db) else {
            return slowly(done) { try await self.read(statements, db: db, consistency: consistency) }
        }
        if let view = shards {
            // One statement (a point read, most often): its text's prepared plan, or that it is the home group's, in one lookup.
            if statements.count == 1 {
                switch Result(catching: { try schemaCopies.preparedRead(statements[0].sql, database: db, tables: view.tables) }) {
                case .success(let prepared?):
                    return readShardFast(statements[0], prepared, db: db, view: view, consistency: consistency, done)
                case .success(nil):
                    break
                case .failure:
                    // The router's path refuses it with the planner's reason.
                    return slowly(done) { try await self.read(statements, db: db, consistency: consistency) }
                }
            } else if statements.contains(where: { Self.mentions($0.sql, view.tables) }) {
                return slowly(done) { try await self.read(statements, db: db, consistency: consistency) }
            }
        }
        guard let first = groupRouter.queryHere(statements + [Self.shardStateQuery], group: database.group, consistency: consistency) else {
            return slowly(done) { try await self.read(statements, db: db, consistency: consistency) }
        }
        first.whenComplete { result in
            switch result {
            case .success(.routed(var routed)):
                // As `readHome`: a transaction across shards prepared in the home group is waited out there.
                let state = Self.shardState(routed.results.count == statements.count + 1 ? routed.results[statements.count] : StatementResult())
                guard state.prepared == 0 else {
                    return self.slowly(done) { try await self.read(statements, db: db, consistency: consistency) }
                }
                routed.results = Array(routed.results.prefix(statements.count))
                guard !Self.missedShardedTable(routed.results, allFailed: false) else {
                    let home = routed
                    return self.slowly(done) { try await self.readHome(home, statements, db: db, consistency: consistency) }
                }
                done(.success(Answer(results: routed.results, node: routed.node, index: routed.index)))
            case .success(.retry):
                self.slowly(done) { try await self.read(statements, db: db, consistency: consistency) }
            case .failure(let error):
                done(.failure(error))
            }
        }
    }

    /// A single statement pinned to one shard (a point read), read as `readWaitingOutTransactions`
    /// reads it; any other shape, a shard held by a transaction, or a shard map changed under this
    /// node's copy, is `read`'s.
    private func readShardFast(_ statement: SQLStatement, _ prepared: (ShardingSchema, PreparedRead), db: String, view: ShardView,
                               consistency: ReadConsistency, _ done: @escaping @Sendable (Result<Answer, any Error>) -> Void) {
        let slow: @Sendable () -> Void = { self.slowly(done) { try await self.read([statement], db: db, consistency: consistency) } }
        guard case .single(let shard)? = try? ReadPlanner(schema: prepared.0, map: view.map).plan(statement, prepared: prepared.1) else { return slow() }
        readOneShard(statement, shard: shard, db: db, view: view, consistency: consistency, slow: slow, done)
    }

    /// A read of one statement over a sharded `table` whose rows' `key` (lowercased) all lie between
    /// `lower` and `upper`, placed by those bounds when `key` is the table's shard key (`ReadPlanner.keyRangeShards`) instead of by planning its text:
    /// for an API that built the statement from a request it has already read (seed 004's `/read`). On
    /// one shard, read as a pinned point read is; otherwise, or when anything needs waiting, `readFast`'s.
    func readKeyRangeFast(_ statement: SQLStatement, db: String, table: String, key: String, from lower: SQLValue, to upper: SQLValue,
                          consistency: ReadConsistency, _ done: @escaping @Sendable (Result<Answer, any Error>) -> Void) {
        let (catalog, shards) = currentShardView(db)
        guard catalog.exists, let view = shards, catalog.databases[db] != nil, !Catalog.isInternalName(db),
              let schema = try? schemaCopies.schema(database: db, tables: view.tables), let described = schema.sharded[table],
              described.keyColumns == [key],
              let pinned = ReadPlanner(schema: schema, map: view.map).keyRangeShards(described, from: lower, to: upper), pinned.count == 1 else {
            return readFast([statement], db: db, consistency: consistency, done)
        }
        let slow: @Sendable () -> Void = { self.slowly(done) { try await self.read([statement], db: db, consistency: consistency) } }
        readOneShard(statement, shard: pinned[0], db: db, view: view, consistency: consistency, slow: slow, done)
    }

    /// `statement` on `shard` of `view`, judged as `readWaitingOutTransactions` judges a shard's answer.
    private func readOneShard(_ statement: SQLStatement, shard: Int, db: String, view: ShardView, consistency: ReadConsistency,
                              slow: @escaping @Sendable () -> Void, _ done: @escaping @Sendable (Result<Answer, any Error>) -> Void) {
        let asked = Self.shardReadStatements(statement)
        let (mapVersion, arcVersion) = (view.map.version, view.map.arcVersions[shard])
        guard let first = groupRouter.queryHere(asked, group: view.groups[shard], consistency: consistency) else { return slow() }
        first.whenComplete { result in
            switch result {
            case .success(.routed(let routed)):
                let outcome: ShardReadOutcome
                do {
                    outcome = try Self.shardRead(routed.results, asked: asked.count, also: false, mapVersion: mapVersion,
                                                 arcVersion: arcVersion, consistency: consistency)
                } catch is StaleShardMap {
                    // `read` plans again with the committed map.
                    return slow()
                } catch {
                    return done(.failure(error))
                }
                // Held by a transaction across shards, or a split this replica has not applied: `read` waits.
                guard case .answered(let answer, _, _) = outcome else { return slow() }
                Self.countShard(db, shard, "read")
                done(.success(Answer(results: [answer])))
            case .success(.retry):
                slow()
            case .failure(let error):
                done(.failure(error))
            }
        }
    }

    /// The rare case, in a task: the router's own function.
    private func slowly(_ done: @escaping @Sendable (Result<Answer, any Error>) -> Void, _ body: @escaping @Sendable () async throws -> Answer) {
        Task {
            do { done(.success(try await body())) } catch { done(.failure(error)) }
        }
    }

    /// Whether `sql` is certainly not a `CREATE TABLE ... SHARD BY` or `REFERENCE` (which the router
    /// plans, and refuses when malformed).
    static func declaresNoShards(_ sql: String) -> Bool {
        do { return try ShardingClause.parse(sql) == nil } catch { return false }
    }
}

/// A response as its status, headers and body: what the router's handlers and the fast path write.
struct Reply: Sendable {
    var status: Int
    var headers: HTTPFields
    var body: [UInt8]

    var response: Response {
        Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// As the router writes it: with its length, the date and the server's name.
    func fastResponse() -> FastResponse {
        FastResponse(status: status, fields: headers, body: ByteBuffer(bytes: body), date: HTTPDate.now())
    }
}

/// The `Date` header's value (RFC 9110), made once a second.
enum HTTPDate {
    private static let cached = NIOLockedValueBox<(second: Int, text: String)>((-1, ""))
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static func now() -> String {
        let second = Int(time(nil))
        if let hit = cached.withLockedValue({ $0.second == second ? $0.text : nil }) { return hit }
        let text = format(second)
        cached.withLockedValue { $0 = (second, text) }
        return text
    }

    static func format(_ second: Int) -> String {
        var seconds = time_t(second)
        var t = tm()
        gmtime_r(&seconds, &t)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(t.tm_wday)]), \(two(t.tm_mday)) \(months[Int(t.tm_mon)]) \(t.tm_year + 1900) \(two(t.tm_hour)):\(two(t.tm_min)):\(two(t.tm_sec)) GMT"
    }
}
