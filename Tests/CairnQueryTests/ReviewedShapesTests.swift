import CairnQuery
import CairnSQLite
import Testing

/// Shapes a review found answered wrongly (or worse) before their fixes: each must now answer as one
/// SQLite holding every row does.
@Suite struct ReviewedShapesTests {
    static func compare(create: String, key: [String], rows: [[SQLValue]], columns: [String], queries: [String]) throws {
        let single = try ScratchDatabase()
        try single.exec(create)
        try single.insert(into: "t", columns: columns, rows: rows)
        let sharded = try ShardedDatabase(shardCount: 16, createSQL: create, table: "t", key: key)
        try sharded.insert(rows)
        for q in queries {
            let expected = single.query(SQLStatement(q)), got = sharded.query(SQLStatement(q))
            #expect(Compare.difference(expected, got, orderKeys: nil, limited: false) == nil, "\(q)\nexpected \(expected)\ngot \(got)")
        }
    }

    @Test("a quoted aggregate name, DISTINCT over aggregates, AVG of integers whose shard sum overflows")
    func aggregateShapes() throws {
        let rows: [[SQLValue]] = (0..<40).map { [.integer(Int64($0)), .text($0 % 3 == 0 ? "a" : "b"), .integer(1 << 62)] }
        try Self.compare(create: "CREATE TABLE t (k INTEGER NOT NULL PRIMARY KEY, g TEXT, n INTEGER)", key: ["k"], rows: rows,
                         columns: ["k", "g", "n"],
                         queries: ["SELECT \"count\"(*) FROM t", "SELECT [sum](k) FROM t", "SELECT DISTINCT count(*) > 0 FROM t GROUP BY g",
                                   "SELECT avg(n) FROM t", "SELECT g, avg(n) FROM t GROUP BY g"])
    }

    @Test("a column type written to run SQL in the combine step is only ever its affinity there")
    func declaredTypeCannotInject() throws {
        let create = "CREATE TABLE t (k INTEGER NOT NULL PRIMARY KEY, v 'INT); DROP TABLE partial; CREATE TABLE partial AS SELECT 99 AS c0;--')"
        let rows: [[SQLValue]] = (0..<10).map { [.integer(Int64($0)), .integer(Int64($0 * 2))] }
        try Self.compare(create: create, key: ["k"], rows: rows, columns: ["k", "v"],
                         queries: ["SELECT v FROM t ORDER BY v LIMIT 3", "SELECT count(*), sum(v) FROM t"])
    }

    @Test("a STRICT table's ANY key stores values as given, and routes so")
    func strictAnyKey() throws {
        let create = "CREATE TABLE t (k ANY NOT NULL PRIMARY KEY, v INTEGER) STRICT"
        let rows: [[SQLValue]] = [[.text("5"), .integer(1)], [.integer(5), .integer(2)], [.real(2.5), .integer(3)]]
        let sharded = try ShardedDatabase(shardCount: 16, createSQL: create, table: "t", key: ["k"])
        try sharded.insert(rows)
        #expect(sharded.planner.schema.sharded["t"]?.keyAffinities == [.blob])
        let r = sharded.query(SQLStatement("SELECT v FROM t WHERE k = '5'"))
        #expect(r.rows == [[.integer(1)]], "\(r)")
    }
}
