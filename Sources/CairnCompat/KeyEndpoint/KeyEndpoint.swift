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

    public static let createTable = SQLStatement("CREATE TABLE IF NOT EXISTS kv (key TEXT NOT NULL PRIMARY KEY, value) SHARD BY HASH (key)")

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

    public static func put(_ key: String, _ value: SQLValue) -> SQLStatement {
        SQLStatement("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", [.text(key), value])
    }

    public static func get(_ key: String) -> SQLStatement {
        SQLStatement("SELECT value FROM kv WHERE key = ?", [.text(key)])
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
