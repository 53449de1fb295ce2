import CairnJSON
import CairnAuth
import CairnCluster
import CairnQuery
import CairnNode
import CairnRouter
import CairnRaft
import CairnSQLite
import CairnTransport
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// rqlite's query parameters, validated as rqlite validates them (a bad duration or integer is a 400).
struct RqliteParams {
    private var present: [String: String] = [:]

    init(_ request: Request) throws(HTTPFailure) {
        // Decoded as Go's url.Query does: '+' is a space (form encoding), then percent escapes.
        for pair in (request.uri.query ?? "").split(separator: "&") where !pair.isEmpty {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                let spaced = s.replacingOccurrences(of: "+", with: " ")
                return spaced.removingPercentEncoding ?? spaced
            }
            let key = decode(kv[0])
            if present[key] == nil { present[key] = kv.count > 1 ? decode(kv[1]) : "" }
        }
        for key in ["timeout", "freshness", "db_timeout", "linearizable_timeout"] {
            if let v = present[key], RqliteFormat.parseDuration(v) == nil {
                throw HTTPFailure.badRequest("\(key) is not a valid duration: \(v)")
            }
        }
        for key in ["retries", "trailing_logs"] {
            if let v = present[key], Int(v) == nil { throw HTTPFailure.badRequest("\(key) is not an integer: \(v)") }
        }
        if has("freshness_strict") && !has("freshness") { throw HTTPFailure.badRequest("freshness_strict requires freshness") }
    }

    func has(_ key: String) -> Bool { present[key] != nil }
    func value(_ key: String) -> String? { present[key] }
    func nanos(_ key: String) -> Int64? { present[key].flatMap(RqliteFormat.parseDuration) }

    var format: RqliteFormat.Options {
        RqliteFormat.Options(pretty: has("pretty"), timings: has("timings"), associative: has("associative"), blobArray: has("blob_array"))
    }

    /// rqlite's levels on CairnDB's: `none` reads this node (bounded by `freshness` if given); every other
    /// level, unknown ones included (rqlite maps those to `weak`), is linearizable here, which is at
    /// least as strong as what rqlite promises for it.
    func consistency(voter: Bool) -> ReadConsistency {
        let level = (present["level"] ?? "weak").lowercased()
        if level == "none" || (level == "auto" && !voter) {
            if let f = nanos("freshness"), f > 0 { return .stale(freshnessMillis: max(1, f / 1_000_000)) }
            return .local
        }
        return .linearizable
    }
}

extension API {
    /// What each of rqlite's paths asks of the caller (rqlite checks it before the method, so a wrong
    /// method asks it too).
    static func permissions(for path: String) -> [Permission] {
        switch path {
        case "/db/execute": [.execute]
        case "/db/query": [.query]
        case "/db/request": [.query, .execute]
        case "/db/backup": [.backup]
        case "/db/load": [.load]
        case "/status", "/nodes": [.status]
        case "/readyz": [.ready]
        case "/leader": [.leaderOps]
        case "/remove": [.remove]
        default: [.all]
        }
    }

    func addRqliteRoutes(to router: RecordingRouter) {
        /// A route asking what `permissions(for:)` says of its path.
        func route(_ method: HTTPRequest.Method, _ path: String,
                   _ body: @escaping @Sendable (Request, RqliteParams, Principal) async throws -> Response) {
            router.on(RouterPath(path), method: method) { request, _ in
                await self.rqlite(request, Self.permissions(for: path)) { p, who in try await body(request, p, who) }
            }
        }
        route(.post, "/db/execute") { request, p, who in try await self.rqExecute(request, p, who) }
        route(.get, "/db/query") { request, p, who in try await self.rqQuery(request, p, who) }
        route(.post, "/db/query") { request, p, who in try await self.rqQuery(request, p, who) }
        route(.post, "/db/request") { request, p, who in try await self.rqRequest(request, p, who) }
        route(.get, "/db/backup") { request, p, who in try await self.rqBackup(request, p, who) }
        route(.post, "/db/load") { request, p, who in
            self.audit.record(who, action: "load", database: defaultDatabase)
            return try await self.rqLoad(request, p, who)
        }
        route(.get, "/status") { _, p, _ in try await self.rqStatus(p) }
        route(.get, "/nodes") { _, p, _ in try await self.rqNodes(p) }
        route(.get, "/readyz") { _, p, _ in try await self.rqReadyz(p) }
        route(.get, "/leader") { _, p, _ in try await self.rqLeader(p) }
        route(.post, "/leader") { request, p, who in
            self.audit.record(who, action: "leader stepdown", database: defaultDatabase)
            return try await self.rqStepdown(request, p, who)
        }
        route(.delete, "/remove") { request, p, who in
            self.audit.record(who, action: "remove node", database: nil)
            return try await self.rqRemove(request, p, who)
        }
    }

