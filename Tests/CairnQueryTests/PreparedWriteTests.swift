@testable import CairnQuery
import CairnSQLite
import Testing

/// The router prepares a write's text once (`WritePlanner.prepare`) and plans every later request of
/// that text from it with the request's own values. Each row must still go to the shard its key
/// hashes to (a wrong one is refused by the shard's guard, and the client's write fails), and an
/// UPDATE or DELETE pinned by its key must reach the shard holding the row.
@Suite struct PreparedWriteTests {
    static func described(_ plan: WritePlan) -> String {
        switch plan {
        case .home: return "home"
        case .dropTable(let t): return "drop \(t)"
        case .shards(let list):
            return list.map { "\($0.shard) \($0.isCopy) \($0.statement.sql) \($0.statement.positional) \($0.statement.named.sorted { $0.key < $1.key })" }
                .joined(separator: "; ")
        }
    }

    /// The shard `ShardedDatabase.insert` puts a row with this key in: the key columns' affinity, then the table's placement.
    static func expectedShard(_ db: ShardedDatabase, _ key: [SQLValue]) -> Int {
        db.table.shard(of: zip(key, db.table.keyAffinities).map { $1.apply($0, renderReal: RealText.render) }, in: db.planner.map)
    }

    @Test("a one-row INSERT is placed, or refused for a NULL key, as the general placing of rows does, with named, numbered and repeated parameters")
    func oneRowShortcutAgrees() throws {
        var rng = SystemRandomNumberGenerator()
        let (one, pair, ranged) = try ShardedDatabase.keyShapes()
        func value() -> SQLValue {
            switch Int.random(in: 0..<5, using: &rng) {
            case 0: return .null
            case 1: return .text(String(Int.random(in: -50...2000, using: &rng)))
            case 2: return .real(Double(Int.random(in: -50...2000, using: &rng)))
            default: return .integer(Int64.random(in: -50...2000, using: &rng))
            }
        }
        let cases: [(ShardedDatabase, String, named: Bool, parameters: Int)] = [
            (one, "INSERT INTO t(k, v) VALUES (?, ?)", false, 2),
            (one, "INSERT INTO t(v, k) VALUES (?2, ?1)", false, 2),
            (one, "INSERT INTO t(k, v) VALUES (:k, :k)", true, 1),
            (one, "INSERT INTO t(k, v) VALUES (@k, 'x') ON CONFLICT(k) DO UPDATE SET v = excluded.v", true, 1),
            (one, "INSERT INTO t(k, v) VALUES (7, ?)", false, 1),
            (pair, "INSERT INTO t(a, b, v) VALUES (?, ?, 'v')", false, 2),
            (pair, "INSERT INTO t(b, a, v) VALUES ($k, ?, NULL)", true, 2),
            (ranged, "REPLACE INTO t(k, v) VALUES (?, 'p')", false, 1),
            (one, "INSERT INTO t(k, v) VALUES (:k, ?)", false, 2),
            (one, "INSERT INTO t(k, v) VALUES (?3, 'x')", false, 2),
        ]
        var placed = 0, refused = 0
        for (db, sql, named, count) in cases {
            let writer = WritePlanner(schema: db.planner.schema, map: db.planner.map)
            let prepared = try WritePlanner.prepare(sql, analysis: db.schema.analyze(sql), schema: db.planner.schema)
            guard case .insert(let insert) = prepared.outcome else { Issue.record("\(sql) is not prepared as an INSERT"); continue }
            for _ in 0..<100 {
                let values = (0..<count).map { _ in value() }
                let statement = named ? SQLStatement(sql, values, named: ["k": values[0]]) : SQLStatement(sql, values)
                let shortcut = Result { try writer.planOneRow(insert, statement: statement) }
                let general = Result { try writer.planRows(insert, statement: statement) }
                switch (shortcut, general) {
                case (.success(let a), .success(let b)):
                    #expect(Self.described(a) == Self.described(b), "\(sql) with \(values)")
                    placed += 1
                case (.failure(let a), .failure(let b)):
                    #expect("\(a)" == "\(b)", "\(sql) with \(values)")
                    refused += 1
                default:
                    Issue.record("\(sql) with \(values): \(shortcut) against \(general)")
                }
            }
        }
        #expect(placed > 300 && refused > 50)
        // A key neither a literal nor a parameter: the same refusal both ways, whatever the values.
        let sql = "INSERT INTO t(k, v) VALUES (1 + 1, ?)"
        let writer = WritePlanner(schema: one.planner.schema, map: one.planner.map)
        let prepared = try WritePlanner.prepare(sql, analysis: one.schema.analyze(sql), schema: one.planner.schema)
        guard case .insert(let insert) = prepared.outcome else { Issue.record("\(sql) is not prepared as an INSERT"); return }
        let statement = SQLStatement(sql, [.text("v")])
        let shortcut = Result { try writer.planOneRow(insert, statement: statement) }
        let general = Result { try writer.planRows(insert, statement: statement) }
        guard case .failure(let a) = shortcut, case .failure(let b) = general else { Issue.record("\(shortcut) against \(general)"); return }
        #expect("\(a)" == "\(b)" && "\(a)".contains("must be a literal or a parameter"))
    }

