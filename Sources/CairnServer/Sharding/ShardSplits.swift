import CairnCluster
import CairnJSON
import CairnNode
import CairnPlacement
import CairnQuery
import CairnRaft
import CairnSQLite
import Foundation
import Hummingbird
import Metrics

/// Splitting shards: `POST /v1/db/:db/shards/:shard/split` by hand, and by size on every shard this
/// node leads. A split has three steps, each safe to repeat, so whoever finds one half done (this node
/// after a crash, or another) finishes it:
///
/// 1. the catalog reserves the child: its group id and entry, on the parent's replicas, unrouted;
/// 2. the split entry in the parent's own log (`ShardSplit`): every replica makes the child from its
///    copy and keeps its own half; from then on both halves refuse commands planned with the old map;
/// 3. the catalog records the new map: routers refresh and send the upper half's keys to the child.
///
/// One split at a time per database: the map version (its shard count) then names each state once.
extension API {
    func addSplitRoutes(to router: RecordingRouter) {
        router.post("/v1/db/:db/shards/:shard/split") { request, context in
            let db = try context.parameters.require("db")
            let shardText = try context.parameters.require("shard")
            return await self.respond(request, .admin, database: db) { who in
                guard let shard = Int(shardText), shard >= 0 else { throw HTTPFailure.badRequest("the shard is a number from 0, not \"\(shardText)\"") }
                self.audit.record(who, action: "split shard \(shard) of \(db)", database: db)
                let done = try await self.splitShard(db, shard: shard)
                return Self.json(200, .object([("database", .string(db)), ("shard", .int(done.shard)), ("child", .int(done.child)),
                                               ("child_group", .int(done.childGroup)), ("split_slot", .int(done.mid)),
                                               ("shard_count", .int(done.shardCount)), ("split_index", .int(Int64(bitPattern: done.index)))]))
            }
        }
        router.post("/v1/db/:db/tables/:table/split") { request, context in
            let db = try context.parameters.require("db")
            let table = try context.parameters.require("table")
            return await self.respond(request, .admin, database: db) { who in
                let json = try self.parse(try await self.body(of: request))
                let catalog = try await self.committedCatalog()
                guard catalog.databases[db] != nil, !Catalog.isInternalName(db) else { throw HTTPFailure.notFound("no database named \"\(db)\"") }
                let value = try self.storedSplitValue(json["at"], table: table, db: db, catalog: catalog)
                self.audit.record(who, action: "split range of \(table) in \(db) at \(value.sqlLiteral ?? "?")", database: db)
                let done = try await self.splitRange(db, table: table, at: value)
                return Self.json(200, .object([("database", .string(db)), ("table", .string(table)), ("from", Statements.json(value)),
                                               ("shard", .int(done.shard)), ("child", .int(done.child)), ("child_group", .int(done.childGroup)),
                                               ("shard_count", .int(done.shardCount)), ("split_index", .int(Int64(bitPattern: done.index)))]))
            }
        }
    }

    /// A range split's JSON `at` as the table's key column stores it, checked as `SPLIT AT` checks its
    /// values (a literal every guard can hold).
    func storedSplitValue(_ json: JSON?, table name: String, db: String, catalog: Catalog) throws -> SQLValue {
        guard let json, json != .null else { throw HTTPFailure.badRequest("send {\"at\": the key value the new range starts at}") }
        let value = try Statements.value(json, statement: 0, parameter: "at")
        let tables = catalog.shardedTables[db] ?? [:]
        guard tables[name.lowercased()]?.splitPoints != nil,
              let described = try schemaCopies.schema(database: db, tables: tables).sharded[name.lowercased()] else {
            throw HTTPFailure.badRequest("\(name) is not a range-sharded table of \"\(db)\" (a hash table's shards split with POST /v1/db/\(db)/shards/{n}/split)")
        }
        do {
            return try ShardingClause.splits([value], of: described, in: try ScratchDatabase()).points[0]
        } catch let e as SQLSyntaxError {
            throw HTTPFailure.badRequest(e.message)
        }
    }

