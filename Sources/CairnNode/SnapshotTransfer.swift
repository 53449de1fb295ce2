import CairnRaft
import CairnSQLite
import CairnStorage
import CairnTransport
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix


/// Snapshot files streamed to lagging followers in pieces, and received from leaders.
extension NodeRuntime {
    // MARK: - Snapshot streaming

    /// Sends the snapshot file in pieces, pacing on the peer's backlog so a large database neither
    /// fills the transport queue nor holds the Raft loop. The message rides on every piece; the
    /// follower steps it once the last piece is on its disk.
    func streamSnapshot(_ requested: Message, group: GroupID) {
        let peer = requested.to
        let key = "\(group)/\(peer)"
        // One transfer per group and peer. Raft asks again for a snapshot that takes long (or waits
        // for a slot), perhaps a newer one: a transfer still waiting takes the newest when it starts;
        // one under way carries its own, which the follower catches up from.
        let fresh = outgoingSnapshots.withLockedValue { waiting -> Bool in
            defer { waiting[key] = requested }
            return waiting[key] == nil
        }
        guard fresh else { return }
        let chunkBytes = config.snapshotChunkBytes
        Task {
            var handled = requested
            defer {
                // A request made in a later term while this one was handled (this one then sent
                // nothing, or what that term's leader no longer stands behind) is served next rather
                // than left to Raft's timeout. One of the same term is a resend: what was sent serves.
                let newer = outgoingSnapshots.withLockedValue { waiting -> Message? in
                    let latest = waiting.removeValue(forKey: key)
                    return latest.map { $0.term != handled.term } == true ? latest : nil
                }
                if let newer { streamSnapshot(newer, group: group) }
            }
            // The peer refused a stream of this group a moment ago (it was receiving others): wait
            // out the retry pause before holding a slot again.
            if let refused = snapshotRefusals.withLockedValue({ $0[key] }) {
                let until = refused + UInt64(config.snapshotBusyRetryMillis) * 1_000_000, now = DispatchTime.now().uptimeNanoseconds
                if until > now { try? await Task.sleep(for: .nanoseconds(Int64(until - now))) }
            }
            guard await takeStreamSlot() else { return }
            defer { giveBackStreamSlot() }
            let startedNanos = DispatchTime.now().uptimeNanoseconds
            let message = outgoingSnapshots.withLockedValue { $0[key] ?? requested }
            handled = message
            let index = message.snapshot!.metadata.index, path = snapshotPath(group, index)
            // Asked for while this node led the group: a snapshot from a node that no longer does (or
            // leads a later term) would only be refused, and would hold the slot meanwhile.
            let stillLeads = try? await raftLoop.submit {
                guard let g = self.raftState.value.groups[group] else { return false }
                return g.node.role == .leader && g.node.status.term == message.term
            }.get()
            guard stillLeads == true else { return }
            snapshotCounts.withLockedValue { $0.streamsOut += 1; $0.mostStreamsOut = max($0.mostStreamsOut, $0.streamsOut) }
            defer { snapshotCounts.withLockedValue { $0.streamsOut -= 1 } }
            do {
                let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
                defer { try? file.close() }
                let total = UInt64(try file.seekToEnd())
                try file.seek(toOffset: 0)
                var offset: UInt64 = 0
                var checksum: UInt32 = 0
                let began = ContinuousClock.now
                repeat {
                    if let refused = snapshotRefusals.withLockedValue({ $0[key] }), refused >= startedNanos { throw SnapshotBusy(peer: peer) }
                    // Paced: chunk n leaves no earlier than n chunks' worth of the stream's rate.
                    // Read each chunk: an operator may change the pace while a large snapshot streams.
                    let pace = Double(snapshotPace.withLockedValue { $0 })
                    let due = began + .nanoseconds(Int64(Double(offset) / pace * 1e9))
                    if due > ContinuousClock.now { try await Task.sleep(until: due, clock: .continuous) }
                    var waitedMillis = 0
                    while let backlog = await transport.backlogBytes(to: peer), backlog > 4 * chunkBytes {
                        guard waitedMillis < Int(config.requestTimeoutMillis) else { throw RuntimeError.timedOut("streaming a snapshot to node \(peer)") }
                        try await Task.sleep(for: .milliseconds(2))
                        waitedMillis += 2
                    }
                    let data = [UInt8](try file.read(upToCount: chunkBytes) ?? Data())
                    guard !data.isEmpty || total == 0 else { throw RuntimeError.raft("snapshot file \(path) shrank while being sent") }
                    checksum = CRC32C.update(checksum, with: data)
                    let chunk = SnapshotChunk(offset: offset, totalBytes: total, data: data, fileChecksum: checksum)
                    transport.send([Envelope(group: group, message: message, chunk: chunk)], to: peer)
                    snapshotCounts.withLockedValue { $0.chunksSent += 1 }
                    RuntimeMetrics.snapshotBytesSent.increment(by: data.count)
                    offset += UInt64(data.count)
                } while offset < total
            } catch {
                if !(error is SnapshotBusy) {
                    log("node \(config.nodeID) group \(group): streaming the snapshot at \(index) to node \(peer) failed: \(error)")
                }
                raftLoop.execute {
                    self.raftState.value.touched.insert(group)
                    self.raftState.value.groups[group]?.node.reportSnapshot(to: peer, failed: true)
                    self.pump()
                }
            }
        }
    }

    /// Waits for one of the `maxSnapshotStreamsOut` slots (first come, first served); false once the
    /// node shuts down, and then the stream is given up.
    private func takeStreamSlot() async -> Bool {
        await withCheckedContinuation { (waiter: CheckedContinuation<Bool, Never>) in
            let now = snapshotStreamSlots.withLockedValue { slots -> Bool? in
                if slots.closed { return false }
                guard slots.sending < config.maxSnapshotStreamsOut else {
                    slots.waiting.append(waiter)
                    return nil
                }
                slots.sending += 1
                return true
            }
            if let now { waiter.resume(returning: now) }
        }
    }

    /// Hands the slot to the longest waiting stream, or frees it.
    private func giveBackStreamSlot() {
        let next = snapshotStreamSlots.withLockedValue { slots -> CheckedContinuation<Bool, Never>? in
            precondition(slots.sending >= 1 && slots.sending <= config.maxSnapshotStreamsOut, "a snapshot stream slot given back twice")
            guard !slots.waiting.isEmpty, !slots.closed else {
                slots.sending -= 1
                return nil
            }
            return slots.waiting.removeFirst()
        }
        next?.resume(returning: true)
    }

    /// At shutdown: streams waiting for a slot give up.
    func closeStreamSlots() {
        let waiting = snapshotStreamSlots.withLockedValue { slots -> [CheckedContinuation<Bool, Never>] in
            slots.closed = true
            defer { slots.waiting = [] }
            return slots.waiting
        }
        for w in waiting { w.resume(returning: false) }
    }

    /// Writes a received piece on the receive loop (in arrival order); after the last one, with the
    /// file's checksum verified and the file durable, steps the snapshot message into the group.
    func receiveSnapshotChunk(_ envelope: Envelope, _ chunk: SnapshotChunk) {
        snapshotCounts.withLockedValue { $0.chunksReceived += 1 }
        let group = envelope.group, from = envelope.message.from, index = envelope.message.snapshot!.metadata.index
        let path = snapshotPath(group, index)
        let maxIn = config.maxSnapshotStreamsIn
        // A stream whose leader has sent nothing for this long is over (its leader gave up or died):
        // it no longer counts against the streams received at once.
        let staleNanos = UInt64(2 * config.requestTimeoutMillis) * 1_000_000
        receiveLoop.submit { () throws -> ChunkOutcome in
            try { (incoming: inout [GroupID: IncomingSnapshot]) throws -> ChunkOutcome in
                let now = DispatchTime.now().uptimeNanoseconds
                if chunk.offset == 0 {
                    incoming.removeValue(forKey: group)?.file.abandon()
                    for (g, t) in incoming where now - t.lastChunkNanos > staleNanos { incoming.removeValue(forKey: g)?.file.abandon() }
                    guard incoming.count < maxIn else { return .busy }
                    incoming[group] = IncomingSnapshot(from: from, index: index, file: try IncomingFile(path: path), lastChunkNanos: now)
                    let receiving = incoming.count
                    self.snapshotCounts.withLockedValue { $0.mostStreamsIn = max($0.mostStreamsIn, receiving) }
                }
                guard let transfer = incoming[group], transfer.from == from, transfer.index == index,
                      transfer.file.bytesWritten == chunk.offset else {
                    // A piece went missing (a dropped frame, a reconnect), or the stream was refused:
                    // the leader will send it all again.
                    if incoming[group]?.from == from { incoming.removeValue(forKey: group)?.file.abandon() }
                    return .partial
                }
                incoming[group]?.lastChunkNanos = now
                do {
                    try transfer.file.append(chunk.data)
                    guard chunk.isLast else { return .partial }
                    incoming[group] = nil
                    guard transfer.file.checksum == chunk.fileChecksum else {
                        transfer.file.abandon()
                        throw RuntimeError.raft("the snapshot at \(index) from node \(from) arrived with a wrong checksum; discarded")
                    }
                    try transfer.file.commit()
                    return .complete
                } catch {
                    incoming[group] = nil
                    transfer.file.abandon()
                    throw error
                }
            }(&self.incomingSnapshots.value)
        }.hop(to: raftLoop).whenComplete { result in
            switch result {
            case .success(.complete):
                if let g = self.raftState.value.groups[group] {
                    self.raftState.value.touched.insert(group)
                    if let why = g.node.step(envelope.message) { self.noteRefused(envelope, why) }
                    self.pump()
                }
            case .success(.busy):
                // Told at its first piece, the leader stops sending and asks again later.
                self.snapshotCounts.withLockedValue { $0.busyRefusals += 1 }
                RuntimeMetrics.snapshotStreamsRefusedBusy.increment()
                var reply = envelope.message
                reply.from = self.config.nodeID
                reply.to = from
                reply.entries = []
                reply.snapshot?.data = []
                self.transport.send([Envelope(group: group, message: reply, snapshotBusy: true)], to: from)
            case .success(.partial): break
            case .failure(let error):
                self.log("node \(self.config.nodeID) group \(group): receiving a snapshot failed: \(error)")
            }
        }
    }
}

/// A snapshot file being received, and when its last piece came (monotonic nanoseconds).
struct IncomingSnapshot {
    var from: NodeID
    var index: LogIndex
    var file: IncomingFile
    var lastChunkNanos: UInt64
}

/// What a received piece of a snapshot file came to.
enum ChunkOutcome: Sendable {
    case partial, complete
    /// The first piece of a stream this node will not take now: it receives as many as it takes.
    case busy
}

/// A stream the peer refused because it was receiving others: given up quietly, tried again later.
struct SnapshotBusy: Error {
    var peer: NodeID
}

extension NodeRuntime {
    /// Sets the pace of snapshot streams (the cluster's `snapshot_mib_per_second`), at least one chunk a second.
    public func setSnapshotBytesPerSecond(_ bytes: Int) {
        snapshotPace.withLockedValue { $0 = max(bytes, config.snapshotChunkBytes) }
    }
}
