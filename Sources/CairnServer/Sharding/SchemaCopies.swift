import CairnCluster
import CairnQuery
import CairnSQLite
import Foundation

/// The router's copies of each database's sharded tables, in private in-memory SQLite databases:
/// statements are prepared against them to learn what they touch (SQLite's own judgement, subqueries
/// and all) without sending anything to a shard. Rebuilt when the catalog's tables change.
///
/// What SQLite finds in a statement depends on its text and the schema alone, so it is kept per copy:
/// a statement sent again (with other parameters: the common case) is not prepared again, and the
/// lock every request takes is held for a lookup.
final class SchemaCopies: @unchecked Sendable {
    private struct Copy {
        var tables: [String: CatalogShardedTable]
        var database: ScratchDatabase
        var schema: ShardingSchema
        var analyses: [SQLTextKey: Known] = [:]
        /// Texts that name none of the copy's tables (`API.mentions`): the home group's.
        var unsharded: Set<SQLTextKey> = []
    }

    /// What is known of one statement text against a copy. A class, changed only with the lock held:
    /// a lookup for every request takes one reference, not a copy of the analysis.
    private final class Known {
        let analysis: StatementAnalysis
        /// Kept once the text is planned as a read.
        var read: PreparedRead?
        /// Kept once the text is planned as a write.
        var write: PreparedWrite?

        init(analysis: StatementAnalysis) { self.analysis = analysis }
    }

    private let lock = NSLock()
    private var copies: [String: Copy] = [:]
    /// Databases whose copies are kept; beyond it every copy is dropped (and rebuilt when next used).
    static let maxCopies = 256
    /// Analyses kept per copy, and the longest statement text kept (a 1,000-row INSERT is not worth it).
    static let maxAnalyses = 4_096
    static let maxAnalysedSQLBytes = 4_096

    /// What the planners need for `database`, and what SQLite finds in `sql` there. Throws SQLite's own
    /// message when the statement does not prepare against the sharded tables.
    func analyze(_ sql: String, database: String, tables: [String: CatalogShardedTable]) throws -> (ShardingSchema, StatementAnalysis) {
        lock.lock()
        defer { lock.unlock() }
        return try known(sql, database, tables)
    }

    /// What `ReadPlanner.prepare` learns from `sql` against `database`'s sharding schema, kept with the
    /// statement's analysis (and so dropped with the copy when a sharded table changes); nil when the
    /// text names no sharded or reference table (the home group's, remembered too).
    func preparedRead(_ sql: String, database: String, tables: [String: CatalogShardedTable]) throws -> (ShardingSchema, PreparedRead)? {
        lock.lock()
        defer { lock.unlock() }
        // A text seen before: one hash of it and one lookup.
        do { try ensureCurrent(database, tables) } catch {
            // No copy to be had: a text that names none of its tables is still the home group's.
            if !API.mentions(sql, tables) { return nil }
            throw error
        }
        let key = SQLTextKey(sql)
        if let read = copies[database]!.analyses[key]?.read { return (copies[database]!.schema, read) }
        guard mentions(sql, key, database, tables) else { return nil }
        let (schema, analysis) = try known(sql, database, tables)
        let read = try ReadPlanner.prepare(sql, analysis: analysis, schema: schema)
        copies[database]!.analyses[key]?.read = read
        return (schema, read)
    }

