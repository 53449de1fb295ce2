import CSQLite3
import CairnRaft
import Foundation

/// The replicated state of one Raft group: a SQLite database to which committed entries are applied.
/// The index of the last applied entry is stored in the same transaction as the entry's effects, so a
/// restart never applies an entry twice or skips one. One owner at a time (the group's apply loop).
public final class SQLStateMachine {
    public let path: String
    var connection: SQLiteConnection
    /// Transactions across shards prepared here and not finished (nil: not read since the last rollback).
    var preparedCount: Int?
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
    /// Slots the shard guards judged as clients' entries applied (splits by load).
    public let slotSample = SlotSample()
    /// Computes the digest a consistency check asks for, off the apply thread (the runtime hands it to
    /// a thread of its own); without one, the digest is computed at once.
    public var digestScheduler: (@Sendable (PinnedRead) -> Void)?
    /// Takes the child of a split (`ShardSplit`): its first state, a synced snapshot file at the given
    /// path, which the handler moves or deletes. Called before the splitting shard commits its half,
    /// so it must be durable when it returns, and must do nothing when the child already exists here
    /// (the split applied again after a crash).
    public var splitHandler: ((ShardSplit, String) throws -> Void)?
    /// The shard's map version (`_cairn_split_state`), once read; nil after a rollback.
    var splitVersionCache: UInt32?

    /// The sidecar's contents as last written (owned by the apply thread).
    private var book: Bookkeeping

    public init(path: String) throws {
        self.path = path
        // Before the apply connection opens: moving bookkeeping out of the file writes its schema,
        // which that connection's defensive mode forbids.
        book = try Self.adoptBookkeeping(ofFile: path)
        connection = try SQLiteConnection(path: path, role: .apply)
        connection.context.slotSample = slotSample
        reads = ReadConnections(path: path)
        try loadMeta()
    }

    /// The files one database occupies on disk (to delete them together).
    public static func files(of path: String) -> [String] { Bookkeeping.files(of: path) }

    /// Reads the sidecar, creating it for a new database, or moving into it the bookkeeping a file
    /// carries inside (from an earlier version).
    private static func adoptBookkeeping(ofFile path: String) throws -> Bookkeeping {
        let sidecar = Bookkeeping.sidecarPath(of: path)
        guard FileManager.default.fileExists(atPath: path) else {
            // A new database, even where an old one's sidecar was left (a crash while deleting its
            // files): the sidecar first, since a database file without one is refused unless empty.
            let fresh = Bookkeeping(reference: 0)
            try fresh.store(sidecar: sidecar)
            return fresh
        }
        let existing = try Bookkeeping.load(sidecar: sidecar)
        let raw = try RawDatabase(path: path)
        if let embedded = try Bookkeeping.readEmbedded(raw) {
            // The sidecar first, then the file loses its table: a crash in between finds the table
            // again and does the same.
            var book = existing ?? Bookkeeping(reference: embedded.index)
            book.adopt(embedded)
            try book.store(sidecar: sidecar)
            try Bookkeeping.strip(raw, index: embedded.index)
            return book
        }
        if let existing { return existing }
        guard try !raw.hasObjects(), try raw.int64("PRAGMA application_id") == 0 else {
            throw SQLiteError(message: "\(path) has no bookkeeping: \(sidecar) is missing. Replace this node's copy (remove the node from the cluster and join one with an empty data directory)")
        }
        let fresh = Bookkeeping(reference: 0)
        try fresh.store(sidecar: sidecar)
        return fresh
    }

