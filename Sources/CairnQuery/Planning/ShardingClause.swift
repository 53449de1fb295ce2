import CairnSQLite
import Foundation

/// CairnDB's clause at the end of a CREATE TABLE, which the router strips before SQLite sees it:
/// `SHARD BY HASH (col[, col])`, `SHARD BY RANGE (col) [SPLIT AT (v, ...)]`, or `REFERENCE`.
public struct ShardingClause: Sendable, Equatable {
    public enum Method: Sendable, Equatable {
        case hash(keyColumns: [String])
        case range(keyColumn: String, splitPoints: [SQLValue])
        case reference
    }

    /// The table's name, as written (unquoted).
    public var table: String
    public var method: Method
    /// The CREATE TABLE without the clause: what every shard's SQLite runs.
    public var createSQL: String
    public var ifNotExists: Bool

    /// The clause of a CREATE TABLE statement, or nil when it has none (an ordinary table: the home
    /// group's, as before sharding). Throws when the clause is there but malformed.
    public static func parse(_ sql: String) throws -> ShardingClause? {
        // Every write request is asked: most are not CREATE TABLE, and are answered without tokenizing.
        guard mayDeclare(sql) else { return nil }
        var tokens = try SQLLexer.tokens(sql)
        while tokens.last?.isSymbol(";") == true { tokens.removeLast() }
        guard tokens.count >= 4, tokens[0].isWord("CREATE"), tokens[1].isWord("TABLE") else { return nil }
        // Where the clause starts: SHARD BY ... or REFERENCE, outside parentheses, after the columns.
        var depth = 0
        var clauseAt: Int?
        for (i, t) in tokens.enumerated() {
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1 }
            if depth == 0 && i > 2 && ((t.isWord("SHARD") && i + 1 < tokens.count && tokens[i + 1].isWord("BY")) || t.isWord("REFERENCE")) {
                clauseAt = i
                break
            }
        }
        guard let at = clauseAt else { return nil }
        if tokens[..<at].contains(where: { $0.isSymbol(";") }) {
            throw SQLSyntaxError(message: "CREATE TABLE ... SHARD BY is one statement: send the others separately")
        }
        var i = 2
        var ifNotExists = false
        if tokens.count > 5, tokens[2].isWord("IF"), tokens[3].isWord("NOT"), tokens[4].isWord("EXISTS") { ifNotExists = true; i = 5 }
        guard let nameToken = tokens.dropFirst(i).first, nameToken.kind == .word || nameToken.kind == .quotedName else {
            throw SQLSyntaxError(message: "CREATE TABLE ... SHARD BY: expected the table's name")
        }
        if i + 1 < tokens.count, tokens[i + 1].isSymbol(".") {
            throw SQLSyntaxError(message: "a sharded table is created in its own database: leave out the schema name")
        }
        if i + 1 < tokens.count, tokens[i + 1].isWord("AS") {
            throw SQLSyntaxError(message: "CREATE TABLE ... AS SELECT cannot be sharded: create the table, then insert the rows")
        }
        let clause = Array(tokens[at...])
        let method: Method
        if clause[0].isWord("REFERENCE") {
            guard clause.count == 1 else { throw SQLSyntaxError(message: "nothing may follow REFERENCE") }
            method = .reference
        } else {
            guard clause.count >= 5, clause[3].isSymbol("("), let close = clause.firstIndex(where: { $0.isSymbol(")") }) else {
                throw SQLSyntaxError(message: "expected SHARD BY HASH (column, ...) or SHARD BY RANGE (column)")
            }
            let columns = try SelectShape.splitTopLevel(Array(clause[4..<close])).map { part -> String in
                guard part.count == 1, part[0].kind == .word || part[0].kind == .quotedName else {
                    throw SQLSyntaxError(message: "a shard key lists column names, separated by commas")
                }
                return part[0].value
            }
            guard Set(columns.map { $0.lowercased() }).count == columns.count else { throw SQLSyntaxError(message: "a shard key names each column once") }
            let rest = Array(clause[(close + 1)...])
            if clause[2].isWord("HASH") {
                guard rest.isEmpty else { throw SQLSyntaxError(message: "nothing may follow SHARD BY HASH (...)") }
                guard columns.count <= 8 else { throw SQLSyntaxError(message: "a shard key has at most 8 columns") }
                method = .hash(keyColumns: columns)
            } else if clause[2].isWord("RANGE") {
                guard columns.count == 1 else { throw SQLSyntaxError(message: "SHARD BY RANGE takes one column") }
                var points: [SQLValue] = []
                if !rest.isEmpty {
                    guard rest.count >= 4, rest[0].isWord("SPLIT"), rest[1].isWord("AT"), rest[2].isSymbol("("), rest.last!.isSymbol(")") else {
                        throw SQLSyntaxError(message: "expected SPLIT AT (value, ...) after SHARD BY RANGE (column)")
                    }
                    for part in SelectShape.splitTopLevel(Array(rest[3..<(rest.count - 1)])) {
                        guard let v = ReadPlanner.literal(part[...], Parameters()), v != .null else {
                            throw SQLSyntaxError(message: "SPLIT AT lists literal values")
                        }
                        points.append(v)
                    }
                }
                method = .range(keyColumn: columns[0], splitPoints: points)
            } else {
                throw SQLSyntaxError(message: "expected SHARD BY HASH or SHARD BY RANGE, not SHARD BY \(clause[2].text)")
            }
        }
        let cut = sql.utf8.index(sql.utf8.startIndex, offsetBy: tokens[at].start)
        let create = String(sql[..<cut]).trimmingCharacters(in: .whitespacesAndNewlines)
        return ShardingClause(table: nameToken.value, method: method, createSQL: create, ifNotExists: ifNotExists)
    }

    /// False when `sql` cannot hold the clause: it does not begin with CREATE (after whitespace and
    /// comments it might begin with a comment: then the lexer decides), or names neither SHARD nor
    /// REFERENCE anywhere (ASCII, any case).
    static func mayDeclare(_ sql: String) -> Bool {
        let bytes = sql.utf8
        guard let first = bytes.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D && $0 != 0x0C }) else { return false }
        if first | 0x20 != UInt8(ascii: "c") && first != UInt8(ascii: "-") && first != UInt8(ascii: "/") { return false }
        return sql.range(of: "shard", options: .caseInsensitive) != nil || sql.range(of: "reference", options: .caseInsensitive) != nil
    }

    /// A range table's split points as its key column stores them (`SPLIT AT ('5')` on an INTEGER
    /// column splits at 5), checked: ascending, each once, and each spelled by a literal SQLite reads
    /// back as the same value (every shard's guard holds them as literals).
    public static func splits(_ declared: [SQLValue], of table: ShardedTable, in schema: ScratchDatabase) throws -> RangeSplits {
        guard declared.count <= RangeSplits.maxPoints else {
            throw SQLSyntaxError(message: "SPLIT AT lists at most \(RangeSplits.maxPoints) values")
        }
        let stored = declared.map { table.keyAffinities[0].apply($0, renderReal: RealText.render) }
        for v in stored {
            guard let literal = v.sqlLiteral, schema.query(SQLStatement("SELECT \(literal)"), ownSQL: true).rows.first?.first == v else {
                throw SQLSyntaxError(message: "the split point \(v.sqlLiteral ?? "(not finite)") cannot be written exactly as an SQL literal: choose another")
            }
        }
        guard let splits = RangeSplits(points: stored) else {
            throw SQLSyntaxError(message: "SPLIT AT lists values in ascending order, each once, as the column \(table.keyColumns[0]) stores them "
                                 + "(numbers before text before blobs)")
        }
        return splits
    }

    /// Checks a hash- or range-sharded table against the rules that keep every row on one shard and every
    /// constraint checkable within one shard, on a schema copy holding the table (its CREATE run there).
    /// Returns the table as the planner sees it.
    public static func validate(table: String, keyColumns: [String], in schema: ScratchDatabase) throws -> ShardedTable {
        let described = try ShardingSchema.describe(table: table, keyColumns: keyColumns, in: schema)
        let info = schema.query(SQLStatement("SELECT name, \"notnull\", pk FROM pragma_table_info(?1)", [.text(table)]), ownSQL: true)
        var notNull: [String: Bool] = [:], pk: [String: Bool] = [:]
        for row in info.rows {
            guard case .text(let n) = row[0], case .integer(let nn) = row[1], case .integer(let p) = row[2] else { continue }
            notNull[n.lowercased()] = nn != 0
            pk[n.lowercased()] = p != 0
        }
        for k in described.keyColumns {
            if !described.storedColumns.contains(where: { $0.lowercased() == k }) {
                throw SQLSyntaxError(message: "the shard key column \(k) is generated: a shard key must be stored as written")
            }
            guard notNull[k] == true else { throw SQLSyntaxError(message: "the shard key column \(k) must be NOT NULL") }
            guard pk[k] == true else {
                throw SQLSyntaxError(message: "the shard key column \(k) must be part of the PRIMARY KEY: uniqueness is checked within one shard")
            }
        }
        // The key columns themselves compare with BINARY: a NOCASE key matches `k = 'A'` with rows
        // stored as 'a', which hash (and sort) elsewhere. An index on the column alone shows the
        // collation it was declared with.
        for k in described.keyColumns {
            let probe = "key_collation_probe"
            try schema.exec("CREATE INDEX \(SQLLexer.quote(probe)) ON \(SQLLexer.quote(table)) (\(SQLLexer.quote(k)))")
            let info = schema.query(SQLStatement("SELECT coll FROM pragma_index_xinfo(?1) WHERE key = 1", [.text(probe)]), ownSQL: true)
            try schema.exec("DROP INDEX \(SQLLexer.quote(probe))")
            if case .text(let coll)? = info.rows.first?.first, coll.uppercased() != "BINARY" {
                throw SQLSyntaxError(message: "the shard key column \(k) must compare with the BINARY collation, not \(coll)")
            }
        }
        // Every UNIQUE index (the primary key's included) must contain the key, with SQLite's BINARY
        // collation (NOCASE would let values that hash apart collide).
        let indexes = schema.query(SQLStatement("SELECT name, \"unique\", origin FROM pragma_index_list(?1)", [.text(table)]), ownSQL: true)
        for row in indexes.rows {
            guard case .text(let index) = row[0], case .integer(let unique) = row[1], unique != 0 else { continue }
            let columns = schema.query(SQLStatement("SELECT name, coll, key FROM pragma_index_xinfo(?1)", [.text(index)]), ownSQL: true)
            var found: [String: String] = [:]
            for c in columns.rows {
                guard case .text(let n) = c[0], case .integer(1) = c[2] else { continue }
                if case .text(let coll) = c[1] { found[n.lowercased()] = coll } else { found[n.lowercased()] = "BINARY" }
            }
            for k in described.keyColumns {
                guard let coll = found[k] else {
                    throw SQLSyntaxError(message: "every UNIQUE constraint of a sharded table must include the shard key (\(described.keyColumns.joined(separator: ", "))): uniqueness is checked within one shard")
                }
                guard coll.uppercased() == "BINARY" else {
                    throw SQLSyntaxError(message: "the shard key column \(k) must compare with the BINARY collation, not \(coll)")
                }
            }
        }
        return described
    }
}
