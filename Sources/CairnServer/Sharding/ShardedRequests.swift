import CairnCluster
import CairnJSON
import CairnQuery
import CairnNode
import CairnRaft
import CairnRouter
import CairnSQLite
import Foundation
import Hummingbird
import Metrics
import NIOConcurrencyHelpers

/// Requests on sharded tables: planned by `CairnQuery` (pure), run on the shards' groups through
/// the group router (encoded commands between nodes, never the client's request), and
/// answered as one SQLite holding every row would answer. Statements that name no sharded table take
/// the unsharded path unchanged.
extension API {
    /// A database's shards as a catalog copy describes them.
    struct ShardView: Sendable {
        var groups: [GroupID]
        var map: ShardMap
        var tables: [String: CatalogShardedTable]
        /// The database's home group (its unsharded tables): a part of a transaction across shards
        /// when a request writes to both.
        var home: GroupID
        /// The part of a request that goes to the home group, beside the shards' parts 0..<count.
        static let homePart = -1

        func group(ofPart part: Int) -> GroupID { part == Self.homePart ? home : groups[part] }
    }

    func shardView(_ db: String, _ catalog: Catalog) -> ShardView? {
        // Asked for every request: a database without sharded tables (most) is answered before its
        // shards' names are built and looked up.
        guard let tables = catalog.shardedTables[db], !tables.isEmpty else { return nil }
        let groups = catalog.shards(of: db).map(\.group)
        guard !groups.isEmpty, let home = catalog.databases[db]?.group else { return nil }
        let map = catalog.shardMap(of: db)
        guard map.count == groups.count else { return nil }
        return ShardView(groups: groups, map: map, tables: tables, home: home)
    }

    /// This node's catalog copy, and `db`'s shards in it: kept per copy (building a view names and
    /// looks up every shard, a few microseconds a request).
    func currentShardView(_ db: String) -> (catalog: Catalog, view: ShardView?) {
        let (catalog, generation) = cluster.catalogAndGeneration
        if let known = shardViews.withLockedValue({ $0.generation == generation ? $0.views[db] : nil }) { return (catalog, known) }
        let view = shardView(db, catalog)
        shardViews.withLockedValue { cache in
            // A request that read an older copy than the cache's does not take the cache back to it.
            guard generation >= cache.generation else { return }
            if cache.generation != generation { cache = (generation, [:]) }
            // Only databases that exist: a client naming others fills nothing.
            if cache.views.count < Self.maxCachedShardViews, catalog.databases[db] != nil { cache.views[db] = view }
        }
        return (catalog, view)
    }

    static let maxCachedShardViews = 4_096

    /// Whether `sql` names any of `tables` (a cheap look at its words before planning). Text that does
    /// not even tokenize is left to the planner, which reports it.
    static func mentions(_ sql: String, _ tables: [String: CatalogShardedTable]) -> Bool {
        guard let tokens = try? SQLLexer.rememberedTokens(sql) else { return true }
        return tokens.contains { $0.name.map { tables[$0] != nil } ?? false }
    }

    // MARK: Writes

