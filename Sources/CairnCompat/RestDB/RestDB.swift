import CairnJSON
import CairnQuery
import CairnSQLite

/// Seed 003's master/slave REST API (`--compat rest-db`): MySQL-flavoured requests turned into
/// SQLite statements on CairnDB databases. Its `values`, `set` and `where` fields are raw SQL the
/// original pasted into its statements; here each is parsed and accepted only as what it claims to be
/// (a list of values, assignments to the table's columns, a condition on them), so no request can run
/// a second statement, read another table, or reach anything but the one table it names.
public enum RestDB {
    /// Go's `http.Error`: the text and a newline, as plain text.
    public static func failure(_ status: Int, _ text: String) -> CompatFailure { CompatFailure(status: status, text: text + "\n") }

    /// A database or table name as the request gives it: MySQL's unquoted names, at most 64 bytes.
    public static func checkName(_ name: String, what: String) throws(CompatFailure) {
        // A database's name starts with a letter, as CairnDB's own API asks.
        guard isName(name), what != "database" || name.first!.isLetter else {
            throw failure(400, "Invalid \(what) name: use letters, digits and _ (starting with a letter\(what == "database" ? "" : " or _")), at most 64 characters")
        }
        // SQLite's own tables (the schema, AUTOINCREMENT's counters) and CairnDB's are not the client's tables.
        if name.lowercased().hasPrefix("sqlite_") || Authorizer.isReserved(name) {
            throw failure(400, "Invalid \(what) name: names starting with sqlite_ or _cairn are reserved")
        }
    }

