import CairnRaft
import CairnTransport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension ProcessTests {
@Suite("A hostile peer on the Raft port", .serialized)
struct HostilePeerTests {
    /// Opens a TCP connection to `port`, writes `bytes`, lets the node read them, and closes.
    private static func sendRaw(port: Int, _ bytes: [UInt8]) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return }
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        usleep(30_000)
    }

    @Test("malformed, impossible and out-of-place messages from a peer claiming a member's id (appends at the end of the term range, entries that skip, inline snapshots, garbage, oversized frames) are refused and counted; no node crashes, terms stay put, and writes and reads go on")
    func hostileFrames() async throws {
        let c = try await ProcessCluster.founded("hostile-peer", count: 3)
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"])
        let ids = c.nodes.map(\.id)
        var rng = SplitMix64(seed: 99)
        for (k, target) in c.nodes.enumerated() {
            let claimed = ids[(k + 1) % ids.count]
            let handshake = WireFormat.handshake(from: claimed)
            var envelopes: [Envelope] = []
            for group in UInt64(0)...6 {
                let to = target.id
                envelopes += [
                    Envelope(group: group, message: Message(kind: .append, from: claimed, to: to, term: .max, logTerm: 1, index: 1,
                                                            entries: [Entry(term: .max, index: 2, data: [1])], commit: .max)),
                    Envelope(group: group, message: Message(kind: .append, from: claimed, to: to, term: 1 << 50, logTerm: 1, index: 1,
                                                            entries: [Entry(term: 1 << 50, index: 9, data: [1])], commit: 9)),
                    Envelope(group: group, message: Message(kind: .snapshot, from: claimed, to: to, term: 1 << 50,
                                                            snapshot: Snapshot(metadata: SnapshotMetadata(index: 1 << 40, term: 1 << 50, confState: ConfState(voters: [claimed])),
                                                                               data: Array(repeating: 0x41, count: 4096)))),
                    Envelope(group: group, message: Message(kind: .appendResponse, from: claimed, to: to, term: .max, index: .max)),
                    Envelope(group: group, message: Message(kind: .vote, from: claimed, to: to, term: 1 << 50, logTerm: .max, index: .max)),
                ]
            }
            Self.sendRaw(port: target.raftPort, handshake + WireFormat.frame(envelopes))
            // Garbage after a valid handshake, a frame claiming 4 GiB, and a handshake that is not one.
            Self.sendRaw(port: target.raftPort, handshake + (0..<2_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
            Self.sendRaw(port: target.raftPort, handshake + [0xFF, 0xFF, 0xFF, 0xFF] + Array(repeating: 0, count: 64))
            Self.sendRaw(port: target.raftPort, Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        }
        try await Task.sleep(for: .milliseconds(500))
        for n in c.nodes {
            let metrics = try await n.get("/metrics").text
            let line = metrics.split(separator: "\n").first { $0.hasPrefix("cairn_raft_messages_refused_total") }
            let refused = line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
            // Five messages for each group a node hosts (the catalog's and the database's); those for
            // groups it does not host are dropped before they reach anything.
            #expect(refused >= 10, "\(n.name): \(line ?? "no refused-messages counter")")
        }
        // Every node still serves, no term moved to where the attacker put it, and the data is whole.
        let started = Date()
        _ = try await c.write(["INSERT INTO t VALUES (2)"])
        #expect(Date().timeIntervalSince(started) < 1.0)
        try await c.waitReady()
        for n in c.nodes {
            #expect(try await n.rows("SELECT x FROM t ORDER BY x").map { "\($0)" } == ["[1]", "[2]"])
            let status = try await n.get("/v1/status").text
            #expect(!status.contains("\(1 << 50)") && !status.contains("\(UInt64.max)"), "\(n.name): \(status.prefix(400))")
        }
    }
}
}