    struct SplitDone: Sendable {
        var shard: Int
        var child: Int
        var childGroup: GroupID
        var mid: Int
        var shardCount: Int
        var index: LogIndex
    }

    /// Splits shard `shard` of `db` at slot `at` (by default the middle of its arc), finishing first a
    /// split of the database that another attempt left half done.
    ///
    /// `plannedOn` is the map version a split pass chose this split on, read from its own catalog copy,
    /// which may trail the committed one: if the map has changed since, the choice is void (nil) and
    /// the next pass chooses again. Without this, a pass that saw a half-done split that some request
    /// then finished would split the same shard a second time.
    func splitShard(_ db: String, shard: Int, at: Int? = nil, plannedOn: UInt32) async throws -> SplitDone? {
        let committed = try await committedCatalog()
        guard committed.shardMap(of: db).version == plannedOn else { return nil }
        return try await splitShard(db, .shard(shard), at: at, catalog: committed)
    }

    func splitShard(_ db: String, shard: Int, at: Int? = nil) async throws -> SplitDone {
        try await splitShard(db, .shard(shard), at: at, catalog: try await committedCatalog())
    }

    /// Gives the keys of range table `table` from `value` up to the next split point a shard (and Raft
    /// group) of their own: a split of the shard holding them that moves that range to the child
    /// (`ShardSplit.RangeMove`). `value` becomes a split point unless it is one.
    func splitRange(_ db: String, table: String, at value: SQLValue) async throws -> SplitDone {
        try await splitShard(db, .range(SplitOrigin.RangeStart(table: table, value: value)), at: nil, catalog: try await committedCatalog())
    }

    enum SplitTarget {
        case shard(Int)
        case range(SplitOrigin.RangeStart)
    }

    private func splitShard(_ db: String, _ target: SplitTarget, at: Int?, catalog committed: Catalog) async throws -> SplitDone {
        var catalog = committed
        guard catalog.databases[db] != nil, !Catalog.isInternalName(db) else { throw HTTPFailure.notFound("no database named \"\(db)\"") }
        if let pending = catalog.pendingSplit(in: db) {
            let shards = catalog.shards(of: db)
            guard let parentShard = shards.firstIndex(where: { $0.group == pending.origin.parent }) else {
                throw HTTPFailure.unavailable("a split of \"\(db)\" is reserved for a group that is no longer its shard; retry")
            }
            // It divides where its reservation says (`runSplit`), whatever this caller asked.
            let finished = try await runSplit(db, shard: parentShard, at: nil, range: nil, catalog: catalog)
            if case .shard(let shard) = target, parentShard == shard { return finished }
            if case .range(let start) = target, pending.origin.rangeFrom == start { return finished }
            catalog = try await committedCatalog()
        }
        switch target {
        case .shard(let shard):
            return try await runSplit(db, shard: shard, at: at, range: nil, catalog: catalog)
        case .range(let start):
            // The shard holding the range, by the map as it is now (a split just finished may have moved it).
            let moved = try Self.rangeMove(start, in: db, child: catalog.shardMap(of: db).count, catalog: catalog)
            return try await runSplit(db, shard: moved.from, at: nil, range: start, catalog: catalog)
        }
    }

