import CairnRaft

/// How a range-sharded table (`SHARD BY RANGE (col) SPLIT AT (v1, ..., vk)`) divides its key's values:
/// k ascending split points make k + 1 ranges, range i holding the keys from point i - 1 (inclusive)
/// up to point i (exclusive), the first range open below and the last open above. As declared, range i
/// lives on shard i modulo the database's shard count: placement an operator can read off the
/// declaration (seed 004's Stud_id ranges, one per shard). A range split (`moving(rangeFrom:to:)`)
/// gives one range a shard of its own, and from then on the table's `placement` lists every range's.
///
/// Keys are compared as SQLite compares stored values with the BINARY collation (`SQLiteOrder`), so
/// the router, every shard's guard and an `ORDER BY` on the column agree on where each key belongs.
public struct RangeSplits: Sendable, Equatable {
    public let points: [SQLValue]
    /// Range i lives on shard `placement[i]`; nil: on shard i modulo the shard count the database was
    /// created with (`ShardMap.rangeShardCount`).
    public let placement: [Int]?

    /// A table has at most this many split points: each is an argument of `cairn_range` in every
    /// shard's guard trigger, and a connection allows 127 arguments (`SQLITE_LIMIT_FUNCTION_ARG`).
    public static let maxPoints = 126

    /// Nil unless the points are non-NULL and strictly ascending, and a placement names a shard for
    /// each range.
    public init?(points: [SQLValue], placement: [Int]? = nil) {
        guard points.count <= Self.maxPoints, !points.contains(.null) else { return nil }
        for (a, b) in zip(points, points.dropFirst()) where SQLiteOrder.compare(a, b) >= 0 { return nil }
        if let placement {
            guard placement.count == points.count + 1, placement.allSatisfy({ $0 >= 0 && $0 < ShardMap.maxShards }) else { return nil }
        }
        self.points = points
        self.placement = placement
    }

    public var rangeCount: Int { points.count + 1 }

