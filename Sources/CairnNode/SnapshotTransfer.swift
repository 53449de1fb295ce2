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
            guard await takeStreamSlot() else { return }
            defer { giveBackStreamSlot() }
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
                log("node \(config.nodeID) group \(group): streaming the snapshot at \(index) to node \(peer) failed: \(error)")
                raftLoop.execute {
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
        receiveLoop.submit { () throws -> Bool in
            try { (incoming: inout [GroupID: (from: NodeID, index: LogIndex, file: IncomingFile)]) throws -> Bool in
                if chunk.offset == 0 {
                    incoming.removeValue(forKey: group)?.file.abandon()
                    incoming[group] = (from, index, try IncomingFile(path: path))
                }
                guard let transfer = incoming[group], transfer.from == from, transfer.index == index,
                      transfer.file.bytesWritten == chunk.offset else {
                    // A piece went missing (a dropped frame, a reconnect): the leader will send it all again.
                    incoming.removeValue(forKey: group)?.file.abandon()
                    return false
                }
                do {
                    try transfer.file.append(chunk.data)
                    guard chunk.isLast else { return false }
                    incoming[group] = nil
                    guard transfer.file.checksum == chunk.fileChecksum else {
                        transfer.file.abandon()
                        throw RuntimeError.raft("the snapshot at \(index) from node \(from) arrived with a wrong checksum; discarded")
                    }
                    try transfer.file.commit()
                    return true
                } catch {
                    incoming[group] = nil
                    transfer.file.abandon()
                    throw error
                }
            }(&self.incomingSnapshots.value)
        }.hop(to: raftLoop).whenComplete { result in
            switch result {
            case .success(true):
                if let g = self.raftState.value.groups[group] {
                    if let why = g.node.step(envelope.message) { self.noteRefused(envelope, why) }
                    self.pump()
                }
            case .success(false): break
            case .failure(let error):
                self.log("node \(self.config.nodeID) group \(group): receiving a snapshot failed: \(error)")
            }
        }
    }
}

extension NodeRuntime {
    /// Sets the pace of snapshot streams (the cluster's `snapshot_mib_per_second`), at least one chunk a second.
    public func setSnapshotBytesPerSecond(_ bytes: Int) {
        snapshotPace.withLockedValue { $0 = max(bytes, config.snapshotChunkBytes) }
    }
}
