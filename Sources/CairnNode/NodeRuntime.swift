import CairnRaft
import CairnSQLite
import CairnStorage
import CairnTransport
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// One node hosting many Raft groups.
///
/// Threads: the *Raft loop* steps every group, gathers all groups' `Ready`s into one write batch and
/// syncs it (group commit: one fsync per loop turn, however many groups and proposals), then sends and
/// advances; the transport's connections live on it too. The *apply loop* applies committed entries
/// to each group's SQLite database in order and serves reads. Each loop's state is confined to it.
public final class NodeRuntime: Sendable {
    public let config: RuntimeConfig
    let raftLoop: any EventLoop
    let applyLoop: any EventLoop
    let loops: MultiThreadedEventLoopGroup
    public let transport: RaftTransport
    let raftState: NIOLoopBoundBox<RaftSide>
    let applyState: NIOLoopBoundBox<ApplySide>
    let log: @Sendable (String) -> Void
    let syncs = NIOLockedValueBox(0)
    /// Raft passes that waited for their group commit window (`GroupCommitWindow`).
    let groupCommitWaits = NIOLockedValueBox(0)
    let failureReason = NIOLockedValueBox<String?>(nil)
    let refusedMessages = NIOLockedValueBox(0)
    /// The groups open here, readable without a trip to the Raft loop (every request asks).
    let hosted = NIOLockedValueBox<Set<GroupID>>([])
    /// Which node leads each hosted group, as its last Ready said (`noNode`: none known), readable
    /// without a trip to the Raft loop: a write for a group led elsewhere goes there at once.
    let leaderHints = NIOLockedValueBox<[GroupID: NodeID]>([:])
    /// `streamsOut`: snapshot streams sending now, counted by the streams themselves (apart from the
    /// slots that admit them), and the most at once.
    /// `mostStreamsIn`: the most streams received at once; `busyRefusals`: streams refused for it.
    let snapshotCounts = NIOLockedValueBox((taken: 0, installed: 0, chunksSent: 0, chunksReceived: 0, streamsOut: 0, mostStreamsOut: 0,
                                            mostStreamsIn: 0, busyRefusals: 0))
    /// Peers that refused a stream of a group because they were receiving others ("group/peer"), and
    /// when (monotonic nanoseconds): the stream stops, and the next waits out `snapshotBusyRetryMillis`.
    let snapshotRefusals = NIOLockedValueBox<[String: UInt64]>([:])
    /// Slots taken by snapshot streams, and those waiting for one of the `maxSnapshotStreamsOut`.
    let snapshotStreamSlots = NIOLockedValueBox((sending: 0, waiting: [CheckedContinuation<Bool, Never>](), closed: false))
    /// Snapshot files being streamed out, by "group/peer/index": one transfer of a snapshot at a time.
    /// Snapshot transfers waiting or under way, by group and peer, with the newest snapshot asked for.
    let outgoingSnapshots = NIOLockedValueBox<[String: Message]>([:])
    /// Snapshot files being received, by group; confined to `receiveLoop`, which only writes them.
    let incomingSnapshots: NIOLoopBoundBox<[GroupID: IncomingSnapshot]>
    let receiveLoop: any EventLoop
    /// Copies databases for snapshots off the apply loop.
    let snapshotPool = NIOThreadPool(numberOfThreads: 1)
    /// Runs queries, on read connections of their own (see `RuntimeConfig.readThreads`).
    let readPool: NIOThreadPool
    /// Each hosted group's read connections, reachable from any thread: a confirmed read goes straight
    /// to the read pool when the database has applied far enough, without a trip to the apply loop.
    let readers = NIOLockedValueBox<[GroupID: ReadConnections]>([:])
    /// Each hosted group's consistency record, reachable from any thread (status, readiness, checks).
    let consistencyRecords = NIOLockedValueBox<[GroupID: ConsistencyRecord]>([:])
    /// What each hosted group served here since the last look (`takeLoad`), from any thread.
    let groupLoads = NIOLockedValueBox<[GroupID: GroupLoad]>([:])
    /// When the apply loop last ran its 100 ms sweep (monotonic nanoseconds): how long it has been busy.
    let applyLoopSeen = NIOLockedValueBox<UInt64>(DispatchTime.now().uptimeNanoseconds)
    /// The groups whose committed entries the apply loop holds back: a read there has them applied first.
    let holding = NIOLockedValueBox<Set<GroupID>>([])
    /// The latest pass that turns split children's files into groups; each pass waits for the one before.
    let splitAdoption = NIOLockedValueBox<Task<Void, Never>?>(nil)
    /// Split children this node's split entries made and it has not opened yet: nothing else may create
    /// them (empty, they would wait for a snapshot their own file holds).
    let adoptingSplitChildren = NIOLockedValueBox<Set<GroupID>>([])
    /// The pace of each snapshot stream (`RuntimeConfig.snapshotBytesPerSecond` until the cluster's
    /// setting says otherwise).
    let snapshotPace: NIOLockedValueBox<Int>
    var snapshotDirectory: String { config.dataDirectory + "/snapshots" }

