import CairnQuery
import CairnRaft
import CairnSQLite
import Foundation
import Testing

/// Random queries over random rows: a sharded table (by hash on 1, 3 and 16 shards; by range on 3 and
/// 16), alone or joined with a table placed alike and a reference table, must answer exactly as one
/// SQLite holding every row. `CAIRN_DIFFERENTIAL_QUERIES` sets how many (10,000 by default);
/// `CAIRN_DIFFERENTIAL_SEED` replays one run.
@Suite struct DifferentialTests {
    static let create = "CREATE TABLE t (k INTEGER NOT NULL PRIMARY KEY, g TEXT, n INTEGER, r REAL, v)"
    static let createU = "CREATE TABLE u (uk INTEGER NOT NULL, j INTEGER NOT NULL, w, PRIMARY KEY (uk, j))"
    static let createC = "CREATE TABLE c (code TEXT PRIMARY KEY, label TEXT, rank INTEGER)"

    @Test func shardedAnswersEqualOneSQLite() throws {
        let total = Int(ProcessInfo.processInfo.environment["CAIRN_DIFFERENTIAL_QUERIES"] ?? "") ?? 10_000
        let seed = UInt64(ProcessInfo.processInfo.environment["CAIRN_DIFFERENTIAL_SEED"] ?? "") ?? 20261202
        var rng = QueryRNG(seed: seed)
        var differences: [String] = []
        var paths: [String: Int] = [:]
        var ran = 0
        while ran < total && differences.count < 5 {
            // A new table every 250 queries: sometimes empty, sometimes a handful of rows (empty shards).
            let rows = Generator.rows(&rng)
            let single = try ScratchDatabase()
            try single.exec(Self.create)
            try single.insert(into: "t", columns: ["k", "g", "n", "r", "v"], rows: rows)
            // Joined with t: u, sharded alike by its key uk, and c, a reference table.
            let uRows = Generator.joinedRows(&rng, keys: rows.map { $0[0] })
            let cRows = Generator.referenceRows(&rng)
            try single.exec(Self.createU)
            try single.insert(into: "u", columns: ["uk", "j", "w"], rows: uRows)
            try single.exec(Self.createC)
            try single.insert(into: "c", columns: ["code", "label", "rank"], rows: cRows)
            func layout(_ shards: Int, _ splitPoints: [SQLValue]? = nil) throws -> ShardedDatabase {
                try ShardedDatabase(shardCount: shards, createSQL: Self.create, table: "t", key: ["k"], references: [("c", Self.createC)],
                                    splitPoints: splitPoints, others: [("u", ["uk"], Self.createU)])
            }
            var sharded = try [1, 3, 16].map { try layout($0) }
            // By range: split where rows are (keys run from -100 to 299), several ranges to a shard.
            sharded.append(try layout(3, [.integer(0), .integer(100), .integer(200)]))
            sharded.append(try layout(16, stride(from: -90, to: 300, by: 15).map { .integer(Int64($0)) }))
            for s in sharded {
                try s.insert(rows)
                try s.insert(uRows, into: "u")
                try s.insert(reference: "c", cRows)
            }
            for _ in 0..<min(250, total - ran) {
                let q = Generator.query(&rng)
                ran += 1
                let expected = single.query(q.statement)
                for s in sharded {
                    let got = s.query(q.statement)
                    if let plan = try? s.plan(q.statement) { paths[plan.summary.replacingOccurrences(of: "\\d+ shard\\(s\\)", with: "N", options: .regularExpression), default: 0] += 1 }
                    if let why = Compare.difference(expected, got, orderKeys: q.orderKeys, limited: q.limited) {
                        differences.append("\(s.shards.count) shards\(s.table.rangeSplits == nil ? "" : " by range"), rows \(rows.count): \(q.statement.sql) \(q.statement.named)\n  \(why)\n  expected \(expected)\n  got      \(got)")
                    }
                }
            }
        }
        #expect(differences.isEmpty, "seed \(seed):\n\(differences.joined(separator: "\n"))")
        print("differential: \(ran) queries x 5 sharded layouts, \(differences.count) differences; plans: \(paths)")
    }
}

/// A generated query and what its ordering guarantees.
struct GeneratedQuery {
    var statement: SQLStatement
    /// The output columns that ORDER BY sorts on (nil: no order to check).
    var orderKeys: [Int]?
    /// LIMIT or OFFSET cut the answer: rows tied on the order keys at the edges may differ.
    var limited: Bool
}

