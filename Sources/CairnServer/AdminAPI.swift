import CairnJSON
import CairnAuth
import CairnCluster
import CairnNode
import CairnRouter
import CairnRaft
import CairnSQLite
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension API {
    func addAuthRoutes(to router: RecordingRouter) {
        router.post("/v1/auth/token") { request, _ in
            await self.respond(request, nil, open: true) { _ in try await self.issueToken(request) }
        }
        router.get("/v1/users") { request, _ in
            await self.respond(request, .all) { _ in Self.json(200, Self.usersJSON(try await self.committedCatalog())) }
        }
        router.post("/v1/users") { request, _ in
            await self.respond(request, .all) { who in try await self.createUser(request, who) }
        }
        router.delete("/v1/users/:name") { request, context in
            let name = try context.parameters.require("name")
            return await self.respond(request, .all) { who in
                _ = try await self.user(named: name)
                guard name != "admin" else { throw HTTPFailure.badRequest("the admin user cannot be deleted; change its password instead") }
                self.audit.record(who, action: "delete user \(name)", database: nil)
                try await self.cluster.changeCatalog(Catalog.deleteUser(name))
                try await self.awaitCatalog { $0.users[name] == nil }
                return Self.json(200, .object([("deleted", .string(name))]))
            }
        }
        router.put("/v1/users/:name/password") { request, context in
            let name = try context.parameters.require("name")
            // Users may change their own password; changing someone else's takes `all`.
            return await self.respond(request, nil) { who in try await self.changePassword(name, request, who) }
        }
        router.post("/v1/users/:name/grants") { request, context in
            let name = try context.parameters.require("name")
            return await self.respond(request, .all) { who in try await self.changeGrant(name, request, who, add: true) }
        }
        router.delete("/v1/users/:name/grants") { request, context in
            let name = try context.parameters.require("name")
            return await self.respond(request, .all) { who in try await self.changeGrant(name, request, who, add: false) }
        }
    }

    /// Waits (briefly) until this node's copy of the catalog shows a change just committed.
    func awaitCatalog(_ condition: (Catalog) -> Bool) async throws {
        // The change is committed: one linearizable refresh normally shows it; retries cover a leader change.
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition(cluster.catalog) {
            guard ContinuousClock.now < deadline else { throw HTTPFailure.unavailable("the change committed but this node has not applied it yet") }
            if (try? await cluster.refreshCatalog()).map(condition) == true { return }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// `name`'s entry, or a 404 once the committed catalog confirms there is none.
    func user(named name: String) async throws -> CatalogUser {
        guard let user = try await catalog(where: { $0.users[name] != nil }).users[name] else { throw HTTPFailure.notFound("no user named \"\(name)\"") }
        return user
    }

    private func issueToken(_ request: Request) async throws -> Response {
        let json = try parse(try await body(of: request))
        guard case .string(let name)? = json["username"], case .string(let password)? = json["password"] else {
            throw HTTPFailure.badRequest("send {\"username\": ..., \"password\": ...}")
        }
        try await auth.check(name: name, password: password, remote: ClientAddress.current)
        guard let user = cluster.catalog.users[name] else { throw AccessDenied.unauthenticated(AuthError.badCredentials.description) }
        let (token, expires) = try await auth.issueToken(user: user)
        return Self.json(200, .object([("token", .string(token)), ("token_type", .string("Bearer")),
                                       ("expires_at", .string(ISO8601DateFormatter().string(from: expires))),
                                       ("username", .string(name))]))
    }

    private static func usersJSON(_ catalog: Catalog) -> JSON {
        let names = Set(catalog.users.keys).union(catalog.grants.keys).sorted()
        return .object([("users", .array(names.map { name in
            .object([("username", .string(name)), ("password_set", .bool(catalog.users[name] != nil)),
                     ("grants", Self.grantsJSON(catalog.grants[name] ?? []))])
        }))])
    }

    static func grantsJSON(_ grants: Set<Grant>) -> JSON {
        .array(grants.sorted { ($0.permission.rawValue, $0.database) < ($1.permission.rawValue, $1.database) }.map { g in
            g.database.isEmpty ? .object([("permission", .string(g.permission.rawValue))])
                : .object([("permission", .string(g.permission.rawValue)), ("database", .string(g.database))])
        })
    }

    static func validName(_ name: String, what: String) throws {
        guard !name.isEmpty, name.count <= 64, name.first!.isLetter,
              name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == ".") }) else {
            throw HTTPFailure.badRequest("\(what) must start with a letter and hold at most 64 letters, digits, '_', '-' or '.'")
        }
    }

    static func validPassword(_ password: String) throws {
        guard password.count >= 8 else { throw HTTPFailure.badRequest("a password needs at least 8 characters") }
        guard password.utf8.count <= 1024 else { throw HTTPFailure.badRequest("a password may not exceed 1024 bytes") }
    }

    private func createUser(_ request: Request, _ who: Principal) async throws -> Response {
        let json = try parse(try await body(of: request))
        guard case .string(let name)? = json["username"], case .string(let password)? = json["password"] else {
            throw HTTPFailure.badRequest("send {\"username\": ..., \"password\": ..., \"grants\": [...]}")
        }
        try Self.validName(name, what: "a username")
        try Self.validPassword(password)
        guard try await catalog(where: { $0.users[name] != nil }).users[name] == nil else { throw HTTPFailure(status: 409, message: "user \"\(name)\" exists") }
        var statements = Catalog.createUser(name, passwordHash: try await AuthService.offLoop { try PasswordHash.make(password) })
        for g in try Self.parseGrants(json["grants"]) { statements += Catalog.grant(g, to: name) }
        audit.record(who, action: "create user \(name)", database: nil)
        try await cluster.changeCatalog(statements)
        try await awaitCatalog { $0.users[name] != nil }
        return Self.json(201, .object([("username", .string(name)), ("grants", Self.grantsJSON(cluster.catalog.grants[name] ?? []))]))
    }

    static func parseGrants(_ json: JSON?) throws -> [Grant] {
        switch json {
        case nil, .null?: return []
        case .array(let items)?: return try items.map(parseGrant)
        default: throw HTTPFailure.badRequest("\"grants\" must be an array of {\"permission\": ..., \"database\": ...}")
        }
    }

    static func parseGrant(_ json: JSON) throws -> Grant {
        let names = Permission.allCases.map(\.rawValue).joined(separator: ", ")
        guard case .string(let p)? = json["permission"] else { throw HTTPFailure.badRequest("a grant needs a \"permission\" (\(names))") }
        guard let permission = Permission(rawValue: p) else { throw HTTPFailure.badRequest("unknown permission \"\(p)\"; use one of \(names)") }
        var database = ""
        if case .string(let d)? = json["database"] { database = d }
        if permission.isDatabaseLevel && database.isEmpty {
            throw HTTPFailure.badRequest("permission \(p) applies to a database: add \"database\" (or \"*\" for all)")
        }
        return Grant(permission, database: database)
    }

    private func changePassword(_ name: String, _ request: Request, _ who: Principal) async throws -> Response {
        if who.user != name { try auth.require(who, .all) }
        let epoch = try await user(named: name).passwordEpoch
        let json = try parse(try await body(of: request))
        guard case .string(let password)? = json["password"] else { throw HTTPFailure.badRequest("send {\"password\": ...}") }
        try Self.validPassword(password)
        audit.record(who, action: "change password of \(name)", database: nil)
        let hash = try await AuthService.offLoop { try PasswordHash.make(password) }
        try await cluster.changeCatalog(Catalog.setPassword(name, passwordHash: hash))
        try await awaitCatalog { ($0.users[name]?.passwordEpoch ?? epoch) != epoch }
        return Self.json(200, .object([("username", .string(name)), ("tokens_revoked", .bool(true))]))
    }

    private func changeGrant(_ name: String, _ request: Request, _ who: Principal, add: Bool) async throws -> Response {
        if name != everyone { _ = try await user(named: name) }
        let grant = try Self.parseGrant(try parse(try await body(of: request)))
        audit.record(who, action: "\(add ? "grant" : "revoke") \(grant.permission.rawValue)\(grant.database.isEmpty ? "" : " on \(grant.database)") \(add ? "to" : "from") \(name)", database: nil)
        try await cluster.changeCatalog(add ? Catalog.grant(grant, to: name) : Catalog.revoke(grant, from: name))
        try await awaitCatalog { ($0.grants[name] ?? []).contains(grant) == add }
        return Self.json(200, .object([("username", .string(name)), ("grants", Self.grantsJSON(cluster.catalog.grants[name] ?? []))]))
    }

    // MARK: - Databases

    func createDatabase(_ request: Request, _ who: Principal) async throws -> Response {
        let json = try parse(try await body(of: request))
        guard case .string(let name)? = json["name"] else { throw HTTPFailure.badRequest("send {\"name\": ...}") }
        try Self.validName(name, what: "a database name")
        // A copy that still lists it may predate a drop through another node: only the committed catalog says it exists.
        let catalog = try await catalog(where: { $0.databases[name] == nil })
        guard catalog.databases[name] == nil else { throw HTTPFailure(status: 409, message: "database \"\(name)\" exists") }
        var shards: Int?
        switch json["shards"] {
        case nil, .null?: break
        case .number(let n)? where Int(n).map({ (1...Catalog.maxShardCount).contains($0) }) == true: shards = Int(n)!
        default: throw HTTPFailure.badRequest("\"shards\" must be a whole number from 1 to \(Catalog.maxShardCount): how many shards its sharded tables are spread over")
        }
        let db = try await makeDatabase(name, shards: shards, in: catalog, who)
        return Self.json(201, .object([("name", .string(name)), ("group", .int(db.group)), ("replicas", .array(db.replicas.map { .int($0) })),
                                       ("shards", .int(cluster.catalog.shardCount(of: name)))]))
    }

    /// Records a new database (with `shards` shards for its sharded tables; nil: the default) in the
    /// catalog and waits until this node's copy has it. A name taken meanwhile is the catalog's 409.
    func makeDatabase(_ name: String, shards: Int?, in catalog: Catalog, _ who: Principal) async throws -> CatalogDatabase {
        let founders = try await cluster.founders(groups: 1, in: catalog)[0]
        guard !founders.isEmpty else { throw HTTPFailure.unavailable("no voting node is registered yet") }
        audit.record(who, action: "create database \(name)", database: name)
        try await cluster.changeCatalog(Catalog.createDatabase(name, founders: founders) + (shards.map { Catalog.setShardCount(name, $0) } ?? []))
        try await awaitCatalog { $0.databases[name] != nil }
        guard let db = cluster.catalog.databases[name] else { throw HTTPFailure.notFound("database \"\(name)\" was dropped while it was being created") }
        return db
    }

    func dropDatabase(_ name: String, _ who: Principal) async throws -> Response {
        guard name != defaultDatabase else { throw HTTPFailure.badRequest("the default database cannot be dropped (rqlite's endpoints use it)") }
        // `group(of:)` answers 404 for an unknown name. First an entry in the database's own log,
        // through its leader: every write and read ordered after it is refused on every
        // replica, whichever node's catalog copy routed it. Then the catalog forgets the database,
        // and each replica deletes its copy.
        audit.record(who, action: "drop database \(name)", database: name)
        let group = try await groupRouter.group(of: name)
        do {
            _ = try await groupRouter.execute(SQLCommand.dropDatabase(), group: group)
        } catch RuntimeError.databaseDropped {
            // An earlier attempt got this far; finish it.
        }
        // Its shards go the same way, each ended in its own log first; a database made later under
        // the same name starts with no shards.
        let shards = cluster.catalog.databases.values.filter { Catalog.shardOf($0.name)?.database == name }
        // A split's child reserved and not recorded may exist nowhere yet (it has no leader to end it):
        // the catalog forgets it, and any copy a half-done split made is retired with the database.
        for shard in shards where cluster.catalog.splitOrigins[shard.name]?.index != 0 {
            do {
                _ = try await groupRouter.execute(SQLCommand.dropDatabase(), group: shard.group)
            } catch RuntimeError.databaseDropped {
                // Ended by an earlier attempt.
            }
        }
        if !shards.isEmpty { try await cluster.changeCatalog(shards.flatMap { Catalog.dropDatabase($0.name) }) }
        try await cluster.changeCatalog(Catalog.dropDatabase(name))
        try await awaitCatalog { $0.databases[name] == nil }
        return Self.json(200, .object([("dropped", .string(name))]))
    }

    // MARK: - Mixed requests

    /// Reads and writes in one request: all reads are served as reads; otherwise the batch is one log
    /// entry in which reads see the batch's earlier writes.
    func mixed(_ request: Request, db: String, _ who: Principal) async throws -> Response {
        let bytes = try await body(of: request)
        let json = try parse(bytes)
        let statements = try Statements.parse(json["statements"], maxCount: options.maxStatementsPerRequest)
        let consistency = try Self.consistency(json)
        var atomic = false
        if case .bool(let b)? = json["atomic"] { atomic = b }
        let mayWrite = !auth.enabled || who.grants.allows(.write, database: db)
        let group = try await groupRouter.group(of: db)
        if let (results, _) = try await requestWithShards(statements, db: db, group: group, atomic: atomic, consistency: consistency,
                                                          beforeWrite: { try auth.require(who, .write, database: db); audit.record(who, statements: statements, database: db) }) {
            return Self.json(200, .object([("results", .array(results.map { r in r.columns.isEmpty ? Statements.json(write: r) : Statements.json(query: r) }))]))
        }
        let routed: Routed
        do {
            routed = try await audited(who, statements, database: db) {
                try await self.groupRouter.request(SQLCommand.now(statements, atomic: atomic), group: group,
                                                   consistency: consistency, mayWrite: mayWrite)
            }
        } catch RouteError.refused(403, let why) where !mayWrite {
            // Judged a write where it ran: refused in the words every endpoint uses.
            try auth.require(who, .write, database: db)
            throw RouteError.refused(status: 403, message: why)
        }
        return Self.json(200, .object([("results", .array(routed.results.map { r in
            r.columns.isEmpty ? Statements.json(write: r) : Statements.json(query: r)
        }))]), servedBy: routed.node)
    }

    /// Runs a request that reads or writes (judged where it runs) and records it in the audit log if
    /// it wrote, or may have (its outcome is unknown).
    func audited(_ who: Principal, _ statements: [SQLStatement], database: String,
                 _ run: () async throws -> Routed) async throws -> Routed {
        do {
            let routed = try await run()
            if routed.wrote { audit.record(who, statements: statements, database: database) }
            return routed
        } catch let e as OutcomeUnknown {
            audit.record(who, statements: statements, database: database)
            throw e
        }
    }
}
