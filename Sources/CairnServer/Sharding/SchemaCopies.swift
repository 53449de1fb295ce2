import CairnCluster
import CairnQuery
import CairnSQLite
import Foundation

/// The router's copies of each database's sharded tables, in private in-memory SQLite databases:
/// statements are prepared against them to learn what they touch (SQLite's own judgement, subqueries
/// and all) without sending anything to a shard. Rebuilt when the catalog's tables change.
final class SchemaCopies: @unchecked Sendable {
    private struct Copy {
        var signature: [String]
        var database: ScratchDatabase
        var schema: ShardingSchema
    }

    private let lock = NSLock()
    private var copies: [String: Copy] = [:]
    /// Databases whose copies are kept; the least recently built is dropped beyond it.
    static let maxCopies = 256

    /// What the planners need for `database`, and what SQLite finds in `sql` there. Throws SQLite's own
    /// message when the statement does not prepare against the sharded tables.
    func analyze(_ sql: String, database: String, tables: [String: CatalogShardedTable]) throws -> (ShardingSchema, StatementAnalysis) {
        lock.lock()
        defer { lock.unlock() }
        let copy = try current(database, tables)
        return (copy.schema, try copy.database.analyze(sql))
    }

    /// The table an index of `database`'s sharded or reference tables belongs to, if `name` is one.
    func table(ofIndex name: String, database: String, tables: [String: CatalogShardedTable]) -> String? {
        lock.lock()
        defer { lock.unlock() }
        guard let copy = try? current(database, tables) else { return nil }
        let r = copy.database.query(SQLStatement("SELECT tbl_name FROM sqlite_schema WHERE type = 'index' AND name = ?1 COLLATE NOCASE", [.text(name)]),
                                    ownSQL: true)
        if case .text(let table)? = r.rows.first?.first { return table }
        return nil
    }

    func schema(database: String, tables: [String: CatalogShardedTable]) throws -> ShardingSchema {
        lock.lock()
        defer { lock.unlock() }
        return try current(database, tables).schema
    }

    private func current(_ database: String, _ tables: [String: CatalogShardedTable]) throws -> Copy {
        let ordered = tables.keys.sorted().map { tables[$0]! }
        let signature = ordered.map { "\($0.name)\u{0}\($0.keyColumns)\u{0}\($0.createSQL)" }
        if let copy = copies[database], copy.signature == signature { return copy }
        let db = try ScratchDatabase()
        var described: [ShardedTable] = []
        var references: Set<String> = []
        for t in ordered {
            try db.exec(t.createSQL)
            if t.isReference {
                references.insert(t.name)
            } else {
                described.append(try ShardingSchema.describe(table: t.name, keyColumns: t.keyColumns, in: db))
            }
        }
        if copies.count >= Self.maxCopies { copies.removeAll() }
        let copy = Copy(signature: signature, database: db, schema: ShardingSchema(sharded: described, reference: references))
        copies[database] = copy
        return copy
    }
}
