import CairnRaft
import CairnSQLite
import Foundation
import Metrics
import NIOCore
import NIOPosix

/// What clients ask of a group on this node: writes proposed on the Raft loop and answered by the apply
/// loop, reads confirmed on the Raft loop and served by the read pool, their deadlines, and backups.
extension NodeRuntime {

    /// Proposes a batch of statements and waits until it is applied here; returns each statement's result.
    public func execute(group: GroupID, _ command: SQLCommand) async throws -> [StatementResult] {
        try await executeIndexed(group: group, command).results
    }

    /// `execute`, also returning the log index the batch was committed at.
    public func executeIndexed(group: GroupID, _ command: SQLCommand) async throws -> (results: [StatementResult], index: LogIndex) {
        // Proposed on the Raft loop, answered by the apply loop: one suspension, two hand-offs per write.
        try await executeFuture(group: group, command).get()
    }

    /// `executeIndexed` as a future completed on the caller's event loop (`callerLoop`), for a caller on one that
    /// must not start a task per write (a write another node passes on, served where it is read).
    public func executeFuture(group: GroupID, _ command: SQLCommand) -> EventLoopFuture<([StatementResult], LogIndex)> {
        if let why = failure { return applyLoop.makeFailedFuture(RuntimeError.failed(why)) }
        let timeout = TimeAmount.milliseconds(config.requestTimeoutMillis)
        let data = command.encoded()
        guard data.count <= config.maxEntryBytes else {
            return applyLoop.makeFailedFuture(RuntimeError.entryTooLarge(bytes: data.count, limit: config.maxEntryBytes))
        }
        let promise = callerLoop.makePromise(of: ([StatementResult], LogIndex).self)
        raftLoop.execute {
            guard let g = self.raftState.value.groups[group] else { return promise.fail(RuntimeError.unknownGroup(group)) }
            self.wake(group)
            let side = self.raftState.value
            // A follower refuses at once, as proposing would: the router forwards the write to the leader.
            guard g.node.role == .leader else { return promise.fail(RuntimeError.notLeader(leader: g.node.lead)) }
            side.writesToPropose[group, default: []].append(QueuedWrite(data: data, split: command.split == nil ? nil : command, promise: promise,
                                                                          arrivedNanos: DispatchTime.now().uptimeNanoseconds, deadline: .now() + timeout))
            side.touched.insert(group)
            self.pump()
        }
        return promise.futureResult
    }

    /// Fails the writes waiting to be proposed: the node stopped. None was proposed, so none took effect.
    func failQueuedWrites() {
        let side = raftState.value
        let queued = side.writesToPropose.values.joined()
        side.writesToPropose.removeAll()
        for w in queued { w.promise.fail(RuntimeError.raft("this node stopped before proposing the write; it did not take effect")) }
    }

    /// A write waiting on the Raft loop for the next pass to propose it.
    struct QueuedWrite {
        let data: [UInt8]
        /// A split's command, stamped with the membership when it is proposed (not when it arrived:
        /// a membership change proposed between the two would make the split refuse itself).
        let split: SQLCommand?
        let promise: Answer
        let arrivedNanos: UInt64
        let deadline: NIODeadline
    }

    /// On the Raft loop, at the start of a pass: the writes that arrived since the last pass, proposed
    /// as one append per group. The leader sends each follower one append for them all, and each
    /// follower answers once: proposed one by one, every write cost eight Raft messages between the
    /// three nodes, however many writes a pass carried.
    func proposeQueued() {
        assert(raftLoop.inEventLoop)
        let side = raftState.value
        guard !side.writesToPropose.isEmpty else { return }
        let queued = side.writesToPropose
        side.writesToPropose.removeAll(keepingCapacity: true)
        for (group, writes) in queued {
            guard let g = side.groups[group] else {
                for w in writes { w.promise.fail(RuntimeError.unknownGroup(group)) }
                continue
            }
            let indexes: ClosedRange<LogIndex>
            let payloads = writes.map { w -> [UInt8] in
                guard var command = w.split, var split = command.split else { return w.data }
                // The child's founders: the membership as the proposing leader knows it (see `ShardSplit.conf`).
                split.conf = g.node.status.config
                command.split = split
                return command.encoded()
            }
            do throws(RaftError) {
                indexes = try g.node.propose(batch: payloads)
            } catch {
                let failure: RuntimeError
                if case .notLeader(let l) = error { failure = .notLeader(leader: l) } else { failure = .raft(error.description) }
                for w in writes { w.promise.fail(failure) }
                continue
            }
            side.touched.insert(group)
            let term = g.node.term
            for (w, index) in zip(writes, indexes) {
                // A write proposed at this index in an earlier term whose entry was cut from the log
                // before it was applied here: its entry is gone (nothing else will answer it).
                let pending = PendingWrite(term: term, promise: w.promise, proposedNanos: w.arrivedNanos, deadline: w.deadline)
                if let lost = side.pendingWrites[group, default: [:]].updateValue(pending, forKey: index) { lost.promise.fail(RuntimeError.proposalLost) }
            }
        }
    }

