import CairnAuth
import CairnCluster
import CairnCompat
import CairnJSON
import CairnNode
import CairnRaft
import CairnSQLite
import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore

/// Seed 004's load balancer and shard servers (`--compat shard-lb`), answered from one range-sharded
/// table: each of the seed's shards is a CairnDB shard (a Raft group on RF nodes), a `/write` batch
/// commits on every shard it reaches or on none, and any node answers any request. The requests and
/// their checks are `CairnCompat.ShardLB`'s; this wires them to the cluster.
final class ShardLBAPI: Sendable {
    let api: API
    /// The layout `/init` recorded, as last read, and when: a request uses it for a second before
    /// reading it again (an id outside every shard is looked up afresh before it is skipped).
    private let cached = NIOLockedValueBox<(layout: LBLayout, at: ContinuousClock.Instant)?>(nil)
    static let cacheSeconds = 1

    init(api: API) {
        self.api = api
    }

    func register(on router: RecordingRouter) {
        router.post("/init") { request, _ in await self.respond { who in try await self.initialize(request, who) } }
        router.get("/status") { _, _ in await self.respond { who in try await self.status(who) } }
        router.post("/add") { request, _ in await self.respond { who in try await self.add(request, who) } }
        router.delete("/rm") { request, _ in await self.respond { who in try await self.remove(request, who) } }
        router.get("/heartbeat") { _, _ in Response(status: .ok) }
        router.get("/test") { _, _ in API.json(200, .string("Test successful")) }
        router.get("/favicon.ico") { _, _ in Response(status: .noContent) }
        router.get("/home") { _, _ in
            let name = self.api.cluster.catalog.name(of: self.api.cluster.nodeID)
            return API.json(200, .object([("response", .object([("message", .string("Hello from server: \(name)")), ("status", .string("success"))]))]))
        }
        // The load balancer's and a shard server's endpoints share paths: a server's body names its shard.
        router.post("/read") { request, _ in
            await self.respond { who in
                try self.require(who, .read)
                return API.json(200, try await self.read(try await self.body(request), who))
            }
        }
        router.post("/write") { request, _ in
            await self.respond { who in
                try self.require(who, .write)
                return API.json(200, try await self.write(try await self.body(request), who))
            }
        }
        router.put("/update") { request, _ in await self.respond { who in try await self.update(request, who) } }
        router.delete("/del") { request, _ in await self.respond { who in try await self.delete(request, who) } }
        router.post("/del") { request, _ in await self.respond { who in try await self.delete(request, who) } }
        router.post("/config") { request, _ in await self.respond { who in try await self.config(request, who) } }
        router.post("/copy") { request, _ in await self.respond { who in try await self.copy(request, who) } }
        router.get("/copy") { request, _ in await self.respond { who in try await self.copy(request, who) } }
    }

    /// Runs `body` as the compatibility principal; any error in the seed's shape, never a 500.
    private func respond(_ body: (Principal) async throws -> Response) async -> Response {
        do {
            return try await body(try api.compatPrincipal())
        } catch {
            return failure(error).response
        }
    }

    /// An error in the seed's shape, never a 500.
    func failure(_ error: any Error) -> Reply {
        if let f = error as? CompatFailure { return API.jsonReply(f.status, f.body) }
        let (status, message) = API.classify(error)
        if status >= 500 && status != 503 { api.log("node \(api.cluster.nodeID): shard-lb: \(message)") }
        return API.jsonReply(status >= 500 ? 503 : status, ShardLB.failure(status >= 500 ? 503 : status, "<Error> \(message)").body)
    }

    func body(_ request: Request) async throws -> JSON {
        try Self.parsed(try await api.body(of: request), maxValues: api.options.maxRequestValues)
    }

    static func parsed(_ bytes: [UInt8], maxValues: Int) throws -> JSON {
        do {
            return try JSON.parse(bytes, maxValues: maxValues)
        } catch {
            throw CompatFailure(status: 422, body: .object([("detail", .array([.object([
                ("type", .string("json_invalid")), ("loc", .array([.string("body"), .int(error.offset)])), ("msg", .string("JSON decode error: \(error.message)")),
            ])]))]))
        }
    }

    func require(_ who: Principal, _ permission: Permission) throws {
        try api.auth.require(who, permission, database: ShardLB.database)
    }

