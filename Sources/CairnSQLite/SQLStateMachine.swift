import CSQLite3
import CairnRaft
import Foundation

/// The replicated state of one Raft group: a SQLite database to which committed entries are applied.
/// The index of the last applied entry is stored in the same transaction as the entry's effects, so a
/// restart never applies an entry twice or skips one. One owner at a time (the group's apply loop).
public final class SQLStateMachine {
    public let path: String
    private var connection: SQLiteConnection
    public private(set) var appliedIndex: LogIndex = 0
    /// The membership in force at `appliedIndex`, if a configuration was ever applied or installed.
    public private(set) var confState: ConfState?
    /// The index of the entry that dropped this database, if one did: later entries change nothing,
    /// and the runtime refuses their writers and every read.
    public private(set) var droppedAt: LogIndex?
    /// The connections that serve queries (never this machine's own, which only applies entries).
    public let reads: ReadConnections
    /// This replica's digests at consistency checks, and how they compare with the leader's.
    public let consistency = ConsistencyRecord()
    /// Computes the digest a consistency check asks for, off the apply thread (the runtime hands it to
    /// a thread of its own); without one, the digest is computed at once.
    public var digestScheduler: (@Sendable (PinnedRead) -> Void)?

    public init(path: String) throws {
        self.path = path
        connection = try SQLiteConnection(path: path, role: .apply)
        reads = ReadConnections(path: path)
        try loadMeta()
    }

    /// Creates the bookkeeping table if needed and reads the applied index and membership from it.
    private func loadMeta() throws {
        try connection.exec("INSERT OR IGNORE INTO \(Bookkeeping.table)(key, value) VALUES ('applied_index', 0)")
        (appliedIndex, confState, droppedAt) = try Self.readAllMeta(ofFile: path)
        reads.publish(applied: appliedIndex, dropped: droppedAt)
    }

    /// One committed entry for `apply(batch:)`: a batch of SQL, or an entry that changes no data (a
    /// leader's no-op, or a membership change, recorded so snapshots carry the membership at their index).
    public enum Change: Sendable {
        case command(SQLCommand)
        case empty(ConfState?)
    }

    /// Applies the committed entry at `index` carrying `command`; returns each statement's result.
    public func apply(index: LogIndex, command: SQLCommand) throws -> [StatementResult] {
        try apply(batch: [(index, .command(command))])[0]
    }

    public func applyEmpty(index: LogIndex, confState newConf: ConfState? = nil) throws {
        _ = try apply(batch: [(index, .empty(newConf))])
    }

    /// Applies consecutive committed entries in one SQLite transaction, together with the applied index:
    /// a restart never re-applies or skips one, and a busy group pays one commit for many entries.
    /// In a non-atomic entry each statement runs in its own savepoint, so a failed statement leaves no
    /// trace while the others take effect; an atomic entry runs in one savepoint and rolls back to it at
    /// its first failure. Returns each entry's statement results.
    public func apply(batch: [(index: LogIndex, change: Change)]) throws -> [[StatementResult]] {
        guard let first = batch.first, let last = batch.last else { return [] }
        precondition(first.index == appliedIndex + 1, "applying entry \(first.index) after \(appliedIndex)")
        precondition(last.index == first.index + LogIndex(batch.count - 1), "a batch of entries with a gap")
        // A consistency check reads the database as of its own entry: what comes before it commits first.
        var results: [[StatementResult]] = []
        results.reserveCapacity(batch.count)
        var start = 0
        for (k, item) in batch.enumerated() {
            guard case .command(let c) = item.change, c.consistencyCheck != nil else { continue }
            results += try applyRun(Array(batch[start...k]))
            start = k + 1
            if droppedAt == nil { try takeDigest() }
        }
        if start < batch.count { results += try applyRun(Array(batch[start...])) }
        return results
    }