    /// On the Raft loop, at the start of a pass: one ReadIndex request per group for the reads that
    /// arrived since the last pass. Each read's point is still taken after it arrived: the request is
    /// made now, and the leader answers with its commit index as of the request.
    func askReadIndex() {
        let side = raftState.value
        guard !side.readsToAsk.isEmpty else { return }
        let asking = side.readsToAsk
        side.readsToAsk.removeAll(keepingCapacity: true)
        for (group, reads) in asking {
            guard let g = side.groups[group] else {
                for r in reads { r.promise.fail(RuntimeError.unknownGroup(group)) }
                continue
            }
            let id = side.nextRequestID
            side.nextRequestID += 1
            wake(group)
            do throws(RaftError) {
                try g.node.readIndex(requestID: id)
            } catch {
                for r in reads { r.promise.fail(RuntimeError.notLeader(leader: g.node.lead)) }
                continue
            }
            side.touched.insert(group)
            side.pendingReads[id] = ReadBatch(group: group, reads: reads)
        }
    }

    /// Where a client operation's answer is delivered: the caller's own event loop when it is on one (an
    /// HTTP loop), so what the caller does with the answer runs there and not on the apply loop, with
    /// one hand-off instead of two; the apply loop for a caller in a task, and for one on the Raft loop
    /// (a call from another node, read by the transport there): encoding its answer, up to a call's
    /// limit, must not hold up every group's heartbeats.
    public var callerLoop: any EventLoop {
        guard !raftLoop.inEventLoop, let loop = MultiThreadedEventLoopGroup.currentEventLoop else { return applyLoop }
        return loop
    }

    /// Fails writes and reads that waited past their deadline (every 100 ms, on each loop).
    func sweepTimeouts() {
        let every = TimeAmount.milliseconds(100)
        applyLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { task in
            self.applyLoopSeen.withLockedValue { $0 = DispatchTime.now().uptimeNanoseconds }
            let side = self.applyState.value
            let now = NIODeadline.now()
            for group in side.waitingReads.keys {
                let expired = side.waitingReads[group]!.filter { $0.request.deadline < now }
                guard !expired.isEmpty else { continue }
                side.waitingReads[group]!.removeAll { $0.request.deadline < now }
                for r in expired { r.request.promise.fail(RuntimeError.timedOut("waiting to apply up to the read index")) }
            }
        }
        raftLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { task in
            let side = self.raftState.value
            let now = NIODeadline.now()
            // Fails the reads past their deadline; the others, or nil when none is left.
            func unexpired(_ reads: [ReadRequest]) -> [ReadRequest]? {
                for r in reads where r.deadline < now { r.promise.fail(RuntimeError.timedOut("confirming leadership for a linearizable read")) }
                let left = reads.filter { $0.deadline >= now }
                return left.isEmpty ? nil : left
            }
            for (id, batch) in side.pendingReads where batch.reads.contains(where: { $0.deadline < now }) {
                side.pendingReads[id] = unexpired(batch.reads).map { ReadBatch(group: batch.group, reads: $0) }
            }
            // Asked in the next pass, unless the node stopped making passes.
            for (group, reads) in side.readsToAsk where reads.contains(where: { $0.deadline < now }) {
                side.readsToAsk[group] = unexpired(reads)
            }
            for group in side.pendingWrites.keys {
                for (index, w) in side.pendingWrites[group]! where w.deadline < now {
                    side.pendingWrites[group]![index] = nil
                    w.promise.fail(RuntimeError.timedOut("waiting for the write to commit; its outcome is unknown"))
                }
            }
        }
    }

    /// Runs a read-only statement at the requested consistency.
    public func query(group: GroupID, _ statement: SQLStatement, consistency: ReadConsistency = .linearizable) async throws -> StatementResult {
        try await query(group: group, [statement], consistency: consistency).results[0]
    }

