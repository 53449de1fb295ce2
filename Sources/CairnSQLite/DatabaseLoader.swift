import CSQLite3
import Foundation

/// Turns a SQLite file into log entries that rebuild it in a replicated database, none larger than
/// `maxEntryBytes`: entries that create staging tables and fill them row by row, then one entry that
/// drops everything the database held and renames the staging tables into place, with the file's
/// indexes, views and triggers. Until that last entry, queries see the database as it was; the file is
/// read on a connection of its own, a chunk at a time, so memory stays bounded whatever its size.
/// AUTOINCREMENT counters and ANALYZE statistics are not carried over (SQLite's own tables).
public final class DatabaseLoader {
    /// Names of staging tables start with this, then the load's id.
    public static let stagingPrefix = "_cairn_load_"

    public let prefix: String
    /// About how large each entry of rows is: well under the largest entry, so that replicating one
    /// takes a fraction of an election timeout.
    private let chunkBytes: Int
    private var db: OpaquePointer?
    private var tables: [Table] = []
    /// Indexes, views and triggers, in the file's order.
    private var others: [String] = []
    private var next = 0
    private var reading: OpaquePointer?
    private var created = Set<Int>()
    public private(set) var rows = 0

    private struct Table {
        let name: String
        let staging: String
        let create: String
        let columns: [String]
        let withoutRowID: Bool
    }