    private func takeDigest() throws {
        let pinned = try reads.pin()
        precondition(pinned.index == appliedIndex, "a digest pinned at \(pinned.index), not at the check's entry \(appliedIndex)")
        if let digestScheduler {
            digestScheduler(pinned)
        } else {
            consistency.recordMine(try pinned.digest())
        }
    }

    /// Applies a run of entries in one transaction, again from its start after a statement that rolled
    /// the transaction back.
    private func applyRun(_ batch: [(index: LogIndex, change: Change)]) throws -> [[StatementResult]] {
        // A statement whose conflict resolution is ROLLBACK (`INSERT OR ROLLBACK`, `RAISE(ROLLBACK)` in a
        // trigger) ends the whole transaction, savepoints and the other entries' work included. The
        // batch is then applied again from its start with that statement failing alone, as any other
        // failed statement does. Every replica meets the same statement at the same point, so all of
        // them take the same path.
        var rolledBack: [StatementPosition: StatementResult] = [:]
        // What DDL reports as carried over must not depend on an abandoned pass.
        let carried = (connection.context.carriedChanges, connection.context.carriedInsertRowID, connection.context.insertRowIDBeforeEntry)
        while true {
            do {
                return try applyOnce(batch, rolledBack: rolledBack)
            } catch let e as TransactionRolledBack {
                precondition(rolledBack[e.position] == nil, "a statement rolled the transaction back twice")
                rolledBack[e.position] = e.result
                connection.noteRollback()
                (connection.context.carriedChanges, connection.context.carriedInsertRowID, connection.context.insertRowIDBeforeEntry) = carried
                connection.resetInsertRowID()
            }
        }
    }

    /// Where a statement sits in a batch: its entry's position, and its own within the entry.
    private struct StatementPosition: Hashable {
        let entry: Int
        let statement: Int
    }

    private struct TransactionRolledBack: Error {
        let position: StatementPosition
        let result: StatementResult
    }

    private func applyOnce(_ batch: [(index: LogIndex, change: Change)],
                           rolledBack: [StatementPosition: StatementResult]) throws -> [[StatementResult]] {
        var all: [[StatementResult]] = []
        all.reserveCapacity(batch.count)
        var newConf: ConfState?
        var newDroppedAt: LogIndex?
        try connection.checkSettings()
        try connection.execPrepared("BEGIN IMMEDIATE")
        do {
            for (position, (index, change)) in batch.enumerated() {
                switch change {
                case .empty(let conf):
                    if let c = conf {
                        let hex = c.encoded().map { String(format: "%02x", $0) }.joined()
                        try connection.exec("INSERT OR REPLACE INTO \(Bookkeeping.table)(key, value) VALUES ('conf_state', X'\(hex)')")
                        newConf = c
                    }
                    all.append([])
                case .command(let command):
                    if droppedAt != nil || newDroppedAt != nil {
                        all.append([])  // after the drop: nothing runs (the runtime refuses its writer)
                    } else if let check = command.consistencyCheck {
                        if let expected = check.expected { consistency.recordLeader(expected) }
                        all.append([])
                    } else if command.dropsDatabase {
                        try connection.execPrepared("INSERT OR REPLACE INTO \(Bookkeeping.table)(key, value) VALUES ('dropped_at', ?1)", binding: Int64(index))
                        newDroppedAt = index
                        all.append([])
                    } else {
                        all.append(try run(command, entry: position, rolledBack: rolledBack))
                    }
                }
            }
            try connection.execPrepared("UPDATE \(Bookkeeping.table) SET value = ?1 WHERE key = 'applied_index'", binding: Int64(batch.last!.index))
            try connection.execPrepared("COMMIT")
        } catch {
            if !connection.isAutocommit { try? connection.exec("ROLLBACK") }
            throw error
        }
        appliedIndex = batch.last!.index
        if let newConf { confState = newConf }
        if let newDroppedAt { droppedAt = newDroppedAt }
        reads.publish(applied: appliedIndex, dropped: droppedAt)
        return all
    }

