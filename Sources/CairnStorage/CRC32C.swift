/// CRC-32C (Castagnoli), the checksum on every WAL record: it detects torn and corrupted writes.
public enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        update(0, with: bytes)
    }

    /// The checksum of the bytes so far followed by `bytes`, for data that arrives in pieces.
    public static func update<C: Collection>(_ checksum: UInt32, with bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc = ~checksum
        for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        return ~crc
    }
}