    // MARK: The layout

    /// The configured layout; with `fresh`, as of every change committed. Not configured: a 400.
    private func layout(fresh: Bool = false) async throws -> LBLayout {
        if !fresh, let layout = cachedLayout { return layout }
        // This node's catalog copy knows a database once made; only its absence needs the committed catalog.
        let exists = api.cluster.catalog.databases[ShardLB.database] != nil ? true : try await api.committedCatalog().databases[ShardLB.database] != nil
        guard exists,
              let layout = try LBLayout.loaded(try await api.read(LBLayout.loadQueries, db: ShardLB.database, consistency: .linearizable).results) else {
            throw ShardLB.failure(400, "<Error> the database is not configured yet: POST /init first")
        }
        cached.withLockedValue { $0 = (layout, ContinuousClock.now) }
        return layout
    }

    /// The layout as read less than `cacheSeconds` ago, if it was.
    var cachedLayout: LBLayout? {
        guard let (layout, at) = cached.withLockedValue({ $0 }), ContinuousClock.now - at < .seconds(Self.cacheSeconds) else { return nil }
        return layout
    }

    /// Whether the students' table exists in this node's catalog copy (`ensureTable` makes it if not).
    var tableExists: Bool { api.cluster.catalog.shardedTables[ShardLB.database]?[ShardLB.table.lowercased()] != nil }

    /// The students' table, made if an `/init` stopped after recording the layout (the record is the
    /// commit point; the table follows from it).
    private func ensureTable(_ layout: LBLayout, _ who: Principal) async throws {
        guard !tableExists else { return }
        try require(who, .write)
        api.audit.record(who, statements: [layout.createTable], database: ShardLB.database)
        let results = try await api.write([layout.createTable], db: ShardLB.database, atomic: false).results
        if let e = results.first?.error { throw ShardLB.failure(400, "<Error> cannot create \(ShardLB.table): \(e)") }
    }

    /// Writes one student's statement (`/update`, `/del`): 404 if `studID` is in no shard (looked up
    /// afresh before saying so) or no row has it.
    private func writeStudent(_ studID: Int64, _ layout: LBLayout, _ who: Principal, _ statement: (LBLayout) -> SQLStatement) async throws {
        let current = layout.shard(of: studID) != nil ? layout : try await self.layout(fresh: true)
        guard current.shard(of: studID) != nil else { throw ShardLB.failure(404, "Student ID not found") }
        let s = statement(current)
        api.audit.record(who, statements: [s], database: ShardLB.database)
        let r = try await api.write([s], db: ShardLB.database, atomic: false).results[0]
        if let e = r.error { throw ShardLB.failure(400, "<Error> \(e)") }
        guard r.rowsAffected > 0 else { throw ShardLB.failure(404, "Student ID not found") }
    }

    // MARK: The load balancer

    private func initialize(_ request: Request, _ who: Principal) async throws -> Response {
        try require(who, .admin)
        let layout = try LBLayout.initRequest(try await body(request))
        let catalog = try await api.committedCatalog()
        // Server names are node names: each must be a node of the cluster.
        let unknown = layout.servers.keys.filter { catalog.node(named: $0) == nil }.sorted()
        guard unknown.isEmpty else {
            throw ShardLB.failure(400, "<Error> no node is named \(unknown.joined(separator: ", ")): server names are the nodes' --name (GET /v1/cluster lists them)")
        }
        if catalog.databases[ShardLB.database] == nil {
            do {
                _ = try await api.makeDatabase(ShardLB.database, shards: layout.shards.count, in: catalog, who)
            } catch ClusterError.catalogWrite(let why) where why.hasPrefix("UNIQUE constraint failed") {
                // Another /init made it at the same moment; its layout record decides below.
            }
        }
        let shardCount = try await api.committedCatalog().shardCount(of: ShardLB.database)
        guard shardCount == layout.shards.count else {
            throw ShardLB.failure(400, "<Error> the database is already configured (with \(shardCount) shards): use /add and /rm to change it")
        }
        api.audit.record(who, statements: layout.metadata, database: ShardLB.database)
        let recorded = try await api.write(layout.metadata, db: ShardLB.database, atomic: true).results
        if let e = recorded.first(where: { $0.error != nil })?.error {
            guard e.contains("UNIQUE constraint failed: LBConfig") else { throw ShardLB.failure(400, "<Error> \(e)") }
            throw ShardLB.failure(400, "<Error> the database is already configured: use /add and /rm to change it")
        }
        try await ensureTable(layout, who)
        cached.withLockedValue { $0 = (layout, ContinuousClock.now) }
        try await pinCopies()
        return API.json(200, .object([("message", .string("Configured Database")), ("status", .string("success"))]))
    }