    struct Group {
        let node: RawNode
        let storage: GroupLog
    }

    final class RaftSide {
        let store: LogStore
        var groups: [GroupID: Group] = [:]
        var pumpScheduled = false
        var nextRequestID: UInt64 = 1
        /// Linearizable reads waiting for their ReadIndex round, by request id: one request for all the
        /// reads of a group that arrived within one pass (`askReadIndex`).
        var pendingReads: [UInt64: ReadBatch] = [:]
        /// Linearizable reads that need a ReadIndex round, by group, until the next pass asks once for
        /// all of them (on a follower, one message to the leader instead of one per read).
        var readsToAsk: [GroupID: [ReadRequest]] = [:]
        /// Proposed writes by log index; each travels to the apply loop with its committed entry.
        var pendingWrites: [GroupID: [LogIndex: PendingWrite]] = [:]
        /// Writes that arrived since the last pass, by group, proposed together at its start
        /// (`proposeQueued`).
        var writesToPropose: [GroupID: [QueuedWrite]] = [:]
        /// Set once the node is handing its leadership away to stop: a transfer's `timeoutNow` asking it
        /// to campaign is ignored (`handOverLeadership`).
        var refusingLeadership = false
        /// When each group's heartbeat rounds went out (monotonic nanoseconds): with the core's
        /// `leaseRead`, whether a leader may serve a linearizable read without a round of its own.
        var leaseClocks: [GroupID: LeaseClock] = [:]
        /// When each group last heard from its leader (monotonic nanoseconds), for stale reads.
        var lastLeaderContact: [GroupID: UInt64] = [:]
        var stopped = false
        /// Idle groups: not ticked, so no heartbeats and no election timers (see `tickAll`).
        var quiesced = Set<GroupID>()
        /// Groups whose core was stepped, ticked or asked something since the last Ready pass: the
        /// only ones that may have a Ready. A pass looks at these, not at every group the node holds
        /// (with a thousand groups the scan was a large share of every pass). Every tick marks all
        /// groups once, so a mutation that forgot to mark costs a tick of delay, never a stall.
        var touched = Set<GroupID>()
        /// Groups whose heartbeats in the next Ready carry the quiesce flag.
        var quiescing = Set<GroupID>()
        var idleTicks: [GroupID: Int] = [:]
        /// When each peer node was last heard from at all (monotonic nanoseconds): node liveness.
        var lastHeard: [NodeID: UInt64] = [:]
        /// How many groups each peer leads, from its latest ping.
        var peerLeaderCounts: [NodeID: Int] = [:]
        /// Which groups each peer leads, from the latest ping that listed them.
        var peerLedGroups: [NodeID: [GroupID]] = [:]
        /// The groups this node's pings listed last, and the ticks since.
        var ledGroupsListed: [GroupID] = []
        var ticksSinceLedGroupsListed = 0
        /// Ticks since start (the ticker runs late under load; tests count per tick, not per second).
        var ticks = 0
        /// Group commit under load: when the last sync ended, how long it took, what it carried.
        var commitWindow: GroupCommitWindow
        /// A pass waits for its window (`GroupCommitWindow`); passes asked for meanwhile are that one.
        var passWaiting = false
        /// Another leader's entries were stepped since the last pass: it will write to the log.
        var appendsWaiting = false
        init(store: LogStore, commitWindow: GroupCommitWindow) {
            self.store = store
            self.commitWindow = commitWindow
        }
    }