    /// The layout of range table `start.table` once its range from `start.value` moves to shard
    /// `child`, and the table; a 400 if it cannot.
    static func rangeMove(_ start: SplitOrigin.RangeStart, in db: String, child: Int, catalog: Catalog)
        throws -> (table: CatalogShardedTable, splits: RangeSplits, from: Int) {
        guard let table = catalog.shardedTables[db]?[start.table.lowercased()], let points = table.splitPoints,
              let splits = RangeSplits(points: points, placement: table.rangePlacement) else {
            throw HTTPFailure.badRequest("\(start.table) is not a range-sharded table of \"\(db)\" (a hash table's shards split with POST /v1/db/\(db)/shards/{n}/split)")
        }
        let shardCount = catalog.shardMap(of: db).rangeShardCount
        guard let moved = splits.moving(rangeFrom: start.value, to: child, shardCount: shardCount) else {
            throw HTTPFailure.badRequest(splits.points.count >= RangeSplits.maxPoints
                ? "\(start.table) has \(RangeSplits.maxPoints) split points, the most a table may have"
                : "\(start.table)'s keys from \(start.value.sqlLiteral ?? "that value") cannot move to a shard of their own")
        }
        if moved.splits.points == splits.points, splits.ranges(onShard: moved.from, shardCount: shardCount) == [moved.range] {
            throw HTTPFailure.badRequest("\(start.table)'s keys from \(start.value.sqlLiteral ?? "that value") have shard \(moved.from) to themselves already")
        }
        return (table, moved.splits, moved.from)
    }

