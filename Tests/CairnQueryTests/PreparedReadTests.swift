@testable import CairnQuery
import CairnSQLite
import Testing

/// The router prepares a SELECT's text once (`ReadPlanner.prepare`) and plans every later request of
/// that text from it with the request's own values: each such plan must be the one planning the
/// request from scratch makes, or a point read goes to a shard that does not hold its row.
@Suite struct PreparedReadTests {
    /// A plan as text, its statements' named values in order (a dictionary's own order varies).
    static func described(_ plan: ReadPlan) -> String {
        func statement(_ s: SQLStatement) -> String {
            "\(s.sql) \(s.positional) \(s.named.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })"
        }
        switch plan {
        case .home: return "home"
        case .single(let shard): return "single \(shard)"
        case .scatter(let s):
            let combine: String
            switch s.combine {
            case .partial(let c): combine = "partial " + statement(c)
            case .rows(let tables, let c): combine = "rows \(tables.map(\.name)) " + statement(c)
            }
            return "scatter \(s.shards) \(statement(s.worker)) \(s.referenceWorker.map(statement) ?? "-") \(combine) \(s.columns) \(s.types)"
        }
    }

    /// A key value as clients send them: NULL, numbers and strings in and out of an INTEGER key's
    /// range, halves, words, blobs.
    static func randomValue() -> SQLValue {
        switch Int.random(in: 0..<7) {
        case 0: return .null
        case 1: return .text(String(Int.random(in: -50...2000)))
        case 2: return .real(Double(Int.random(in: -50...2000)) + (Bool.random() ? 0.5 : 0))
        case 3: return .text("x\(Int.random(in: 0...9))")
        case 4: return .blob([UInt8.random(in: 0...255)])
        default: return .integer(Int64.random(in: -50...2000))
        }
    }

    @Test("a text prepared once plans 400 requests with other values exactly as planning each afresh: point reads, IN lists, two-column keys, named and numbered parameters, NULLs, strings in an INTEGER key")
    func preparedOnceAgreesWithFreshPlanning() throws {
        let (one, pair, ranged) = try ShardedDatabase.keyShapes()
        let value = Self.randomValue
        let cases: [(ShardedDatabase, String, Int)] = [
            (one, "SELECT v FROM t WHERE k = ?", 1),
            (one, "SELECT v FROM t WHERE ? = k", 1),
            (one, "SELECT * FROM t WHERE k IN (?, ?, ?) ORDER BY k", 3),
            (one, "SELECT v FROM t WHERE k = ?2 AND v <> ?1", 2),
            (one, "SELECT v FROM t x WHERE x.k = :key", 1),
            (one, "SELECT v FROM t WHERE k = @key AND v IS NOT NULL", 1),
            (one, "SELECT v FROM t WHERE k = $key", 1),
            (one, "SELECT v FROM t WHERE k = ?1 OR k = ?1", 1),
            (one, "SELECT count(*) FROM t WHERE k = ? OR k = ?", 2),
            (one, "SELECT v FROM t WHERE (k = ?) AND k = 7", 1),
            (pair, "SELECT v FROM t WHERE a = ? AND b = ?", 2),
            (pair, "SELECT v FROM t WHERE b IN (?, 'q') AND a IN (?, ?)", 3),
            (ranged, "SELECT v FROM t WHERE k = ?", 1),
            (ranged, "SELECT v FROM t WHERE k BETWEEN ? AND ? ORDER BY k", 2),
            (ranged, "SELECT v FROM t WHERE k >= ? AND k < ?", 2),
        ]
        var shortcuts = 0
        for (db, sql, count) in cases {
            let prepared = try ReadPlanner.prepare(sql, analysis: db.schema.analyze(sql), schema: db.planner.schema)
            for _ in 0..<400 / cases.count * 3 {
                let values = (0..<count).map { _ in value() }
                let statement = sql.contains("key") ? SQLStatement(sql, named: ["key": values[0]]) : SQLStatement(sql, values)
                let fresh = try db.plan(statement)
                let reused = try db.planner.plan(statement, prepared: prepared)
                #expect(Self.described(reused) == Self.described(fresh), "\(sql) with \(values)")
                // Both went the point read's shortcut where it applies: it must pin as the planning
                // it skips does.
                if case .query(let text) = prepared.outcome {
                    let general = try db.planner.plan(statement, text)
                    if let shard = db.planner.pointShard(statement, text) {
                        #expect(Self.described(general) == "single \(shard)", "\(sql) with \(values)")
                        shortcuts += 1
                    }
                }
            }
        }
        #expect(shortcuts > 150)
    }