    /// rqlite's error forms: an auth failure is a 401 with an empty body; a client error a 400 with a
    /// plain-text body; unavailability a 503.
    private func rqlite(_ request: Request, _ permissions: [Permission],
                        _ body: (RqliteParams, Principal) async throws -> Response) async -> Response {
        do {
            try Self.checkHops(request)
            let params = try RqliteParams(request)
            let who = try await auth.principal(for: request)
            if auth.enabled {
                for p in permissions where !who.grants.allows(p, database: defaultDatabase) {
                    throw AccessDenied.unauthenticated("")
                }
            }
            return try await body(params, who)
        } catch AccessDenied.unauthenticated, AccessDenied.forbidden {
            return Response(status: .unauthorized, headers: [.wwwAuthenticate: "Basic realm=\"rqlite\""])
        } catch {
            let (status, message) = Self.classify(error)
            return Self.text(status, message)
        }
    }

    /// One of rqlite's routes asked with a method it does not take: as rqlite, the credentials are
    /// checked first (401), then a 405 with an empty body (its `/db/` handlers set their JSON content
    /// type before either).
    func rqliteWrongMethod(_ request: Request, route: String) async -> Response {
        var r = await rqlite(request, Self.permissions(for: route)) { _, _ in Response(status: .methodNotAllowed) }
        if route.hasPrefix("/db/") { r.headers[.contentType] = "application/json; charset=utf-8" }
        return r
    }

    static func text(_ status: Int, _ message: String, contentType: String = "text/plain; charset=utf-8") -> Response {
        Response(status: .init(code: status), headers: [.contentType: contentType],
                 body: .init(byteBuffer: ByteBuffer(string: message.hasSuffix("\n") || message.isEmpty ? message : message + "\n")))
    }

