/// Where a shard key lands: a fixed, documented hash (xxHash64, seed 0) of the key's canonical bytes,
/// folded onto a ring of `SlotHash.slotCount` slots. Never Swift's `Hasher`: that is seeded per process,
/// and every node, every replica's range guard and every release must agree on a key's slot forever.
/// Golden values in `SlotHashTests` freeze it.
public enum SlotHash {
    /// The ring: 2^16 slots (YugabyteDB's hash space). A shard owns a contiguous arc of it.
    public static let slotCount = 65_536

    /// The slot of a key whose values are as SQLite stores them (after the column's affinity).
    public static func slot(of key: [SQLValue]) -> Int {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16 * key.count)
        for value in key { KeyEncoding.append(value, to: &bytes) }
        return slot(ofEncoded: bytes)
    }

    /// The top 16 bits of the hash: the low bits of xxHash64 mix as well, but taking the top makes the
    /// slot a prefix of the hash, which is how the ring is described in the README.
    public static func slot(ofEncoded bytes: [UInt8]) -> Int {
        Int(XXHash64.hash(bytes, seed: 0) >> 48)
    }
}

/// The canonical bytes of shard-key values: equal values (as SQLite compares them, after affinity)
/// encode alike, so they hash alike. A tag byte, then the payload:
/// - an integer, or a real with an integral value that fits in 64 bits (SQLite holds `5 = 5.0`):
///   tag 1 and the Int64 big-endian;
/// - any other real: tag 2 and its IEEE-754 bits big-endian (SQLite stores no NaN);
/// - text: tag 3, its UTF-8 length (UInt32 big-endian) and bytes;
/// - a blob: tag 4, its length and bytes;
/// - NULL (which a shard key refuses, but the guard function may be asked about): tag 0.
/// Lengths make several columns' encodings concatenate without ambiguity.
public enum KeyEncoding {
    public static func append(_ value: SQLValue, to out: inout [UInt8]) {
        switch value {
        case .null:
            out.append(0)
        case .integer(let i):
            appendInteger(i, to: &out)
        case .real(let d):
            // -2^63 ... 2^63 (exclusive): the doubles that convert to Int64 exactly when integral.
            if d.rounded(.towardZero) == d && d >= -9_223_372_036_854_775_808.0 && d < 9_223_372_036_854_775_808.0 {
                appendInteger(Int64(d), to: &out)
            } else {
                out.append(2)
                appendBigEndian(d.bitPattern, to: &out)
            }
        case .text(let s):
            out.append(3)
            appendBytes(Array(s.utf8), to: &out)
        case .blob(let b):
            out.append(4)
            appendBytes(b, to: &out)
        }
    }

    private static func appendInteger(_ i: Int64, to out: inout [UInt8]) {
        out.append(1)
        appendBigEndian(UInt64(bitPattern: i), to: &out)
    }

    private static func appendBytes(_ bytes: [UInt8], to out: inout [UInt8]) {
        let count = UInt32(truncatingIfNeeded: bytes.count)
        for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: count >> UInt32(shift))) }
        out.append(contentsOf: bytes)
    }

    private static func appendBigEndian(_ v: UInt64, to out: inout [UInt8]) {
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) }
    }
}

/// xxHash64 (Yann Collet's specification, XXH64), written from the spec: fast, well distributed,
/// and with published test vectors.
public enum XXHash64 {
    private static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    public static func hash(_ input: [UInt8], seed: UInt64) -> UInt64 {
        input.withUnsafeBufferPointer { hash($0, seed: seed) }
    }

    public static func hash(_ input: UnsafeBufferPointer<UInt8>, seed: UInt64) -> UInt64 {
        let n = input.count
        var i = 0
        var h: UInt64
        if n >= 32 {
            var v1 = seed &+ p1 &+ p2, v2 = seed &+ p2, v3 = seed, v4 = seed &- p1
            while i + 32 <= n {
                v1 = round(v1, read64(input, i))
                v2 = round(v2, read64(input, i + 8))
                v3 = round(v3, read64(input, i + 16))
                v4 = round(v4, read64(input, i + 24))
                i += 32
            }
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = merge(h, v1); h = merge(h, v2); h = merge(h, v3); h = merge(h, v4)
        } else {
            h = seed &+ p5
        }
        h = h &+ UInt64(n)
        while i + 8 <= n {
            h ^= round(0, read64(input, i))
            h = rotl(h, 27) &* p1 &+ p4
            i += 8
        }
        if i + 4 <= n {
            h ^= UInt64(read32(input, i)) &* p1
            h = rotl(h, 23) &* p2 &+ p3
            i += 4
        }
        while i < n {
            h ^= UInt64(input[i]) &* p5
            h = rotl(h, 11) &* p1
            i += 1
        }
        h ^= h >> 33; h = h &* p2
        h ^= h >> 29; h = h &* p3
        h ^= h >> 32
        return h
    }

    @inline(__always) private static func round(_ acc: UInt64, _ lane: UInt64) -> UInt64 {
        rotl(acc &+ lane &* p2, 31) &* p1
    }

    @inline(__always) private static func merge(_ acc: UInt64, _ v: UInt64) -> UInt64 {
        (acc ^ round(0, v)) &* p1 &+ p4
    }

    @inline(__always) private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always) private static func read64(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> UInt64 {
        var v: UInt64 = 0
        for k in 0..<8 { v |= UInt64(p[i + k]) << UInt64(8 * k) }
        return v
    }

    @inline(__always) private static func read32(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> UInt32 {
        var v: UInt32 = 0
        for k in 0..<4 { v |= UInt32(p[i + k]) << UInt32(8 * k) }
        return v
    }
}