    /// Opens `file` (read-only) and reads its schema; a file SQLite cannot read is refused.
    public init(file: String, id: String, maxEntryBytes: Int) throws {
        prefix = Self.stagingPrefix + id + "_"
        chunkBytes = min(2 << 20, maxEntryBytes / 2)
        guard sqlite3_open_v2(file, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK else {
            defer { sqlite3_close(db) }
            throw SQLiteError(message: "the file is not a SQLite database SQLite can open")
        }
        // The file is a client's: read it as guardedly as any client SQL.
        for (option, value) in [(SQLITE_DBCONFIG_DEFENSIVE, 1), (SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0), (SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0),
                                (SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0)] as [(Int32, Int32)] { _ = cairn_db_config_set(db, option, value) }
        for (limit, value) in SQLiteLimits.connectionLimits { sqlite3_limit(db, limit, value) }
        let check = try query("PRAGMA quick_check")
        guard check.first?.first == "ok" else { throw SQLiteError(message: "the file fails SQLite's quick check: \(check.prefix(3))") }
        var shadows = Set<String>()
        var withoutRowID = Set<String>()
        for row in try query("SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main'") {
            if row[1] == "shadow" { shadows.insert(row[0]) }
            if row[2] == "1" { withoutRowID.insert(row[0]) }
        }
        for row in try query("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid") {
            let (type, name, sql) = (row[0], row[1], row[2])
            if Authorizer.isReserved(name) || name.lowercased().hasPrefix(Self.stagingPrefix) { continue }
            switch type {
            case "table":
                if shadows.contains(name) { continue }
                let staging = prefix + String(tables.count)
                guard let create = Self.renamedCreate(sql, to: staging) else {
                    throw SQLiteError(message: "cannot read the definition of table \(name)")
                }
                let columns = try query("SELECT name FROM pragma_table_xinfo(?1) WHERE hidden = 0 ORDER BY cid", [name]).map { $0[0] }
                tables.append(Table(name: name, staging: staging, create: create, columns: columns, withoutRowID: withoutRowID.contains(name)))
            default:
                // SQLite reads only the first statement of a schema row; the entry would run them all.
                guard Self.isSingle(type: type, sql) else {
                    throw SQLiteError(message: "the schema of \(type) \(name) is not a single CREATE \(type.uppercased()) statement")
                }
                others.append(sql)
            }
        }
    }

    deinit {
        sqlite3_finalize(reading)
        sqlite3_close(db)
    }

    /// The next entry of rows (the first ones create the staging tables), or nil when all are out.
    public func nextChunk() throws -> SQLCommand? {
        var statements: [SQLStatement] = []
        var bytes = 0
        while next < tables.count {
            let t = tables[next]
            if !created.contains(next) {
                created.insert(next)
                // A staging table of an abandoned load with the same id cannot exist: ids are fresh.
                statements.append(SQLStatement(t.create))
                bytes += t.create.utf8.count + 16
            }
            if reading == nil {
                let select = "SELECT " + (t.withoutRowID ? "" : "_rowid_, ") + t.columns.map(Self.quoted).joined(separator: ", ") + " FROM " + Self.quoted(t.name)
                guard sqlite3_prepare_v2(db, select, -1, &reading, nil) == SQLITE_OK else {
                    throw SQLiteError(message: "cannot read table \(t.name): \(String(cString: sqlite3_errmsg(db)))")
                }
            }
            let targets = (t.withoutRowID ? [] : ["_rowid_"]) + t.columns.map(Self.quoted)
            let insert = "INSERT INTO \(Self.quoted(t.staging))(\(targets.joined(separator: ", "))) VALUES (\(Array(repeating: "?", count: targets.count).joined(separator: ", ")))"
            while true {
                let rc = sqlite3_step(reading)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW else { throw SQLiteError(message: "cannot read table \(t.name): \(String(cString: sqlite3_errmsg(db)))") }
                var values: [SQLValue] = []
                values.reserveCapacity(targets.count)
                var rowBytes = insert.utf8.count + 16
                for i in 0..<Int32(targets.count) {
                    let v = SQLiteConnection.columnValue(reading!, i)
                    rowBytes += Self.encodedSize(v)
                    values.append(v)
                }
                statements.append(SQLStatement(insert, values))
                bytes += rowBytes
                rows += 1
                if bytes >= chunkBytes { return command(statements) }
            }
            sqlite3_finalize(reading)
            reading = nil
            next += 1
        }
        return statements.isEmpty ? nil : command(statements)
    }

    /// The entry that swaps the staging tables in for everything the database holds.
    public func finalCommand() -> SQLCommand {
        var statements = tables.map { SQLStatement("ALTER TABLE \(Self.quoted($0.staging)) RENAME TO \(Self.quoted($0.name))") }
        statements += others.map { SQLStatement($0) }
        var command = SQLCommand.now(statements, atomic: true)
        command.replacesDatabaseKeeping = prefix
        return command
    }

    private func command(_ statements: [SQLStatement]) -> SQLCommand {
        SQLCommand.now(statements, atomic: true)
    }

    static func quoted(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    private static func encodedSize(_ v: SQLValue) -> Int {
        switch v {
        case .null: return 1
        case .integer, .real: return 9
        case .text(let s): return 5 + s.utf8.count
        case .blob(let b): return 5 + b.count
        }
    }

    /// `CREATE [VIRTUAL] TABLE <name> ...` as SQLite keeps it in sqlite_master (normalized prefix, no
    /// schema, no IF NOT EXISTS), with the name replaced by `newName`.
    static func renamedCreate(_ sql: String, to newName: String) -> String? {
        guard let head = sql.range(of: #"^\s*CREATE\s+(VIRTUAL\s+)?TABLE\s+"#, options: [.regularExpression, .caseInsensitive]) else { return nil }
        let chars = Array(sql[head.upperBound...])
        guard let first = chars.first else { return nil }
        var i = 0
        let closing: Character? = ["\"": "\"", "[": "]", "`": "`", "'": "'"][first]
        if let closing {
            i = 1
            while i < chars.count {
                if chars[i] == closing {
                    // A doubled quote stands for one inside the name.
                    if closing != "]" && i + 1 < chars.count && chars[i + 1] == closing { i += 2; continue }
                    i += 1
                    break
                }
                i += 1
            }
        } else {
            while i < chars.count && !chars[i].isWhitespace && chars[i] != "(" { i += 1 }
        }
        guard i > 0 else { return nil }
        return String(sql[..<head.upperBound]) + quoted(newName) + String(chars[i...])
    }

    /// Whether `sql` is one `CREATE [UNIQUE] INDEX`, `CREATE VIEW` or `CREATE TRIGGER` statement and
    /// nothing after it.
    static func isSingle(type: String, _ sql: String) -> Bool {
        let heads = ["index": #"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s"#, "view": #"^\s*CREATE\s+VIEW\s"#, "trigger": #"^\s*CREATE\s+TRIGGER\s"#]
        guard let head = heads[type], sql.range(of: head, options: [.regularExpression, .caseInsensitive]) != nil else { return false }
        // The shortest prefix that is a complete statement must be the whole text.
        let utf8 = Array(sql.utf8)
        for end in utf8.indices where utf8[end] == UInt8(ascii: ";") {
            let prefix = String(decoding: utf8[...end], as: UTF8.self)
            if sqlite3_complete(prefix) != 0 {
                return utf8[(end + 1)...].allSatisfy { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
            }
        }
        return sqlite3_complete(sql + ";") != 0
    }

    /// CairnDB's own reads of the file: each row's columns as text.
    private func query(_ sql: String, _ bind: [String] = []) throws -> [[String]] {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK else {
            throw SQLiteError(message: "cannot read the file: \(String(cString: sqlite3_errmsg(db)))")
        }
        defer { sqlite3_finalize(stmt) }
        for (k, v) in bind.enumerated() { sqlite3_bind_text(stmt, Int32(k + 1), v, -1, transientDestructor) }
        var out: [[String]] = []
        while sqlite3_step(stmt) == SQLITE_ROW {
            out.append((0..<sqlite3_column_count(stmt)).map { sqlite3_column_text(stmt, $0).map { String(cString: $0) } ?? "" })
        }
        return out
    }
}