    @Test("an INSERT's text prepared once places 600 requests' rows on the shards their keys hash to, splitting rows of several shards, as planning each afresh does")
    func insertsPlacedByTheirValues() throws {
        var rng = SystemRandomNumberGenerator()
        let (one, pair, ranged) = try ShardedDatabase.keyShapes()
        func key() -> SQLValue {
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: return .text(String(Int.random(in: -50...2000, using: &rng)))
            case 1: return .real(Double(Int.random(in: -50...2000, using: &rng)))
            default: return .integer(Int64.random(in: -50...2000, using: &rng))
            }
        }
        // Each text's rows, each row's key as the values it is built from (parameter numbers, 1-based).
        let cases: [(ShardedDatabase, String, rows: [[Int]], parameters: Int)] = [
            (one, "INSERT INTO t(k, v) VALUES (?, ?)", [[1]], 2),
            (one, "INSERT OR REPLACE INTO t(v, k) VALUES ('a', ?), ('b', ?), ('c', ?)", [[1], [2], [3]], 3),
            (one, "INSERT INTO t VALUES (?1, 'x'), (?2, ?1) ON CONFLICT(k) DO UPDATE SET v = excluded.v", [[1], [2]], 2),
            (pair, "INSERT INTO t(a, b, v) VALUES (?, ?, 'v'), (?, ?, NULL)", [[1, 2], [3, 4]], 4),
            (ranged, "REPLACE INTO t(k, v) VALUES (?, 'p'), (?, 'q')", [[1], [2]], 2),
        ]
        for (db, sql, rows, count) in cases {
            let writer = WritePlanner(schema: db.planner.schema, map: db.planner.map)
            let prepared = try WritePlanner.prepare(sql, analysis: db.schema.analyze(sql), schema: db.planner.schema)
            for _ in 0..<600 / cases.count {
                let values = (0..<count).map { _ in key() }
                let statement = SQLStatement(sql, values)
                let reused = try writer.plan(statement, prepared: prepared)
                #expect(Self.described(reused) == Self.described(try writer.plan(statement, analysis: db.schema.analyze(sql))), "\(sql) with \(values)")
                let expected = rows.map { Self.expectedShard(db, $0.map { values[$0 - 1] }) }
                guard case .shards(let list) = reused else { Issue.record("\(sql): \(Self.described(reused))"); continue }
                #expect(list.map(\.shard) == Set(expected).sorted(), "\(sql) with \(values)")
                if list.count == 1 {
                    // One shard: the statement goes unchanged.
                    #expect(list[0].statement.sql == sql && list[0].statement.positional == values)
                    continue
                }
                // Split: each shard's INSERT carries exactly the rows placed there, each with its own values.
                for part in list {
                    let carried = Set(part.statement.named.keys.compactMap { Int($0.dropFirst(":_cairn_p".count)) })
                    let placed = Set(rows.indices.filter { expected[$0] == part.shard }.flatMap { rows[$0] })
                    #expect(placed.isSubset(of: carried), "\(sql) with \(values): shard \(part.shard) carries \(carried)")
                    for (name, value) in part.statement.named { #expect(value == values[Int(name.dropFirst(":_cairn_p".count))! - 1]) }
                }
            }
        }
    }