    /// A client's promise belongs to the loop that asked (`callerLoop`): the apply loop or the read pool
    /// completes it, and what the caller does next runs on its own loop, one hop away (each hop is a
    /// thread wake-up on a write's path).
    typealias Answer = EventLoopPromise<([StatementResult], LogIndex)>

    struct PendingWrite {
        let term: Term
        let promise: Answer
        let proposedNanos: UInt64
        /// Failed as timed out by the sweep after this (no timer per request: thousands a second).
        let deadline: NIODeadline
    }

    /// A read: confirmed on the Raft loop (linearizable reads), then served on the apply loop once the
    /// database has applied that far.
    struct ReadRequest {
        let group: GroupID
        let statements: [SQLStatement]
        let timeoutNanos: UInt64
        let deadline: NIODeadline
        let promise: Answer
    }

    struct ReadBatch {
        let group: GroupID
        var reads: [ReadRequest]
    }

    struct WaitingRead {
        let index: LogIndex
        let request: ReadRequest
    }

    final class ApplySide {
        var machines: [GroupID: SQLStateMachine] = [:]
        var waitingReads: [GroupID: [WaitingRead]] = [:]
        var lastSnapshotIndex: [GroupID: LogIndex] = [:]
        /// Bytes of entries applied since the last snapshot began.
        var bytesSinceSnapshot: [GroupID: Int] = [:]
        var snapshotInProgress = Set<GroupID>()
        /// A follower's committed entries held back (`holdBack`).
        var held: [GroupID: HeldEntries] = [:]
        var heldGeneration: UInt64 = 0
        /// Writes waiting for their group to be free of prepared transactions (`executeInTurn`).
        var turns = TurnLines<TurnWaiter>(maxWaiters: NodeRuntime.maxTurnWaiters)
        var nextTurnID: UInt64 = 0
        /// Each waiter's deadline, cancelled once it is answered.
        var turnTimers: [UInt64: Scheduled<Void>] = [:]
        /// Set by `shutdown`: a write arriving after the lines were emptied is refused, not left waiting.
        var stopping = false
    }

    struct HeldEntries {
        /// Tells this hold's timer from a later hold's.
        let generation: UInt64
        var entries: [Entry] = []
        var bytes = 0
    }

    public init(config: RuntimeConfig, log: @escaping @Sendable (String) -> Void = { print($0) }) throws {
        self.config = config
        self.log = log
        loops = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        var it = loops.makeIterator()
        raftLoop = it.next()!
        applyLoop = it.next()!
        receiveLoop = it.next()!
        incomingSnapshots = NIOLoopBoundBox.makeBoxSendingValue([:], eventLoop: receiveLoop)
        // Refuses a data directory that belongs to another node before touching anything in it.
        _ = try NodeIdentity.loadOrCreate(directory: config.dataDirectory, requested: config.nodeID)
        let store = try LogStore(directory: config.dataDirectory + "/wal", log: log)
        try FileManager.default.createDirectory(atPath: config.dataDirectory + "/snapshots", withIntermediateDirectories: true)
        snapshotPool.start()
        readPool = NIOThreadPool(numberOfThreads: config.readThreads)
        readPool.start()
        raftState = NIOLoopBoundBox.makeBoxSendingValue(RaftSide(store: store, commitWindow: GroupCommitWindow(
            minEntries: config.groupCommitMinEntries, maxWaitNanos: config.groupCommitMaxWaitNanos)), eventLoop: raftLoop)
        applyState = NIOLoopBoundBox.makeBoxSendingValue(ApplySide(), eventLoop: applyLoop)
        snapshotPace = NIOLockedValueBox(config.snapshotBytesPerSecond)
        let raftLoop = self.raftLoop
        let inbox = NIOLockedValueBox<NodeRuntime?>(nil)
        var transportConfig = TransportConfig(nodeID: config.nodeID, listen: config.raftAddress)
        transportConfig.tls = config.transportTLS
        transportConfig.requireTLS = config.requireTransportTLS
        config.checkLimits(transport: transportConfig)
        // The transport's connections live on the Raft loop: a message is stepped where it is read and
        // written where it is produced, with no thread hand-off on either side (each one is a wake-up
        // in a write's critical path).
        transport = RaftTransport(config: transportConfig, group: raftLoop, log: log) { _, envelopes in
            if raftLoop.inEventLoop {
                inbox.withLockedValue { $0 }?.deliver(envelopes)
            } else {
                raftLoop.execute { inbox.withLockedValue { $0 }?.deliver(envelopes) }
            }
        }
        inbox.withLockedValue { $0 = self }
    }