    /// Runs a write request that touches sharded tables (or creates one): one result per statement, for
    /// any API to answer in its own shape; nil when it touches none.
    func writeSharded(_ statements: [SQLStatement], db: String, atomic: Bool) async throws -> [StatementResult]? {
        if let clause = try statements.lazy.compactMap({ try Self.shardingClause($0.sql) }).first {
            guard statements.count == 1 else { throw HTTPFailure.badRequest("send CREATE TABLE ... SHARD BY in a request of its own") }
            return try await createShardedTable(clause, db: db)
        }
        // DROP INDEX names no table: which table it drops from is in the catalog, as of every change
        // committed (an index created through another node a moment ago).
        var catalog = statements.contains(where: { Self.dropsIndex($0.sql) }) ? try await committedCatalog() : try await self.catalog { $0.databases[db] != nil }
        for attempt in 0..<3 {
            guard let view = shardView(db, catalog) else { return nil }
            let parts: [Int: ShardPart], reindexed: Set<String>
            switch try planWrite(statements, db: db, view: view, firstAttempt: attempt == 0) {
            case .unsharded:
                return nil
            case .stale:
                catalog = try await committedCatalog()
                continue
            case .dropTable(let table):
                return try await dropShardedTable(table, db: db, view: view)
            case .parts(let planned, let changed):
                (parts, reindexed) = (planned, changed)
            }
            for shard in parts.keys where shard != ShardView.homePart { Self.countShard(db, shard, "write") }
            let results: [StatementResult]
            if parts.count == 1, let (shard, part) = parts.first {
                // One shard: one entry, as for an unsharded database.
                var command = SQLCommand.now(part.statements, atomic: atomic)
                command.mapVersion = view.map.version
                results = try await executeWaitingOutLocks(command, group: view.group(ofPart: shard)).results
            } else {
                results = try await commitAcrossShards(parts, statementCount: statements.count, view: view)
            }
            if let refusal = Self.refusedWholly(results, atomic: atomic || parts.count > 1), attempt < 2 {
                // The shard map changed under this node's copy: read the committed one and plan again.
                catalog = try await catalogAfterSplit(db, refusal)
                continue
            }
            if !reindexed.isEmpty && results.allSatisfy({ $0.error == nil }) {
                try await recordSchema(of: reindexed, db: db, view: view)
            }
            return results
        }
        throw HTTPFailure.unavailable("the shard map kept changing while the write was routed; retry")
    }

    /// A shard's refusal of rows that are not its own (`ShardGuard`), when the write took effect
    /// nowhere: the whole command was refused for an older shard map, or the write was atomic. Then it
    /// may be planned again with the committed map and sent again; a statement that failed alone,
    /// after others of a non-atomic request committed, is the client's answer as it is (sending it
    /// again would run those twice).
    static func refusedWholly(_ results: [StatementResult], atomic: Bool) -> String? {
        guard let refusal = results.lazy.compactMap(\.error).first(where: { $0.contains(ShardGuard.wrongShard) }) else { return nil }
        return atomic || results.allSatisfy({ $0.error != nil }) ? refusal : nil
    }

    /// A write request planned against one catalog copy's shards (`planWrite`).
    enum WritePlan {
        /// It names no sharded table: the home group's, as an unsharded database's.
        case unsharded
        /// A statement does not analyze against this copy's sharded tables: a table sharded through
        /// another node a moment ago, perhaps (plan again with the committed catalog before refusing).
        case stale
        case dropTable(String)
        /// The statements for each part (shards 0..<count; `ShardView.homePart` when unsharded tables
        /// are written too), and the sharded tables whose schema the write changes.
        case parts([Int: ShardPart], reindexed: Set<String>)
    }

    /// Where each statement of a write goes. Pure (the router's async path and the fast path plan with
    /// it); throws the client's error (400) for a write the planner refuses.
    func planWrite(_ statements: [SQLStatement], db: String, view: ShardView, firstAttempt: Bool) throws -> WritePlan {
        var parts: [Int: ShardPart] = [:]
        var home: [Int] = []
        var reindexed: Set<String> = []
        for (k, statement) in statements.enumerated() {
            var found: (ShardingSchema, StatementAnalysis, PreparedWrite)?
            do {
                found = try Self.refusing { try schemaCopies.preparedWrite(statement.sql, database: db, tables: view.tables) }
                // DROP INDEX names no table; the catalog knows whether the index is one of theirs.
                if found == nil && droppedIndexTable(statement.sql, db: db, view) != nil {
                    found = try Self.refusing { try schemaCopies.preparedWrite(statement.sql, database: db, tables: view.tables, planned: true) }
                }
            } catch let unanalysable as SchemaCopies.Unanalysable {
                if firstAttempt { return .stale }
                throw Self.unanalysable(unanalysable.error, view)
            }
            // A statement naming none of the sharded or reference tables is the home group's.
            guard let (schema, analysis, prepared) = found else { home.append(k); continue }
            reindexed.formUnion(analysis.schemaTables.filter { view.tables[$0] != nil })
            switch try Self.refusing({ try WritePlanner(schema: schema, map: view.map).plan(statement, prepared: prepared) }) {
            case .home: home.append(k)
            case .dropTable(let table):
                guard statements.count == 1 else { throw HTTPFailure.badRequest("send DROP TABLE of a sharded or reference table in a request of its own") }
                return .dropTable(table)
            case .shards(let list):
                for s in list {
                    parts[s.shard, default: ShardPart()].statements.append(s.statement)
                    parts[s.shard, default: ShardPart()].origins.append(k)
                    parts[s.shard, default: ShardPart()].copies.append(s.isCopy)
                }
            }
        }
        if parts.isEmpty { return .unsharded }
        if !home.isEmpty {
            // Unsharded tables too: the home group takes part in the transaction as a shard does.
            parts[ShardView.homePart] = ShardPart(statements: home.map { statements[$0] }, origins: home, copies: home.map { _ in false })
        }
        return .parts(parts, reindexed: reindexed)
    }

