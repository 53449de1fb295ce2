import Foundation
import CSQLite3
import CairnRaft
#if canImport(Glibc)
import Glibc
#endif

/// SQLite copies bound values itself (its `SQLITE_TRANSIENT`, a macro Swift cannot import).
nonisolated(unsafe) let transientDestructor = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

public struct SQLiteError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Per-connection state the C callbacks reach through their user-data pointer.
final class ConnectionContext {
    /// True while CairnDB runs its own statements (transactions, the applied index).
    var internalAccess = false
    /// Why the authorizer refused the last statement, to replace SQLite's bare "not authorized".
    var denial: String?
    /// Set by the authorizer while preparing a statement that inserts, updates or deletes rows.
    var modifiesRows = false
    /// What the last row-modifying user statement reported: DDL reports these again, as SQLite (and
    /// so rqlite) does; CairnDB's own bookkeeping writes must not show through.
    /// A read running past this moment (monotonic nanoseconds; 0: none) is interrupted.
    var deadlineNanos: UInt64 = 0
    var carriedChanges: Int64 = 0
    var carriedInsertRowID: Int64 = 0
    /// Drives `random()` and `randomblob()` while a batch applies; nil outside an apply.
    var random: SplitMix64?
}

/// A clock SQLite reads through its VFS: `'now'`, `CURRENT_TIMESTAMP` and `DEFAULT CURRENT_TIMESTAMP`
/// all see the time the leader fixed for the batch being applied, so every replica writes the same row.
/// Outside an apply (reads), it is the real clock.
final class BatchClock {
    let name: String
    let vfs: UnsafeMutablePointer<sqlite3_vfs>
    private let nowSlot: UnsafeMutablePointer<Int64>
    private let raw: UnsafeMutableRawPointer
    private let nameBuffer: UnsafeMutablePointer<CChar>

    /// Julian-day milliseconds of the Unix epoch.
    static let unixEpochJulianMillis: Int64 = 210_866_760_000_000

    init() throws {
        guard let base = sqlite3_vfs_find(nil) else { throw SQLiteError(message: "SQLite has no default VFS") }
        // One allocation: the VFS struct, then the clock value, so the callback finds the clock from the
        // VFS pointer it is given.
        let vfsBytes = (MemoryLayout<sqlite3_vfs>.size + 15) & ~15
        raw = UnsafeMutableRawPointer.allocate(byteCount: vfsBytes + 8, alignment: 16)
        vfs = raw.bindMemory(to: sqlite3_vfs.self, capacity: 1)
        vfs.initialize(to: base.pointee)
        nowSlot = (raw + vfsBytes).bindMemory(to: Int64.self, capacity: 1)
        nowSlot.initialize(to: 0)
        name = "cairn-\(UInt(bitPattern: raw))"
        nameBuffer = strdup(name)!
        vfs.pointee.zName = UnsafePointer(nameBuffer)
        vfs.pointee.pNext = nil
        vfs.pointee.xCurrentTimeInt64 = { vfs, out in
            guard let vfs, let out else { return SQLITE_ERROR }
            let vfsBytes = (MemoryLayout<sqlite3_vfs>.size + 15) & ~15
            let fixed = (UnsafeMutableRawPointer(vfs) + vfsBytes).load(as: Int64.self)
            if fixed != 0 {
                out.pointee = fixed + BatchClock.unixEpochJulianMillis
                return SQLITE_OK
            }
            var ts = timespec()
            clock_gettime(CLOCK_REALTIME, &ts)
            out.pointee = Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000 + BatchClock.unixEpochJulianMillis
            return SQLITE_OK
        }
        guard sqlite3_vfs_register(vfs, 0) == SQLITE_OK else { throw SQLiteError(message: "cannot register the batch clock VFS") }
    }

    /// Unix milliseconds to report, or 0 for the real clock.
    var fixedMillis: Int64 {
        get { nowSlot.pointee }
        set { nowSlot.pointee = newValue }
    }

    deinit {
        sqlite3_vfs_unregister(vfs)
        free(nameBuffer)
        raw.deallocate()
    }
}

