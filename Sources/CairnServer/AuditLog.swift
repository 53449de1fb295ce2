import CairnJSON
import CairnSQLite
import Foundation
import Hummingbird
import NIOConcurrencyHelpers

/// `DATA_DIR/audit.log`: one JSON line per write and per administrative action, recorded by the node
/// that received the request (a forwarded request is recorded once, where it came in). Statements
/// are recorded without their parameter values; passwords never appear.
final class AuditLog: Sendable {
    private let handle: NIOLockedValueBox<FileHandle?>
    private let node: UInt64
    private let reported = NIOLockedValueBox(false)

    init(path: String, node: UInt64) {
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
        let h = FileHandle(forWritingAtPath: path)
        h?.seekToEndOfFile()
        handle = NIOLockedValueBox(h)
        self.node = node
    }

    func record(_ who: Principal, _ request: Request, action: String, database: String?, statement: String? = nil) {
        guard (request.headers[API.hops].flatMap { Int($0) } ?? 0) == 0 else { return }
        var fields: [(String, JSON)] = [
            ("time", .string(Timestamp.iso8601())), ("node", .int(node)),
            ("user", who.user.map { .string($0) } ?? .null), ("action", .string(action)),
        ]
        if let database { fields.append(("database", .string(database))) }
        if let statement { fields.append(("statement", .string(statement))) }
        var line = JSON.object(fields).serialized()
        line.append(0x0A)
        // A failed write (a full disk) must not take the node down; the failure is reported once.
        let failed: (any Error)? = handle.withLockedValue { h in
            do { try h?.write(contentsOf: Data(line)); return nil } catch { return error }
        }
        if let failed, !reported.withLockedValue({ r in defer { r = true }; return r }) {
            try? FileHandle.standardError.write(contentsOf: Data("audit log: cannot write: \(failed)\n".utf8))
        }
    }

    func record(_ who: Principal, _ request: Request, statements: [SQLStatement], database: String) {
        for s in statements where !s.sql.isEmpty { record(who, request, action: "write", database: database, statement: s.sql) }
    }
}