    /// Runs read-only statements at one read point (one ReadIndex round for all of them); also returns
    /// the applied index they saw.
    /// `statementTimeoutNanos` interrupts each statement that runs longer (0: the node's default).
    public func query(group: GroupID, _ statements: [SQLStatement], consistency: ReadConsistency = .linearizable,
                      statementTimeoutNanos: UInt64 = 0) async throws -> (results: [StatementResult], index: LogIndex) {
        // Confirmed on the Raft loop, served by the read pool: one suspension per read.
        try await queryFuture(group: group, statements, consistency: consistency, statementTimeoutNanos: statementTimeoutNanos).get()
    }

    /// `query` as a future, for a caller on an event loop that must not start a task per read (the
    /// HTTP fast path).
    public func queryFuture(group: GroupID, _ statements: [SQLStatement], consistency: ReadConsistency = .linearizable,
                            statementTimeoutNanos: UInt64 = 0) -> EventLoopFuture<([StatementResult], LogIndex)> {
        if let why = failure { return applyLoop.makeFailedFuture(RuntimeError.failed(why)) }
        let timeout = TimeAmount.milliseconds(config.requestTimeoutMillis)
        let promise = callerLoop.makePromise(of: ([StatementResult], LogIndex).self)
        let statementTimeout = statementTimeoutNanos > 0 ? statementTimeoutNanos : UInt64(config.readTimeoutMillis) * 1_000_000
        let read = ReadRequest(group: group, statements: statements, timeoutNanos: statementTimeout,
                               deadline: .now() + timeout, promise: promise)
        switch consistency {
        case .linearizable:
            raftLoop.execute {
                let side = self.raftState.value
                guard let g = side.groups[group] else { return promise.fail(RuntimeError.unknownGroup(group)) }
                // A leader within its lease knows no other leader exists: its commit index is a read
                // point without a heartbeat round (with many groups per node, each round per group
                // was most of a read's cost).
                if let index = side.leaseClocks[group]?.index(g.node.leaseRead, nowNanos: Self.leaseClockNanos(),
                                                              nanosPerTick: UInt64(self.config.tickMillis) * 1_000_000) {
                    RuntimeMetrics.leaseReads.increment()
                    // A group serving reads is not idle: quiesced, it would stop the heartbeats that
                    // renew its lease, and its reads would fall back to rounds of their own. (Quiesced
                    // during a pause in its reads, it wakes, as for any other request.)
                    self.wake(group)
                    return self.serve(read, at: index)
                }
                // A follower that knows no leader has no one to ask.
                if g.node.role != .leader && g.node.lead == noNode { return promise.fail(RuntimeError.notLeader(leader: noNode)) }
                side.readsToAsk[group, default: []].append(read)
                self.pump()
            }
        case .stale(let freshness):
            raftLoop.execute {
                let side = self.raftState.value
                guard let g = side.groups[group] else { return promise.fail(RuntimeError.unknownGroup(group)) }
                if g.node.role != .leader {
                    // A quiesced group hears nothing while nothing changes: its leader's node pinging is the contact.
                    let contact = side.quiesced.contains(group) ? side.lastHeard[g.node.lead] : side.lastLeaderContact[group]
                    let ageMillis = contact.map { Int64((DispatchTime.now().uptimeNanoseconds &- $0) / 1_000_000) }
                    guard g.node.lead != noNode, let age = ageMillis, age <= freshness else {
                        return promise.fail(RuntimeError.tooStale(lastContactMillis: ageMillis, freshnessMillis: freshness))
                    }
                }
                self.serve(read, at: 0, everything: true)
            }
        case .local:
            serve(read, at: 0, everything: true)
        }
        return promise.futureResult
    }

    /// Whether `sql` only reads, judged by SQLite against this node's copy of the group's schema, on a
    /// read connection (preparing client SQL never touches the connection that applies entries).
    public func isReadOnly(group: GroupID, _ sql: String) async throws -> Bool {
        // A table made a moment ago must be there to prepare against.
        await applyHeldFirst(group)
        guard let reader = readers.withLockedValue({ $0[group] }) else { throw RuntimeError.unknownGroup(group) }
        return try await readPool.runIfActive(eventLoop: applyLoop) { try reader.isReadOnly(sql) }.get()
    }

    /// Writes a consistent copy of this node's database of `group` to `destination` (off the apply loop).
    public func backup(group: GroupID, to destination: String) async throws {
        guard try await groupIDs().contains(group) else { throw RuntimeError.unknownGroup(group) }
        await applyHeldFirst(group)
        let source = config.dataDirectory + "/group-\(group).sqlite"
        try await snapshotPool.runIfActive(eventLoop: applyLoop) {
            try SQLStateMachine.writeBackup(of: source, to: destination)
        }.get()
    }
}