    static func isName(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, s.utf8.count <= 64, first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return s.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    // MARK: Tables

    /// `CREATE TABLE` from the `schema` parameter (column definitions in MySQL's words) or from JSON
    /// columns (`[{"Name": ..., "DataType": ...}]`, after the original's `Id INT AUTO_INCREMENT PRIMARY KEY`).
    public static func createTable(_ table: String, schema: String?, columns: JSON?) throws(CompatFailure) -> SQLStatement {
        let definitions: String
        if let columns, columns["columns"] != nil || schema?.isEmpty != false {
            guard case .array(let list) = columns["columns"] ?? .null, !list.isEmpty, list.count <= 1_000 else {
                throw failure(400, "Either columns in request body or schema parameter is required")
            }
            var parts = ["Id INTEGER PRIMARY KEY AUTOINCREMENT"]
            for item in list {
                guard case .string(let name)? = item["Name"], case .string(let type)? = item["DataType"] else {
                    throw failure(400, "Invalid request body: each column needs \"Name\" and \"DataType\"")
                }
                guard isName(name) else { throw failure(400, "Invalid request body: column name \(name) is not a name") }
                parts.append(SQLLexer.quote(name) + " " + (try dataType(type)))
            }
            definitions = parts.joined(separator: ", ")
        } else if let schema, !schema.isEmpty {
            definitions = try columnDefinitions(schema)
        } else {
            throw failure(400, "Either columns in request body or schema parameter is required")
        }
        return SQLStatement("CREATE TABLE IF NOT EXISTS \(SQLLexer.quote(table)) (\(definitions))")
    }

    /// A column type: words, and numbers in one pair of parentheses (`VARCHAR(50)`, `DECIMAL(10, 2)`,
    /// `INT UNSIGNED`). SQLite gives any such name its affinity.
    static func dataType(_ text: String) throws(CompatFailure) -> String {
        let tokens = try lex(text)
        var depth = 0, words = 0
        for t in tokens {
            switch t.kind {
            case .word: words += 1
            case .number where depth == 1: break
            case .symbol where t.text == "(" && depth == 0: depth = 1
            case .symbol where t.text == ")" && depth == 1: depth = 2
            case .symbol where t.text == "," && depth == 1: break
            default: throw failure(400, "Invalid request body: \(text) is not a column type")
            }
        }
        guard words >= 1, depth != 1 else { throw failure(400, "Invalid request body: \(text) is not a column type") }
        return SQLLexer.text(tokens)
    }

    /// The `schema` parameter: column definitions and table constraints, nothing after them. MySQL's
    /// `AUTO_INCREMENT` on a primary key becomes SQLite's `INTEGER PRIMARY KEY AUTOINCREMENT`.
    static func columnDefinitions(_ schema: String) throws(CompatFailure) -> String {
        let tokens = try mysqlTokens(schema)
        var depth = 0
        for t in tokens {
            if t.isSymbol(";") { throw failure(400, "Failed to create table: the schema holds more than column definitions") }
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") {
                depth -= 1
                // Closing the column list early would let text after it into the statement.
                guard depth >= 0 else { throw failure(400, "Failed to create table: unbalanced parentheses in the schema") }
            }
            if t.kind == .word && refusedWords.contains(t.value.lowercased()) {
                throw failure(400, "Failed to create table: \(t.value) has no place in column definitions")
            }
        }
        guard depth == 0, !tokens.isEmpty else { throw failure(400, "Failed to create table: unbalanced parentheses in the schema") }
        var parts = split(tokens)
        // SQLite counts only a column declared INTEGER PRIMARY KEY: a table constraint
        // `PRIMARY KEY (id)` over an AUTO_INCREMENT column moves onto the column.
        let counted = Set(parts.filter { $0.count >= 2 && $0.contains { $0.isWord("AUTO_INCREMENT") } }.map { $0[0].value.lowercased() })
        var keyed: Set<String> = []
        if let k = parts.firstIndex(where: { primaryKeyColumns($0) != nil }), let keys = primaryKeyColumns(parts[k]), !counted.isDisjoint(with: keys) {
            guard keys.count == 1 else {
                throw failure(400, "Failed to create table: AUTO_INCREMENT in a primary key of \(keys.count) columns is not supported")
            }
            keyed = Set(keys)
            parts.remove(at: k)
        }
        return try parts.map { (column: [Token]) throws(CompatFailure) -> String in
            guard let ai = column.firstIndex(where: { $0.isWord("AUTO_INCREMENT") }) else { return SQLLexer.text(column) }
            var c = column
            c.remove(at: ai)
            let inline = c.indices.contains { $0 >= 1 && $0 + 1 < c.count && c[$0].isWord("PRIMARY") && c[$0 + 1].isWord("KEY") }
            guard c.count >= 1, inline || keyed.contains(c[0].value.lowercased()) else {
                throw failure(400, "Failed to create table: AUTO_INCREMENT is supported on the primary key column only")
            }
            // name INTEGER PRIMARY KEY AUTOINCREMENT, then whatever followed the key.
            let typeEnd = c[1...].firstIndex { constraintWords.contains($0.value.lowercased()) && $0.kind == .word } ?? c.count
            let rest = Array(c[typeEnd...]).filter { !$0.isWord("PRIMARY") && !$0.isWord("KEY") }
            return SQLLexer.text([c[0]]) + " INTEGER PRIMARY KEY AUTOINCREMENT" + (rest.isEmpty ? "" : " " + SQLLexer.text(rest))
        }.joined(separator: ", ")
    }

    /// The columns of a table constraint `[CONSTRAINT name] PRIMARY KEY (a, b ...)`, lowercased (nil:
    /// not one).
    private static func primaryKeyColumns(_ part: [Token]) -> [String]? {
        var p = part[...]
        if p.first?.isWord("CONSTRAINT") == true { p = p.dropFirst(2) }
        guard p.count >= 4, p[p.startIndex].isWord("PRIMARY"), p[p.startIndex + 1].isWord("KEY"), p[p.startIndex + 2].isSymbol("("),
              p.last?.isSymbol(")") == true else { return nil }
        return split(Array(p.dropFirst(3).dropLast())).compactMap { $0.first.map { $0.value.lowercased() } }
    }

    static let constraintWords: Set<String> = ["primary", "not", "null", "unique", "check", "default", "collate", "references", "generated", "as", "constraint", "key"]

    // MARK: Values, assignments, conditions

    /// The `values` string of `/insert`: a list of expressions, no column in them.
    public static func values(_ text: String) throws(CompatFailure) -> String {
        let tokens = try expression(text, columns: [], what: "values")
        return SQLLexer.text(tokens)
    }