enum Generator {
    static func rows(_ rng: inout QueryRNG) -> [[SQLValue]] {
        let count = [0, 1, 2, 5, 20, 60, 150][rng.below(7)]
        var keys = Set<Int64>()
        while keys.count < count { keys.insert(Int64(rng.below(400)) - 100) }
        return keys.sorted().map { k in
            [.integer(k), rng.pick([.text("a"), .text("b"), .text("c"), .text("B"), .null]),
             rng.chance(0.15) ? .null : .integer(Int64(rng.below(20)) - 5),
             rng.chance(0.15) ? .null : .real(Double(rng.below(80)) * 0.25 - 4),
             mixed(&rng)]
        }
    }

    static func mixed(_ rng: inout QueryRNG) -> SQLValue {
        switch rng.below(6) {
        case 0: return .null
        case 1: return .integer(Int64(rng.below(10)))
        // Never integral: a group or MIN/MAX holding both 2 and 2.0 shows whichever row came first, which
        // neither SQL nor SQLite defines, so its typeof() could differ without either answer being wrong.
        case 2: return .real(Double(rng.below(10)) + 0.5)
        case 3: return .text(rng.pick(["x", "y", "10", "2", ""]))
        case 4: return .blob([UInt8(rng.below(3))])
        default: return .integer(Int64(rng.below(3)) * 1000)
        }
    }

    static let predicates = [
        "n > 3", "n <= 0", "g = 'a'", "g IS NULL", "g IS NOT NULL", "r BETWEEN -1 AND 5.5", "v IS NOT NULL", "typeof(v) = 'text'",
        "k = 7", "k = '12'", "k = 12.0", "k IN (1, 2, 3, 50, 99)", "k IN ()", "k = NULL", "n > :low", "k = :key", "k > 10 AND n < 8",
        "g = 'b' OR n = 2", "k % 3 = 0", "r * 2 > n", "v > 'x'", "v < 5", "(k = 3)", "k IN (SELECT k FROM t WHERE n > 5)",
        "n > (SELECT avg(n) FROM t)",
        // Bounds on the key: range-sharded tables read only the ranges they reach.
        "k < 100", "k >= 0 AND k < 200", "k BETWEEN -50 AND 25", "150 <= k", "k > '50'", "k < 100.0 AND n > 0", "k > :key",
    ]

    static func query(_ rng: inout QueryRNG) -> GeneratedQuery {
        var sql: String
        var orderKeys: [Int]?
        var limited = false
        if rng.chance(0.2) { return joinQuery(&rng) }
        let whereClause = rng.chance(0.6) ? " WHERE " + rng.pick(predicates) + (rng.chance(0.2) ? " AND " + rng.pick(predicates) : "") : ""
        switch rng.below(5) {
        case 0, 1:
            // Projections.
            let columns = [["k"], ["g", "n"], ["*"], ["v", "typeof(v)"], ["n + r AS s", "g"], ["g"], ["r", "k"], ["upper(g)", "n * 2"], ["k", "(SELECT count(*) FROM t) AS total"]][rng.below(9)]
            let distinct = rng.chance(0.25) && !columns.contains("*") && !columns.contains("k")
            sql = "SELECT \(distinct ? "DISTINCT " : "")\(columns.joined(separator: ", ")) FROM t" + whereClause
            let width = columns == ["*"] ? 5 : columns.count
            if rng.chance(0.7) {
                var terms: [String] = []
                var keys: [Int] = []
                for _ in 0..<(1 + rng.below(2)) {
                    let c = rng.below(width)
                    guard !keys.contains(c) else { continue }
                    keys.append(c)
                    terms.append("\(c + 1)" + rng.pick(["", " DESC", " ASC", " NULLS LAST", " DESC NULLS FIRST"]))
                }
                sql += " ORDER BY " + terms.joined(separator: ", ")
                orderKeys = keys
                if rng.chance(0.6) {
                    sql += " LIMIT \(rng.pick(["0", "1", "3", "10", "-1", ":lim"]))"
                    if rng.chance(0.4) { sql += " OFFSET \(rng.pick(["0", "2", "5", ":off"]))" }
                    limited = true
                }
            }
        case 2:
            // Aggregates over everything.
            let count = 1 + rng.below(3)
            let aggregates = (0..<count).map { _ in rng.pick(aggregatePool) }
            sql = "SELECT \(aggregates.joined(separator: ", ")) FROM t" + whereClause
            if rng.chance(0.15) { sql += " HAVING count(*) > \(rng.below(10))" }
        default:
            // Grouped aggregates.
            let group = rng.pick(["g", "n", "v", "n % 3", "typeof(v)", "g, n"])
            let width = group.split(separator: ",").count
            let aggregates = (0..<(1 + rng.below(2))).map { _ in rng.pick(aggregatePool) }
            sql = "SELECT \(group), \(aggregates.joined(separator: ", ")) FROM t" + whereClause + " GROUP BY \(group)"
            if rng.chance(0.3) { sql += " HAVING " + rng.pick(["count(*) > 1", "sum(n) > 2", "max(r) IS NOT NULL", "avg(n) < 3", "min(k) % 2 = 0"]) }
            if rng.chance(0.6) {
                let c = rng.below(width + aggregates.count)
                sql += " ORDER BY \(c + 1)" + rng.pick(["", " DESC"])
                orderKeys = [c]
                if rng.chance(0.5) { sql += " LIMIT \(rng.pick(["1", "2", "4"]))"; limited = true }
            }
        }
        var named: [String: SQLValue] = [:]
        if sql.contains(":low") { named[":low"] = .integer(Int64(rng.below(6))) }
        if sql.contains(":key") { named[":key"] = rng.pick([.integer(7), .text("7"), .real(7.0), .integer(-50)]) }
        if sql.contains(":lim") { named[":lim"] = .integer(Int64(rng.below(5))) }
        if sql.contains(":off") { named[":off"] = .integer(Int64(rng.below(3))) }
        return GeneratedQuery(statement: SQLStatement(sql, named: named), orderKeys: orderKeys, limited: limited)
    }

