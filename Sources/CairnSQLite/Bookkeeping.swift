import CSQLite3
import CairnRaft
import Foundation

/// CairnDB's bookkeeping for one database (the entry its file holds, the membership in force there, the
/// entry that dropped it), kept out of the user's database: its `sqlite_master` lists the user's own
/// objects and nothing else. It lives in two places.
///
/// - The file header's `application_id` holds the applied index's low 32 bits, written in the same
///   transaction as the entries' effects: whatever a crash or a power loss leaves of the file, the file
///   says which entry it holds. (SQLite commits two WAL-mode files atomically only one at a time, so
///   the index cannot live in another file.)
/// - A sidecar file next to the database (this type, replaced whole and synced) holds the rest: a
///   reference index within 2^31 of the file's (which fixes the upper bits), the membership records with
///   the entry each takes effect at, and the drop. A record is on disk before the transaction that applies
///   its entry starts, and that transaction is synced, so the state at the file's index is always the
///   newest record at or before it.
///
/// A database file that carries a `_cairn_meta` table is either a snapshot in transit (a snapshot is one
/// file, its bookkeeping inside) or a database from an earlier version; either way the table is the
/// truth, and is moved into the sidecar when the file is opened or installed.
struct Bookkeeping: Codable, Equatable {
    /// A membership applied at `index` (`ConfState.encoded()`).
    struct ConfRecord: Codable, Equatable {
        var index: LogIndex
        var conf: Data
    }

    /// Within 2^31 of the database file's applied index (see `resolve`).
    var reference: LogIndex
    /// The newest membership records, oldest first.
    var confs: [ConfRecord] = []
    /// Older records were let go: the membership before the first kept one is unknown.
    var confsTrimmed = false
    var droppedAt: LogIndex?

    /// Membership records kept: a batch's transaction is synced once its records are written, so only
    /// the newest two matter after a crash; the rest serve snapshots that read an older state.
    static let maxConfRecords = 8
    /// The reference moves (a sidecar write) once the applied index is this far from it.
    static let referenceRefreshDistance: LogIndex = 1 << 30

    static func sidecarPath(of databasePath: String) -> String { databasePath + "-cairn" }

    /// The files that make up one database on disk.
    static func files(of databasePath: String) -> [String] {
        ["", "-wal", "-shm", "-journal", "-cairn", "-cairn.tmp"].map { databasePath + $0 }
    }

    /// What the file's header holds for `index`.
    static func marker(of index: LogIndex) -> Int32 { Int32(truncatingIfNeeded: index) }

    /// The applied index whose low 32 bits are `marker`, nearest to `reference`.
    static func resolve(marker: Int32, near reference: LogIndex) throws -> LogIndex {
        let delta = Int64(Int32(bitPattern: UInt32(bitPattern: marker) &- UInt32(truncatingIfNeeded: reference)))
        let (index, overflow) = delta >= 0 ? reference.addingReportingOverflow(LogIndex(delta))
                                           : reference.subtractingReportingOverflow(LogIndex(-delta))
        guard !overflow else {
            throw SQLiteError(message: "the database's applied-index marker \(marker) does not fit its bookkeeping (reference \(reference))")
        }
        return index
    }

    /// The membership and the drop in force at `index`.
    func state(at index: LogIndex) throws -> (conf: ConfState?, droppedAt: LogIndex?) {
        var conf: ConfState?
        if let record = confs.last(where: { $0.index <= index }) {
            guard let c = ConfState(decoding: [UInt8](record.conf)) else {
                throw SQLiteError(message: "the membership recorded at entry \(record.index) cannot be decoded")
            }
            conf = c
        } else if confsTrimmed {
            throw SQLiteError(message: "the membership at entry \(index) is no longer recorded (it changed more than \(Self.maxConfRecords) times since)")
        }
        return (conf, droppedAt.flatMap { $0 <= index ? $0 : nil })
    }

    /// Records a membership applied at `index` (again, after a crash, replacing the first record).
    mutating func record(conf: ConfState, at index: LogIndex) {
        confs.removeAll { $0.index >= index }
        confs.append(ConfRecord(index: index, conf: Data(conf.encoded())))
        if confs.count > Self.maxConfRecords {
            confs.removeFirst(confs.count - Self.maxConfRecords)
            confsTrimmed = true
        }
    }

