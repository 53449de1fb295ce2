import CairnRaft
import CairnTransport
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension ProcessTests {
@Suite("A hostile peer on the Raft port", .serialized)
struct HostilePeerTests {
    /// Frames a hostile or broken peer sends to `target`, claiming to be `claimed`: appends at the end of
    /// the term range, entries that skip, an inline snapshot, impossible acknowledgements and votes.
    private static func hostileFrame(claimed: NodeID, to target: NodeID) -> [UInt8] {
        var envelopes: [Envelope] = []
        for group in UInt64(0)...6 {
            envelopes += [
                Envelope(group: group, message: Message(kind: .append, from: claimed, to: target, term: .max, logTerm: 1, index: 1,
                                                        entries: [Entry(term: .max, index: 2, data: [1])], commit: .max)),
                Envelope(group: group, message: Message(kind: .append, from: claimed, to: target, term: 1 << 50, logTerm: 1, index: 1,
                                                        entries: [Entry(term: 1 << 50, index: 9, data: [1])], commit: 9)),
                Envelope(group: group, message: Message(kind: .snapshot, from: claimed, to: target, term: 1 << 50,
                                                        snapshot: Snapshot(metadata: SnapshotMetadata(index: 1 << 40, term: 1 << 50, confState: ConfState(voters: [claimed])),
                                                                           data: Array(repeating: 0x41, count: 4096)))),
                Envelope(group: group, message: Message(kind: .appendResponse, from: claimed, to: target, term: .max, index: .max)),
                Envelope(group: group, message: Message(kind: .vote, from: claimed, to: target, term: 1 << 50, logTerm: .max, index: .max)),
            ]
        }
        return WireFormat.handshake(from: claimed) + WireFormat.frame(envelopes)
    }

    /// Writes `bytes` to `port` over mutual TLS with the key and certificate in `tlsDirectory` (a
    /// member's own), then closes.
    private static func sendOverTLS(port: Int, tlsDirectory: String, _ bytes: [UInt8]) async throws {
        var config = TLSConfiguration.makeClientConfiguration()
        config.certificateChain = try NIOSSLCertificate.fromPEMFile(tlsDirectory + "/node.pem").map { .certificate($0) }
        config.privateKey = .privateKey(try NIOSSLPrivateKey(file: tlsDirectory + "/node.key", format: .pem))
        config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(tlsDirectory + "/ca.pem"))
        config.certificateVerification = .noHostnameVerification
        let context = try NIOSSLContext(configuration: config)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        try await channel.writeAndFlush(buffer).get()
        try await Task.sleep(for: .milliseconds(300))
        try? await channel.close().get()
    }

    /// A write commits within a second, every node holds rows 1 and 2, and no term moved to where the
    /// attacker put it.
    private static func expectUnharmed(_ c: ProcessCluster) async throws {
        let started = Date()
        _ = try await c.write(["INSERT INTO t VALUES (2)"])
        #expect(Date().timeIntervalSince(started) < 1.0)
        for n in c.nodes {
            #expect(try await n.rows("SELECT x FROM t ORDER BY x").map { "\($0)" } == ["[1]", "[2]"])
            let status = try await n.get("/v1/status").text
            #expect(!status.contains("\(1 << 50)") && !status.contains("\(UInt64.max)"), "\(n.name): \(status.prefix(400))")
        }
    }

    private static func transport(_ n: NodeProcess) async throws -> [String: Any] {
        try await n.get("/v1/status").json["transport"] as? [String: Any] ?? [:]
    }

    @Test("an outsider on the Raft port (a member's id, a forged handshake, appends at high terms, inline snapshots, garbage) reaches nothing: Raft traffic is mutual TLS by default, so every connection is refused before a byte is read; no term moves, writes go on")
    func outsider() async throws {
        let c = try await ProcessCluster.founded("outsider", count: 3)
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"])
        let ids = c.nodes.map(\.id)
        var before: [Int] = []
        for n in c.nodes {
            let t = try await Self.transport(n)
            #expect(t["tls"] as? Bool == true, "\(n.name): \(t)")
            before.append(t["handshakes_refused"] as? Int ?? 0)
        }
        var rng = SplitMix64(seed: 99)
        for (k, target) in c.nodes.enumerated() {
            let claimed = ids[(k + 1) % ids.count]
            for bytes in [Self.hostileFrame(claimed: claimed, to: target.id),
                          WireFormat.handshake(from: claimed) + (0..<2_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) },
                          Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)] {
                guard let s = RawConnection(port: target.raftPort) else { continue }
                _ = bytes.withUnsafeBytes { send(s.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                try await Task.sleep(for: .milliseconds(100))
                #expect(s.closedByPeer, "\(target.name) kept a connection that spoke in the clear")
                s.close()
            }
        }
        for (n, b) in zip(c.nodes, before) {
            let t = try await Self.transport(n)
            #expect((t["handshakes_refused"] as? Int ?? 0) >= b + 3, "\(n.name): \(t)")
            #expect(t["messages_refused"] as? Int == 0, "\(n.name): a message got past TLS: \(t)")
        }
        try await Self.expectUnharmed(c)
    }

    @Test("a member's own certificate, misused: claiming another node's id is refused at the handshake; malformed, impossible and out-of-place messages under its own id are refused and counted by the gate; no node crashes, terms stay put, writes go on")
    func misusedMemberCertificate() async throws {
        let c = try await ProcessCluster.founded("member-misuse", count: 3)
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"])
        let (n1, n2, n3) = (c.nodes[0], c.nodes[1], c.nodes[2])
        let stolen = n2.dataDir + "/tls"
        let refusedBefore = try await Self.transport(n1)["handshakes_refused"] as? Int ?? 0
        // n2's certificate, claiming to be n3.
        try await Self.sendOverTLS(port: n1.raftPort, tlsDirectory: stolen, Self.hostileFrame(claimed: n3.id, to: n1.id))
        try await Task.sleep(for: .milliseconds(300))
        let afterImpostor = try await Self.transport(n1)
        #expect((afterImpostor["handshakes_refused"] as? Int ?? 0) > refusedBefore, "\(afterImpostor)")
        #expect(afterImpostor["messages_refused"] as? Int == 0, "\(afterImpostor)")
        // n2's certificate under its own id: the gate sees the messages, and refuses every one.
        try await Self.sendOverTLS(port: n1.raftPort, tlsDirectory: stolen, Self.hostileFrame(claimed: n2.id, to: n1.id))
        try await Task.sleep(for: .milliseconds(300))
        // Five messages for each group n1 hosts (the catalog's and the database's); those for groups it
        // does not host are dropped before they reach anything.
        #expect((try await Self.transport(n1))["messages_refused"] as? Int ?? 0 >= 10)
        try await Self.expectUnharmed(c)
    }

    @Test("a removed node's certificate, still valid, opens no connection: every node refuses it at the handshake")
    func removedNodeCertificate() async throws {
        let c = try await ProcessCluster.founded("removed-cert", count: 3)
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"])
        let gone = try await c.join()
        let kept = NSTemporaryDirectory() + "cairn-removed-tls-\(gone.id)-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.copyItem(atPath: gone.dataDir + "/tls", toPath: kept)
        defer { try? FileManager.default.removeItem(atPath: kept) }
        let removed = try await c.nodes[0].raw(.POST, "/v1/cluster/remove", #"{"id":\#(gone.id)}"#, contentType: "application/json")
        #expect(removed.status == 200, "\(removed.text)")
        _ = await gone.waitForExit(seconds: 30)
        c.nodes.removeAll { $0 === gone }
        for n in c.nodes {
            // Each node learns of the removal from its catalog within a controller pass.
            var refused = false
            let deadline = Date().addingTimeInterval(10)
            while !refused && Date() < deadline {
                let before = try await Self.transport(n)
                try await Self.sendOverTLS(port: n.raftPort, tlsDirectory: kept, Self.hostileFrame(claimed: gone.id, to: n.id))
                let after = try await Self.transport(n)
                refused = (after["handshakes_refused"] as? Int ?? 0) > (before["handshakes_refused"] as? Int ?? 0)
                    && after["messages_refused"] as? Int == before["messages_refused"] as? Int
            }
            #expect(refused, "\(n.name) let the removed node's certificate in")
        }
        try await Self.expectUnharmed(c)
    }
}
}
