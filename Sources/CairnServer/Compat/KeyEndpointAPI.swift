import CairnAuth
import CairnCluster
import CairnCompat
import CairnJSON
import CairnRaft
import CairnSQLite
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Seed 000's auth server and endpoint (`--compat key-endpoint`) over CairnDB's users, tokens and one
/// hash-sharded key/value table (`CairnCompat.KeyEndpoint`). Its token scheme maps onto CairnDB's:
/// `POST /token` with HTTP Basic checks a real user's password and issues a CairnDB token, which the
/// `token` header carries; a token is "admin" when its user may write the `kv` database.
struct KeyEndpointAPI: Sendable {
    let api: API
    static let tokenHeader = HTTPField.Name("token")!

    func register(on router: RecordingRouter) {
        router.post("/token") { request, _ in await respond { try await token(request) } }
        // The router hands the key over as sent: `a%2Fb` is the key `a/b`, as Flask decoded it.
        router.post("/key/:key") { request, context in
            await respond { try await put(request, key: try Self.key(context.parameters.require("key"))) }
        }
        router.get("/key/:key") { request, context in
            await respond { try await get(request, key: try Self.key(context.parameters.require("key"))) }
        }
        // The original's health check asked for `/heartbeat/`: the router takes it as `/heartbeat`.
        router.get("/heartbeat") { _, _ in API.json(200, .object([("alive", .bool(true))])) }
        for list in ["masters", "slaves"] {
            router.post(RouterPath("/\(list)")) { request, _ in await respond { try await servers(request, list, leaving: false) } }
            router.delete(RouterPath("/\(list)")) { request, _ in await respond { try await servers(request, list, leaving: true) } }
        }
    }

    static func key(_ raw: String) throws -> String {
        guard let key = raw.removingPercentEncoding else { throw KeyEndpoint.failure(400, "the key is not valid percent-encoding") }
        return key
    }

    private func respond(_ body: () async throws -> Response) async -> Response {
        do {
            return try await body()
        } catch let f as CompatFailure {
            var response = API.json(f.status, f.body)
            if f == KeyEndpoint.couldNotVerify { response.headers[.wwwAuthenticate] = "Basic realm=\"Login required\"" }
            return response
        } catch AccessDenied.unauthenticated {
            return API.json(401, KeyEndpoint.badToken.body)
        } catch AccessDenied.forbidden {
            return API.json(402, KeyEndpoint.notAdmin.body)
        } catch {
            let (status, message) = API.classify(error)
            if status >= 500 && status != 503 { api.log("node \(api.cluster.nodeID): key-endpoint: \(message)") }
            return API.json(status >= 500 ? 503 : status, .object([("error", .string(message))]))
        }
    }

    /// Who a request acts as: the user its `token` header names; without one (a read, which the
    /// original did not check), `--compat-user`. With auth off, anyone.
    private func principal(_ request: Request, tokenRequired: Bool) async throws -> Principal {
        guard api.auth.enabled else { return Principal(user: nil, grants: Grants([Grant(.all)])) }
        if let token = request.headers[Self.tokenHeader] { return try await api.auth.principal(forToken: token) }
        if tokenRequired || api.options.compatUser == nil { throw KeyEndpoint.badToken }
        return try api.compatPrincipal()
    }

    private func token(_ request: Request) async throws -> Response {
        guard let header = request.headers[.authorization], let encoded = AuthService.credentials(header, scheme: "basic"),
              let decoded = Data(base64Encoded: String(encoded)), let text = String(data: decoded, encoding: .utf8),
              let colon = text.firstIndex(of: ":") else {
            if !api.auth.enabled { return API.json(200, KeyEndpoint.tokenGranted(Self.insecureToken(), user: "anonymous")) }
            throw KeyEndpoint.couldNotVerify
        }
        let name = String(text[..<colon]), password = String(text[text.index(after: colon)...])
        let catalog = api.cluster.catalog
        // With auth off anyone gets a token, and nothing checks it: not one signed with the cluster's
        // key, which would still be good if auth were turned on before it expired.
        if !api.auth.enabled { return API.json(200, KeyEndpoint.tokenGranted(Self.insecureToken(), user: name)) }
        do {
            try await api.auth.check(name: name, password: password, remote: ClientAddress.current)
        } catch AccessDenied.unauthenticated {
            // The original answered a wrong password with 200 and no token.
            return API.json(200, KeyEndpoint.tokenRefused(user: name))
        }
        // Its token may write keys, or the original would not have granted one.
        guard let user = api.cluster.catalog.users[name], catalog.grants(of: name).allows(.write, database: KeyEndpoint.database) else {
            return API.json(200, KeyEndpoint.tokenRefused(user: name))
        }
        return API.json(200, KeyEndpoint.tokenGranted(try await api.auth.issueToken(user: user).token, user: name))
    }

    static func insecureToken() -> String {
        "insecure-dev-" + (0..<16).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
    }