    /// Opens every group found in the data directory, starts listening and ticking.
    public func start(peers: [NodeID: PeerAddress]) async throws {
        for (id, address) in peers where id != config.nodeID { transport.setPeer(id, address: address) }
        _ = try await transport.start()
        let groupIDs = try await raftLoop.submit { self.raftState.value.store.groupIDs }.get()
        // First, children whose split applied here before a crash stopped this node turning them into
        // groups (a child in the log whose snapshot file is still `split-*` cannot open before).
        await adoptSplitChildren().value
        for g in groupIDs where !hosts(g) { try await openGroup(g) }
        sweepTimeouts()
        scheduleConsistencyChecks()
        let tick = TimeAmount.milliseconds(config.tickMillis)
        raftLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { task in
            guard !self.raftState.value.stopped else {
                task.cancel()
                return
            }
            self.tickAll()
            self.pump()
        }
    }

    /// The clock read leases are measured in: monotonic, and running while the machine is suspended
    /// (CLOCK_BOOTTIME; CLOCK_MONOTONIC stops), since the other nodes' clocks keep running meanwhile.
    static func leaseClockNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Fail-stop: after a storage failure this node neither persists, acknowledges nor applies anything
    /// more, so nothing it says can be wrong; it stays up to report why (`failure`), and a restart
    /// recovers from what is on disk.
    func fail(_ reason: String) {
        let first = failureReason.withLockedValue { f in
            if f != nil { return false }
            f = reason
            return true
        }
        if first { log("node \(config.nodeID): \(reason); this node stops taking part until restarted") }
        raftLoop.execute { self.raftState.value.stopped = true }
    }

    /// A message from the network that was not stepped: counted, and logged (the first ones, then one
    /// in a thousand: a flood must not fill the disk).
    func noteRefused(_ e: Envelope, _ why: String) {
        RuntimeMetrics.messagesRefused.increment()
        let n = refusedMessages.withLockedValue { n in
            n += 1
            return n
        }
        if n <= 10 || n % 1_000 == 0 {
            log("node \(config.nodeID) group \(e.group): refused a \(e.message.kind) message claiming to come from node \(e.message.from): \(why) (\(n) refused so far)")
        }
    }

    /// Messages from the network refused so far (see `noteRefused`).
    public var refusedMessageCount: Int { refusedMessages.withLockedValue { $0 } }

    /// Why this node stopped taking part, if it did.
    public var failure: String? { failureReason.withLockedValue { $0 } }

    // MARK: - Raft loop

