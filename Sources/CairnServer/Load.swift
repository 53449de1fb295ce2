import CairnCluster
import CairnJSON
import CairnNode
import CairnRaft
import CairnRouter
import CairnSQLite
import Foundation
import Hummingbird
import Metrics
import NIOCore
import NIOPosix

/// Loading a database: SQL text runs as one atomic entry; a SQLite file (recognized by its header) is
/// streamed to disk and replaces the database through entries of bounded size (`DatabaseLoader`),
/// proposed one after another by the node that received it, wherever the group's leader is.
extension API {
    /// Files uploads are stored in, under the data directory, while they load.
    static let loadFilePrefix = "load-"

    func rqLoad(_ request: Request, _ p: RqliteParams, _ who: Principal, database: String = defaultDatabase) async throws -> Response {
        let header = Array("SQLite format 3\u{0}".utf8)
        var body = request.body.makeAsyncIterator()
        var pending: [ByteBuffer] = []
        var head: [UInt8] = []
        while head.count < header.count, let buffer = try await body.next() {
            pending.append(buffer)
            head += buffer.readableBytesView.prefix(header.count - head.count)
        }
        guard !head.isEmpty else { throw HTTPFailure.badRequest("the request body is empty; send a SQLite file or SQL text") }
        guard head == header else {
            var bytes: [UInt8] = []
            for b in pending { bytes += b.readableBytesView }
            while let b = try await body.next() {
                guard bytes.count + b.readableBytes <= options.maxBodyBytes else {
                    throw HTTPFailure(status: 413, message: "the SQL text exceeds the limit of \(options.maxBodyBytes) bytes (--max-body-bytes)")
                }
                bytes += b.readableBytesView
            }
            return try await loadText(request, bytes, p, who, database: database)
        }
        let file = options.dataDirectory + "/" + Self.loadFilePrefix + UUID().uuidString + ".sqlite"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw HTTPFailure.unavailable("cannot store the upload: \(String(cString: strerror(errno)))") }
        var written = 0
        do {
            defer { close(fd) }
            func write(_ b: ByteBuffer) throws {
                written += b.readableBytes
                guard written <= options.maxLoadBytes else {
                    throw HTTPFailure(status: 413, message: "the SQLite file exceeds the limit of \(options.maxLoadBytes) bytes (--max-load-bytes)")
                }
                try b.withUnsafeReadableBytes { raw in
                    var offset = 0
                    while offset < raw.count {
                        let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                        guard n > 0 else { throw HTTPFailure.unavailable("cannot store the upload: \(String(cString: strerror(errno)))") }
                        offset += n
                    }
                }
            }
            for b in pending { try write(b) }
            while let b = try await body.next() { try write(b) }
        }
        let results = try await loadFile(file, group: try await groupRouter.group(of: database))
        return Self.rqJSON(RqliteFormat.body(results: results.map { RqliteFormat.write($0, time: nil, withRowsKey: false, options: p.format) },
                                             options: p.format))
    }

    /// SQL text without the transaction a dump wraps itself in (the entry already is one): its first
    /// `BEGIN` line (after any `PRAGMA` lines) and its last `COMMIT`/`END` line, and no other line, so
    /// a value or a trigger holding such a line is left whole.
    static func unwrapped(dump bytes: [UInt8]) throws -> String {
        guard let text = String(validating: bytes, as: UTF8.self) else { throw HTTPFailure.badRequest("the SQL text is not valid UTF-8") }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        func word(_ line: Substring) -> String { line.trimmingCharacters(in: .whitespacesAndNewlines).uppercased() }
        if let begin = lines.firstIndex(where: { !word($0).hasPrefix("PRAGMA ") && !word($0).isEmpty }),
           ["BEGIN TRANSACTION;", "BEGIN;"].contains(word(lines[begin])),
           let end = lines.lastIndex(where: { !word($0).isEmpty }), end > begin,
           ["COMMIT;", "END TRANSACTION;", "END;"].contains(word(lines[end])) {
            lines.remove(at: end)
            lines.remove(at: begin)
        }
        return lines.joined(separator: "\n")
    }

    /// SQL text: one atomic entry, on the group's leader.
    private func loadText(_ request: Request, _ bytes: [UInt8], _ p: RqliteParams, _ who: Principal, database: String) async throws -> Response {
        let command = SQLCommand.now([SQLStatement(try Self.unwrapped(dump: bytes))], atomic: true)
        let results = try await executeWaitingOutLocks(command, group: try await groupRouter.group(of: database)).results
        return Self.rqJSON(RqliteFormat.body(results: results.map { RqliteFormat.write($0, time: nil, withRowsKey: false, options: p.format) },
                                             options: p.format))
    }

    /// A SQLite file: staging entries, then the entry that swaps them in. Returns the last entry's results.
    func loadFile(_ file: String, group: GroupID) async throws -> [StatementResult] {
        let loader: Unchecked<DatabaseLoader>
        do {
            loader = Unchecked(try DatabaseLoader(file: file, id: String(UInt32.random(in: 0...UInt32.max), radix: 36),
                                                  maxEntryBytes: runtime.config.maxEntryBytes))
        } catch {
            throw HTTPFailure.badRequest("the uploaded SQLite file cannot be read: \(error)")
        }
        var entries = 0
        // Reading the file blocks: off the tasks' threads.
        while let chunk = try await NIOThreadPool.singleton.runIfActive({ try loader.value.nextChunk() }) {
            let results = try await executeWaitingOutLocks(chunk, group: group).results
            entries += 1
            if let failed = results.first(where: { $0.error != nil }) {
                throw HTTPFailure.badRequest("loading failed after \(entries) entries (\(loader.value.rows) rows): \(failed.error!)")
            }
        }
        let results = try await executeWaitingOutLocks(loader.value.finalCommand(), group: group).results
        log("node \(cluster.nodeID): loaded \(loader.value.rows) rows into group \(group) in \(entries + 1) entries")
        if let failed = results.first(where: { $0.error != nil }) {
            throw HTTPFailure.badRequest("loading failed at its last step (the database is unchanged): \(failed.error!)")
        }
        return results
    }
}

/// A value handed to a thread pool and back, used by one thread at a time.
struct Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
