import CairnQuery
import CairnSQLite
import Testing

/// `ReadPlanner.keyRangeShards` and `WritePlanner.rowShard` place keys without planning text: they
/// must find exactly the shards planning finds, or a caller using them reads or writes the wrong ones.
@Suite struct KeyRangeShardsTests {
    static func plannedShards(_ db: ShardedDatabase, _ lower: SQLValue, _ upper: SQLValue) throws -> [Int] {
        switch try db.plan(SQLStatement("SELECT * FROM t WHERE k BETWEEN ? AND ? ORDER BY k", [lower, upper])) {
        case .single(let shard): return [shard]
        case .scatter(let s): return s.shards
        case let other: Issue.record("unexpected plan \(other)"); return []
        }
    }

    @Test("on a range-sharded table, the shards of a key range are those planning its BETWEEN finds, for 2,000 random ranges over three key types")
    func agreesWithPlanning() throws {
        var rng = SystemRandomNumberGenerator()
        let tables: [(String, String, [SQLValue])] = [
            ("INTEGER", "100, 2000, 4096, 8192, 12288", (0..<400).map { _ in .integer(Int64.random(in: -500...15000, using: &rng)) }),
            ("REAL", "1.5, 10, 99.25", (0..<400).map { _ in .real(Double.random(in: -5...120, using: &rng)) }),
            ("TEXT", "'c', 'k', 'kz', 'q'", (0..<400).map { _ in .text(String((0..<Int.random(in: 0...3, using: &rng)).map { _ in "abcjklmqrz".randomElement(using: &rng)! })) }),
        ]
        for (type, points, values) in tables {
            let split = try ScratchDatabase().query(SQLStatement("SELECT \(points)"), ownSQL: true).rows[0]
            let db = try ShardedDatabase(shardCount: 4, createSQL: "CREATE TABLE t(k \(type) NOT NULL PRIMARY KEY, v TEXT)", table: "t",
                                         key: ["k"], splitPoints: split)
            for _ in 0..<2_000 / tables.count {
                let a = values.randomElement(using: &rng)!, b = Bool.random(using: &rng) ? a : values.randomElement(using: &rng)!
                let placed = db.planner.keyRangeShards(db.table, from: a, to: b)
                let planned = try Self.plannedShards(db, a, b)
                #expect(placed == planned, "\(type) BETWEEN \(a) AND \(b): placed \(String(describing: placed)), planned \(planned)")
            }
            // A string bound on a numeric key, as a client may send it: the column's affinity applies.
            if type == "INTEGER" {
                #expect(db.planner.keyRangeShards(db.table, from: .text("4096"), to: .text("4096")) == (try Self.plannedShards(db, .text("4096"), .text("4096"))))
            }
        }
    }

    @Test("a hash-sharded table, a NULL bound, or a key of two columns: nil (every shard), never a guess")
    func refusesWhatItCannotPlace() throws {
        let hashed = try ShardedDatabase(shardCount: 4, createSQL: "CREATE TABLE t(k INTEGER NOT NULL PRIMARY KEY, v TEXT)", table: "t", key: ["k"])
        #expect(hashed.planner.keyRangeShards(hashed.table, from: .integer(5), to: .integer(5)) == nil)
        let ranged = try ShardedDatabase(shardCount: 4, createSQL: "CREATE TABLE t(k INTEGER NOT NULL PRIMARY KEY, v TEXT)", table: "t", key: ["k"],
                                         splitPoints: [.integer(10)])
        #expect(ranged.planner.keyRangeShards(ranged.table, from: .null, to: .integer(5)) == nil)
        let pair = try ShardedDatabase(shardCount: 4, createSQL: "CREATE TABLE t(a INTEGER NOT NULL, b INTEGER NOT NULL, v TEXT, PRIMARY KEY (a, b))",
                                       table: "t", key: ["a", "b"])
        #expect(pair.planner.keyRangeShards(pair.table, from: .integer(1), to: .integer(1)) == nil)
    }

    @Test("a row's shard (WritePlanner.rowShard) is the one planning its INSERT picks, on hash and range tables, for 2,000 random keys")
    func rowShardAgreesWithPlanning() throws {
        var rng = SystemRandomNumberGenerator()
        let create = "CREATE TABLE t(k INTEGER NOT NULL PRIMARY KEY, v TEXT)"
        for db in [try ShardedDatabase(shardCount: 16, createSQL: create, table: "t", key: ["k"]),
                   try ShardedDatabase(shardCount: 4, createSQL: create, table: "t", key: ["k"], splitPoints: [.integer(100), .integer(5000)])] {
            let planner = WritePlanner(schema: db.planner.schema, map: db.planner.map)
            for _ in 0..<1_000 {
                let n = Int64.random(in: -1000...20000, using: &rng)
                // As clients send keys: integers, their text, reals with integer values.
                let key: SQLValue = [.integer(n), .text(String(n)), .real(Double(n))].randomElement(using: &rng)!
                let statement = SQLStatement("INSERT INTO t(k, v) VALUES (?, 'x')", [key])
                guard case .shards(let parts) = try planner.plan(statement, analysis: db.schema.analyze(statement.sql)) else {
                    Issue.record("not planned to shards: \(key)")
                    continue
                }
                #expect(planner.rowShard(db.table, key: [key]) == parts.first?.shard && parts.count == 1, "key \(key)")
            }
            #expect(planner.rowShard(db.table, key: [.null]) == nil)
        }
    }
}
