import CairnRaft
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

public struct PeerAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

public struct TransportConfig: Sendable {
    public var nodeID: NodeID
    public var listen: PeerAddress
    /// Messages waiting for a slow or unreachable peer, at most; beyond it new messages are dropped
    /// (Raft retransmits), so a dead peer cannot exhaust memory.
    public var maxQueuedBytesPerPeer: Int = 32 << 20
    public var reconnectBaseMillis: Int64 = 50
    public var reconnectMaxMillis: Int64 = 2_000
    /// Mutual TLS on every connection, when set.
    public var tls: TransportTLS?
    /// Without `tls`, carry nothing until `useTLS` provides it (a node waiting for its certificate),
    /// instead of speaking plaintext.
    public var requireTLS = false
    /// An incoming connection that has not identified itself (TLS, then the handshake frame) by then is closed.
    public var handshakeTimeoutMillis: Int64 = 5_000

    public init(nodeID: NodeID, listen: PeerAddress) {
        self.nodeID = nodeID
        self.listen = listen
    }
}

/// Faults a test can inject into a running node's transport.
public struct TransportFaults: Sendable, Equatable {
    /// Peers cut off in both directions.
    public var partitioned: Set<NodeID> = []
    /// Probability of dropping each outgoing batch.
    public var dropRate: Double = 0
    /// Extra delay before each incoming batch is delivered.
    public var delayMillis: Int64 = 0

    public init(partitioned: Set<NodeID> = [], dropRate: Double = 0, delayMillis: Int64 = 0) {
        self.partitioned = partitioned
        self.dropRate = dropRate
        self.delayMillis = delayMillis
    }
}

/// Where a transport hands the calls it carries (see `PeerCall`). All three run on an event loop and
/// must return at once.
public struct CallHandlers: Sendable {
    /// Calls (requests and answers) that arrived from a peer.
    public var received: @Sendable (NodeID, [PeerCall]) -> Void
    /// Calls to a peer that were never sent (no connection, a full queue, the link closed): the peer
    /// cannot have seen them.
    public var dropped: @Sendable (NodeID, [UInt64]) -> Void
    /// The connection to a peer closed: calls already written to it may or may not have been served.
    public var lost: @Sendable (NodeID) -> Void

    public init(received: @escaping @Sendable (NodeID, [PeerCall]) -> Void, dropped: @escaping @Sendable (NodeID, [UInt64]) -> Void,
                lost: @escaping @Sendable (NodeID) -> Void) {
        self.received = received
        self.dropped = dropped
        self.lost = lost
    }
}

/// Counters for tests and metrics.
public struct TransportStats: Sendable, Equatable {
    public var framesSent = 0
    public var envelopesSent = 0
    public var callsSent = 0
    /// Calls dropped unsent (unreachable peer, full queue): their callers were told at once.
    public var callsDropped = 0
    public var envelopesDroppedQueueFull = 0
    /// Dropped because the peer could not be reached: Raft resends from its log once it is back.
    public var envelopesDroppedUnreachable = 0
    public var envelopesDroppedFault = 0
    public var connectionsOpened = 0
    public var handshakesRefused = 0
    /// Incoming connections closed at once because `maxIncomingConnections` were open.
    public var connectionsRefusedAtLimit = 0
    /// Outgoing connections closed on an error (a refused TLS handshake among them).
    public var outgoingErrors = 0
}

/// TCP between nodes: one outgoing connection per peer carrying batched frames, one listener for
/// incoming ones. Received batches go to `receive` on an event loop thread.
public final class RaftTransport: Sendable {
    /// Incoming connections open at once, at most: a cluster needs one per peer (and one more for a
    /// moment while a peer reconnects); past the cap a new one is closed at once.
    public static let maxIncomingConnections = 256
    /// Connections still proving who they are (TLS, then the handshake frame), at most.
    public static let maxUnidentifiedConnections = 64
    public let config: TransportConfig
    private let group: any EventLoopGroup
    private let receive: @Sendable (NodeID, [Envelope]) -> Void
    private let log: @Sendable (String) -> Void
    private let links = NIOLockedValueBox<[NodeID: PeerLink]>([:])
    private let server = NIOLockedValueBox<(any Channel)?>(nil)
    /// Incoming connections, closed on shutdown along with the listener.
    private let accepted = NIOLockedValueBox(Incoming())

