import CairnQuery
import CairnSQLite
import Testing

/// A sharded table held in memory, one SQLite per shard, planned and combined exactly as the router
/// does: what the differential test and the planner tests run queries against.
final class ShardedDatabase {
    let shards: [ScratchDatabase]
    let schema: ScratchDatabase
    let planner: ReadPlanner
    let table: ShardedTable
    private let declared: (shardCount: Int, createSQL: String, key: [String], references: [(String, String)], splitPoints: [SQLValue]?,
                           others: [(name: String, key: [String], createSQL: String)])

    /// `references`: reference tables (name, CREATE TABLE), a copy in every shard. `splitPoints`: the
    /// table is sharded by range of its one key column, split there (as the column stores the values).
    /// `others`: more hash-sharded tables, for planning only (rows are inserted into `table` alone).
    init(shardCount: Int, createSQL: String, table name: String, key: [String], references: [(String, String)] = [],
         splitPoints: [SQLValue]? = nil, others: [(name: String, key: [String], createSQL: String)] = []) throws {
        declared = (shardCount, createSQL, key, references, splitPoints, others)
        shards = try (0..<shardCount).map { _ in try ScratchDatabase() }
        schema = try ScratchDatabase()
        for sql in [createSQL] + references.map(\.1) + others.map(\.createSQL) {
            for s in shards { try s.exec(sql) }
            try schema.exec(sql)
        }
        var described = try ShardingSchema.describe(table: name, keyColumns: key, in: schema)
        if let splitPoints { described.rangeSplits = try ShardingClause.splits(splitPoints, of: described, in: schema) }
        table = described
        let copy = schema
        // Placed alike: by range with the same split points when `table` is.
        let more = try others.map {
            var t = try ShardingSchema.describe(table: $0.name, keyColumns: $0.key, in: copy)
            t.rangeSplits = described.rangeSplits
            return t
        }
        let referenceTables = try references.map { try ShardingSchema.describe(table: $0.0, keyColumns: [], in: copy) }
        planner = ReadPlanner(schema: ShardingSchema(sharded: [table] + more, reference: referenceTables), map: .uniform(count: shardCount))
    }

    /// Table `t` three ways the prepared-plan tests place keys: by a one-column hash key (16 shards), a
    /// two-column hash key (16), and by range of one column split at 100 and 1000 (4).
    static func keyShapes() throws -> (one: ShardedDatabase, pair: ShardedDatabase, ranged: ShardedDatabase) {
        (try ShardedDatabase(shardCount: 16, createSQL: "CREATE TABLE t(k INTEGER NOT NULL PRIMARY KEY, v TEXT)", table: "t", key: ["k"]),
         try ShardedDatabase(shardCount: 16, createSQL: "CREATE TABLE t(a INTEGER NOT NULL, b TEXT NOT NULL, v TEXT, PRIMARY KEY (a, b))",
                             table: "t", key: ["a", "b"]),
         try ShardedDatabase(shardCount: 4, createSQL: "CREATE TABLE t(k INTEGER NOT NULL PRIMARY KEY, v TEXT)", table: "t", key: ["k"],
                             splitPoints: [.integer(100), .integer(1000)]))
    }

    /// The same database with one more reference table.
    func adding(reference name: String, createSQL: String) throws -> ShardedDatabase {
        try ShardedDatabase(shardCount: declared.shardCount, createSQL: declared.createSQL, table: table.name, key: declared.key,
                            references: declared.references + [(name, createSQL)], splitPoints: declared.splitPoints, others: declared.others)
    }

    /// The same database with one more hash-sharded table.
    func adding(sharded name: String, key: [String], createSQL: String) throws -> ShardedDatabase {
        try ShardedDatabase(shardCount: declared.shardCount, createSQL: declared.createSQL, table: table.name, key: declared.key,
                            references: declared.references, splitPoints: declared.splitPoints,
                            others: declared.others + [(name, key, createSQL)])
    }

    /// Inserts each row into the shard its key belongs to (after the key columns' affinity): into
    /// `table`, or another sharded table by name.
    func insert(_ rows: [[SQLValue]], into name: String? = nil) throws {
        let table = try name.map { n in try #require(planner.schema.sharded[n.lowercased()]) } ?? self.table
        var byShard = [[[SQLValue]]](repeating: [], count: shards.count)
        let keyIndexes = table.keyColumns.map { k in table.storedColumns.firstIndex { $0.lowercased() == k }! }
        for row in rows {
            let key = zip(keyIndexes, table.keyAffinities).map { $1.apply(row[$0], renderReal: RealText.render) }
            byShard[table.shard(of: key, in: planner.map)].append(row)
        }
        for (i, rows) in byShard.enumerated() {
            try shards[i].insert(into: SQLLexer.quote(table.name), columns: table.storedColumns, rows: rows)
        }
    }

    /// Inserts rows into every shard's copy of a reference table.
    func insert(reference name: String, _ rows: [[SQLValue]]) throws {
        let table = try #require(planner.schema.referenceTables[name.lowercased()])
        for s in shards { try s.insert(into: SQLLexer.quote(table.name), columns: table.storedColumns, rows: rows) }
    }

    func plan(_ statement: SQLStatement) throws -> ReadPlan {
        try planner.plan(statement, analysis: schema.analyze(statement.sql))
    }

    func query(_ statement: SQLStatement) -> StatementResult {
        let plan: ReadPlan
        do { plan = try self.plan(statement) } catch { return StatementResult(error: "\(error)") }
        switch plan {
        case .home: return StatementResult(error: "planned for the home group")
        case .single(let shard): return shards[shard].query(statement)
        case .scatter(let scatter):
            let partials = scatter.shards.map { shards[$0].query(scatter.worker) }
            return Combiner.combine(scatter, partials: partials, references: scatter.referenceWorker.map { shards[scatter.shards[0]].query($0) })
        }
    }
}