    /// `/add`: new shards (each a range of `Stud_id` the system now takes) and servers for them. A
    /// server is a node: its name must be one that joined (start it with `--name` and `--join`).
    private func add(_ request: Request, _ who: Principal) async throws -> Response {
        try require(who, .admin)
        let layout = try await self.layout(fresh: true)
        var addition = try LBAddition(try await body(request), to: layout)
        var catalog = try await api.committedCatalog()
        let unknown = addition.servers.keys.filter { catalog.node(named: $0) == nil }.sorted()
        if !unknown.isEmpty {
            guard let supervisor = api.options.supervisor else {
                throw ShardLB.failure(400, "<Error> no node is named \(unknown.joined(separator: ", ")): start each as a cairn server with --name and --join first")
            }
            addition.servers = try await startServers(unknown, for: addition.servers, catalog: catalog,
                                                      SupervisorClient(address: supervisor.address, token: supervisor.token, peers: api.peers))
            catalog = try await api.committedCatalog()
        }
        let statements = addition.metadata
        if statements.count > 1 {
            api.audit.record(who, statements: statements, database: ShardLB.database)
            let results = try await api.write(statements, db: ShardLB.database, atomic: true).results
            if let e = results.lazy.compactMap(\.error).first {
                if e.contains("LBGuard") { throw ShardLB.failure(400, "<Error> a new shard overlaps one added a moment ago") }
                if e.contains("UNIQUE constraint failed: ShardT") { throw ShardLB.failure(400, "<Error> Duplicate shard id found in request (added a moment ago)") }
                throw ShardLB.failure(400, "<Error> \(e)")
            }
        }
        cached.withLockedValue { $0 = nil }
        try await pinCopies()
        let names = addition.servers.keys.sorted()
        return API.json(200, .object([("N", .int(catalog.activeVoters.count)), ("message", .string("Add " + names.joined(separator: " and "))),
                                      ("status", .string("successful"))]))
    }

    /// Supervised local mode: starts a server for each name in `names` (a template such as `Server[5]`
    /// gets its prefix and a random number, as the seed's load balancer chose one) and waits until each
    /// has joined under its name. Returns `servers` with templates replaced by the names given.
    private func startServers(_ names: [String], for servers: [String: [String]], catalog: Catalog,
                              _ supervisor: SupervisorClient) async throws -> [String: [String]] {
        var renamed: [String: String] = [:]
        var taken = Set(catalog.nodeNames.values).union(servers.keys)
        for name in names {
            var started = name
            if let prefix = LBAddition.templatePrefix(name) {
                repeat { started = prefix + String(Int.random(in: 10_000...99_999)) } while taken.contains(started)
                taken.insert(started)
            }
            api.log("node \(api.cluster.nodeID): shard-lb /add: asking the local supervisor for server \(started)")
            try await supervisor.spawn(started)
            renamed[name] = started
        }
        let deadline = ContinuousClock.now + .seconds(Self.joinSeconds)
        while true {
            let now = try await api.committedCatalog()
            if renamed.values.allSatisfy({ now.node(named: $0) != nil }) { break }
            guard ContinuousClock.now < deadline else {
                throw ShardLB.failure(503, "<Error> \(renamed.values.sorted().joined(separator: ", ")) started but did not join within \(Self.joinSeconds) s")
            }
            try await Task.sleep(for: .milliseconds(300))
        }
        var out: [String: [String]] = [:]
        for (name, held) in servers { out[renamed[name] ?? name, default: []] += held }
        return out
    }

    /// How long `/add` waits for servers it started to join.
    static let joinSeconds = 90

    /// `/rm`: servers leave as the seed's did, but without losing a copy: each is drained (its copies
    /// move to the others, each new copy caught up before the old one goes), then removed.
    private func remove(_ request: Request, _ who: Principal) async throws -> Response {
        try require(who, .admin)
        try api.auth.require(who, .remove)
        let removal = try LBRemoval(try await body(request))
        let catalog = try await api.committedCatalog()
        let me = api.cluster.nodeID
        var ids: [String: NodeID] = [:]
        for name in removal.named {
            guard let id = catalog.node(named: name) else { throw ShardLB.failure(400, "<Error> \(name) is not a valid server name") }
            guard id != me else { throw ShardLB.failure(400, "<Error> \(name) serves this request: send /rm to another server") }
            ids[name] = id
        }
        let live = catalog.activeVoters.filter { catalog.nodeStates[$0.id] != .dead }
        let copies = catalog.replicationFactor ?? api.cluster.config.replicationFactor
        guard live.count - removal.count >= copies else {
            throw ShardLB.failure(400, "<Error> removing \(removal.count) of \(live.count) servers would leave fewer than the \(copies) each shard keeps copies on")
        }
        let others = live.filter { $0.id != me && !ids.values.contains($0.id) }.shuffled()
        let victims = removal.victims(from: others.map { catalog.name(of: $0.id) })
        guard victims.count == removal.count else { throw ShardLB.failure(400, "<Error> Length of server list is more than removable instances") }
        for name in victims where ids[name] == nil { ids[name] = catalog.node(named: name) }
        for name in victims {
            api.audit.record(who, action: "drain node \(ids[name]!) (shard-lb /rm \(name))", database: nil)
            try await api.cluster.handleDrain(ids[name]!, hops: 0)
        }
        // Each leaves once no group keeps a copy on it.
        let deadline = ContinuousClock.now + .seconds(Self.drainSeconds)
        while true {
            let now = try await api.committedCatalog()
            if victims.allSatisfy({ name in !now.databases.values.contains { $0.replicas.contains(ids[name]!) } }) { break }
            guard ContinuousClock.now < deadline else {
                throw ShardLB.failure(503, "<Error> \(victims.joined(separator: ", ")) still hold copies after \(Self.drainSeconds) s; they keep draining: send /rm again later")
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        for name in victims {
            api.audit.record(who, action: "remove node \(ids[name]!) (shard-lb /rm \(name))", database: nil)
            try await api.cluster.handleRemove(ids[name]!, hops: 0)
        }
        try await api.awaitCatalog { c in victims.allSatisfy { c.nodes[ids[$0]!]?.removed == true } }
        _ = try? await api.write(LBRemoval.forgetting(victims), db: ShardLB.database, atomic: true)
        try? await pinCopies()
        return API.json(200, .object([("message", .object([("N", .int(live.count - victims.count)), ("servers", .array(victims.map { .string($0) }))])),
                                      ("status", .string("successful"))]))
    }

    /// Gives every seed shard's ids a range, and so a Raft group, of their own: a shard `/add` made
    /// splits off the range that held its ids (`API.splitRange`). Each split is recorded before the
    /// next is planned; one that must wait (a move of the shard under way) is tried again.
    private func splitNewShards() async throws {
        let layout = try await self.layout(fresh: true)
        let first = layout.shards.map(\.low).min()
        for shard in layout.shards.sorted(by: { $0.low < $1.low }) where shard.low != first {
            let deadline = ContinuousClock.now + .seconds(Self.splitSeconds)
            while !Self.splitLows(try await api.committedCatalog()).contains(shard.low) {
                do {
                    _ = try await api.splitRange(ShardLB.database, table: ShardLB.table, at: .integer(shard.low))
                } catch let failure as HTTPFailure where failure.status == 503 && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(500))
                }
            }
        }
    }

    /// How long `/add` keeps trying to split a new shard off while the shard holding its ids moves.
    static let splitSeconds = 60

    /// Pins each range shard's copies to the servers the layout names for the seed shards it holds
    /// (MapT), so the cluster places them there (see `PlacementGroup.pinned`).
    private func pinCopies() async throws {
        try await splitNewShards()
        let layout = try await self.layout(fresh: true)
        let catalog = try await api.committedCatalog()
        guard catalog.shardedTables[ShardLB.database]?[ShardLB.table.lowercased()] != nil else { return }
        var pins: [Int: Set<NodeID>] = [:]
        for (server, held) in layout.servers {
            guard let node = catalog.node(named: server) else { continue }
            for id in held {
                guard let shard = layout.shard(named: id), let index = Self.shardIndex(of: shard, catalog) else { continue }
                pins[index, default: []].insert(node)
            }
        }
        var statements: [SQLStatement] = []
        for (i, group) in catalog.shards(of: ShardLB.database).enumerated() where catalog.pins[group.name] ?? [] != pins[i] ?? [] {
            statements += Catalog.setPins(group.name, pins[i] ?? [])
        }
        if !statements.isEmpty { try await api.cluster.changeCatalog(statements) }
    }