    /// Incoming connections: those that identified themselves (a peer's TLS certificate and handshake),
    /// and, oldest first, those that have not yet. Strangers cannot take identified peers' places:
    /// they have a smaller pool of their own, where a newcomer pushes out the oldest.
    struct Incoming {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var unidentified: [ObjectIdentifier] = []

        var identifiedCount: Int { channels.count - unidentified.count }

        /// Admits a new connection; returns one to close to make room (the oldest unidentified), or
        /// false in `admitted` when identified peers fill every place.
        mutating func admit(_ channel: any Channel) -> (admitted: Bool, evict: (any Channel)?) {
            guard identifiedCount < RaftTransport.maxIncomingConnections else { return (false, nil) }
            var evict: (any Channel)?
            if unidentified.count >= RaftTransport.maxUnidentifiedConnections {
                let oldest = unidentified.removeFirst()
                evict = channels.removeValue(forKey: oldest)
            }
            let key = ObjectIdentifier(channel)
            channels[key] = channel
            unidentified.append(key)
            return (true, evict)
        }

        mutating func identified(_ key: ObjectIdentifier) { unidentified.removeAll { $0 == key } }

        mutating func remove(_ key: ObjectIdentifier) {
            channels.removeValue(forKey: key)
            unidentified.removeAll { $0 == key }
        }
    }
    let shared: SharedState

    /// State the links and handlers share across event loops.
    final class SharedState: Sendable {
        let faults = NIOLockedValueBox(TransportFaults())
        let stats = NIOLockedValueBox(TransportStats())
        /// Nodes removed from the cluster: their certificates stay valid until they expire, so their
        /// connections are refused by id.
        let excluded = NIOLockedValueBox<Set<NodeID>>([])
        let security: NIOLockedValueBox<Security>
        let calls = NIOLockedValueBox<CallHandlers?>(nil)

        func dropped(_ calls: [PeerCall], to peer: NodeID) {
            let ids = calls.filter { !$0.isReply }.map(\.id)
            guard !calls.isEmpty else { return }
            stats.withLockedValue { $0.callsDropped += calls.count }
            if !ids.isEmpty { self.calls.withLockedValue { $0 }?.dropped(peer, ids) }
        }

        init(security: Security) {
            self.security = NIOLockedValueBox(security)
        }
    }

    /// How connections are secured: in the clear (tests, and `--tls-*` absent where allowed), not at
    /// all until credentials arrive (every connection refused, nothing sent), or mutual TLS.
    enum Security {
        case plaintext
        case pending
        case tls(TransportTLS)
    }

    public init(config: TransportConfig, group: any EventLoopGroup,
                log: @escaping @Sendable (String) -> Void = { _ in },
                receive: @escaping @Sendable (NodeID, [Envelope]) -> Void) {
        self.config = config
        self.group = group
        self.receive = receive
        self.log = log
        shared = SharedState(security: config.tls.map { .tls($0) } ?? (config.requireTLS ? .pending : .plaintext))
    }

    /// Starts mutual TLS on every connection from now on (a node that just got its certificate).
    /// Connections opened before, in the clear, are closed.
    public func useTLS(_ tls: TransportTLS) {
        shared.security.withLockedValue { $0 = .tls(tls) }
        for link in links.withLockedValue({ Array($0.values) }) { link.reconnect() }
        for channel in accepted.withLockedValue({ Array($0.channels.values) }) { channel.close(promise: nil) }
    }

    /// Whether connections are secured with mutual TLS.
    public var usesTLS: Bool {
        if case .tls = shared.security.withLockedValue({ $0 }) { return true }
        return false
    }