    private func run(_ command: SQLCommand, entry: Int, rolledBack: [StatementPosition: StatementResult]) throws -> [StatementResult] {
        connection.clock!.fixedMillis = command.timestampMillis == 0 ? 1 : command.timestampMillis
        connection.context.random = SplitMix64(seed: command.randomSeed)
        defer {
            connection.clock!.fixedMillis = 0
            connection.context.random = nil
        }
        try connection.beginEntry()
        let atomic = command.atomic || command.replacesDatabaseKeeping != nil
        connection.context.inAtomicEntry = atomic
        defer { connection.context.inAtomicEntry = false }
        if atomic { try connection.execPrepared("SAVEPOINT cairn_entry") }
        if let keep = command.replacesDatabaseKeeping {
            // CairnDB's own entry, from a file it checked: it swaps a whole database in, indexes built
            // included, so no per-statement budget applies (it is deterministic all the same).
            connection.unbudgeted = true
            defer { connection.unbudgeted = false }
            try connection.dropUserObjects(keeping: keep)
            var results: [StatementResult] = []
            for statement in command.statements {
                let r = connection.run(statement)
                results.append(r)
                if r.error != nil {
                    try connection.execPrepared("ROLLBACK TO cairn_entry")
                    connection.noteRollback()
                    break
                }
            }
            try connection.execPrepared("RELEASE cairn_entry")
            return results
        }
        var results: [StatementResult] = []
        results.reserveCapacity(command.statements.count)
        for (k, statement) in command.statements.enumerated() {
            let position = StatementPosition(entry: entry, statement: k)
            if let failed = rolledBack[position] {
                // It already failed and took the transaction with it: it runs no more, as if refused.
                results.append(failed)
                if atomic {
                    try connection.execPrepared("ROLLBACK TO cairn_entry")
                    connection.noteRollback()
                    break
                }
                continue
            }
            if !atomic { try connection.execPrepared("SAVEPOINT cairn_statement") }
            let r = connection.run(statement)
            // Only a constraint's own ROLLBACK, or a statement stopped at its step budget (SQLite rolls
            // back the transaction of an interrupted write), ends the transaction deterministically; an
            // I/O error or a full disk that did so is this machine's problem, and fails the apply below.
            let code = connection.lastErrorCode & 0xFF
            if r.error != nil && connection.isAutocommit && (code == SQLITE_CONSTRAINT || code == SQLITE_INTERRUPT) {
                throw TransactionRolledBack(position: position, result: r)
            }
            results.append(r)
            if r.error != nil {
                connection.noteRollback()
                if atomic {
                    try connection.execPrepared("ROLLBACK TO cairn_entry")
                    break
                }
                try connection.execPrepared("ROLLBACK TO cairn_statement")
            }
            if !atomic { try connection.execPrepared("RELEASE cairn_statement") }
        }
        if atomic { try connection.execPrepared("RELEASE cairn_entry") }
        return results
    }

    /// Writes a consistent copy of the database to `destination` and syncs it, without stopping applies
    /// for long: the copy runs on its own read connection (WAL readers do not block the writer).
    /// Returns the applied index and membership the copy holds.
    public static func writeSnapshot(of databasePath: String, to destination: String) throws -> (index: LogIndex, conf: ConfState?) {
        try? FileManager.default.removeItem(atPath: destination)
        try withReadOnly(databasePath, "VACUUM INTO ?") { db, stmt in
            sqlite3_bind_text(stmt, 1, destination, -1, transientDestructor)
            guard sqlite3_step(stmt) == SQLITE_DONE else {
                throw SQLiteError(message: "cannot snapshot \(databasePath): \(String(cString: sqlite3_errmsg(db)))")
            }
        }
        try syncPath(destination)
        return try readMeta(ofFile: destination)
    }