/// One SQLite connection with CairnDB's guards: an authorizer that refuses statements which would
/// escape the database or change its durability, and deterministic `random()`/`randomblob()`.
final class SQLiteConnection {
    private(set) var db: OpaquePointer?
    let context = ConnectionContext()
    let clock: BatchClock
    private let contextPointer: UnsafeMutableRawPointer
    /// The result code of the last failed user statement (extended codes).
    private(set) var lastErrorCode: Int32 = SQLITE_OK
    /// CairnDB's own statements (transactions, savepoints, the applied index), prepared once.
    private var internalStatements: [String: OpaquePointer] = [:]
    /// Clients' single-statement SQL, prepared once and reused with new parameters: a workload repeats
    /// a few statements, and preparing is most of the cost of a small one. SQLite prepares a statement
    /// again by itself when the schema changes under it.
    private var statementCache: [String: CachedStatement] = [:]
    /// Per connection, and a node has one per group: bounds memory when clients inline values in SQL
    /// (every text then differs, and the cache starts over whenever it fills).
    static let maxCachedStatements = 64

    private struct CachedStatement {
        let statement: OpaquePointer
        /// What the authorizer found while preparing it (it is not consulted again on reuse).
        let modifiesRows: Bool
    }

    init(path: String) throws {
        clock = try BatchClock()
        contextPointer = Unmanaged.passUnretained(context).toOpaque()
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        guard sqlite3_open_v2(path, &db, flags, clock.name) == SQLITE_OK else {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            throw SQLiteError(message: "cannot open \(path): \(msg)")
        }
        // Durability comes from the Raft log: SQLite may lose its last transactions on power loss (WAL
        // with synchronous=NORMAL stays consistent), and those entries are applied again from the log.
        try exec("PRAGMA journal_mode=WAL")
        try exec("PRAGMA synchronous=NORMAL")
        sqlite3_extended_result_codes(db, 1)
        installFunctions()
        // Checked every thousand VM steps: interrupts a read that has run past its deadline.
        sqlite3_progress_handler(db, 1000, { ctx in
            let context = Unmanaged<ConnectionContext>.fromOpaque(ctx!).takeUnretainedValue()
            return context.deadlineNanos != 0 && DispatchTime.now().uptimeNanoseconds > context.deadlineNanos ? 1 : 0
        }, contextPointer)
        sqlite3_set_authorizer(db, { ctx, action, arg1, arg2, _, _ in
            let context = Unmanaged<ConnectionContext>.fromOpaque(ctx!).takeUnretainedValue()
            if context.internalAccess { return SQLITE_OK }
            let a1 = arg1.map { String(cString: $0) } ?? ""
            let a2 = arg2.map { String(cString: $0) } ?? ""
            // Rows of user tables; DDL also writes sqlite_master, which does not count.
            if action == SQLITE_INSERT || action == SQLITE_UPDATE || action == SQLITE_DELETE, !a1.lowercased().hasPrefix("sqlite_") {
                context.modifiesRows = true
            }
            if let reason = SQLiteConnection.refusal(action: action, arg1: a1, arg2: a2) {
                context.denial = reason
                return SQLITE_DENY
            }
            return SQLITE_OK
        }, contextPointer)
    }

    deinit { close() }

    /// Closes the database now (before its file is replaced); the connection is unusable afterwards.
    func close() {
        finalizeCachedStatements()
        sqlite3_close_v2(db)
        db = nil
    }

    private func finalizeCachedStatements() {
        for s in internalStatements.values { sqlite3_finalize(s) }
        for c in statementCache.values { sqlite3_finalize(c.statement) }
        internalStatements = [:]
        statementCache = [:]
    }

    /// False while a transaction is open.
    var isAutocommit: Bool { sqlite3_get_autocommit(db) != 0 }

    /// PRAGMAs a client may run: reading the schema, checking integrity, and settings that replicate
    /// like data. Anything else (journal_mode, synchronous, wal_checkpoint, writable_schema, ...) could
    /// change durability or make replicas diverge.
    static let allowedPragmas: Set<String> = [
        "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
        "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check", "collation_list",
        "function_list", "pragma_list", "compile_options", "user_version", "application_id",
        "foreign_keys", "defer_foreign_keys", "recursive_triggers", "data_version", "page_count", "page_size",
        "freelist_count", "encoding", "schema_version",
    ]

