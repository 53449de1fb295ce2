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

/// Limits on what SQL may do. Those on writes are constants of the build, never settings: a write that
/// passed on one replica and failed on another would make them diverge. Every node of a cluster must run
/// the same SQLite (step counts are SQLite's own).
public enum SQLiteLimits {
    /// Virtual-machine steps one statement of a write may take: SQLite's own count, never wall time, so
    /// every replica stops the same statement at the same point. A 100,000-row INSERT ... SELECT into a
    /// table with an index takes 3 million; a runaway statement stopped at 10 million has cost about
    /// 0.4 s of the apply thread (its rollback and the batch's second pass included).
    public static let maxStatementSteps: Int64 = 10_000_000
    /// Steps all the statements of one entry may take together (one entry holds up to thousands).
    public static let maxEntrySteps: Int64 = 50_000_000
    /// Steps each statement of the entry that ends a load may take: it builds the file's indexes over
    /// all its rows (CairnDB's own statements, checked to be one each).
    public static let maxLoadStatementSteps: Int64 = 2_000_000_000
    /// The largest string or BLOB a statement may make or read (`SQLITE_LIMIT_LENGTH`).
    public static let maxValueBytes: Int32 = 32 << 20
    /// The longest SQL text of one statement (`SQLITE_LIMIT_SQL_LENGTH`).
    public static let maxSQLBytes: Int32 = 32 << 20
    /// The most a statement's result may hold (the values' bytes): results are kept in memory whole.
    public static let maxResultBytes = 64 << 20
    /// How often (in steps) the progress handler looks at budgets and deadlines.
    static let progressEverySteps: Int32 = 1000

    /// SQLite's limits on every connection, the same everywhere.
    static let connectionLimits: [(Int32, Int32)] = [
        (SQLITE_LIMIT_LENGTH, maxValueBytes),
        (SQLITE_LIMIT_SQL_LENGTH, maxSQLBytes),
        (SQLITE_LIMIT_COLUMN, 2000),
        (SQLITE_LIMIT_EXPR_DEPTH, 1000),
        (SQLITE_LIMIT_COMPOUND_SELECT, 500),
        (SQLITE_LIMIT_FUNCTION_ARG, 127),
        (SQLITE_LIMIT_ATTACHED, 0),
        (SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 50_000),
        (SQLITE_LIMIT_VARIABLE_NUMBER, 250_000),
        (SQLITE_LIMIT_TRIGGER_DEPTH, 100),
        (SQLITE_LIMIT_WORKER_THREADS, 0),
    ]

    static func check() {
        precondition(maxStatementSteps <= maxEntrySteps, "a statement's budget exceeds its entry's")
        // SQLite counts a statement's steps in a 32-bit int.
        precondition(maxEntrySteps < Int64(Int32.max), "step budgets must fit SQLite's counter")
        precondition(maxSQLBytes <= maxValueBytes, "SQLite caps SQL text at the value length")
    }
}

