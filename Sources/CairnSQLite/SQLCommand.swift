import Foundation
import CairnRaft

/// An SQL value, as SQLite stores it.
public enum SQLValue: Sendable, Hashable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    /// About what the value takes in memory and on the wire.
    public var sizeBytes: Int {
        switch self {
        case .null: return 1
        case .integer, .real: return 8
        case .text(let s): return s.utf8.count
        case .blob(let b): return b.count
        }
    }
}

/// One statement with its parameters: positional (`?`, `?NNN`) or named (`:name`, `@name`, `$name`).
public struct SQLStatement: Sendable, Equatable {
    public var sql: String
    public var positional: [SQLValue]
    /// Keys include the prefix character, as written in the SQL (`:id`).
    public var named: [String: SQLValue]

    public init(_ sql: String, _ positional: [SQLValue] = [], named: [String: SQLValue] = [:]) {
        self.sql = sql
        self.positional = positional
        self.named = named
    }
}

/// The payload of one Raft entry: a batch of statements applied in one SQLite transaction.
/// The leader fixes the time and the random seed, so every replica computes the same rows.
public struct SQLCommand: Sendable, Equatable {
    public var statements: [SQLStatement]
    /// All-or-nothing: the first failing statement rolls the whole batch back.
    public var atomic: Bool
    /// What `'now'` and `CURRENT_TIMESTAMP` mean while this batch applies (Unix milliseconds).
    public var timestampMillis: Int64
    /// Seeds `random()` and `randomblob()` for this batch.
    public var randomSeed: UInt64
    /// Ends the database: this entry and every later one change nothing, and reads are refused. It
    /// goes through the database's own log, so it is ordered with the writes on every replica.
    public var dropsDatabase = false
    /// Asks every replica for a digest of its database as of this entry (CockroachDB's consistency
    /// checker is the model); it may carry the leader's digest at an earlier check, which every replica
    /// compares with its own. Changes no data.
    public var consistencyCheck: ConsistencyCheck?
    /// Set on the entry that ends a load (`DatabaseLoader`): before its statements run, every table,
    /// view and trigger the database holds is dropped, except the load's staging tables (named with
    /// this prefix), which its statements then rename into place. Built only by CairnDB itself.
    public var replacesDatabaseKeeping: String?

    public init(statements: [SQLStatement], atomic: Bool = false, timestampMillis: Int64, randomSeed: UInt64) {
        self.statements = statements
        self.atomic = atomic
        self.timestampMillis = timestampMillis
        self.randomSeed = randomSeed
    }

    /// A batch stamped with this moment and a fresh random seed: every replica applies it with these.
    public static func now(_ statements: [SQLStatement], atomic: Bool) -> SQLCommand {
        SQLCommand(statements: statements, atomic: atomic, timestampMillis: Int64(Date().timeIntervalSince1970 * 1000),
                   randomSeed: UInt64.random(in: 0...UInt64.max))
    }

    /// The entry that drops the database it is committed to.
    public static func dropDatabase() -> SQLCommand {
        var command = SQLCommand(statements: [], timestampMillis: 0, randomSeed: 0)
        command.dropsDatabase = true
        return command
    }

    /// The entry that asks every replica for a digest at its index (see `consistencyCheck`).
    public static func checkConsistency(expected: ConsistencyCheck.Expected?) -> SQLCommand {
        var command = SQLCommand(statements: [], timestampMillis: 0, randomSeed: 0)
        command.consistencyCheck = ConsistencyCheck(expected: expected)
        return command
    }

    private static let version: UInt8 = 1
    private static let atomicFlag: UInt8 = 1, dropFlag: UInt8 = 2, checkFlag: UInt8 = 4, expectedFlag: UInt8 = 8, replaceFlag: UInt8 = 16
    private static let knownFlags = atomicFlag | dropFlag | checkFlag | expectedFlag | replaceFlag