    @Test("a prepared UPDATE or DELETE goes to the shards its key values pin, to every shard without a pin, and a NULL key is refused per request")
    func changesPinnedByTheirValues() throws {
        let db = try ShardedDatabase(shardCount: 16, createSQL: "CREATE TABLE t(k INTEGER NOT NULL PRIMARY KEY, v TEXT)", table: "t", key: ["k"])
        let writer = WritePlanner(schema: db.planner.schema, map: db.planner.map)
        func prepared(_ sql: String) throws -> PreparedWrite { try WritePlanner.prepare(sql, analysis: db.schema.analyze(sql), schema: db.planner.schema) }
        let update = try prepared("UPDATE t SET v = ? WHERE k = ?")
        let delete = try prepared("DELETE FROM t AS x WHERE x.k IN (?, ?)")
        let unpinned = try prepared("DELETE FROM t WHERE v = ?")
        for k in Int64(0)..<200 {
            let one = try writer.plan(SQLStatement("UPDATE t SET v = ? WHERE k = ?", [.text("a"), .integer(k)]), prepared: update)
            #expect(Self.described(one).hasPrefix("\(Self.expectedShard(db, [.integer(k)])) "))
            let two = try writer.plan(SQLStatement("DELETE FROM t AS x WHERE x.k IN (?, ?)", [.integer(k), .text("\(k + 7)")]), prepared: delete)
            guard case .shards(let list) = two else { Issue.record("\(two)"); continue }
            #expect(list.map(\.shard) == Set([Self.expectedShard(db, [.integer(k)]), Self.expectedShard(db, [.integer(k + 7)])]).sorted())
        }
        guard case .shards(let all) = try writer.plan(SQLStatement("DELETE FROM t WHERE v = ?", [.text("a")]), prepared: unpinned) else {
            Issue.record("not planned on the shards"); return
        }
        #expect(all.map(\.shard) == Array(0..<16))
        let insert = try prepared("INSERT INTO t(k, v) VALUES (?, 'a')")
        #expect(throws: PlanRefusal("the shard key k of t may not be NULL")) {
            try writer.plan(SQLStatement("INSERT INTO t(k, v) VALUES (?, 'a')", [.null]), prepared: insert)
        }
        #expect(throws: Never.self) { try writer.plan(SQLStatement("INSERT INTO t(k, v) VALUES (?, 'a')", [.integer(3)]), prepared: insert) }
    }

    @Test("a row whose key is neither a literal nor a parameter is refused in row order, after a NULL key in a row before it, as planning afresh refuses it")
    func rowRefusalsInRowOrder() throws {
        let db = try ShardedDatabase(shardCount: 4, createSQL: "CREATE TABLE t(k INTEGER NOT NULL PRIMARY KEY, v TEXT)", table: "t", key: ["k"])
        let writer = WritePlanner(schema: db.planner.schema, map: db.planner.map)
        for (sql, values, why) in [
            ("INSERT INTO t(k, v) VALUES (?, 'a'), (1 + 1, 'b')", [SQLValue.null], "the shard key k of t may not be NULL"),
            ("INSERT INTO t(k, v) VALUES (?, 'a'), (1 + 1, 'b')", [.integer(1)], "the shard key k of each row inserted into t must be a literal or a parameter"),
            ("INSERT INTO t(k, v) VALUES (1 + 1, 'b'), (NULL, 'a')", [], "the shard key k of each row inserted into t must be a literal or a parameter"),
        ] {
            let prepared = try WritePlanner.prepare(sql, analysis: db.schema.analyze(sql), schema: db.planner.schema)
            #expect(throws: PlanRefusal(why), "\(sql) \(values)") { try writer.plan(SQLStatement(sql, values), prepared: prepared) }
            #expect(throws: PlanRefusal(why), "\(sql) \(values)") { try writer.plan(SQLStatement(sql, values), analysis: db.schema.analyze(sql)) }
        }
    }

    @Test("what a write's text cannot do is refused when the text is prepared, whatever its values")
    func refusalsAtPreparation() throws {
        let db = try ShardedDatabase(shardCount: 4, createSQL: "CREATE TABLE t(k INTEGER NOT NULL PRIMARY KEY, v TEXT)", table: "t", key: ["k"])
        for (sql, why) in [
            ("INSERT INTO t(v) VALUES (?)", "an INSERT into sharded table t must give its shard key (k)"),
            ("UPDATE t SET k = ? WHERE k = ?", "the shard key k of t cannot be changed: delete the row and insert it again"),
        ] {
            #expect(throws: PlanRefusal(why), "\(sql)") { try WritePlanner.prepare(sql, analysis: db.schema.analyze(sql), schema: db.planner.schema) }
        }
    }
}
