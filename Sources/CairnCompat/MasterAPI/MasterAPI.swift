import CairnJSON
import CairnQuery
import CairnSQLite

/// Seed 002's master HTTP API (`--compat master-api`): MySQL queries sent as `{"query": ...}`,
/// answered as its `DBResponse`. Its databases are CairnDB databases: a query names its tables as
/// `db.table` (the master ran them on one MySQL connection), or runs on `default`.
public enum MasterAPI {
    /// `{"status": "error", "message": ...}`, the original's error shape (sent with a 4xx here).
    public static func failure(_ status: Int, _ message: String) -> CompatFailure {
        CompatFailure(status: status, body: .object([("status", .string("error")), ("message", .string(message))]))
    }

    public static func ok(_ message: String) -> JSON { .object([("status", .string("ok")), ("message", .string(message))]) }

    public static let invalidToken = failure(401, "Invalid token")

    /// What a query asks for.
    public enum Plan: Equatable, Sendable {
        case createDatabase(String, ifNotExists: Bool)
        case dropDatabase(String, ifExists: Bool)
        /// One statement on `database` (nil: `default`), in SQLite's dialect; `reads` if it only reads.
        case statement(database: String?, sql: String, reads: Bool)
    }

    public static func plan(_ query: String) throws(CompatFailure) -> Plan {
        var tokens: [Token]
        do {
            tokens = try RestDB.lex(query).map(RestDB.mysqlQuoting)
        } catch {
            throw failure(400, error.text.map { String($0.dropLast()) } ?? "malformed query")
        }
        while tokens.last?.isSymbol(";") == true { tokens.removeLast() }
        guard let first = tokens.first else { throw failure(400, "the query is empty") }
        if tokens.contains(where: { $0.isSymbol(";") }) { throw failure(400, "send one statement per query") }
        if first.isWord("USE") { throw failure(400, "USE holds for one connection only: name tables as database.table instead") }
        // CREATE/DROP DATABASE (or SCHEMA) [IF [NOT] EXISTS] name
        if tokens.count >= 2, first.isWord("CREATE") || first.isWord("DROP"), tokens[1].isWord("DATABASE") || tokens[1].isWord("SCHEMA") {
            var rest = tokens.dropFirst(2)
            let guarded = rest.count >= 3 && rest.first!.isWord("IF")
            if guarded { rest = rest.dropFirst(first.isWord("CREATE") ? 3 : 2) }
            guard rest.count == 1, let name = rest.first, name.kind == .word || name.kind == .quotedName, RestDB.isName(name.value) else {
                throw failure(400, "expected \(first.value.uppercased()) DATABASE name")
            }
            return first.isWord("CREATE") ? .createDatabase(name.value, ifNotExists: guarded) : .dropDatabase(name.value, ifExists: guarded)
        }
        // Tables named db.table: every one in one database, which the statement then runs on.
        var database: String?
        var out: [Token] = []
        var i = 0
        // The clause the tokens are in: a comma in FROM's list starts another table.
        var inFrom = false
        while i < tokens.count {
            let t = tokens[i]
            if t.kind == .word {
                if t.isWord("FROM") { inFrom = true } else if clauseWords.contains(where: { t.isWord($0) }) { inFrom = false }
            }
            let tablePosition = isTablePosition(out.last) || (inFrom && out.last?.isSymbol(",") == true)
            if (t.kind == .word || t.kind == .quotedName), i + 2 < tokens.count, tokens[i + 1].isSymbol("."),
               tokens[i + 2].kind == .word || tokens[i + 2].kind == .quotedName || tokens[i + 2].isSymbol("*"),
               // A column qualified by its table (t.col) is left alone: only a name three deep, or one
               // where a table's name goes (after FROM, JOIN, INTO, UPDATE, TABLE, or in FROM's list),
               // is a database's.
               tablePosition || (i + 4 < tokens.count && tokens[i + 3].isSymbol(".")) {
                if let d = database, d != t.value { throw failure(400, "a query names tables of one database only (\(d) and \(t.value))") }
                database = t.value
                i += 2
                continue
            }
            out.append(t)
            i += 1
        }
        if let database, !RestDB.isName(database) { throw failure(400, "\(database) is not a database name") }
        var sql = SQLLexer.text(out)
        if first.isWord("CREATE"), out.count > 2, out[1].isWord("TABLE") { sql = try createTable(out) }
        let reads = first.isWord("SELECT") || first.isWord("WITH") || first.isWord("EXPLAIN") || first.isWord("VALUES")
        return .statement(database: database, sql: sql, reads: reads)
    }