    /// For `DROP INDEX [IF EXISTS] name` naming an index of a sharded or reference table: that table
    /// (the statement itself does not name it).
    func droppedIndexTable(_ sql: String, db: String, _ view: ShardView) -> String? {
        guard Self.dropsIndex(sql), let tokens = try? SQLLexer.tokens(sql), tokens.count >= 3 else { return nil }
        var i = 2
        if tokens.count >= 5 && tokens[2].isWord("IF") && tokens[3].isWord("EXISTS") { i = 4 }
        // `schema.name`: only the main schema holds tables.
        if i + 2 < tokens.count && tokens[i + 1].isSymbol(".") { i += 2 }
        guard i < tokens.count, let name = tokens[i].name else { return nil }
        return schemaCopies.table(ofIndex: name, database: db, tables: view.tables)
    }

    /// Whether `sql` is a DROP INDEX statement.
    static func dropsIndex(_ sql: String) -> Bool {
        // Asked of every statement of every write: a byte scan first, not Foundation's case-insensitive
        // search (which showed in the leader's profile), and the lexer only for text naming an index.
        guard mentionsIndex(sql), let tokens = try? SQLLexer.tokens(sql) else { return false }
        return tokens.count >= 3 && tokens[0].isWord("DROP") && tokens[1].isWord("INDEX")
    }