    func deliver(_ envelopes: [Envelope]) {
        let side = raftState.value
        let now = DispatchTime.now().uptimeNanoseconds
        for e in envelopes {
            if e.snapshotBusy {
                // Only about streams to the peer that says so: a node can refuse nothing but its own.
                snapshotRefusals.withLockedValue { $0["\(e.group)/\(e.message.from)"] = now }
                continue
            }
            if let chunk = e.chunk {
                receiveSnapshotChunk(e, chunk)
                continue
            }
            side.lastHeard[e.message.from] = now
            if e.group == Self.livenessGroup {
                // A count beyond any node's groups is a hostile or broken peer's: not believed.
                if e.message.kind == .heartbeat && e.message.context <= UInt64(Self.maxLedGroupsBelieved) {
                    side.peerLeaderCounts[e.message.from] = Int(e.message.context)
                    if let listed = e.message.entries.first, let groups = Self.decodeLedGroups(listed.data) {
                        side.peerLedGroups[e.message.from] = groups
                    }
                }
                continue
            }
            guard let g = side.groups[e.group] else { continue }
            if side.refusingLeadership && e.message.kind == .timeoutNow { continue }
            // A heartbeat response to the quiesce heartbeat must not wake the leader; anything else does.
            if side.quiesced.contains(e.group) && e.message.kind != .heartbeatResponse { wake(e.group) }
            // A snapshot arrives only as a streamed file, verified and synced before its message is
            // stepped (`receiveSnapshotChunk`); one carried inline would be written and installed unchecked.
            if e.message.kind == .snapshot {
                noteRefused(e, "a snapshot outside a streamed transfer")
                continue
            }
            var leaseRunning = false
            if e.message.kind == .readIndex, g.node.role == .leader {
                side.idleTicks[e.group] = 0  // as for a read asked here (`queryFuture`)
                leaseRunning = side.leaseClocks[e.group]?.index(g.node.leaseRead, nowNanos: Self.leaseClockNanos(), nanosPerTick: UInt64(config.tickMillis) * 1_000_000) != nil
            }
            side.touched.insert(e.group)
            if let why = g.node.step(e.message, leaseRunning: leaseRunning) {
                noteRefused(e, why)
                continue
            }
            if e.message.from == g.node.lead && e.message.term == g.node.term { side.lastLeaderContact[e.group] = now }
            if e.message.kind == .append && !e.message.entries.isEmpty { side.appendsWaiting = true }
            if e.quiesce {
                // Quiesce only in step with the leader: same term and leader, and nothing left to learn.
                let s = g.node.status
                if e.message.from == s.lead && e.message.term == s.term && s.commit == e.message.commit && s.lastIndex == s.commit {
                    side.quiesced.insert(e.group)
                }
            }
        }
        pump()
    }

    /// Coalesces work: however many inputs arrive in one loop turn, one pass handles them.
    func pump() {
        guard !raftState.value.pumpScheduled else { return }
        raftState.value.pumpScheduled = true
        raftLoop.execute {
            self.raftState.value.pumpScheduled = false
            self.handleReadies()
        }
    }

