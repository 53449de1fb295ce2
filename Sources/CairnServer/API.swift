import CairnJSON
import CairnAuth
import CairnCluster
import CairnNode
import CairnPlacement
import CairnRaft
import CairnRouter
import CairnSQLite
import CairnTransport
import Foundation
import HTTPTypes
import Hummingbird
import Metrics
import NIOConcurrencyHelpers
import NIOCore

/// The HTTP API every node serves. Any node accepts any request: it serves what it can from the groups
/// it holds and forwards the rest to a node that can (the group's leader for writes).
final class API: Sendable {
    let options: ServerOptions
    let runtime: NodeRuntime
    let cluster: ClusterNode
    let peers: PeerClient
    let auth: AuthService
    let audit: AuditLog
    let queue: WriteQueue
    let startedAt = Date()
    let log: @Sendable (String) -> Void
    /// Where operations on groups run (here, or at the node that can).
    let groupRouter: GroupRouter
    /// Spreads forwarded backups and checks over a database's holders.
    let forwardCursor = NIOLockedValueBox(0)
    /// Sharded tables' schemas, for planning.
    let schemaCopies = SchemaCopies()
    /// The fast path's shard views, as of one catalog copy (`currentShardView`).
    let shardViews = NIOLockedValueBox<(generation: UInt64, views: [String: ShardView?])>((0, [:]))
    /// Where a test asked this node to die, or to pause (fault injection only).
    let crashPoint = NIOLockedValueBox<String?>(nil)
    let pausePoint = NIOLockedValueBox<(point: String, millis: Int)?>(nil)
    static let hops = HTTPField.Name(PeerClient.hopsHeader)!
    static let forwardedPrincipal = HTTPField.Name(ForwardedPrincipal.header)!
    static let servedBy = HTTPField.Name("X-Cairn-Node")!
    /// docs/openapi.json as this binary was built with it (`EmbeddedFiles`).
    static let openAPIDocument = EmbeddedFiles.bytes("openapi.json")

    init(options: ServerOptions, runtime: NodeRuntime, cluster: ClusterNode, peers: PeerClient, auth: AuthService,
         audit: AuditLog, log: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.runtime = runtime
        self.cluster = cluster
        self.peers = peers
        self.auth = auth
        self.audit = audit
        self.log = log
        queue = WriteQueue(maxEntryBytes: runtime.config.maxEntryBytes)
        groupRouter = GroupRouter(runtime: runtime, cluster: cluster, requestTimeoutMillis: options.requestTimeoutMillis)
    }

