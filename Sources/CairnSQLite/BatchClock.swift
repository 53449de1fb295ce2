import CSQLite3
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A clock SQLite reads through its VFS: `'now'`, `CURRENT_TIMESTAMP` and `DEFAULT CURRENT_TIMESTAMP`
/// all see the time the leader fixed for the batch being applied, so every replica writes the same row.
/// Outside an apply (reads), it is the real clock.
final class BatchClock {
    let name: String
    let vfs: UnsafeMutablePointer<sqlite3_vfs>
    private let nowSlot: UnsafeMutablePointer<Int64>
    private let raw: UnsafeMutableRawPointer
    private let nameBuffer: UnsafeMutablePointer<CChar>

    /// Julian-day milliseconds of the Unix epoch.
    static let unixEpochJulianMillis: Int64 = 210_866_760_000_000

    init() throws {
        guard let base = sqlite3_vfs_find(nil) else { throw SQLiteError(message: "SQLite has no default VFS") }
        // One allocation: the VFS struct, then the clock value, so the callback finds the clock from the
        // VFS pointer it is given.
        let vfsBytes = (MemoryLayout<sqlite3_vfs>.size + 15) & ~15
        raw = UnsafeMutableRawPointer.allocate(byteCount: vfsBytes + 8, alignment: 16)
        vfs = raw.bindMemory(to: sqlite3_vfs.self, capacity: 1)
        vfs.initialize(to: base.pointee)
        nowSlot = (raw + vfsBytes).bindMemory(to: Int64.self, capacity: 1)
        nowSlot.initialize(to: 0)
        name = "cairn-\(UInt(bitPattern: raw))"
        nameBuffer = strdup(name)!
        vfs.pointee.zName = UnsafePointer(nameBuffer)
        vfs.pointee.pNext = nil
        vfs.pointee.xCurrentTimeInt64 = { vfs, out in
            guard let vfs, let out else { return SQLITE_ERROR }
            let vfsBytes = (MemoryLayout<sqlite3_vfs>.size + 15) & ~15
            let fixed = (UnsafeMutableRawPointer(vfs) + vfsBytes).load(as: Int64.self)
            if fixed != 0 {
                out.pointee = fixed + BatchClock.unixEpochJulianMillis
                return SQLITE_OK
            }
            var ts = timespec()
            clock_gettime(CLOCK_REALTIME, &ts)
            out.pointee = Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000 + BatchClock.unixEpochJulianMillis
            return SQLITE_OK
        }
        guard sqlite3_vfs_register(vfs, 0) == SQLITE_OK else { throw SQLiteError(message: "cannot register the batch clock VFS") }
    }

    /// Unix milliseconds to report, or 0 for the real clock.
    var fixedMillis: Int64 {
        get { nowSlot.pointee }
        set { nowSlot.pointee = newValue }
    }

    deinit {
        sqlite3_vfs_unregister(vfs)
        free(nameBuffer)
        raw.deallocate()
    }
}
