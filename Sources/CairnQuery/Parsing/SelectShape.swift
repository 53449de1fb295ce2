/// The top level of one SELECT, cut into its clauses (each kept as tokens, as written). Only what the
/// router needs to decide a plan: anything it cannot place (a compound SELECT, a WITH, a WINDOW
/// clause) is reported as such, and the planner then falls back or refuses.
public struct SelectShape: Sendable {
    public struct OrderTerm: Sendable {
        /// The expression, without its direction.
        public var expression: [Token]
        /// ASC/DESC, NULLS FIRST/LAST (and a COLLATE only when written after the expression's end).
        public var suffix: [Token]
    }

    public var distinct = false
    public var items: [[Token]] = []
    public var from: [Token] = []
    public var whereClause: [Token]?
    public var groupBy: [[Token]]?
    public var having: [Token]?
    public var orderBy: [OrderTerm] = []
    public var limit: [Token]?
    public var offset: [Token]?

    /// Parses `tokens` when they are one plain SELECT (no WITH, no UNION/INTERSECT/EXCEPT, no WINDOW
    /// clause, no VALUES); nil otherwise.
    public static func parse(_ tokens: [Token]) -> SelectShape? {
        var tokens = tokens
        while tokens.last?.isSymbol(";") == true { tokens.removeLast() }
        guard tokens.first?.isWord("SELECT") == true else { return nil }
        // Cut at depth 0 into clauses by their leading keywords.
        var clauses: [(keyword: String, tokens: [Token])] = [("SELECT", [])]
        var depth = 0
        var i = 1
        while i < tokens.count {
            let t = tokens[i]
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1; if depth < 0 { return nil } }
            if depth == 0 && t.kind == .word {
                let upper = t.value.uppercased()
                switch upper {
                case "UNION", "INTERSECT", "EXCEPT", "WINDOW", "SELECT", "VALUES", "WITH":
                    return nil
                case "FROM", "WHERE", "HAVING", "LIMIT", "OFFSET":
                    clauses.append((upper, []))
                    i += 1
                    continue
                case "GROUP", "ORDER":
                    guard i + 1 < tokens.count, tokens[i + 1].isWord("BY") else { return nil }
                    clauses.append((upper, []))
                    i += 2
                    continue
                default:
                    break
                }
            }
            if t.isSymbol(";") { return nil }
            clauses[clauses.count - 1].tokens.append(t)
            i += 1
        }
        guard depth == 0 else { return nil }
        var shape = SelectShape()
        var seen: Set<String> = []
        for (keyword, body) in clauses {
            // Each clause at most once, in SQL's order.
            guard !seen.contains(keyword), !body.isEmpty else { return nil }
            seen.insert(keyword)
            switch keyword {
            case "SELECT":
                var list = body
                if list.first?.isWord("DISTINCT") == true { shape.distinct = true; list.removeFirst() }
                else if list.first?.isWord("ALL") == true { list.removeFirst() }
                shape.items = splitTopLevel(list)
                guard shape.items.allSatisfy({ !$0.isEmpty }) else { return nil }
            case "FROM": shape.from = body
            case "WHERE": shape.whereClause = body
            case "GROUP":
                shape.groupBy = splitTopLevel(body)
                guard shape.groupBy!.allSatisfy({ !$0.isEmpty }) else { return nil }
            case "HAVING": shape.having = body
            case "ORDER":
                for term in splitTopLevel(body) {
                    guard let t = orderTerm(term) else { return nil }
                    shape.orderBy.append(t)
                }
            case "LIMIT":
                // LIMIT a, b means OFFSET a LIMIT b.
                let parts = splitTopLevel(body)
                guard parts.allSatisfy({ !$0.isEmpty }) else { return nil }
                if parts.count == 2 { shape.offset = parts[0]; shape.limit = parts[1] }
                else if parts.count == 1 { shape.limit = parts[0] }
                else { return nil }
            case "OFFSET":
                guard shape.offset == nil, shape.limit != nil else { return nil }
                shape.offset = body
            default:
                return nil
            }
        }
        // The clauses must have come in SQL's order (GROUP after WHERE, LIMIT last, ...).
        let order = ["SELECT", "FROM", "WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "OFFSET"]
        let positions = clauses.map { order.firstIndex(of: $0.keyword)! }
        guard positions == positions.sorted(), !shape.from.isEmpty else { return nil }
        return shape
    }

    /// Splits at commas outside parentheses.
    public static func splitTopLevel(_ tokens: [Token]) -> [[Token]] {
        var parts: [[Token]] = [[]]
        var depth = 0
        for t in tokens {
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1 }
            if depth == 0 && t.isSymbol(",") { parts.append([]); continue }
            parts[parts.count - 1].append(t)
        }
        return parts
    }

    private static func orderTerm(_ tokens: [Token]) -> OrderTerm? {
        var end = tokens.count
        // Peel NULLS FIRST|LAST, then ASC|DESC, from the end.
        if end >= 2 && tokens[end - 2].isWord("NULLS") && (tokens[end - 1].isWord("FIRST") || tokens[end - 1].isWord("LAST")) { end -= 2 }
        if end >= 1 && (tokens[end - 1].isWord("ASC") || tokens[end - 1].isWord("DESC")) { end -= 1 }
        guard end > 0 else { return nil }
        return OrderTerm(expression: Array(tokens[..<end]), suffix: Array(tokens[end...]))
    }
}
