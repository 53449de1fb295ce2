import CairnAuth
import CairnCluster
import CairnCompat
import CairnJSON
import CairnSQLite
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Seed 002's master HTTP API (`--compat master-api`): queries planned by `CairnCompat.MasterAPI` and
/// run on CairnDB databases; its slaves are the cluster's nodes; its logs, this node's audit log. Its
/// constant token maps onto CairnDB's: a request's `token` (or a bearer token) names a user; one
/// without (the original's HTTP API put its own in) acts as `--compat-user`.
struct MasterAPIServer: Sendable {
    let api: API
    /// At most this many audit lines in one `/api/logs` answer (the newest).
    static let maxLogLines = 500

    func register(on router: RecordingRouter) {
        for path in ["/api/query", "/query"] {
            router.post(RouterPath(path)) { request, _ in await respond(request) { who, body in try await query(body, who) } }
        }
        router.post("/api/database/create") { request, _ in await respond(request) { who, body in try await createDatabase(body, who) } }
        router.post("/api/table/create") { request, _ in await respond(request) { who, body in try await createTable(body, who) } }
        router.get("/api/slaves") { request, _ in await respond(request, readsBody: false) { who, _ in try slaves(who) } }
        router.get("/api/logs") { request, _ in await respond(request, readsBody: false) { who, _ in try logs(who) } }
        for path in ["/api/query", "/query", "/api/database/create", "/api/table/create", "/api/slaves", "/api/logs"] {
            router.on(RouterPath(path), method: .options) { _, _ in Self.cors(Response(status: .ok)) }
        }
    }

    /// A route asked with a method it does not take: the API's own error shape, with its CORS headers.
    static func wrongMethod(_ request: Request, _ pattern: String, _ allowed: [HTTPRequest.Method]) -> Response {
        let allow = allowed.map(\.rawValue).joined(separator: ", ")
        var r = cors(API.json(405, MasterAPI.failure(405, "method \(request.method.rawValue) is not allowed here; use \(allow)").body))
        r.headers[.allow] = allow
        return r
    }

    static func cors(_ response: Response) -> Response {
        var r = response
        r.headers[.accessControlAllowOrigin] = "*"
        r.headers[.accessControlAllowMethods] = "GET, POST, OPTIONS"
        r.headers[.accessControlAllowHeaders] = "Content-Type, Authorization"
        return r
    }

    private func respond(_ request: Request, readsBody: Bool = true, _ body: (Principal, JSON) async throws -> JSON) async -> Response {
        do {
            var json = JSON.object([])
            if readsBody {
                do { json = try api.parse(try await api.body(of: request)) } catch { throw MasterAPI.failure(400, "invalid request body: \(error)") }
            }
            let who = try await principal(request, json)
            return Self.cors(API.json(200, try await body(who, json)))
        } catch let f as CompatFailure {
            return Self.cors(API.json(f.status, f.body))
        } catch AccessDenied.unauthenticated {
            return Self.cors(API.json(401, MasterAPI.invalidToken.body))
        } catch {
            let (status, message) = API.classify(error)
            if status >= 500 && status != 503 { api.log("node \(api.cluster.nodeID): master-api: \(message)") }
            return Self.cors(API.json(status >= 500 ? 503 : status, MasterAPI.failure(status, message).body))
        }
    }

    private func principal(_ request: Request, _ json: JSON) async throws -> Principal {
        guard api.auth.enabled else { return Principal(user: nil, grants: Grants([Grant(.all)])) }
        var token: String?
        if case .string(let t)? = json["token"], !t.isEmpty { token = t }
        if let header = request.headers[.authorization], let bearer = AuthService.credentials(header, scheme: "bearer") { token = String(bearer) }
        if let token { return try await api.auth.principal(forToken: token) }
        guard api.options.compatUser != nil else { throw MasterAPI.invalidToken }
        return try api.compatPrincipal()
    }

