import CairnRaft
import Foundation
import Testing
@testable import CairnSQLite

@Suite struct ShardSplitTests {
    private func entry(_ sql: [String], guard spec: ShardGuard? = nil, mapVersion: UInt32? = nil) -> SQLCommand {
        var c = SQLCommand(statements: sql.map { SQLStatement($0) }, atomic: spec != nil, timestampMillis: 1_790_000_000_000, randomSeed: 1)
        c.shardGuard = spec
        c.mapVersion = mapVersion
        return c
    }

    /// The membership the proposing leader stamps on a split (`ShardSplit.conf`).
    static let voters = ConfState(voters: [1, 2, 3])

    private func splitEntry(_ split: ShardSplit) -> SQLCommand {
        var c = SQLCommand(statements: [], timestampMillis: 1_790_000_000_000, randomSeed: 1)
        var stamped = split
        if stamped.conf == nil { stamped.conf = Self.voters }
        c.split = stamped
        // Through the wire format, as a follower gets it.
        return SQLCommand(decoding: c.encoded())!
    }

    /// A shard owning the whole ring with 200 rows of a hash table, a range table and a reference table.
    private func populated(_ path: String) throws -> SQLStateMachine {
        let sm = try SQLStateMachine(path: path)
        let spec = ShardGuard(table: "Orders", keyColumns: ["customer"], lo: 0, hi: SlotHash.slotCount)
        #expect(try sm.apply(index: 1, command: entry(["CREATE TABLE Orders (customer INTEGER NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (customer, id))"], guard: spec))[0].error == nil)
        let ranged = ShardGuard(table: "ranged", keyColumns: ["k"], owned: .ranges(splitPoints: [], owned: [0]))
        #expect(try sm.apply(index: 2, command: entry(["CREATE TABLE ranged (k INTEGER PRIMARY KEY)"], guard: ranged))[0].error == nil)
        _ = try sm.apply(index: 3, command: entry(["CREATE TABLE ref (x)", "INSERT INTO ref VALUES (1), (2)", "INSERT INTO ranged VALUES (1), (2), (3)"]))
        let values = (0..<200).map { "(\($0), \($0 * 10))" }.joined(separator: ", ")
        #expect(try sm.apply(index: 4, command: entry(["INSERT INTO Orders VALUES \(values)"]))[0].error == nil)
        return sm
    }

    private func customers(_ sm: SQLStateMachine) -> [Int64] {
        sm.query(SQLStatement("SELECT customer FROM Orders ORDER BY customer")).rows.compactMap { if case .integer(let c) = $0[0] { c } else { nil } }
    }

