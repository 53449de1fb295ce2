import Foundation
import CairnSQLite

/// What the router knows of a database's sharded tables: the inputs of every plan. Values only.
public struct ShardedTable: Sendable, Equatable {
    /// Lowercased, as SQLite compares names.
    public var name: String
    /// The shard key's columns (lowercased), in the order they are hashed.
    public var keyColumns: [String]
    /// Their affinities, to convert a literal as the column would store it before hashing.
    public var keyAffinities: [Affinity]
    /// The columns a row is stored with (generated columns excluded), as declared.
    public var storedColumns: [String]
    /// Lowercased names of all columns.
    public var allColumns: Set<String>
    /// The table's CREATE TABLE statement, as SQLite holds it (without CairnDB's SHARD BY clause).
    public var createSQL: String
    /// Some column compares with a collation other than BINARY: values that collate equal may look
    /// different, so partial results are only combined where SQLite itself compares (whole rows).
    public var hasCollatedColumns: Bool
    /// Set for a range-sharded table (one key column): its rows are placed by range, not by hash.
    public var rangeSplits: RangeSplits?

    /// The shard a key (as the key columns store it) belongs to.
    public func shard(of key: [SQLValue], in map: ShardMap) -> Int {
        guard let splits = rangeSplits else { return map.shard(of: key) }
        return splits.shard(ofRange: splits.range(of: key[0]), shardCount: map.rangeShardCount)
    }

    /// The shard a key as sent (a row's or a WHERE's values, before the columns' affinities) belongs
    /// to; nil when it has the wrong number of values or a column would store NULL (no row has that key).
    public func shard(ofSent key: [SQLValue], in map: ShardMap) -> Int? {
        guard key.count == keyColumns.count else { return nil }
        var stored: [SQLValue] = []
        stored.reserveCapacity(key.count)
        for (n, v) in key.enumerated() {
            let s = keyAffinities[n].apply(v, renderReal: RealText.render)
            guard s != .null else { return nil }
            stored.append(s)
        }
        return shard(of: stored, in: map)
    }

    public init(name: String, keyColumns: [String], keyAffinities: [Affinity], storedColumns: [String], allColumns: Set<String>,
                createSQL: String, hasCollatedColumns: Bool) {
        self.name = name.lowercased()
        self.keyColumns = keyColumns.map { $0.lowercased() }
        self.keyAffinities = keyAffinities
        self.storedColumns = storedColumns
        self.allColumns = allColumns
        self.createSQL = createSQL
        self.hasCollatedColumns = hasCollatedColumns
    }
}

public struct ShardingSchema: Sendable, Equatable {
    /// By lowercased name.
    public var sharded: [String: ShardedTable] = [:]
    /// Lowercased names of reference tables (a copy in every shard).
    public var reference: Set<String> = []
    /// The reference tables, described as sharded ones are (without a key), by lowercased name: what
    /// a read across shards gathers to join them.
    public var referenceTables: [String: ShardedTable] = [:]

    public init(sharded: [ShardedTable] = [], reference: [ShardedTable] = []) {
        for t in sharded { self.sharded[t.name] = t }
        for t in reference { referenceTables[t.name] = t }
        self.reference = Set(referenceTables.keys)
    }

    /// Reads a table's description from a schema copy that holds it (`PRAGMA table_xinfo`).
    public static func describe(table: String, keyColumns: [String], in schema: ScratchDatabase) throws -> ShardedTable {
        let info = schema.query(SQLStatement("SELECT name, type, hidden FROM pragma_table_xinfo(?1)", [.text(table)]), ownSQL: true)
        if let error = info.error { throw SQLSyntaxError(message: error) }
        guard !info.rows.isEmpty else { throw SQLSyntaxError(message: "no such table: \(table)") }
        var stored: [String] = [], all: Set<String> = [], types: [String: String] = [:]
        for row in info.rows {
            guard case .text(let name) = row[0] else { continue }
            let type: String
            if case .text(let t) = row[1] { type = t } else { type = "" }
            all.insert(name.lowercased())
            types[name.lowercased()] = type
            // hidden: 0 ordinary, 1 hidden (virtual tables), 2 and 3 generated.
            if case .integer(let h) = row[2], h >= 2 { continue }
            stored.append(name)
        }
        let sql = schema.query(SQLStatement("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE", [.text(table)]), ownSQL: true)
        guard case .text(let create)? = sql.rows.first?.first else { throw SQLSyntaxError(message: "no such table: \(table)") }
        let keys = keyColumns.map { $0.lowercased() }
        for k in keys where types[k] == nil { throw SQLSyntaxError(message: "the shard key column \(k) is not a column of \(table)") }
        // In a STRICT table, ANY stores values as given (no affinity), unlike ANY in any other table.
        let strict = schema.query(SQLStatement("SELECT strict FROM pragma_table_list(?1) WHERE schema = 'main'", [.text(table)]), ownSQL: true)
        let isStrict = strict.rows.first?.first == .integer(1)
        func affinity(_ k: String) -> Affinity {
            isStrict && types[k]?.uppercased() == "ANY" ? .blob : Affinity(declaredType: types[k] ?? "")
        }
        return ShardedTable(name: table, keyColumns: keys, keyAffinities: keys.map(affinity),
                            storedColumns: stored, allColumns: all, createSQL: create,
                            hasCollatedColumns: create.range(of: "COLLATE", options: .caseInsensitive) != nil)
    }
}
