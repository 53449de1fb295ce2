import CairnRaft
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// The outgoing side for one peer. Its state lives on one event loop.
final class PeerLink: Sendable {
    let peer: NodeID
    let address: PeerAddress
    private let eventLoop: any EventLoop
    private let state: NIOLoopBoundBox<State>
    private let config: TransportConfig
    private let shared: RaftTransport.SharedState
    private let log: @Sendable (String) -> Void

    struct State {
        var channel: (any Channel)?
        var connecting = false
        var closed = false
        var queue: [Envelope] = []
        var calls: [PeerCall] = []
        var queuedBytes = 0
        var flushScheduled = false
        var failedAttempts = 0
        /// No new connection attempt before this (backoff); sends until then are dropped.
        var retryAt = NIODeadline.uptimeNanoseconds(0)
        var rng = SplitMix64(seed: 0)
    }

    init(peer: NodeID, address: PeerAddress, config: TransportConfig, eventLoop: any EventLoop,
         shared: RaftTransport.SharedState, log: @escaping @Sendable (String) -> Void) {
        self.peer = peer
        self.address = address
        self.config = config
        self.eventLoop = eventLoop
        self.shared = shared
        self.log = log
        var initial = State()
        initial.rng = SplitMix64(seed: config.nodeID &* 31 &+ peer)
        state = NIOLoopBoundBox.makeBoxSendingValue(initial, eventLoop: eventLoop)
    }

    static func estimatedBytes(_ e: Envelope) -> Int {
        e.message.entries.reduce(96) { $0 + $1.sizeBytes } + (e.message.snapshot?.data.count ?? 0) + (e.chunk?.data.count ?? 0)
    }

    func enqueue(_ envelopes: [Envelope]) {
        if eventLoop.inEventLoop {
            queue(envelopes)
        } else {
            eventLoop.execute { [self] in queue(envelopes) }
        }
    }

    func enqueue(call: PeerCall) {
        if eventLoop.inEventLoop {
            queue(call: call)
        } else {
            eventLoop.execute { [self] in queue(call: call) }
        }
    }

    private func queue(call: PeerCall) {
        let size = call.body.count + 16
        guard !state.value.closed, state.value.queuedBytes + size <= config.maxQueuedBytesPerPeer else {
            shared.dropped([call], to: peer)
            return
        }
        state.value.calls.append(call)
        state.value.queuedBytes += size
        scheduleFlush()
    }

    /// Empties the queue, telling the callers of requests in it that they were never sent.
    private func dropQueued() -> Int {
        let dropped = state.value.queue.count
        let calls = state.value.calls
        state.value.queue = []
        state.value.calls = []
        state.value.queuedBytes = 0
        shared.dropped(calls, to: peer)
        return dropped
    }

    func flushIfOnLoop() {
        guard eventLoop.inEventLoop else { return }
        flush()
    }

    private func queue(_ envelopes: [Envelope]) {
        var dropped = 0
        for e in envelopes {
            let size = Self.estimatedBytes(e)
            if state.value.queuedBytes + size > config.maxQueuedBytesPerPeer {
                dropped += 1
                continue
            }
            state.value.queue.append(e)
            state.value.queuedBytes += size
        }
        if dropped > 0 { shared.stats.withLockedValue { $0.envelopesDroppedQueueFull += dropped } }
        scheduleFlush()
    }

    /// Many sends in one event-loop turn become one frame.
    private func scheduleFlush() {
        guard !state.value.flushScheduled else { return }
        state.value.flushScheduled = true
        eventLoop.execute { [self] in
            state.value.flushScheduled = false
            flush()
        }
    }

    private func flush() {
        guard !state.value.closed, !state.value.queue.isEmpty || !state.value.calls.isEmpty else { return }
        guard let channel = state.value.channel, channel.isActive else {
            connectIfNeeded()
            return
        }
        let batch = state.value.queue
        let calls = state.value.calls
        state.value.queue = []
        state.value.calls = []
        state.value.queuedBytes = 0
        let faults = shared.faults.withLockedValue { $0 }
        if faults.partitioned.contains(peer) || (faults.dropRate > 0 && Double(state.value.rng.next() % 10_000) / 10_000 < faults.dropRate) {
            // Lost on the wire, as far as either side can tell: callers learn by their deadlines.
            shared.stats.withLockedValue { $0.envelopesDroppedFault += batch.count + calls.count }
            return
        }
        let frame = WireFormat.frame(batch, calls: calls)
        var buffer = channel.allocator.buffer(capacity: frame.count)
        buffer.writeBytes(frame)
        channel.writeAndFlush(buffer, promise: nil)
        shared.stats.withLockedValue {
            $0.framesSent += 1
            $0.envelopesSent += batch.count
            $0.callsSent += calls.count
        }
    }