    @Test("a split entry leaves the shard the lower half of its arc and hands the child, as a snapshot made before the shard commits, the upper half: every row on exactly one side, each side's guard refusing the other's keys")
    func splitsIntoTwoHalves() throws {
        let tmp = TempDB()
        let sm = try populated(tmp.path())
        var handed: [(ShardSplit, String)] = []
        sm.splitHandler = { split, file in
            // Durable before the shard's half commits: the shard has not moved on yet.
            #expect(sm.appliedIndex == 4)
            let kept = tmp.path() + ".child"
            try FileManager.default.moveItem(atPath: file, toPath: kept)
            handed.append((split, kept))
        }
        let mid = SlotHash.slotCount / 2
        let split = ShardSplit(child: 7, lo: 0, mid: mid, hi: SlotHash.slotCount, mapVersion: 2,
                               tables: [.init(name: "orders", keyColumns: ["customer"])])
        let r = try sm.apply(index: 5, command: splitEntry(split))
        #expect(r[0].error == nil && r[0].rows == [[.integer(5)]])
        #expect(handed.count == 1 && handed[0].0.child == 7 && handed[0].0.mid == mid)
        let lower = customers(sm)
        #expect(lower.allSatisfy { SlotHash.slot(of: [.integer($0)]) < mid })

        // The child installs its file as its first state (index 1, the parent's membership).
        let childPath = tmp.path() + ".group"
        let child = try SQLStateMachine(path: childPath)
        try child.install(snapshotFile: handed[0].1)
        #expect(child.appliedIndex == ShardSplit.childSnapshotIndex)
        #expect(child.confState == Self.voters)
        let upper = customers(child)
        #expect(upper.allSatisfy { SlotHash.slot(of: [.integer($0)]) >= mid })
        #expect(Set(lower + upper) == Set(0..<200) && lower.count + upper.count == 200)
        #expect(!lower.isEmpty && !upper.isEmpty)
        // Reference rows are on both; range rows stay with the shard their ranges live on.
        #expect(child.query(SQLStatement("SELECT count(*) FROM ref")).rows == [[.integer(2)]])
        #expect(child.query(SQLStatement("SELECT count(*) FROM ranged")).rows == [[.integer(0)]])
        #expect(sm.query(SQLStatement("SELECT count(*) FROM ranged")).rows == [[.integer(3)]])
        // Each guard refuses the other half's keys.
        let upperKey = upper[0], lowerKey = lower[0]
        #expect(try sm.apply(index: 6, command: entry(["INSERT INTO Orders VALUES (\(upperKey), 1)"]))[0].error?.contains(ShardGuard.wrongShard) == true)
        #expect(try child.apply(index: 2, command: entry(["INSERT INTO Orders VALUES (\(lowerKey), 1)"]))[0].error?.contains(ShardGuard.wrongShard) == true)
        #expect(try child.apply(index: 3, command: entry(["INSERT INTO Orders VALUES (\(upperKey), 1)"], mapVersion: 2))[0].error == nil)
        // Both halves read their version at a read point.
        #expect(SQLStateMachine.splitVersion(sm.query(SQLStateMachine.splitVersionQuery)) == 2)
        #expect(SQLStateMachine.splitVersion(child.query(SQLStateMachine.splitVersionQuery)) == 2)
    }

