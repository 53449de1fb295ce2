import CairnSQLite

/// The second stage of a scattered read: the shards' partial results into one answer, computed by
/// SQLite itself in a private in-memory database, so NULL order, type affinity, collation and the
/// arithmetic of aggregates are exactly SQLite's.
public enum Combiner {
    /// Most rows the shards may send for one query, and most bytes (Citus-like bounds: beyond them the
    /// query is refused, not run out of memory).
    public static let maxGatheredRows = 1_000_000
    public static let maxGatheredBytes = 64 << 20
    /// How the error for a query over those bounds begins (the HTTP layer answers it with 413).
    public static let tooMuchPrefix = "the query needs"

    /// A partial result's rows and the bytes of its values.
    public static func size(of r: StatementResult) -> (rows: Int, bytes: Int) {
        var bytes = 0
        for row in r.rows { for v in row { bytes += v.sizeBytes } }
        return (r.rows.count, bytes)
    }

    /// The error for gathering this much, or nil while it is within the bounds (checked as partial
    /// results arrive, so a query over the bounds stops holding them early).
    public static func overLimit(rows: Int, bytes: Int, shards: Int) -> String? {
        guard rows > maxGatheredRows || bytes > maxGatheredBytes else { return nil }
        return "\(tooMuchPrefix) \(rows) rows (\(bytes) bytes) from \(shards) shards, more than the limit of \(maxGatheredRows) rows or \(maxGatheredBytes) bytes: pin it to one shard (the shard key = a value), filter it further, or aggregate it"
    }

    /// The shards' results in (and the reference tables' rows, for a plan with a `referenceWorker`),
    /// the answer out (an error in any shard's result is the answer's error).
    public static func combine(_ scatter: ReadPlan.Scatter, partials: [StatementResult], references: StatementResult? = nil,
                               timeoutNanos: UInt64 = 0) -> StatementResult {
        precondition(partials.count == scatter.shards.count, "one partial result per shard")
        precondition((references != nil) == (scatter.referenceWorker != nil), "the reference rows exactly when the plan reads them")
        if let failed = (partials + (references.map { [$0] } ?? [])).first(where: { $0.error != nil }) { return StatementResult(error: failed.error) }
        var rows = 0, bytes = 0
        for p in partials + (references.map { [$0] } ?? []) {
            let (r, b) = size(of: p)
            rows += r
            bytes += b
        }
        if let error = overLimit(rows: rows, bytes: bytes, shards: partials.count) { return StatementResult(error: error) }
        let all = partials.flatMap { $0.rows }
        var answer: StatementResult
        do {
            let db = try ScratchDatabase()
            switch scatter.combine {
            case .partial(let statement):
                let types = partials.first(where: { !$0.columns.isEmpty })?.types ?? []
                try db.load(table: "partial", columnTypes: types, rows: all)
                answer = db.query(statement, timeoutNanos: timeoutNanos)
            case .rows(let tables, let statement):
                var byTable = [[[SQLValue]]](repeating: [], count: tables.count)
                for row in all + (references?.rows ?? []) {
                    guard case .integer(let tag)? = row.first, tag >= 0, tag < tables.count, row.count > tables[Int(tag)].storedColumns.count else {
                        return StatementResult(error: "combining the shards' results failed: a gathered row of an unexpected shape")
                    }
                    byTable[Int(tag)].append(Array(row[1...tables[Int(tag)].storedColumns.count]))
                }
                for (table, rows) in zip(tables, byTable) {
                    try db.exec(table.createSQL)
                    try db.insert(into: SQLLexer.quote(table.name), columns: table.storedColumns, rows: rows)
                }
                answer = db.query(statement, timeoutNanos: timeoutNanos)
            }
        } catch {
            return StatementResult(error: "combining the shards' results failed: \(error)")
        }
        if answer.error == nil {
            answer.columns = scatter.columns
            answer.types = scatter.types
        }
        return answer
    }
}