    /// The key/value table, made on first use (with the database, if need be).
    private func ensureTable(_ who: Principal) async throws {
        var catalog = api.cluster.catalog
        guard catalog.shardedTables[KeyEndpoint.database]?[KeyEndpoint.table] == nil else { return }
        catalog = try await api.committedCatalog()
        guard catalog.shardedTables[KeyEndpoint.database]?[KeyEndpoint.table] == nil else { return }
        if catalog.databases[KeyEndpoint.database] == nil {
            try api.auth.require(who, .admin, database: "*")
            do {
                _ = try await api.makeDatabase(KeyEndpoint.database, shards: nil, in: catalog, who)
            } catch ClusterError.catalogWrite(let why) where why.hasPrefix("UNIQUE constraint failed") {
                // Made through another node at the same moment.
            }
        }
        for table in [KeyEndpoint.createTable, KeyEndpoint.createChunksTable] {
            let r = try await api.write([table], db: KeyEndpoint.database, atomic: false).results
            if let e = r.first?.error { throw KeyEndpoint.failure(503, "cannot create the key/value tables: \(e)") }
        }
    }

    private func put(_ request: Request, key: String) async throws -> Response {
        let who = try await principal(request, tokenRequired: true)
        try api.auth.require(who, .write, database: KeyEndpoint.database)
        try KeyEndpoint.checkKey(key)
        let value = try KeyEndpoint.value(of: try api.parse(try await api.body(of: request)))
        try await ensureTable(who)
        let statements = KeyEndpoint.put(key, value)
        api.audit.record(who, statements: statements, database: KeyEndpoint.database)
        let r = try await api.write(statements, db: KeyEndpoint.database, atomic: true).results
        if let e = r.lazy.compactMap(\.error).first { throw KeyEndpoint.failure(400, e) }
        return API.json(200, KeyEndpoint.replicated(at: holders(of: key)))
    }

    /// The names of the nodes holding `key`'s shard.
    private func holders(of key: String) -> [String] {
        let catalog = api.cluster.catalog
        let shards = catalog.shards(of: KeyEndpoint.database)
        let i = catalog.shardMap(of: KeyEndpoint.database).shard(of: [.text(key)])
        guard i < shards.count else { return [] }
        return shards[i].replicas.map { catalog.name(of: $0) }.sorted()
    }

    private func get(_ request: Request, key: String) async throws -> Response {
        let who = try await principal(request, tokenRequired: false)
        try api.auth.require(who, .read, database: KeyEndpoint.database)
        try KeyEndpoint.checkKey(key)
        if api.cluster.catalog.databases[KeyEndpoint.database] == nil, try await api.committedCatalog().databases[KeyEndpoint.database] == nil {
            throw KeyEndpoint.notFound
        }
        let r = try await api.read([KeyEndpoint.get(key)], db: KeyEndpoint.database, consistency: .linearizable).results[0]
        if let e = r.error {
            if e.hasPrefix("no such table") { throw KeyEndpoint.notFound }
            throw KeyEndpoint.failure(400, e)
        }
        guard let row = r.rows.first, row.count == 3 else { throw KeyEndpoint.notFound }
        if case .integer(let chunks) = row[1], case .integer(let version) = row[2] { return try stream(key, version: version, chunks: Int(chunks)) }
        return API.json(200, KeyEndpoint.found(row[0]))
    }

    /// A large value `cairn kv put` stored in chunks, streamed a chunk at a time as `[["..."]]`.
    private func stream(_ key: String, version: Int64, chunks: Int) throws -> Response {
        let api = self.api
        let body = ResponseBody { writer in
            var text = JSONStringStream()
            try await writer.write(ByteBuffer(string: "[[\""))
            for n in 0..<chunks {
                let r = try await api.read([KeyEndpoint.chunk(key, version: version, n: n)], db: KeyEndpoint.database, consistency: .linearizable).results[0]
                // Replaced by a newer value mid-way: the connection is cut (the status went out with
                // the first chunk), so the client sees a broken answer, never a short or mixed value.
                guard case .blob(let bytes)? = r.rows.first?.first else { throw KeyEndpoint.failure(409, "\(key) changed while it was read") }
                try await writer.write(ByteBuffer(bytes: text.escape(bytes, last: n == chunks - 1)))
            }
            try await writer.write(ByteBuffer(string: "\"]]"))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: body)
    }

    /// `/masters` and `/slaves`: the endpoint's server lists are the cluster's nodes. Listing one
    /// (POST) checks it is a member; taking it off (DELETE) drains it: its copies move to the others.
    private func servers(_ request: Request, _ list: String, leaving: Bool) async throws -> Response {
        // Who asks, first: the answer tells which addresses are members.
        let who = try await principal(request, tokenRequired: leaving)
        try api.auth.require(who, leaving ? .remove : .status)
        let json = try api.parse(try await api.body(of: request))
        guard case .array(let items)? = json[list] else { throw KeyEndpoint.failure(400, "send {\"\(list)\": [\"host:port\", ...]}") }
        let catalog = try await api.committedCatalog()
        var nodes: [NodeID] = []
        for case .string(let item) in items {
            let node = catalog.node(named: item)
                ?? catalog.nodes.values.first { !$0.removed && ($0.httpAddress.description == item || "\($0.httpAddress.host):\($0.httpAddress.port)" == item) }?.id
            guard let node else { throw KeyEndpoint.failure(400, "\(item) is not a node of this cluster (start it with --join to add it)") }
            nodes.append(node)
        }
        guard nodes.count == items.count else { throw KeyEndpoint.failure(400, "\"\(list)\" must be a list of strings") }
        if leaving {
            for node in nodes {
                api.audit.record(who, action: "drain node \(node) (DELETE /\(list))", database: nil)
                try await api.cluster.handleDrain(node, hops: 0)
            }
        }
        return API.json(200, .object([("alive", .bool(true))]))
    }
}
