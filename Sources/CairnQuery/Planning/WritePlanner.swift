import CairnSQLite
import Foundation

/// Where a write's rows go. Pure, like `ReadPlanner`: one statement over a sharded table runs
/// unchanged on the one shard that holds its rows; an INSERT of rows for several shards is split into
/// one INSERT per shard; an UPDATE or DELETE without a pin runs on every shard.
public enum WritePlan: Sendable, Equatable {
    /// No sharded table: the database's home group, as for any unsharded database.
    case home
    /// These statements, each on its shard (one entry per shard). One element: a single-shard write.
    case shards([ShardStatement])
    /// `DROP TABLE` of this sharded or reference table (lowercased): its catalog entry goes first (the
    /// commit point: no router sends it anything after), then the table on every shard.
    case dropTable(String)

    public struct ShardStatement: Sendable, Equatable {
        public var shard: Int
        public var statement: SQLStatement
        /// A write to a reference table: every shard runs the same statement on its own copy, and the
        /// answer is one shard's result (not the sum of all).
        public var isCopy = false

        public init(shard: Int, statement: SQLStatement, isCopy: Bool = false) {
            self.shard = shard
            self.statement = statement
            self.isCopy = isCopy
        }
    }
}

public struct WritePlanner: Sendable {
    public let schema: ShardingSchema
    public let map: ShardMap

    public init(schema: ShardingSchema, map: ShardMap) {
        self.schema = schema
        self.map = map
    }

    public func plan(_ statement: SQLStatement, analysis: StatementAnalysis) throws -> WritePlan {
        try plan(statement, prepared: Self.prepare(statement.sql, analysis: analysis, schema: schema))
    }

    /// What planning learns from a write's text and the schema alone: everything but its parameters'
    /// values and the shard map. The router keeps it per text beside the statement's analysis, so that
    /// planning a write it has seen is binding its values and hashing its keys. Throws what planning
    /// throws for the text, whatever its values (a NULL shard key is the one refusal left for `plan`).
    public static func prepare(_ sql: String, analysis: StatementAnalysis, schema: ShardingSchema) throws -> PreparedWrite {
        let written = analysis.tablesWritten.filter { schema.sharded[$0] != nil }
        let read = analysis.tablesRead.filter { schema.sharded[$0] != nil }
        let sharded = written.union(read)
        let touched = analysis.tablesRead.union(analysis.tablesWritten)
        let references = touched.intersection(schema.reference).sorted()
        let reshaped = analysis.schemaTables.filter { schema.sharded[$0] != nil || schema.reference.contains($0) }
        if !reshaped.isEmpty {
            if analysis.changesOnlyIndexes { return try prepareIndexChange(sql, analysis: analysis, tables: reshaped, schema: schema) }
            return try prepareTableChange(sql, tables: reshaped)
        }
        if !analysis.tablesWritten.intersection(schema.reference).isEmpty {
            return try prepareCopies(analysis: analysis, sharded: sharded, references: references, schema: schema)
        }
        if sharded.isEmpty {
            guard references.isEmpty else {
                throw PlanRefusal("reference table \(references.joined(separator: ", ")) is kept on the shards: a write to an unsharded table may not read it")
            }
            return PreparedWrite(.home)
        }
        if analysis.changesSchema {
            throw PlanRefusal("schema changes to sharded tables (\(sharded.sorted().joined(separator: ", "))) are not supported yet, other than creating them and their indexes")
        }
        guard written.count == 1, sharded.count == 1, let table = schema.sharded[written.first!] else {
            throw PlanRefusal("a write may touch one sharded table and no other table (it touches \(touched.sorted().joined(separator: ", ")))")
        }
        let others = touched.subtracting(sharded).subtracting(schema.reference)
        guard others.isEmpty else {
            throw PlanRefusal("\(table.name) is sharded and \(others.sorted().joined(separator: ", ")) is not: a write to a sharded table may read only reference tables besides it")
        }
        let (slots, tokens) = ParameterSlots.renaming(try SQLLexer.rememberedTokens(sql))
        var body = tokens
        while body.last?.isSymbol(";") == true { body.removeLast() }
        guard let first = body.first else { throw PlanRefusal("empty statement") }
        if body.contains(where: { $0.isWord("SELECT") }) {
            throw PlanRefusal("a write to sharded table \(table.name) may not contain a SELECT (INSERT ... SELECT, subqueries): send the rows' values")
        }
        if body.contains(where: { $0.isWord("RETURNING") }) {
            throw PlanRefusal("RETURNING is not supported on sharded table \(table.name) yet")
        }
        if first.isWord("INSERT") || first.isWord("REPLACE") {
            return try prepareInsert(body, table: table, slots: slots)
        }
        if first.isWord("UPDATE") || first.isWord("DELETE") {
            return try prepareChange(body, table: table, slots: slots, isUpdate: first.isWord("UPDATE"))
        }
        throw PlanRefusal("this statement on sharded table \(table.name) is not supported")
    }