    func handleReadies() {
        let side = raftState.value
        guard !side.stopped else { return failQueuedWrites() }
        guard !side.passWaiting else { return }
        if side.appendsWaiting || !side.writesToPropose.isEmpty {
            let wait = side.commitWindow.waitNanos(nowNanos: DispatchTime.now().uptimeNanoseconds)
            if wait > 0 {
                // Inputs go on being stepped meanwhile; the pass then writes them with one sync.
                side.passWaiting = true
                groupCommitWaits.withLockedValue { $0 += 1 }
                RuntimeMetrics.groupCommitWaits.increment()
                raftLoop.scheduleTask(in: .nanoseconds(Int64(wait))) {
                    side.passWaiting = false
                    self.handleReadies()
                }
                return
            }
        }
        side.appendsWaiting = false
        var readies: [(GroupID, Group, Ready)] = []
        proposeQueued()
        askReadIndex()
        let candidates = side.touched.sorted()
        side.touched.removeAll(keepingCapacity: true)
        for id in candidates {
            guard let g = side.groups[id], g.node.hasReady else { continue }
            let rd = g.node.ready()
            // Committed entries are on disk already (Raft hands out only persisted ones): the apply loop
            // can run them while this turn's writes go out and sync.
            if rd.snapshot == nil { applyCommitted(rd.committedEntries, group: id) }
            if g.node.role == .leader {
                side.leaseClocks[id]?.recordSent(rd.messages, atNanos: Self.leaseClockNanos())
            }
            send(rd.messages, group: id)
            readies.append((id, g, rd))
        }
        side.quiescing.removeAll()
        guard !readies.isEmpty else { return }
        for (id, _, rd) in readies {
            // A streamed snapshot is already on disk; one carried inline (from a test harness) is written now.
            guard let snap = rd.snapshot, !snap.data.isEmpty else { continue }
            // The snapshot must be on disk before the log says the entries before it are gone.
            do {
                try DurableFile.write(snap.data, to: snapshotPath(id, snap.metadata.index))
            } catch {
                fail("cannot store the snapshot of group \(id): \(error)")
                side.stopped = true
                return
            }
        }
        let writes = readies.compactMap { id, _, rd -> GroupWrite? in
            if rd.entries.isEmpty && rd.hardState == nil && rd.snapshot == nil { return nil }
            return GroupWrite(group: id, entries: rd.entries, hardState: rd.hardState, snapshot: rd.snapshot?.metadata)
        }
        // Out before the sync: followers write to their disks while this node writes to its own.
        transport.flushQueued()
        if !writes.isEmpty {
            let mustSync = readies.contains { $0.2.mustSync }
            do {
                let started = DispatchTime.now().uptimeNanoseconds
                try side.store.persist(writes, sync: mustSync)
                if mustSync {
                    let ended = DispatchTime.now().uptimeNanoseconds
                    side.commitWindow.synced(entries: writes.reduce(0) { $0 + $1.entries.count }, startedNanos: started, endedNanos: ended)
                    syncs.withLockedValue { $0 += 1 }
                    RuntimeMetrics.walSync.recordNanoseconds(Int64(ended - started))
                }
            } catch {
                // Nothing of this batch may be acknowledged; the node stops rather than run on a broken disk.
                fail("cannot persist the Raft log: \(error)")
                side.stopped = true
                return
            }
        }
        for (id, g, rd) in readies {
            if let soft = rd.softState {
                if soft.lead != noNode { RuntimeMetrics.leaderChanges(id).increment() }
                leaderHints.withLockedValue { $0[id] = soft.lead }
            }
            send(rd.messagesAfterPersist, group: id)
            if let snap = rd.snapshot {
                // The snapshot replaces entries these writes were waiting on: whether each took effect is unknown.
                for (i, w) in side.pendingWrites[id] ?? [:] where i <= snap.metadata.index {
                    side.pendingWrites[id]![i] = nil
                    w.promise.fail(RuntimeError.outcomeUnknown)
                }
                dispatchInstall(group: id, index: snap.metadata.index)
                applyCommitted(rd.committedEntries, group: id)
            }
            for rs in rd.readStates {
                guard let batch = side.pendingReads.removeValue(forKey: rs.requestID) else { continue }
                for read in batch.reads { serve(read, at: rs.index) }
            }
            if let soft = rd.softState {
                // Leadership moved: the core dropped the ReadIndex requests still waiting (a leader's
                // when it stepped down, a follower's with the leader it asked). Failed now, they are
                // asked again where the group is led, instead of waiting out their deadline.
                for (rid, batch) in side.pendingReads where batch.group == id {
                    side.pendingReads[rid] = nil
                    for read in batch.reads { read.promise.fail(RuntimeError.notLeader(leader: soft.lead)) }
                }
            }
            g.node.advance(rd)
            // Advancing may leave more (entries committed meanwhile, messages after the sync).
            side.touched.insert(id)
        }
        pump()
    }

    /// Hands committed entries to the apply loop, with the writes proposed here that wait on them.
    func applyCommitted(_ entries: [Entry], group: GroupID) {
        guard !entries.isEmpty else { return }
        let side = raftState.value
        var waiters: [LogIndex: PendingWrite] = [:]
        if side.pendingWrites[group]?.isEmpty == false {
            for e in entries {
                if let w = side.pendingWrites[group]!.removeValue(forKey: e.index) { waiters[e.index] = w }
            }
        }
        dispatchApply(group: group, entries: entries, waiters: waiters,
                      deferrable: waiters.isEmpty && side.groups[group]?.node.role == .follower)
    }

    func send(_ messages: [Message], group: GroupID) {
        var byPeer: [NodeID: [Envelope]] = [:]
        let quiescing = raftState.value.quiescing.contains(group)
        for m in messages {
            if m.kind == .snapshot, let snap = m.snapshot, snap.data.isEmpty {
                streamSnapshot(m, group: group)
            } else {
                byPeer[m.to, default: []].append(Envelope(group: group, message: m, quiesce: quiescing && m.kind == .heartbeat))
            }
        }
        for (peer, envelopes) in byPeer { transport.send(envelopes, to: peer) }
    }