    func router() -> Router<CairnContext> {
        let router = RecordingRouter()
        router.add(middleware: ClientAddress())
        router.add(middleware: RequestMetrics())
        router.get("/metrics") { request, _ in
            await self.respond(request, .status) { _ in
                Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                         body: .init(byteBuffer: ByteBuffer(bytes: await MetricsExporter.shared.render(runtime: self.runtime, catalog: self.cluster.catalog))))
            }
        }
        if !options.corsOrigins.isEmpty {
            router.add(middleware: CORS(origins: Set(options.corsOrigins), credentials: auth.enabled))
        }
        router.post("/v1/db/:db/execute") { request, context in
            let db = try context.parameters.require("db")
            return await self.respond(request, .write, database: db) { who in try await self.execute(request, db: db, who) }
        }
        router.post("/v1/db/:db/query") { request, context in
            let db = try context.parameters.require("db")
            return await self.respond(request, .read, database: db) { who in try await self.query(request, who, db: db) }
        }
        router.post("/v1/db/:db/request") { request, context in
            let db = try context.parameters.require("db")
            return await self.respond(request, .read, database: db) { who in try await self.mixed(request, db: db, who) }
        }
        router.post("/v1/db/:db/check") { request, context in
            let db = try context.parameters.require("db")
            return await self.respond(request, .admin, database: db) { who in
                self.audit.record(who, action: "check consistency", database: db)
                return try await self.serveOrForward(request, who, db: db, isWrite: true) { group in
                    let d = try await self.runtime.checkConsistency(group: group)
                    return Self.json(200, .object([("index", .int(d.index)), ("digest", .string(d.description)), ("rows", .int(d.rows)),
                                                   ("bytes", .int(d.bytes)), ("node", .int(self.cluster.nodeID))]))
                }
            }
        }
        router.get("/v1/db/:db/backup") { request, context in
            let db = try context.parameters.require("db")
            return await self.respond(request, .backup, database: db) { who in
                try await self.rqBackup(request, try RqliteParams(request), who, database: db)
            }
        }
        router.post("/v1/db/:db/load") { request, context in
            let db = try context.parameters.require("db")
            return await self.respond(request, .load, database: db) { who in
                guard who.grants.allows(.write, database: db) || !self.auth.enabled else {
                    throw AccessDenied.forbidden("loading needs write on database \"\(db)\" too")
                }
                self.audit.record(who, action: "load", database: db)
                return try await self.rqLoad(request, try RqliteParams(request), who, database: db)
            }
        }
        router.get("/v1/databases") { request, _ in
            // Listings are linearizable, like reads: a database created or dropped through any node shows.
            await self.respond(request, nil) { who in Self.json(200, self.databases(in: try await self.committedCatalog(), visibleTo: who)) }
        }
        router.post("/v1/databases") { request, _ in
            await self.respond(request, .admin, database: "*") { who in try await self.createDatabase(request, who) }
        }
        router.delete("/v1/databases/:name") { request, context in
            let name = try context.parameters.require("name")
            return await self.respond(request, .admin, database: name) { who in try await self.dropDatabase(name, who) }
        }
        router.get("/v1/status") { request, _ in
            await self.respond(request, .status) { _ in Self.json(200, try await self.status()) }
        }
        router.get("/v1/cluster") { request, _ in
            await self.respond(request, .status) { _ in
                Self.json(200, try await self.clusterView(detail: request.uri.queryParameters.get("detail").map { $0 == "true" || $0 == "1" } ?? false))
            }
        }
        router.get("/v1/openapi.json") { request, _ in
            await self.respond(request, nil, open: true) { _ in
                guard let document = Self.openAPIDocument else { throw HTTPFailure.notFound("this build has no OpenAPI document") }
                return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: document)))
            }
        }
        router.get("/v1/health") { request, _ in
            await self.respond(request, nil, open: true) { _ in Self.json(200, .object([("status", .string("ok")), ("node", .int(self.cluster.nodeID))])) }
        }
        router.get("/v1/ready") { request, _ in
            await self.respond(request, .ready) { _ in try await self.ready() }
        }
        router.get("/v1/cluster/bootstrap") { request, _ in
            // Open: founders ask each other before any account exists. It tells ids and addresses only.
            await self.respond(request, nil, open: true) { _ in Self.json(200, try self.encoded(await self.cluster.bootstrapInfo())) }
        }
        router.post("/v1/cluster/join") { request, _ in
            // Joining makes a node a member, trusted with every secret: it takes a user holding `all`, or
            // a single-use join token an admin minted (a user holding only `join` gets neither).
            await self.respond(request, nil, open: true) { who in
                let join = try await self.decode(JoinRequest.self, from: request)
                let spendToken = self.auth.enabled && !who.isNode && !who.grants.allows(.all)
                if spendToken && join.joinToken == nil {
                    guard who.user != nil else { throw AccessDenied.unauthenticated("joining needs a join token (cairn cluster join-token) or a user holding all") }
                    throw AccessDenied.forbidden("user \(who.user!) lacks the all permission and brought no join token: joining needs one of them (cairn cluster join-token)")
                }
                self.audit.record(who, action: "join node \(join.id) at \(join.httpAddress)\(spendToken ? " with a join token" : "")", database: nil)
                guard spendToken else { return Self.json(200, try self.encoded(try await self.cluster.handleJoin(join, hops: who.hops))) }
                // Anyone may try a token: guesses are limited per address like failed logins, and one
                // that is not even shaped like a token costs no catalog write.
                let remote = [ClientAddress.current]
                do {
                    try self.auth.addressLimiter.check(remote)
                } catch let AuthError.tooManyAttempts(seconds) {
                    throw AccessDenied.limited(retryAfterSeconds: seconds)
                }
                do {
                    guard JoinTokens.isWellFormed(join.joinToken!) else { throw AccessDenied.forbidden(JoinTokens.refusal) }
                    return Self.json(200, try self.encoded(try await self.cluster.handleJoin(join, hops: who.hops, spendToken: true)))
                } catch {
                    if case (403, _) = Self.classify(error) { self.auth.addressLimiter.failed(remote) }
                    throw error
                }
            }
        }
        router.post("/v1/cluster/join-tokens") { request, _ in
            await self.respond(request, .all) { who in
                let bytes = try await self.body(of: request)
                var ttl = JoinTokens.defaultTTLSeconds
                if !bytes.isEmpty {
                    switch try self.parse(bytes)["ttl_seconds"] {
                    case nil, .null?: break
                    case .number(let n)? where Int(n).map({ (1...JoinTokens.maxTTLSeconds).contains($0) }) == true: ttl = Int(n)!
                    default: throw HTTPFailure.badRequest("ttl_seconds must be a whole number from 1 to \(JoinTokens.maxTTLSeconds)")
                    }
                }
                let now = Date()
                let minted = JoinTokens.mint(ttlSeconds: ttl, by: who.user, nowMillis: Int64(now.timeIntervalSince1970 * 1000))
                self.audit.record(who, action: "mint a join token valid for \(ttl) s", database: nil)
                try await self.cluster.changeCatalog(minted.statements)
                return Self.json(201, .object([("token", .string(minted.token)),
                                               ("expires_at", .string(Timestamp.iso8601(now + Double(ttl))))]))
            }
        }
        router.post("/v1/cluster/remove") { request, _ in
            await self.respond(request, .remove) { who in
                let remove = try await self.decode(ClusterNode.RemoveRequest.self, from: request)
                self.audit.record(who, action: "remove node \(remove.id)", database: nil)
                try await self.cluster.handleRemove(remove.id, hops: who.hops)
                return Self.json(200, .object([("removed", .int(remove.id))]))
            }
        }
        router.post("/v1/cluster/drain") { request, _ in
            await self.respond(request, .remove) { who in
                let drain = try await self.decode(ClusterNode.RemoveRequest.self, from: request)
                self.audit.record(who, action: "drain node \(drain.id)", database: nil)
                try await self.cluster.handleDrain(drain.id, hops: who.hops)
                return Self.json(200, .object([("draining", .int(drain.id))]))
            }
        }
        router.post("/v1/cluster/rotate-keys") { request, _ in
            await self.respond(request, .all) { who in
                // Revokes every token at once, nodes' included (they sign new ones with the new key).
                self.audit.record(who, action: "rotate the token-signing key", database: nil)
                try await self.cluster.changeCatalog(Catalog.rotateTokenKey(PasswordHash.randomKey()), hops: who.hops)
                _ = try? await self.cluster.refreshCatalog()
                return Self.json(200, .object([("rotated", .bool(true))]))
            }
        }
        router.get("/v1/internal/membership/:group") { request, context in
            let group = try context.parameters.require("group", as: UInt64.self)
            return await self.respond(request, .status) { _ in
                do {
                    return Self.json(200, try self.encoded(try await self.cluster.membership(of: group)))
                } catch RuntimeError.unknownGroup {
                    throw HTTPFailure.notFound("this node holds no copy of group \(group)")
                }
            }
        }
        router.post("/v1/internal/catalog") { request, _ in
            await self.respond(request, .all) { who in
                guard who.isNode || !self.auth.enabled else { throw AccessDenied.forbidden("only cluster nodes change the catalog directly") }
                let change = try await self.decode(CatalogChange.self, from: request)
                try await self.cluster.changeCatalog(change.statements.map(\.statement), hops: who.hops)
                return Self.json(200, .object([("ok", .bool(true))]))
            }
        }
        addShardRoutes(to: router)
        addSplitRoutes(to: router)
        addSettingsRoutes(to: router)
        addAuthRoutes(to: router)
        addConsole(to: router)
        router.family = .rqlite
        addRqliteRoutes(to: router)
        router.family = .native
        if options.enableFaultInjection { addFaultInjectionRoutes(to: router) }
        return router.finished(.native(rqliteWrongMethod: { request, pattern, _ in await self.rqliteWrongMethod(request, route: pattern) }))
    }

    // MARK: - Plumbing

    /// Authenticates, checks `permission` (nil: any signed-in user; `open`: anyone), runs `body`, and
    /// turns errors into JSON with a status that says whose fault it is.
    func respond(_ request: Request, _ permission: Permission?, database: String? = nil, open: Bool = false,
                 _ body: (Principal) async throws -> Response) async -> Response {
        do {
            try Self.checkHops(request)
            let who = try await authorize(request, permission, database: database, open: open)
            return try await body(who)
        } catch {
            return failure(error).response
        }
    }

    /// The answer to a request that failed with `error`: JSON with a status that says whose fault it is.
    func failure(_ error: any Error) -> Reply {
        let (status, message) = Self.classify(error)
        if status >= 500 && status != 503 { log("node \(cluster.nodeID): HTTP \(status): \(message)") }
        var reply = Self.jsonReply(status, .object([("error", .string(message))]))
        if status == 401 { reply.headers[.wwwAuthenticate] = "Bearer realm=\"cairn\", Basic realm=\"cairn\"" }
        if case AccessDenied.limited(let s) = error { reply.headers[.retryAfter] = "\(s)" }
        return reply
    }

    func authorize(_ request: Request, _ permission: Permission?, database: String? = nil, open: Bool = false) async throws -> Principal {
        var who = try await auth.principal(for: request)
        if open || !auth.enabled { return who }
        if let permission {
            do {
                try auth.require(who, permission, database: database)
            } catch let denial as AccessDenied where !who.isNode && who.user != nil {
                // A grant given through another node moments ago: look at the committed catalog before
                // refusing. (Grants to everyone reach callers without credentials within a controller pass.)
                guard let fresh = try? await cluster.refreshCatalog() else { throw denial }
                who.grants = fresh.grants(of: who.user)
                try auth.require(who, permission, database: database)
            }
        } else if who.user == nil {
            throw AccessDenied.unauthenticated("sign in to use this endpoint")
        }
        return who
    }

    static func classify(_ error: any Error) -> (Int, String) {
        switch error {
        case let f as HTTPFailure: return (f.status, f.message)
        case let e as JSONParseError: return (400, "\(e)")
        case is NIOTooManyBytesError: return (413, "the request body exceeds the limit")
        case let e as DecodingError: return (400, "unexpected request body: \(Self.describe(e))")
        case let e as ClusterError:
            switch e {
            case .unknownNode, .unknownDatabase: return (404, e.description)
            case .invalid: return (400, e.description)
            case .conflict: return (409, e.description)
            // The same name created through two nodes at once: the catalog's key admits one.
            case .catalogWrite(let why) where why.hasPrefix("UNIQUE constraint failed"): return (409, "it exists already (\(why))")
            case .catalogWrite(let why) where why.contains(JoinTokens.refusal): return (403, JoinTokens.refusal)
            case .catalogWrite(let why) where why.contains(JoinGuard.conflict): return (409, JoinGuard.conflict)
            case .peerRefused(_, let status, let message) where (400..<500).contains(status):
                return (status, Self.innerMessage(message))
            default: return (503, e.description)
            }
        case AccessDenied.unauthenticated(let m): return (401, m)
        case AccessDenied.forbidden(let m): return (403, m)
        case AccessDenied.limited(let s): return (429, AuthError.tooManyAttempts(retryAfterSeconds: s).description)
        case RuntimeError.databaseDropped: return (404, RuntimeError.databaseDropped.description)
        case let e as RuntimeError where { if case .entryTooLarge = e { return true } else { return false } }(): return (413, e.description)
        case let e as RuntimeError: return (503, e.description)
        case let e as PeerError: return (503, e.description)
        case RouteError.notFound(let m): return (404, m)
        case RouteError.unavailable(let m): return (503, m)
        case RouteError.refused(let status, let m): return (status, m)
        case let e as NotCommitted: return (503, e.description + "; it is safe to retry")
        case let e as OutcomeUnknown:
            return (503, e.description.hasSuffix("outcome is unknown") ? e.description : e.description + "; its outcome is unknown")
        default: return (500, "\(error)")
        }
    }

    /// A forwarded error's own message, not wrapped once per hop.
    private static func innerMessage(_ body: String) -> String {
        if case .string(let m)? = (try? JSON.parse(Array(body.utf8)))?["error"] { return m }
        return body
    }

    private static func describe(_ e: DecodingError) -> String {
        switch e {
        case .keyNotFound(let key, _): return "missing field \"\(key.stringValue)\""
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c):
            let path = c.codingPath.map(\.stringValue).joined(separator: ".")
            return (path.isEmpty ? "" : "field \"\(path)\": ") + c.debugDescription
        @unknown default: return "\(e)"
        }
    }

    static func json(_ status: Int, _ body: JSON) -> Response { jsonReply(status, body).response }

    /// A JSON answer naming the node that served it (`X-Cairn-Node`).
    static func json(_ status: Int, _ body: JSON, servedBy node: NodeID) -> Response { jsonReply(status, body, servedBy: node).response }

    static func jsonReply(_ status: Int, _ body: JSON, servedBy node: NodeID? = nil) -> Reply {
        var bytes = body.serialized()
        bytes.append(0x0A)
        var reply = Reply(status: status, headers: [.contentType: "application/json"], body: bytes)
        if let node { reply.headers[servedBy] = "\(node)" }
        return reply
    }

    func body(of request: Request) async throws -> [UInt8] {
        Array(buffer: try await request.body.collect(upTo: options.maxBodyBytes))
    }

    func parse(_ bytes: [UInt8]) throws -> JSON {
        guard !bytes.isEmpty else { throw HTTPFailure.badRequest("the request body is empty; expected a JSON object") }
        let json = try parseBody(bytes)
        guard case .object = json else { throw HTTPFailure.badRequest("the request body must be a JSON object") }
        return json
    }

    /// A request body's JSON, at most `maxRequestValues` values of it (memory: 24 bytes a value).
    func parseBody(_ bytes: [UInt8]) throws -> JSON {
        switch Result(catching: { () throws(JSONParseError) -> JSON in try JSON.parse(bytes, maxValues: options.maxRequestValues) }) {
        case .success(let json): return json
        case .failure(let e) where e.tooManyValues:
            throw HTTPFailure(status: 413, message: "the request body holds more than \(options.maxRequestValues) JSON values (the limit per request); split it")
        case .failure(let e): throw e
        }
    }

    func decode<T: Decodable>(_ type: T.Type, from request: Request) async throws -> T {
        let bytes = try await body(of: request)
        guard !bytes.isEmpty else { throw HTTPFailure.badRequest("the request body is empty; expected a JSON object") }
        return try JSONDecoder.cluster.decode(T.self, from: Data(bytes))
    }

    func encoded<T: Encodable>(_ value: T) throws -> JSON {
        try JSON.parse(Array(JSONEncoder.cluster.encode(value)))
    }

    /// How many nodes forwarded this request before this one, as the header says: believed only from
    /// a node (see `Principal.hops`).
    static func hopCount(_ request: Request) -> Int { request.headers[hops].flatMap { Int($0) } ?? 0 }

    /// The most forwards a request may have made: a count outside 0...this (a negative one would lift
    /// the bound on forwarding loops) is refused.
    static let maxHops = 3

    static func checkHops(_ request: Request) throws {
        guard let value = request.headers[hops] else { return }
        guard let n = Int(value), (0...maxHops).contains(n) else {
            throw HTTPFailure.badRequest("\(hops.rawName) must be a whole number from 0 to \(maxHops): it counts forwards between nodes")
        }
    }

    // MARK: - Data

    private func execute(_ request: Request, db: String, _ who: Principal) async throws -> Response {
        let (statements, atomic) = try writeArguments(try await body(of: request))
        audit.record(who, statements: statements, database: db)
        return Self.executed(try await write(statements, db: db, atomic: atomic)).response
    }

    /// What `POST /v1/db/{db}/execute` asks for: its statements, and whether they commit all or none.
    func writeArguments(_ bytes: [UInt8]) throws -> (statements: [SQLStatement], atomic: Bool) {
        let json = try parse(bytes)
        let statements = try Statements.parse(json["statements"], maxCount: options.maxStatementsPerRequest)
        var atomic = false
        switch json["atomic"] {
        case nil, .null?: break
        case .bool(let b)?: atomic = b
        default: throw HTTPFailure.badRequest("\"atomic\" must be true or false")
        }
        return (statements, atomic)
    }

    static func executed(_ answer: Answer) -> Reply {
        Self.answer(.object([("results", .array(answer.results.map(Statements.json(write:))))]), answer)
    }

    /// 200 with `body`, naming the node that served it when one did.
    static func answer(_ body: JSON, _ answer: Answer) -> Reply {
        jsonReply(200, body, servedBy: answer.node)
    }

    private func query(_ request: Request, _ who: Principal, db: String) async throws -> Response {
        let (statements, consistency) = try readArguments(try await body(of: request))
        return Self.queried(try await read(statements, db: db, consistency: consistency)).response
    }

    /// What `POST /v1/db/{db}/query` asks for: its statements, and how fresh the answer must be.
    func readArguments(_ bytes: [UInt8]) throws -> (statements: [SQLStatement], consistency: ReadConsistency) {
        let json = try parse(bytes)
        let statements = try Statements.parse(json["statements"], maxCount: options.maxStatementsPerRequest)
        return (statements, try Self.consistency(json))
    }

    static func queried(_ answer: Answer) -> Reply {
        Self.answer(.object([("results", .array(answer.results.map(Statements.json(query:))))]), answer)
    }

    static func consistency(_ json: JSON) throws -> ReadConsistency {
        switch json["consistency"] {
        case nil, .null?, .string("linearizable")?: return .linearizable
        case .string("local")?: return .local
        case .string("stale")?:
            switch json["freshness_ms"] {
            case nil, .null?: return .stale(freshnessMillis: 5_000)
            case .number(let t)? where Int64(t).map({ $0 > 0 }) == true: return .stale(freshnessMillis: Int64(t)!)
            default: throw HTTPFailure.badRequest("\"freshness_ms\" must be a positive whole number of milliseconds")
            }
        case .string(let other)?:
            throw HTTPFailure.badRequest("unknown consistency \"\(other)\"; use linearizable, stale or local")
        default: throw HTTPFailure.badRequest("\"consistency\" must be a string: linearizable, stale or local")
        }
    }

    /// This node's copy of the catalog if it `satisfies` the request, otherwise the catalog as of every
    /// change committed so far: a database, user or grant just created through another node is found
    /// here too, and "no such" answers are never merely this node being behind.
    func catalog(where satisfies: (Catalog) -> Bool) async throws -> Catalog {
        let cached = cluster.catalog
        return satisfies(cached) ? cached : try await committedCatalog()
    }

    // MARK: - Cluster and node

    private func databases(in catalog: Catalog, visibleTo who: Principal) -> JSON {
        let dbs = catalog.userDatabases
            .filter { !auth.enabled || who.grants.allows(.read, database: $0.name) }
        return .object([("databases", .array(dbs.map { db in
            .object([("name", .string(db.name)), ("group", .int(db.group)), ("replicas", .array(db.replicas.map { .int($0) }))])
        }))])
    }
}