    /// The `set` string of `/update`: `column = expression`, comma-separated, over `columns`.
    public static func assignments(_ text: String, columns: Set<String>) throws(CompatFailure) -> String {
        let tokens = try expression(text, columns: columns, what: "set")
        var out: [String] = []
        for part in split(tokens) {
            guard part.count >= 3, part[0].kind == .word || part[0].kind == .quotedName, columns.contains(part[0].value.lowercased()),
                  part[1].isSymbol("=") else {
                throw failure(400, "Invalid set: each part must be column = value, with a column of the table")
            }
            out.append(SQLLexer.text(part))
        }
        return out.joined(separator: ", ")
    }

    /// The `where` string of `/update` and `/delete`: a condition over `columns`.
    public static func condition(_ text: String, columns: Set<String>) throws(CompatFailure) -> String {
        let tokens = try expression(text, columns: columns, what: "where")
        guard split(tokens).count == 1 else { throw failure(400, "Invalid where: one condition, not a list") }
        return SQLLexer.text(tokens)
    }

    /// Tokens of an expression in MySQL's quoting (`"text"` a string, `` `name` `` a name), checked:
    /// every word is a column of `columns`, a function of `functions` called as one, or an operator or
    /// literal of `operatorWords`; parentheses balance; no `;`, `.`, parameter or subquery.
    static func expression(_ text: String, columns: Set<String>, what: String) throws(CompatFailure) -> [Token] {
        let tokens = try mysqlTokens(text)
        guard !tokens.isEmpty else { throw failure(400, "Invalid \(what): it is empty") }
        var depth = 0
        for (i, t) in tokens.enumerated() {
            switch t.kind {
            case .string, .number, .blob:
                continue
            case .parameter:
                throw failure(400, "Invalid \(what): parameters (\(t.text)) have no values here")
            case .quotedName:
                guard columns.contains(t.value.lowercased()) else { throw failure(400, "Invalid \(what): \(t.value) is not a column of the table") }
                // SQLite calls a quoted name before a parenthesis as a function, whatever the columns are named.
                if i + 1 < tokens.count && tokens[i + 1].isSymbol("(") {
                    throw failure(400, "Invalid \(what): \(t.text)(...) calls a function by a quoted name; call an allowed function by its bare name")
                }
                if i > 0 && tokens[i - 1].isWord("IN") { throw failure(400, "Invalid \(what): IN takes a list in parentheses") }
            case .word:
                let word = t.value.lowercased()
                // IN (...), NOT (...), CAST(...): operators before a parenthesis are not calls.
                let called = i + 1 < tokens.count && tokens[i + 1].isSymbol("(") && !operatorWords.contains(word)
                // A call is a call whatever the columns are named; after IN, a bare name is a table.
                if called && !functions.contains(word) { throw failure(400, "Invalid \(what): \(t.value)() is not a function allowed here") }
                if i > 0 && tokens[i - 1].isWord("IN") && !called { throw failure(400, "Invalid \(what): IN takes a list in parentheses") }
                // Whatever the table's columns are called: a bare SELECT, FROM, ... starts a subquery or a statement.
                if refusedWords.contains(word) { throw failure(400, "Invalid \(what): \(t.value) has no place in an expression here") }
                if called { continue }
                if columns.contains(word) || operatorWords.contains(word) { continue }
                throw failure(400, "Invalid \(what): \(t.value) is not a column of the table" + (called ? " or a function allowed here" : ""))
            case .symbol:
                switch t.text {
                case "(": depth += 1
                case ")":
                    depth -= 1
                    guard depth >= 0 else { throw failure(400, "Invalid \(what): unbalanced parentheses") }
                case ";": throw failure(400, "Invalid \(what): one expression, not statements")
                case ".": throw failure(400, "Invalid \(what): names of other tables or databases have no place here")
                default:
                    guard allowedSymbols.contains(t.text) else { throw failure(400, "Invalid \(what): \(t.text) is not allowed here") }
                }
            }
        }
        guard depth == 0 else { throw failure(400, "Invalid \(what): unbalanced parentheses") }
        return tokens
    }