    public struct GroupStatus: Sendable {
        public var role: RaftRole
        public var term: Term
        public var leader: NodeID
        public var commit: LogIndex
        public var applied: LogIndex
        public var lastIndex: LogIndex
        public var config: ConfState
        /// Index of the newest membership entry; a change is in flight while it exceeds `commit`.
        public var configIndex: LogIndex
        /// First index still in the log (everything before it is in a snapshot).
        public var firstIndex: LogIndex
        /// On the leader: the highest entry known to be on each member's disk.
        public var matchIndex: [NodeID: LogIndex]
        /// On the leader: members heard from within the current election timeout (CheckQuorum's view).
        public var recentlyActive: Set<NodeID>
    }

    public func status(group: GroupID) async throws -> GroupStatus {
        try await raftLoop.submit {
            guard let g = self.raftState.value.groups[group] else { throw RuntimeError.unknownGroup(group) }
            return self.groupStatus(group, g.node.status)
        }.get()
    }

    /// Every hosted group's status, read in one pass of the Raft loop: a group dropped or removed
    /// between listing the groups and asking each would otherwise fail a whole status page.
    public func statuses() async throws -> [(group: GroupID, status: GroupStatus)] {
        try await raftLoop.submit {
            self.raftState.value.groups.sorted { $0.key < $1.key }.map { ($0.key, self.groupStatus($0.key, $0.value.node.status)) }
        }.get()
    }

    /// `applied` is what the group's database holds, which trails the core's while a follower holds
    /// entries back (`holdBack`).
    private func groupStatus(_ group: GroupID, _ s: Status) -> GroupStatus {
        let applied = readers.withLockedValue { $0[group] }.map { min($0.state.applied, s.applied) } ?? s.applied
        return GroupStatus(role: s.role, term: s.term, leader: s.lead, commit: s.commit, applied: applied,
                    lastIndex: s.lastIndex, config: s.config, configIndex: s.configIndex,
                    firstIndex: s.firstIndex, matchIndex: s.progress.mapValues(\.match),
                    recentlyActive: Set(s.progress.filter(\.value.recentActive).keys))
    }

    /// Whether this node holds `group` (a lock, no loop hop: for routing every request).
    public func hosts(_ group: GroupID) -> Bool { hosted.withLockedValue { $0.contains(group) } }

    /// The node that leads `group` as this node last learnt (nil: none known, or the group is not
    /// hosted here). A hint: by the time it is used, leadership may have moved.
    public func leaderHint(_ group: GroupID) -> NodeID? {
        leaderHints.withLockedValue { $0[group] }.flatMap { $0 == noNode ? nil : $0 }
    }

    /// The groups this node hosts.
    public func groupIDs() async throws -> [GroupID] {
        try await raftLoop.submit { self.raftState.value.groups.keys.sorted() }.get()
    }

    /// Proposes a membership change on this node (the group's leader); returns the entry's index.
    @discardableResult
    public func proposeConfChange(group: GroupID, _ change: ConfChange) async throws -> LogIndex {
        try await raftLoop.submit {
            guard let g = self.raftState.value.groups[group] else { throw RuntimeError.unknownGroup(group) }
            self.wake(group)
            do throws(RaftError) {
                self.raftState.value.touched.insert(group)
                let index = try g.node.proposeConfChange(change)
                self.pump()
                return index
            } catch {
                if case .notLeader(let l) = error { throw RuntimeError.notLeader(leader: l) }
                throw RuntimeError.raft(error.description)
            }
        }.get()
    }

    /// Hands leadership of `group` to `target` (used before this leader leaves the group).
    public func transferLeadership(group: GroupID, to target: NodeID) async throws {
        try await raftLoop.submit {
            guard let g = self.raftState.value.groups[group] else { throw RuntimeError.unknownGroup(group) }
            self.wake(group)
            do throws(RaftError) {
                self.raftState.value.touched.insert(group)
                try g.node.transferLeadership(to: target)
                self.pump()
            } catch {
                if case .notLeader(let l) = error { throw RuntimeError.notLeader(leader: l) }
                throw RuntimeError.raft(error.description)
            }
        }.get()
    }

    /// How long since this node last heard anything from each peer (nanoseconds; peers ping each other
    /// every tick, whatever their groups do). A peer never heard from since this node started is absent.
    public func silenceNanos() async throws -> [NodeID: UInt64] {
        try await raftLoop.submit {
            let now = DispatchTime.now().uptimeNanoseconds
            return self.raftState.value.lastHeard.mapValues { now &- $0 }
        }.get()
    }