/// Per-connection state the C callbacks reach through their user-data pointer.
final class ConnectionContext {
    /// True while CairnDB runs its own statements (transactions, the applied index).
    var internalAccess = false
    var role = ConnectionRole.apply
    /// Why the authorizer refused the last statement, to replace SQLite's bare "not authorized".
    var denial: String?
    /// Set by the authorizer while preparing a statement that inserts, updates or deletes rows.
    var modifiesRows = false
    /// Set by the authorizer while preparing an ALTER TABLE.
    var preparingAlterTable = false
    /// Set by the authorizer while preparing a statement that changes the schema, and once SQLite
    /// rewrites its schema table for it (see `Authorizer.refusal`).
    var preparingSchemaChange = false
    var preparingSchemaRewrite = false
    /// The table (lowercased) a DROP TABLE being prepared drops: its shard guard's triggers go with it.
    var preparingDropOf: String?
    /// Set by the authorizer while preparing an ANALYZE (never kept prepared: it is judged by whether
    /// its entry is atomic).
    var preparingAnalyze = false
    /// True while an atomic entry applies.
    var inAtomicEntry = false
    /// A read running past this moment (monotonic nanoseconds; 0: none) is interrupted.
    var deadlineNanos: UInt64 = 0
    /// What the last row-modifying user statement reported: DDL reports these again, as SQLite (and
    /// so rqlite) does; CairnDB's own bookkeeping writes must not show through.
    var carriedChanges: Int64 = 0
    var carriedInsertRowID: Int64 = 0
    /// Drives `random()` and `randomblob()` while a batch applies; nil outside an apply.
    var random: SplitMix64?
    /// Steps the statements of the current entry may still take.
    var entryStepsLeft: Int64 = SQLiteLimits.maxEntrySteps
    /// Where `total_changes()` counts from in the current entry.
    var entryTotalChangesBase: Int64 = 0
    /// The rowid of the connection's last insert before the current entry, which SQLite's
    /// `last_insert_rowid()` no longer shows (it starts each entry at 0) but DDL reports, as rqlite does.
    var insertRowIDBeforeEntry: Int64 = 0
    /// A row was written with the largest rowid (see `SQLiteConnection.largestRowIDMessage`).
    var wroteLargestRowID = false
    /// Where the slots of shard keys the guards judge while clients' entries apply are kept (the
    /// state machine's, which outlives this connection across snapshot installs).
    var slotSample: SlotSample?
    /// A statement failed or was rolled back since the schema was last known loaded: SQLite may load
    /// it again at the next statement, which must happen outside that statement's step budget.
    var schemaMayBeStale = true
}

/// One SQLite connection with CairnDB's guards: an authorizer that refuses what would escape the
/// database, change its durability or (on the apply connection) make replicas diverge; step budgets
/// and limits on value sizes; and functions whose results depend on the entry alone.
final class SQLiteConnection {
    private(set) var db: OpaquePointer?
    let role: ConnectionRole
    let context = ConnectionContext()
    /// The apply connection's clock; read connections see the real one.
    let clock: BatchClock?
    let contextPointer: UnsafeMutableRawPointer
    /// The apply connection's step counter (see `cairn_budget_progress`); unlimited between user statements.
    private let budget: UnsafeMutablePointer<cairn_budget>
    /// The result code of the last failed user statement (extended codes).
    private(set) var lastErrorCode: Int32 = SQLITE_OK
    /// CairnDB's own statements (transactions, savepoints, the applied index), prepared once.
    private var internalStatements: [String: OpaquePointer] = [:]
    /// Clients' single-statement SQL, prepared once and reused with new parameters: a workload repeats
    /// a few statements, and preparing is most of the cost of a small one. SQLite prepares a statement
    /// again by itself when the schema changes under it.
    /// By the text's bytes (`SQLTextKey`), never by `String` equality.
    private var statementCache: [SQLTextKey: CachedStatement] = [:]
    /// Per connection: bounds memory when clients inline values in SQL (every text then differs, and
    /// the cache starts over whenever it fills).
    static let maxCachedStatements = 64

    private struct CachedStatement {
        let statement: OpaquePointer
        /// What the authorizer found while preparing it (it is not consulted again on reuse).
        let modifiesRows: Bool
    }

    /// The settings every connection has, asserted at open (and on the apply connection before every batch).
    private static let fixedConfig: [(option: Int32, value: Int32)] = [
        (SQLITE_DBCONFIG_DEFENSIVE, 1),
        (SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0),
        (SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0),
        (SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0),
        (SQLITE_DBCONFIG_ENABLE_FKEY, 0),
        (SQLITE_DBCONFIG_ENABLE_TRIGGER, 1),
        (SQLITE_DBCONFIG_ENABLE_VIEW, 1),
        (SQLITE_DBCONFIG_DQS_DML, 1),
        (SQLITE_DBCONFIG_DQS_DDL, 1),
        (SQLITE_DBCONFIG_LEGACY_ALTER_TABLE, 0),
        (SQLITE_DBCONFIG_RESET_DATABASE, 0),
    ]

    /// Local time is UTC in this process: `datetime('now', 'localtime')` in a write must not depend on
    /// where a node runs. Set once, before the first connection opens.
    private static let utcLocalTime: Void = {
        setenv("TZ", "UTC0", 1)
        tzset()
        SQLiteLimits.check()
    }()