    @Test("a point read's shortcut pins as the general planning does: parameters bound by name, by position or not at all, numbering gaps, literals, NULL, range split points")
    func pointShortcutAgreesWithGeneralPlanning() throws {
        let (one, pair, ranged) = try ShardedDatabase.keyShapes()
        let value = Self.randomValue
        let withReference = try one.adding(reference: "r", createSQL: "CREATE TABLE r(id INTEGER PRIMARY KEY, name TEXT)")
        enum Binding { case positional, named, sigil, both }
        let cases: [(ShardedDatabase, String, Int, Binding)] = [
            (one, "SELECT v FROM t WHERE k = :key", 1, .positional),
            (one, "SELECT v FROM t WHERE k = :key", 1, .sigil),
            (one, "SELECT v FROM t WHERE k = :key AND v <> ?", 2, .both),
            (one, "SELECT v FROM t WHERE k = ?2", 1, .positional),
            (one, "SELECT v FROM t WHERE k = ?3 AND v <> ?", 4, .positional),
            (one, "SELECT v FROM t WHERE v <> ?5 AND k = ?", 6, .positional),
            (one, "SELECT v FROM t WHERE v <> ? AND k = :_cairn_p1", 2, .both),
            (withReference, "SELECT t.v, r.name FROM t JOIN r ON r.id = t.k WHERE t.k = ?", 1, .positional),
            (one, "SELECT v FROM t WHERE k = 7", 0, .positional),
            (one, "SELECT v FROM t WHERE k = -5", 0, .positional),
            (one, "SELECT v FROM t WHERE k = '12'", 0, .positional),
            (one, "SELECT v FROM t WHERE k = NULL", 0, .positional),
            (one, "SELECT v FROM t WHERE k IN (?)", 1, .positional),
            (pair, "SELECT v FROM t WHERE b = :key AND a = ?2", 2, .both),
            (ranged, "SELECT v FROM t WHERE k = 100", 0, .positional),
            (ranged, "SELECT v FROM t WHERE k = '1000'", 0, .positional),
            (ranged, "SELECT v FROM t WHERE k = 99.5", 0, .positional),
            (ranged, "SELECT v FROM t WHERE k = ?", 1, .positional),
        ]
        var shortcuts = 0
        for (db, sql, count, binding) in cases {
            let prepared = try ReadPlanner.prepare(sql, analysis: db.schema.analyze(sql), schema: db.planner.schema)
            guard case .query(let text) = prepared.outcome else { Issue.record("\(sql) is not planned as a query over the sharded table"); continue }
            for _ in 0..<60 {
                let values = (0..<count).map { _ in value() }
                let statement: SQLStatement
                switch binding {
                case .positional: statement = SQLStatement(sql, values)
                case .named: statement = SQLStatement(sql, named: ["key": values[0]])
                case .sigil: statement = SQLStatement(sql, named: [":key": values[0]])
                case .both: statement = SQLStatement(sql, values, named: ["key": values[0], "_cairn_p1": values[count - 1]])
                }
                let general = try db.planner.plan(statement, text)
                guard let shard = db.planner.pointShard(statement, text) else { Issue.record("\(sql) did not take the shortcut"); continue }
                #expect(Self.described(general) == "single \(shard)", "\(sql) with \(values)")
                shortcuts += 1
            }
        }
        #expect(shortcuts == cases.count * 60)
    }

    @Test("what cannot be planned is refused when the text is prepared, with planning's own reason")
    func refusalsAtPreparation() throws {
        let db = try ShardedDatabase(shardCount: 4, createSQL: "CREATE TABLE t(k INTEGER NOT NULL PRIMARY KEY, v TEXT)", table: "t", key: ["k"])
        let sql = "INSERT INTO t(k, v) VALUES (1, 'a')"
        #expect(throws: PlanRefusal("this statement writes; only reads are planned here")) {
            try ReadPlanner.prepare(sql, analysis: db.schema.analyze(sql), schema: db.planner.schema)
        }
    }
}