    @Test("a range split moves one range of a range table to the child (a new split point; its rows and guard go with it) and keeps the rest, hash rows halving as in any split; the move crosses the wire; a split naming a range table the shard lacks is refused alike everywhere")
    func rangeSplitMovesOneRange() throws {
        let tmp = TempDB()
        let sm = try populated(tmp.path())
        var file: String?
        sm.splitHandler = { _, f in
            file = tmp.path() + ".child"
            try FileManager.default.moveItem(atPath: f, toPath: file!)
        }
        #expect(try sm.apply(index: 5, command: entry(["INSERT INTO ranged VALUES (10), (11), (50)"]))[0].error == nil)
        // `ranged` had no split points (one range, here); from 10 up goes to the child, as range 1.
        let move = ShardSplit.RangeMove(table: "Ranged", keyColumn: "k", points: [.integer(10)], childRanges: [1], parentRanges: [0])
        var missing = move
        missing.table = "nosuch"
        let split = ShardSplit(child: 9, lo: 0, mid: SlotHash.slotCount / 2, hi: SlotHash.slotCount, mapVersion: 2,
                               tables: [.init(name: "orders", keyColumns: ["customer"])], range: move)
        var refused = split
        refused.range = missing
        #expect(try sm.apply(index: 6, command: splitEntry(refused))[0].error?.contains("holds no range-sharded table nosuch") == true)
        #expect(file == nil)
        let encoded = splitEntry(split)
        #expect(encoded.split?.range == move)
        #expect(try sm.apply(index: 7, command: encoded)[0].error == nil)
        let child = try SQLStateMachine(path: tmp.path() + ".group")
        try child.install(snapshotFile: try #require(file))
        let keys = { (m: SQLStateMachine) in m.query(SQLStatement("SELECT k FROM ranged ORDER BY k")).rows.map { $0[0] } }
        #expect(keys(sm) == [.integer(1), .integer(2), .integer(3)])
        #expect(keys(child) == [.integer(10), .integer(11), .integer(50)])
        #expect(!customers(sm).isEmpty && !customers(child).isEmpty && customers(sm).count + customers(child).count == 200)
        // Each side's guard refuses the other's range.
        #expect(try sm.apply(index: 8, command: entry(["INSERT INTO ranged VALUES (12)"]))[0].error?.contains(ShardGuard.wrongShard) == true)
        #expect(try sm.apply(index: 9, command: entry(["INSERT INTO ranged VALUES (9)"]))[0].error == nil)
        #expect(try child.apply(index: 2, command: entry(["INSERT INTO ranged VALUES (4)"]))[0].error?.contains(ShardGuard.wrongShard) == true)
        #expect(try child.apply(index: 3, command: entry(["INSERT INTO ranged VALUES (1000)"]))[0].error == nil)
        child.close()
        sm.close()
    }

    @Test("after a split, a command planned with the older map is refused whole, naming the shard's version, and changes nothing; one with the new map runs")
    func refusesCommandsPlannedWithAnOlderMap() throws {
        let tmp = TempDB()
        let sm = try populated(tmp.path())
        sm.splitHandler = { _, file in try FileManager.default.removeItem(atPath: file) }
        let before = customers(sm)
        #expect(try sm.apply(index: 5, command: entry(["DELETE FROM Orders WHERE customer = 0"], mapVersion: 1))[0].rowsAffected == 1)
        _ = try sm.apply(index: 6, command: splitEntry(ShardSplit(child: 7, lo: 0, mid: 100, hi: SlotHash.slotCount, mapVersion: 2,
                                                                    tables: [.init(name: "orders", keyColumns: ["customer"])])))
        let kept = customers(sm)
        #expect(kept.count < before.count - 1)
        let stale = try sm.apply(index: 7, command: entry(["DELETE FROM Orders", "DELETE FROM ref"], mapVersion: 1))
        #expect(stale.count == 2 && stale.allSatisfy { ShardSplit.version(inRefusal: $0.error ?? "") == 2 })
        #expect(customers(sm) == kept)
        #expect(try sm.apply(index: 8, command: entry(["DELETE FROM Orders"], mapVersion: 2))[0].rowsAffected == Int64(kept.count))
        // Commands without a version (a database's home group) are never refused.
        #expect(try sm.apply(index: 9, command: entry(["DELETE FROM ref"]))[0].error == nil)
    }

    @Test("a split is refused alike on every replica when the shard's tables or arc differ from the plan; proposed again after it ran, it answers with the entry that split")
    func refusesStalePlansAndIsIdempotent() throws {
        let tmp = TempDB()
        let sm = try populated(tmp.path())
        var calls = 0
        sm.splitHandler = { _, file in calls += 1; try FileManager.default.removeItem(atPath: file) }
        let noTables = try sm.apply(index: 5, command: splitEntry(ShardSplit(child: 7, lo: 0, mid: 10, hi: SlotHash.slotCount, mapVersion: 2, tables: [])))
        #expect(noTables[0].error?.contains("sharded tables changed") == true)
        let wrongArc = ShardSplit(child: 7, lo: 0, mid: 20, hi: 100, mapVersion: 2, tables: [.init(name: "orders", keyColumns: ["customer"])])
        let good = ShardSplit(child: 7, lo: 0, mid: 10, hi: SlotHash.slotCount, mapVersion: 2, tables: [.init(name: "orders", keyColumns: ["customer"])])
        #expect(try sm.apply(index: 6, command: splitEntry(good))[0].rows == [[.integer(6)]])
        #expect(try sm.apply(index: 7, command: splitEntry(good))[0].rows == [[.integer(6)]])
        #expect(calls == 1)
        var next = good
        next.mapVersion = 3
        let staleArc = try sm.apply(index: 8, command: splitEntry(next))[0].error ?? ""
        #expect(staleArc.contains("owns slots 0..<10") && ShardSplit.refusalLeavesNoChild(staleArc))
        // The shard split at this version already, elsewhere: that split's child exists, and its
        // reservation must not be dropped (the driver once dropped it for any refusal).
        let elsewhere = try sm.apply(index: 9, command: splitEntry(wrongArc))[0].error ?? ""
        #expect(elsewhere.contains("split differently") && !ShardSplit.refusalLeavesNoChild(elsewhere))
        #expect(sm.appliedIndex == 9)
        // Once a membership change is applied, a split proposed under another membership is refused.
        try sm.applyEmpty(index: 10, confState: ConfState(voters: [1, 2, 4]))
        var moved = next
        moved.mapVersion = 5
        moved.lo = 0
        moved.hi = 10
        moved.mid = 5
        #expect(try sm.apply(index: 11, command: splitEntry(moved))[0].error?.contains("membership changed") == true)
        moved.conf = ConfState(voters: [1, 2, 4])
        #expect(try sm.apply(index: 12, command: splitEntry(moved))[0].error == nil)
        #expect(calls == 2)
        // The applied index survives a restart, with the split in the file.
        sm.close()
        let reopened = try SQLStateMachine(path: tmp.path())
        #expect(reopened.appliedIndex == 12)
        #expect(SQLStateMachine.splitVersion(reopened.query(SQLStateMachine.splitVersionQuery)) == 5)
    }

    @Test func splitEntriesCrossTheWire() {
        var c = SQLCommand(statements: [SQLStatement("SELECT 1")], timestampMillis: 5, randomSeed: 6)
        #expect(c.encoded()[0] == 1)
        c.mapVersion = 9
        c.split = ShardSplit(child: 42, lo: 3, mid: 5, hi: 9, mapVersion: 10, tables: [.init(name: "t", keyColumns: ["a", "b"])])
        #expect(SQLCommand(decoding: c.encoded()) == c)
        c.split!.conf = ConfState(voters: [1, 2], learners: [3])
        let bytes = c.encoded()
        #expect(SQLCommand(decoding: bytes) == c)
        #expect(SQLCommand(decoding: Array(bytes.dropLast())) == nil)
        var bad = bytes
        bad[2] |= 0x80
        #expect(SQLCommand(decoding: bad) == nil)
        #expect(ShardSplit.version(inRefusal: ShardSplit.staleMapMessage + "12, the router's 3)") == 12)
    }
}

@Suite struct ShardMapSplitTests {
    @Test("a split halves one shard's arc and numbers the new shard next; lookups, the version and the catalog's text follow; a one-slot arc cannot split")
    func splitsArcs() throws {
        let start = ShardMap.uniform(count: 4)
        #expect(start.version == 4 && start.rangeShardCount == 4)
        let (one, mid) = try #require(start.splitting(1))
        #expect(mid == 16384 + 8192 && one.count == 5 && one.version == 5 && one.rangeShardCount == 4)
        #expect(one.arcs[1] == .init(lo: 16384, hi: mid) && one.arcs[4] == .init(lo: mid, hi: 32768))
        let (two, _) = try #require(one.splitting(4))
        for slot in stride(from: 0, to: SlotHash.slotCount, by: 61) {
            let shard = two.shard(ofSlot: slot)
            #expect(two.arcs[shard].contains(slot))
            // Keys outside the split arc keep their shard.
            if !start.arcs[1].contains(slot) { #expect(shard == start.shard(ofSlot: slot)) }
        }
        #expect(ShardMap(encoded: two.encoded) == two)
        #expect(two.arcVersions == [0, 5, 0, 0, 6, 6])
        #expect(ShardMap(encoded: "r4;0-10@0,10-65536@0") == nil)
        #expect(ShardMap(encoded: "r1;0-10@0,11-65536@0") == nil)
        #expect(ShardMap(encoded: "r1;0-10@0,10-65536@0")?.count == 2)
        #expect(ShardMap(encoded: "nonsense") == nil)
        var tiny = ShardMap(arcs: [.init(lo: 0, hi: 1), .init(lo: 1, hi: SlotHash.slotCount)])!
        #expect(tiny.splitting(0) == nil)
        tiny = tiny.splitting(1)!.map
        #expect(tiny.count == 3)
    }
}
