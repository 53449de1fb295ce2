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
final class SegmentFile {
    let path: String
    let sequence: UInt64
    private let fd: Int32
    private(set) var size: Int

    static func name(_ sequence: UInt64) -> String {
        let hex = String(sequence, radix: 16)
        return "wal-" + String(repeating: "0", count: max(0, 16 - hex.count)) + hex + ".log"
    }

    static func sequence(ofFileNamed name: String) -> UInt64? {
        guard name.hasPrefix("wal-"), name.hasSuffix(".log"), name.count == 24 else { return nil }
        return UInt64(name.dropFirst(4).dropLast(4), radix: 16)
    }

    init(directory: String, sequence: UInt64, create: Bool) throws {
        self.sequence = sequence
        path = directory + "/" + Self.name(sequence)
        let flags = create ? (O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC) : (O_RDWR | O_CLOEXEC)
        let fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw WALError.io(operation: "open", path: path, errno: errno) }
        self.fd = fd
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw WALError.io(operation: "seek", path: path, errno: errno) }
        size = Int(end)
    }

    deinit { close(fd) }

    func readAll() throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw WALError.io(operation: "read", path: path, errno: n < 0 ? errno : EIO) }
            done += n
        }
        return out
    }

    /// Appends `bytes`. On failure the file is cut back to its previous size, so a failed write never
    /// leaves a partial record behind a later good one.
    func append(_ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(size + done)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let e = n < 0 ? errno : EIO
                _ = ftruncate(fd, off_t(size))
                throw e == ENOSPC ? WALError.diskFull(path: path) : WALError.io(operation: "write", path: path, errno: e)
            }
            done += n
        }
        size += bytes.count
    }

    func sync() throws {
        while fdatasync(fd) != 0 {
            if errno == EINTR { continue }
            // After a failed fsync the page cache may have dropped the data: nothing written since the
            // last good sync can be trusted, and the caller must not acknowledge it.
            throw errno == ENOSPC ? WALError.diskFull(path: path) : WALError.io(operation: "fdatasync", path: path, errno: errno)
        }
    }

    func truncate(to length: Int) throws {
        guard ftruncate(fd, off_t(length)) == 0 else { throw WALError.io(operation: "truncate", path: path, errno: errno) }
        size = length
        try sync()
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