    /// Plans `statement` from what `prepare` learnt from its text against this planner's schema.
    public func plan(_ statement: SQLStatement, prepared: PreparedWrite) throws -> WritePlan {
        switch prepared.outcome {
        case .home:
            return .home
        case .dropTable(let table):
            return .dropTable(table)
        case .everyShard(let isCopy):
            return .shards((0..<map.count).map { WritePlan.ShardStatement(shard: $0, statement: statement, isCopy: isCopy) })
        case .insert(let insert):
            return try planInsert(insert, statement: statement)
        case .change(let change):
            return planChange(change, statement: statement)
        }
    }

    // MARK: Reference tables

    /// A write to reference tables: the same statement on every shard's copy, as one transaction across
    /// the shards, so the copies stay identical (the entries carry one time and one random seed).
    private static func prepareCopies(analysis: StatementAnalysis, sharded: Set<String>, references: [String], schema: ShardingSchema) throws -> PreparedWrite {
        let names = references.joined(separator: ", ")
        if analysis.changesSchema {
            throw PlanRefusal("schema changes to reference tables (\(names)) are not supported yet, other than creating them and their indexes")
        }
        guard sharded.isEmpty else {
            throw PlanRefusal("a write to reference table \(names) may not touch sharded table \(sharded.sorted().joined(separator: ", ")): each shard's copy must get the same rows")
        }
        let unsharded = analysis.tablesRead.union(analysis.tablesWritten).subtracting(schema.reference)
        guard unsharded.isEmpty else {
            throw PlanRefusal("\(names) is a reference table and \(unsharded.sorted().joined(separator: ", ")) is not: a write to reference tables may read only reference tables")
        }
        return PreparedWrite(.everyShard(isCopy: true))
    }

    // MARK: Indexes

    /// CREATE INDEX and DROP INDEX on sharded or reference tables: the same statement on every shard, as
    /// one transaction across the shards, so every shard keeps the same schema.
    private static func prepareIndexChange(_ sql: String, analysis: StatementAnalysis, tables: Set<String>, schema: ShardingSchema) throws -> PreparedWrite {
        let names = tables.sorted().joined(separator: ", ")
        guard analysis.indexedTables == tables else {
            throw PlanRefusal("a statement that changes indexes of sharded or reference tables (\(names)) may do nothing else")
        }
        let tokens = try SQLLexer.tokens(sql)
        if tokens.count > 1 && tokens[0].isWord("CREATE") && tokens[1].isWord("UNIQUE") {
            let columns = Self.indexedColumns(tokens)
            for name in tables.sorted() {
                guard let table = schema.sharded[name] else { continue }
                let missing = table.keyColumns.filter { !columns.contains($0) }
                if !missing.isEmpty {
                    throw PlanRefusal("a UNIQUE index on sharded table \(table.name) must include its shard key (\(table.keyColumns.joined(separator: ", "))): uniqueness is checked within one shard")
                }
            }
        }
        return PreparedWrite(.everyShard(isCopy: true))
    }

