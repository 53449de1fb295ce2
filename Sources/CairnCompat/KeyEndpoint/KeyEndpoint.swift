import CairnJSON
import CairnSQLite

/// Seed 000's auth server and consistent-hashing endpoint (`--compat key-endpoint`), and seed 001's
/// use of it (store objects spread over nodes, fetch them back): one hash-sharded key/value table,
/// `kv` in the database `kv`, which `cairn kv` reads and writes too. The endpoint hashed keys onto its
/// slaves with SHA-256; here the shard key's slot hash places them, and each shard is a Raft group.
public enum KeyEndpoint {
    public static let database = "kv"
    public static let table = "kv"
    /// Keys are path segments: at most this many bytes.
    public static let maxKeyBytes = 1024

    /// A value is in `value`, or (a large one `cairn kv put` stored) in `chunks` rows of `kv_chunks`
    /// under `version`: both tables are sharded by the key, so a key's rows share its shard, and
    /// writing the `kv` row is what makes a new version the value.
    public static let createTable = SQLStatement("CREATE TABLE IF NOT EXISTS kv (key TEXT NOT NULL PRIMARY KEY, value, chunks INTEGER, version INTEGER) SHARD BY HASH (key)")
    public static let createChunksTable = SQLStatement("""
        CREATE TABLE IF NOT EXISTS kv_chunks (key TEXT NOT NULL, version INTEGER NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL, \
        PRIMARY KEY (key, version, n)) SHARD BY HASH (key)
        """)
    /// Bytes in one chunk of a large value (an entry and a request body hold one with room to spare).
    public static let chunkBytes = 4 << 20

    /// `{"error": ...}`, the endpoint's error shape.
    public static func failure(_ status: Int, _ message: String) -> CompatFailure {
        CompatFailure(status: status, body: .object([("error", .string(message))]))
    }

    /// The original's refusals, word for word.
    public static let badToken = failure(401, "Invalid or Expired token")
    public static let notAdmin = failure(402, "Admin access required")
    public static let notFound = failure(404, "No updated data found")

    public static func checkKey(_ key: String) throws(CompatFailure) {
        guard !key.isEmpty, key.utf8.count <= maxKeyBytes else { throw failure(400, "a key has 1 to \(maxKeyBytes) bytes") }
    }

    /// The value a `POST /key/<key>` body carries: text (a file's contents, as the original client
    /// sent them) or a number, kept as sent.
    public static func value(of body: JSON) throws(CompatFailure) -> SQLValue {
        switch body["value"] {
        case .string(let s)?: return .text(s)
        case .number(let text)?:
            if let v = Int64(text) { return .integer(v) }
            if let v = Double(text), v.isFinite { return .real(v) }
            throw failure(400, "\"value\" is not a number SQLite can hold")
        case nil: throw failure(400, "send {\"value\": ...}")
        default: throw failure(400, "\"value\" must be a string or a number")
        }
    }

    /// Sets `key` to `value`, dropping the chunks of whatever large value it had.
    public static func put(_ key: String, _ value: SQLValue) -> [SQLStatement] {
        [SQLStatement("INSERT OR REPLACE INTO kv (key, value, chunks, version) VALUES (?, ?, NULL, NULL)", [.text(key), value]),
         SQLStatement("DELETE FROM kv_chunks WHERE key = ?", [.text(key)])]
    }

    /// Makes the chunks of `version` (written before) the value of `key`; other versions' go.
    public static func commitChunks(_ key: String, version: Int64, chunks: Int) -> [SQLStatement] {
        [SQLStatement("INSERT OR REPLACE INTO kv (key, value, chunks, version) VALUES (?, NULL, ?, ?)", [.text(key), .integer(Int64(chunks)), .integer(version)]),
         SQLStatement("DELETE FROM kv_chunks WHERE key = ? AND version != ?", [.text(key), .integer(version)])]
    }

    public static func chunk(_ key: String, version: Int64, n: Int) -> SQLStatement {
        SQLStatement("SELECT data FROM kv_chunks WHERE key = ? AND version = ? AND n = ?", [.text(key), .integer(version), .integer(Int64(n))])
    }

    public static func delete(_ key: String) -> [SQLStatement] {
        [SQLStatement("DELETE FROM kv WHERE key = ?", [.text(key)]), SQLStatement("DELETE FROM kv_chunks WHERE key = ?", [.text(key)])]
    }

    /// The row of `key`: its value, or the count and version of its chunks.
    public static func get(_ key: String) -> SQLStatement {
        SQLStatement("SELECT value, chunks, version FROM kv WHERE key = ?", [.text(key)])
    }

    /// A slave's answer to a read: `[[value]]`.
    public static func found(_ value: SQLValue) -> JSON {
        switch value {
        case .integer(let v): return .array([.array([.int(v)])])
        case .real(let v): return .array([.array([.double(v)])])
        case .text(let s): return .array([.array([.string(s)])])
        case .blob(let b): return .array([.array([.string(String(decoding: b, as: UTF8.self))])])
        case .null: return .array([.array([.null])])
        }
    }

    /// The master's answer to a write: one line per copy (here, per node holding the key's shard).
    public static func replicated(at servers: [String]) -> JSON {
        .array(servers.map { .object([("message", .string("Replication successful at \($0)"))]) })
    }

    /// `POST /token`'s answers.
    public static func tokenGranted(_ token: String, user: String) -> JSON {
        .object([("token", .string(token)), ("message", .string("Token created, admin access granted")), ("username", .string(user))])
    }

    public static func tokenRefused(user: String) -> JSON {
        .object([("message", .string("Token not granted")), ("username", .string(user))])
    }

    /// Without Basic credentials: 401, the header's text in the body, as Flask's auth server answered.
    public static let couldNotVerify = CompatFailure(status: 401, body: .object([
        ("message", .string("Could not verify")), ("WWW-Authenticate", .string("Basic auth=\"Login required\"")),
    ]))
}

/// A large text value as the inside of one JSON string, a chunk at a time: a UTF-8 sequence cut by a
/// chunk's end waits for the next chunk, and what is not UTF-8 becomes U+FFFD (the original stored
/// text; its client sent files as strings).
public struct JSONStringStream: Sendable {
    private var carry: [UInt8] = []

    public init() {}

    public mutating func escape(_ chunk: [UInt8], last: Bool) -> [UInt8] {
        var bytes = carry + chunk
        carry = []
        if !last, let cut = Self.incompleteTail(bytes) {
            carry = Array(bytes[cut...])
            bytes.removeSubrange(cut...)
        }
        let quoted = JSON.string(String(decoding: bytes, as: UTF8.self)).serialized()
        return Array(quoted.dropFirst().dropLast())
    }

    /// Where a UTF-8 sequence that the bytes end in the middle of starts.
    static func incompleteTail(_ bytes: [UInt8]) -> Int? {
        var i = bytes.count - 1, continuation = 0
        while i >= 0, continuation < 3, bytes[i] & 0xC0 == 0x80 {
            i -= 1
            continuation += 1
        }
        guard i >= 0 else { return nil }
        let lead = bytes[i]
        let length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
        return length > continuation + 1 ? i : nil
    }
}
