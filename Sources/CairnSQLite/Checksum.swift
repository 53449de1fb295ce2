import CSQLite3
import CairnRaft

/// A digest of a database's contents: its schema and every row of every table (rowids included),
/// read in one read transaction, without CairnDB's bookkeeping. Two replicas that applied the same
/// entries have the same digest whatever their batch boundaries, restarts or file layouts.
public struct ContentDigest: Sendable, Equatable, CustomStringConvertible {
    /// The entry the digest was taken at.
    public var index: LogIndex
    public var hash: UInt64
    /// Rows read (every table's).
    public var rows: Int
    public var bytes: Int

    public var description: String {
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// FNV-1a over a canonical encoding of values: a type tag, then the value's bytes.
struct FNV64 {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    private(set) var bytes = 0

    mutating func add(_ buffer: UnsafeRawBufferPointer) {
        var h = value
        for b in buffer {
            h ^= UInt64(b)
            h &*= 0x0000_0100_0000_01B3
        }
        value = h
        bytes += buffer.count
    }

    mutating func add(_ tag: UInt8) { withUnsafeBytes(of: tag) { add($0) } }
    mutating func add(_ x: UInt64) { withUnsafeBytes(of: x.littleEndian) { add($0) } }
    mutating func add(_ s: String) {
        var s = s
        add(UInt64(s.utf8.count))
        s.withUTF8 { add(UnsafeRawBufferPointer($0)) }
    }
}

extension ReadConnections {
    /// The digest of the database at the entry its read transaction sees.
    public func digest() throws -> ContentDigest {
        try withConnection { c in
            let index = try c.beginPinnedRead(near: state.applied)
            defer { try? c.exec("ROLLBACK") }
            return try c.digestOfOpenRead(at: index)
        }
    }
}

extension SQLiteConnection {
    /// Opens a read transaction and fixes its view (WAL readers see the database as of their first
    /// read); returns the applied index it sees.
    func beginPinnedRead(near reference: LogIndex) throws -> LogIndex {
        try exec("BEGIN")
        // Restored, not cleared: these nest (a statement of CairnDB's own may load the schema, which runs more).
        let wasInternal = context.internalAccess
        context.internalAccess = true
        defer { context.internalAccess = wasInternal }
        var index: LogIndex = 0
        do {
            // The marker's upper bits come from the index published after the commit, which is close.
            var marker: Int32 = 0
            try each("PRAGMA application_id") { s in marker = Int32(truncatingIfNeeded: sqlite3_column_int64(s, 0)) }
            index = try Bookkeeping.resolve(marker: marker, near: reference)
        } catch {
            try? exec("ROLLBACK")
            throw error
        }
        return index
    }

    /// Reads every table in the open read transaction (CairnDB's own access: no authorizer, no timeout).
    func digestOfOpenRead(at index: LogIndex) throws -> ContentDigest {
        // Restored, not cleared: these nest (a statement of CairnDB's own may load the schema, which runs more).
        let wasInternal = context.internalAccess
        context.internalAccess = true
        defer { context.internalAccess = wasInternal }
        // Name order, not rowid order: a replica that installed a snapshot (VACUUM INTO) may have
        // its schema rows in another order.
        var objects: [(type: String, name: String, sql: String)] = []
        try each("SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name") { s in
            objects.append((Self.text(s, 0), Self.text(s, 1), Self.text(s, 2)))
        }
        var withoutRowID = Set<String>()
        try each("SELECT name FROM pragma_table_list WHERE schema = 'main' AND wr = 1") { s in
            withoutRowID.insert(Self.text(s, 0))
        }
        var h = FNV64()
        var rows = 0
        // Stored in the file's header, set by writes (application_id is CairnDB's index marker).
        try each("PRAGMA user_version") { s in h.add(UInt64(bitPattern: sqlite3_column_int64(s, 0))) }
        for object in objects {
            h.add(object.type)
            h.add(object.name)
            h.add(object.sql)
            // A virtual table's rows live in its shadow tables, which are ordinary tables.
            guard object.type == "table", !object.sql.uppercased().hasPrefix("CREATE VIRTUAL") else { continue }
            let quoted = "\"" + object.name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            let sql = withoutRowID.contains(object.name) ? "SELECT * FROM \(quoted)" : "SELECT _rowid_, * FROM \(quoted) ORDER BY _rowid_"
            try each(sql) { s in
                rows += 1
                for i in 0..<sqlite3_column_count(s) { Self.hash(s, i, into: &h) }
            }
        }
        return ContentDigest(index: index, hash: h.value, rows: rows, bytes: h.bytes)
    }

    private static func text(_ s: OpaquePointer, _ i: Int32) -> String {
        sqlite3_column_text(s, i).map { String(cString: $0) } ?? ""
    }

    private static func hash(_ s: OpaquePointer, _ i: Int32, into h: inout FNV64) {
        let type = sqlite3_column_type(s, i)
        h.add(UInt8(type))
        switch type {
        case SQLITE_INTEGER: h.add(UInt64(bitPattern: sqlite3_column_int64(s, i)))
        case SQLITE_FLOAT: h.add(sqlite3_column_double(s, i).bitPattern)
        case SQLITE_TEXT, SQLITE_BLOB:
            let p = type == SQLITE_TEXT ? UnsafeRawPointer(sqlite3_column_text(s, i)) : sqlite3_column_blob(s, i)
            let n = Int(sqlite3_column_bytes(s, i))
            h.add(UInt64(n))
            if let p, n > 0 { h.add(UnsafeRawBufferPointer(start: p, count: n)) }
        default: break
        }
    }

    /// Steps one of CairnDB's own queries, handing each row to `row`.
    private func each(_ sql: String, _ row: (OpaquePointer) throws -> Void) throws {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK, let s = stmt else {
            throw SQLiteError(message: "\(sql): \(String(cString: sqlite3_errmsg(db)))")
        }
        defer { sqlite3_finalize(s) }
        var rc = sqlite3_step(s)
        while rc == SQLITE_ROW {
            try row(s)
            rc = sqlite3_step(s)
        }
        guard rc == SQLITE_DONE else { throw SQLiteError(message: "\(sql): \(String(cString: sqlite3_errmsg(db)))") }
    }
}