    /// DROP TABLE, and ALTER TABLE ... ADD COLUMN or DROP COLUMN, of one sharded or reference table.
    /// Renames are refused: the catalog knows a table and its key by name.
    private static func prepareTableChange(_ sql: String, tables: Set<String>) throws -> PreparedWrite {
        let names = tables.sorted().joined(separator: ", ")
        var tokens = try SQLLexer.tokens(sql)
        while tokens.last?.isSymbol(";") == true { tokens.removeLast() }
        guard tables.count == 1, let table = tables.first, tokens.count >= 3, tokens[1].isWord("TABLE") else {
            throw PlanRefusal("schema changes to sharded or reference tables (\(names)) other than CREATE, DROP TABLE, ALTER TABLE ... ADD COLUMN "
                              + "or DROP COLUMN, and their indexes are not supported yet")
        }
        if tokens[0].isWord("DROP") { return PreparedWrite(.dropTable(table)) }
        // ALTER TABLE [schema.]name ADD|DROP ...
        var after = 3
        if tokens.count > 4 && tokens[3].isSymbol(".") { after = 5 }
        guard tokens[0].isWord("ALTER"), after < tokens.count, tokens[after].isWord("ADD") || tokens[after].isWord("DROP") else {
            throw PlanRefusal("\(table) is sharded or a reference table: ALTER TABLE may add or drop a column, not rename the table or its columns "
                              + "(the catalog knows them by name)")
        }
        return PreparedWrite(.everyShard(isCopy: true))
    }

    /// The plain column names a CREATE INDEX lists (`name [COLLATE BINARY] [ASC|DESC]`), lowercased;
    /// expressions and other collations are left out.
    static func indexedColumns(_ tokens: [Token]) -> Set<String> {
        guard let on = tokens.firstIndex(where: { $0.isWord("ON") }), let open = tokens[on...].firstIndex(where: { $0.isSymbol("(") }) else { return [] }
        var depth = 0
        var close = open
        for i in open..<tokens.count {
            if tokens[i].isSymbol("(") { depth += 1 }
            if tokens[i].isSymbol(")") { depth -= 1; if depth == 0 { close = i; break } }
        }
        guard close > open else { return [] }
        var out: Set<String> = []
        for item in SelectShape.splitTopLevel(Array(tokens[(open + 1)..<close])) {
            guard let first = item.first, let name = first.name, first.kind == .quotedName || !Keywords.reserved.contains(first.value.uppercased()) else { continue }
            // Only BINARY compares as the key's hash does: 'A' and 'a' are two keys, on two shards.
            var rest = Array(item.dropFirst())
            if rest.count >= 2 && rest[0].isWord("COLLATE") && rest[1].isWord("BINARY") { rest.removeFirst(2) }
            if rest.isEmpty || (rest.count == 1 && (rest[0].isWord("ASC") || rest[0].isWord("DESC"))) { out.insert(name) }
        }
        return out
    }

    // MARK: INSERT