    /// Rows of u: none to three for some of t's keys, and a few for keys t does not hold.
    static func joinedRows(_ rng: inout QueryRNG, keys: [SQLValue]) -> [[SQLValue]] {
        var out: [[SQLValue]] = []
        let extra = (0..<rng.below(4)).map { _ in SQLValue.integer(Int64(rng.below(400)) - 100) }
        for key in Set(keys.filter { _ in rng.chance(0.6) } + extra) {
            for j in 0..<rng.below(4) { out.append([key, .integer(Int64(j)), rng.chance(0.5) ? .integer(Int64(rng.below(9))) : mixed(&rng)]) }
        }
        return out
    }

    /// Rows of c, keyed by the values t.g takes (and one it never takes).
    static func referenceRows(_ rng: inout QueryRNG) -> [[SQLValue]] {
        let all: [[SQLValue]] = [[.text("a"), .text("Alpha"), .integer(1)], [.text("b"), .text("Beta"), .integer(2)], [.text("B"), .text("Beta"), .integer(2)],
                                 [.text("c"), .null, .null], [.text("z"), .text("Zed"), .integer(3)]]
        return all.filter { _ in rng.chance(0.8) }
    }

    /// Joins of t with u (placed alike) and c (a reference table): split per shard where each row of
    /// the answer is made on one shard, gathered otherwise.
    static func joinQuery(_ rng: inout QueryRNG) -> GeneratedQuery {
        let tu = ["t.n > 2", "u.w IS NOT NULL", "t.g = 'a'", "u.j = 1", "t.k % 2 = 0", "t.k IN (1, 2, 3, 50)", "u.uk < 100", "typeof(u.w) = 'integer'"]
        let tc = ["t.n > 2", "c.rank > 1", "c.label IS NULL", "t.k < 100", "t.g = 'B'", "t.k = 7"]
        func filter(_ pool: [String]) -> String { rng.chance(0.5) ? " WHERE " + rng.pick(pool) : "" }
        var orderKeys: [Int]?
        var limited = false
        var sql: String
        switch rng.below(9) {
        case 0:
            sql = "SELECT t.k, u.j, u.w FROM t JOIN u ON u.uk = t.k" + filter(tu) + " ORDER BY 1, 2"
            orderKeys = [0, 1]
            if rng.chance(0.5) { sql += " LIMIT \(rng.pick(["1", "3", "10"]))"; limited = true }
        case 1:
            sql = "SELECT t.g, count(*), sum(u.j), max(u.w), avg(t.n) FROM t JOIN u ON u.uk = t.k" + filter(tu) + " GROUP BY t.g"
        case 2:
            sql = "SELECT t.k, u.j, typeof(u.w) FROM t LEFT JOIN u ON u.uk = t.k" + filter(tu)
        case 3:
            sql = "SELECT c.label, count(*), total(t.r) FROM t JOIN c ON c.code = t.g" + filter(tc) + " GROUP BY c.label"
        case 4:
            sql = "SELECT t.k, c.label FROM t LEFT JOIN c ON c.code = t.g" + filter(tc) + " ORDER BY 1 DESC LIMIT 5"
            orderKeys = [0]
            limited = true
        case 5:
            sql = "SELECT c.code, t.k FROM c LEFT JOIN t ON t.g = c.code" + filter(tc)
        case 6:
            sql = "SELECT count(*), count(DISTINCT u.uk), count(t.k) FROM u LEFT JOIN t ON t.k = u.uk" + filter(["t.n > 2", "u.j = 0", "t.k IS NULL"])
        case 7:
            sql = "SELECT t.k, u.j, c.label FROM t JOIN u ON u.uk = t.k LEFT JOIN c ON c.code = t.g" + filter(tu) + " ORDER BY 1, 2 LIMIT 3 OFFSET 1"
            orderKeys = [0, 1]
            limited = true
        default:
            sql = "SELECT t.k, t.g FROM t WHERE t.g IN (SELECT code FROM c WHERE rank > 1)" + (rng.chance(0.5) ? " AND t.n > 0" : "")
        }
        return GeneratedQuery(statement: SQLStatement(sql), orderKeys: orderKeys, limited: limited)
    }