    /// Why the authorizer refuses an action, or nil to allow it.
    static func refusal(action: Int32, arg1: String, arg2: String) -> String? {
        switch action {
        case SQLITE_ATTACH, SQLITE_DETACH:
            return "ATTACH and DETACH are not allowed: a statement may only use its own database"
        case SQLITE_PRAGMA:
            let name = arg1.lowercased()
            if name == "schema_version" && !arg2.isEmpty { return "PRAGMA schema_version cannot be set: it would corrupt the database" }
            if allowedPragmas.contains(name) { return nil }
            return "PRAGMA \(name) is not allowed: it could change durability or make replicas diverge"
        case SQLITE_FUNCTION:
            if arg2.lowercased() == "load_extension" { return "load_extension() is not allowed" }
            return nil
        case SQLITE_TRANSACTION, SQLITE_SAVEPOINT:
            return "transaction statements are not allowed: every request is one transaction (send it atomic for all-or-nothing)"
        case SQLITE_READ, SQLITE_UPDATE, SQLITE_INSERT, SQLITE_DELETE, SQLITE_DROP_TABLE, SQLITE_ALTER_TABLE,
             SQLITE_CREATE_INDEX, SQLITE_CREATE_TRIGGER, SQLITE_DROP_INDEX, SQLITE_DROP_TRIGGER:
            if arg1.lowercased().hasPrefix("_cairn") { return "tables named _cairn* are reserved for CairnDB" }
            return nil
        case SQLITE_CREATE_TABLE, SQLITE_CREATE_VIEW, SQLITE_CREATE_TEMP_TABLE:
            if arg1.lowercased().hasPrefix("_cairn") { return "tables named _cairn* are reserved for CairnDB" }
            return nil
        default:
            return nil
        }
    }

    private func installFunctions() {
        // random() and randomblob(N) draw from the batch's seed while applying; outside, from SQLite.
        sqlite3_create_function_v2(db, "random", 0, SQLITE_UTF8, contextPointer, { ctx, _, _ in
            let context = Unmanaged<ConnectionContext>.fromOpaque(sqlite3_user_data(ctx)!).takeUnretainedValue()
            if context.random != nil {
                sqlite3_result_int64(ctx, Int64(bitPattern: context.random!.next()))
            } else {
                var v: Int64 = 0
                sqlite3_randomness(8, &v)
                sqlite3_result_int64(ctx, v)
            }
        }, nil, nil, nil)
        sqlite3_create_function_v2(db, "randomblob", 1, SQLITE_UTF8, contextPointer, { ctx, _, argv in
            let context = Unmanaged<ConnectionContext>.fromOpaque(sqlite3_user_data(ctx)!).takeUnretainedValue()
            let n = max(1, min(Int(sqlite3_value_int64(argv![0])), 1 << 30))
            var bytes = [UInt8](repeating: 0, count: n)
            if context.random != nil {
                for i in 0..<n { bytes[i] = UInt8(truncatingIfNeeded: context.random!.next()) }
            } else {
                sqlite3_randomness(Int32(n), &bytes)
            }
            sqlite3_result_blob(ctx, bytes, Int32(n), transientDestructor)
        }, nil, nil, nil)
    }

    /// Runs CairnDB's own SQL (no parameters, no rows), bypassing the authorizer.
    func exec(_ sql: String) throws {
        context.internalAccess = true
        defer { context.internalAccess = false }
        var err: UnsafeMutablePointer<CChar>?
        guard sqlite3_exec(db, sql, nil, nil, &err) == SQLITE_OK else {
            let msg = err.map { String(cString: $0) } ?? "unknown error"
            sqlite3_free(err)
            throw SQLiteError(message: "\(sql): \(msg)")
        }
    }

