import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum WALError: Error, Equatable, CustomStringConvertible {
    /// A record that is not the torn tail of the last segment failed its checksum or cannot be parsed:
    /// truncating here could drop acknowledged writes, so the node refuses to start.
    case corrupt(file: String, offset: Int, reason: String)
    case diskFull(path: String)
    case io(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .corrupt(let file, let offset, let reason):
            return "write-ahead log \(file) is corrupt at byte \(offset): \(reason); refusing to start rather than drop acknowledged writes"
        case .diskFull(let path):
            return "no space left on the device holding \(path): the write was not made durable and nothing was acknowledged"
        case .io(let op, let path, let e):
            return "\(op) \(path) failed: \(String(cString: strerror(e)))"
        }
    }
}

/// One append-only segment file. Writes go straight to the file descriptor; `sync` makes them durable.
///
/// The file is allocated ahead of the writes (`preallocationBytes` at a time), so an append lands
/// in blocks the file already owns and its size does not change: `fdatasync` then flushes the data
/// alone, without an ext4 journal commit for the new size. Measured on this machine: a 1.2 KB append
/// and sync 171-193 µs p50 appending, 118-135 µs into allocated space, and three processes syncing
/// at once 8,400-9,200 syncs/s against 11,500-12,000. Past the records (`size`) the file holds zeros,
/// which recovery reads as the end of the log.
final class SegmentFile {
    let path: String
    let sequence: UInt64
    private let fd: Int32
    /// Where the records end (the next append goes here).
    private(set) var size: Int
    /// How long the file is: records, then allocated zeros.
    private(set) var allocated: Int
    let preallocationBytes: Int

    static func name(_ sequence: UInt64) -> String {
        let hex = String(sequence, radix: 16)
        return "wal-" + String(repeating: "0", count: max(0, 16 - hex.count)) + hex + ".log"
    }

    static func sequence(ofFileNamed name: String) -> UInt64? {
        guard name.hasPrefix("wal-"), name.hasSuffix(".log"), name.count == 24 else { return nil }
        return UInt64(name.dropFirst(4).dropLast(4), radix: 16)
    }

    /// An existing file starts with `size` at its end until recovery finds where its records end
    /// (`adoptEnd`).
    init(directory: String, sequence: UInt64, create: Bool, preallocationBytes: Int = 4 << 20) throws {
        precondition(preallocationBytes > 0, "preallocation must be positive")
        self.sequence = sequence
        self.preallocationBytes = preallocationBytes
        path = directory + "/" + Self.name(sequence)
        let flags = create ? (O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC) : (O_RDWR | O_CLOEXEC)
        let fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw WALError.io(operation: "open", path: path, errno: errno) }
        self.fd = fd
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw WALError.io(operation: "seek", path: path, errno: errno) }
        size = Int(end)
        allocated = Int(end)
    }

    deinit { close(fd) }

    func readAll() throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: allocated)
        var done = 0
        while done < allocated {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, allocated - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw WALError.io(operation: "read", path: path, errno: n < 0 ? errno : EIO) }
            done += n
        }
        return out
    }

    /// Recovery found the records ending at `end`; what follows is allocated zeros.
    func adoptEnd(_ end: Int) {
        precondition(end <= allocated, "records end at \(end), past the file's \(allocated) bytes")
        size = end
    }

    /// Appends `bytes`. On failure the file is cut back to its previous size, so a failed write never
    /// leaves a partial record behind a later good one.
    func append(_ bytes: [UInt8]) throws {
        if size + bytes.count > allocated { reserve(size + bytes.count) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(size + done)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let e = n < 0 ? errno : EIO
                _ = ftruncate(fd, off_t(size))
                allocated = size
                throw e == ENOSPC ? WALError.diskFull(path: path) : WALError.io(operation: "write", path: path, errno: e)
            }
            done += n
        }
        size += bytes.count
        allocated = max(allocated, size)
    }

    /// Allocates the file through at least `end` and the next step beyond. Without the space (a full
    /// disk) it allocates nothing: the write then appends as before, and fails or not by itself.
    private func reserve(_ end: Int) {
        let target = (end / preallocationBytes + 1) * preallocationBytes
        if posix_fallocate(fd, off_t(allocated), off_t(target - allocated)) == 0 {
            allocated = target
        } else {
            // It may have allocated part of it: the file's length says what it holds now.
            var st = stat()
            if fstat(fd, &st) == 0 { allocated = max(Int(st.st_size), size) }
        }
    }

    func sync() throws {
        while fdatasync(fd) != 0 {
            if errno == EINTR { continue }
            // After a failed fsync the page cache may have dropped the data: nothing written since the
            // last good sync can be trusted, and the caller must not acknowledge it.
            throw errno == ENOSPC ? WALError.diskFull(path: path) : WALError.io(operation: "fdatasync", path: path, errno: errno)
        }
    }

    /// Cuts the file at `length` (a torn tail), durably.
    func truncate(to length: Int) throws {
        guard ftruncate(fd, off_t(length)) == 0 else { throw WALError.io(operation: "truncate", path: path, errno: errno) }
        size = length
        allocated = length
        try sync()
    }

    /// Gives back the allocated space past the records of a segment no longer written. Not synced: a
    /// crash before the cut reaches the disk leaves the zeros, which recovery reads as the end.
    func release() {
        guard allocated > size, ftruncate(fd, off_t(size)) == 0 else { return }
        allocated = size
    }
}