    static let aggregatePool = [
        "count(*)", "count(n)", "sum(n)", "total(r)", "min(v)", "max(v)", "avg(n)", "avg(r)", "count(DISTINCT g)", "sum(DISTINCT n)",
        "typeof(sum(n))", "typeof(max(v))", "min(g)", "max(r) - min(r)", "sum(n) * 2 + count(*)", "coalesce(max(n), -1)",
        "count(*) AS c", "sum(r) AS total_r", "max(n, 3)", "abs(min(n))", "count(k)", "avg(k)",
    ]
}

enum Compare {
    /// Why `got` is not an answer one SQLite could have given, or nil if it is.
    static func difference(_ expected: StatementResult, _ got: StatementResult, orderKeys: [Int]?, limited: Bool) -> String? {
        if (expected.error == nil) != (got.error == nil) { return "error differs" }
        if expected.error != nil { return nil }
        if expected.columns != got.columns { return "columns differ" }
        if expected.rows.count != got.rows.count { return "row counts differ" }
        guard let keys = orderKeys else { return sameMultiset(expected.rows, got.rows) ? nil : "rows differ" }
        let e = groups(expected.rows, keys), g = groups(got.rows, keys)
        if e.map(\.key) != g.map(\.key) { return "order differs" }
        for (i, (a, b)) in zip(e, g).enumerated() {
            // At the edges of a LIMIT/OFFSET, rows tied on the keys may be any of the tied rows.
            let edge = limited && (i == 0 || i == e.count - 1)
            if a.rows.count != b.rows.count || !edge && !sameMultiset(a.rows, b.rows) { return "rows within an order group differ" }
        }
        return nil
    }

    private static func groups(_ rows: [[SQLValue]], _ keys: [Int]) -> [(key: [SQLValue], rows: [[SQLValue]])] {
        var out: [(key: [SQLValue], rows: [[SQLValue]])] = []
        for row in rows {
            let key = keys.map { canonical(row[$0]) }
            if out.last?.key == key { out[out.count - 1].rows.append(row) } else { out.append((key, [row])) }
        }
        return out
    }

    private static func sameMultiset(_ a: [[SQLValue]], _ b: [[SQLValue]]) -> Bool {
        var counts: [[SQLValue]: Int] = [:]
        for r in a { counts[r.map(canonical), default: 0] += 1 }
        for r in b { counts[r.map(canonical), default: 0] -= 1 }
        return counts.values.allSatisfy { $0 == 0 }
    }

    /// SQLite holds 2 = 2.0: a group of such values shows whichever its first row held, and which row
    /// comes first is not defined (by SQL or by SQLite). Compared as SQLite compares them.
    static func canonical(_ v: SQLValue) -> SQLValue {
        if case .real(let d) = v, d.rounded(.towardZero) == d, abs(d) < 9e15 { return .integer(Int64(d)) }
        return v
    }
}

/// The seeded generator the test draws from (the simulator's SplitMix64).
struct QueryRNG {
    var gen: SplitMix64
    init(seed: UInt64) { gen = SplitMix64(seed: seed) }
    mutating func next() -> UInt64 { gen.next() }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func chance(_ p: Double) -> Bool { Double(next() % 1_000_000) / 1_000_000 < p }
    mutating func pick<T>(_ xs: [T]) -> T { xs[below(xs.count)] }
}