    /// Reads the applied index and membership of a database file without changing it.
    public static func readMeta(ofFile file: String) throws -> (index: LogIndex, conf: ConfState?) {
        let meta = try readAllMeta(ofFile: file)
        return (meta.index, meta.conf)
    }

    /// `readMeta`, and the index of the entry that dropped the database, if one did.
    private static func readAllMeta(ofFile file: String) throws -> (index: LogIndex, conf: ConfState?, droppedAt: LogIndex?) {
        // A snapshot from a node of an earlier version keeps the bookkeeping under its old name.
        let table = (try? withReadOnly(file, "SELECT 1 FROM \(Bookkeeping.table) LIMIT 0") { _, _ in Bookkeeping.table }) ?? Bookkeeping.legacyTable
        return try withReadOnly(file, "SELECT key, value FROM \(table)") { _, stmt in
            var applied: LogIndex?
            var conf: ConfState?
            var dropped: LogIndex?
            while sqlite3_step(stmt) == SQLITE_ROW {
                let key = String(cString: sqlite3_column_text(stmt, 0))
                if key == "applied_index" { applied = LogIndex(sqlite3_column_int64(stmt, 1)) }
                if key == "dropped_at" { dropped = LogIndex(sqlite3_column_int64(stmt, 1)) }
                if key == "conf_state", let p = sqlite3_column_blob(stmt, 1) {
                    conf = ConfState(decoding: Array(UnsafeRawBufferPointer(start: p, count: Int(sqlite3_column_bytes(stmt, 1)))))
                }
            }
            guard let applied else { throw SQLiteError(message: "\(file) has no applied index") }
            return (applied, conf, dropped)
        }
    }