    private func runSplit(_ db: String, shard: Int, at: Int?, range: SplitOrigin.RangeStart?, catalog start: Catalog) async throws -> SplitDone {
        var catalog = start
        let shards = catalog.shards(of: db), map = catalog.shardMap(of: db)
        guard !shards.isEmpty, shards.count == map.count else {
            throw HTTPFailure.badRequest("\"\(db)\" has no shards (it gets them with its first sharded table)")
        }
        guard shard < shards.count else { throw HTTPFailure.notFound("\"\(db)\" has shards 0 to \(shards.count - 1), not \(shard)") }
        guard var (next, mid) = at.map({ map.splitting(shard, at: $0) }) ?? map.splitting(shard) else {
            if let at { throw HTTPFailure.badRequest("shard \(shard) of \"\(db)\" owns slots \(map.arcs[shard].lo)..<\(map.arcs[shard].hi): it cannot split at slot \(at)") }
            throw HTTPFailure.badRequest("shard \(shard) of \"\(db)\" cannot split: it owns a single slot, or the database has \(ShardMap.maxShards) shards")
        }
        let parent = shards[shard], childIndex = map.count, childName = Catalog.shardName(db, childIndex)
        if catalog.databases[childName] == nil {
            guard parent.moving.isEmpty else {
                throw HTTPFailure.unavailable("shard \(shard) of \"\(db)\" is being moved between nodes; split it once the move is done")
            }
            do {
                // The point is kept only when it is not the middle, the one every version assumes.
                try await cluster.changeCatalog(Catalog.reserveSplitChild(of: parent, in: db, child: childIndex,
                                                                          mid: mid == map.arcs[shard].middle ? nil : mid, rangeFrom: range))
            } catch ClusterError.catalogWrite(let why) where why.hasPrefix("UNIQUE constraint failed") {
                // Another node reserved it at the same moment: the same child, finished below at
                // the point that reservation chose.
            }
            try await awaitCatalog { $0.databases[childName] != nil }
            catalog = cluster.catalog
            crashIfAsked("split_after_reserve")
        }
        guard let child = catalog.databases[childName], catalog.splitOrigins[childName]?.parent == parent.group else {
            throw HTTPFailure.unavailable("the catalog entry \(childName) is not this split's; retry")
        }
        // The reservation's point, whoever chose it: every attempt at this split proposes the same
        // entry, so one applied already is recognised rather than refused as a different split.
        // (One reserved without a point, by an earlier version, divides at the middle.)
        let reserved = catalog.splitOrigins[childName]?.mid ?? map.arcs[shard].middle
        if reserved != mid {
            guard let planned = map.splitting(shard, at: reserved) else {
                throw HTTPFailure.unavailable("the split reserved as \(childName) divides at slot \(reserved), outside shard \(shard); retry")
            }
            (next, mid) = planned
        }
        let tables = (catalog.shardedTables[db] ?? [:]).values.filter { !$0.keyColumns.isEmpty && $0.splitPoints == nil }
            .sorted { $0.name < $1.name }.map { ShardSplit.Table(name: $0.name, keyColumns: $0.keyColumns) }
        // A range split moves the range its reservation names, whoever reserved it.
        var moving: (table: CatalogShardedTable, splits: RangeSplits)?
        var rangeMove: ShardSplit.RangeMove?
        if let start = catalog.splitOrigins[childName]?.rangeFrom {
            let moved: (table: CatalogShardedTable, splits: RangeSplits, from: Int)
            do {
                moved = try Self.rangeMove(start, in: db, child: childIndex, catalog: catalog)
                guard moved.from == shard else { throw HTTPFailure.badRequest("the range now lives on shard \(moved.from)") }
            } catch {
                // Nothing proposed yet can have made a copy of the child: the reservation goes.
                try await cluster.changeCatalog(Catalog.dropDatabase(childName))
                throw HTTPFailure.unavailable("the range split reserved as \(childName) no longer fits \"\(db)\" (\(error)); retry")
            }
            moving = (moved.table, moved.splits)
            let shardCount = map.rangeShardCount
            rangeMove = ShardSplit.RangeMove(table: moved.table.name, keyColumn: moved.table.keyColumns[0], points: moved.splits.points,
                                             childRanges: moved.splits.ranges(onShard: childIndex, shardCount: shardCount),
                                             parentRanges: moved.splits.ranges(onShard: shard, shardCount: shardCount))
        }
        var command = SQLCommand(statements: [], timestampMillis: Int64(Date().timeIntervalSince1970 * 1000), randomSeed: 0)
        command.split = ShardSplit(child: child.group, lo: map.arcs[shard].lo, mid: mid, hi: map.arcs[shard].hi,
                                   mapVersion: next.version, tables: tables, range: rangeMove)
        let answer = try await groupRouter.execute(command, group: parent.group).results.first ?? StatementResult(error: "no answer")
        guard answer.error == nil, case .integer(let at)? = answer.rows.first?.first else {
            if let refusal = answer.error, ShardSplit.refusalLeavesNoChild(refusal) {
                // Refused alike by every replica: no copy of the child exists. The reservation goes, so
                // it does not hold up the database's other splits; the next attempt plans afresh.
                try await cluster.changeCatalog(Catalog.dropDatabase(childName))
                throw HTTPFailure.unavailable("shard \(shard) of \"\(db)\" did not split: \(refusal); retry")
            }
            throw HTTPFailure.unavailable("shard \(shard) of \"\(db)\" did not split: \(answer.error ?? "no index"); retry")
        }
        let index = LogIndex(bitPattern: at)
        crashIfAsked("split_after_entry")
        try await cluster.changeCatalog(Catalog.recordSplit(in: db, map: next, parent: parent.group, index: index,
                                                            range: moving.map { ($0.table.name, $0.splits) }))
        try await awaitCatalog { $0.shardMap(of: db).version >= next.version }
        log("node \(cluster.nodeID): database \"\(db)\": shard \(shard) (group \(parent.group)) split at slot \(mid) (entry \(index)); shard \(childIndex) (group \(child.group)) owns slots \(mid)..<\(map.arcs[shard].hi)")
        SplitMetrics.splits.increment()
        if let range, range != catalog.splitOrigins[childName]?.rangeFrom {
            // The child was another split's (reserved a moment before this one): that one is done now.
            throw HTTPFailure.unavailable("another split of \"\(db)\" took this turn and is finished now; retry")
        }
        return SplitDone(shard: shard, child: childIndex, childGroup: child.group, mid: mid, shardCount: next.count, index: index)
    }