    /// Forgets what was recorded for entries after `index` (they were never applied: the file holds
    /// `index`, and those entries will be applied again, or a snapshot replaced them).
    mutating func forget(after index: LogIndex) {
        confs.removeAll { $0.index > index }
        if let d = droppedAt, d > index { droppedAt = nil }
    }

    /// Takes on the bookkeeping a file carried inside (its index becomes the reference). Records of
    /// earlier entries stay: until the file that carried it replaces the database, the old file's
    /// state must still be known.
    mutating func adopt(_ embedded: Embedded) {
        forget(after: embedded.index)
        reference = embedded.index
        if let c = embedded.conf { record(conf: c, at: embedded.index) }
        droppedAt = embedded.droppedAt
    }

    // MARK: - The sidecar file

    static func load(sidecar path: String) throws -> Bookkeeping? {
        guard let data = FileManager.default.contents(atPath: path) else {
            guard !FileManager.default.fileExists(atPath: path) else { throw SQLiteError(message: "cannot read \(path)") }
            return nil
        }
        do {
            return try JSONDecoder().decode(Bookkeeping.self, from: data)
        } catch {
            throw SQLiteError(message: "\(path) is not CairnDB bookkeeping: \(error)")
        }
    }

    /// Replaces the sidecar atomically and durably (written, synced, renamed, directory synced).
    func store(sidecar path: String) throws {
        let temporary = path + ".tmp"
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let data = try encoder.encode(self)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SQLiteError(message: "cannot create \(temporary)") }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        Glibc.close(fd)
        guard written == data.count, synced == 0 else { throw SQLiteError(message: "cannot write \(temporary)") }
        guard rename(temporary, path) == 0 else { throw SQLiteError(message: "cannot replace \(path)") }
        try SQLStateMachine.syncPath((path as NSString).deletingLastPathComponent)
    }

    // MARK: - Bookkeeping inside a file (snapshots in transit, databases of earlier versions)

    /// The table a snapshot carries its bookkeeping in.
    static let embeddedTable = "_cairn_meta"
    /// Where the previous version kept it, in SQLite's reserved namespace (still listed in `sqlite_master`).
    static let reservedNameTable = "sqlite_cairn_meta"

    struct Embedded: Equatable {
        var index: LogIndex
        var conf: ConfState?
        var droppedAt: LogIndex?
    }

    /// The bookkeeping table `db` carries, if any.
    static func readEmbedded(_ db: RawDatabase) throws -> Embedded? {
        for table in [embeddedTable, reservedNameTable] where try db.tableExists(table) {
            var meta = Embedded(index: 0)
            var applied: LogIndex?
            // A snapshot comes from another node: nothing in it may trap this one.
            try db.each("SELECT key, value FROM \(table) WHERE typeof(key) = 'text'") { s in
                let key = String(cString: sqlite3_column_text(s, 0))
                let number = sqlite3_column_int64(s, 1)
                if key == "applied_index" || key == "dropped_at" {
                    guard sqlite3_column_type(s, 1) == SQLITE_INTEGER, number >= 0 else {
                        throw SQLiteError(message: "\(db.path): its \(key) is not an entry index")
                    }
                }
                if key == "applied_index" { applied = LogIndex(number) }
                if key == "dropped_at" { meta.droppedAt = LogIndex(number) }
                if key == "conf_state" {
                    let n = Int(sqlite3_column_bytes(s, 1))
                    let bytes = n > 0 ? [UInt8](UnsafeRawBufferPointer(start: sqlite3_column_blob(s, 1), count: n)) : []
                    guard let c = ConfState(decoding: bytes) else { throw SQLiteError(message: "\(db.path): its membership cannot be decoded") }
                    meta.conf = c
                }
            }
            guard let applied else { throw SQLiteError(message: "\(db.path) has no applied index") }
            meta.index = applied
            return meta
        }
        return nil
    }

    /// Writes the bookkeeping into a snapshot file.
    static func embed(_ meta: Embedded, in db: RawDatabase) throws {
        try db.exec("BEGIN IMMEDIATE; CREATE TABLE \(embeddedTable)(key TEXT PRIMARY KEY, value)")
        try db.exec("INSERT INTO \(embeddedTable) VALUES ('applied_index', \(meta.index))")
        if let d = meta.droppedAt { try db.exec("INSERT INTO \(embeddedTable) VALUES ('dropped_at', \(d))") }
        if let c = meta.conf {
            let hex = c.encoded().map { String(format: "%02x", $0) }.joined()
            try db.exec("INSERT INTO \(embeddedTable) VALUES ('conf_state', X'\(hex)')")
        }
        try db.exec("PRAGMA application_id=\(marker(of: meta.index)); COMMIT")
    }

    /// Removes the bookkeeping table(s) from `db` and marks its header with `index`, in one transaction.
    static func strip(_ db: RawDatabase, index: LogIndex) throws {
        var sql = "BEGIN IMMEDIATE; DROP TABLE IF EXISTS \(embeddedTable);"
        if try db.tableExists(reservedNameTable) {
            // SQLite refuses to drop a table in its own namespace: renamed in the schema first (its
            // primary-key index too), it drops like any other, its pages freed.
            let retired = "_cairn_meta_retired"
            sql += """
                PRAGMA writable_schema=ON;
                UPDATE sqlite_master SET name = '\(retired)', tbl_name = '\(retired)',
                    sql = 'CREATE TABLE \(retired)(key TEXT PRIMARY KEY, value)' WHERE name = '\(reservedNameTable)';
                UPDATE sqlite_master SET name = 'sqlite_autoindex_\(retired)_1', tbl_name = '\(retired)'
                    WHERE name = 'sqlite_autoindex_\(reservedNameTable)_1';
                PRAGMA writable_schema=RESET;
                DROP TABLE \(retired);
                """
        }
        try db.exec(sql + "PRAGMA application_id=\(marker(of: index)); COMMIT")
    }
}