    /// How long `/rm` waits for its servers to drain before answering that they still are.
    static let drainSeconds = 300

    private func status(_ who: Principal) async throws -> Response {
        try require(who, .read)
        let layout = try await self.layout(fresh: true)
        return API.json(200, layout.status(placement: placement(of: layout)))
    }

    /// Where each seed shard's copies are: node name → shard ids (those of the range shard holding its ids).
    private func placement(of layout: LBLayout) -> [String: [String]] {
        let catalog = api.cluster.catalog
        let groups = catalog.shards(of: ShardLB.database)
        var out: [String: [String]] = [:]
        for shard in layout.shards {
            guard let r = Self.shardIndex(of: shard, catalog), r < groups.count else { continue }
            for node in groups[r].replicas { out[catalog.name(of: node), default: []].append(shard.id) }
        }
        return out
    }

    /// The range table's split points (each range shard starts at one, the first at the lowest id).
    static func splitLows(_ catalog: Catalog) -> [Int64] {
        (catalog.shardedTables[ShardLB.database]?[ShardLB.table.lowercased()]?.splitPoints ?? []).compactMap { if case .integer(let v) = $0 { v } else { nil } }
    }

    /// The shard holding a seed shard's ids, by the range table's layout in the catalog.
    static func shardIndex(of shard: LBShard, _ catalog: Catalog) -> Int? {
        guard let table = catalog.shardedTables[ShardLB.database]?[ShardLB.table.lowercased()], let points = table.splitPoints,
              let splits = RangeSplits(points: points, placement: table.rangePlacement) else { return nil }
        return splits.shard(ofRange: splits.range(of: .integer(shard.low)), shardCount: catalog.shardMap(of: ShardLB.database).rangeShardCount)
    }

    /// A `/read` as planned against a layout: the one statement it needs (none when the range meets
    /// no shard) and how its rows are answered.
    struct PlannedRead: Sendable {
        var statement: SQLStatement?
        var layout: LBLayout
        var served: [LBShard]
        /// A shard server's read (its body names the shard): answered without `shards_queried`.
        var byServer: Bool

        func reply(_ result: StatementResult?) throws -> JSON {
            var rows: [JSON] = []
            if let result {
                if let e = result.error { throw ShardLB.failure(400, "<Error> \(e)") }
                // Ids in a gap between shards are never written; the range's rows are the shards' rows.
                rows = result.rows.map(layout.record)
            }
            if byServer { return .object([("data", .array(rows)), ("status", .string("success"))]) }
            return .object([("shards_queried", .array(served.map { .string($0.id) })), ("data", .array(rows)), ("status", .string("success"))])
        }
    }

    /// The ids a `/read` asks for (checked before the layout is looked at).
    static func readRange(_ json: JSON) throws -> (low: Int64, high: Int64) {
        guard case .object = json else { throw ShardLB.failure(400, "<Error> send a JSON object") }
        let range = json["Stud_id"]
        guard case .object? = range else { throw CompatFailure(status: 422, body: Self.missing(["Stud_id"])) }
        guard let low = Lax.integer(range?["low"]), let high = Lax.integer(range?["high"]) else {
            throw ShardLB.failure(400, "<Error> Stud_id needs whole numbers \"low\" and \"high\"")
        }
        return (low, high)
    }

    /// nil when `layout` may be too old to say (a shard it does not name): plan again with a fresh one.
    static func planRead(_ json: JSON, _ layout: LBLayout, fresh: Bool) throws -> PlannedRead? {
        let (low, high) = try readRange(json)
        var served: [LBShard]
        if case .string(let name)? = json["shard"] {
            // A shard server's read: that shard's part of the range.
            guard let shard = layout.shard(named: name) else {
                if fresh { throw ShardLB.failure(400, "<Error> no shard \(name)") }
                return nil
            }
            served = [shard]
        } else {
            served = layout.shards(from: low, to: high)
        }
        var statement: SQLStatement?
        if !served.isEmpty { statement = layout.select(from: max(low, served.first!.low), to: min(high, served.last!.high - 1)) }
        return PlannedRead(statement: statement, layout: layout, served: served, byServer: json["shard"] != nil)
    }