    /// Runs `body` with one statement prepared on a read-only connection of its own (CairnDB's internal
    /// reads of database files: no authorizer, no batch clock).
    private static func withReadOnly<T>(_ file: String, _ sql: String,
                                        _ body: (OpaquePointer?, OpaquePointer?) throws -> T) throws -> T {
        var db: OpaquePointer?
        guard sqlite3_open_v2(file, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK else {
            sqlite3_close(db)
            throw SQLiteError(message: "cannot open \(file)")
        }
        // Like the read pool's: closing never checkpoints or deletes the WAL of a file being replaced.
        _ = cairn_db_config_set(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        defer { sqlite3_close(db) }
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK else {
            throw SQLiteError(message: "\(file): \(sql): \(String(cString: sqlite3_errmsg(db)))")
        }
        defer { sqlite3_finalize(stmt) }
        return try body(db, stmt)
    }

    /// Replaces the whole database with a snapshot file (which is left in place), atomically: a copy
    /// is synced and renamed over the database.
    public func install(snapshotFile: String) throws {
        let temporary = path + ".installing"
        try? FileManager.default.removeItem(atPath: temporary)
        try FileManager.default.copyItem(atPath: snapshotFile, toPath: temporary)
        try Self.syncPath(temporary)
        try reads.replacingFile {
            // Close the old database before replacing it; its WAL belongs to the old contents.
            connection.close()
            for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            guard rename(temporary, path) == 0 else { throw SQLiteError(message: "cannot install a snapshot over \(path)") }
            try Self.syncPath((path as NSString).deletingLastPathComponent)
            connection = try SQLiteConnection(path: path, role: .apply)
        }
        try loadMeta()
    }

    static func syncPath(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SQLiteError(message: "cannot open \(path) to sync it") }
        defer { Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw SQLiteError(message: "cannot sync \(path)") }
    }

    /// Runs a read-only statement against the applied state on a read connection; a statement that
    /// would write is refused.
    public func query(_ statement: SQLStatement, timeoutNanos: UInt64 = 0) -> StatementResult {
        reads.query([statement], timeoutNanos: timeoutNanos)[0]
    }

    /// Test only (reached through `--enable-fault-injection`): runs `sql` on this replica alone, outside
    /// the log, to make it diverge on purpose.
    public func divergeForTesting(_ sql: String) throws {
        try connection.exec(sql)
    }

    /// Closes the database (before its files are deleted).
    public func close() {
        reads.close()
        connection.close()
    }

    /// Whether `sql` only reads (for requests that mix reads and writes), judged on a read connection.
    public func isReadOnly(_ sql: String) -> Bool { (try? reads.isReadOnly(sql)) ?? false }

    /// A user's copy of the database: consistent (one read transaction), synced, without CairnDB's
    /// own bookkeeping table.
    public static func writeBackup(of databasePath: String, to destination: String) throws {
        _ = try writeSnapshot(of: databasePath, to: destination)
        var db: OpaquePointer?
        guard sqlite3_open_v2(destination, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK else {
            sqlite3_close(db)
            throw SQLiteError(message: "cannot open the backup \(destination)")
        }
        defer { sqlite3_close(db) }
        // SQLite refuses to drop a table in its reserved namespace; the schema row goes, then VACUUM drops its pages.
        let strip = "DROP TABLE IF EXISTS \(Bookkeeping.legacyTable); PRAGMA writable_schema=ON; DELETE FROM sqlite_master WHERE tbl_name = '\(Bookkeeping.table)'; PRAGMA writable_schema=OFF; VACUUM"
        guard sqlite3_exec(db, strip, nil, nil, nil) == SQLITE_OK else {
            throw SQLiteError(message: "cannot prepare the backup: \(String(cString: sqlite3_errmsg(db)))")
        }
    }

    /// The database as SQL text that recreates it (the shape of sqlite3's `.dump`), skipping CairnDB's
    /// bookkeeping. Reads `file` on a connection of its own.
    public static func dump(file: String, tables: Set<String>? = nil) throws -> String {
        var out = "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n"
        let schema: [(type: String, name: String, table: String, sql: String)] = try withReadOnly(file, """
            SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'
            AND name NOT LIKE '\\_cairn%' ESCAPE '\\' ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, rowid
            """) { _, stmt in
            var rows: [(String, String, String, String)] = []
            while sqlite3_step(stmt) == SQLITE_ROW {
                rows.append((String(cString: sqlite3_column_text(stmt, 0)), String(cString: sqlite3_column_text(stmt, 1)),
                             String(cString: sqlite3_column_text(stmt, 2)), String(cString: sqlite3_column_text(stmt, 3))))
            }
            return rows
        }
        for object in schema where tables == nil || tables!.contains(object.table) {
            out += object.sql + ";\n"
            guard object.type == "table" else { continue }
            let quoted = "\"" + object.name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            try withReadOnly(file, "SELECT * FROM \(quoted)") { _, stmt in
                let columns = sqlite3_column_count(stmt)
                while sqlite3_step(stmt) == SQLITE_ROW {
                    var values: [String] = []
                    for i in 0..<columns { values.append(sqlLiteral(stmt!, i)) }
                    out += "INSERT INTO \(quoted) VALUES(\(values.joined(separator: ",")));\n"
                }
            }
        }
        return out + "COMMIT;\n"
    }

    private static func sqlLiteral(_ s: OpaquePointer, _ i: Int32) -> String {
        switch sqlite3_column_type(s, i) {
        case SQLITE_INTEGER: return String(sqlite3_column_int64(s, i))
        case SQLITE_FLOAT:
            let d = sqlite3_column_double(s, i)
            return d.isFinite ? "\(d)" : (d > 0 ? "1e999" : (d < 0 ? "-1e999" : "NULL"))
        case SQLITE_TEXT:
            let text = String(cString: sqlite3_column_text(s, i))
            return "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
        case SQLITE_BLOB:
            let n = Int(sqlite3_column_bytes(s, i))
            guard n > 0, let p = sqlite3_column_blob(s, i) else { return "X''" }
            return "X'" + UnsafeRawBufferPointer(start: p, count: n).map { String(format: "%02X", $0) }.joined() + "'"
        default: return "NULL"
        }
    }
}
