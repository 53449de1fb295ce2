import CSQLite3
import Foundation

/// What SQLite found while preparing a statement against a database's schema: the tables it reads
/// and writes (subqueries, views and triggers included: SQLite's authorizer reports them all), whether
/// it only reads, and the columns it returns. The router plans with it.
public struct StatementAnalysis: Sendable, Equatable {
    /// Lowercased names of the tables (and views) the statement reads or writes, in `main`.
    public var tablesRead: Set<String> = []
    public var tablesWritten: Set<String> = []
    public var readOnly = true
    /// The result's column names and declared types, as SQLite would report them.
    public var columns: [String] = []
    public var types: [String] = []
    /// The statement changes the schema (CREATE, DROP, ALTER).
    public var changesSchema = false
    /// Lowercased names of the tables an index is created on or dropped from.
    public var indexedTables: Set<String> = []
    /// Lowercased names of the tables whose schema the statement changes (indexes, ALTER, DROP,
    /// triggers).
    public var schemaTables: Set<String> = []
    /// The schema changes are index creations and drops, nothing else.
    public var changesOnlyIndexes: Bool { changesSchema && !changesMoreThanIndexes }
    public var changesMoreThanIndexes = false
}

/// A private in-memory SQLite database: the router's copy of a database's schema (to analyse
/// statements without touching data) and the place where partial results from shards are combined.
/// Client SQL that runs here (a combine step carries a client's expressions) may only read.
/// Not thread-safe: one owner at a time.
public final class ScratchDatabase {
    private var db: OpaquePointer?
    private let state = ScratchState()

    public init() throws {
        guard sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK else {
            sqlite3_close(db)
            throw SQLiteError(message: "cannot open an in-memory database")
        }
        sqlite3_extended_result_codes(db, 1)
        for (limit, value) in SQLiteLimits.connectionLimits { sqlite3_limit(db, limit, value) }
        _ = cairn_db_config_set(db, SQLITE_DBCONFIG_DEFENSIVE, 1)
        _ = cairn_db_config_set(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0)
        _ = cairn_db_config_set(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0)
        ShardFunctions.install(on: db!)
        let pointer = Unmanaged.passUnretained(state).toOpaque()
        sqlite3_set_authorizer(db, { ctx, action, arg1, arg2, database, _ in
            let state = Unmanaged<ScratchState>.fromOpaque(ctx!).takeUnretainedValue()
            return state.authorize(action: action, arg1: arg1.map { String(cString: $0) }, arg2: arg2.map { String(cString: $0) },
                                   database: database.map { String(cString: $0) })
        }, pointer)
        sqlite3_progress_handler(db, SQLiteLimits.progressEverySteps, { ctx in
            let state = Unmanaged<ScratchState>.fromOpaque(ctx!).takeUnretainedValue()
            return state.deadlineNanos != 0 && DispatchTime.now().uptimeNanoseconds > state.deadlineNanos ? 1 : 0
        }, pointer)
    }

    deinit { sqlite3_close_v2(db) }