    /// Runs forever: every shard this node leads whose database outgrew `shard_split_bytes` (the
    /// runtime setting; `--shard-split-bytes` until one is set) is split, and so is the next shard of a
    /// round of doubling (`min_replicas_per_node`), one split a database a pass; a split some node left
    /// half done on a shard led here is finished first.
    func splitLargeShards() async {
        // A shard whose split by size failed is left alone this long (one that cannot split, say a
        // single slot, would otherwise be tried, and logged, every pass).
        var backoff: [GroupID: ContinuousClock.Instant] = [:]
        var heat = LoadWatch()
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(Self.splitPassMillis))
            // A split left half done is finished whatever the size setting (its parent refuses
            // commands planned with the old map until the new one is recorded).
            let settings = cluster.settings
            let splitBytes = settings.shardSplitBytes
            let catalog = cluster.catalog
            var led = Set<GroupID>()
            for db in catalog.shardCounts.keys.sorted() {
                let shards = catalog.shards(of: db), map = catalog.shardMap(of: db)
                let pending = catalog.pendingSplit(in: db)?.origin.parent
                let doubling = pending == nil ? await doublingSplit(db, catalog: catalog) : nil
                var candidate: (shard: Int, at: Int?)?
                for (i, shard) in shards.enumerated() where runtime.hosts(shard.group) {
                    guard let status = try? await runtime.status(group: shard.group), status.role == .leader else { continue }
                    led.insert(shard.group)
                    // Every shard led here is watched each pass, so its heat is measured pass by pass.
                    let hotAt = heat.observe(shard.group, runtime.takeLoad(group: shard.group), settings: settings,
                                             arc: map.count == shards.count ? map.arcs[i] : nil)
                    guard candidate == nil, pending == nil || pending == shard.group else { continue }
                    if pending == shard.group { candidate = (i, nil); continue }
                    if let until = backoff[shard.group], until > .now { continue }
                    if i == doubling, await stillNextDoublingSplit(db, shard: i) {
                        candidate = (i, nil)
                    } else if splitBytes > 0, let used = await usedBytes(shard.group), used > splitBytes {
                        candidate = (i, nil)
                    } else if let hotAt {
                        log("node \(cluster.nodeID): database \"\(db)\": shard \(i) served over \(settings.shardSplitOpsPerSecond) operations a second for \(settings.shardSplitHotSeconds) s: splitting it by load at slot \(hotAt)")
                        candidate = (i, hotAt)
                    }
                }
                guard let candidate else { continue }
                await pauseIfAsked("split_pass_before_split")
                do {
                    // One split a database a pass; a failure leaves the other databases their turn.
                    guard try await splitShard(db, shard: candidate.shard, at: candidate.at, plannedOn: map.version) != nil else {
                        log("node \(cluster.nodeID): database \"\(db)\": its shard map changed since this pass chose to split shard \(candidate.shard); the next pass chooses again")
                        continue
                    }
                    if candidate.at != nil { SplitMetrics.loadSplits.increment() }
                    heat.forget(shards[candidate.shard].group)
                } catch {
                    backoff[shards[candidate.shard].group] = .now + .seconds(Self.splitBackoffSeconds)
                    log("node \(cluster.nodeID): database \"\(db)\": splitting shard \(candidate.shard) failed (tried again later): \(error)")
                }
            }
            heat.keep(only: led)
        }
    }

    /// The shard of `db` a round of doubling splits next (split by whichever node leads it), starting
    /// or ending the round in the catalog as needed: `ShardDoubling` decides, over the nodes that may
    /// hold replicas (voters neither dead nor draining). Only hash-sharded databases double; a range's
    /// shards are the ranges an operator declared.
    private func doublingSplit(_ db: String, catalog: Catalog) async -> Int? {
        let shards = catalog.shards(of: db), map = catalog.shardMap(of: db)
        guard !shards.isEmpty, shards.count == map.count else { return nil }
        let hashed = (catalog.shardedTables[db] ?? [:]).values.contains { !$0.keyColumns.isEmpty && $0.splitPoints == nil }
        let settings = cluster.settings
        if let target = catalog.doublingTargets[db] {
            guard map.count < target, settings.minReplicasPerNode > 0, hashed else {
                // Reached (or doubling turned off, or the hash tables dropped, meanwhile): the round
                // ends, by the node leading shard 0.
                if await leads(shards[0].group) { _ = try? await cluster.changeCatalog(Catalog.finishDoubling(db, target: target)) }
                return nil
            }
            return ShardDoubling.nextSplit(arcSlots: map.arcs.map(\.slots), target: target)
        }
        guard hashed else { return nil }
        let nodes = catalog.activeVoters.count { catalog.nodeStates[$0.id] == nil }
        guard let target = ShardDoubling.target(shards: map.count, replicationFactor: settings.replicationFactor, nodes: nodes,
                                                minReplicasPerNode: settings.minReplicasPerNode, maxShards: ShardMap.maxShards),
              await leads(shards[0].group) else { return nil }
        do {
            try await cluster.changeCatalog(Catalog.startDoubling(db, target: target))
            log("node \(cluster.nodeID): database \"\(db)\": \(map.count) shards × RF \(settings.replicationFactor) over \(nodes) nodes is under \(settings.minReplicasPerNode) replicas a node: doubling to \(target) shards")
        } catch {
            log("node \(cluster.nodeID): database \"\(db)\": cannot start doubling to \(target) shards (tried again later): \(error)")
        }
        return nil
    }

    /// Whether `shard` is still the round's next split by the committed catalog: this node's copy may
    /// trail a split another node just made (a shard split twice in one round would leave unequal
    /// shards). Asked only by the node about to split it.
    private func stillNextDoublingSplit(_ db: String, shard: Int) async -> Bool {
        guard let committed = try? await committedCatalog(), let target = committed.doublingTargets[db],
              committed.pendingSplit(in: db) == nil else { return false }
        return ShardDoubling.nextSplit(arcSlots: committed.shardMap(of: db).arcs.map(\.slots), target: target) == shard
    }

    private func leads(_ group: GroupID) async -> Bool {
        guard runtime.hosts(group), let status = try? await runtime.status(group: group) else { return false }
        return status.role == .leader
    }

    static let splitPassMillis = 2_000
    static let splitBackoffSeconds: Int64 = 30

    /// The bytes a shard's rows and indexes take in its database here (its pages in use: a split's
    /// deletes leave free pages, which the next rows reuse).
    private func usedBytes(_ group: GroupID) async -> Int? {
        let probe = SQLStatement("SELECT (p.page_count - f.freelist_count) * s.page_size FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s")
        guard let r = try? await runtime.query(group: group, [probe], consistency: .local).results.first, r.error == nil,
              case .integer(let bytes)? = r.rows.first?.first else { return nil }
        return Int(bytes)
    }
}