    public func encoded() -> [UInt8] {
        var flags = (atomic ? Self.atomicFlag : 0) | (dropsDatabase ? Self.dropFlag : 0)
        if let check = consistencyCheck { flags |= Self.checkFlag | (check.expected != nil ? Self.expectedFlag : 0) }
        if replacesDatabaseKeeping != nil { flags |= Self.replaceFlag }
        var out: [UInt8] = [Self.version, flags]
        if let keep = replacesDatabaseKeeping { Self.append(string: keep, to: &out) }
        if let expected = consistencyCheck?.expected {
            ByteCoding.append(expected.index, to: &out)
            ByteCoding.append(expected.hash, to: &out)
        }
        ByteCoding.append(UInt64(bitPattern: timestampMillis), to: &out)
        ByteCoding.append(randomSeed, to: &out)
        ByteCoding.append(UInt32(statements.count), to: &out)
        for s in statements {
            Self.append(string: s.sql, to: &out)
            ByteCoding.append(UInt32(s.positional.count), to: &out)
            for v in s.positional { Self.append(value: v, to: &out) }
            ByteCoding.append(UInt32(s.named.count), to: &out)
            for key in s.named.keys.sorted() {
                Self.append(string: key, to: &out)
                Self.append(value: s.named[key]!, to: &out)
            }
        }
        return out
    }

    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= 2, bytes[0] == Self.version, bytes[1] & ~Self.knownFlags == 0 else { return nil }
        let flags = bytes[1]
        var c = 2
        var keep: String?
        if flags & Self.replaceFlag != 0 {
            guard let k = Self.readString(bytes, &c) else { return nil }
            keep = k
        }
        var check: ConsistencyCheck?
        if flags & Self.checkFlag != 0 {
            check = ConsistencyCheck(expected: nil)
            if flags & Self.expectedFlag != 0 {
                guard let index = ByteCoding.readUInt64(bytes, &c), let hash = ByteCoding.readUInt64(bytes, &c) else { return nil }
                check!.expected = .init(index: index, hash: hash)
            }
        } else if flags & Self.expectedFlag != 0 {
            return nil
        }
        guard let ts = ByteCoding.readUInt64(bytes, &c), let seed = ByteCoding.readUInt64(bytes, &c),
              let n = ByteCoding.readUInt32(bytes, &c) else { return nil }
        var statements: [SQLStatement] = []
        for _ in 0..<n {
            guard let sql = Self.readString(bytes, &c), let np = ByteCoding.readUInt32(bytes, &c) else { return nil }
            var positional: [SQLValue] = []
            for _ in 0..<np {
                guard let v = Self.readValue(bytes, &c) else { return nil }
                positional.append(v)
            }
            guard let nn = ByteCoding.readUInt32(bytes, &c) else { return nil }
            var named: [String: SQLValue] = [:]
            for _ in 0..<nn {
                guard let k = Self.readString(bytes, &c), let v = Self.readValue(bytes, &c) else { return nil }
                named[k] = v
            }
            statements.append(SQLStatement(sql, positional, named: named))
        }
        guard c == bytes.count else { return nil }
        self.init(statements: statements, atomic: bytes[1] & Self.atomicFlag != 0, timestampMillis: Int64(bitPattern: ts), randomSeed: seed)
        dropsDatabase = bytes[1] & Self.dropFlag != 0
        consistencyCheck = check
        replacesDatabaseKeeping = keep
    }

    private static func append(string: String, to out: inout [UInt8]) {
        let utf8 = Array(string.utf8)
        ByteCoding.append(UInt32(utf8.count), to: &out)
        out.append(contentsOf: utf8)
    }

    private static func readString(_ b: [UInt8], _ c: inout Int) -> String? {
        guard let n = ByteCoding.readUInt32(b, &c), c + Int(n) <= b.count else { return nil }
        defer { c += Int(n) }
        return String(decoding: b[c..<(c + Int(n))], as: UTF8.self)
    }

    private static func append(value: SQLValue, to out: inout [UInt8]) {
        switch value {
        case .null: out.append(0)
        case .integer(let i):
            out.append(1)
            ByteCoding.append(UInt64(bitPattern: i), to: &out)
        case .real(let d):
            out.append(2)
            ByteCoding.append(d.bitPattern, to: &out)
        case .text(let s):
            out.append(3)
            append(string: s, to: &out)
        case .blob(let b):
            out.append(4)
            ByteCoding.append(UInt32(b.count), to: &out)
            out.append(contentsOf: b)
        }
    }

    private static func readValue(_ b: [UInt8], _ c: inout Int) -> SQLValue? {
        guard c < b.count else { return nil }
        let tag = b[c]
        c += 1
        switch tag {
        case 0: return .null
        case 1: return ByteCoding.readUInt64(b, &c).map { .integer(Int64(bitPattern: $0)) }
        case 2: return ByteCoding.readUInt64(b, &c).map { .real(Double(bitPattern: $0)) }
        case 3: return readString(b, &c).map { .text($0) }
        case 4:
            guard let n = ByteCoding.readUInt32(b, &c), c + Int(n) <= b.count else { return nil }
            defer { c += Int(n) }
            return .blob(Array(b[c..<(c + Int(n))]))
        default: return nil
        }
    }
}

/// A request for every replica's digest (`SQLCommand.consistencyCheck`).
public struct ConsistencyCheck: Sendable, Equatable {
    /// The leader's digest at an earlier check.
    public struct Expected: Sendable, Equatable {
        public var index: LogIndex
        public var hash: UInt64
        public init(index: LogIndex, hash: UInt64) {
            self.index = index
            self.hash = hash
        }
    }

    public var expected: Expected?
}

/// What one statement did: rows for a query, counts for a write, or the error that stopped it.
public struct StatementResult: Sendable, Equatable {
    public var columns: [String] = []
    /// Declared column types, as SQLite reports them ("" for expressions).
    public var types: [String] = []
    public var rows: [[SQLValue]] = []
    public var rowsAffected: Int64 = 0
    public var lastInsertID: Int64 = 0
    public var error: String?

    public init(error: String? = nil) { self.error = error }
}