    /// Whether `sql` holds "index" in any case.
    static func mentionsIndex(_ sql: String) -> Bool {
        let word: [UInt8] = Array("index".utf8)
        var matched = 0
        for b in sql.utf8 {
            let lower = (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b
            if lower == word[matched] {
                matched += 1
                if matched == word.count { return true }
            } else {
                matched = lower == word[0] ? 1 : 0
            }
        }
        return false
    }

    /// After indexes changed on every shard: the catalog's copy of each table's schema, as shard 0
    /// holds it (CREATE TABLE first, then its indexes), so planning and any shard made later see them.
    private func recordSchema(of tables: Set<String>, db: String, view: ShardView) async throws {
        var changes: [SQLStatement] = []
        var expected: [String: String] = [:]
        for name in tables.sorted() {
            guard var entry = view.tables[name] else { continue }
            // Once shard 0 has finished the transaction (its finish is sent after the client's answer
            // is decided): read before it, the schema would still be the old one.
            let r = try await readWaitingOutTransactions(view.groups[0], SQLStatement("""
                SELECT sql FROM sqlite_schema WHERE tbl_name = ?1 COLLATE NOCASE AND sql IS NOT NULL AND substr(name, 1, 6) <> '_cairn'
                ORDER BY type = 'index', name
                """, [.text(entry.name)]), consistency: .linearizable).result
            let statements = r.rows.compactMap { row -> String? in if case .text(let t)? = row.first { t } else { nil } }
            guard r.error == nil, !statements.isEmpty else { continue }
            let sql = statements.joined(separator: ";\n")
            guard sql != entry.createSQL else { continue }
            entry.createSQL = sql
            changes += Catalog.updateShardedTable(entry, in: db)
            expected[name] = sql
        }
        guard !changes.isEmpty else { return }
        try await cluster.changeCatalog(changes)
        try await awaitCatalog { c in expected.allSatisfy { c.shardedTables[db]?[$0.key]?.createSQL == $0.value } }
    }

    /// A write to a shard or a database's home group that, refused while a transaction across shards
    /// held the group (its writes then fail alike on every replica, having changed nothing), waits in
    /// line at the group's leader and is proposed once the group is free (`executeInTurn`).
    /// `began`: when the request began (its age places it in the line).
    func executeWaitingOutLocks(_ command: SQLCommand, group: GroupID, began: ContinuousClock.Instant = .now) async throws -> Routed {
        let deadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
        var c = command
        var routed = try await groupRouter.execute(c, group: group)
        while routed.results.contains(where: { $0.error == TransactionStep.lockedMessage }) {
            let leftMillis = GroupRouter.millis(deadline - ContinuousClock.now)
            guard leftMillis > 0 else {
                throw HTTPFailure.unavailable("a transaction across shards held the data for the whole request; nothing was written; retry")
            }
            c.timestampMillis = Int64(Date().timeIntervalSince1970 * 1000)
            routed = try await groupRouter.executeInTurn(c, group: group, began: began, waitMillis: leftMillis)
        }
        return routed
    }

    /// Waits until `group` looks free of prepared transactions, judged by a replica's applied state
    /// (this node's, when it holds one: no Raft round, no log entry), or until `deadline`. A hint:
    /// the write sent after it may still find the group held, and then waits again. Polling the group
    /// with writes instead would put an entry in its log per try, in front of the entry that frees it.
    /// (Used after a refusal on the fast path; waiting in line, `executeInTurn`, needs no polling.)
    func waitUntilFree(_ group: GroupID, until deadline: ContinuousClock.Instant) async {
        // After a refusal, at least a moment: the replica asked may not have applied the prepare the
        // leader refused with.
        try? await Task.sleep(for: .microseconds(Int64.random(in: 500...1_500)))
        var pause = 1
        while ContinuousClock.now < deadline, await isHeld(group) {
            try? await Task.sleep(for: .milliseconds(Int64.random(in: 1...Int64(pause))))
            pause = min(pause * 2, 8)
        }
    }

    /// Whether a replica of `group` (this node's, when it holds one) has a transaction prepared.
    func isHeld(_ group: GroupID) async -> Bool {
        guard let r = try? await groupRouter.query([Self.shardStateQuery], group: group, consistency: .local).results.first else { return false }
        return Self.shardState(r).prepared > 0
    }

    /// CREATE TABLE ... SHARD BY HASH, SHARD BY RANGE or REFERENCE: the database's shard groups (made
    /// with its first sharded table), the table on every shard (with its guard, unless a reference
    /// table), then the catalog
    /// entry that makes routers send its rows there. The entry is the commit point: a create that stops
    /// half-way leaves only empty tables no router uses, which the next attempt replaces.
    private func createShardedTable(_ clause: ShardingClause, db: String) async throws -> [StatementResult] {
        let keys: [String]
        var declaredPoints: [SQLValue]?
        switch clause.method {
        case .hash(let columns): keys = columns
        case .reference: keys = []
        case .range(let column, let points):
            keys = [column]
            declaredPoints = points
        }
        var catalog = try await committedCatalog()
        guard catalog.databases[db] != nil else { throw HTTPFailure.notFound("no database named \"\(db)\"") }
        let done = [StatementResult()]
        if catalog.shardedTables[db]?[clause.table.lowercased()] != nil {
            if clause.ifNotExists { return done }
            throw HTTPFailure.badRequest("table \(clause.table) already exists")
        }
        let keyColumns: [String]
        var splits: RangeSplits?
        do {
            let copy = try ScratchDatabase()
            try copy.exec(clause.createSQL)
            let described = keys.isEmpty ? nil : try ShardingClause.validate(table: clause.table, keyColumns: keys, in: copy)
            keyColumns = described?.keyColumns ?? []
            if let declaredPoints, let described {
                splits = try ShardingClause.splits(declaredPoints, of: described, in: copy)
            }
        } catch let e as SQLSyntaxError {
            throw HTTPFailure.badRequest(e.message)
        } catch {
            throw HTTPFailure.badRequest("\(error)")
        }
        guard let home = catalog.databases[db]?.group else { throw HTTPFailure.notFound("no database named \"\(db)\"") }
        let existing = try await groupRouter.query([SQLStatement("SELECT 1 FROM sqlite_master WHERE name = ?1 COLLATE NOCASE", [.text(clause.table)])],
                                                   group: home).results
        if existing.first?.rows.isEmpty == false {
            throw HTTPFailure.badRequest("\(clause.table) already exists in the database as an unsharded table or view")
        }
        if catalog.shards(of: db).isEmpty {
            let founders = try await cluster.founders(groups: catalog.shardCount(of: db), in: catalog)
            guard founders.allSatisfy({ !$0.isEmpty }) else { throw HTTPFailure.unavailable("no live voting node can hold the shards yet") }
            do {
                try await cluster.changeCatalog(Catalog.createShards(of: db, founders: founders))
            } catch ClusterError.catalogWrite(let why) where why.hasPrefix("UNIQUE constraint failed") {
                // Another node made them at the same moment.
            }
            try await awaitCatalog { !$0.shards(of: db).isEmpty }
            catalog = cluster.catalog
            try? await cluster.openGroups(of: catalog)
        }
        let groups = catalog.shards(of: db).map(\.group)
        let map = catalog.shardMap(of: db)
        guard map.count == groups.count else { throw HTTPFailure.unavailable("the shard map of \"\(db)\" is changing; retry") }
        let quoted = SQLLexer.quote(clause.table)
        let rangeSplits = splits
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for (i, group) in groups.enumerated() {
                tasks.addTask {
                    var command = SQLCommand.now([SQLStatement("DROP TABLE IF EXISTS \(quoted)"), SQLStatement(clause.createSQL)], atomic: true)
                    // Planned with this map: a shard that split since refuses, and its new half would lack the table.
                    command.mapVersion = map.version
                    if let splits = rangeSplits {
                        // Ranges live on the shards the database was created with; a hash split's child
                        // holds none (until a range split gives one a range).
                        command.shardGuard = ShardGuard(table: clause.table, keyColumns: keyColumns,
                                                        owned: .ranges(splitPoints: splits.points, owned: splits.ranges(onShard: i, shardCount: map.rangeShardCount)))
                    } else if !keyColumns.isEmpty {
                        command.shardGuard = ShardGuard(table: clause.table, keyColumns: keyColumns, lo: map.arcs[i].lo, hi: map.arcs[i].hi)
                    }
                    let results = try await self.proposeRetrying(command, group: group)
                    if let failed = results.first(where: { $0.error != nil })?.error {
                        if failed.contains(ShardGuard.wrongShard) { throw HTTPFailure.unavailable("shard \(i) of \"\(db)\" split while the table was created; retry") }
                        throw HTTPFailure.badRequest("shard \(i): \(failed)")
                    }
                }
            }
            try await tasks.waitForAll()
        }
        let entry = CatalogShardedTable(name: clause.table, keyColumns: keyColumns, createSQL: clause.createSQL, splitPoints: splits?.points)
        do {
            try await cluster.changeCatalog(Catalog.addShardedTable(entry, in: db))
        } catch ClusterError.catalogWrite(let why) where why.hasPrefix("UNIQUE constraint failed") {
            if !clause.ifNotExists { throw HTTPFailure.badRequest("table \(clause.table) already exists") }
        }
        try await awaitCatalog { $0.shardedTables[db]?[clause.table.lowercased()] != nil }
        log("node \(cluster.nodeID): database \"\(db)\": table \(clause.table) "
            + (keyColumns.isEmpty ? "copied to each of \(groups.count) shards"
               : splits.map { "sharded by range of \(keyColumns[0]) in \($0.rangeCount) ranges over \(groups.count) shards" }
               ?? "sharded by hash of (\(keyColumns.joined(separator: ", "))) over \(groups.count) shards"))
        return done
    }