    /// Groups that are quiesced on this node right now.
    public func quiescedGroups() async throws -> Set<GroupID> {
        try await raftLoop.submit { self.raftState.value.quiesced }.get()
    }

    /// Ticks this node has run since it started.
    public func tickCount() async throws -> Int {
        try await raftLoop.submit { self.raftState.value.ticks }.get()
    }

    /// Log syncs so far (each covers every group's writes of one loop turn).
    public var syncCount: Int { syncs.withLockedValue { $0 } }
    /// Passes that waited to share a sync with writes arriving under load.
    public var groupCommitWaitCount: Int { groupCommitWaits.withLockedValue { $0 } }

    /// Snapshots this node took (each followed by a log compaction) and installed from a leader, and
    /// the pieces of snapshot files it streamed out and received.
    /// `mostStreamsOut`: the most snapshot streams this node has sent at once.
    public var snapshotStats: (taken: Int, installed: Int, chunksSent: Int, chunksReceived: Int, mostStreamsOut: Int, mostStreamsIn: Int, busyRefusals: Int) {
        snapshotCounts.withLockedValue { ($0.taken, $0.installed, $0.chunksSent, $0.chunksReceived, $0.mostStreamsOut, $0.mostStreamsIn, $0.busyRefusals) }
    }

    public func shutdown() async {
        try? await raftLoop.submit {
            let side = self.raftState.value
            side.stopped = true
            for (_, batch) in side.pendingReads { for read in batch.reads { read.promise.fail(RuntimeError.shutDown) } }
            side.pendingReads = [:]
            for (_, reads) in side.readsToAsk { for read in reads { read.promise.fail(RuntimeError.shutDown) } }
            side.readsToAsk = [:]
            for (_, writes) in side.pendingWrites { for (_, w) in writes { w.promise.fail(RuntimeError.shutDown) } }
            side.pendingWrites = [:]
            self.failQueuedWrites()
        }.get()
        try? await applyLoop.submit {
            let side = self.applyState.value
            for (_, reads) in side.waitingReads { for r in reads { r.request.promise.fail(RuntimeError.shutDown) } }
            side.waitingReads = [:]
            side.stopping = true
            for group in side.turns.groups { self.failTurns(group) { _ in RuntimeError.shutDown } }
        }.get()
        closeStreamSlots()
        await transport.shutdown()
        try? await snapshotPool.shutdownGracefully()
        try? await readPool.shutdownGracefully()
        try? await loops.shutdownGracefully()
    }
}

/// The runtime's metrics (swift-metrics; exported by whatever backend the process bootstrapped).
enum RuntimeMetrics {
    static let walSync = Timer(label: "cairn_wal_sync_seconds")
    /// Raft passes that waited for their group commit window (`GroupCommitWindow`).
    static let groupCommitWaits = Counter(label: "cairn_group_commit_waits_total")
    /// One batch of committed entries applied to a group's database (one SQLite transaction).
    static let applyBatch = Timer(label: "cairn_apply_batch_seconds")
    /// A write on the node that proposed it, from the proposal to its result (commit and apply).
    static let write = Timer(label: "cairn_write_seconds")
    /// Messages from the network dropped before they reached a group: malformed, impossible, out of place.
    static let messagesRefused = Counter(label: "cairn_raft_messages_refused_total")
    /// Linearizable reads a leader served on its lease, without a heartbeat round of their own.
    static let leaseReads = Counter(label: "cairn_lease_reads_total")
    /// Bytes of snapshot files streamed to other nodes (replicas added, moved or caught up).
    static let snapshotBytesSent = Counter(label: "cairn_snapshot_bytes_sent_total")
    /// Snapshot streams this node refused because it was receiving as many as it takes at once.
    static let snapshotStreamsRefusedBusy = Counter(label: "cairn_snapshot_streams_refused_busy_total")
    static func leaderChanges(_ group: GroupID) -> Counter {
        Counter(label: "cairn_raft_leader_changes_total", dimensions: [("group", String(group))])
    }
}