    /// The range holding `value` (stored as its column stores it): how many split points are ≤ it.
    public func range(of value: SQLValue) -> Int {
        var lo = 0, hi = points.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if SQLiteOrder.compare(points[mid], value) <= 0 { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The shard range `range` lives on (`shardCount`: the database's `rangeShardCount`).
    public func shard(ofRange range: Int, shardCount: Int) -> Int { placement?[range] ?? range % shardCount }

    /// The ranges that live on `shard`, ascending.
    public func ranges(onShard shard: Int, shardCount: Int) -> [Int] {
        (0..<rangeCount).filter { self.shard(ofRange: $0, shardCount: shardCount) == shard }
    }

    /// The layout after the keys from `value` up to the next split point move to shard `child`:
    /// `value` becomes a split point unless it is one, and the range it starts is placed on `child`.
    /// Also the shard the range leaves and the range's number. Nil if `value` is NULL, the table has
    /// `maxPoints` already, or the range lives on `child`.
    public func moving(rangeFrom value: SQLValue, to child: Int, shardCount: Int) -> (splits: RangeSplits, from: Int, range: Int)? {
        guard value != .null, child >= 0, child < ShardMap.maxShards else { return nil }
        var placed = placement ?? (0..<rangeCount).map { $0 % shardCount }
        var next = points
        let r = range(of: value)
        if r > 0, SQLiteOrder.compare(points[r - 1], value) == 0 {
            // A split point already: the range it starts moves whole.
            let from = placed[r]
            guard from != child else { return nil }
            placed[r] = child
            return RangeSplits(points: next, placement: placed).map { ($0, from, r) }
        }
        guard points.count < Self.maxPoints else { return nil }
        let from = placed[r]
        next.insert(value, at: r)
        placed.insert(child, at: r + 1)
        return RangeSplits(points: next, placement: placed).map { ($0, from, r + 1) }
    }

    /// The ranges that can hold a key between `lower` and `upper` (either nil: unbounded; both
    /// inclusive: a superset is always correct, and `<` differs from `<=` in one key only).
    public func ranges(from lower: SQLValue?, to upper: SQLValue?) -> ClosedRange<Int>? {
        let first = lower.map(range(of:)) ?? 0
        let last = upper.map(range(of:)) ?? points.count
        return first <= last ? first...last : nil
    }
}

/// SQLite's order of stored values under the BINARY collation (https://sqlite.org/datatype3.html,
/// section 4.1): NULL, then numbers (integers and reals by value), then text (by UTF-8 bytes), then
/// blobs (by bytes).
public enum SQLiteOrder {
    public static func compare(_ a: SQLValue, _ b: SQLValue) -> Int {
        let (ca, cb) = (rank(a), rank(b))
        if ca != cb { return ca < cb ? -1 : 1 }
        switch (a, b) {
        case (.integer(let x), .integer(let y)): return x < y ? -1 : (x > y ? 1 : 0)
        case (.real(let x), .real(let y)): return x < y ? -1 : (x > y ? 1 : 0)
        case (.integer(let x), .real(let y)): return compare(x, y)
        case (.real(let x), .integer(let y)): return -compare(y, x)
        case (.text(let x), .text(let y)): return compareBytes(Array(x.utf8), Array(y.utf8))
        case (.blob(let x), .blob(let y)): return compareBytes(x, y)
        default: return 0
        }
    }

    private static func rank(_ v: SQLValue) -> Int {
        switch v {
        case .null: return 0
        case .integer, .real: return 1
        case .text: return 2
        case .blob: return 3
        }
    }

    /// An integer against a real, exactly (as SQLite does: converting either way can round).
    private static func compare(_ i: Int64, _ r: Double) -> Int {
        if r.isNaN { return 1 }
        if r < -9_223_372_036_854_775_808.0 { return 1 }
        if r >= 9_223_372_036_854_775_808.0 { return -1 }
        let whole = Int64(r.rounded(.down))
        if i != whole { return i < whole ? -1 : 1 }
        return Double(whole) < r ? -1 : 0
    }

    private static func compareBytes(_ x: [UInt8], _ y: [UInt8]) -> Int {
        for (p, q) in zip(x, y) where p != q { return p < q ? -1 : 1 }
        return x.count == y.count ? 0 : (x.count < y.count ? -1 : 1)
    }
}

extension SQLValue {
    /// The value as an SQL literal that SQLite reads back as the same value and type (the split points
    /// in a range guard's trigger). Nil for a real that is not finite (no literal spells it).
    public var sqlLiteral: String? {
        switch self {
        case .null: return "NULL"
        case .integer(let i): return String(i)
        case .real(let d):
            guard d.isFinite else { return nil }
            // Swift prints the shortest digits that read back as the same double; an integral value
            // keeps its ".0" (or an exponent), so SQLite reads a REAL.
            return "\(d)"
        case .text(let s): return "'" + s.replacingOccurrences(of: "'", with: "''") + "'"
        case .blob(let b):
            let digits = Array("0123456789ABCDEF".utf8)
            var out = Array("X'".utf8)
            for byte in b { out.append(digits[Int(byte >> 4)]); out.append(digits[Int(byte & 0x0F)]) }
            out.append(UInt8(ascii: "'"))
            return String(decoding: out, as: UTF8.self)
        }
    }
}

/// A list of values as bytes (the catalog keeps a range table's split points so), in the coding
/// commands use.
public enum ValueListCoding {
    public static func encode(_ values: [SQLValue]) -> [UInt8] {
        var out: [UInt8] = []
        ByteCoding.append(UInt32(values.count), to: &out)
        for v in values { SQLCommand.append(value: v, to: &out) }
        return out
    }

    public static func decode(_ bytes: [UInt8]) -> [SQLValue]? {
        var c = 0
        guard let n = ByteCoding.readUInt32(bytes, &c), Int(n) <= bytes.count else { return nil }
        var values: [SQLValue] = []
        for _ in 0..<n {
            guard let v = SQLCommand.readValue(bytes, &c) else { return nil }
            values.append(v)
        }
        return c == bytes.count ? values : nil
    }
}