    /// Starts listening; returns the bound port (useful when the configured port is 0).
    public func start() async throws -> Int {
        let receive = self.receive, log = self.log, shared = self.shared, selfID = config.nodeID
        let accepted = self.accepted, handshakeTimeout = config.handshakeTimeoutMillis
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let key = ObjectIdentifier(channel)
                let (admitted, evict) = accepted.withLockedValue { $0.admit(channel) }
                if let evict {
                    shared.stats.withLockedValue { $0.connectionsRefusedAtLimit += 1 }
                    evict.close(promise: nil)
                }
                guard admitted else {
                    shared.stats.withLockedValue { $0.connectionsRefusedAtLimit += 1 }
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in accepted.withLockedValue { $0.remove(key) } }
                let security = shared.security.withLockedValue { $0 }
                if case .pending = security {
                    shared.stats.withLockedValue { $0.handshakesRefused += 1 }
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    if case .tls(let tls) = security { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.server)) }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(
                        InboundHandler(selfID: selfID, shared: shared, log: log, receive: receive, handshakeTimeoutMillis: handshakeTimeout,
                                       identified: { accepted.withLockedValue { $0.identified(key) } }))
                }
            }
            .bind(host: config.listen.host, port: config.listen.port).get()
        server.withLockedValue { $0 = channel }
        return channel.localAddress?.port ?? config.listen.port
    }

    /// Sets (or changes) where a peer listens.
    public func setPeer(_ id: NodeID, address: PeerAddress) {
        links.withLockedValue { links in
            if let existing = links[id], existing.address == address { return }
            links[id]?.close()
            links[id] = PeerLink(peer: id, address: address, config: config, eventLoop: group.next(), shared: shared, log: log)
        }
    }

    public func removePeer(_ id: NodeID) {
        links.withLockedValue { $0.removeValue(forKey: id)?.close() }
    }

    /// A node removed from the cluster: nothing more is sent to it, and its connections (which its
    /// still valid certificate would let in) are refused at the handshake or closed at its next frame.
    public func exclude(_ id: NodeID) {
        shared.excluded.withLockedValue { _ = $0.insert(id) }
        removePeer(id)
    }

    /// Queues envelopes for a peer; they go out in one frame per event-loop turn, or at `flushQueued`.
    public func send(_ envelopes: [Envelope], to peer: NodeID) {
        guard !envelopes.isEmpty, let link = links.withLockedValue({ $0[peer] }) else { return }
        link.enqueue(envelopes)
    }

    /// Where calls that arrive, and news of calls that could not be sent, go. Until this is set, calls
    /// that arrive are ignored.
    public func handleCalls(_ handlers: CallHandlers) {
        shared.calls.withLockedValue { $0 = handlers }
    }

    /// Queues a call (a request or an answer) for a peer, sent with the next frame. False when the
    /// peer is unknown or the body is over `PeerCall.maxBodyBytes`: nothing was queued. A call queued
    /// but then dropped unsent is reported to `CallHandlers.dropped`.
    @discardableResult
    public func send(call: PeerCall, to peer: NodeID) -> Bool {
        guard call.body.count <= PeerCall.maxBodyBytes, let link = links.withLockedValue({ $0[peer] }) else { return false }
        link.enqueue(call: call)
        return true
    }

    /// Writes what the calling event loop's links have queued now, instead of at the end of the turn:
    /// for a caller about to block its loop (a disk sync) after sending.
    public func flushQueued() {
        for link in links.withLockedValue({ Array($0.values) }) { link.flushIfOnLoop() }
    }

    /// Bytes waiting to go to `peer` (queued, or refused by a full socket: then `Int.max`); lets a
    /// long transfer pace itself instead of overflowing the queue. Nil if the peer is unknown.
    public func backlogBytes(to peer: NodeID) async -> Int? {
        guard let link = links.withLockedValue({ $0[peer] }) else { return nil }
        return await link.backlogBytes()
    }

    public var faults: TransportFaults {
        get { shared.faults.withLockedValue { $0 } }
        set { shared.faults.withLockedValue { $0 = newValue } }
    }

    public var stats: TransportStats { shared.stats.withLockedValue { $0 } }

    public func shutdown() async {
        for link in links.withLockedValue({ l in defer { l = [:] }; return Array(l.values) }) { link.close() }
        if let channel = server.withLockedValue({ s in defer { s = nil }; return s }) {
            try? await channel.close()
        }
        for channel in accepted.withLockedValue({ Array($0.channels.values) }) { try? await channel.close() }
    }
}
