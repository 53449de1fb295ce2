import CairnRaft
import Testing
@testable import CairnSQLite

@Suite struct RangeSplitsTests {
    /// Values of every storage class, with the cases SQLite's order turns on: integers against reals
    /// near and beyond 2^63, text and blobs that are prefixes of one another, empty ones.
    private func randomValue(_ rng: inout SplitMix64) -> SQLValue {
        switch rng.next() % 6 {
        case 0: return .integer(Int64(bitPattern: rng.next()) >> Int64(rng.next() % 64))
        case 1: return .integer(Int64(rng.next() % 20) - 10)
        case 2:
            let picks: [Double] = [-1.5, 0.5, 2.0, 9.5, 1e300, -1e300, 9_223_372_036_854_775_807.0, -9_223_372_036_854_775_808.0, 3.000000001]
            return .real(rng.next() % 2 == 0 ? picks[Int(rng.next() % UInt64(picks.count))] : Double(Int64(rng.next() % 2000) - 1000) / 8)
        case 3:
            let letters = ["", "a", "ab", "b", "B", "é", "a\u{1}", "zz"]
            return .text(letters[Int(rng.next() % UInt64(letters.count))] + (rng.next() % 2 == 0 ? "" : String(rng.next() % 100)))
        case 4: return .blob((0..<Int(rng.next() % 3)).map { _ in UInt8(truncatingIfNeeded: rng.next() % 3) })
        default: return .null
        }
    }

    @Test("SQLiteOrder sorts stored values exactly as SQLite's ORDER BY does (mixed types, integers against reals, prefixes)")
    func orderMatchesSQLite() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        defer { sm.close() }
        var rng = SplitMix64(seed: 42)
        _ = try sm.apply(index: 1, command: SQLCommand(statements: [SQLStatement("CREATE TABLE v (x)")], timestampMillis: 1, randomSeed: 1))
        let values = (0..<400).map { _ in randomValue(&rng) }
        // One entry (one fsync), not 400.
        _ = try sm.apply(index: 2, command: SQLCommand(statements: values.map { SQLStatement("INSERT INTO v VALUES (?)", [$0]) },
                                                       timestampMillis: 1, randomSeed: 1))
        let sqlite = sm.query(SQLStatement("SELECT x FROM v ORDER BY x")).rows.map { $0[0] }
        let ours = values.sorted { SQLiteOrder.compare($0, $1) < 0 }
        // Values SQLite holds equal (2 and 2.0) may come in either order: compare classes of equals.
        #expect(sqlite.count == ours.count)
        for (a, b) in zip(sqlite, ours) { #expect(SQLiteOrder.compare(a, b) == 0, "\(a) against \(b)") }
        // And each pair agrees with SQLite's own comparison operators.
        for _ in 0..<300 {
            let a = values[Int(rng.next() % 400)], b = values[Int(rng.next() % 400)]
            guard a != .null, b != .null else { continue }
            let r = sm.query(SQLStatement("SELECT ?1 < ?2, ?1 = ?2", [a, b])).rows[0]
            #expect(r == [.integer(SQLiteOrder.compare(a, b) < 0 ? 1 : 0), .integer(SQLiteOrder.compare(a, b) == 0 ? 1 : 0)], "\(a) against \(b)")
        }
    }

    @Test("a key's range is the count of split points at or below it; points must ascend, without NULL")
    func rangeLookup() {
        let splits = RangeSplits(points: [.integer(100), .real(200.5), .text("m"), .blob([1])])!
        #expect(splits.rangeCount == 5)
        #expect(splits.range(of: .integer(-5)) == 0)
        #expect(splits.range(of: .integer(100)) == 1)
        #expect(splits.range(of: .real(100.0)) == 1)
        #expect(splits.range(of: .integer(200)) == 1)
        #expect(splits.range(of: .integer(201)) == 2)
        #expect(splits.range(of: .text("a")) == 2)
        #expect(splits.range(of: .text("m")) == 3)
        #expect(splits.range(of: .blob([])) == 3)
        #expect(splits.range(of: .blob([1, 0])) == 4)
        #expect(splits.ranges(from: .integer(150), to: .text("z")) == 1...3)
        #expect(splits.ranges(from: .text("z"), to: .integer(0)) == nil)
        #expect(RangeSplits(points: [.integer(2), .integer(1)]) == nil)
        #expect(RangeSplits(points: [.integer(2), .real(2.0)]) == nil)
        #expect(RangeSplits(points: [.null]) == nil)
        #expect(RangeSplits(points: []) != nil)
    }