    /// Runs one of CairnDB's own statements (no rows; at most one integer parameter), bypassing the
    /// authorizer; each is prepared once per connection.
    func execPrepared(_ sql: String, binding value: Int64? = nil) throws {
        context.internalAccess = true
        defer { context.internalAccess = false }
        let s: OpaquePointer
        if let cached = internalStatements[sql] {
            s = cached
        } else {
            var stmt: OpaquePointer?
            guard sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil) == SQLITE_OK, let stmt else {
                throw SQLiteError(message: "\(sql): \(String(cString: sqlite3_errmsg(db)))")
            }
            internalStatements[sql] = stmt
            s = stmt
        }
        defer { sqlite3_reset(s) }
        if let value { sqlite3_bind_int64(s, 1, value) }
        let rc = sqlite3_step(s)
        guard rc == SQLITE_DONE || rc == SQLITE_ROW else { throw SQLiteError(message: "\(sql): \(String(cString: sqlite3_errmsg(db)))") }
    }

    /// Runs every statement in `statement.sql` with its parameters, collecting rows and counts.
    /// `readOnly` refuses anything that would write.
    func run(_ statement: SQLStatement, readOnly: Bool, timeoutNanos: UInt64 = 0) -> StatementResult {
        // Only reads are timed: interrupting a write would depend on this machine's speed, and every
        // replica must apply it the same way.
        context.deadlineNanos = readOnly && timeoutNanos > 0 ? DispatchTime.now().uptimeNanoseconds + timeoutNanos : 0
        defer { context.deadlineNanos = 0 }
        var result = StatementResult()
        if let cached = statementCache[statement.sql] {
            context.denial = nil
            context.modifiesRows = cached.modifiesRows
            defer {
                sqlite3_reset(cached.statement)
                sqlite3_clear_bindings(cached.statement)
            }
            _ = execute(cached.statement, statement, readOnly: readOnly, into: &result)
            return result
        }
        let utf8 = Array(statement.sql.utf8CString)
        utf8.withUnsafeBufferPointer { buffer in
            var tail: UnsafePointer<CChar>? = buffer.baseAddress
            var ranAny = false
            while let start = tail, start.pointee != 0 {
                var stmt: OpaquePointer?
                context.denial = nil
                context.modifiesRows = false
                let rc = sqlite3_prepare_v3(db, start, -1, 0, &stmt, &tail)
                guard rc == SQLITE_OK else {
                    lastErrorCode = rc
                    result = StatementResult(error: errorMessage(rc))
                    return
                }
                guard let s = stmt else { continue } // whitespace or a comment
                // The whole text is this one statement: keep it prepared for the next time.
                let keep = !ranAny && Self.isBlank(tail)
                ranAny = true
                if keep {
                    if statementCache.count >= Self.maxCachedStatements {
                        for c in statementCache.values { sqlite3_finalize(c.statement) }
                        statementCache = [:]
                    }
                    statementCache[statement.sql] = CachedStatement(statement: s, modifiesRows: context.modifiesRows)
                }
                defer {
                    if keep {
                        sqlite3_reset(s)
                        sqlite3_clear_bindings(s)
                    } else {
                        sqlite3_finalize(s)
                    }
                }
                guard execute(s, statement, readOnly: readOnly, into: &result) else { return }
            }
            if !ranAny { result = StatementResult(error: "empty statement") }
        }
        return result
    }

    /// True if `text` holds nothing but whitespace and semicolons.
    private static func isBlank(_ text: UnsafePointer<CChar>?) -> Bool {
        guard var p = text else { return true }
        while p.pointee != 0 {
            switch UInt8(bitPattern: p.pointee) {
            case 0x20, 0x09, 0x0A, 0x0D, 0x0C, 0x3B: p += 1
            default: return false
            }
        }
        return true
    }

    /// Binds and steps one prepared statement, filling `result`; false if it failed (`result` holds why).
    private func execute(_ s: OpaquePointer, _ statement: SQLStatement, readOnly: Bool, into result: inout StatementResult) -> Bool {
        if readOnly && sqlite3_stmt_readonly(s) == 0 {
            // rqlite's words, which its clients match on.
            lastErrorCode = SQLITE_ERROR
            result = StatementResult(error: "attempt to change database via query operation")
            return false
        }
        if let error = bind(statement, to: s) {
            lastErrorCode = SQLITE_ERROR
            result = StatementResult(error: error)
            return false
        }
        // Columns are read after the first step: a statement kept prepared across a schema change is
        // prepared again by that step, and `SELECT *` may then have more columns.
        var step = sqlite3_step(s)
        let count = Int(sqlite3_column_count(s))
        var columns: [String] = []
        var types: [String] = []
        columns.reserveCapacity(count)
        types.reserveCapacity(count)
        for i in 0..<Int32(count) {
            columns.append(String(cString: sqlite3_column_name(s, i)))
            types.append(sqlite3_column_decltype(s, i).map { String(cString: $0) } ?? "")
        }
        var rows: [[SQLValue]] = []
        while step == SQLITE_ROW {
            var row: [SQLValue] = []
            row.reserveCapacity(count)
            for i in 0..<Int32(count) { row.append(columnValue(s, i)) }
            rows.append(row)
            step = sqlite3_step(s)
        }
        guard step == SQLITE_DONE else {
            lastErrorCode = sqlite3_extended_errcode(db)
            result = StatementResult(error: errorMessage(step))
            return false
        }
        result.columns = columns
        result.types = types
        result.rows = rows
        if context.modifiesRows {
            context.carriedChanges = Int64(sqlite3_changes(db))
            context.carriedInsertRowID = sqlite3_last_insert_rowid(db)
        }
        if sqlite3_stmt_readonly(s) == 0 {
            result.rowsAffected = context.carriedChanges
            result.lastInsertID = context.carriedInsertRowID
        }
        return true
    }

    /// True if every statement in `sql` only reads (SQLite's own judgement, `sqlite3_stmt_readonly`).
    /// SQL that does not prepare counts as a write, so that its error comes back from the write path.
    func isReadOnly(_ sql: String) -> Bool {
        let utf8 = Array(sql.utf8CString)
        return utf8.withUnsafeBufferPointer { buffer in
            var tail: UnsafePointer<CChar>? = buffer.baseAddress
            var any = false
            while let start = tail, start.pointee != 0 {
                var stmt: OpaquePointer?
                guard sqlite3_prepare_v2(db, start, -1, &stmt, &tail) == SQLITE_OK else { return false }
                guard let s = stmt else { continue }
                defer { sqlite3_finalize(s) }
                any = true
                if sqlite3_stmt_readonly(s) == 0 { return false }
            }
            return any
        }
    }

    private func bind(_ statement: SQLStatement, to s: OpaquePointer) -> String? {
        let parameters = Int(sqlite3_bind_parameter_count(s))
        if statement.positional.count > parameters {
            return "the statement takes \(parameters) parameter(s), \(statement.positional.count) given"
        }
        for (i, v) in statement.positional.enumerated() { bindValue(v, s, Int32(i + 1)) }
        for (name, v) in statement.named {
            let candidates = [":", "@", "$"].contains(String(name.prefix(1))) ? [name] : [":" + name, "@" + name, "$" + name]
            guard let index = candidates.lazy.map({ sqlite3_bind_parameter_index(s, $0) }).first(where: { $0 > 0 }) else {
                return "the statement has no parameter named \(name)"
            }
            bindValue(v, s, index)
        }
        return nil
    }

    private func bindValue(_ v: SQLValue, _ s: OpaquePointer, _ i: Int32) {
        switch v {
        case .null: sqlite3_bind_null(s, i)
        case .integer(let x): sqlite3_bind_int64(s, i, x)
        case .real(let x): sqlite3_bind_double(s, i, x)
        case .text(let x): sqlite3_bind_text(s, i, x, -1, transientDestructor)
        case .blob(let x): sqlite3_bind_blob(s, i, x, Int32(x.count), transientDestructor)
        }
    }

    private func columnValue(_ s: OpaquePointer, _ i: Int32) -> SQLValue {
        switch sqlite3_column_type(s, i) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(s, i))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(s, i))
        case SQLITE_TEXT:
            let n = Int(sqlite3_column_bytes(s, i))
            guard let p = sqlite3_column_text(s, i) else { return .text("") }
            return .text(String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self))
        case SQLITE_BLOB:
            let n = Int(sqlite3_column_bytes(s, i))
            guard n > 0, let p = sqlite3_column_blob(s, i) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default: return .null
        }
    }

    private func errorMessage(_ rc: Int32) -> String {
        // The authorizer recorded why it refused (SQLite itself only says "not authorized").
        if let denial = context.denial { return denial }
        if rc == SQLITE_INTERRUPT && context.deadlineNanos != 0 { return "query timed out (db_timeout)" }
        return String(cString: sqlite3_errmsg(db))
    }
}
