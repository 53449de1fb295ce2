import CairnSQLite

/// The two-stage plan for a SELECT over one sharded table, or a join whose every row is made on one
/// shard (Citus's `multi_logical_optimizer` rules): each shard runs a worker query that
/// pre-aggregates, sorts or limits its own rows, and a combine query over the partial rows gives the
/// answer one SQLite holding every row would give.
///
/// Shapes handled: plain projections (with `*`, DISTINCT, ORDER BY, LIMIT/OFFSET pushed down as
/// `LIMIT limit + offset`), and aggregates COUNT, SUM, TOTAL, MIN, MAX, AVG with GROUP BY, HAVING,
/// ORDER BY and LIMIT over them. Anything else (DISTINCT aggregates, other aggregates, window
/// functions, subqueries, columns outside aggregates and GROUP BY) returns nil, and the planner
/// gathers the matching rows instead.
struct PartialAggregation {
    let shape: SelectShape
    /// Lowercased names of every column of the tables the statement reads.
    let columns: Set<String>
    let analysis: StatementAnalysis

    struct Plan {
        var worker: [Token]
        var combine: [Token]
    }

    func plan() -> Plan? {
        let everything = shape.items.flatMap { $0 } + (shape.whereClause ?? []) + (shape.groupBy ?? []).flatMap { $0 }
            + (shape.having ?? []) + shape.orderBy.flatMap { $0.expression + $0.suffix } + (shape.limit ?? []) + (shape.offset ?? [])
            + shape.from
        // A subquery would see one shard's rows; a window or FILTER needs every row at once. A function
        // called by a quoted name ("count"(*)) may be an aggregate this plan would not recognise.
        if everything.contains(where: { $0.isWord("SELECT") || $0.isWord("OVER") || $0.isWord("FILTER") }) { return nil }
        if zip(everything, everything.dropFirst()).contains(where: { $0.kind == .quotedName && $1.isSymbol("(") }) { return nil }
        let aggregated = shape.groupBy != nil || shape.having != nil
            || (shape.items.flatMap { $0 } + shape.orderBy.flatMap { $0.expression }).enumerated().contains { i, t in
                t.kind == .word && Keywords.aggregates.contains(t.value.lowercased())
            }
        return aggregated ? aggregatePlan() : projectionPlan()
    }

    // MARK: Plain projections

    private func projectionPlan() -> Plan? {
        let k = analysis.columns.count
        var hidden: [[Token]] = []
        var combineOrder: [[Token]] = []
        for term in shape.orderBy {
            var core = term.expression
            var collate: [Token] = []
            if core.count >= 3, core[core.count - 2].isWord("COLLATE") {
                collate = Array(core.suffix(2))
                core.removeLast(2)
            }
            let column: Int
            if let position = outputPosition(core) {
                column = position
            } else {
                // ORDER BY an expression the answer does not show: each shard sends it along, hidden.
                if shape.distinct { return nil }
                column = k + hidden.count
                hidden.append(core)
            }
            combineOrder.append([word("c\(column)")] + collate + term.suffix)
        }
        var worker = [word("SELECT")] + (shape.distinct ? [word("DISTINCT")] : [])
        worker += joined(shape.items + hidden)
        worker += [word("FROM")] + shape.from
        if let w = shape.whereClause { worker += [word("WHERE")] + w }
        if let limit = shape.limit {
            if !shape.orderBy.isEmpty { worker += [word("ORDER"), word("BY")] + joined(shape.orderBy.map { $0.expression + $0.suffix }) }
            worker += [word("LIMIT")] + pushedLimit(limit)
        }
        var combine = [word("SELECT")] + (shape.distinct ? [word("DISTINCT")] : [])
        combine += joined((0..<k).map { [word("c\($0)"), word("AS"), quoted(analysis.columns[$0])] })
        combine += [word("FROM"), word("partial")]
        combine += tail(order: combineOrder)
        return Plan(worker: worker, combine: combine)
    }

    /// The answer's column an ORDER BY term names: a position (`ORDER BY 2`) or an output name.
    private func outputPosition(_ core: [Token]) -> Int? {
        guard core.count == 1 else { return nil }
        if core[0].kind == .number, let n = Int(core[0].text), n >= 1, n <= analysis.columns.count { return n - 1 }
        if let name = core[0].name { return analysis.columns.firstIndex { $0.lowercased() == name } }
        return nil
    }

    /// Each shard sends `limit + offset` rows (all of them for a negative limit, which means none).
    private func pushedLimit(_ limit: [Token]) -> [Token] {
        guard let offset = shape.offset else { return paren(limit) }
        return [word("CASE"), word("WHEN")] + paren(limit) + [symbol("<"), Token(kind: .number, text: "0", value: "0"), word("THEN"),
                symbol("-"), Token(kind: .number, text: "1", value: "1"), word("ELSE")] + paren(limit) + [symbol("+"), word("MAX"), symbol("(")]
            + paren(offset) + [symbol(","), Token(kind: .number, text: "0", value: "0"), symbol(")"), word("END")]
    }

    // MARK: Aggregates

    /// One column of the worker's answer: a GROUP BY expression or a partial aggregate.
    private struct Partial: Equatable {
        var expression: [Token]
    }

    private func aggregatePlan() -> Plan? {
        if shape.items.contains(where: { item in item.contains { $0.isSymbol("*") } && !item.contains { $0.isSymbol("(") } }) { return nil }
        let items = shape.items.map(stripAlias)
        // GROUP BY terms, with positions and aliases resolved to the expressions they stand for.
        var groups: [[Token]] = []
        for term in shape.groupBy ?? [] {
            var expression = term
            if term.count == 1, term[0].kind == .number, let n = Int(term[0].text), n >= 1, n <= items.count {
                expression = items[n - 1]
            } else if term.count == 1, let name = term[0].name, !columns.contains(name),
                      let i = shape.items.firstIndex(where: { alias(of: $0)?.lowercased() == name }) {
                expression = items[i]
            }
            // The combine step compares group values without the expression's collation.
            if expression.contains(where: { $0.isWord("COLLATE") }) { return nil }
            groups.append(expression)
        }
        var partials: [Partial] = groups.map(Partial.init)
        var combineItems: [[Token]] = []
        for (i, item) in items.enumerated() {
            guard let rewritten = rewrite(item, groups: groups, partials: &partials) else { return nil }
            combineItems.append(rewritten + [word("AS"), quoted(analysis.columns[i])])
        }
        var having: [Token]?
        if let h = shape.having {
            guard let rewritten = rewrite(h, groups: groups, partials: &partials) else { return nil }
            having = rewritten
        }
        var order: [[Token]] = []
        let aliases = Set(shape.items.compactMap { alias(of: $0)?.lowercased() })
        for term in shape.orderBy {
            let e = term.expression
            if e.count == 1, e[0].kind == .number {
                order.append(e + term.suffix)
            } else if e.count == 1, let name = e[0].name, aliases.contains(name) || analysis.columns.contains(where: { $0.lowercased() == name }) && !columns.contains(name) {
                order.append([quoted(e[0].value)] + term.suffix)
            } else {
                guard let rewritten = rewrite(e, groups: groups, partials: &partials) else { return nil }
                order.append(rewritten + term.suffix)
            }
        }
        guard !partials.isEmpty else { return nil }
        var worker = [word("SELECT")] + joined(partials.map { $0.expression }) + [word("FROM")] + shape.from
        if let w = shape.whereClause { worker += [word("WHERE")] + w }
        if !groups.isEmpty { worker += [word("GROUP"), word("BY")] + joined(groups) }
        var combine = [word("SELECT")] + (shape.distinct ? [word("DISTINCT")] : []) + joined(combineItems) + [word("FROM"), word("partial")]
        if !groups.isEmpty { combine += [word("GROUP"), word("BY")] + joined(groups.indices.map { [word("c\($0)")] }) }
        if let having { combine += [word("HAVING")] + having }
        combine += tail(order: order)
        return Plan(worker: worker, combine: combine)
    }

    /// `expression` over the partial table: aggregates become their combining aggregates over partial
    /// columns (added to `partials`), GROUP BY expressions become their columns. Nil if anything else
    /// names a column (its value is not in the partial rows).
    private func rewrite(_ e: [Token], groups: [[Token]], partials: inout [Partial]) -> [Token]? {
        var out: [Token] = []
        var i = 0
        func column(_ expression: [Token]) -> Token {
            if let at = partials.firstIndex(of: Partial(expression: expression)) { return word("c\(at)") }
            partials.append(Partial(expression: expression))
            return word("c\(partials.count - 1)")
        }
        while i < e.count {
            let t = e[i]
            if t.kind == .word, i + 1 < e.count, e[i + 1].isSymbol("("), Keywords.aggregates.contains(t.value.lowercased()) {
                guard let close = closing(e, from: i + 1) else { return nil }
                let args = Array(e[(i + 2)..<close])
                let fn = t.value.lowercased()
                let argCount = SelectShape.splitTopLevel(args).count
                if (fn == "min" || fn == "max") && argCount > 1 {
                    // The scalar min/max of several values: an ordinary function.
                    out.append(t)
                    i += 1
                    continue
                }
                if args.first?.isWord("DISTINCT") == true || args.first?.isWord("ALL") == true || argCount != 1 { return nil }
                let call = Array(e[i...close])
                switch fn {
                case "count":
                    out += [word("COALESCE"), symbol("("), word("SUM"), symbol("("), column(call), symbol(")"), symbol(","),
                            Token(kind: .number, text: "0", value: "0"), symbol(")")]
                case "sum": out += [word("SUM"), symbol("("), column(call), symbol(")")]
                case "total": out += [word("TOTAL"), symbol("("), column(call), symbol(")")]
                case "min": out += [word("MIN"), symbol("("), column(call), symbol(")")]
                case "max": out += [word("MAX"), symbol("("), column(call), symbol(")")]
                case "avg":
                    // TOTAL, as AVG itself: a shard's SUM of large integers could overflow where AVG does not.
                    let sum = column([word("TOTAL"), symbol("(")] + args + [symbol(")")])
                    let count = column([word("COUNT"), symbol("(")] + args + [symbol(")")])
                    out += [symbol("("), word("CASE"), word("WHEN"), word("SUM"), symbol("("), count, symbol(")"), symbol(">"),
                            Token(kind: .number, text: "0", value: "0"), word("THEN"), word("TOTAL"), symbol("("), sum, symbol(")"),
                            symbol("/"), word("SUM"), symbol("("), count, symbol(")"), word("END"), symbol(")")]
                default: return nil
                }
                i = close + 1
                continue
            }
            if let (g, length) = groupMatch(e, at: i, groups: groups) {
                out.append(word("c\(g)"))
                i += length
                continue
            }
            switch t.kind {
            case .quotedName:
                return nil
            case .word:
                let upper = t.value.uppercased()
                if i + 1 < e.count, e[i + 1].isSymbol("(") {
                    out.append(t)
                } else if columns.contains(t.value.lowercased()) || !Keywords.expression.contains(upper) {
                    return nil
                } else if upper == "COLLATE" || upper == "AS" {
                    // A collation's name, or CAST's type name: words that name no column.
                    out.append(t)
                    i += 1
                    while i < e.count, e[i].kind == .word || e[i].kind == .quotedName {
                        out.append(e[i])
                        i += 1
                        if upper == "COLLATE" { break }
                    }
                    continue
                } else {
                    out.append(t)
                }
            default:
                out.append(t)
            }
            i += 1
        }
        return out
    }

    /// The longest GROUP BY expression that `e` spells at `i` (names compared without case).
    private func groupMatch(_ e: [Token], at i: Int, groups: [[Token]]) -> (Int, Int)? {
        var best: (Int, Int)?
        for (g, expression) in groups.enumerated() where expression.count <= e.count - i && expression.count > (best?.1 ?? 0) {
            if zip(expression, e[i...]).allSatisfy({ same($0, $1) }) { best = (g, expression.count) }
        }
        return best
    }

    private func same(_ a: Token, _ b: Token) -> Bool {
        if let x = a.name, let y = b.name { return x == y }
        return a.kind == b.kind && a.text == b.text
    }

    private func closing(_ e: [Token], from open: Int) -> Int? {
        var depth = 0
        for j in open..<e.count {
            if e[j].isSymbol("(") { depth += 1 }
            if e[j].isSymbol(")") { depth -= 1; if depth == 0 { return j } }
        }
        return nil
    }

    /// The alias an item gives its column (`expr AS name` or `expr name`), if any.
    private func alias(of item: [Token]) -> String? {
        guard item.count >= 2, let last = item.last, last.kind == .word || last.kind == .quotedName || last.kind == .string else { return nil }
        let before = item[item.count - 2]
        if before.isWord("AS") { return last.value }
        guard last.kind != .string, last.kind == .quotedName || !Keywords.expression.contains(last.value.uppercased()) else { return nil }
        if before.isWord("COLLATE") || before.isSymbol(".") { return nil }
        if before.kind == .symbol && !before.isSymbol(")") { return nil }
        if before.kind == .word && (Keywords.expression.contains(before.value.uppercased())) { return nil }
        return last.value
    }

    private func stripAlias(_ item: [Token]) -> [Token] {
        guard alias(of: item) != nil else { return item }
        return Array(item.dropLast(item[item.count - 2].isWord("AS") ? 2 : 1))
    }

    // MARK: Pieces

    /// ORDER BY, LIMIT and OFFSET of the combine query.
    private func tail(order: [[Token]]) -> [Token] {
        var out: [Token] = []
        if !order.isEmpty { out += [word("ORDER"), word("BY")] + joined(order) }
        if let limit = shape.limit {
            out += [word("LIMIT")] + limit
            if let offset = shape.offset { out += [word("OFFSET")] + offset }
        }
        return out
    }

    private func joined(_ parts: [[Token]]) -> [Token] {
        var out: [Token] = []
        for (i, p) in parts.enumerated() {
            if i > 0 { out.append(symbol(",")) }
            out += p
        }
        return out
    }

    private func paren(_ e: [Token]) -> [Token] { [symbol("(")] + e + [symbol(")")] }
    private func word(_ w: String) -> Token { Token(kind: .word, text: w, value: w) }
    private func symbol(_ s: String) -> Token { Token(kind: .symbol, text: s, value: s) }
    private func quoted(_ name: String) -> Token { Token(kind: .quotedName, text: SQLLexer.quote(name), value: name) }
}