    private func connectIfNeeded() {
        guard !state.value.connecting, !state.value.closed else { return }
        guard NIODeadline.now() >= state.value.retryAt else {
            // Backing off: the peer was unreachable moments ago.
            let dropped = dropQueued()
            shared.stats.withLockedValue { $0.envelopesDroppedUnreachable += dropped }
            return
        }
        let security = shared.security.withLockedValue { $0 }
        if case .pending = security {
            // No credentials yet: nothing goes out in the clear (Raft resends later).
            let dropped = dropQueued()
            shared.stats.withLockedValue { $0.envelopesDroppedUnreachable += dropped }
            return
        }
        state.value.connecting = true
        let handshake = WireFormat.handshake(from: config.nodeID)
        let peer = self.peer, shared = self.shared, log = self.log
        ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if case .tls(let tls) = security {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls.client, serverHostname: nil))
                    }
                    try channel.pipeline.syncOperations.addHandler(OutboundErrorHandler(peer: peer, shared: shared, log: log))
                }
            }
            .connectTimeout(.seconds(2))
            .connect(host: address.host, port: address.port)
            .whenComplete { [self] result in
                state.value.connecting = false
                switch result {
                case .success(let channel):
                    if state.value.closed {
                        channel.close(promise: nil)
                        return
                    }
                    state.value.channel = channel
                    state.value.failedAttempts = 0
                    shared.stats.withLockedValue { $0.connectionsOpened += 1 }
                    var buffer = channel.allocator.buffer(capacity: handshake.count)
                    buffer.writeBytes(handshake)
                    channel.writeAndFlush(buffer, promise: nil)
                    channel.closeFuture.whenComplete { [self] _ in
                        eventLoop.execute { [self] in
                            if state.value.channel === channel { state.value.channel = nil }
                            shared.calls.withLockedValue { $0 }?.lost(peer)
                            if !state.value.queue.isEmpty || !state.value.calls.isEmpty { connectIfNeeded() }
                        }
                    }
                    flush()
                case .failure(let error):
                    // Holding messages for an unreachable peer only delivers stale ones later.
                    let dropped = dropQueued()
                    shared.stats.withLockedValue { $0.envelopesDroppedUnreachable += dropped }
                    state.value.failedAttempts += 1
                    let attempt = min(state.value.failedAttempts, 16)
                    let ceiling = min(config.reconnectMaxMillis, config.reconnectBaseMillis << Int64(attempt - 1))
                    // Full jitter in the upper half: peers that lost each other together do not retry in lockstep.
                    let delay = ceiling / 2 + Int64(state.value.rng.next() % UInt64(max(1, ceiling / 2)))
                    if attempt == 1 { log("cannot reach node \(peer) at \(address): \(error); retrying with backoff") }
                    // The next send after the backoff reconnects (Raft sends at least every heartbeat).
                    state.value.retryAt = NIODeadline.now() + .milliseconds(delay)
                }
            }
    }

    /// Drops the current connection (opened under other security); the next send opens a new one.
    func reconnect() {
        eventLoop.execute { [self] in
            state.value.channel?.close(promise: nil)
            state.value.channel = nil
            state.value.retryAt = .uptimeNanoseconds(0)
        }
    }

    func backlogBytes() async -> Int {
        (try? await eventLoop.submit { [self] in
            if let channel = state.value.channel, !channel.isWritable { return Int.max }
            return state.value.queuedBytes
        }.get()) ?? Int.max
    }

    func close() {
        eventLoop.execute { [self] in
            state.value.closed = true
            _ = dropQueued()
            state.value.channel?.close(promise: nil)
            state.value.channel = nil
        }
    }
}