    /// Runs CairnDB's own SQL (schema, staging tables): not checked, so never a client's text alone.
    public func exec(_ sql: String) throws {
        let was = state.trusted
        state.trusted = true
        defer { state.trusted = was }
        var message: UnsafeMutablePointer<CChar>?
        guard sqlite3_exec(db, sql, nil, nil, &message) == SQLITE_OK else {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(db))
            sqlite3_free(message)
            throw SQLiteError(message: text)
        }
    }

    /// Prepares `sql` (one statement) without running it and reports what it touches. Throws SQLite's
    /// own message when it does not prepare (unknown table, syntax error), which is the client's error.
    public func analyze(_ sql: String) throws -> StatementAnalysis {
        state.trusted = false
        state.recording = StatementAnalysis()
        defer { state.recording = nil }
        let s = try prepareOne(sql)
        defer { sqlite3_finalize(s) }
        var analysis = state.recording ?? StatementAnalysis()
        analysis.readOnly = sqlite3_stmt_readonly(s) != 0
        for i in 0..<sqlite3_column_count(s) {
            analysis.columns.append(String(cString: sqlite3_column_name(s, i)))
            analysis.types.append(sqlite3_column_decltype(s, i).map { String(cString: $0) } ?? "")
        }
        return analysis
    }

    /// Creates `table` with columns of the affinities these declared types give, and fills it. The
    /// types come from shards (a client's CREATE TABLE): only the affinity's own name is written, never
    /// the type's text.
    public func load(table: String, columnTypes: [String], rows: [[SQLValue]]) throws {
        let names = columnTypes.indices.map { "c\($0)" }
        let definition = zip(names, columnTypes).map { "\($0) \(Affinity(declaredType: $1).typeName)" }.joined(separator: ", ")
        try exec("CREATE TABLE \(table) (\(definition))")
        try insert(into: table, columns: names, rows: rows)
    }

    /// Inserts rows into an existing table, by column name (CairnDB's own statement).
    public func insert(into table: String, columns: [String], rows: [[SQLValue]]) throws {
        guard !columns.isEmpty else { return }
        let placeholders = columns.map { _ in "?" }.joined(separator: ", ")
        let quoted = columns.map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }.joined(separator: ", ")
        state.trusted = true
        defer { state.trusted = false }
        let s = try prepareOne("INSERT INTO \(table) (\(quoted)) VALUES (\(placeholders))")
        defer { sqlite3_finalize(s) }
        try exec("BEGIN")
        var committed = false
        defer { if !committed { try? exec("ROLLBACK") } }
        for row in rows {
            if let error = SQLiteConnection.bind(SQLStatement("", row), to: s) { throw SQLiteError(message: error) }
            let rc = sqlite3_step(s)
            sqlite3_reset(s)
            guard rc == SQLITE_DONE else { throw SQLiteError(message: String(cString: sqlite3_errmsg(db))) }
        }
        try exec("COMMIT")
        committed = true
    }

    /// Runs a read (a client's expressions may be in it: only reads are allowed) and returns its rows.
    /// `timeoutNanos` bounds its time; the result is bounded as every query's is. `ownSQL`: CairnDB's
    /// own query (it may read the schema with PRAGMA functions), never a client's text.
    public func query(_ statement: SQLStatement, timeoutNanos: UInt64 = 0, ownSQL: Bool = false) -> StatementResult {
        state.trusted = ownSQL
        defer { state.trusted = false }
        state.deadlineNanos = timeoutNanos > 0 ? DispatchTime.now().uptimeNanoseconds + timeoutNanos : 0
        defer { state.deadlineNanos = 0 }
        let s: OpaquePointer
        do { s = try prepareOne(statement.sql) } catch { return StatementResult(error: "\(error)") }
        defer { sqlite3_finalize(s) }
        guard sqlite3_stmt_readonly(s) != 0 else { return StatementResult(error: "attempt to change database via query operation") }
        if let error = SQLiteConnection.bind(statement, to: s) { return StatementResult(error: error) }
        var result = StatementResult()
        var step = sqlite3_step(s)
        let count = sqlite3_column_count(s)
        for i in 0..<count {
            result.columns.append(String(cString: sqlite3_column_name(s, i)))
            result.types.append(sqlite3_column_decltype(s, i).map { String(cString: $0) } ?? "")
        }
        var bytes = 0
        while step == SQLITE_ROW {
            var row: [SQLValue] = []
            row.reserveCapacity(Int(count))
            for i in 0..<count {
                let v = SQLiteConnection.columnValue(s, i)
                bytes += v.sizeBytes
                row.append(v)
            }
            result.rows.append(row)
            if bytes > SQLiteLimits.maxResultBytes {
                return StatementResult(error: "the result exceeds the limit of \(SQLiteLimits.maxResultBytes) bytes; select fewer rows or columns (LIMIT, OFFSET)")
            }
            step = sqlite3_step(s)
        }
        guard step == SQLITE_DONE else {
            if step == SQLITE_INTERRUPT && state.deadlineNanos != 0 { return StatementResult(error: "query timed out (db_timeout)") }
            return StatementResult(error: state.denial ?? String(cString: sqlite3_errmsg(db)))
        }
        return result
    }

    private func prepareOne(_ sql: String) throws -> OpaquePointer {
        if SQLTextKey.hasNUL(sql) { throw SQLiteError(message: "the SQL text contains a NUL character") }
        state.denial = nil
        var stmt: OpaquePointer?
        var tail: UnsafePointer<CChar>?
        let utf8 = Array(sql.utf8CString)
        let rc = utf8.withUnsafeBufferPointer { sqlite3_prepare_v3(db, $0.baseAddress, -1, 0, &stmt, &tail) }
        guard rc == SQLITE_OK else { throw SQLiteError(message: state.denial ?? String(cString: sqlite3_errmsg(db))) }
        guard let s = stmt else { throw SQLiteError(message: "empty statement") }
        return s
    }
}

/// The scratch database's authorizer state (a class: SQLite's callback holds a pointer to it).
private final class ScratchState {
    var trusted = false
    var recording: StatementAnalysis?
    var denial: String?
    var deadlineNanos: UInt64 = 0

    func authorize(action: Int32, arg1: String?, arg2: String?, database: String?) -> Int32 {
        if recording != nil, let table = arg1?.lowercased(), database == "main" || database == nil {
            switch action {
            case SQLITE_READ: if !table.hasPrefix("sqlite_") { recording?.tablesRead.insert(table) }
            case SQLITE_INSERT, SQLITE_UPDATE, SQLITE_DELETE: if !table.hasPrefix("sqlite_") { recording?.tablesWritten.insert(table) }
            default: break
            }
        }
        if Authorizer.changesSchema(action: action, arg1: arg1) {
            recording?.changesSchema = true
            switch action {
            case SQLITE_CREATE_INDEX, SQLITE_DROP_INDEX:
                // arg1 names the index, arg2 its table.
                if let table = arg2?.lowercased() {
                    recording?.indexedTables.insert(table)
                    recording?.schemaTables.insert(table)
                }
            case SQLITE_INSERT, SQLITE_UPDATE, SQLITE_DELETE, SQLITE_REINDEX:
                // The schema table's own rows, which every CREATE and DROP writes; a new index filled.
                break
            case SQLITE_ALTER_TABLE, SQLITE_CREATE_TRIGGER, SQLITE_DROP_TRIGGER:
                // ALTER: arg2 is the table; a trigger: arg1 names it, arg2 its table.
                if let table = arg2?.lowercased() { recording?.schemaTables.insert(table) }
                recording?.changesMoreThanIndexes = true
            case SQLITE_CREATE_TABLE, SQLITE_DROP_TABLE:
                if let table = arg1?.lowercased() { recording?.schemaTables.insert(table) }
                recording?.changesMoreThanIndexes = true
            default:
                recording?.changesMoreThanIndexes = true
            }
        }
        if trusted || recording != nil { return SQLITE_OK }
        switch action {
        case SQLITE_SELECT, SQLITE_READ, SQLITE_RECURSIVE:
            return SQLITE_OK
        case SQLITE_FUNCTION:
            if let reason = Authorizer.functionRefusal((arg2 ?? "").lowercased(), role: .read) {
                denial = reason
                return SQLITE_DENY
            }
            return SQLITE_OK
        default:
            denial = "only reads may run in a combine step"
            return SQLITE_DENY
        }
    }
}