    static func rqJSON(_ bytes: [UInt8], status: Int = 200) -> Response {
        Response(status: .init(code: status), headers: [.contentType: "application/json; charset=utf-8"],
                 body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    // MARK: - Bodies

    /// `["SQL", ["SQL", p1, p2], ["SQL", {"name": v}]]`, or with `Content-Type: text/plain` the body
    /// itself as one statement.
    func rqStatements(_ request: Request, _ bytes: [UInt8]) throws -> [SQLStatement] {
        if let type = request.headers[.contentType], type.lowercased().hasPrefix("text/plain") {
            return [SQLStatement(String(decoding: bytes, as: UTF8.self))]
        }
        let json: JSON
        do { json = try parseBody(bytes) } catch is JSONParseError { throw HTTPFailure.badRequest("invalid JSON body") }
        guard case .array(let items) = json else { throw HTTPFailure.badRequest("invalid request") }
        guard !items.isEmpty else { throw HTTPFailure.badRequest("no statements") }
        guard items.count <= options.maxStatementsPerRequest else {
            throw HTTPFailure.badRequest("\(items.count) statements exceed the limit of \(options.maxStatementsPerRequest) per request")
        }
        return try items.map { item in
            switch item {
            case .string(let sql): return SQLStatement(sql)
            case .array(let parts):
                guard case .string(let sql)? = parts.first else { throw HTTPFailure.badRequest("invalid request") }
                if parts.count == 2, case .object(let members) = parts[1] {
                    var named: [String: SQLValue] = [:]
                    for (k, v) in members { named[k] = try Self.rqValue(v) }
                    return SQLStatement(sql, named: named)
                }
                return SQLStatement(sql, try parts.dropFirst().map(Self.rqValue))
            default: throw HTTPFailure.badRequest("invalid request")
            }
        }
    }

    static func rqValue(_ v: JSON) throws -> SQLValue {
        switch v {
        case .null: return .null
        case .bool(let b): return .integer(b ? 1 : 0)
        case .number(let t):
            if let i = Int64(t) { return .integer(i) }
            if let d = Double(t), d.isFinite { return .real(d) }
            throw HTTPFailure.badRequest("unsupported type")
        case .string(let s):
            // x'0102' or X'0102' is a BLOB, as rqlite reads it.
            if s.count >= 3, s.first == "x" || s.first == "X", s.dropFirst().first == "'", s.last == "'" {
                let hex = Array(s.dropFirst(2).dropLast())
                if hex.count % 2 == 0, let bytes = stride(from: 0, to: hex.count, by: 2).map({ UInt8(String(hex[$0...$0 + 1]), radix: 16) }) as [UInt8?]?,
                   !bytes.contains(nil) {
                    return .blob(bytes.map { $0! })
                }
            }
            return .text(s)
        case .array(let items):
            var bytes: [UInt8] = []
            for item in items {
                guard case .number(let t) = item, let b = UInt8(t) else { throw HTTPFailure.badRequest("unsupported type") }
                bytes.append(b)
            }
            return .blob(bytes)
        case .object: throw HTTPFailure.badRequest("unsupported type")
        }
    }

    /// rqlite refuses these PRAGMAs for the whole request (CairnDB's authorizer refuses more, per statement).
    static func hasDisallowedPragma(_ statements: [SQLStatement]) -> Bool {
        statements.contains { s in
            let squeezed = s.sql.lowercased().filter { !$0.isWhitespace }
            return squeezed.hasPrefix("pragma") && ["journal_mode", "wal_checkpoint", "wal_autocheckpoint", "synchronous"]
                .contains { squeezed.dropFirst(6).hasPrefix($0) }
        }
    }

    // MARK: - Data

    private func rqExecute(_ request: Request, _ p: RqliteParams, _ who: Principal) async throws -> Response {
        let bytes = try await body(of: request)
        let statements = try rqStatements(request, bytes)
        audit.record(who, statements: statements, database: defaultDatabase)
        if Self.hasDisallowedPragma(statements) { return Self.rqJSON(RqliteFormat.body(results: [], error: "disallowed pragma", options: p.format)) }
        if p.has("queue") { return try await enqueue(statements, p) }
        return try await rqWrite(request, p, bytes: bytes, statements: statements)
    }

    private func rqWrite(_ request: Request, _ p: RqliteParams, bytes: [UInt8], statements: [SQLStatement]) async throws -> Response {
        let live = statements.filter { !$0.sql.isEmpty }
        if p.has("redirect"), let redirect = try await redirectToLeader(request) { return redirect }
        let started = ContinuousClock.now
        if live.isEmpty { return Self.rqJSON(RqliteFormat.body(results: [], options: p.format)) }
        // Sharded tables of the default database are routed to their shards, answered as rqlite would.
        let answer = try await write(live, db: defaultDatabase, atomic: p.has("transaction"))
        return rqAnswer(answer.results, index: answer.index, p, started: started, wrote: true, withRowsKey: false)
    }

    private func rqQuery(_ request: Request, _ p: RqliteParams, _ who: Principal) async throws -> Response {
        let statements: [SQLStatement]
        if request.method == .get {
            guard let q = p.value("q"), !q.isEmpty else { throw HTTPFailure.badRequest("query parameter not set") }
            statements = [SQLStatement(q)]
        } else {
            statements = try rqStatements(request, try await body(of: request))
        }
        if Self.hasDisallowedPragma(statements) { return Self.rqJSON(RqliteFormat.body(results: [], error: "disallowed pragma", options: p.format)) }
        let live = statements.filter { !$0.sql.isEmpty }
        let started = ContinuousClock.now
        if live.isEmpty { return Self.rqJSON(RqliteFormat.body(results: [], options: p.format)) }
        do {
            let consistency = p.consistency(voter: cluster.config.voter)
            let answer = try await read(live, db: defaultDatabase, consistency: consistency, statementTimeoutNanos: UInt64(max(0, p.nanos("db_timeout") ?? 0)))
            return rqAnswer(answer.results, index: answer.index, p, started: started, wrote: false, withRowsKey: false)
        } catch RuntimeError.tooStale {
            return Self.rqJSON(RqliteFormat.body(results: [], error: "stale read", options: p.format))
        }
    }

    /// Reads and writes together: all-read requests are served as reads, anything else goes through
    /// the log as one entry (its reads then see the batch's earlier writes).
    private func rqRequest(_ request: Request, _ p: RqliteParams, _ who: Principal) async throws -> Response {
        let bytes = try await body(of: request)
        let statements = try rqStatements(request, bytes)
        if Self.hasDisallowedPragma(statements) { return Self.rqJSON(RqliteFormat.body(results: [], error: "disallowed pragma", options: p.format)) }
        let live = statements.filter { !$0.sql.isEmpty }
        let group = try await groupRouter.group(of: defaultDatabase)
        if p.has("redirect"), try await writes(live, group: group), let redirect = try await redirectToLeader(request) { return redirect }
        let started = ContinuousClock.now
        if live.isEmpty { return Self.rqJSON(RqliteFormat.body(results: [], options: p.format)) }
        do {
            let consistency = p.consistency(voter: cluster.config.voter)
            if let (results, wrote) = try await requestWithShards(live, db: defaultDatabase, group: group, atomic: p.has("transaction"), consistency: consistency,
                                                                  statementTimeoutNanos: UInt64(max(0, p.nanos("db_timeout") ?? 0)),
                                                                  beforeWrite: { audit.record(who, statements: live, database: defaultDatabase) }) {
                return rqAnswer(results, index: nil, p, started: started, wrote: wrote, withRowsKey: true)
            }
            let routed = try await audited(who, live, database: defaultDatabase) {
                try await self.groupRouter.request(SQLCommand.now(live, atomic: p.has("transaction")), group: group,
                                                   consistency: consistency,
                                                   statementTimeoutNanos: UInt64(max(0, p.nanos("db_timeout") ?? 0)), mayWrite: true)
            }
            return rqAnswer(routed.results, index: routed.index, p, started: started, wrote: routed.wrote, withRowsKey: true)
        } catch RuntimeError.tooStale {
            return Self.rqJSON(RqliteFormat.body(results: [], error: "stale read", options: p.format))
        }
    }

    /// Whether any statement writes, judged against this node's copy (redirect only writes to the leader).
    func writes(_ statements: [SQLStatement], group: GroupID) async throws -> Bool {
        // Without a copy of the group here, a plain SELECT (or VALUES) is judged by its first word:
        // SQLite has no SELECT that writes. Anything else counts as a write.
        guard runtime.hosts(group) else {
            return !statements.allSatisfy { s in
                guard let first = (try? SQLLexer.tokens(s.sql))?.first else { return false }
                return first.isWord("SELECT") || first.isWord("VALUES")
            }
        }
        for s in statements where !(try await runtime.isReadOnly(group: group, s.sql)) { return true }
        return false
    }

    /// rqlite's answer: each result with its share of the time taken, and the log index if asked for.
    /// `index`: the log index the results reflect (nil across shards: each has its own log).
    private func rqAnswer(_ answered: [StatementResult], index: LogIndex?, _ p: RqliteParams, started: ContinuousClock.Instant,
                          wrote: Bool, withRowsKey: Bool) -> Response {
        let elapsed = Self.seconds(ContinuousClock.now - started)
        let per = elapsed / Double(max(answered.count, 1))
        let results = answered.map {
            wrote ? RqliteFormat.write($0, time: per, withRowsKey: withRowsKey, options: p.format) : RqliteFormat.query($0, time: per, options: p.format)
        }
        return Self.rqJSON(RqliteFormat.body(results: results, time: elapsed, raftIndex: p.has("raft_index") ? index : nil, options: p.format))
    }

    /// With `?redirect`, a follower answers 301 pointing at the leader instead of forwarding.
    private func redirectToLeader(_ request: Request) async throws -> Response? {
        guard let group = cluster.catalog.databases[defaultDatabase]?.group, try await runtime.groupIDs().contains(group) else { return nil }
        let s = try await runtime.status(group: group)
        guard s.role != .leader else { return nil }
        guard s.leader != noNode, let address = cluster.httpAddress(of: s.leader) else {
            throw HTTPFailure.unavailable("leader not found")
        }
        var location = "\(peers.scheme)://\(address)\(request.uri.path)"
        if let q = request.uri.query { location += "?" + q }
        return Response(status: .movedPermanently, headers: [.location: location])
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