    /// The apply connection checkpoints its WAL when it reaches this many frames.
    static let walAutocheckpointFrames = 300

    init(path: String, role: ConnectionRole) throws {
        _ = Self.utcLocalTime
        self.role = role
        clock = role == .apply ? try BatchClock() : nil
        contextPointer = Unmanaged.passUnretained(context).toOpaque()
        budget = .allocate(capacity: 1)
        budget.initialize(to: cairn_budget(used: 0, limit: .max))
        let flags = (role == .apply ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY) | SQLITE_OPEN_NOMUTEX
        guard sqlite3_open_v2(path, &db, flags, clock?.name) == SQLITE_OK else {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            db = nil
            throw SQLiteError(message: "cannot open \(path): \(msg)")
        }
        sqlite3_extended_result_codes(db, 1)
        if role == .apply {
            // Durability comes from the Raft log: SQLite may lose its last transactions on power loss (WAL
            // with synchronous=NORMAL stays consistent), and those entries are applied again from the log.
            try exec("PRAGMA journal_mode=WAL")
            try exec("PRAGMA synchronous=NORMAL")
            // SQLite checkpoints on the committing connection, syncing the WAL first: what piled up
            // since the last checkpoint is flushed while every write behind it waits. At its default
            // (1,000 frames, 4 MB) that stall was 20-25 ms on this machine, once or twice a second
            // under load: CairnDB's write p99. A third of it is a third of the stall, three times as
            // often, and measured no slower (`bench/NOTES.md`, round sixteen).
            try exec("PRAGMA wal_autocheckpoint=\(Self.walAutocheckpointFrames)")
            // This connection's own, never in the file: a DELETE of nothing from it resets changes().
            try exec("CREATE TEMP TABLE \(Self.resetTable)(x)")
        }
        for (option, value) in Self.fixedConfig { _ = cairn_db_config_set(db, option, value) }
        // A read connection that closes last must not checkpoint or delete the WAL: when a snapshot
        // replaces the file, a reader still open on the old one would otherwise delete the new one's WAL.
        _ = cairn_db_config_set(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, role == .read ? 1 : 0)
        for (limit, value) in SQLiteLimits.connectionLimits { sqlite3_limit(db, limit, value) }
        ShardFunctions.install(on: db!, context: role == .apply ? contextPointer : nil)
        if role == .apply {
            installApplyFunctions()
            sqlite3_update_hook(db, { ctx, _, _, _, rowid in
                if rowid == Int64.max { Unmanaged<ConnectionContext>.fromOpaque(ctx!).takeUnretainedValue().wroteLargestRowID = true }
            }, contextPointer)
        }
        try checkSettings()
        if role == .apply {
            sqlite3_progress_handler(db, 1, cairn_budget_progress, budget)
        } else {
            sqlite3_progress_handler(db, SQLiteLimits.progressEverySteps, { ctx in
                let context = Unmanaged<ConnectionContext>.fromOpaque(ctx!).takeUnretainedValue()
                return context.deadlineNanos != 0 && DispatchTime.now().uptimeNanoseconds > context.deadlineNanos ? 1 : 0
            }, contextPointer)
        }
        installAuthorizer()
    }

