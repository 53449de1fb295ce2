import CairnSQLite

/// Where a statement text's parameters are, renamed so that any part of the statement can be cut out
/// and run on its own: `?` and `?NNN` become `:_cairn_pNNN` (positional numbers would shift when a
/// clause is dropped). The text's alone: planning keeps it per text (`PreparedRead`) and gives each
/// request's values to it (`Parameters`).
struct ParameterSlots: Sendable {
    struct Slot: Sendable {
        /// The parameter's text after renaming.
        var renamed: String
        /// SQLite's number for it (what a positional value binds to).
        var index: Int
        /// The name it was written with (`:name`, `@name`, `$name`); nil for `?` and `?NNN`.
        var name: String?

        /// The value `statement` binds to this parameter: by name (with or without its sigil), else by
        /// SQLite's number for it; NULL when it gives none, as in SQLite.
        func value(in statement: SQLStatement) -> SQLValue {
            var value = name.flatMap { statement.named[$0] ?? statement.named[String($0.dropFirst())] }
            if value == nil && index >= 1 && index <= statement.positional.count { value = statement.positional[index - 1] }
            return value ?? .null
        }
    }
    private(set) var slots: [Slot] = []

    /// The value `statement` gives the parameter renamed `renamed`, as `Parameters` records it (the
    /// last slot of that name wins, as it does there), without building the dictionary: for planning
    /// a point read or a one-row INSERT, whose key is one or two terms.
    func value(of renamed: String, in statement: SQLStatement) -> SQLValue {
        slots.last { $0.renamed == renamed }?.value(in: statement) ?? .null
    }

    /// A term's value in `statement`.
    func value(of term: ReadPlanner.Term, in statement: SQLStatement) -> SQLValue {
        switch term {
        case .value(let v): return v
        case .parameter(let p): return value(of: p, in: statement)
        }
    }

    /// Renames the parameters in `tokens`, numbering them as SQLite does.
    static func renaming(_ tokens: [Token]) -> (ParameterSlots, [Token]) {
        var slots = ParameterSlots()
        var out = tokens
        var largest = 0
        var namedIndex: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where t.kind == .parameter {
            let index: Int
            let renamed: String
            var name: String?
            if t.text.hasPrefix("?") {
                if t.text.count > 1, let n = Int(t.text.dropFirst()) { index = n } else { index = largest + 1 }
                renamed = ":_cairn_p\(index)"
            } else {
                if let known = namedIndex[t.text] { index = known } else { index = largest + 1; namedIndex[t.text] = index }
                renamed = t.text
                name = t.text
            }
            largest = max(largest, index)
            slots.slots.append(Slot(renamed: renamed, index: index, name: name))
            out[i] = Token(kind: .parameter, text: renamed, value: renamed)
        }
        return (slots, out)
    }
}

/// A statement's parameters, numbered as SQLite numbers them and renamed as `ParameterSlots` renames
/// them, with the values the request gave them.
struct Parameters {
    /// The value each (renamed) parameter text stands for; a parameter given no value is NULL, as in SQLite.
    private(set) var values: [String: SQLValue] = [:]

    init() {}

    /// The values `statement` gives the parameters of its text's `slots`.
    init(_ slots: ParameterSlots, of statement: SQLStatement) {
        for slot in slots.slots { values[slot.renamed] = slot.value(in: statement) }
    }

    /// Renames the parameters in `tokens` and records their values from `statement`.
    static func renaming(_ tokens: [Token], in statement: SQLStatement) -> (Parameters, [Token]) {
        let (slots, renamed) = ParameterSlots.renaming(tokens)
        return (Parameters(slots, of: statement), renamed)
    }

    /// A statement of these (already renamed) tokens, with the values of the parameters they hold.
    func statement(_ tokens: [Token]) -> SQLStatement {
        var named: [String: SQLValue] = [:]
        for t in tokens where t.kind == .parameter { named[t.text] = values[t.text] ?? .null }
        return SQLStatement(SQLLexer.text(tokens), named: named)
    }

    /// A term's value; a parameter given none is NULL (as `init` records every parameter of its
    /// text, only a term from another text can be missing).
    func value(of term: ReadPlanner.Term) -> SQLValue {
        switch term {
        case .value(let v): return v
        case .parameter(let p): return values[p] ?? .null
        }
    }
}