    /// `/read`'s answer (200), or the error to answer with.
    func read(_ json: JSON, _ who: Principal) async throws -> JSON {
        _ = try Self.readRange(json)
        var plan = try Self.planRead(json, try await layout(), fresh: false)
        if plan == nil { plan = try Self.planRead(json, try await layout(fresh: true), fresh: true) }
        guard let plan else { throw ShardLB.failure(400, "<Error> the layout changed while the read was planned; retry") }
        var result: StatementResult?
        if let statement = plan.statement {
            result = try await api.read([statement], db: ShardLB.database, consistency: .linearizable).results[0]
        }
        return try plan.reply(result)
    }

    /// A `/write` as planned against a layout: the inserts it needs (none when no record is in a
    /// shard) and its answer once they committed.
    struct PlannedWrite: Sendable {
        var statements: [SQLStatement]
        /// Each inserted row's Stud_id, in order (what places the rows on CairnDB's shards).
        var keys: [[SQLValue]]
        var layout: LBLayout
        var reply: JSON

        /// The inserts' results: any refusal is the client's 400, and nothing was written (one transaction).
        static func check(_ results: [StatementResult]) throws {
            guard let e = results.first(where: { $0.error != nil })?.error else { return }
            if e.hasPrefix("UNIQUE constraint failed") { throw ShardLB.failure(400, "<Error> a student in the batch exists already (\(e)); nothing was written") }
            throw ShardLB.failure(400, "<Error> \(e); nothing was written")
        }
    }

    /// nil when `layout` may be too old to say (a shard or an id it does not place): plan again with a fresh one.
    static func planWrite(_ json: JSON, _ layout: LBLayout, fresh: Bool) throws -> PlannedWrite? {
        guard case .array(let records)? = json["data"] else { throw CompatFailure(status: 422, body: Self.missing(["data"])) }
        var shard: LBShard?
        if case .string(let name)? = json["shard"] {
            guard let named = layout.shard(named: name) else {
                if fresh { throw ShardLB.failure(400, "<Error> no shard \(name)") }
                return nil
            }
            shard = named
        }
        var rows: [[SQLValue]] = []
        rows.reserveCapacity(records.count)
        for (k, record) in records.enumerated() { rows.append(try layout.values(of: record, at: [.string("data"), .int(k)])) }
        let key = layout.keyIndex
        func id(_ row: [SQLValue]) -> Int64 { if case .integer(let v) = row[key] { v } else { .min } }
        if let shard {
            if let outside = rows.first(where: { !shard.holds(id($0)) }) { throw ShardLB.failure(400, "<Error> Stud_id \(id(outside)) is not in shard \(shard.id)") }
        } else {
            // An id in no shard may be in one added through another node a moment ago: look again
            // before skipping it, as the seed skipped (and still counted) a record in no shard.
            if !fresh && rows.contains(where: { layout.shard(of: id($0)) == nil }) { return nil }
            rows.removeAll { layout.shard(of: id($0)) == nil }
        }
        var reply = JSON.object([("message", .string("\(records.count) Data entries added")), ("status", .string("success"))])
        // A body naming a shard (as a string or not, as the seed's server took it) gets a server's answer.
        if json["shard"] != nil {
            var index: Int64 = 0
            if json["curr_idx"] != nil {
                guard let i = Lax.integer(json["curr_idx"]), (0...(Int64(1) << 53)).contains(i) else {
                    throw ShardLB.failure(400, "<Error> curr_idx must be a whole number from 0 to 2^53")
                }
                index = i
            }
            reply = .object([("message", .string("Data entries added")), ("current_idx", .int(index + Int64(rows.count))), ("status", .string("success"))])
        }
        return PlannedWrite(statements: rows.isEmpty ? [] : layout.inserts(rows), keys: rows.map { [$0[key]] }, layout: layout, reply: reply)
    }

