import CairnCluster
import CairnSQLite
import Foundation
import Hummingbird
import NIOCore
import NIOPosix

/// Backups (`/db/backup`, `/v1/db/{db}/backup`): a copy of the database, or its SQL dump, made into a
/// file of the data directory off the request's thread and streamed from there a megabyte at a time,
/// so a database larger than memory is backed up in the memory of one chunk. The file is removed when
/// the download ends, however it ends (and at start, should the node have died during one).
extension API {
    /// Files backups are made into, under the data directory.
    static let backupFilePrefix = "backup-"
    /// Read and sent this much at a time.
    static let backupChunkBytes = 1 << 20
    /// How long a forwarding node waits for the holder to start its answer (the copy made).
    static let backupReplyMillis: Int64 = 3_600_000

    func rqBackup(_ request: Request, _ p: RqliteParams, _ who: Principal, database: String = defaultDatabase) async throws -> Response {
        let format = p.value("fmt") ?? "binary"
        guard ["binary", "sql", "delete"].contains(format) else { throw HTTPFailure.badRequest("invalid fmt: \(format); use binary, sql or delete") }
        if p.has("compress") { throw HTTPFailure.badRequest("compress is not supported by CairnDB; compress the download instead") }
        let tables = p.value("tables").map { Set($0.split(separator: ",").map(String.init)) }
        let fresh = !p.has("noleader")
        // Patient: the node that holds the database answers once the copy (or dump) is made, which for a
        // large database takes longer than a request's usual timeout.
        return try await serveOrForward(request, who, db: database, isWrite: false, replyWithinMillis: Self.backupReplyMillis) { group in
            // Unless told otherwise, the copy includes everything committed when the request arrived.
            if fresh { _ = try await self.runtime.query(group: group, [SQLStatement("SELECT 1")], consistency: .linearizable) }
            let copy = self.options.dataDirectory + "/" + Self.backupFilePrefix + UUID().uuidString + ".sqlite"
            do {
                try await self.runtime.backup(group: group, to: copy)
                guard format == "sql" else { return try Self.streamFile(copy, contentType: "application/octet-stream") }
                let dump = copy + ".sql"
                defer { try? FileManager.default.removeItem(atPath: copy) }
                do {
                    try await Self.bulkWork.runIfActive { try SQLStateMachine.dump(file: copy, tables: tables, to: dump) }
                } catch {
                    try? FileManager.default.removeItem(atPath: dump)
                    throw error
                }
                return try Self.streamFile(dump, contentType: "application/sql")
            } catch {
                try? FileManager.default.removeItem(atPath: copy)
                throw error
            }
        }
    }

    /// One thread for long work on files (dumps): off the tasks' threads, and one at a time, so two
    /// downloads neither stall the HTTP API nor the password checks on the shared pool.
    static let bulkWork: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        return pool
    }()

    /// A response that sends `path` and then removes it. The file belongs to the body: it is removed
    /// when the body is done with it, or dropped unsent (the client went away before the answer began).
    static func streamFile(_ path: String, contentType: String) throws -> Response {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            try? FileManager.default.removeItem(atPath: path)
            throw HTTPFailure(status: 500, message: "cannot open the backup file \(path)")
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
        let file = OutgoingFile(path: path, handle: handle)
        let body = ResponseBody(contentLength: size) { writer in
            while true {
                let chunk = try await NIOThreadPool.singleton.runIfActive { try file.handle.read(upToCount: backupChunkBytes) ?? Data() }
                if chunk.isEmpty { break }
                try await writer.write(ByteBuffer(data: chunk))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: contentType], body: body)
    }

    /// Backup and upload files a node that died during a transfer left behind.
    static func removeLeftoverTransfers(in directory: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        where name.hasPrefix(backupFilePrefix) || name.hasPrefix(loadFilePrefix) {
            try? FileManager.default.removeItem(atPath: directory + "/" + name)
        }
    }
}

/// A file being sent, removed with its last reference. Read by one chunk at a time, in order.
final class OutgoingFile: @unchecked Sendable {
    let path: String
    let handle: FileHandle

    init(path: String, handle: FileHandle) {
        self.path = path
        self.handle = handle
    }

    deinit {
        try? handle.close()
        try? FileManager.default.removeItem(atPath: path)
    }
}
