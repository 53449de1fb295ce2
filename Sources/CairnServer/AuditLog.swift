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
    private let nodeText: [UInt8]
    private let reported = NIOLockedValueBox(false)
    static let flushMillis = 100
    /// A line's size besides its statement, about (names longer than usual only make it grow once more).
    static let lineBytes = 128
    /// Written at once when this much is waiting.
    static let maxPendingBytes = 256 << 10

    private struct State {
        var file: Int32
        var pending: [UInt8] = []
    }

    let path: String

    init(path: String, node: UInt64) {
        state = NIOLockedValueBox(State(file: open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)))
        nodeText = Array(String(node).utf8)
        self.path = path
    }

    /// The newest `maxLines` lines written (read from at most the file's last 1 MiB).
    func tail(maxLines: Int) -> [String] {
        guard let handle = FileHandle(forReadingAtPath: path) else { return [] }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        let start = size > 1 << 20 ? size - (1 << 20) : 0
        try? handle.seek(toOffset: start)
        let data = (try? handle.readToEnd()) ?? Data()
        var lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true)
        // A read that began mid-line drops the partial first one.
        if start > 0, !lines.isEmpty { lines.removeFirst() }
        return lines.suffix(maxLines).map(String.init)
    }

    func record(_ who: Principal, action: String, database: String?, statement: String? = nil) {
        guard who.isClient else { return }
        var out: [UInt8] = []
        out.reserveCapacity(Self.lineBytes + (statement?.utf8.count ?? 0))
        line(who, action: action, database: database, statement: statement, time: time(nil), to: &out)
        append(out)
    }

    /// One line, `{"time":…,"node":…,"user":…,"action":…[,"database":…][,"statement":…]}`, written
    /// straight into bytes: every write is audited, and building JSON values for it cost as much
    /// as a quarter of the request's planning.
    private func line(_ who: Principal, action: String, database: String?, statement: String?, time: time_t, to out: inout [UInt8]) {
        out.append(contentsOf: #"{"time":""#.utf8)
        Timestamp.append(seconds: time, to: &out)
        out.append(contentsOf: #"","node":"#.utf8)
        out.append(contentsOf: nodeText)
        out.append(contentsOf: #","user":"#.utf8)
        if let user = who.user { JSON.writeString(user, to: &out) } else { out.append(contentsOf: "null".utf8) }
        out.append(contentsOf: #","action":"#.utf8)
        JSON.writeString(action, to: &out)
        if let database {
            out.append(contentsOf: #","database":"#.utf8)
            JSON.writeString(database, to: &out)
        }
        if let statement {
            out.append(contentsOf: #","statement":"#.utf8)
            JSON.writeString(statement, to: &out)
        }
        out.append(contentsOf: "}\n".utf8)
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
        let now = time(nil)
        var lines: [UInt8] = []
        // Once for the batch: reserving per line would copy the batch for every line it adds.
        lines.reserveCapacity(statements.reduce(0) { $0 + Self.lineBytes + $1.sql.utf8.count })
        for s in statements where !s.sql.isEmpty {
            line(who, action: "write", database: database, statement: s.sql, time: now, to: &lines)
        }
        append(lines)
    }
}