    /// `/write`'s answer (200), or the error to answer with.
    func write(_ json: JSON, _ who: Principal) async throws -> JSON {
        guard case .array? = json["data"] else { throw CompatFailure(status: 422, body: Self.missing(["data"])) }
        var plan = try Self.planWrite(json, try await layout(), fresh: false)
        if plan == nil { plan = try Self.planWrite(json, try await layout(fresh: true), fresh: true) }
        guard let plan else { throw ShardLB.failure(400, "<Error> the layout changed while the write was planned; retry") }
        if !plan.statements.isEmpty {
            try await ensureTable(plan.layout, who)
            api.audit.record(who, statements: plan.statements, database: ShardLB.database)
            try PlannedWrite.check(try await api.write(plan.statements, db: ShardLB.database, atomic: true).results)
        }
        return plan.reply
    }

    private func update(_ request: Request, _ who: Principal) async throws -> Response {
        try require(who, .write)
        let json = try await body(request)
        guard let id = Lax.integer(json["Stud_id"]) else { throw CompatFailure(status: 422, body: Self.missing(["Stud_id"])) }
        let layout = try await self.layout()
        let values = try layout.values(of: json["data"], at: [.string("data")])
        guard case .integer(id) = values[layout.keyIndex] else {
            throw ShardLB.failure(400, "<Error> data.Stud_id must be \(id): a student's Stud_id never changes")
        }
        try await writeStudent(id, layout, who) { $0.update(values) }
        let message = json["shard"] != nil ? "Data entry for Stud_id:\(id) updated" : "Data entry for Stud_id: \(id) updated"
        return API.json(200, .object([("message", .string(message)), ("status", .string("success"))]))
    }

    private func delete(_ request: Request, _ who: Principal) async throws -> Response {
        try require(who, .write)
        let json = try await body(request)
        guard let id = Lax.integer(json["Stud_id"]) else { throw CompatFailure(status: 422, body: Self.missing(["Stud_id"])) }
        let layout = try await self.layout()
        try await writeStudent(id, layout, who) { $0.delete(id) }
        let message = json["shard"] != nil ? "Data entry with Stud_id:\(id) removed" : "Data entry with Stud_id:\(id) removed from all replicas"
        return API.json(200, .object([("message", .string(message)), ("status", .string("success"))]))
    }

    // MARK: A shard server's own endpoints

    /// `/config`: every shard is already configured on the nodes holding its copies; this checks the
    /// shards named exist and answers as a server of the seed did.
    private func config(_ request: Request, _ who: Principal) async throws -> Response {
        try require(who, .read)
        let json = try await body(request)
        guard case .array(let list)? = json["shards"] else { throw CompatFailure(status: 422, body: Self.missing(["shards"])) }
        let layout = try await self.layout(fresh: true)
        var names: [String] = []
        for case .string(let s) in list { names.append(s) }
        guard names.count == list.count else { throw ShardLB.failure(400, "<Error> shards must be a list of shard ids") }
        for s in names where layout.shard(named: s) == nil { throw ShardLB.failure(400, "<Error> no shard \(s)") }
        let me = api.cluster.catalog.name(of: api.cluster.nodeID)
        return API.json(200, .object([("message", .string(names.map { "\(me):\($0)" }.joined(separator: ", ") + " configured")), ("status", .string("success"))]))
    }

    /// `/copy`: every row of the named shards.
    private func copy(_ request: Request, _ who: Principal) async throws -> Response {
        try require(who, .read)
        let json = try await body(request)
        guard case .array(let list)? = json["shards"] else { throw CompatFailure(status: 422, body: Self.missing(["shards"])) }
        let layout = try await self.layout(fresh: true)
        var out: [(String, JSON)] = []
        for case .string(let name) in list {
            guard let shard = layout.shard(named: name) else { throw ShardLB.failure(400, "<Error> no shard \(name)") }
            let r = try await api.read([layout.select(from: shard.low, to: shard.high - 1)], db: ShardLB.database, consistency: .linearizable).results[0]
            if let e = r.error { throw ShardLB.failure(400, "<Error> \(e)") }
            out.append((name, .array(r.rows.map(layout.record))))
        }
        return API.json(200, .object(out + [("status", .string("success"))]))
    }

    static func missing(_ location: [String]) -> JSON {
        .object([("detail", .array([.object([("type", .string("missing")), ("loc", .array([.string("body")] + location.map { .string($0) })),
                                             ("msg", .string("Field required"))])]))])
    }
}