/// A plain connection to a database file for CairnDB's own work on it (no authorizer, no limits):
/// snapshots, backups, and the bookkeeping a file carries inside.
final class RawDatabase {
    let path: String
    private var db: OpaquePointer?

    init(path: String, readOnly: Bool = false) throws {
        self.path = path
        let flags = (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX
        guard sqlite3_open_v2(path, &db, flags, nil) == SQLITE_OK else {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            throw SQLiteError(message: "cannot open \(path): \(msg)")
        }
        // Closing never checkpoints or deletes the WAL of a file another connection may be replacing.
        if readOnly { _ = cairn_db_config_set(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1) }
    }

    deinit { sqlite3_close(db) }

    var handle: OpaquePointer? { db }

    func exec(_ sql: String) throws {
        guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else {
            let message = String(cString: sqlite3_errmsg(db))
            if sqlite3_get_autocommit(db) == 0 { sqlite3_exec(db, "ROLLBACK", nil, nil, nil) }
            throw SQLiteError(message: "\(path): \(message)")
        }
    }

    func each(_ sql: String, _ row: (OpaquePointer) throws -> Void) throws {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK, let s = stmt else {
            throw SQLiteError(message: "\(path): \(sql): \(String(cString: sqlite3_errmsg(db)))")
        }
        defer { sqlite3_finalize(s) }
        var rc = sqlite3_step(s)
        while rc == SQLITE_ROW {
            try row(s)
            rc = sqlite3_step(s)
        }
        guard rc == SQLITE_DONE else { throw SQLiteError(message: "\(path): \(sql): \(String(cString: sqlite3_errmsg(db)))") }
    }

    func int64(_ sql: String) throws -> Int64 {
        var value: Int64 = 0
        try each(sql) { value = sqlite3_column_int64($0, 0) }
        return value
    }

    func tableExists(_ name: String) throws -> Bool {
        try int64("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '\(name)'") > 0
    }

    /// Whether the file holds any schema object (a database that has applied nothing holds none).
    func hasObjects() throws -> Bool { try int64("SELECT count(*) FROM sqlite_master") > 0 }
}
