import CairnSQLite
import Foundation

/// Plans a read over a database's shards. Pure: the statement, what SQLite found in it
/// (`StatementAnalysis`, from the router's schema copy), the sharded tables and the shard map in; a
/// plan out. A shape it cannot answer exactly is refused with the reason, never answered wrongly.
public struct ReadPlanner: Sendable {
    public let schema: ShardingSchema
    public let map: ShardMap
    /// Shapes of the SELECT texts planned lately.
    private static let shapes = TextMemo<SelectShape?>()
    /// A pin on a multi-column key expands to at most this many key combinations.
    static let maxPinnedKeys = 1024

    public init(schema: ShardingSchema, map: ShardMap) {
        self.schema = schema
        self.map = map
    }

    public func plan(_ statement: SQLStatement, analysis: StatementAnalysis) throws -> ReadPlan {
        try plan(statement, prepared: Self.prepare(statement.sql, analysis: analysis, schema: schema))
    }

    /// What planning learns from a statement's text and the schema alone: everything but its
    /// parameters' values and the shard map. The router keeps it per text beside the statement's
    /// analysis, so that planning a point read it has seen is resolving its key and hashing it.
    /// Throws what planning throws for the text, whatever its values.
    public static func prepare(_ sql: String, analysis: StatementAnalysis, schema: ShardingSchema) throws -> PreparedRead {
        let touched = analysis.tablesRead.union(analysis.tablesWritten)
        let sharded = touched.filter { schema.sharded[$0] != nil }.sorted()
        guard analysis.readOnly || (sharded.isEmpty && touched.isDisjoint(with: schema.reference)) else {
            throw PlanRefusal("this statement writes; only reads are planned here")
        }
        if sharded.isEmpty {
            let references = touched.intersection(schema.reference)
            if references.isEmpty { return PreparedRead(.home) }
            let unsharded = touched.subtracting(schema.reference)
            guard unsharded.isEmpty else {
                throw PlanRefusal("\(references.sorted().joined(separator: ", ")) is a reference table and \(unsharded.sorted().joined(separator: ", ")) is not: "
                                  + "reference tables are kept on the shards, unsharded tables in the home group, and a query reads one or the other")
            }
            // Every shard holds the same copy: any one answers.
            return PreparedRead(.anyShard)
        }
        let (slots, tokens) = ParameterSlots.renaming(try SQLLexer.rememberedTokens(sql))
        let tables = sharded.compactMap { schema.sharded[$0] }
        let others = touched.subtracting(sharded)
        let unsharded = others.subtracting(schema.reference)
        guard unsharded.isEmpty else {
            throw PlanRefusal("\(sharded.joined(separator: " and ")) \(sharded.count == 1 ? "is" : "are") sharded and \(unsharded.sorted().joined(separator: ", ")) is not: "
                              + "a query over sharded tables may read only reference tables besides them")
        }
        // The renamed tokens, and so the shape, are the text's alone (parameter values are apart).
        let shape = shapes.value(sql) { _ in SelectShape.parse(tokens) }
        // A subquery reads its tables on its own terms (`k = 5 AND n > (SELECT avg(n) FROM t)` needs
        // every shard's rows for the average): only a statement with no other SELECT is pinned by its
        // WHERE or split into per-shard parts.
        let oneSelect = tokens.filter { $0.isWord("SELECT") }.count == 1
        var one: PreparedRead.OneTable?
        if tables.count == 1 {
            let table = tables[0]
            let qualifier = shape.flatMap { Self.qualifier(of: $0.from, table: table) }
            // Joined with reference tables, the sharded table is still pinned by its key in WHERE (unless
            // another table goes by its name: then `t.k` may be that one's column).
            let joined = qualifier ?? shape.flatMap { Self.uniquelyNamed($0.from) ? Self.joinQualifier(of: $0.from, table: table) : nil }
            var pinTerms: [[Term]]?
            if let joined, let w = shape?.whereClause, oneSelect { pinTerms = Self.pinTerms(w, table: table, qualifier: joined) }
            one = .init(table: table, qualifier: qualifier, joined: joined, pinTerms: pinTerms)
        }
        return PreparedRead(.query(.init(analysis: analysis, slots: slots, shape: shape, oneSelect: oneSelect,
                                         references: others.sorted().compactMap { schema.referenceTables[$0] }, tables: tables, one: one)))
    }

    /// Plans `statement` from what `prepare` learnt from its text against this planner's schema.
    public func plan(_ statement: SQLStatement, prepared: PreparedRead) throws -> ReadPlan {
        switch prepared.outcome {
        case .home:
            return .home
        case .anyShard:
            return .single(shard: 0)
        case .query(let text):
            if let shard = pointShard(statement, text) { return .single(shard: shard) }
            return try plan(statement, text)
        }
    }

    /// A point read's shard (every column of the key set to one value), without building the query
    /// `planOne` looks at; nil for any other statement. `planOne` pins it alike: to the key's shard,
    /// or to shard 0 when a key column is NULL (no row matches; any shard answers exactly).
    func pointShard(_ statement: SQLStatement, _ text: PreparedRead.Text) -> Int? {
        guard let one = text.one, let terms = one.pinTerms, terms.allSatisfy({ $0.count == 1 }) else { return nil }
        return one.table.shard(ofSent: terms.map { text.slots.value(of: $0[0], in: statement) }, in: map) ?? 0
    }

    /// `plan` without the point read's shortcut.
    func plan(_ statement: SQLStatement, _ text: PreparedRead.Text) throws -> ReadPlan {
        let q = Query(statement: statement, analysis: text.analysis, parameters: Parameters(text.slots, of: statement), shape: text.shape,
                      oneSelect: text.oneSelect, references: text.references)
        if let one = text.one { return try planOne(one, q) }
        return try planJoin(text.tables, q)
    }

    /// What every plan of one statement looks at.
    private struct Query {
        var statement: SQLStatement
        var analysis: StatementAnalysis
        var parameters: Parameters
        var shape: SelectShape?
        var oneSelect: Bool
        /// The reference tables it reads.
        var references: [ShardedTable]
    }

    /// A statement over one sharded table (and perhaps reference tables): to its shard when its key is
    /// pinned; else split into per-shard parts and combined when its shape allows, else its rows gathered.
    private func planOne(_ one: PreparedRead.OneTable, _ q: Query) throws -> ReadPlan {
        let (table, qualifier, joined) = (one.table, one.qualifier, one.joined)
        var shards = Array(0..<map.count)
        if let shape = q.shape, let joined, let w = shape.whereClause, q.oneSelect,
           let pinned = one.pinTerms.map({ pins($0, table: table, parameters: q.parameters) })
                ?? rangePins(w, table: table, qualifier: joined, parameters: q.parameters) {
            // No key can match (an empty IN list, `= NULL`): any one shard gives the empty answer exactly.
            shards = pinned.isEmpty ? [0] : pinned
        }
        if shards.count == 1 { return .single(shard: shards[0]) }
        // Every row of the answer is made on one shard when the table is in every row (first in FROM,
        // or inner-joined) with reference tables, which every shard holds whole.
        if let shape = q.shape, q.oneSelect, let joined, q.references.isEmpty ? qualifier != nil : Self.inEveryRow(joined, table: table.name, shape.from),
           let plan = pushedDown(shape, tables: [table], shards: shards, q) {
            return plan
        }
        if q.references.isEmpty, let shape = q.shape, qualifier != nil, let w = shape.whereClause, q.oneSelect {
            // Only the rows WHERE keeps.
            let columns = table.storedColumns.map(SQLLexer.quote).joined(separator: ", ")
            let worker = try SQLLexer.tokens("SELECT 0, \(columns) FROM") + shape.from + [Token(kind: .word, text: "WHERE", value: "WHERE")] + w
            return .scatter(.init(shards: shards, worker: q.parameters.statement(worker), combine: .rows(tables: [table], statement: q.statement),
                                  columns: q.analysis.columns, types: q.analysis.types))
        }
        return gathered([table], shards: shards, q)
    }

    /// A join of sharded tables, placed alike, whose rows meet on one shard: their keys equated column
    /// by column (in WHERE or an inner join's ON, directly or through one another), or a LEFT JOIN's
    /// optional side attached by its ON to such a table. Pinned by one table's key in WHERE, it runs
    /// unchanged on that shard (Citus's co-located joins); otherwise every shard joins its own rows and
    /// the parts are combined, or (for shapes that cannot be split) the tables' rows are gathered.
    /// Joins that would pair rows of different shards are refused.
    private func planJoin(_ tables: [ShardedTable], _ q: Query) throws -> ReadPlan {
        let names = tables.map(\.name).joined(separator: " and ")
        func refuse(_ why: String) -> PlanRefusal {
            PlanRefusal("\(names) are sharded: \(why). A query may join sharded tables placed alike on their whole shard keys "
                        + "(a.key = b.key, in every row of the answer); pairing rows of different shards is not supported")
        }
        let first = tables[0]
        guard tables.allSatisfy({ $0.keyAffinities == first.keyAffinities && $0.rangeSplits == first.rangeSplits }) else {
            throw refuse("their keys are placed differently (other key types, or other split points)")
        }
        guard let shape = q.shape else { throw refuse("the statement is not one SELECT joining them (a WITH, a compound SELECT, ...)") }
        guard Self.uniquelyNamed(shape.from) else { throw refuse("two tables of the FROM clause go by one name") }
        var qualifiers: [String: ShardedTable] = [:]
        for t in tables {
            guard let name = Self.joinQualifier(of: shape.from, table: t) else { throw refuse("\(t.name) is named more than once, or not as a table of the FROM clause") }
            qualifiers[name] = t
        }
        let w = shape.whereClause ?? []
        // Which key columns are equal in every row of the answer, as (key position, qualifier) classes:
        // WHERE's equalities and inner joins' ON. An outer join's ON holds only where it matched.
        var parent: [String: String] = [:]
        func find(_ x: String) -> String {
            var x = x
            while let p = parent[x], p != x { x = p }
            return x
        }
        func keyPosition(_ ts: ArraySlice<Token>) -> String? {
            let t = Array(ts)
            guard t.count == 3, let name = t[0].name, t[1].isSymbol("."), let column = t[2].name, let table = qualifiers[name],
                  let k = table.keyColumns.firstIndex(of: column) else { return nil }
            return "\(k)|\(name)"
        }
        func keyEqualities(_ conjuncts: [[Token]]) -> [(String, String)] {
            conjuncts.compactMap { c in
                var c = c
                while c.count >= 2 && c.first!.isSymbol("(") && c.last!.isSymbol(")") && Self.balanced(Array(c.dropFirst().dropLast())) {
                    c = Array(c.dropFirst().dropLast())
                }
                guard let eq = c.firstIndex(where: { $0.isSymbol("=") || $0.isSymbol("==") }), let l = keyPosition(c[..<eq]), let r = keyPosition(c[(eq + 1)...]),
                      l.prefix(while: { $0 != "|" }) == r.prefix(while: { $0 != "|" }) else { return nil }
                return (l, r)
            }
        }
        let joins = Self.joinClauses(shape.from)
        for (l, r) in keyEqualities(Self.conjuncts(w) + joins.filter { $0.kind == .inner }.flatMap { Self.conjuncts($0.on) }) {
            parent[find(l)] = find(r)
        }
        let keyCount = first.keyColumns.count
        /// The tables whose rows in the answer all lie on the shard of `start`'s row: equated with it in
        /// every row, or the optional side of a LEFT JOIN whose ON equates it with one of them.
        func meeting(_ start: String) -> Set<String> {
            var onShard: Set<String> = [start]
            var grew = true
            while grew {
                grew = false
                for name in qualifiers.keys where !onShard.contains(name) {
                    let linked = (0..<keyCount).allSatisfy { k in onShard.contains { find("\(k)|\($0)") == find("\(k)|\(name)") } }
                    let attached = joins.contains { j in
                        j.kind == .left && j.qualifier == name && (0..<keyCount).allSatisfy { k in
                            keyEqualities(Self.conjuncts(j.on)).contains { e in
                                (e.0 == "\(k)|\(name)" && onShard.contains(String(e.1.drop(while: { $0 != "|" }).dropFirst())))
                                    || (e.1 == "\(k)|\(name)" && onShard.contains(String(e.0.drop(while: { $0 != "|" }).dropFirst())))
                            }
                        }
                    }
                    if linked || attached { onShard.insert(name); grew = true }
                }
            }
            return onShard
        }
        func apart(from start: String) -> String? { qualifiers.keys.sorted().first { !meeting(start).contains($0) } }
        var shards = Array(0..<map.count)
        var anchor = qualifiers.keys.sorted()[0]
        if q.oneSelect, !w.isEmpty,
           let (name, pinned) = qualifiers.sorted(by: { $0.key < $1.key }).lazy.compactMap({ name, t in self.pins(w, table: t, qualifier: name, parameters: q.parameters).map { (name, $0) } }).first {
            anchor = name
            if apart(from: name) == nil {
                if pinned.count <= 1 { return .single(shard: pinned.first ?? 0) }
                shards = pinned
            }
        }
        // Each shard joins its own rows when one sharded table is in every row (first in FROM, or
        // inner-joined; no RIGHT or FULL join) and every other one meets it on its shard.
        if q.oneSelect, qualifiers.keys.sorted().contains(where: { Self.inEveryRow($0, table: qualifiers[$0]!.name, shape.from) && apart(from: $0) == nil }),
           let plan = pushedDown(shape, tables: tables, shards: shards, q) {
            return plan
        }
        guard qualifiers.keys.contains(where: { apart(from: $0) == nil }) else {
            throw refuse("\(qualifiers[apart(from: anchor)!]!.name)'s key is not equated with \(qualifiers[anchor]!.name)'s in every row")
        }
        return gathered(tables, shards: Array(0..<map.count), q)
    }

    /// Whether the tables of a FROM clause (at its top level) go by names of their own.
    static func uniquelyNamed(_ from: [Token]) -> Bool {
        let names = joinClauses(from).compactMap(\.qualifier)
        return Set(names).count == names.count
    }

    /// Whether every row of a FROM clause holds a row of the table it calls `name`: the table comes
    /// first or by an inner join, and no RIGHT, FULL or NATURAL join follows it.
    static func inEveryRow(_ name: String, table: String, _ from: [Token]) -> Bool {
        let joins = joinClauses(from)
        let named = joins.filter { $0.qualifier == name }
        // The name must be the table's alone (SQLite lets another table take it as its alias).
        return !joins.contains { $0.kind == .other } && named.count == 1 && named[0].table == table && named[0].kind == .inner
    }

    /// The two-stage plan (per-shard parts, combined), when every row of the answer is made on one
    /// shard; nil for a shape it does not split (then the rows are gathered).
    private func pushedDown(_ shape: SelectShape, tables: [ShardedTable], shards: [Int], _ q: Query) -> ReadPlan? {
        let all = tables + q.references
        guard !all.contains(where: \.hasCollatedColumns) else { return nil }
        let columns = all.reduce(into: Set<String>()) { $0.formUnion($1.allColumns) }
        guard let partial = PartialAggregation(shape: shape, columns: columns, analysis: q.analysis).plan() else { return nil }
        return .scatter(.init(shards: shards, worker: q.parameters.statement(partial.worker), combine: .partial(q.parameters.statement(partial.combine)),
                              columns: q.analysis.columns, types: q.analysis.types))
    }

    /// Exact for any shape: every shard sends the sharded tables' rows, one shard the reference
    /// tables', and the statement runs over copies of the tables holding them.
    private func gathered(_ tables: [ShardedTable], shards: [Int], _ q: Query) -> ReadPlan {
        let all = tables + q.references
        let width = all.map(\.storedColumns.count).max() ?? 0
        func select(_ tag: Int, _ t: ShardedTable) -> String {
            let columns = t.storedColumns.map(SQLLexer.quote) + Array(repeating: "NULL", count: width - t.storedColumns.count)
            return "SELECT \(tag), \(columns.joined(separator: ", ")) FROM \(SQLLexer.quote(t.name))"
        }
        let worker = tables.enumerated().map { select($0, $1) }.joined(separator: " UNION ALL ")
        let references = q.references.enumerated().map { select(tables.count + $0, $1) }.joined(separator: " UNION ALL ")
        return .scatter(.init(shards: shards, worker: SQLStatement(worker), referenceWorker: references.isEmpty ? nil : SQLStatement(references),
                              combine: .rows(tables: all, statement: q.statement), columns: q.analysis.columns, types: q.analysis.types))
    }

    /// One table of a FROM clause and how it is joined to the tables before it.
    struct JoinClause {
        enum Kind: Equatable {
            /// The first table, a comma, [INNER | CROSS] JOIN: its ON holds in every row.
            case inner
            /// LEFT [OUTER] JOIN: its ON holds where the table matched.
            case left
            /// RIGHT, FULL or NATURAL joins: their conditions are not used.
            case other
        }
        var kind: Kind
        /// The name the table goes by (its alias or its own name); nil for a subquery.
        var qualifier: String?
        /// The table's own name (lowercased); nil for a subquery.
        var table: String?
        var on: [Token]
    }

    /// The tables of a FROM clause (at its top level), each with its join's kind and ON clause.
    static func joinClauses(_ from: [Token]) -> [JoinClause] {
        var segments: [(words: [Token], body: [Token])] = [([], [])]
        var depth = 0
        var pending: [Token] = []
        for t in from {
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1 }
            if depth == 0 && (t.isWord("JOIN") || t.isSymbol(",")) {
                segments.append((pending + [t], []))
                pending = []
                continue
            }
            if depth == 0 && ["LEFT", "RIGHT", "FULL", "INNER", "OUTER", "CROSS", "NATURAL"].contains(where: { t.isWord($0) }) {
                pending.append(t)
                continue
            }
            segments[segments.count - 1].body += pending + [t]
            pending = []
        }
        return segments.map { segment in
            let words = segment.words
            let kind: JoinClause.Kind
            if words.contains(where: { $0.isWord("RIGHT") || $0.isWord("FULL") || $0.isWord("NATURAL") }) {
                kind = .other
            } else if words.contains(where: { $0.isWord("LEFT") }) {
                kind = .left
            } else {
                kind = .inner
            }
            let body = segment.body
            let onAt = body.firstIndex { $0.isWord("ON") }
            let table = Array(body[..<(onAt ?? body.endIndex)])
            var qualifier = table.first?.kind == .word || table.first?.kind == .quotedName ? table.first?.name : nil
            if table.count >= 3, table[1].isWord("AS") { qualifier = table[2].name }
            else if table.count == 2, table[1].kind == .word || table[1].kind == .quotedName { qualifier = table[1].name }
            let name = table.first?.kind == .word || table.first?.kind == .quotedName ? table.first?.name : nil
            return JoinClause(kind: kind, qualifier: qualifier, table: name, on: onAt.map { Array(body[($0 + 1)...]) } ?? [])
        }
    }

    /// The name the FROM clause gives `table` (its alias, or its own name) when the FROM clause is that
    /// table alone; nil otherwise (a join, a subquery, another table).
    static func qualifier(of from: [Token], table: ShardedTable) -> String? {
        guard let first = from.first, first.name == table.name else { return nil }
        switch from.count {
        case 1: return table.name
        case 2 where from[1].kind == .quotedName || from[1].kind == .word && !Keywords.reserved.contains(from[1].value.uppercased()):
            return from[1].name
        case 3 where from[1].isWord("AS") && (from[2].kind == .word || from[2].kind == .quotedName):
            return from[2].name
        default: return nil
        }
    }

    /// The name `table` goes by in a FROM clause that joins it, once, with other tables: its alias, or
    /// its own name. Nil when it is named more than once (a self-join: a pin on one side is no pin on
    /// the other) or not as a table.
    static func joinQualifier(of from: [Token], table: ShardedTable) -> String? {
        var found: [String] = []
        var depth = 0
        var nested = false
        for (i, t) in from.enumerated() {
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1 }
            guard t.name == table.name.lowercased() else { continue }
            // A table stands first, after a comma, JOIN, FROM or an opening parenthesis (`(t)`, a nested
            // join); `t.col` in an ON clause is a column.
            guard i == 0 || from[i - 1].isSymbol(",") || from[i - 1].isWord("JOIN") || from[i - 1].isWord("FROM") || from[i - 1].isSymbol("(") else { continue }
            if i + 1 < from.count && from[i + 1].isSymbol(".") { continue }
            // Inside parentheses: named once more (a self-join), or in a nested join or subquery this
            // planner does not look into.
            if depth > 0 { nested = true; continue }
            var alias = t.name!
            if i + 2 < from.count && from[i + 1].isWord("AS"), let a = from[i + 2].name {
                alias = a
            } else if i + 1 < from.count, from[i + 1].kind == .quotedName
                        || from[i + 1].kind == .word && !Keywords.reserved.contains(from[i + 1].value.uppercased()) {
                alias = from[i + 1].name!
            }
            found.append(alias)
        }
        return found.count == 1 && !nested ? found[0] : nil
    }

    /// The shards that can hold rows matching WHERE's top-level equalities on the whole shard key;
    /// nil when WHERE does not pin the key.
    func pins(_ whereClause: [Token], table: ShardedTable, qualifier: String, parameters: Parameters) -> [Int]? {
        guard let terms = Self.pinTerms(whereClause, table: table, qualifier: qualifier) else {
            return rangePins(whereClause, table: table, qualifier: qualifier, parameters: parameters)
        }
        return pins(terms, table: table, parameters: parameters)
    }

    /// For each column of `table`'s shard key, the literals and parameters WHERE's top-level
    /// equalities (`=`, `==`, `IN`) set it to: the text's part of `pins`. Nil unless every key column
    /// has one.
    static func pinTerms(_ whereClause: [Token], table: ShardedTable, qualifier: String) -> [[Term]]? {
        var candidates: [[Term]] = Array(repeating: [], count: table.keyColumns.count)
        var found = Array(repeating: false, count: table.keyColumns.count)
        for conjunct in Self.conjuncts(whereClause) {
            guard let (column, terms) = Self.equality(conjunct, table: table, qualifier: qualifier),
                  let k = table.keyColumns.firstIndex(of: column) else { continue }
            // Two conditions on one key column: keep the first (either is a correct superset).
            if found[k] { continue }
            found[k] = true
            candidates[k] = terms
        }
        return found.allSatisfy({ $0 }) ? candidates : nil
    }

    /// The shards holding the keys `pinTerms` found, with the statement's values; nil past
    /// `maxPinnedKeys` combinations.
    func pins(_ terms: [[Term]], table: ShardedTable, parameters: Parameters) -> [Int]? {
        // NULL equals nothing: such a key selects no row.
        let usable = terms.enumerated().map { k, column in
            column.map { table.keyAffinities[k].apply(parameters.value(of: $0), renderReal: RealText.render) }.filter { $0 != .null }
        }
        let combinations = usable.reduce(1) { $0 * $1.count }
        guard combinations <= Self.maxPinnedKeys else { return nil }
        if combinations == 1 { return [table.shard(of: usable.map { $0[0] }, in: map)] }
        var shards: Set<Int> = []
        var keys: [[SQLValue]] = [[]]
        for values in usable { keys = keys.flatMap { prefix in values.map { prefix + [$0] } } }
        if combinations == 0 { keys = [] }
        for key in keys { shards.insert(table.shard(of: key, in: map)) }
        return shards.sorted()
    }

    /// For a range-sharded table: the shards whose ranges can hold keys within WHERE's top-level bounds
    /// on the key (`k > v`, `k <= v`, `v < k`, `k BETWEEN a AND b`, ...); nil without a bound.
    func rangePins(_ whereClause: [Token], table: ShardedTable, qualifier: String, parameters: Parameters) -> [Int]? {
        guard let splits = table.rangeSplits, let key = table.keyColumns.first else { return nil }
        var lower: SQLValue?, upper: SQLValue?
        var upperStrict = false
        var bounded = false
        for conjunct in Self.conjuncts(whereClause) {
            guard let (column, low, high, strict) = Self.bounds(conjunct, table: table, qualifier: qualifier, parameters: parameters), column == key else { continue }
            // A comparison gives the literal NUMERIC affinity against a REAL column (not REAL: the
            // integer 2^53 + 1 stays an integer, compared exactly), and the column's own otherwise.
            let affinity = table.keyAffinities[0] == .real ? Affinity.numeric : table.keyAffinities[0]
            let stored = { (v: SQLValue) in affinity.apply(v, renderReal: RealText.render) }
            // Comparing with NULL is never true: no row matches.
            if low == .null || high == .null { return [] }
            // The tightest bound of each side (any one is a correct superset).
            if let l = low.map(stored), lower.map({ SQLiteOrder.compare(l, $0) > 0 }) ?? true { lower = l }
            if let h = high.map(stored) {
                let order = upper.map { SQLiteOrder.compare(h, $0) } ?? -1
                if order < 0 { upper = h; upperStrict = strict } else if order == 0 && strict { upperStrict = true }
            }
            bounded = true
        }
        guard bounded else { return nil }
        return Self.rangeShards(splits, from: lower, to: upper, upperStrict: upperStrict, map: map)
    }

    /// The shards whose ranges can hold keys from `lower` to `upper` (as the key column stores them).
    private static func rangeShards(_ splits: RangeSplits, from lower: SQLValue?, to upper: SQLValue?, upperStrict: Bool, map: ShardMap) -> [Int] {
        guard var ranges = splits.ranges(from: lower, to: upper) else { return [] }
        // `k < p` with p a split point reaches only the ranges below p's.
        if upperStrict, let upper, ranges.upperBound > 0, SQLiteOrder.compare(splits.points[ranges.upperBound - 1], upper) == 0 {
            guard ranges.lowerBound < ranges.upperBound else { return [] }
            ranges = ranges.lowerBound...(ranges.upperBound - 1)
        }
        return Set(ranges.map { splits.shard(ofRange: $0, shardCount: map.rangeShardCount) }).sorted()
    }

    /// The shards a read of `table`'s rows whose key lies between `lower` and `upper` (inclusive; not
    /// NULL) needs, as planning `WHERE key BETWEEN lower AND upper` finds them; nil when that is every
    /// shard (a hash-sharded table: ranges of its keys are not placed together). For a caller that knows its statement's key
    /// bounds from their source (a compatibility API's own request) and need not plan its text.
    public func keyRangeShards(_ table: ShardedTable, from lower: SQLValue, to upper: SQLValue) -> [Int]? {
        guard table.keyColumns.count == 1, lower != .null, upper != .null, let splits = table.rangeSplits else { return nil }
        let affinity = table.keyAffinities[0] == .real ? Affinity.numeric : table.keyAffinities[0]
        let stored = { (v: SQLValue) in affinity.apply(v, renderReal: RealText.render) }
        let shards = Self.rangeShards(splits, from: stored(lower), to: stored(upper), upperStrict: false, map: map)
        // No key can match (lower above upper): any one shard gives the empty answer, as in `planOne`.
        return shards.isEmpty ? [0] : shards
    }

    /// `col < v`, `col <= v`, `col > v`, `col >= v` (either way round) or `col BETWEEN a AND b`, with col
    /// this table's column and each bound a literal or parameter: the column, its bounds, and whether the
    /// upper bound is strict (`<`); a lower bound is taken as inclusive (a superset of the keys).
    static func bounds(_ conjunct: [Token], table: ShardedTable, qualifier: String, parameters: Parameters) -> (String, SQLValue?, SQLValue?, Bool)? {
        var c = conjunct
        while c.count >= 2 && c.first!.isSymbol("(") && c.last!.isSymbol(")") && balanced(Array(c.dropFirst().dropLast())) {
            c = Array(c.dropFirst().dropLast())
        }
        func column(_ ts: ArraySlice<Token>) -> String? {
            let t = Array(ts)
            if t.count == 1, let n = t[0].name, table.allColumns.contains(n) { return n }
            if t.count == 3, t[0].name == qualifier, t[1].isSymbol("."), let n = t[2].name, table.allColumns.contains(n) { return n }
            return nil
        }
        if let at = c.firstIndex(where: { $0.isWord("BETWEEN") }) {
            guard let col = column(c[..<at]) else { return nil }
            let rest = c[(at + 1)...]
            let ands = rest.indices.filter { rest[$0].isWord("AND") }
            guard ands.count == 1, let a = literal(rest[..<ands[0]], parameters), let b = literal(rest[(ands[0] + 1)...], parameters) else { return nil }
            return (col, a, b, false)
        }
        guard let op = c.firstIndex(where: { $0.isSymbol("<") || $0.isSymbol("<=") || $0.isSymbol(">") || $0.isSymbol(">=") }) else { return nil }
        let below = c[op].isSymbol("<") || c[op].isSymbol("<=")
        let strict = c[op].isSymbol("<") || c[op].isSymbol(">")
        if let col = column(c[..<op]), let v = literal(c[(op + 1)...], parameters) {
            return below ? (col, nil, v, strict) : (col, v, nil, false)
        }
        if let col = column(c[(op + 1)...]), let v = literal(c[..<op], parameters) {
            return below ? (col, v, nil, false) : (col, nil, v, strict)
        }
        return nil
    }

    /// WHERE's conjuncts: split at AND outside parentheses (BETWEEN's own AND excepted). An OR outside
    /// parentheses binds looser than AND (`a OR b AND c` is `a OR (b AND c)`): then WHERE is one term.
    static func conjuncts(_ tokens: [Token]) -> [[Token]] {
        var depth = 0
        for t in tokens {
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1 }
            if depth == 0 && t.isWord("OR") { return [tokens] }
        }
        var parts: [[Token]] = [[]]
        var betweens = 0
        depth = 0
        for t in tokens {
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1 }
            if depth == 0 && t.isWord("BETWEEN") { betweens += 1 }
            if depth == 0 && t.isWord("AND") {
                if betweens > 0 { betweens -= 1 } else { parts.append([]); continue }
            }
            parts[parts.count - 1].append(t)
        }
        return parts
    }

    /// `col = v`, `v = col`, `col == v` or `col IN (v, ...)`, with col this table's column (bare or
    /// qualified) and each v one literal or parameter: the column and the values.
    static func equality(_ conjunct: [Token], table: ShardedTable, qualifier: String) -> (String, [Term])? {
        var c = conjunct
        while c.count >= 2 && c.first!.isSymbol("(") && c.last!.isSymbol(")") && SelectShape.splitTopLevel(Array(c.dropFirst().dropLast())).count == 1
                && balanced(Array(c.dropFirst().dropLast())) {
            c = Array(c.dropFirst().dropLast())
        }
        func column(_ ts: ArraySlice<Token>) -> String? {
            let t = Array(ts)
            if t.count == 1, let n = t[0].name, table.allColumns.contains(n) { return n }
            if t.count == 3, t[0].name == qualifier, t[1].isSymbol("."), let n = t[2].name, table.allColumns.contains(n) { return n }
            return nil
        }
        if let eq = c.firstIndex(where: { $0.isSymbol("=") || $0.isSymbol("==") }) {
            let left = c[..<eq], right = c[(eq + 1)...]
            if let col = column(left), let v = term(right) { return (col, [v]) }
            if let col = column(right), let v = term(left) { return (col, [v]) }
            return nil
        }
        if let inAt = c.firstIndex(where: { $0.isWord("IN") }), let col = column(c[..<inAt]),
           inAt + 2 < c.count, c[inAt + 1].isSymbol("("), c.last!.isSymbol(")") {
            let inner = Array(c[(inAt + 2)..<(c.count - 1)])
            if inner.isEmpty { return (col, []) }
            var values: [Term] = []
            for part in SelectShape.splitTopLevel(inner) {
                guard let v = term(part[...]) else { return nil }
                values.append(v)
            }
            return (col, values)
        }
        return nil
    }

    private static func balanced(_ tokens: [Token]) -> Bool {
        var depth = 0
        for t in tokens {
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1; if depth < 0 { return false } }
        }
        return depth == 0
    }

    /// A literal or a parameter, as a statement's text holds it: a literal's value is known from the
    /// text, a parameter's comes with each request.
    enum Term: Sendable, Equatable {
        case value(SQLValue)
        /// A parameter, by its renamed text.
        case parameter(String)
    }

    /// One literal (with an optional sign on a number) or parameter, as the value it stands for.
    static func literal(_ ts: ArraySlice<Token>, _ parameters: Parameters) -> SQLValue? {
        switch term(ts) {
        case .value(let v)?: return v
        case .parameter(let p)?: return parameters.values[p]
        case nil: return nil
        }
    }

    /// One literal (with an optional sign on a number) or parameter, as a term.
    static func term(_ ts: ArraySlice<Token>) -> Term? {
        let t = Array(ts)
        if t.count == 2, t[0].isSymbol("-") || t[0].isSymbol("+"), t[1].kind == .number, let v = number(t[1].text) {
            guard t[0].isSymbol("-") else { return .value(v) }
            switch v {
            case .integer(let i): return i == .min ? nil : .value(.integer(-i))
            case .real(let d): return .value(.real(-d))
            default: return nil
            }
        }
        guard t.count == 1 else { return nil }
        switch t[0].kind {
        case .number: return number(t[0].text).map(Term.value)
        case .string: return .value(.text(t[0].value))
        case .blob: return hexBlob(t[0].text).map(Term.value)
        case .parameter: return .parameter(t[0].text)
        case .word where t[0].isWord("NULL"): return .value(.null)
        default: return nil
        }
    }

    static func number(_ text: String) -> SQLValue? {
        let s = text.replacingOccurrences(of: "_", with: "")
        if s.hasPrefix("0x") || s.hasPrefix("0X") {
            guard let u = UInt64(s.dropFirst(2), radix: 16) else { return nil }
            return .integer(Int64(bitPattern: u))
        }
        if let i = Int64(s) { return .integer(i) }
        // An integer literal too large for 64 bits is a REAL in SQLite.
        return Double(s).map(SQLValue.real)
    }

    private static func hexBlob(_ text: String) -> SQLValue? {
        let hex = Array(text.utf8.dropFirst(2).dropLast())
        guard hex.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        var i = 0
        while i < hex.count {
            guard let b = UInt8(String(decoding: hex[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(b)
            i += 2
        }
        return .blob(bytes)
    }
}