/// Small files that must survive power loss whole: the node's identity, received snapshots.
public enum DurableFile {
    /// Syncs a file, or a directory (which makes the creation, renaming or removal of its entries durable).
    public static func sync(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw WALError.io(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw WALError.io(operation: "fsync", path: path, errno: errno) }
    }

    /// Writes `bytes` to `path` atomically: a temporary file is written and synced, renamed over `path`,
    /// and the directory synced. A crash leaves either the old file or the new one.
    public static func write(_ bytes: [UInt8], to path: String) throws {
        let temporary = path + ".writing"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw WALError.io(operation: "open", path: temporary, errno: errno) }
        defer { close(fd) }
        try writeAll(bytes, to: fd, path: temporary)
        guard fsync(fd) == 0 else { throw WALError.io(operation: "fsync", path: temporary, errno: errno) }
        guard rename(temporary, path) == 0 else { throw WALError.io(operation: "rename", path: temporary, errno: errno) }
        try sync((path as NSString).deletingLastPathComponent)
    }

    /// Writes all of `bytes` at the descriptor's position; a full disk is `diskFull`, not a generic error.
    static func writeAll(_ bytes: [UInt8], to fd: Int32, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let e = n < 0 ? errno : EIO
                throw e == ENOSPC ? WALError.diskFull(path: path) : WALError.io(operation: "write", path: path, errno: e)
            }
            done += n
        }
    }
}

/// A file that arrives in pieces (a snapshot streamed from a leader): written to `path.receiving`, and
/// only once complete synced and renamed to `path`, so a crash never leaves a partial file under `path`.
public final class IncomingFile {
    public let path: String
    private let temporary: String
    private var fd: Int32
    public private(set) var bytesWritten: UInt64 = 0
    public private(set) var checksum: UInt32 = 0

    public init(path: String) throws {
        self.path = path
        temporary = path + ".receiving"
        fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw WALError.io(operation: "open", path: temporary, errno: errno) }
    }

    public func append(_ bytes: [UInt8]) throws {
        try DurableFile.writeAll(bytes, to: fd, path: temporary)
        bytesWritten += UInt64(bytes.count)
        checksum = CRC32C.update(checksum, with: bytes)
    }

    /// Makes the file durable under its final name.
    public func commit() throws {
        guard fsync(fd) == 0 else { throw WALError.io(operation: "fsync", path: temporary, errno: errno) }
        close(fd)
        fd = -1
        guard rename(temporary, path) == 0 else { throw WALError.io(operation: "rename", path: temporary, errno: errno) }
        try DurableFile.sync((path as NSString).deletingLastPathComponent)
    }

    /// Drops an incomplete file.
    public func abandon() {
        if fd >= 0 { close(fd) }
        fd = -1
        unlink(temporary)
    }

    deinit {
        if fd >= 0 { close(fd) }
    }
}