    /// What `WritePlanner.prepare` learns from `sql` against `database`'s sharding schema, kept as
    /// `preparedRead` keeps a read's; nil when the text names no sharded or reference table, unless
    /// `planned` (a DROP INDEX of one of their indexes, which names no table). Throws `Unanalysable`
    /// when SQLite cannot prepare `sql` against the sharded tables (or the copy cannot be made), and
    /// the planner's refusal when it can.
    func preparedWrite(_ sql: String, database: String, tables: [String: CatalogShardedTable],
                       planned: Bool = false) throws -> (ShardingSchema, StatementAnalysis, PreparedWrite)? {
        lock.lock()
        defer { lock.unlock() }
        do { try ensureCurrent(database, tables) } catch {
            if !planned && !API.mentions(sql, tables) { return nil }
            throw Unanalysable(error: error)
        }
        let key = SQLTextKey(sql)
        if let known = copies[database]!.analyses[key], let write = known.write { return (copies[database]!.schema, known.analysis, write) }
        guard planned || mentions(sql, key, database, tables) else { return nil }
        let schema: ShardingSchema, analysis: StatementAnalysis
        do { (schema, analysis) = try known(sql, database, tables) } catch { throw Unanalysable(error: error) }
        let write = try WritePlanner.prepare(sql, analysis: analysis, schema: schema)
        copies[database]!.analyses[key]?.write = write
        return (schema, analysis, write)
    }

    /// With the lock held: whether `sql` names any of the copy's tables, remembered when it does not.
    private func mentions(_ sql: String, _ key: SQLTextKey, _ database: String, _ tables: [String: CatalogShardedTable]) -> Bool {
        if copies[database]!.unsharded.contains(key) { return false }
        if API.mentions(sql, tables) { return true }
        // DROP INDEX names no table: whether it drops one of theirs is the catalog's to say, each time.
        if sql.utf8.count <= Self.maxAnalysedSQLBytes && !API.mentionsIndex(sql) {
            if copies[database]!.unsharded.count >= Self.maxAnalyses { copies[database]!.unsharded.removeAll() }
            copies[database]!.unsharded.insert(key)
        }
        return false
    }

    /// SQLite's own reason a statement does not prepare against a database's sharded tables.
    struct Unanalysable: Error {
        var error: any Error
    }

    /// With the lock held.
    private func known(_ sql: String, _ database: String, _ tables: [String: CatalogShardedTable]) throws -> (ShardingSchema, StatementAnalysis) {
        // Through the dictionary, not a local copy of the entry: a second reference to its analyses
        // would make every insertion copy them all.
        try ensureCurrent(database, tables)
        if let known = copies[database]!.analyses[SQLTextKey(sql)] { return (copies[database]!.schema, known.analysis) }
        let analysis = try copies[database]!.database.analyze(sql)
        if sql.utf8.count <= Self.maxAnalysedSQLBytes {
            if copies[database]!.analyses.count >= Self.maxAnalyses { copies[database]!.analyses.removeAll() }
            copies[database]!.analyses[SQLTextKey(sql)] = Known(analysis: analysis)
        }
        return (copies[database]!.schema, analysis)
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

    /// With the lock held: `current` without handing the copy out (no copy of its references per request).
    private func ensureCurrent(_ database: String, _ tables: [String: CatalogShardedTable]) throws {
        if copies[database]?.tables == tables {
            // Equal, and from now on the same storage: the next request's comparison with this
            // catalog copy's tables is an identity check, not every table's text compared.
            copies[database]!.tables = tables
            return
        }
        _ = try current(database, tables)
    }

    private func current(_ database: String, _ tables: [String: CatalogShardedTable]) throws -> Copy {
        if let copy = copies[database], copy.tables == tables { return copy }
        let ordered = tables.keys.sorted().map { tables[$0]! }
        let db = try ScratchDatabase()
        var described: [ShardedTable] = []
        var references: [ShardedTable] = []
        for t in ordered {
            try db.exec(t.createSQL)
            if t.isReference {
                references.append(try ShardingSchema.describe(table: t.name, keyColumns: [], in: db))
            } else {
                var table = try ShardingSchema.describe(table: t.name, keyColumns: t.keyColumns, in: db)
                table.rangeSplits = t.splitPoints.flatMap { RangeSplits(points: $0, placement: t.rangePlacement) ?? RangeSplits(points: $0) }
                described.append(table)
            }
        }
        if copies.count >= Self.maxCopies { copies.removeAll() }
        let copy = Copy(tables: tables, database: db, schema: ShardingSchema(sharded: described, reference: references))
        copies[database] = copy
        return copy
    }
}