    /// The authorizer: `Authorizer.refusal` with this connection's role.
    private func installAuthorizer() {
        let callback: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?,
                                      UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Int32 = { ctx, action, arg1, arg2, database, _ in
            let context = Unmanaged<ConnectionContext>.fromOpaque(ctx!).takeUnretainedValue()
            if context.internalAccess { return SQLITE_OK }
            let a1 = arg1.map { String(cString: $0) }
            // Rows of user tables; DDL also writes sqlite_master, which does not count.
            if action == SQLITE_INSERT || action == SQLITE_UPDATE || action == SQLITE_DELETE, let t = a1, !t.lowercased().hasPrefix("sqlite_") {
                context.modifiesRows = true
            }
            if action == SQLITE_ALTER_TABLE { context.preparingAlterTable = true }
            if action == SQLITE_DROP_TABLE { context.preparingDropOf = a1?.lowercased() }
            // Dropping a sharded table's copy on a shard drops its guard triggers (SQLite asks about each):
            // CairnDB's names, but part of the table's own drop, which the router sends.
            if action == SQLITE_DROP_TRIGGER, let trigger = a1?.lowercased(), trigger.hasPrefix("_cairn_guard_"),
               let table = arg2.map({ String(cString: $0).lowercased() }), table == context.preparingDropOf {
                return SQLITE_OK
            }
            if action == SQLITE_ANALYZE { context.preparingAnalyze = true }
            if Authorizer.changesSchema(action: action, arg1: a1) { context.preparingSchemaChange = true }
            if Authorizer.rewritesSchema(action: action, arg1: a1) { context.preparingSchemaRewrite = true }
            let reason = Authorizer.refusal(action: action, arg1: a1, arg2: arg2.map { String(cString: $0) },
                                            database: database.map { String(cString: $0) }, role: context.role,
                                            duringAlterTable: context.preparingAlterTable,
                                            duringSchemaChange: context.preparingSchemaChange,
                                            duringSchemaRewrite: context.preparingSchemaRewrite, inAtomicEntry: context.inAtomicEntry)
            if let reason {
                context.denial = reason
                return SQLITE_DENY
            }
            return SQLITE_OK
        }
        context.role = role
        sqlite3_set_authorizer(db, callback, contextPointer)
    }

    deinit {
        close()
        budget.deallocate()
    }

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

    /// Fails unless every fixed setting holds (a tripwire: the authorizer lets no statement change them).
    func checkSettings() throws {
        for (option, value) in Self.fixedConfig where cairn_db_config_get(db, option) != value {
            throw SQLiteError(message: "SQLite setting \(option) is \(cairn_db_config_get(db, option)), not \(value)")
        }
        for (limit, value) in SQLiteLimits.connectionLimits where sqlite3_limit(db, limit, -1) != value {
            throw SQLiteError(message: "SQLite limit \(limit) is \(sqlite3_limit(db, limit, -1)), not \(value)")
        }
    }

    /// Starts an entry on the apply connection: what its statements see of the connection's counters,
    /// and their step budget, depend on the entry alone.
    func beginEntry() throws {
        if sqlite3_last_insert_rowid(db) != 0 { context.insertRowIDBeforeEntry = sqlite3_last_insert_rowid(db) }
        sqlite3_set_last_insert_rowid(db, 0)
        // SQLite's changes() is the count of the last INSERT, UPDATE or DELETE on the connection, which
        // DDL leaves as it was (and a trigger's frame restores): a DELETE of nothing sets it to 0, and
        // SQLite has no call for that.
        try execPrepared("DELETE FROM temp.\(Self.resetTable) WHERE 0")
        context.entryTotalChangesBase = sqlite3_total_changes64(db)
        context.entryStepsLeft = SQLiteLimits.maxEntrySteps
    }

    /// Makes SQLite load the schema now if it dropped it (after a rollback of DDL), rather than inside
    /// the next statement's step, where the work would count against that statement's budget on one
    /// replica (the statement kept prepared) and not on another (prepared afresh after a restart).
    private func loadSchema() {
        // Restored, not cleared: these nest (a statement of CairnDB's own may load the schema, which runs more).
        let wasInternal = context.internalAccess
        context.internalAccess = true
        defer { context.internalAccess = wasInternal }
        var stmt: OpaquePointer?
        sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master LIMIT 0", -1, &stmt, nil)
        sqlite3_finalize(stmt)
        context.schemaMayBeStale = false
    }

    /// A table in the apply connection's temp schema (reserved name: user SQL cannot reach it).
    static let resetTable = "_cairn_reset"