    /// DROP TABLE of a sharded or reference table: its catalog entry first (the commit point: from then
    /// on no router sends it anything, and its name is free), then the table, its indexes and its guard
    /// on every shard. A drop that stops half-way leaves tables no router uses; CREATE replaces them.
    private func dropShardedTable(_ table: String, db: String, view: ShardView) async throws -> [StatementResult] {
        guard let entry = view.tables[table] else { throw HTTPFailure.badRequest("no such table: \(table)") }
        try await cluster.changeCatalog(Catalog.removeShardedTable(entry.name, in: db))
        try await awaitCatalog { $0.shardedTables[db]?[table] == nil }
        let quoted = SQLLexer.quote(entry.name)
        // The shards as of the catalog change (a split recorded since the request was planned made one more).
        let current = cluster.catalog.shards(of: db).map(\.group)
        let groups = current.count >= view.groups.count ? current : view.groups
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for (i, group) in groups.enumerated() {
                tasks.addTask {
                    // Waits out a transaction across shards that holds the shard (one that began
                    // before the drop and writes the table).
                    let results = try await self.executeWaitingOutLocks(SQLCommand.now([SQLStatement("DROP TABLE IF EXISTS \(quoted)")], atomic: true),
                                                                        group: group).results
                    if let failed = results.first(where: { $0.error != nil })?.error {
                        throw HTTPFailure.unavailable("\(entry.name) is gone from the catalog, but dropping it on shard \(i) failed (\(failed)); "
                                                      + "creating it again replaces what is left")
                    }
                }
            }
            try await tasks.waitForAll()
        }
        log("node \(cluster.nodeID): database \"\(db)\": table \(entry.name) dropped from \(groups.count) shards")
        return [StatementResult()]
    }

    /// `propose`, tried again while the group is still being created on its nodes.
    private func proposeRetrying(_ command: SQLCommand, group: GroupID) async throws -> [StatementResult] {
        let deadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
        while true {
            do {
                return try await groupRouter.execute(command, group: group).results
            } catch let e as NotCommitted where ContinuousClock.now < deadline {
                _ = e
                try await Task.sleep(for: .milliseconds(100))
            } catch RuntimeError.unknownGroup where ContinuousClock.now < deadline {
                try? await cluster.openGroups(of: cluster.catalog)
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// The committed catalog, once it shows the split a shard refused a command for (`refusal`) has
    /// reached the map: a shard applies its split a moment before the catalog records it.
    func catalogAfterSplit(_ db: String, _ refusal: String) async throws -> Catalog {
        if let version = ShardSplit.version(inRefusal: refusal) {
            do {
                try await awaitCatalog { $0.shardMap(of: db).version >= version }
            } catch {
                throw HTTPFailure.unavailable("a shard of \"\(db)\" split and the cluster catalog has not recorded it yet; retry")
            }
        }
        return try await committedCatalog()
    }

    /// A shard split since the router's map was read (its version is `version`): plan again.
    struct StaleShardMap: Error {
        var refusal: String
    }

    // MARK: Pieces

    /// `cairn_shard_requests_total{database, shard, kind}`: the statements each shard was sent (a
    /// read across shards counts once on each).
    static func countShard(_ db: String, _ shard: Int, _ kind: String) {
        let key = ShardCounterKey(database: db, shard: shard, kind: kind)
        let counter = shardCounters.withLockedValue { counters in
            if let known = counters[key] { return known }
            // Made once per series: making one goes through the metrics registry's lock and checks its
            // labels (a tenth of a point read's routing work when done per request).
            if counters.count >= maxShardCounters { counters.removeAll() }
            let made = Counter(label: "cairn_shard_requests_total", dimensions: [("database", db), ("shard", String(shard)), ("kind", kind)])
            counters[key] = made
            return made
        }
        counter.increment()
    }

    struct ShardCounterKey: Hashable, Sendable {
        var database: String
        var shard: Int
        var kind: String
    }

    /// Counters kept, at most (series beyond are made again when next used).
    static let maxShardCounters = 65_536
    static let shardCounters = NIOLockedValueBox<[ShardCounterKey: Counter]>([:])

    /// The client's error for a statement that does not prepare against the sharded tables.
    private static func unanalysable(_ error: any Error, _ view: ShardView) -> HTTPFailure {
        .badRequest("\(error) (a statement on sharded tables may use only sharded tables: \(view.tables.values.map(\.name).sorted().joined(separator: ", ")))")
    }

    /// A planner's refusal is the client's error: 400 with the planner's reason.
    static func refusing<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let refusal as PlanRefusal {
            throw HTTPFailure.badRequest(refusal.message)
        } catch let syntax as SQLSyntaxError {
            throw HTTPFailure.badRequest(syntax.message)
        } catch let sqlite as SQLiteError {
            // SQLite could not prepare it against the sharded tables: the client's SQL is wrong.
            throw HTTPFailure.badRequest(sqlite.message)
        }
    }

    static func shardingClause(_ sql: String) throws -> ShardingClause? {
        do { return try ShardingClause.parse(sql) } catch { throw HTTPFailure.badRequest("\(error)") }
    }
}