    static let clauseWords = ["WHERE", "ON", "USING", "GROUP", "ORDER", "LIMIT", "HAVING", "SET", "VALUES", "SELECT", "UNION", "WINDOW", "RETURNING"]

    static func isTablePosition(_ previous: Token?) -> Bool {
        guard let p = previous else { return false }
        return ["from", "join", "into", "update", "table", "exists"].contains { p.isWord($0) }
    }

    /// MySQL's CREATE TABLE in SQLite's words: AUTO_INCREMENT keys, and no table options after the
    /// column list (ENGINE=..., CHARSET=...).
    static func createTable(_ tokens: [Token]) throws(CompatFailure) -> String {
        guard let open = tokens.firstIndex(where: { $0.isSymbol("(") }) else { return SQLLexer.text(tokens) }
        var depth = 0
        var close: Int?
        for k in open..<tokens.count {
            if tokens[k].isSymbol("(") { depth += 1 }
            if tokens[k].isSymbol(")") {
                depth -= 1
                if depth == 0 { close = k; break }
            }
        }
        guard let close else { throw failure(400, "unbalanced parentheses in CREATE TABLE") }
        let inner: String
        do {
            inner = try RestDB.columnDefinitions(SQLLexer.text(tokens[(open + 1)..<close]))
        } catch {
            throw failure(400, error.text.map { String($0.dropLast()) } ?? "bad column definitions")
        }
        return SQLLexer.text(tokens[..<open]) + " (" + inner + ")"
    }

    /// `/api/table/create`'s columns: `{"name", "type", "nullable", "default"}`.
    public static func createTable(_ table: String, columns: [JSON]) throws(CompatFailure) -> SQLStatement {
        guard RestDB.isName(table) else { throw failure(400, "\(table) is not a table name") }
        guard !columns.isEmpty, columns.count <= 1_000 else { throw failure(400, "a table needs 1 to 1000 columns") }
        var parts: [String] = []
        for c in columns {
            guard case .string(let name)? = c["name"], RestDB.isName(name), case .string(let type)? = c["type"] else {
                throw failure(400, "each column needs a \"name\" (a name) and a \"type\"")
            }
            let sqlType: String
            do { sqlType = try RestDB.dataType(type) } catch { throw failure(400, "\(type) is not a column type") }
            var part = SQLLexer.quote(name) + " " + sqlType
            if case .bool(false)? = c["nullable"] { part += " NOT NULL" }
            switch c["default"] {
            case nil, .null?: break
            case .string(let s)?: part += " DEFAULT '" + s.replacingOccurrences(of: "'", with: "''") + "'"
            case .number(let n)? where Double(n) != nil: part += " DEFAULT " + n
            case .bool(let b)?: part += " DEFAULT " + (b ? "1" : "0")
            default: throw failure(400, "the default of \(name) must be a string, a number or a boolean")
            }
            parts.append(part)
        }
        return SQLStatement("CREATE TABLE IF NOT EXISTS \(SQLLexer.quote(table)) (\(parts.joined(separator: ", ")))")
    }

    /// A query's answer: a SELECT's `header` and `rows` (every value as text, NULL as `NULL`, as the
    /// original scanned them into strings), or the rows it changed.
    public static func answer(_ result: StatementResult, reads: Bool) -> JSON {
        guard reads else { return ok("Query executed successfully. Rows affected: \(result.rowsAffected)") }
        let rows: [JSON] = result.rows.map { row in
            .array(row.map { v -> JSON in
                switch v {
                case .null: return .string("NULL")
                case .integer(let i): return .string(String(i))
                case .real(let d): return .string(String(d))
                case .text(let s): return .string(s)
                case .blob(let b): return .string(String(decoding: b, as: UTF8.self))
                }
            })
        }
        return .object([("status", .string("ok")), ("message", .string("Select executed successfully")),
                        ("header", .array(result.columns.map { .string($0) })), ("rows", .array(rows))])
    }
}
