import CairnJSON
import CairnSQLite
import Foundation
import CairnNode
import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers

/// `DATA_DIR/audit.log`: one JSON line per write and per administrative action, recorded by the node
/// that received the request from the client. A request forwarded between nodes is sent under the
/// forwarding node's token and not recorded again; headers a client sends cannot make it look
/// forwarded (see `Principal.isClient`). Statements are recorded without their parameter values;
/// passwords never appear.
///
/// Lines are collected in memory and written every `flushMillis` (and at shutdown), not one write
/// per request: at thousands of writes a second the system calls cost more than the writes' own work.
/// A process killed outright loses at most the last `flushMillis` of lines; data is never affected.
final class AuditLog: Sendable {
    private let state: NIOLockedValueBox<State>
    private let node: UInt64
    private let reported = NIOLockedValueBox(false)
    static let flushMillis = 100
    /// Written at once when this much is waiting.
    static let maxPendingBytes = 256 << 10

    private struct State {
        var file: Int32
        var pending: [UInt8] = []
    }

    init(path: String, node: UInt64) {
        state = NIOLockedValueBox(State(file: open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)))
        self.node = node
    }

    func record(_ who: Principal, action: String, database: String?, statement: String? = nil) {
        guard who.isClient else { return }
        append(line(who, action: action, database: database, statement: statement, time: Timestamp.iso8601()))
    }

    private func line(_ who: Principal, action: String, database: String?, statement: String?, time: String) -> [UInt8] {
        var fields: [(String, JSON)] = [
            ("time", .string(time)), ("node", .int(node)),
            ("user", who.user.map { .string($0) } ?? .null), ("action", .string(action)),
        ]
        if let database { fields.append(("database", .string(database))) }
        if let statement { fields.append(("statement", .string(statement))) }
        var line = JSON.object(fields).serialized()
        line.append(0x0A)
        return line
    }

    private func append(_ lines: [UInt8]) {
        let full = state.withLockedValue { s in
            s.pending.append(contentsOf: lines)
            return s.pending.count >= Self.maxPendingBytes
        }
        if full { flush() }
    }

    /// Writes what is waiting.
    func flush() {
        let failure: Int32? = state.withLockedValue { s in
            guard !s.pending.isEmpty else { return nil }
            defer { s.pending.removeAll(keepingCapacity: s.pending.capacity <= Self.maxPendingBytes * 2) }
            guard s.file >= 0 else { return EBADF }
            var done = 0
            while done < s.pending.count {
                let n = s.pending.withUnsafeBytes { Glibc.write(s.file, $0.baseAddress! + done, $0.count - done) }
                if n < 0 && errno == EINTR { continue }
                // A failed write (a full disk) must not take the node down; the failure is reported once.
                guard n > 0 else { return n < 0 ? errno : EIO }
                done += n
            }
            return nil
        }
        if let failure, !reported.withLockedValue({ r in defer { r = true }; return r }) {
            try? FileHandle.standardError.write(contentsOf: Data("audit log: cannot write: \(String(cString: strerror(failure)))\n".utf8))
        }
    }

    /// Flushes every `flushMillis` until cancelled, then once more.
    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(Self.flushMillis))
            flush()
        }
        flush()
    }

    /// One line per statement of a request, added in one step.
    func record(_ who: Principal, statements: [SQLStatement], database: String) {
        guard who.isClient else { return }
        let time = Timestamp.iso8601()
        var lines: [UInt8] = []
        for s in statements where !s.sql.isEmpty {
            lines += line(who, action: "write", database: database, statement: s.sql, time: time)
        }
        append(lines)
    }
}

/// A request that reads or writes (rqlite's `/db/request`, CairnDB's `/v1/db/{db}/request`) is known to
/// write only where its statements are judged against the schema, which may be a node it was forwarded
/// to. That node marks its reply, and the node that received the request from the client records it.
enum AuditedWrite {
    static let header = HTTPField.Name("X-Cairn-Audit-Write")!

    /// A write that failed after it was judged one (its outcome may be unknown): the error reply of a
    /// forwarded request carries the mark too.
    struct Failed: Error {
        var underlying: any Error
    }

    /// One request's record, made at most once whichever way it is reached.
    final class Once: Sendable {
        private let done = NIOLockedValueBox(false)

        /// Records, unless it already did.
        func record(_ who: Principal, _ statements: [SQLStatement], database: String, audit: AuditLog) {
            guard who.isClient, !done.withLockedValue({ d in defer { d = true }; return d }) else { return }
            audit.record(who, statements: statements, database: database)
        }
    }

    /// On the node that runs statements it judged a write, before running them: this node records them
    /// if the client sent the request here; otherwise its reply (or error) will carry the mark.
    static func willWrite(_ who: Principal, _ statements: [SQLStatement], database: String, audit: AuditLog, once: Once) {
        once.record(who, statements, database: database, audit: audit)
    }

    /// Runs the write, marking its reply, or its error, for the node that received the request.
    static func run(_ who: Principal, _ write: () async throws -> Response) async throws -> Response {
        do {
            var reply = try await write()
            if !who.isClient { reply.headers[header] = "1" }
            return reply
        } catch let e as RuntimeError where e.routesElsewhere {
            // Not run here (another leader, no copy, dropped): where it does run will say.
            throw e
        } catch {
            if who.isClient { throw error }
            throw Failed(underlying: error)
        }
    }

    /// On the node that received the request from the client, once a forward answered: record it if the
    /// reply (a success or an error) says it wrote. The mark goes no further than this node.
    static func forwarded(_ who: Principal, _ statements: [SQLStatement], database: String, audit: AuditLog, once: Once, reply: inout Response) {
        guard reply.headers[header] != nil else { return }
        if who.isClient { reply.headers[header] = nil }
        once.record(who, statements, database: database, audit: audit)
    }
}

extension RuntimeError {
    /// Errors on which `API.route` sends the request on, or answers for the database, itself.
    var routesElsewhere: Bool {
        switch self {
        case .notLeader, .unknownGroup, .databaseDropped: return true
        default: return false
        }
    }
}