    /// The applied index from the file's header (resolved against the sidecar), and the membership and
    /// drop in force there.
    private func loadMeta() throws {
        appliedIndex = try Bookkeeping.resolve(marker: try connection.applicationID(), near: book.reference)
        (confState, droppedAt) = try book.state(at: appliedIndex)
        reads.publish(applied: appliedIndex, dropped: droppedAt)
        reads.endStateChange(publishedAnswers())
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
            guard case .command(let c) = item.change else { continue }
            if let split = c.split {
                // A split copies the shard as of the entry before it: that much commits first.
                if start < k { results += try applyRun(Array(batch[start..<k])) }
                results.append(try applySplit(split, index: item.index))
                start = k + 1
                continue
            }
            guard c.consistencyCheck != nil else { continue }
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
    struct StatementPosition: Hashable {
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
        // Membership changes and the drop go to the sidecar before the transaction that applies them,
        // and that transaction is synced: the sidecar is never behind the file, and the file never
        // falls back behind a record after it.
        // Chosen by what the batch carries, not by whether the sidecar changed now: a batch applied
        // again after a rollback finds its records already written, and must still sync.
        let recorded = try recordBookkeeping(for: batch)
        if recorded { try connection.execPrepared("PRAGMA synchronous=FULL") }
        defer { if recorded { try? connection.execPrepared("PRAGMA synchronous=NORMAL") } }
        // A step of a transaction across shards moves the shard's state: reads ask SQLite for it until
        // the batch's is published.
        // So does a load's last entry, which replaces every table (the reserved ones too).
        let stepsTransactions = batch.contains {
            if case .command(let c) = $0.change { c.transaction != nil || c.replacesDatabaseKeeping != nil } else { false }
        }
        if stepsTransactions { reads.beginStateChange() }
        defer { if stepsTransactions { reads.endStateChange(publishedAnswers()) } }
        try connection.execPrepared("BEGIN IMMEDIATE")
        do {
            for (position, (index, change)) in batch.enumerated() {
                switch change {
                case .empty(let conf):
                    if let c = conf { newConf = c }
                    all.append([])
                case .command(let command):
                    if droppedAt != nil || newDroppedAt != nil {
                        all.append([])  // after the drop: nothing runs (the runtime refuses its writer)
                    } else if let check = command.consistencyCheck {
                        if let expected = check.expected { consistency.recordLeader(expected) }
                        all.append([])
                    } else if command.dropsDatabase {
                        newDroppedAt = index
                        all.append([])
                    } else if let refusal = try staleMapRefusal(command) {
                        all.append(refusal)
                    } else if let step = command.transaction {
                        all.append(try applyTransaction(step, command, entry: position, rolledBack: rolledBack))
                    } else if try isLocked() {
                        // A transaction across shards holds this shard until it finishes: every write
                        // fails alike on every replica, and the router sends it again after.
                        all.append(command.statements.map { _ in StatementResult(error: TransactionStep.lockedMessage) })
                    } else {
                        all.append(try run(command, entry: position, rolledBack: rolledBack))
                    }
                }
            }
            try connection.setApplicationID(Bookkeeping.marker(of: batch.last!.index))
            try connection.execPrepared("COMMIT")
        } catch {
            if !connection.isAutocommit { try? connection.exec("ROLLBACK") }
            preparedCount = nil
            splitVersionCache = nil
            throw error
        }
        appliedIndex = batch.last!.index
        if let newConf { confState = newConf }
        if let newDroppedAt { droppedAt = newDroppedAt }
        let knowsAnswers = reads.publish(applied: appliedIndex, dropped: droppedAt)
        // Answers forgotten (a rollback) are learnt again while nothing changes them.
        if !stepsTransactions && !knowsAnswers, let known = publishedAnswers() { reads.learnAnswers(known) }
        return all
    }

    /// The shard's state a sharded read asks at its read point (`API.shardReadStatements`): how many
    /// transactions across shards hold it, and its transaction epoch.
    public static let shardStateQuery = SQLStatement("SELECT xepoch, prepared FROM _cairn_shard_state")

    /// CairnDB's own statements the read connections answer from what the apply connection published
    /// (`ReadConnections.query`): only commits that may change their answers are bracketed for them.
    static let publishedQueries = [splitVersionQuery.sql, shardStateQuery.sql]

    /// SQLite's answers to `publishedQueries` on the committed file (a reserved table's absence is an
    /// answer too); nil when the apply connection cannot tell (inside a transaction, or a failure).
    func publishedAnswers() -> [String: StatementResult]? {
        // Closed: a replacement of the file failed half-way.
        guard connection.db != nil, connection.isAutocommit else { return nil }
        var answers: [String: StatementResult] = [:]
        for sql in Self.publishedQueries {
            let r = connection.internalRun(sql)
            if let e = r.error, !e.hasPrefix("no such table") { return nil }
            answers[sql] = r
        }
        return answers
    }

    /// Applies the entry at `index` alone, in a transaction of its own whose work is `body` (CairnDB's
    /// own statements), then moves the applied index to it.
    func commitAlone(index: LogIndex, _ body: () throws -> [StatementResult]) throws -> [StatementResult] {
        precondition(index == appliedIndex + 1, "applying entry \(index) after \(appliedIndex)")
        let entry: [(index: LogIndex, change: Change)] = [(index, .empty(nil))]
        let recorded = try recordBookkeeping(for: entry)
        // A split commits here: reads ask SQLite for its state until the new one is published.
        reads.beginStateChange()
        defer { reads.endStateChange(publishedAnswers()) }
        if recorded { try connection.execPrepared("PRAGMA synchronous=FULL") }
        defer { if recorded { try? connection.execPrepared("PRAGMA synchronous=NORMAL") } }
        try connection.execPrepared("BEGIN IMMEDIATE")
        let results: [StatementResult]
        do {
            results = try body()
            try connection.setApplicationID(Bookkeeping.marker(of: index))
            try connection.execPrepared("COMMIT")
        } catch {
            if !connection.isAutocommit { try? connection.exec("ROLLBACK") }
            preparedCount = nil
            splitVersionCache = nil
            connection.noteRollback()
            throw error
        }
        connection.noteRollback()
        appliedIndex = index
        reads.publish(applied: appliedIndex, dropped: droppedAt)
        return results
    }

    /// Writes the batch's membership changes and drop to the sidecar (if they are not there yet), and
    /// moves its reference when the applied index has gone far from it; returns whether the batch
    /// carries any of these, so that its transaction must be synced.
    private func recordBookkeeping(for batch: [(index: LogIndex, change: Change)]) throws -> Bool {
        var next = book
        next.forget(after: appliedIndex)
        var dropped = droppedAt
        var carries = false
        for (index, change) in batch {
            switch change {
            case .empty(let conf?):
                next.record(conf: conf, at: index)
                carries = true
            case .command(let c) where dropped == nil && c.consistencyCheck == nil && c.dropsDatabase:
                next.droppedAt = index
                dropped = index
                carries = true
            default: break
            }
        }
        if batch.last!.index - min(batch.last!.index, next.reference) >= Bookkeeping.referenceRefreshDistance {
            next.reference = appliedIndex
            carries = true
        }
        if next != book {
            try next.store(sidecar: Bookkeeping.sidecarPath(of: path))
            book = next
        }
        return carries
    }

    func run(_ command: SQLCommand, entry: Int, rolledBack: [StatementPosition: StatementResult]) throws -> [StatementResult] {
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
        if let guardSpec = command.shardGuard, atomic, results.count == command.statements.count, results.allSatisfy({ $0.error == nil }) {
            if let failure = connection.installShardGuard(guardSpec) {
                results[results.count - 1] = StatementResult(error: failure)
                try connection.execPrepared("ROLLBACK TO cairn_entry")
                connection.noteRollback()
            }
        }
        if atomic { try connection.execPrepared("RELEASE cairn_entry") }
        return results
    }

    /// Writes a consistent copy of the database to `destination` and syncs it, without stopping applies
    /// for long: the copy runs on its own read connection (WAL readers do not block the writer). The
    /// copy carries its bookkeeping inside (a snapshot travels as one file). Returns the applied index
    /// and membership the copy holds.
    public static func writeSnapshot(of databasePath: String, to destination: String) throws -> (index: LogIndex, conf: ConfState?) {
        try copy(databasePath, to: destination)
        let meta: Bookkeeping.Embedded
        do {
            let copy = try RawDatabase(path: destination)
            guard let book = try Bookkeeping.load(sidecar: Bookkeeping.sidecarPath(of: databasePath)) else {
                throw SQLiteError(message: "\(databasePath) has no bookkeeping")
            }
            // The sidecar is never behind the file, so it covers the copy's entry.
            let index = try Bookkeeping.resolve(marker: Int32(truncatingIfNeeded: try copy.int64("PRAGMA application_id")), near: book.reference)
            let (conf, dropped) = try book.state(at: index)
            meta = Bookkeeping.Embedded(index: index, conf: conf, droppedAt: dropped)
            try Bookkeeping.embed(meta, in: copy)
        }
        try syncPath(destination)
        return (meta.index, meta.conf)
    }

    /// A consistent copy of a database file (one read transaction), in rollback-journal mode.
    private static func copy(_ databasePath: String, to destination: String) throws {
        try? FileManager.default.removeItem(atPath: destination)
        // On a read connection of its own: WAL readers do not block the writer.
        try RawDatabase(path: databasePath, readOnly: true).exec("VACUUM INTO '\(destination.replacingOccurrences(of: "'", with: "''"))'")
    }

    /// Reads the applied index and membership of a database file (with its sidecar) or of a snapshot
    /// file, without changing it.
    public static func readMeta(ofFile file: String) throws -> (index: LogIndex, conf: ConfState?) {
        let raw = try RawDatabase(path: file, readOnly: true)
        if let embedded = try Bookkeeping.readEmbedded(raw) { return (embedded.index, embedded.conf) }
        guard let book = try Bookkeeping.load(sidecar: Bookkeeping.sidecarPath(of: file)) else {
            throw SQLiteError(message: "\(file) has no bookkeeping")
        }
        let index = try Bookkeeping.resolve(marker: Int32(truncatingIfNeeded: try raw.int64("PRAGMA application_id")), near: book.reference)
        return (index, try book.state(at: index).conf)
    }

    /// Replaces the whole database with a snapshot file (which is left in place), atomically: a copy
    /// is stripped of the bookkeeping it carries (which goes to the sidecar first), synced and renamed
    /// over the database.
    public func install(snapshotFile: String) throws {
        let temporary = path + ".installing"
        for suffix in ["", "-journal"] { try? FileManager.default.removeItem(atPath: temporary + suffix) }
        try FileManager.default.copyItem(atPath: snapshotFile, toPath: temporary)
        var next = book
        do {
            let raw = try RawDatabase(path: temporary)
            guard let embedded = try Bookkeeping.readEmbedded(raw) else {
                throw SQLiteError(message: "the snapshot \(snapshotFile) carries no bookkeeping")
            }
            next.forget(after: appliedIndex)
            next.adopt(embedded)
            // Until the rename, the database is the old file, whose state the sidecar still records.
            try next.store(sidecar: Bookkeeping.sidecarPath(of: path))
            book = next
            try Bookkeeping.strip(raw, index: embedded.index)
        }
        try Self.syncPath(temporary)
        reads.beginStateChange()
        defer { reads.endStateChange(publishedAnswers()) }
        try reads.replacingFile {
            // Close the old database before replacing it; its WAL belongs to the old contents.
            connection.close()
            for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            guard rename(temporary, path) == 0 else { throw SQLiteError(message: "cannot install a snapshot over \(path)") }
            try Self.syncPath((path as NSString).deletingLastPathComponent)
            connection = try SQLiteConnection(path: path, role: .apply)
            connection.context.slotSample = slotSample
            preparedCount = nil
            splitVersionCache = nil
        }
        try loadMeta()
    }

    /// Syncs a directory, so that a rename in it survives power loss.
    public static func syncDirectory(_ path: String) throws { try syncPath(path) }

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

    /// A user's copy of the database: consistent (one read transaction), synced, with nothing of
    /// CairnDB's in it (its header's application_id, CairnDB's marker, is cleared).
    public static func writeBackup(of databasePath: String, to destination: String) throws {
        try copy(databasePath, to: destination)
        do { try RawDatabase(path: destination).exec("PRAGMA application_id=0") }
        try syncPath(destination)
    }

    /// The database as SQL text that recreates it (the shape of sqlite3's `.dump`), skipping CairnDB's
    /// bookkeeping, written to `output` a megabyte at a time (a dump can be larger than memory). Reads
    /// `file` on a connection of its own, in one read transaction: the dump is of one moment.
    public static func dump(file: String, tables: Set<String>? = nil, to output: String) throws {
        guard FileManager.default.createFile(atPath: output, contents: nil, attributes: [.posixPermissions: 0o600]),
              let out = FileHandle(forWritingAtPath: output) else { throw SQLiteError(message: "cannot create \(output)") }
        defer { try? out.close() }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(DumpLimits.flushBytes + 4096)
        func flushIfFull() throws {
            if buffer.count >= DumpLimits.flushBytes {
                try out.write(contentsOf: buffer)
                buffer.removeAll(keepingCapacity: true)
            }
        }
        func emit(_ text: String) throws {
            buffer.append(contentsOf: text.utf8)
            try flushIfFull()
        }
        try emit("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n")
        let db = try RawDatabase(path: file, readOnly: true)
        try db.exec("BEGIN")
        var schema: [(type: String, name: String, table: String, sql: String)] = []
        try db.each("""
            SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'
            AND name NOT LIKE '\\_cairn%' ESCAPE '\\' ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, rowid
            """) { stmt in
            schema.append((String(cString: sqlite3_column_text(stmt, 0)), String(cString: sqlite3_column_text(stmt, 1)),
                           String(cString: sqlite3_column_text(stmt, 2)), String(cString: sqlite3_column_text(stmt, 3))))
        }
        for object in schema where tables == nil || tables!.contains(object.table) {
            try emit(object.sql + ";\n")
            guard object.type == "table" else { continue }
            let quoted = "\"" + object.name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            // Generated columns take no values: name the others (`hidden` 0) when there are any.
            var columns: [(name: String, stored: Bool)] = []
            try db.each("SELECT name, hidden FROM pragma_table_xinfo(\(sqlQuoted(object.name)))") { stmt in
                columns.append((String(cString: sqlite3_column_text(stmt, 0)), sqlite3_column_int(stmt, 1) == 0))
            }
            let stored = columns.filter(\.stored).map { "\"" + $0.name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
            let generated = stored.count < columns.count
            let prefix = Array("INSERT INTO \(quoted)\(generated ? "(" + stored.joined(separator: ",") + ")" : "") VALUES(".utf8)
            let select = generated ? stored.joined(separator: ",") : "*"
            try db.each("SELECT \(select) FROM \(quoted)") { stmt in
                // Straight into the buffer: a row's values are never copied into strings of their own.
                buffer.append(contentsOf: prefix)
                for i in 0..<sqlite3_column_count(stmt) {
                    if i > 0 { buffer.append(UInt8(ascii: ",")) }
                    appendLiteral(stmt, i, to: &buffer)
                }
                buffer.append(contentsOf: ");\n".utf8)
                try flushIfFull()
            }
        }
        try emit("COMMIT;\n")
        try out.write(contentsOf: buffer)
        try out.synchronize()
    }

    enum DumpLimits {
        /// A dump is written out whenever this much has gathered.
        static let flushBytes = 1 << 20
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    /// `X'...'`, by table: String(format:) per byte took most of a BLOB-heavy dump's time.
    private static func appendHex(_ bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        out.reserveCapacity(out.count + 2 * bytes.count + 3)
        out.append(contentsOf: "X'".utf8)
        for b in bytes {
            out.append(hexDigits[Int(b >> 4)])
            out.append(hexDigits[Int(b & 0x0F)])
        }
        out.append(UInt8(ascii: "'"))
    }

    private static func appendLiteral(_ s: OpaquePointer, _ i: Int32, to out: inout [UInt8]) {
        switch sqlite3_column_type(s, i) {
        case SQLITE_INTEGER: out.append(contentsOf: String(sqlite3_column_int64(s, i)).utf8)
        case SQLITE_FLOAT:
            let d = sqlite3_column_double(s, i)
            out.append(contentsOf: (d.isFinite ? "\(d)" : (d > 0 ? "1e999" : (d < 0 ? "-1e999" : "NULL"))).utf8)
        case SQLITE_TEXT:
            let n = Int(sqlite3_column_bytes(s, i))
            guard n > 0, let p = sqlite3_column_text(s, i) else { out.append(contentsOf: "''".utf8); return }
            let text = UnsafeBufferPointer(start: p, count: n)
            if text.contains(0) || String(validating: text, as: UTF8.self) == nil {
                // SQL text cannot hold NUL (CairnDB refuses it), and a loader reads the dump as UTF-8:
                // such text goes as bytes, cast back.
                out.append(contentsOf: "CAST(".utf8)
                appendHex(UnsafeRawBufferPointer(text), to: &out)
                out.append(contentsOf: " AS TEXT)".utf8)
                return
            }
            out.append(UInt8(ascii: "'"))
            for b in text {
                out.append(b)
                if b == UInt8(ascii: "'") { out.append(b) }
            }
            out.append(UInt8(ascii: "'"))
        case SQLITE_BLOB:
            let n = Int(sqlite3_column_bytes(s, i))
            appendHex(n > 0 ? UnsafeRawBufferPointer(start: sqlite3_column_blob(s, i), count: n) : UnsafeRawBufferPointer(start: nil, count: 0), to: &out)
        default: out.append(contentsOf: "NULL".utf8)
        }
    }
}

/// `text` as an SQL string literal.
func sqlQuoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }
