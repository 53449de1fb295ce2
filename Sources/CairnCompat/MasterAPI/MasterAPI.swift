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
            tokens = try RestDB.mysqlTokens(query)
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
            let guardWords = first.isWord("CREATE") ? ["IF", "NOT", "EXISTS"] : ["IF", "EXISTS"]
            let guarded = rest.count > guardWords.count && zip(rest, guardWords).allSatisfy { $0.isWord($1) }
            if guarded { rest = rest.dropFirst(guardWords.count) }
            guard rest.count == 1, let name = rest.first, name.kind == .word || name.kind == .quotedName, (try? RestDB.checkName(name.value, what: "database")) != nil else {
                throw failure(400, "expected \(first.value.uppercased()) DATABASE name")
            }
            return first.isWord("CREATE") ? .createDatabase(name.value, ifNotExists: guarded) : .dropDatabase(name.value, ifExists: guarded)
        }
        // Tables named db.table: every one in one database, which the statement then runs on.
        var database: String?
        var out: [Token] = []
        var i = 0
        // Whether each open parenthesis level is in a FROM list (a comma there starts another table).
        var inFrom = [false]
        while i < tokens.count {
            let t = tokens[i]
            if t.isSymbol("(") { inFrom.append(false) }
            if t.isSymbol(")"), inFrom.count > 1 { inFrom.removeLast() }
            if t.kind == .word {
                if t.isWord("FROM") { inFrom[inFrom.count - 1] = true } else if clauseWords.contains(where: { t.isWord($0) }) { inFrom[inFrom.count - 1] = false }
            }
            // CREATE [UNIQUE] INDEX name ON table
            let afterIndexOn = out.last?.isWord("ON") == true && out.contains(where: { $0.isWord("INDEX") }) && out.first?.isWord("CREATE") == true
            let tablePosition = isTablePosition(out.last) || afterIndexOn || (inFrom.last! && out.last?.isSymbol(",") == true)
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
        if let database { do { try RestDB.checkName(database, what: "database") } catch { throw failure(400, "\(database) is not a database name") } }
        var sql = SQLLexer.text(out)
        if first.isWord("CREATE"), out.count > 2, out[1].isWord("TABLE") { sql = try createTable(out) }
        return .statement(database: database, sql: sql, reads: Self.onlyReads(out))
    }

    /// A SELECT, VALUES or EXPLAIN, or a WITH whose statement is one of them (not an INSERT, UPDATE,
    /// DELETE or REPLACE after its common tables).
    static func onlyReads(_ tokens: [Token]) -> Bool {
        guard let first = tokens.first else { return false }
        if first.isWord("SELECT") || first.isWord("VALUES") || first.isWord("EXPLAIN") { return true }
        guard first.isWord("WITH") else { return false }
        var depth = 0
        for t in tokens {
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1 }
            if depth == 0, ["INSERT", "UPDATE", "DELETE", "REPLACE"].contains(where: { t.isWord($0) }) { return false }
        }
        return true
    }

    static let clauseWords = ["WHERE", "ON", "USING", "GROUP", "ORDER", "LIMIT", "HAVING", "SET", "VALUES", "SELECT", "UNION", "WINDOW", "RETURNING"]

    static func isTablePosition(_ previous: Token?) -> Bool {
        guard let p = previous else { return false }
        return ["from", "join", "into", "update", "table", "exists"].contains { p.isWord($0) }
    }

    /// MySQL's CREATE TABLE in SQLite's words: AUTO_INCREMENT keys, and no table options after the
    /// column list (ENGINE=..., CHARSET=...).
    static func createTable(_ tokens: [Token]) throws(CompatFailure) -> String {
        // CREATE [TEMP] TABLE [IF NOT EXISTS] name ( ... ): anything else (AS SELECT ...) stays as written.
        var nameAt = 2
        while nameAt < tokens.count, ["IF", "NOT", "EXISTS"].contains(where: { tokens[nameAt].isWord($0) }) { nameAt += 1 }
        let open = nameAt + 1
        guard open < tokens.count, tokens[open].isSymbol("(") else { return SQLLexer.text(tokens) }
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
        // MySQL's table options go (SQLite has none of them); SQLite's own (STRICT, WITHOUT ROWID) stay.
        var options: [String] = []
        var k = close + 1
        while k < tokens.count {
            let t = tokens[k]
            if t.isWord("STRICT") || t.isWord("WITHOUT") || t.isWord("ROWID") || t.isSymbol(",") {
                options.append(t.text)
                k += 1
                continue
            }
            let known = ["ENGINE", "CHARSET", "CHARACTER", "SET", "DEFAULT", "COLLATE", "AUTO_INCREMENT", "COMMENT", "ROW_FORMAT"].contains { t.isWord($0) }
            guard known else { throw failure(400, "\(t.text) after the column list is not a table option CairnDB knows") }
            // The option's words, an optional =, and its value.
            k += 1
            while k < tokens.count, tokens[k].isSymbol("=") || tokens[k].kind == .string || tokens[k].kind == .number
                    || (tokens[k].kind == .word && !["ENGINE", "CHARSET", "DEFAULT", "COLLATE", "AUTO_INCREMENT", "COMMENT", "ROW_FORMAT", "STRICT", "WITHOUT"].contains(where: { tokens[k].isWord($0) })) {
                k += 1
            }
        }
        return SQLLexer.text(tokens[..<open]) + " (" + inner + ")" + (options.isEmpty ? "" : " " + options.joined(separator: " "))
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