    /// The file header's application_id: CairnDB's applied-index marker (see `Bookkeeping`).
    func applicationID() throws -> Int32 {
        // Restored, not cleared: these nest (a statement of CairnDB's own may load the schema, which runs more).
        let wasInternal = context.internalAccess
        context.internalAccess = true
        defer { context.internalAccess = wasInternal }
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, "PRAGMA application_id", -1, &stmt, nil) == SQLITE_OK else {
            throw SQLiteError(message: String(cString: sqlite3_errmsg(db)))
        }
        defer { sqlite3_finalize(stmt) }
        guard sqlite3_step(stmt) == SQLITE_ROW else { throw SQLiteError(message: String(cString: sqlite3_errmsg(db))) }
        return Int32(truncatingIfNeeded: sqlite3_column_int64(stmt, 0))
    }

    /// Sets the applied-index marker inside the open transaction (PRAGMA takes no parameters).
    func setApplicationID(_ value: Int32) throws {
        try exec("PRAGMA application_id=\(value)")
    }

    /// Whether the database has a table named `name` (CairnDB's own read).
    func tableExists(_ name: String) throws -> Bool {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", -1, &stmt, nil) == SQLITE_OK else {
            throw SQLiteError(message: String(cString: sqlite3_errmsg(db)))
        }
        defer { sqlite3_finalize(stmt) }
        sqlite3_bind_text(stmt, 1, name, -1, transientDestructor)
        return sqlite3_step(stmt) == SQLITE_ROW
    }

    /// Set while CairnDB's own load entry runs (see `SQLCommand.replacesDatabaseKeeping`).
    var unbudgeted = false

    /// Drops every table, view and trigger of the database except CairnDB's own and those named with
    /// `prefix` (CairnDB's own access, for the entry that ends a load).
    func dropUserObjects(keeping prefix: String) throws {
        var objects: [(type: String, name: String, virtual: Bool)] = []
        context.internalAccess = true
        var stmt: OpaquePointer?
        let sql = "SELECT type, name, coalesce(sql, '') LIKE 'CREATE VIRTUAL%' FROM sqlite_master WHERE type IN ('table', 'view', 'trigger') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK else {
            context.internalAccess = false
            throw SQLiteError(message: String(cString: sqlite3_errmsg(db)))
        }
        while sqlite3_step(stmt) == SQLITE_ROW {
            let name = String(cString: sqlite3_column_text(stmt, 1))
            guard !name.lowercased().hasPrefix(prefix.lowercased()) else { continue }
            objects.append((String(cString: sqlite3_column_text(stmt, 0)), name, sqlite3_column_int(stmt, 2) != 0))
        }
        sqlite3_finalize(stmt)
        context.internalAccess = false
        // Views and triggers first, then virtual tables (which take their shadow tables along), then the rest.
        let order: ((type: String, name: String, virtual: Bool)) -> Int = { $0.type != "table" ? 0 : ($0.virtual ? 1 : 2) }
        for o in objects.sorted(by: { order($0) < order($1) }) {
            let quoted = "\"" + o.name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            try exec("DROP \(o.type.uppercased()) IF EXISTS \(quoted)")
        }
    }

    /// Before a batch is applied again from its start: what its first pass inserted is not "before" it.
    func resetInsertRowID() { sqlite3_set_last_insert_rowid(db, 0) }

    /// After CairnDB rolls back (to a savepoint, or the whole transaction): SQLite may have dropped its
    /// schema (DDL was undone), and must load it again outside the next statement's budget.
    func noteRollback() { context.schemaMayBeStale = true }

    /// Runs `body` (CairnDB's own statements) without changing the row id the client's next statement
    /// reports as its last insert: a transaction's id, kept in `_cairn_txn`, is not the client's.
    func keepingLastInsertRowID<T>(_ body: () throws -> T) rethrows -> T {
        let before = sqlite3_last_insert_rowid(db)
        defer { sqlite3_set_last_insert_rowid(db, before) }
        return try body()
    }

    /// Runs CairnDB's own SQL (no parameters, no rows), bypassing the authorizer.
    func exec(_ sql: String) throws {
        // Restored, not cleared: these nest (a statement of CairnDB's own may load the schema, which runs more).
        let wasInternal = context.internalAccess
        context.internalAccess = true
        defer { context.internalAccess = wasInternal }
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
        // Restored, not cleared: these nest (a statement of CairnDB's own may load the schema, which runs more).
        let wasInternal = context.internalAccess
        context.internalAccess = true
        defer { context.internalAccess = wasInternal }
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

    static let nulMessage = "the SQL text contains a NUL character (U+0000), where SQLite would take it to end; send such text as a parameter"

    /// Runs every statement in `statement.sql` with its parameters, collecting rows and counts.
    /// On a read connection, anything that would write is refused, and a statement running past
    /// `timeoutNanos` is interrupted.
    func run(_ statement: SQLStatement, timeoutNanos: UInt64 = 0) -> StatementResult {
        if SQLTextKey.hasNUL(statement.sql) {
            lastErrorCode = SQLITE_ERROR
            return StatementResult(error: Self.nulMessage)
        }
        // Only reads are timed: interrupting a write would depend on this machine's speed, and every
        // replica must apply it the same way (writes have step budgets instead).
        context.deadlineNanos = role == .read && timeoutNanos > 0 ? DispatchTime.now().uptimeNanoseconds + timeoutNanos : 0
        defer { context.deadlineNanos = 0 }
        var result = StatementResult()
        if let cached = statementCache[SQLTextKey(statement.sql)] {
            context.denial = nil
            context.modifiesRows = cached.modifiesRows
            context.preparingAlterTable = false
            context.preparingSchemaChange = false
            context.preparingSchemaRewrite = false
            context.preparingDropOf = nil
            defer {
                sqlite3_reset(cached.statement)
                sqlite3_clear_bindings(cached.statement)
            }
            _ = execute(cached.statement, statement, into: &result)
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
                context.preparingAlterTable = false
                context.preparingSchemaChange = false
                context.preparingSchemaRewrite = false
                context.preparingAnalyze = false
                context.preparingDropOf = nil
                let rc = sqlite3_prepare_v3(db, start, -1, 0, &stmt, &tail)
                guard rc == SQLITE_OK else {
                    lastErrorCode = rc
                    result = StatementResult(error: errorMessage(rc))
                    return
                }
                guard let s = stmt else { continue } // whitespace or a comment
                // The whole text is this one statement: keep it prepared for the next time.
                let keep = !ranAny && Self.isBlank(tail) && !context.preparingAnalyze
                ranAny = true
                if keep {
                    if statementCache.count >= Self.maxCachedStatements {
                        for c in statementCache.values { sqlite3_finalize(c.statement) }
                        statementCache = [:]
                    }
                    statementCache[SQLTextKey(statement.sql)] = CachedStatement(statement: s, modifiesRows: context.modifiesRows)
                }
                defer {
                    if keep {
                        sqlite3_reset(s)
                        sqlite3_clear_bindings(s)
                    } else {
                        sqlite3_finalize(s)
                    }
                }
                guard execute(s, statement, into: &result) else { return }
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

    static let largestRowIDMessage = "rowid 9223372036854775807 is not allowed: after it SQLite picks rowids at random, which replicas cannot agree on"

    static func budgetMessage(_ limit: Int64) -> String {
        "the statement exceeded its budget of \(limit) steps (a limit on the work one write may do, the same on every node); split the work into smaller statements"
    }

    /// Binds and steps one prepared statement, filling `result`; false if it failed (`result` holds why).
    private func execute(_ s: OpaquePointer, _ statement: SQLStatement, into result: inout StatementResult) -> Bool {
        if role == .read && sqlite3_stmt_readonly(s) == 0 {
            // rqlite's words, which its clients match on.
            lastErrorCode = SQLITE_ERROR
            result = StatementResult(error: "attempt to change database via query operation")
            return false
        }
        if let error = Self.bind(statement, to: s) {
            lastErrorCode = SQLITE_ERROR
            result = StatementResult(error: error)
            return false
        }
        let budgeted = role == .apply
        let limit = unbudgeted ? SQLiteLimits.maxLoadStatementSteps : min(SQLiteLimits.maxStatementSteps, context.entryStepsLeft)
        if budgeted {
            if context.schemaMayBeStale { loadSchema() }
            context.wroteLargestRowID = false
            budget.pointee = cairn_budget(used: 0, limit: limit)
        }
        defer {
            budget.pointee.limit = .max
            if budgeted && result.error != nil { context.schemaMayBeStale = true }
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
        var resultBytes = 0
        while step == SQLITE_ROW {
            var row: [SQLValue] = []
            row.reserveCapacity(count)
            for i in 0..<Int32(count) {
                let v = columnValue(s, i)
                resultBytes += v.sizeBytes
                row.append(v)
            }
            rows.append(row)
            // The whole result is held in memory (and then as JSON): a query that would make more
            // than this fails with the limit rather than taking the node's memory.
            if resultBytes > SQLiteLimits.maxResultBytes {
                lastErrorCode = SQLITE_TOOBIG
                result = StatementResult(error: "the result exceeds the limit of \(SQLiteLimits.maxResultBytes) bytes; select fewer rows or columns (LIMIT, OFFSET)")
                return false
            }
            step = sqlite3_step(s)
        }
        if budgeted {
            let steps = budget.pointee.used
            context.entryStepsLeft = max(0, context.entryStepsLeft - steps)
            if steps > limit {
                lastErrorCode = sqlite3_extended_errcode(db)
                result = StatementResult(error: Self.budgetMessage(limit))
                return false
            }
            if context.wroteLargestRowID {
                lastErrorCode = SQLITE_ERROR
                result = StatementResult(error: Self.largestRowIDMessage)
                return false
            }
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
            context.carriedChanges = sqlite3_changes64(db)
            let rowID = sqlite3_last_insert_rowid(db)
            context.carriedInsertRowID = rowID != 0 ? rowID : context.insertRowIDBeforeEntry
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
        if SQLTextKey.hasNUL(sql) { return false }
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

    static func bind(_ statement: SQLStatement, to s: OpaquePointer) -> String? {
        let parameters = Int(sqlite3_bind_parameter_count(s))
        if statement.positional.count > parameters {
            return "the statement takes \(parameters) parameter(s), \(statement.positional.count) given"
        }
        for (i, v) in statement.positional.enumerated() {
            if let error = bindValue(v, s, Int32(i + 1)) { return "parameter \(i + 1): \(error)" }
        }
        for (name, v) in statement.named {
            let candidates = [":", "@", "$"].contains(String(name.prefix(1))) ? [name] : [":" + name, "@" + name, "$" + name]
            guard let index = candidates.lazy.map({ sqlite3_bind_parameter_index(s, $0) }).first(where: { $0 > 0 }) else {
                return "the statement has no parameter named \(name)"
            }
            if let error = bindValue(v, s, index) { return "parameter \(name): \(error)" }
        }
        return nil
    }

    private static func bindValue(_ v: SQLValue, _ s: OpaquePointer, _ i: Int32) -> String? {
        let rc: Int32
        switch v {
        case .null: rc = sqlite3_bind_null(s, i)
        case .integer(let x): rc = sqlite3_bind_int64(s, i, x)
        case .real(let x): rc = sqlite3_bind_double(s, i, x)
        case .text(let x):
            // With its length: a NUL inside the text is kept, not taken as its end.
            var x = x
            rc = x.withUTF8 { bytes in
                sqlite3_bind_text64(s, i, UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self),
                                    sqlite3_uint64(bytes.count), transientDestructor, UInt8(SQLITE_UTF8))
            }
        case .blob(let x): rc = sqlite3_bind_blob64(s, i, x, sqlite3_uint64(x.count), transientDestructor)
        }
        if rc == SQLITE_TOOBIG { return "the value exceeds the limit of \(SQLiteLimits.maxValueBytes) bytes" }
        return rc == SQLITE_OK ? nil : String(cString: sqlite3_errstr(rc))
    }

    private func columnValue(_ s: OpaquePointer, _ i: Int32) -> SQLValue { Self.columnValue(s, i) }

    /// A result column's value, as SQLite stores it (text by its length: a NUL inside is kept).
    static func columnValue(_ s: OpaquePointer, _ i: Int32) -> SQLValue {
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
        if rc & 0xFF == SQLITE_TOOBIG { return "a string or BLOB exceeds the limit of \(SQLiteLimits.maxValueBytes) bytes" }
        return String(cString: sqlite3_errmsg(db))
    }
}