/// Cross-origin access for browsers, for the configured origins only (off by default).
struct CORS: RouterMiddleware {
    typealias Context = CairnContext
    let origins: Set<String>
    let credentials: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin], origins.contains(origin) || origins.contains("*") else {
            return try await next(request, context)
        }
        var response = request.method == .options ? Response(status: .ok) : try await next(request, context)
        // Any origin: never with the browser's credentials, which would let every site act as the user.
        let wildcard = origins.contains("*")
        response.headers[.accessControlAllowOrigin] = wildcard ? "*" : origin
        response.headers[.accessControlAllowMethods] = "OPTIONS, GET, POST, PUT, DELETE"
        response.headers[.accessControlAllowHeaders] = credentials ? "Content-Type, Authorization" : "Content-Type"
        if credentials && !wildcard { response.headers[.accessControlAllowCredentials] = "true" }
        response.headers[.vary] = "Origin"
        return response
    }
}

/// The request context: Hummingbird's, plus the client's address (for failed-login limits).
struct CairnContext: RequestContext, RemoteAddressRequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// Makes the client's address available to the handlers below it.
struct ClientAddress: RouterMiddleware {
    typealias Context = CairnContext
    @TaskLocal static var current = ""

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await Self.$current.withValue(context.remoteAddress?.ipAddress ?? "") { try await next(request, context) }
    }
}