    /// A fragment in MySQL's dialect as SQLite's tokens: its strings (`'text'` and `"text"`, with
    /// backslash escapes) as SQLite strings, its `` `names` `` as SQLite's `"names"`.
    public static func mysqlTokens(_ text: String) throws(CompatFailure) -> [Token] {
        try lex(try sqliteStrings(mysql: text)).map(mysqlQuoting)
    }

    /// MySQL's string literals rewritten as SQLite's, everything else as it was: `'...'` and `"..."`
    /// with MySQL's escapes (`\n`, `\t`, `\r`, `\b`, `\Z`; `\%` and `\_` keep their backslash, for
    /// LIKE; any other character after a backslash is itself) and doubled quotes, written `'...'` with
    /// only quotes doubled. Backquoted names and comments are copied whole, so a quote inside them
    /// opens no string. A string that holds `\0` is refused: SQL text cannot carry a NUL.
    static func sqliteStrings(mysql text: String) throws(CompatFailure) -> String {
        let s = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        func copy(until end: (Int) -> Bool, skip: Int) {
            var j = i
            while j < s.count && !end(j) { j += 1 }
            j = min(s.count, j + skip)
            out.append(contentsOf: s[i..<j])
            i = j
        }
        while i < s.count {
            let c = s[i]
            let next: Unicode.Scalar? = i + 1 < s.count ? s[i + 1] : nil
            switch c {
            case "'", "\"":
                var value = String.UnicodeScalarView()
                var j = i + 1
                var closed = false
                while j < s.count {
                    let d = s[j]
                    if d == "\\", j + 1 < s.count {
                        switch s[j + 1] {
                        case "n": value.append("\n")
                        case "t": value.append("\t")
                        case "r": value.append("\r")
                        case "b": value.append("\u{8}")
                        case "Z": value.append("\u{1A}")
                        case "0": throw failure(400, "Invalid request body: a string holds \\0 (NUL), which SQL text cannot carry")
                        case "%", "_": value.append(contentsOf: [d, s[j + 1]])
                        default: value.append(s[j + 1])
                        }
                        j += 2
                        continue
                    }
                    if d == c {
                        if j + 1 < s.count && s[j + 1] == c {
                            value.append(c)
                            j += 2
                            continue
                        }
                        closed = true
                        j += 1
                        break
                    }
                    if d == "\u{0}" { throw failure(400, "Invalid request body: a string holds a NUL, which SQL text cannot carry") }
                    value.append(d)
                    j += 1
                }
                guard closed else { throw failure(400, "Invalid request body: a string is not closed") }
                out.append("'")
                for v in value {
                    if v == "'" { out.append("'") }
                    out.append(v)
                }
                out.append("'")
                i = j
            case "`":
                // To the closing backquote (a doubled one is part of the name).
                var j = i + 1
                while j < s.count {
                    if s[j] == "`" {
                        if j + 1 < s.count && s[j + 1] == "`" { j += 2; continue }
                        j += 1
                        break
                    }
                    j += 1
                }
                out.append(contentsOf: s[i..<min(j, s.count)])
                i = j
            case "-" where next == "-":
                copy(until: { s[$0] == "\n" }, skip: 1)
            case "/" where next == "*":
                copy(until: { $0 >= i + 2 && s[$0 - 1] == "*" && s[$0] == "/" }, skip: 1)
            default:
                out.append(c)
                i += 1
            }
        }
        return String(out)
    }

    /// MySQL reads `` `name` `` as a name, as SQLite does; written as SQLite's own `"name"`.
    static func mysqlQuoting(_ t: Token) -> Token {
        guard t.kind == .quotedName else { return t }
        return Token(kind: .quotedName, text: SQLLexer.quote(t.value), value: t.value, start: t.start)
    }

    static func lex(_ text: String) throws(CompatFailure) -> [Token] {
        guard text.utf8.count <= 65_536 else { throw failure(400, "Invalid request body: a SQL fragment of more than 64 KiB") }
        do {
            return try SQLLexer.tokens(text)
        } catch {
            throw failure(400, "Invalid request body: \(error)")
        }
    }

