import CairnRaft
import CairnTestSupport
import Foundation
import NIOConcurrencyHelpers
import NIOPosix
import Testing
@testable import CairnTransport

/// Collects what a transport receives.
final class Inbox: Sendable {
    let received = NIOLockedValueBox<[(NodeID, Envelope)]>([])

    func add(_ from: NodeID, _ envelopes: [Envelope]) {
        received.withLockedValue { r in for e in envelopes { r.append((from, e)) } }
    }

    var count: Int { received.withLockedValue { $0.count } }

    /// Waits (at most `seconds`) until `n` envelopes arrived.
    func wait(for n: Int, seconds: Double = 5) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if count >= n { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return count >= n
    }
}

private func heartbeat(_ from: NodeID, _ to: NodeID, _ i: UInt64) -> Envelope {
    Envelope(group: 1, message: Message(kind: .heartbeat, from: from, to: to, term: 1, context: i))
}

@Suite("Transport over TCP")
struct RaftTransportTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    private func node(_ id: NodeID, port: Int = 0, inbox: Inbox, tls: TransportTLS? = nil,
                      log: @escaping @Sendable (String) -> Void = { _ in }) async throws -> (RaftTransport, Int) {
        var config = TransportConfig(nodeID: id, listen: PeerAddress(host: "127.0.0.1", port: port))
        config.tls = tls
        config.reconnectBaseMillis = 10
        config.reconnectMaxMillis = 100
        // Tests run in parallel: a client stalled past the default 5 s would be hung up on for its
        // silence before its handshake arrived, and these tests check what the handshake says.
        config.handshakeTimeoutMillis = 60_000
        let t = RaftTransport(config: config, group: group, log: log) { inbox.add($0, $1) }
        let bound = try await t.start()
        return (t, bound)
    }

    @Test("messages arrive in order, attributed to their sender, batched into few frames")
    func delivery() async throws {
        let inboxA = Inbox(), inboxB = Inbox()
        let (a, _) = try await node(1, inbox: inboxA)
        let (b, portB) = try await node(2, inbox: inboxB)
        a.setPeer(2, address: PeerAddress(host: "127.0.0.1", port: portB))
        for i in 0..<500 { a.send([heartbeat(1, 2, UInt64(i))], to: 2) }
        #expect(await inboxB.wait(for: 500))
        let got = inboxB.received.withLockedValue { $0 }
        #expect(got.allSatisfy { $0.0 == 1 })
        #expect(got.map { $0.1.message.context } == (0..<500).map { UInt64($0) })
        #expect(a.stats.framesSent < 500)
        await a.shutdown()
        await b.shutdown()
    }

    @Test("a peer that restarts is reconnected to, with backoff while it is down")
    func reconnect() async throws {
        let inboxA = Inbox(), inboxB = Inbox()
        let (a, _) = try await node(1, inbox: inboxA)
        let (b, portB) = try await node(2, inbox: inboxB)
        a.setPeer(2, address: PeerAddress(host: "127.0.0.1", port: portB))
        a.send([heartbeat(1, 2, 1)], to: 2)
        #expect(await inboxB.wait(for: 1))
        await b.shutdown()
        try await Task.sleep(for: .milliseconds(100))
        let inboxB2 = Inbox()
        let (b2, _) = try await node(2, port: portB, inbox: inboxB2)
        // Sends keep trying until the new listener answers.
        var delivered = false
        for i in 0..<100 where !delivered {
            a.send([heartbeat(1, 2, UInt64(100 + i))], to: 2)
            delivered = await inboxB2.wait(for: 1, seconds: 0.05)
        }
        #expect(delivered)
        #expect(a.stats.connectionsOpened >= 2)
        await a.shutdown()
        await b2.shutdown()
    }

    @Test("messages for an unreachable peer are dropped (Raft resends), never hoarded")
    func boundedQueue() async throws {
        let inbox = Inbox()
        var config = TransportConfig(nodeID: 1, listen: PeerAddress(host: "127.0.0.1", port: 0))
        config.maxQueuedBytesPerPeer = 64 << 10
        let a = RaftTransport(config: config, group: group) { inbox.add($0, $1) }
        _ = try await a.start()
        // Nothing listens on this port (it was just bound and released).
        let probe = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let deadPort = probe.localAddress!.port!
        try await probe.close()
        a.setPeer(2, address: PeerAddress(host: "127.0.0.1", port: deadPort))
        let big = Envelope(group: 1, message: Message(kind: .append, from: 1, to: 2, term: 1,
                                                      entries: [Entry(term: 1, index: 1, data: Array(repeating: 7, count: 4096))]))
        for _ in 0..<200 { a.send([big], to: 2) }
        try await Task.sleep(for: .milliseconds(200))
        #expect(a.stats.envelopesDroppedUnreachable + a.stats.envelopesDroppedQueueFull == 200)
        #expect(a.stats.envelopesSent == 0)
        await a.shutdown()
    }

    @Test("a connection with the wrong handshake is refused and logged")
    func wrongVersion() async throws {
        let inbox = Inbox()
        let logs = NIOLockedValueBox<[String]>([])
        let (b, port) = try await node(2, inbox: inbox) { line in logs.withLockedValue { $0.append(line) } }
        let client = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get()
        var hs = WireFormat.handshake(from: 9)
        hs[5] = 99
        try await client.writeAndFlush(client.allocator.buffer(bytes: hs))
        try await client.closeFuture.get()   // the server hangs up
        #expect(b.stats.handshakesRefused == 1)
        #expect(logs.withLockedValue { $0 }.contains { $0.contains("wire version 99") })
        #expect(inbox.count == 0)
        await b.shutdown()
    }

    @Test("an injected partition drops traffic both ways until healed")
    func partitionFault() async throws {
        let inboxA = Inbox(), inboxB = Inbox()
        let (a, portA) = try await node(1, inbox: inboxA)
        let (b, portB) = try await node(2, inbox: inboxB)
        a.setPeer(2, address: PeerAddress(host: "127.0.0.1", port: portB))
        b.setPeer(1, address: PeerAddress(host: "127.0.0.1", port: portA))
        a.faults = TransportFaults(partitioned: [2])
        for i in 0..<10 {
            a.send([heartbeat(1, 2, UInt64(i))], to: 2)
            b.send([heartbeat(2, 1, UInt64(i))], to: 1)
        }
        try await Task.sleep(for: .milliseconds(200))
        #expect(inboxB.count == 0)
        #expect(inboxA.count == 0, "node 1 also drops what node 2 sends")
        a.faults = TransportFaults()
        a.send([heartbeat(1, 2, 99)], to: 2)
        b.send([heartbeat(2, 1, 99)], to: 1)
        #expect(await inboxB.wait(for: 1))
        #expect(await inboxA.wait(for: 1))
        await a.shutdown()
        await b.shutdown()
    }

    @Test("mutual TLS: nodes with certificates from the cluster's CA talk; a node with another CA's certificate is refused both ways")
    func mutualTLS() async throws {
        let dir = NSTemporaryDirectory() + "cairn-tls-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await makeTestCertificates(in: dir, ca: "cluster-ca", nodes: ["a", "b"])
        try await makeTestCertificates(in: dir, ca: "other-ca", nodes: ["intruder"])
        func tls(_ name: String, ca: String) throws -> TransportTLS {
            try TransportTLS(certificatePath: "\(dir)/\(name).pem", keyPath: "\(dir)/\(name).key", caPath: "\(dir)/\(ca).pem")
        }
        let inboxA = Inbox(), inboxB = Inbox(), inboxC = Inbox()
        let (a, portA) = try await node(1, inbox: inboxA, tls: try tls("a", ca: "cluster-ca"))
        let (b, portB) = try await node(2, inbox: inboxB, tls: try tls("b", ca: "cluster-ca"))
        let (c, _) = try await node(3, inbox: inboxC, tls: try tls("intruder", ca: "other-ca"))
        a.setPeer(2, address: PeerAddress(host: "127.0.0.1", port: portB))
        c.setPeer(1, address: PeerAddress(host: "127.0.0.1", port: portA))
        for i in 0..<50 { a.send([heartbeat(1, 2, UInt64(i))], to: 2) }
        #expect(await inboxB.wait(for: 50))
        for i in 0..<20 {
            c.send([heartbeat(3, 1, UInt64(i))], to: 1)
            try await Task.sleep(for: .milliseconds(10))
        }
        try await Task.sleep(for: .milliseconds(200))
        #expect(inboxA.count == 0, "a node outside the CA delivered messages")
        #expect(a.stats.handshakesRefused > 0 || c.stats.outgoingErrors > 0)
        // Plain TCP to a TLS node gets nowhere either.
        let (plain, _) = try await node(4, inbox: Inbox())
        plain.setPeer(2, address: PeerAddress(host: "127.0.0.1", port: portB))
        for i in 0..<10 { plain.send([heartbeat(4, 2, UInt64(i))], to: 2) }
        try await Task.sleep(for: .milliseconds(200))
        #expect(inboxB.count == 50)
        for t in [a, b, c, plain] { await t.shutdown() }
    }
}