    private func query(_ json: JSON, _ who: Principal) async throws -> JSON {
        guard case .string(let text)? = json["query"] else { throw MasterAPI.failure(400, "send {\"query\": ...}") }
        switch try MasterAPI.plan(text) {
        case .createDatabase(let name, let ifNotExists):
            try await makeDatabase(name, who, ifNotExists: ifNotExists)
            return MasterAPI.ok("Query executed successfully. Rows affected: 1")
        case .dropDatabase(let name, let ifExists):
            try api.auth.require(who, .admin, database: name)
            guard try await api.committedCatalog().databases[name] != nil else {
                if ifExists { return MasterAPI.ok("Query executed successfully. Rows affected: 0") }
                throw MasterAPI.failure(400, "Can't drop database '\(name)'; database doesn't exist")
            }
            _ = try await api.dropDatabase(name, who)
            return MasterAPI.ok("Query executed successfully. Rows affected: 0")
        case .statement(let database, let sql, let reads):
            let db = database ?? defaultDatabase
            let statement = SQLStatement(sql)
            let result: StatementResult
            if reads {
                try api.auth.require(who, .read, database: db)
                result = try await api.read([statement], db: db, consistency: .linearizable).results[0]
            } else {
                try api.auth.require(who, .write, database: db)
                api.audit.record(who, statements: [statement], database: db)
                result = try await api.write([statement], db: db, atomic: false).results[0]
            }
            if let e = result.error { throw MasterAPI.failure(400, e) }
            return MasterAPI.answer(result, reads: reads)
        }
    }

    private func makeDatabase(_ name: String, _ who: Principal, ifNotExists: Bool) async throws {
        try api.auth.require(who, .admin, database: "*")
        let catalog = try await api.committedCatalog()
        if catalog.databases[name] != nil {
            if ifNotExists { return }
            throw MasterAPI.failure(400, "Can't create database '\(name)'; database exists")
        }
        do {
            _ = try await api.makeDatabase(name, shards: nil, in: catalog, who)
        } catch ClusterError.catalogWrite(let why) where why.hasPrefix("UNIQUE constraint failed") {
            if !ifNotExists { throw MasterAPI.failure(400, "Can't create database '\(name)'; database exists") }
        }
    }

    private func createDatabase(_ json: JSON, _ who: Principal) async throws -> JSON {
        guard case .string(let name)? = json["db_name"], (try? RestDB.checkName(name, what: "database")) != nil else { throw MasterAPI.failure(400, "send {\"db_name\": name}, a name of letters, digits and _") }
        try await makeDatabase(name, who, ifNotExists: true)
        return MasterAPI.ok("Database \(name) created successfully")
    }

    private func createTable(_ json: JSON, _ who: Principal) async throws -> JSON {
        guard case .string(let db)? = json["db_name"], (try? RestDB.checkName(db, what: "database")) != nil, case .string(let table)? = json["table_name"],
              case .array(let columns)? = json["columns"] else {
            throw MasterAPI.failure(400, "send {\"db_name\", \"table_name\", \"columns\": [{\"name\", \"type\", \"nullable\", \"default\"}]}")
        }
        let statement = try MasterAPI.createTable(table, columns: columns)
        try api.auth.require(who, .write, database: db)
        api.audit.record(who, statements: [statement], database: db)
        let r = try await api.write([statement], db: db, atomic: false).results[0]
        if let e = r.error { throw MasterAPI.failure(400, e) }
        return MasterAPI.ok("Table \(table) created successfully")
    }

    /// The cluster's nodes, as the master listed the slaves connected to it.
    private func slaves(_ who: Principal) throws -> JSON {
        try api.auth.require(who, .status)
        let catalog = api.cluster.catalog
        return .array(catalog.nodes.values.filter { !$0.removed && $0.id != api.cluster.nodeID }.sorted { $0.id < $1.id }.map { n in
            .object([("id", .string("\(n.id)")), ("name", .string(catalog.name(of: n.id))), ("ip", .string(n.httpAddress.description)),
                     ("role", .string("slave")), ("state", .string(catalog.nodeStates[n.id]?.rawValue ?? "live"))])
        })
    }

    /// The newest lines of this node's audit log (every client's writes and admin actions).
    private func logs(_ who: Principal) throws -> JSON {
        try api.auth.require(who, .admin, database: "*")
        api.audit.flush()
        let lines = api.audit.tail(maxLines: Self.maxLogLines)
        return .object([("logs", .array(lines.map { .string($0) }))])
    }
}
