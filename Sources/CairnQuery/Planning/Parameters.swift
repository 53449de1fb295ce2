import CairnSQLite

/// A statement's parameters, numbered as SQLite numbers them, and renamed so that any part of the
/// statement can be cut out and run on its own: `?` and `?NNN` become `:_cairn_pNNN` (positional
/// numbers would shift when a clause is dropped), and each piece is sent with only its own values.
struct Parameters {
    /// The value each (renamed) parameter text stands for; a parameter given no value is NULL, as in SQLite.
    private(set) var values: [String: SQLValue] = [:]

    /// Renames the parameters in `tokens` and records their values from `statement`.
    static func renaming(_ tokens: [Token], in statement: SQLStatement) -> (Parameters, [Token]) {
        var p = Parameters()
        var out = tokens
        var largest = 0
        var namedIndex: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where t.kind == .parameter {
            let index: Int
            let renamed: String
            var value: SQLValue?
            if t.text.hasPrefix("?") {
                if t.text.count > 1, let n = Int(t.text.dropFirst()) { index = n } else { index = largest + 1 }
                renamed = ":_cairn_p\(index)"
            } else {
                if let known = namedIndex[t.text] { index = known } else { index = largest + 1; namedIndex[t.text] = index }
                renamed = t.text
                value = statement.named[t.text] ?? statement.named[String(t.text.dropFirst())]
            }
            largest = max(largest, index)
            if value == nil && index >= 1 && index <= statement.positional.count { value = statement.positional[index - 1] }
            p.values[renamed] = value ?? .null
            out[i] = Token(kind: .parameter, text: renamed, value: renamed)
        }
        return (p, out)
    }

    /// A statement of these (already renamed) tokens, with the values of the parameters they hold.
    func statement(_ tokens: [Token]) -> SQLStatement {
        var named: [String: SQLValue] = [:]
        for t in tokens where t.kind == .parameter { named[t.text] = values[t.text] ?? .null }
        return SQLStatement(SQLLexer.text(tokens), named: named)
    }

    func value(of token: Token) -> SQLValue? { values[token.text] }
}