/// Calls between nodes' routers: carried in the Raft frames, answered over the other direction's
/// connection, and every call the transport could not send is reported at once.
@Suite("Calls over the transport")
struct TransportCallTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    final class Calls: Sendable {
        let received = NIOLockedValueBox<[(NodeID, PeerCall)]>([])
        let dropped = NIOLockedValueBox<[UInt64]>([])
        let lost = NIOLockedValueBox<[NodeID]>([])

        func handlers(answering transport: @escaping @Sendable () -> RaftTransport?) -> CallHandlers {
            CallHandlers(received: { from, calls in
                for call in calls {
                    self.received.withLockedValue { $0.append((from, call)) }
                    // Answer requests with their body reversed.
                    if !call.isReply { transport()?.send(call: PeerCall(id: call.id, isReply: true, body: call.body.reversed()), to: from) }
                }
            }, dropped: { _, ids in self.dropped.withLockedValue { $0 += ids } }, lost: { peer in self.lost.withLockedValue { $0.append(peer) } })
        }

        func wait(_ condition: @escaping @Sendable (Calls) -> Bool) async -> Bool {
            for _ in 0..<300 {
                if condition(self) { return true }
                try? await Task.sleep(for: .milliseconds(10))
            }
            return condition(self)
        }
    }

    private func node(_ id: NodeID, port: Int = 0) async throws -> (RaftTransport, Int) {
        var config = TransportConfig(nodeID: id, listen: PeerAddress(host: "127.0.0.1", port: port))
        config.reconnectBaseMillis = 10
        config.reconnectMaxMillis = 100
        let t = RaftTransport(config: config, group: group) { _, _ in }
        return (t, try await t.start())
    }

    @Test("a request and its answer travel with Raft's frames, each attributed to its sender")
    func requestAndAnswer() async throws {
        let (a, portA) = try await node(1)
        let (b, portB) = try await node(2)
        a.setPeer(2, address: PeerAddress(host: "127.0.0.1", port: portB))
        b.setPeer(1, address: PeerAddress(host: "127.0.0.1", port: portA))
        let atA = Calls(), atB = Calls()
        a.handleCalls(atA.handlers { a })
        b.handleCalls(atB.handlers { b })
        for i in 0..<100 { #expect(a.send(call: PeerCall(id: UInt64(i), isReply: false, body: [UInt8(i), 1, 2]), to: 2)) }
        #expect(await atA.wait { $0.received.withLockedValue { $0.count } == 100 })
        let answers = atA.received.withLockedValue { $0 }
        #expect(answers.allSatisfy { $0.0 == 2 && $0.1.isReply && $0.1.body == [2, 1, UInt8($0.1.id)] })
        #expect(atB.received.withLockedValue { $0.count } == 100)
        #expect(a.stats.callsSent == 100 && a.stats.framesSent < 100, "batched: \(a.stats.framesSent) frames")
        // No link to the node, or a body over the limit: refused at once, nothing queued.
        #expect(!a.send(call: PeerCall(id: 1, isReply: false, body: []), to: 9))
        #expect(!a.send(call: PeerCall(id: 1, isReply: false, body: [UInt8](repeating: 0, count: PeerCall.maxBodyBytes + 1)), to: 2))
        await a.shutdown()
        await b.shutdown()
    }

    @Test("calls to an unreachable node are reported dropped; a closed connection is reported lost")
    func droppedAndLost() async throws {
        let (a, _) = try await node(1)
        let atA = Calls()
        a.handleCalls(atA.handlers { a })
        let probe = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let deadPort = probe.localAddress!.port!
        try await probe.close()
        a.setPeer(2, address: PeerAddress(host: "127.0.0.1", port: deadPort))
        for i in 0..<5 { a.send(call: PeerCall(id: UInt64(i), isReply: false, body: [1]), to: 2) }
        #expect(await atA.wait { Set($0.dropped.withLockedValue { $0 }) == Set(0..<5) })

        let (b, portB) = try await node(3)
        a.setPeer(3, address: PeerAddress(host: "127.0.0.1", port: portB))
        a.send(call: PeerCall(id: 50, isReply: false, body: [1]), to: 3)
        #expect(await atA.wait { _ in b.stats.connectionsOpened == 0 && a.stats.callsSent >= 1 })
        await b.shutdown()
        #expect(await atA.wait { $0.lost.withLockedValue { $0 }.contains(3) })
        await a.shutdown()
    }
}