    /// Tokens cut at the commas outside parentheses.
    static func split(_ tokens: [Token]) -> [[Token]] {
        var out: [[Token]] = [[]]
        var depth = 0
        for t in tokens {
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1 }
            if t.isSymbol(",") && depth == 0 { out.append([]) } else { out[out.count - 1].append(t) }
        }
        return out
    }

    /// Words that would make a fragment more than an expression or a column list.
    static let refusedWords: Set<String> = ["select", "insert", "update", "delete", "drop", "create", "alter", "attach", "detach", "pragma",
                                            "union", "with", "returning", "vacuum", "reindex", "analyze", "begin", "commit", "rollback",
                                            "savepoint", "release", "exists", "from", "into", "values"]

    static let operatorWords: Set<String> = ["and", "or", "not", "is", "null", "in", "like", "glob", "between", "case", "when", "then",
                                             "else", "end", "collate", "nocase", "binary", "rtrim", "escape", "true", "false",
                                             "current_timestamp", "current_date", "current_time", "isnull", "notnull", "cast", "as",
                                             "integer", "text", "real", "numeric", "blob", "int", "regexp", "distinct"]

    /// Scalar functions an expression may call: deterministic ones (CairnDB's state machine refuses
    /// the rest anyway; this says so before planning).
    static let functions: Set<String> = ["abs", "coalesce", "ifnull", "iif", "nullif", "length", "lower", "upper", "trim", "ltrim", "rtrim",
                                         "substr", "substring", "replace", "instr", "round", "hex", "unhex", "quote", "typeof", "char", "unicode",
                                         "min", "max", "printf", "format", "date", "time", "datetime", "julianday", "strftime", "unixepoch",
                                         "concat", "concat_ws", "sign", "cast", "like", "glob", "octet_length"]

    static let allowedSymbols: Set<String> = ["(", ")", ",", "=", "==", "!=", "<>", "<", "<=", ">", ">=", "||", "+", "-", "*", "/", "%", "&", "|", "<<", ">>", "~"]

    // MARK: Records and rows

    /// `/insert` with `records`: one row of named values.
    public static func insert(_ table: String, records: [(String, JSON)]) throws(CompatFailure) -> SQLStatement {
        guard !records.isEmpty, records.count <= 1_000 else { throw failure(400, "Either 'values' or 'records' is required") }
        var names: [String] = [], values: [SQLValue] = []
        for (name, value) in records {
            guard isName(name) else { throw failure(400, "Invalid value for \(name). It is not a column name.") }
            names.append(SQLLexer.quote(name))
            switch value {
            case .string(let s): values.append(.text(s))
            case .number(let text):
                if let v = Int64(text) { values.append(.integer(v)) } else if let v = Double(text), v.isFinite { values.append(.real(v)) } else {
                    throw failure(400, "Invalid value for \(name). Must be a number SQLite can hold.")
                }
            case .bool(let b): values.append(.integer(b ? 1 : 0))
            case .null: values.append(.null)
            default: throw failure(400, "Invalid value for \(name). Must be a string, a number, true, false or null.")
            }
        }
        return SQLStatement("INSERT INTO \(SQLLexer.quote(table)) (\(names.joined(separator: ", "))) VALUES (\(Array(repeating: "?", count: names.count).joined(separator: ", ")))", values)
    }

    /// `/select`'s rows: objects with their keys in byte order (the original encoded Go maps), `null`
    /// for no rows.
    public static func rows(_ result: StatementResult) -> JSON {
        guard !result.rows.isEmpty else { return .null }
        let order = result.columns.indices.sorted { Array(result.columns[$0].utf8).lexicographicallyPrecedes(Array(result.columns[$1].utf8)) }
        return .array(result.rows.map { row in
            .object(order.map { k in
                let value: JSON
                switch row[k] {
                case .null: value = .null
                case .integer(let v): value = .int(v)
                case .real(let v): value = .double(v)
                case .text(let s): value = .string(s)
                case .blob(let b): value = .string(String(decoding: b, as: UTF8.self))
                }
                return (result.columns[k], value)
            })
        })
    }
}