enum SplitMetrics {
    /// Splits this node finished (recorded the new map for).
    static let splits = Counter(label: "cairn_shard_splits_total")
    /// Of those, splits by load.
    static let loadSplits = Counter(label: "cairn_shard_load_splits_total")
}

/// The heat of the shards this node leads (`HotShard`), measured once a split pass: a shard no
/// longer led here is forgotten, and one led again starts cold.
struct LoadWatch {
    private var shards: [GroupID: (heat: HotShard, lastNanos: UInt64)] = [:]

    /// Records one pass of `group`'s load; the slot to split it at once it has run hot long enough.
    mutating func observe(_ group: GroupID, _ load: (ops: Int, slots: [Int])?, settings: ClusterSettings, arc: ShardMap.Arc?) -> Int? {
        let now = DispatchTime.now().uptimeNanoseconds
        guard let load, let arc else { return nil }
        guard var watched = shards[group] else {
            // The first look only starts the clock: what was counted before it spans an unknown time.
            shards[group] = (HotShard(seed: group), now)
            return nil
        }
        let seconds = Double(now &- watched.lastNanos) / 1e9
        watched.lastNanos = now
        let at = watched.heat.observe(ops: load.ops, seconds: seconds, slots: load.slots, nowNanos: now,
                                      opsPerSecond: settings.shardSplitOpsPerSecond,
                                      hotNanos: UInt64(settings.shardSplitHotSeconds) * 1_000_000_000, lo: arc.lo, hi: arc.hi)
        shards[group] = watched
        return at
    }

    mutating func forget(_ group: GroupID) { shards[group] = nil }

    mutating func keep(only led: Set<GroupID>) { shards = shards.filter { led.contains($0.key) } }
}