    @Test("split points as SQL literals read back as the same values and types")
    func literalsRoundTrip() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        defer { sm.close() }
        let values: [SQLValue] = [.integer(.min), .integer(.max), .integer(0), .real(0.1), .real(2.0), .real(-1e-300), .real(123456789.125),
                                  .real(1e22), .text("it's"), .text(""), .text("é"), .blob([]), .blob([0, 255, 16])]
        for v in values {
            let r = sm.query(SQLStatement("SELECT \(v.sqlLiteral!)")).rows
            #expect(r == [[v]], "\(v.sqlLiteral!)")
        }
        #expect(SQLValue.real(.infinity).sqlLiteral == nil)
        #expect(ValueListCoding.decode(ValueListCoding.encode(values)) == values)
        #expect(ValueListCoding.decode(Array(ValueListCoding.encode(values).dropLast())) == nil)
    }

    @Test("moving a range to a shard of its own: a new split point opens it (the range it cut keeps its shard), an existing one moves whole; the placement lists every range's shard; nothing moves onto the shard that has it")
    func movingARange() throws {
        let splits = try #require(RangeSplits(points: [.integer(100), .integer(200)]))
        // Ranges (-∞,100) [100,200) [200,+∞) on 2 shards: 0, 1, 0.
        #expect(splits.ranges(onShard: 0, shardCount: 2) == [0, 2])
        let opened = try #require(splits.moving(rangeFrom: .integer(300), to: 5, shardCount: 2))
        #expect(opened.splits.points == [.integer(100), .integer(200), .integer(300)])
        #expect(opened.splits.placement == [0, 1, 0, 5] && opened.from == 0 && opened.range == 3)
        #expect(opened.splits.shard(ofRange: opened.splits.range(of: .integer(250)), shardCount: 2) == 0)
        #expect(opened.splits.shard(ofRange: opened.splits.range(of: .integer(300)), shardCount: 2) == 5)
        let whole = try #require(opened.splits.moving(rangeFrom: .integer(100), to: 6, shardCount: 2))
        #expect(whole.splits.points == opened.splits.points && whole.splits.placement == [0, 6, 0, 5] && whole.from == 1 && whole.range == 1)
        #expect(whole.splits.ranges(onShard: 1, shardCount: 2).isEmpty)
        #expect(opened.splits.moving(rangeFrom: .integer(300), to: 5, shardCount: 2) == nil)
        #expect(splits.moving(rangeFrom: .null, to: 5, shardCount: 2) == nil)
        #expect(RangeSplits(points: [.integer(1)], placement: [0]) == nil)
        let full = try #require(RangeSplits(points: (0..<RangeSplits.maxPoints).map { .integer(Int64($0)) }))
        #expect(full.moving(rangeFrom: .integer(1000), to: 3, shardCount: 2) == nil)
    }

    @Test("a range guard as an earlier version wrote it (range i on shard i modulo a count) still reads, as the ranges it owned: a log replayed by the new version keeps its tables")
    func legacyRangeGuardDecodes() throws {
        let plain = SQLCommand(statements: [SQLStatement("CREATE TABLE r (k INTEGER NOT NULL PRIMARY KEY)")], atomic: true, timestampMillis: 1, randomSeed: 1).encoded()
        #expect(plain[0] == 1, "an entry without optional parts has the first header")
        // Guard and range-guard flags (32, 128), then table, key, count 2, shard 1, points 100 and 200.
        var legacy: [UInt8] = [plain[0], plain[1] | 32 | 128]
        SQLCommand.append(string: "r", to: &legacy)
        ByteCoding.append(UInt32(1), to: &legacy)
        SQLCommand.append(string: "k", to: &legacy)
        for v: UInt32 in [2, 1, 2] { ByteCoding.append(v, to: &legacy) }
        for p in [SQLValue.integer(100), .integer(200)] { SQLCommand.append(value: p, to: &legacy) }
        legacy += plain.dropFirst(2)
        let decoded = try #require(SQLCommand(decoding: legacy))
        #expect(decoded.shardGuard == ShardGuard(table: "r", keyColumns: ["k"], owned: .ranges(splitPoints: [.integer(100), .integer(200)], owned: [1])))
        #expect(decoded.statements.count == 1)
        // Written again, it takes the new form, which reads back the same.
        #expect(SQLCommand(decoding: decoded.encoded())?.shardGuard == decoded.shardGuard)
    }

    @Test("a guard holds as many split points as a table may have (each an argument of cairn_range)")
    func mostSplitPoints() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        defer { sm.close() }
        let points = (0..<RangeSplits.maxPoints).map { SQLValue.text("p\(1000 + $0)") }
        #expect(RangeSplits(points: points) != nil && RangeSplits(points: points + [.text("z")]) == nil)
        var create = SQLCommand(statements: [SQLStatement("CREATE TABLE r (k TEXT NOT NULL PRIMARY KEY)")], atomic: true, timestampMillis: 1, randomSeed: 1)
        create.shardGuard = ShardGuard(table: "r", keyColumns: ["k"], owned: .ranges(splitPoints: points, owned: RangeSplits(points: points)!.ranges(onShard: 1, shardCount: 4)))
        #expect(try sm.apply(index: 1, command: create)[0].error == nil)
        let insert = { (i: LogIndex, key: String) in
            try sm.apply(index: i, command: SQLCommand(statements: [SQLStatement("INSERT INTO r VALUES (?)", [.text(key)])], timestampMillis: 1, randomSeed: 1))[0].error
        }
        // "p1000" opens range 1 (shard 1); "p1001" range 2 (shard 2).
        #expect(try insert(2, "p1000x") == nil)
        #expect(try insert(3, "p1001")?.contains(ShardGuard.wrongShard) == true)
    }

    @Test("a range shard refuses rows of ranges that live on other shards, on insert and on a key change; the guard crosses the wire")
    func rangeGuard() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        defer { sm.close() }
        // Ranges (-∞,100) [100,200) [200,+∞) on 2 shards: this is shard 0, holding ranges 0 and 2.
        let spec = ShardGuard(table: "students", keyColumns: ["id"],
                              owned: .ranges(splitPoints: [.integer(100), .integer(200)], owned: [0, 2]))
        var create = SQLCommand(statements: [SQLStatement("CREATE TABLE students (id INTEGER NOT NULL PRIMARY KEY, name TEXT)")],
                                atomic: true, timestampMillis: 1, randomSeed: 1)
        create.shardGuard = spec
        let decoded = SQLCommand(decoding: create.encoded())
        #expect(decoded?.shardGuard == spec)
        #expect(try sm.apply(index: 1, command: decoded!)[0].error == nil)
        func insert(_ index: LogIndex, _ sql: String) throws -> String? {
            try sm.apply(index: index, command: SQLCommand(statements: [SQLStatement(sql)], timestampMillis: 1, randomSeed: 1))[0].error
        }
        #expect(try insert(2, "INSERT INTO students VALUES (5, 'a')") == nil)
        #expect(try insert(3, "INSERT INTO students VALUES ('250', 'b')") == nil)
        #expect(try insert(4, "INSERT INTO students VALUES (100, 'c')")?.contains(ShardGuard.wrongShard) == true)
        #expect(try insert(5, "INSERT INTO students VALUES (199.0, 'c')")?.contains(ShardGuard.wrongShard) == true)
        #expect(try insert(6, "UPDATE students SET id = 150 WHERE id = 5")?.contains(ShardGuard.wrongShard) == true)
        #expect(try insert(7, "UPDATE students SET id = 99 WHERE id = 5") == nil)
        #expect(sm.query(SQLStatement("SELECT id FROM students ORDER BY id")).rows == [[.integer(99)], [.integer(250)]])
        // Dropping the table drops its guard with it (a client still cannot drop the guard alone).
        #expect(try insert(8, "DROP TRIGGER _cairn_guard_insert_students")?.contains("reserved") == true)
        #expect(try insert(9, "DROP TABLE students") == nil)
        #expect(sm.query(SQLStatement("SELECT count(*) FROM sqlite_schema")).rows == [[.integer(0)]])
        // A guard with flags a follower does not know, or a shard past its count, is no entry.
        var bad = create.encoded()
        bad[1] = bad[1] & ~32
        #expect(SQLCommand(decoding: bad) == nil)
    }
}
