import Synchronization
#if canImport(Glibc)
import Glibc
#endif
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
    /// Makes the shard that applies this entry refuse rows whose key hashes outside its arc: once the
    /// statements succeed, triggers on the table check every inserted row and every changed key (see
    /// `ShardGuard`). Built only by CairnDB (the router, with a sharded table's CREATE TABLE).
    public var shardGuard: ShardGuard?
    /// A step of a transaction across shards (two-phase commit); its statements are the shard's part.
    public var transaction: TransactionStep?
    /// The shard map version the router planned this command with: a shard that split since (its
    /// version is higher) refuses every statement with "wrong shard", so a router with an old map
    /// never reads or writes where the rows no longer are. Nil for a database's home group.
    public var mapVersion: UInt32?
    /// Splits the shard that applies this entry in two (see `ShardSplit`). Built only by CairnDB.
    public var split: ShardSplit?

    public init(statements: [SQLStatement], atomic: Bool = false, timestampMillis: Int64, randomSeed: UInt64) {
        self.statements = statements
        self.atomic = atomic
        self.timestampMillis = timestampMillis
        self.randomSeed = randomSeed
    }

    /// A batch stamped with this moment and a fresh random seed: every replica applies it with these.
    public static func now(_ statements: [SQLStatement], atomic: Bool) -> SQLCommand {
        SQLCommand(statements: statements, atomic: atomic, timestampMillis: Int64(Date().timeIntervalSince1970 * 1000),
                   randomSeed: CommandSeeds.next())
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

    /// Version 1 has one flags byte; version 2 (only when a field of the second byte is set, so older
    /// commands encode as before) adds a second.
    private static let version: UInt8 = 1, version2: UInt8 = 2
    private static let mapVersionFlag: UInt8 = 1, splitFlag: UInt8 = 2
    /// With `splitFlag`: the split moves a range of a range-sharded table too (`ShardSplit.range`).
    private static let rangeMoveFlag: UInt8 = 4
    /// With a range guard: it lists the ranges it owns. Without, the guard is an earlier version's
    /// (range i on shard i modulo a count), still read as such from logs written before.
    private static let rangeListFlag: UInt8 = 8
    private static let knownFlags2 = mapVersionFlag | splitFlag | rangeMoveFlag | rangeListFlag
    private static let atomicFlag: UInt8 = 1, dropFlag: UInt8 = 2, checkFlag: UInt8 = 4, expectedFlag: UInt8 = 8, replaceFlag: UInt8 = 16, guardFlag: UInt8 = 32, transactionFlag: UInt8 = 64
    /// With `guardFlag`: the guard owns ranges of a range-sharded table, not an arc of slots.
    private static let rangeGuardFlag: UInt8 = 128
    private static let knownFlags = atomicFlag | dropFlag | checkFlag | expectedFlag | replaceFlag | guardFlag | transactionFlag | rangeGuardFlag

    public func encoded() -> [UInt8] {
        var flags = (atomic ? Self.atomicFlag : 0) | (dropsDatabase ? Self.dropFlag : 0)
        if let check = consistencyCheck { flags |= Self.checkFlag | (check.expected != nil ? Self.expectedFlag : 0) }
        if replacesDatabaseKeeping != nil { flags |= Self.replaceFlag }
        if let g = shardGuard {
            flags |= Self.guardFlag
            if case .ranges = g.owned { flags |= Self.rangeGuardFlag }
        }
        if transaction != nil { flags |= Self.transactionFlag }
        var rangeList = false
        if case .ranges? = shardGuard?.owned { rangeList = true }
        let flags2 = (mapVersion != nil ? Self.mapVersionFlag : 0) | (split != nil ? Self.splitFlag : 0)
            | (split?.range != nil ? Self.rangeMoveFlag : 0) | (rangeList ? Self.rangeListFlag : 0)
        var out: [UInt8] = flags2 == 0 ? [Self.version, flags] : [Self.version2, flags, flags2]
        if let v = mapVersion { ByteCoding.append(v, to: &out) }
        if let s = split { s.append(to: &out) }
        if let keep = replacesDatabaseKeeping { Self.append(string: keep, to: &out) }
        if let g = shardGuard {
            Self.append(string: g.table, to: &out)
            ByteCoding.append(UInt32(g.keyColumns.count), to: &out)
            for k in g.keyColumns { Self.append(string: k, to: &out) }
            switch g.owned {
            case .slots(let lo, let hi):
                ByteCoding.append(UInt32(lo), to: &out)
                ByteCoding.append(UInt32(hi), to: &out)
            case .ranges(let points, let owned):
                Self.append(ranges: owned, points: points, to: &out)
            }
        }
        if let t = transaction { t.append(to: &out) }
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

    /// A range guard's (or a range move's) owned ranges and split points.
    static func append(ranges owned: [Int], points: [SQLValue], to out: inout [UInt8]) {
        ByteCoding.append(UInt32(owned.count), to: &out)
        for r in owned { ByteCoding.append(UInt32(r), to: &out) }
        ByteCoding.append(UInt32(points.count), to: &out)
        for p in points { append(value: p, to: &out) }
    }

    /// Nil unless the points are valid split points and the ranges ascend among theirs.
    static func readRanges(_ bytes: [UInt8], _ c: inout Int) -> (owned: [Int], points: [SQLValue])? {
        guard let n = ByteCoding.readUInt32(bytes, &c), n <= UInt32(RangeSplits.maxPoints + 1) else { return nil }
        var owned: [Int] = []
        for _ in 0..<n {
            guard let r = ByteCoding.readUInt32(bytes, &c) else { return nil }
            owned.append(Int(r))
        }
        guard let m = ByteCoding.readUInt32(bytes, &c), m <= UInt32(RangeSplits.maxPoints) else { return nil }
        var points: [SQLValue] = []
        for _ in 0..<m {
            guard let v = readValue(bytes, &c) else { return nil }
            points.append(v)
        }
        guard RangeSplits(points: points) != nil, zip(owned, owned.dropFirst()).allSatisfy({ $0 < $1 }),
              owned.allSatisfy({ $0 <= points.count }) else { return nil }
        return (owned, points)
    }

    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= 2, bytes[0] == Self.version || bytes[0] == Self.version2, bytes[1] & ~Self.knownFlags == 0 else { return nil }
        let flags = bytes[1]
        var c = 2
        var mapVersion: UInt32?
        var split: ShardSplit?
        let flags2: UInt8 = bytes[0] == Self.version2 && bytes.count >= 3 ? bytes[2] : 0
        if bytes[0] == Self.version2 {
            guard bytes.count >= 3, bytes[2] & ~Self.knownFlags2 == 0, bytes[2] != 0 else { return nil }
            c = 3
            if flags2 & Self.mapVersionFlag != 0 {
                guard let v = ByteCoding.readUInt32(bytes, &c) else { return nil }
                mapVersion = v
            }
            if flags2 & Self.rangeMoveFlag != 0 && flags2 & Self.splitFlag == 0 { return nil }
            if flags2 & Self.rangeListFlag != 0 && flags & Self.rangeGuardFlag == 0 { return nil }
            if flags2 & Self.splitFlag != 0 {
                guard let s = ShardSplit.read(bytes, &c, withRange: flags2 & Self.rangeMoveFlag != 0) else { return nil }
                split = s
            }
        }
        var keep: String?
        if flags & Self.replaceFlag != 0 {
            guard let k = Self.readString(bytes, &c) else { return nil }
            keep = k
        }
        var shardGuard: ShardGuard?
        if flags & Self.rangeGuardFlag != 0 && flags & Self.guardFlag == 0 { return nil }
        if flags & Self.guardFlag != 0 {
            guard let table = Self.readString(bytes, &c), let n = ByteCoding.readUInt32(bytes, &c), n >= 1, n <= 32 else { return nil }
            var keys: [String] = []
            for _ in 0..<n {
                guard let k = Self.readString(bytes, &c) else { return nil }
                keys.append(k)
            }
            if flags & Self.rangeGuardFlag != 0 && flags2 & Self.rangeListFlag != 0 {
                guard keys.count == 1, let (owned, points) = Self.readRanges(bytes, &c) else { return nil }
                shardGuard = ShardGuard(table: table, keyColumns: keys, owned: .ranges(splitPoints: points, owned: owned))
            } else if flags & Self.rangeGuardFlag != 0 {
                // An earlier version's: range i lives on shard i modulo `count`; this is `shard`.
                guard keys.count == 1, let count = ByteCoding.readUInt32(bytes, &c), let shard = ByteCoding.readUInt32(bytes, &c),
                      count >= 1, shard < count, let n = ByteCoding.readUInt32(bytes, &c), n <= UInt32(RangeSplits.maxPoints) else { return nil }
                var points: [SQLValue] = []
                for _ in 0..<n {
                    guard let v = Self.readValue(bytes, &c) else { return nil }
                    points.append(v)
                }
                guard let splits = RangeSplits(points: points) else { return nil }
                shardGuard = ShardGuard(table: table, keyColumns: keys,
                                        owned: .ranges(splitPoints: points, owned: splits.ranges(onShard: Int(shard), shardCount: Int(count))))
            } else {
                guard let lo = ByteCoding.readUInt32(bytes, &c), let hi = ByteCoding.readUInt32(bytes, &c), lo < hi,
                      hi <= UInt32(SlotHash.slotCount) else { return nil }
                shardGuard = ShardGuard(table: table, keyColumns: keys, lo: Int(lo), hi: Int(hi))
            }
        }
        var transaction: TransactionStep?
        if flags & Self.transactionFlag != 0 {
            guard let t = TransactionStep.read(bytes, &c) else { return nil }
            transaction = t
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
        self.shardGuard = shardGuard
        self.transaction = transaction
        self.mapVersion = mapVersion
        self.split = split
    }

    static func append(string: String, to out: inout [UInt8]) {
        let utf8 = Array(string.utf8)
        ByteCoding.append(UInt32(utf8.count), to: &out)
        out.append(contentsOf: utf8)
    }

    static func readString(_ b: [UInt8], _ c: inout Int) -> String? {
        guard let n = ByteCoding.readUInt32(b, &c), c + Int(n) <= b.count else { return nil }
        defer { c += Int(n) }
        return String(decoding: b[c..<(c + Int(n))], as: UTF8.self)
    }

    static func append(value: SQLValue, to out: inout [UInt8]) {
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

    static func readValue(_ b: [UInt8], _ c: inout Int) -> SQLValue? {
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

/// A shard's guard on one table: rows whose key belongs to another shard are refused with "wrong
/// shard", so a router working from a stale shard map can never put a row where no reader looks for it
/// (YugabyteDB's post-split rejection; Redis's MOVED).
public struct ShardGuard: Sendable, Equatable {
    /// Which keys the shard holds.
    public enum Owned: Sendable, Equatable {
        /// A hash-sharded table: keys whose slot is in `lo ..< hi`.
        case slots(lo: Int, hi: Int)
        /// A range-sharded table: keys in the ranges (numbered among `splitPoints`, as `RangeSplits`
        /// numbers them) listed in `owned`, ascending.
        case ranges(splitPoints: [SQLValue], owned: [Int])
    }

    public var table: String
    public var keyColumns: [String]
    public var owned: Owned

    public init(table: String, keyColumns: [String], owned: Owned) {
        self.table = table
        self.keyColumns = keyColumns
        self.owned = owned
    }

    public init(table: String, keyColumns: [String], lo: Int, hi: Int) {
        self.init(table: table, keyColumns: keyColumns, owned: .slots(lo: lo, hi: hi))
    }

    /// The message a refused row gets: the router recognises it and refreshes its map.
    public static let wrongShard = "cairn: wrong shard"

    /// When a row is not this shard's, as SQL over NEW (nil: a split point has no literal).
    private var outside: String? {
        let newKey = keyColumns.map { "NEW." + quoted($0) }
        switch owned {
        case .slots(let lo, let hi):
            return "cairn_slot(\(newKey.joined(separator: ", "))) NOT BETWEEN \(lo) AND \(hi - 1)"
        case .ranges(let points, let owned):
            guard let range = Self.rangeSQL(newKey[0], points) else { return nil }
            return "\(range) NOT IN (\(owned.map(String.init).joined(separator: ", ")))"
        }
    }

    /// `cairn_range(key, points...)` (nil: a split point has no literal).
    static func rangeSQL(_ key: String, _ points: [SQLValue]) -> String? {
        var literals: [String] = []
        for p in points {
            guard let l = p.sqlLiteral else { return nil }
            literals.append(l)
        }
        return "cairn_range(\(([key] + literals).joined(separator: ", ")))"
    }

    /// The triggers, as CairnDB creates them (their names are reserved: clients cannot drop them).
    var statements: [String]? {
        guard let outside else { return nil }
        let t = quoted(table)
        let body = "BEGIN SELECT RAISE(ABORT, '\(Self.wrongShard): the key belongs to another shard'); END"
        let name = table.lowercased().unicodeScalars.map { CharacterSetLike.isWord($0) ? String($0) : "_" }.joined()
        return [
            "DROP TRIGGER IF EXISTS \(quoted("_cairn_guard_insert_" + name))",
            "DROP TRIGGER IF EXISTS \(quoted("_cairn_guard_update_" + name))",
            "CREATE TRIGGER \(quoted("_cairn_guard_insert_" + name)) BEFORE INSERT ON \(t) WHEN \(outside) \(body)",
            "CREATE TRIGGER \(quoted("_cairn_guard_update_" + name)) BEFORE UPDATE OF \(keyColumns.map(quoted).joined(separator: ", ")) ON \(t) WHEN \(outside) \(body)",
        ]
    }

    private func quoted(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
}

private enum CharacterSetLike {
    static func isWord(_ s: Unicode.Scalar) -> Bool {
        (s >= "a" && s <= "z") || (s >= "0" && s <= "9") || s == "_"
    }
}

/// Results on the wire between nodes (a forwarded command's answer): the same value coding as commands.
public enum ResultCoding {
    public static func encode(_ results: [StatementResult]) -> [UInt8] {
        var out: [UInt8] = [1]
        ByteCoding.append(UInt32(results.count), to: &out)
        for r in results {
            out.append(r.error == nil ? 0 : 1)
            if let e = r.error { SQLCommand.append(string: e, to: &out) }
            ByteCoding.append(UInt32(r.columns.count), to: &out)
            for c in r.columns { SQLCommand.append(string: c, to: &out) }
            for t in r.types { SQLCommand.append(string: t, to: &out) }
            ByteCoding.append(UInt32(r.rows.count), to: &out)
            for row in r.rows { for v in row { SQLCommand.append(value: v, to: &out) } }
            ByteCoding.append(UInt64(bitPattern: r.rowsAffected), to: &out)
            ByteCoding.append(UInt64(bitPattern: r.lastInsertID), to: &out)
        }
        return out
    }

    public static func decode(_ b: [UInt8]) -> [StatementResult]? {
        guard b.first == 1 else { return nil }
        var c = 1
        guard let n = ByteCoding.readUInt32(b, &c), Int(n) <= b.count else { return nil }
        var results: [StatementResult] = []
        for _ in 0..<n {
            guard c < b.count else { return nil }
            var r = StatementResult()
            let failed = b[c] == 1
            c += 1
            if failed {
                guard let e = SQLCommand.readString(b, &c) else { return nil }
                r.error = e
            }
            guard let nc = ByteCoding.readUInt32(b, &c), Int(nc) <= b.count else { return nil }
            for _ in 0..<nc {
                guard let s = SQLCommand.readString(b, &c) else { return nil }
                r.columns.append(s)
            }
            for _ in 0..<nc {
                guard let s = SQLCommand.readString(b, &c) else { return nil }
                r.types.append(s)
            }
            guard let nr = ByteCoding.readUInt32(b, &c), Int(nr) <= b.count else { return nil }
            for _ in 0..<nr {
                var row: [SQLValue] = []
                row.reserveCapacity(Int(nc))
                for _ in 0..<nc {
                    guard let v = SQLCommand.readValue(b, &c) else { return nil }
                    row.append(v)
                }
                r.rows.append(row)
            }
            guard let affected = ByteCoding.readUInt64(b, &c), let last = ByteCoding.readUInt64(b, &c) else { return nil }
            r.rowsAffected = Int64(bitPattern: affected)
            r.lastInsertID = Int64(bitPattern: last)
            results.append(r)
        }
        return c == b.count ? results : nil
    }
}

/// Seeds for commands (what SQLite's `random()` and `randomblob()` start from on every replica):
/// the system's randomness, drawn 128 seeds at a time (asking for each one cost a `getrandom` call per
/// write). Each seed is independent of every other: a client that learns its own writes' seeds (they
/// determine its `random()` values) learns nothing of the seeds of other clients' writes.
enum CommandSeeds {
    private static let pool = Mutex<(seeds: [UInt64], next: Int)>(([], 0))
    static let batch = 128

    static func next() -> UInt64 {
        pool.withLock { p in
            if p.next == p.seeds.count {
                p.seeds = fresh()
                p.next = 0
            }
            defer { p.next += 1 }
            return p.seeds[p.next]
        }
    }

    private static func fresh() -> [UInt64] {
        var seeds = [UInt64](repeating: 0, count: batch)
        // glibc's arc4random_buf: the kernel's randomness (getrandom), one call for the whole batch.
        seeds.withUnsafeMutableBytes { arc4random_buf($0.baseAddress!, $0.count) }
        return seeds
    }
}