    private static func prepareInsert(_ body: [Token], table: ShardedTable, slots: ParameterSlots) throws -> PreparedWrite {
        // INSERT [OR x] INTO name [AS alias] [(columns)] VALUES (...), (...) [ON CONFLICT ...]
        guard let into = body.firstIndex(where: { $0.isWord("INTO") }), into + 1 < body.count else {
            throw PlanRefusal("expected INSERT INTO \(table.name) ...")
        }
        var i = into + 2
        if i + 1 < body.count, body[i].isWord("AS") { i += 2 }
        var columns = table.storedColumns.map { $0.lowercased() }
        if i < body.count, body[i].isSymbol("(") {
            guard let close = body[i...].firstIndex(where: { $0.isSymbol(")") }) else { throw PlanRefusal("unbalanced parentheses") }
            columns = try SelectShape.splitTopLevel(Array(body[(i + 1)..<close])).map { part in
                guard part.count == 1, let n = part[0].name else { throw PlanRefusal("expected column names in INSERT INTO \(table.name) (...)") }
                return n
            }
            i = close + 1
        }
        guard i < body.count, body[i].isWord("VALUES") else {
            throw PlanRefusal("an INSERT into sharded table \(table.name) gives its rows with VALUES (DEFAULT VALUES has no shard key)")
        }
        let keyPositions = try table.keyColumns.map { k -> Int in
            guard let at = columns.firstIndex(of: k) else {
                throw PlanRefusal("an INSERT into sharded table \(table.name) must give its shard key (\(table.keyColumns.joined(separator: ", ")))")
            }
            return at
        }
        // The row tuples, then whatever follows them (an upsert clause) is kept for every shard.
        var rows: [[Token]] = []
        var j = i + 1
        while j < body.count, body[j].isSymbol("(") {
            var depth = 0
            var end = j
            while end < body.count {
                if body[end].isSymbol("(") { depth += 1 }
                if body[end].isSymbol(")") { depth -= 1; if depth == 0 { break } }
                end += 1
            }
            guard end < body.count else { throw PlanRefusal("unbalanced parentheses in VALUES") }
            rows.append(Array(body[j...end]))
            j = end + 1
            if j < body.count, body[j].isSymbol(",") { j += 1 } else { break }
        }
        guard !rows.isEmpty else { throw PlanRefusal("expected VALUES (...)") }
        let tail = Array(body[j...])
        // An upsert's DO UPDATE SET is an UPDATE of the row that conflicted: it may not change the key either.
        var depth = 0
        for (n, t) in tail.enumerated() {
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1 }
            guard depth == 0, t.isWord("SET"), n >= 2, tail[n - 1].isWord("UPDATE"), tail[n - 2].isWord("DO") else { continue }
            var end = n + 1
            var inner = 0
            while end < tail.count {
                if tail[end].isSymbol("(") { inner += 1 }
                if tail[end].isSymbol(")") { inner -= 1 }
                if inner == 0 && (tail[end].isWord("WHERE") || tail[end].isWord("ON") || tail[end].isWord("RETURNING")) { break }
                end += 1
            }
            try refuseKeyChange(Array(tail[(n + 1)..<end]), table: table)
        }
        let keys = try rows.map { row -> Result<[ReadPlanner.Term], PlanRefusal> in
            let values = SelectShape.splitTopLevel(Array(row.dropFirst().dropLast()))
            guard values.count == columns.count else { throw PlanRefusal("\(values.count) values for \(columns.count) columns") }
            var terms: [ReadPlanner.Term] = []
            for (n, position) in keyPositions.enumerated() {
                guard let term = ReadPlanner.term(values[position][...]) else {
                    return .failure(PlanRefusal("the shard key \(table.keyColumns[n]) of each row inserted into \(table.name) must be a literal or a parameter"))
                }
                terms.append(term)
            }
            return .success(terms)
        }
        return PreparedWrite(.insert(.init(table: table, slots: slots, head: Array(body[...i]), rows: rows, tail: tail, keys: keys)))
    }

    private func planInsert(_ insert: PreparedWrite.Insert, statement: SQLStatement) throws -> WritePlan {
        if insert.keys.count == 1 { return try planOneRow(insert, statement: statement) }
        return try planRows(insert, statement: statement)
    }

    /// A one-row INSERT (the common one): placed as `planRows` places it, without the parameters'
    /// dictionary.
    func planOneRow(_ insert: PreparedWrite.Insert, statement: SQLStatement) throws -> WritePlan {
        let table = insert.table
        let key = try insert.keys[0].get().map { insert.slots.value(of: $0, in: statement) }
        guard let shard = rowShard(table, key: key) else { throw Self.nullKey(table, key) }
        return .shards([.init(shard: shard, statement: statement)])
    }

    private static func nullKey(_ table: ShardedTable, _ key: [SQLValue]) -> PlanRefusal {
        PlanRefusal("the shard key \(table.keyColumns[key.firstIndex(of: .null) ?? 0]) of \(table.name) may not be NULL")
    }

    /// An INSERT's rows, each placed by its key, one INSERT per shard.
    func planRows(_ insert: PreparedWrite.Insert, statement: SQLStatement) throws -> WritePlan {
        let table = insert.table
        let parameters = Parameters(insert.slots, of: statement)
        var byShard: [Int: [[Token]]] = [:]
        var order: [Int] = []
        for (row, placed) in zip(insert.rows, insert.keys) {
            let key = try placed.get().map { parameters.value(of: $0) }
            guard let shard = rowShard(table, key: key) else { throw Self.nullKey(table, key) }
            if byShard[shard] == nil { order.append(shard) }
            byShard[shard, default: []].append(row)
        }
        if order.count == 1 { return .shards([.init(shard: order[0], statement: statement)]) }
        return .shards(order.sorted().map { shard in
            var tokens = insert.head
            for (n, row) in byShard[shard]!.enumerated() {
                if n > 0 { tokens.append(Token(kind: .symbol, text: ",", value: ",")) }
                tokens += row
            }
            return .init(shard: shard, statement: parameters.statement(tokens + insert.tail))
        })
    }

    /// The shard a row inserted into `table` with key `key` (its key columns' values, as sent) goes to,
    /// as `plan` places an INSERT's rows; nil when a key column would store NULL. For a caller that
    /// builds its INSERT from a request it has already read (seed 004's `/write`) and need not plan it.
    public func rowShard(_ table: ShardedTable, key: [SQLValue]) -> Int? {
        table.shard(ofSent: key, in: map)
    }

    // MARK: UPDATE, DELETE

    /// Refuses assignments (`a = ..., (b, c) = ...`, after SET) that change the shard key: a row
    /// stays on the shard its key hashes to.
    private static func refuseKeyChange(_ assignments: [Token], table: ShardedTable) throws {
        for assignment in SelectShape.splitTopLevel(assignments) {
            guard let eq = assignment.firstIndex(where: { $0.isSymbol("=") }) else { continue }
            let targets = assignment[..<eq].compactMap { $0.name }
            if let key = targets.first(where: { table.keyColumns.contains($0) }) {
                throw PlanRefusal("the shard key \(key) of \(table.name) cannot be changed: delete the row and insert it again")
            }
        }
    }

    private static func prepareChange(_ body: [Token], table: ShardedTable, slots: ParameterSlots, isUpdate: Bool) throws -> PreparedWrite {
        // UPDATE [OR x] name [AS alias] SET ... [FROM ...] WHERE ...; DELETE FROM name [AS alias] WHERE ...
        var i = isUpdate ? 1 : 2
        if isUpdate, i + 1 < body.count, body[i].isWord("OR") { i += 2 }
        guard i < body.count, body[i].name == table.name else { throw PlanRefusal("expected \(table.name) after \(body[0].text)") }
        var qualifier = table.name
        var k = i + 1
        if k + 1 < body.count, body[k].isWord("AS"), let alias = body[k + 1].name { qualifier = alias; k += 2 }
        var depth = 0
        var whereAt: Int?
        for (n, t) in body.enumerated() where n >= k {
            if t.isSymbol("(") { depth += 1 }
            if t.isSymbol(")") { depth -= 1 }
            if depth == 0 && t.isWord("FROM") && isUpdate { throw PlanRefusal("UPDATE ... FROM is not supported on sharded table \(table.name)") }
            if depth == 0 && (t.isWord("ORDER") || t.isWord("LIMIT")) { throw PlanRefusal("ORDER BY and LIMIT in an UPDATE or DELETE are not supported on sharded table \(table.name)") }
            if depth == 0 && t.isWord("WHERE") && whereAt == nil { whereAt = n }
        }
        if isUpdate {
            let set = Array(body[k..<(whereAt ?? body.count)])
            try refuseKeyChange(Array(set.dropFirst()), table: table)
        }
        let whereClause = whereAt.map { Array(body[($0 + 1)...]) }
        let pinTerms = whereClause.flatMap { ReadPlanner.pinTerms($0, table: table, qualifier: qualifier) }
        return PreparedWrite(.change(.init(table: table, slots: slots, qualifier: qualifier, whereClause: whereClause, pinTerms: pinTerms)))
    }

    private func planChange(_ change: PreparedWrite.Change, statement: SQLStatement) -> WritePlan {
        if let w = change.whereClause {
            let planner = ReadPlanner(schema: schema, map: map)
            let parameters = Parameters(change.slots, of: statement)
            // Equalities on the key pin it (unless they name too many keys); else a range table's bounds may.
            let pinned = if let terms = change.pinTerms { planner.pins(terms, table: change.table, parameters: parameters) } else {
                planner.rangePins(w, table: change.table, qualifier: change.qualifier, parameters: parameters)
            }
            if let shards = pinned {
                // No key matches: nothing to change, on any one shard.
                let targets = shards.isEmpty ? [0] : shards
                return .shards(targets.map { .init(shard: $0, statement: statement) })
            }
        }
        return .shards((0..<map.count).map { .init(shard: $0, statement: statement) })
    }
}
