import CairnQuery
import CairnSQLite

/// A sharded table held in memory, one SQLite per shard, planned and combined exactly as the router
/// does: what the differential test and the planner tests run queries against.
final class ShardedDatabase {
    let shards: [ScratchDatabase]
    let schema: ScratchDatabase
    let planner: ReadPlanner
    let table: ShardedTable

    init(shardCount: Int, createSQL: String, table name: String, key: [String]) throws {
        shards = try (0..<shardCount).map { _ in try ScratchDatabase() }
        for s in shards { try s.exec(createSQL) }
        schema = try ScratchDatabase()
        try schema.exec(createSQL)
        table = try ShardingSchema.describe(table: name, keyColumns: key, in: schema)
        planner = ReadPlanner(schema: ShardingSchema(sharded: [table]), map: .uniform(count: shardCount))
    }

    /// Inserts each row into the shard its key hashes to (after the key columns' affinity).
    func insert(_ rows: [[SQLValue]]) throws {
        var byShard = [[[SQLValue]]](repeating: [], count: shards.count)
        let keyIndexes = table.keyColumns.map { k in table.storedColumns.firstIndex { $0.lowercased() == k }! }
        for row in rows {
            let key = zip(keyIndexes, table.keyAffinities).map { $1.apply(row[$0], renderReal: RealText.render) }
            byShard[planner.map.shard(of: key)].append(row)
        }
        for (i, rows) in byShard.enumerated() {
            try shards[i].insert(into: SQLLexer.quote(table.name), columns: table.storedColumns, rows: rows)
        }
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
            return Combiner.combine(scatter, partials: partials)
        }
    }
}
