import CairnRaft
import CairnSQLite
import CairnStorage
import CairnTransport
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

public typealias GroupID = UInt64

public enum RuntimeError: Error, Equatable, CustomStringConvertible {
    case notLeader(leader: NodeID)
    case unknownGroup(GroupID)
    case timedOut(String)
    /// The entry at the proposal's index is a different one: leadership changed and it was lost.
    case proposalLost
    /// A snapshot replaced the log before this node could tell whether the write took effect.
    case outcomeUnknown
    /// A stale read was refused because this node has not heard from a leader recently enough.
    case tooStale(lastContactMillis: Int64?, freshnessMillis: Int64)
    case raft(String)
    case shutDown
    /// This node stopped taking part after a storage failure (a full disk, an I/O error); it needs an operator.
    case failed(String)
    /// The group's database was dropped by an entry ordered before this request.
    case databaseDropped
    /// The write's encoded entry is larger than any entry the log takes.
    case entryTooLarge(bytes: Int, limit: Int)

    public var description: String {
        switch self {
        case .notLeader(let l): return l == noNode ? "no leader is known yet; retry shortly" : "not the leader; node \(l) is"
        case .unknownGroup(let g): return "no such group \(g) on this node"
        case .timedOut(let what): return "timed out \(what)"
        case .proposalLost: return "the write was not committed (leadership changed); it is safe to retry"
        case .outcomeUnknown: return "the outcome of the write is unknown (this node installed a snapshot meanwhile); read before retrying"
        case .tooStale(let last, let bound):
            let heard = last.map { "last heard from the leader \($0) ms ago" } ?? "no leader heard from yet"
            return "this node's data may be older than the requested freshness of \(bound) ms (\(heard)); read at the linearizable level or from the leader"
        case .raft(let m): return m
        case .shutDown: return "the node is shutting down"
        case .failed(let why): return "this node stopped serving after a storage failure: \(why)"
        case .databaseDropped: return "the database was dropped"
        case .entryTooLarge(let bytes, let limit):
            return "the write is \(bytes) bytes once encoded, over the limit of \(limit) bytes for one entry; send it in smaller requests"
        }
    }
}

public enum ReadConsistency: Sendable, Equatable {
    /// ReadIndex: confirmed with a quorum, then served once this node has applied that far.
    case linearizable
    /// This node's applied state, if it heard from the leader within `freshnessMillis`: possibly behind,
    /// by about that much.
    case stale(freshnessMillis: Int64)
    /// This node's applied state, whatever it is.
    case local
}

public struct RuntimeConfig: Sendable {
    public var nodeID: NodeID
    public var dataDirectory: String
    public var raftAddress: PeerAddress
    public var tickMillis: Int64 = 50
    public var electionTimeoutTicks = 10
    public var requestTimeoutMillis: Int64 = 10_000
    /// Entries applied between snapshots of a group's database; each snapshot lets the log be compacted.
    public var snapshotEveryEntries: LogIndex = 10_000
    /// Bytes of entries applied between snapshots, whatever their count: the log keeps its entries in
    /// memory until compacted, so this bounds that memory when entries are large (a load).
    public var snapshotEveryBytes = 64 << 20
    /// Mutual TLS between nodes, when set.
    public var transportTLS: TransportTLS?
    /// Size of the pieces a snapshot file is streamed in.
    public var snapshotChunkBytes = 1 << 20
    /// Ticks a leader's group must be idle (everything replicated, applied, nothing pending) before it
    /// stops ticking and heartbeating; 0 never quiesces.
    public var quiesceAfterTicks = 20
    /// The largest entry a write may become: every node must be able to carry it to every other in one
    /// message (see `checkLimits`).
    public var maxEntryBytes = 20 << 20
    /// Threads that run queries, beside the apply loop: one slow query never delays writes, and only
    /// as many slow queries as there are threads delay other queries.
    public var readThreads = 4
    /// A query statement running longer than this is interrupted, unless its request says otherwise.
    public var readTimeoutMillis: Int64 = 10_000
    /// How often the leader of each group asks its replicas for digests and compares them (0: only on
    /// demand, through `checkConsistency`).
    public var consistencyCheckMillis: Int64 = 600_000

    public init(nodeID: NodeID, dataDirectory: String, raftAddress: PeerAddress) {
        self.nodeID = nodeID
        self.dataDirectory = dataDirectory
        self.raftAddress = raftAddress
    }

    /// How much a Raft message adds to the entries it carries, at most (header, one entry's framing).
    static let messageOverheadBytes = 4096

    /// The relationships between limits that replication relies on: an entry the log accepts must fit
    /// one message, a peer's send queue and one frame, or no follower would ever receive it while the
    /// leader kept leading and every later write timed out.
    func checkLimits(transport: TransportConfig) {
        precondition(maxEntryBytes > 0 && readThreads > 0 && readTimeoutMillis > 0, "limits must be positive")
        precondition(maxEntryBytes + Self.messageOverheadBytes <= transport.maxQueuedBytesPerPeer,
                     "an entry of maxEntryBytes must fit a peer's send queue")
        precondition(transport.maxQueuedBytesPerPeer + Self.messageOverheadBytes <= WireFormat.maxFrameBytes,
                     "a peer's whole send queue must fit one frame")
        precondition(snapshotChunkBytes + Self.messageOverheadBytes <= transport.maxQueuedBytesPerPeer,
                     "a snapshot chunk must fit a peer's send queue")
    }
}

/// One node hosting many Raft groups.
///
/// Threads: the *Raft loop* steps every group, gathers all groups' `Ready`s into one write batch and
/// syncs it (group commit: one fsync per loop turn, however many groups and proposals), then sends and
/// advances; the transport's connections live on it too. The *apply loop* applies committed entries
/// to each group's SQLite database in order and serves reads. Each loop's state is confined to it.
public final class NodeRuntime: Sendable {
    public let config: RuntimeConfig
    private let raftLoop: any EventLoop
    private let applyLoop: any EventLoop
    private let loops: MultiThreadedEventLoopGroup
    public let transport: RaftTransport
    private let raftState: NIOLoopBoundBox<RaftSide>
    private let applyState: NIOLoopBoundBox<ApplySide>
    private let log: @Sendable (String) -> Void
    private let syncs = NIOLockedValueBox(0)
    private let failureReason = NIOLockedValueBox<String?>(nil)
    /// The groups open here, readable without a trip to the Raft loop (every request asks).
    private let hosted = NIOLockedValueBox<Set<GroupID>>([])
    private let snapshotCounts = NIOLockedValueBox((taken: 0, installed: 0, chunksSent: 0, chunksReceived: 0))
    /// Snapshot files being streamed out, by "group/peer/index": one transfer of a snapshot at a time.
    private let outgoingSnapshots = NIOLockedValueBox<Set<String>>([])
    /// Snapshot files being received, by group; confined to `receiveLoop`, which only writes them.
    private let incomingSnapshots: NIOLoopBoundBox<[GroupID: (from: NodeID, index: LogIndex, file: IncomingFile)]>
    private let receiveLoop: any EventLoop
    /// Copies databases for snapshots off the apply loop.
    private let snapshotPool = NIOThreadPool(numberOfThreads: 1)
    /// Runs queries, on read connections of their own (see `RuntimeConfig.readThreads`).
    private let readPool: NIOThreadPool
    /// Each hosted group's read connections, reachable from any thread: a confirmed read goes straight
    /// to the read pool when the database has applied far enough, without a trip to the apply loop.
    private let readers = NIOLockedValueBox<[GroupID: ReadConnections]>([:])
    /// Each hosted group's consistency record, reachable from any thread (status, readiness, checks).
    private let consistencyRecords = NIOLockedValueBox<[GroupID: ConsistencyRecord]>([:])
    /// When the apply loop last ran its 100 ms sweep (monotonic nanoseconds): how long it has been busy.
    private let applyLoopSeen = NIOLockedValueBox<UInt64>(DispatchTime.now().uptimeNanoseconds)
    private var snapshotDirectory: String { config.dataDirectory + "/snapshots" }

    struct Group {
        let node: RawNode
        let storage: GroupLog
    }

    final class RaftSide {
        let store: LogStore
        var groups: [GroupID: Group] = [:]
        var pumpScheduled = false
        var nextRequestID: UInt64 = 1
        /// Linearizable reads waiting for their ReadIndex round, by request id.
        var pendingReads: [UInt64: ReadRequest] = [:]
        /// Proposed writes by log index; each travels to the apply loop with its committed entry.
        var pendingWrites: [GroupID: [LogIndex: PendingWrite]] = [:]
        /// When each group last heard from its leader (monotonic nanoseconds), for stale reads.
        var lastLeaderContact: [GroupID: UInt64] = [:]
        var stopped = false
        /// Idle groups: not ticked, so no heartbeats and no election timers (see `tickAll`).
        var quiesced = Set<GroupID>()
        /// Groups whose heartbeats in the next Ready carry the quiesce flag.
        var quiescing = Set<GroupID>()
        var idleTicks: [GroupID: Int] = [:]
        /// When each peer node was last heard from at all (monotonic nanoseconds): node liveness.
        var lastHeard: [NodeID: UInt64] = [:]
        init(store: LogStore) { self.store = store }
    }

    /// A client's promises belong to the apply loop, which answers them: the waiting task resumes
    /// straight from there, with no further hop (each hop is a thread wake-up on a write's path).
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
        raftState = NIOLoopBoundBox.makeBoxSendingValue(RaftSide(store: store), eventLoop: raftLoop)
        applyState = NIOLoopBoundBox.makeBoxSendingValue(ApplySide(), eventLoop: applyLoop)
        let raftLoop = self.raftLoop
        let inbox = NIOLockedValueBox<NodeRuntime?>(nil)
        var transportConfig = TransportConfig(nodeID: config.nodeID, listen: config.raftAddress)
        transportConfig.tls = config.transportTLS
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
        for g in groupIDs { try await openGroup(g) }
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

    /// Envelopes to this group id are node-level liveness pings, not Raft messages.
    static let livenessGroup = GroupID.max

    /// Ticks every awake group, and quiesces or wakes groups.
    ///
    /// A node may host hundreds of groups, most of them idle; heartbeating each would cost
    /// groups x peers messages every tick. A leader whose group has been idle for
    /// `quiesceAfterTicks` sends one last heartbeat flagged *quiesce* and stops ticking it; followers
    /// that are fully caught up stop ticking it too. Not ticking never affects safety (Raft does not
    /// depend on time for it); for liveness, any message or client request for the group wakes it,
    /// and a follower wakes its group when the leader's node goes silent: every node pings each peer
    /// once a tick, whatever the number of groups.
    private func tickAll() {
        let side = raftState.value
        let now = DispatchTime.now().uptimeNanoseconds
        let silentNanos = UInt64(config.electionTimeoutTicks) * UInt64(config.tickMillis) * 1_000_000
        var peers = Set<NodeID>()
        for id in side.groups.keys.sorted() {
            let g = side.groups[id]!
            peers.formUnion(g.node.status.config.members)
            if side.quiesced.contains(id) {
                let lead = g.node.lead
                let leaderSilent = lead != config.nodeID && (lead == noNode || now &- (side.lastHeard[lead] ?? 0) > silentNanos)
                guard leaderSilent else { continue }
                wake(id)
            }
            g.node.tick()
            guard config.quiesceAfterTicks > 0, g.node.role == .leader else { continue }
            if isIdle(id, g) {
                side.idleTicks[id, default: 0] += 1
                if side.idleTicks[id]! >= config.quiesceAfterTicks { quiesce(id, g) }
            } else {
                side.idleTicks[id] = 0
            }
        }
        peers.remove(config.nodeID)
        for peer in peers {
            transport.send([Envelope(group: Self.livenessGroup, message: Message(kind: .heartbeat, from: config.nodeID, to: peer))], to: peer)
        }
    }

    /// Everything is replicated to every member, committed and applied, and no read or transfer is pending.
    private func isIdle(_ id: GroupID, _ g: Group) -> Bool {
        let s = g.node.status
        guard s.commit == s.lastIndex, s.applied == s.commit, s.configIndex <= s.commit, s.leadTransferee == noNode,
              !raftState.value.pendingReads.values.contains(where: { $0.group == id }) else { return false }
        return s.config.members.allSatisfy { $0 == config.nodeID || s.progress[$0]?.match == s.lastIndex }
    }

    private func quiesce(_ id: GroupID, _ g: Group) {
        let side = raftState.value
        side.idleTicks[id] = 0
        side.quiesced.insert(id)
        // The flag rides on the heartbeats this tick produced (`send`): they carry the commit index
        // followers check against, and nothing sent after them wakes the followers again.
        side.quiescing.insert(id)
    }

    private func wake(_ id: GroupID) {
        let side = raftState.value
        side.quiesced.remove(id)
        side.idleTicks[id] = 0
    }

    /// Creates a group with an initial membership (every initial member calls this with the same voters).
    public func bootstrapGroup(_ id: GroupID, voters: [NodeID]) async throws {
        try await raftLoop.submit {
            guard self.raftState.value.store.group(id) == nil else { return }
            _ = try self.raftState.value.store.createGroup(id, confState: ConfState(voters: voters))
        }.get()
        try await openGroup(id)
    }

    /// `DATA_DIR/snapshots/group-<group>.<index>.sqlite`
    static func snapshotPath(in directory: String, group: GroupID, index: LogIndex) -> String {
        directory + "/group-\(group).\(index).sqlite"
    }

    private func snapshotPath(_ group: GroupID, _ index: LogIndex) -> String {
        Self.snapshotPath(in: snapshotDirectory, group: group, index: index)
    }

    private func openGroup(_ id: GroupID) async throws {
        let path = config.dataDirectory + "/group-\(id).sqlite"
        let snapshotPath: @Sendable (LogIndex) -> String = { [directory = snapshotDirectory] index in
            Self.snapshotPath(in: directory, group: id, index: index)
        }
        // Where the log starts: the database must hold at least that much.
        let floor: LogIndex = try await raftLoop.submit {
            guard let storage = self.raftState.value.store.group(id) else { throw RuntimeError.unknownGroup(id) }
            // The file itself is streamed by the runtime (`streamSnapshot`); the message carries only metadata.
            storage.snapshotData = { meta in
                guard FileManager.default.fileExists(atPath: snapshotPath(meta.index)) else {
                    throw RuntimeError.raft("snapshot file for entry \(meta.index) is missing")
                }
                return []
            }
            return storage.snapshotMetadata.index
        }.get()
        let applied = try await applyLoop.submit {
            let side = self.applyState.value
            let machine = try side.machines[id] ?? SQLStateMachine(path: path)
            side.machines[id] = machine
            self.readers.withLockedValue { $0[id] = machine.reads }
            self.consistencyRecords.withLockedValue { $0[id] = machine.consistency }
            let record = machine.consistency, log = self.log, node = self.config.nodeID
            // A divergence outlives restarts: the copy is still wrong until an operator replaces it.
            let marker = self.config.dataDirectory + "/diverged-group-\(id).json"
            if let data = FileManager.default.contents(atPath: marker), let m = try? JSONDecoder().decode(ConsistencyRecord.Mismatch.self, from: data) {
                record.restore(m)
                log("node \(node) group \(id): this replica diverged from its leader at entry \(m.index) (\(marker)); not ready until it is replaced")
            }
            record.onMismatch = { m in
                log("node \(node) group \(id): DIVERGED: this replica's digest at entry \(m.index) is \(String(m.mine, radix: 16)), the leader's \(String(m.leader, radix: 16)); this node is not ready until it is replaced")
                if let data = try? JSONEncoder().encode(m) { FileManager.default.createFile(atPath: marker, contents: data) }
            }
            machine.digestScheduler = { [snapshotPool = self.snapshotPool] pinned in
                snapshotPool.submit { state in
                    guard case .active = state else { return }
                    do {
                        record.recordMine(try pinned.digest())
                    } catch {
                        log("node \(node) group \(id): cannot take the digest at entry \(pinned.index): \(error)")
                    }
                }
            }
            if machine.appliedIndex < floor {
                // Power loss took transactions SQLite had not synced, or a crash interrupted an install:
                // the log no longer has those entries, but the snapshot they went into does.
                let file = snapshotPath(floor)
                guard FileManager.default.fileExists(atPath: file) else {
                    throw RuntimeError.raft("group \(id): the log starts after entry \(floor) but the database holds only \(machine.appliedIndex) and the snapshot \(file) is missing")
                }
                try machine.install(snapshotFile: file)
                self.log("group \(id): reinstalled the snapshot at \(floor) (the database was at an earlier entry)")
            }
            side.lastSnapshotIndex[id] = max(side.lastSnapshotIndex[id] ?? 0, floor)
            return machine.appliedIndex
        }.get()
        let nodeID = config.nodeID, electionTicks = config.electionTimeoutTicks
        try await raftLoop.submit {
            guard self.raftState.value.groups[id] == nil, let storage = self.raftState.value.store.group(id) else { return }
            // Entries are applied only once synced; a log that ends before the database lost synced
            // records (corruption at its very end looks like a torn write). Refuse, rather than
            // run with a history shorter than what this node already acknowledged and applied.
            let last = storage.lastIndex()
            guard applied <= last else {
                throw RuntimeError.raft("group \(id): the database has applied entry \(applied) but the write-ahead log ends at \(last): the log lost entries that were synced (corruption at its end); refusing to start. Replace this node: remove it from the cluster and join one with an empty data directory")
            }
            var c = RaftConfig(id: nodeID, randomSeed: UInt64(UInt(bitPattern: ObjectIdentifier(storage).hashValue)) ^ id)
            c.electionTimeoutTicks = electionTicks
            c.appliedIndex = applied
            self.raftState.value.groups[id] = Group(node: try RawNode(config: c, storage: storage), storage: storage)
            self.hosted.withLockedValue { _ = $0.insert(id) }
        }.get()
    }

    /// Removes a group's snapshot files older than `index`.
    private func removeSnapshots(of group: GroupID, before index: LogIndex) {
        let prefix = "group-\(group)."
        for name in (try? FileManager.default.contentsOfDirectory(atPath: snapshotDirectory)) ?? [] where name.hasPrefix(prefix) {
            let middle = name.dropFirst(prefix.count).split(separator: ".").first.map(String.init) ?? ""
            if let i = LogIndex(middle), i < index { try? FileManager.default.removeItem(atPath: snapshotDirectory + "/" + name) }
        }
    }

    /// Fail-stop: after a storage failure this node neither persists, acknowledges nor applies anything
    /// more, so nothing it says can be wrong; it stays up to report why (`failure`), and a restart
    /// recovers from what is on disk.
    private func fail(_ reason: String) {
        let first = failureReason.withLockedValue { f in
            if f != nil { return false }
            f = reason
            return true
        }
        if first { log("node \(config.nodeID): \(reason); this node stops taking part until restarted") }
        raftLoop.execute { self.raftState.value.stopped = true }
    }

    /// Why this node stopped taking part, if it did.
    public var failure: String? { failureReason.withLockedValue { $0 } }

    // MARK: - Raft loop

    private func deliver(_ envelopes: [Envelope]) {
        let side = raftState.value
        let now = DispatchTime.now().uptimeNanoseconds
        for e in envelopes {
            if let chunk = e.chunk {
                receiveSnapshotChunk(e, chunk)
                continue
            }
            side.lastHeard[e.message.from] = now
            guard let g = side.groups[e.group] else { continue }
            // A heartbeat response to the quiesce heartbeat must not wake the leader; anything else does.
            if side.quiesced.contains(e.group) && e.message.kind != .heartbeatResponse { wake(e.group) }
            g.node.step(e.message)
            if e.message.from == g.node.lead && e.message.term == g.node.term { side.lastLeaderContact[e.group] = now }
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
    private func pump() {
        guard !raftState.value.pumpScheduled else { return }
        raftState.value.pumpScheduled = true
        raftLoop.execute {
            self.raftState.value.pumpScheduled = false
            self.handleReadies()
        }
    }

    private func handleReadies() {
        let side = raftState.value
        guard !side.stopped else { return }
        var readies: [(GroupID, Group, Ready)] = []
        for id in side.groups.keys.sorted() {
            let g = side.groups[id]!
            guard g.node.hasReady else { continue }
            let rd = g.node.ready()
            // Committed entries are on disk already (Raft hands out only persisted ones): the apply loop
            // can run them while this turn's writes go out and sync.
            if rd.snapshot == nil { applyCommitted(rd.committedEntries, group: id) }
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
                    syncs.withLockedValue { $0 += 1 }
                    RuntimeMetrics.walSync.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started))
                }
            } catch {
                // Nothing of this batch may be acknowledged; the node stops rather than run on a broken disk.
                fail("cannot persist the Raft log: \(error)")
                side.stopped = true
                return
            }
        }
        for (id, g, rd) in readies {
            if let soft = rd.softState, soft.lead != noNode { RuntimeMetrics.leaderChanges(id).increment() }
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
            let confirmed = rd.readStates.compactMap { rs in side.pendingReads.removeValue(forKey: rs.requestID).map { (rs.index, $0) } }
            for (index, read) in confirmed { serve(read, at: index) }
            g.node.advance(rd)
        }
        pump()
    }

    /// Hands committed entries to the apply loop, with the writes proposed here that wait on them.
    private func applyCommitted(_ entries: [Entry], group: GroupID) {
        guard !entries.isEmpty else { return }
        let side = raftState.value
        var waiters: [LogIndex: PendingWrite] = [:]
        if side.pendingWrites[group]?.isEmpty == false {
            for e in entries {
                if let w = side.pendingWrites[group]!.removeValue(forKey: e.index) { waiters[e.index] = w }
            }
        }
        dispatchApply(group: group, entries: entries, waiters: waiters)
    }

    private func send(_ messages: [Message], group: GroupID) {
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

    // MARK: - Snapshot streaming

    /// Sends the snapshot file in pieces, pacing on the peer's backlog so a large database neither
    /// fills the transport queue nor holds the Raft loop. The message rides on every piece; the
    /// follower steps it once the last piece is on its disk.
    private func streamSnapshot(_ message: Message, group: GroupID) {
        let index = message.snapshot!.metadata.index, peer = message.to
        let key = "\(group)/\(peer)/\(index)"
        // Raft resends a snapshot that takes long; the transfer under way already carries it.
        guard outgoingSnapshots.withLockedValue({ $0.insert(key).inserted }) else { return }
        let path = snapshotPath(group, index), chunkBytes = config.snapshotChunkBytes
        Task {
            defer { _ = outgoingSnapshots.withLockedValue { $0.remove(key) } }
            do {
                let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
                defer { try? file.close() }
                let total = UInt64(try file.seekToEnd())
                try file.seek(toOffset: 0)
                var offset: UInt64 = 0
                var checksum: UInt32 = 0
                repeat {
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

    /// Writes a received piece on the receive loop (in arrival order); after the last one, with the
    /// file's checksum verified and the file durable, steps the snapshot message into the group.
    private func receiveSnapshotChunk(_ envelope: Envelope, _ chunk: SnapshotChunk) {
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
                    g.node.step(envelope.message)
                    self.pump()
                }
            case .success(false): break
            case .failure(let error):
                self.log("node \(self.config.nodeID) group \(group): receiving a snapshot failed: \(error)")
            }
        }
    }

    // MARK: - Apply loop

    /// Applies committed entries on the apply loop and answers the writes waiting on them (proposed
    /// here): they travel with the entries, so a write costs no extra trip to the apply loop.
    private func dispatchApply(group: GroupID, entries: [Entry], waiters: [LogIndex: PendingWrite]) {
        applyLoop.execute {
            let side = self.applyState.value
            if let why = self.failure {
                for w in waiters.values { w.promise.fail(RuntimeError.failed(why)) }
                return
            }
            guard let machine = side.machines[group] else {
                for w in waiters.values { w.promise.fail(RuntimeError.unknownGroup(group)) }
                return
            }
            let fresh = entries.filter { $0.index > machine.appliedIndex }
            // Entries a snapshot already covered: whether a write among them took effect is unknown here.
            for e in entries where e.index <= machine.appliedIndex { waiters[e.index]?.promise.fail(RuntimeError.outcomeUnknown) }
            guard !fresh.isEmpty else { return }
            let batch: [(index: LogIndex, change: SQLStateMachine.Change)] = fresh.map { e in
                if e.kind == .normal, !e.data.isEmpty, let cmd = SQLCommand(decoding: e.data) { return (e.index, .command(cmd)) }
                return (e.index, .empty(e.kind == .confChange ? ConfState(decoding: e.data) : nil))
            }
            side.bytesSinceSnapshot[group, default: 0] += fresh.reduce(0) { $0 + $1.data.count }
            let results: [[StatementResult]]
            let started = DispatchTime.now().uptimeNanoseconds
            do {
                results = try machine.apply(batch: batch)
            } catch {
                // Applying later entries over missing ones would make this replica diverge: stop instead.
                self.fail("group \(group): cannot apply entries \(fresh.first!.index)...\(fresh.last!.index): \(error)")
                for e in fresh { waiters[e.index]?.promise.fail(RuntimeError.failed(self.failure ?? "\(error)")) }
                return
            }
            let applied = DispatchTime.now().uptimeNanoseconds
            RuntimeMetrics.applyBatch.recordNanoseconds(Int64(applied - started))
            if !waiters.isEmpty {
                for (e, r) in zip(fresh, results) {
                    guard let pending = waiters[e.index] else { continue }
                    if pending.term != e.term {
                        pending.promise.fail(RuntimeError.proposalLost)
                    } else if let dropped = machine.droppedAt, e.index > dropped {
                        pending.promise.fail(RuntimeError.databaseDropped)
                    } else {
                        RuntimeMetrics.write.recordNanoseconds(Int64(applied &- pending.proposedNanos))
                        pending.promise.succeed((r, e.index))
                    }
                }
            }
            self.serveWaitingReads(group)
            self.maybeSnapshot(group)
        }
    }

    /// Every `snapshotEveryEntries` applied entries (or `snapshotEveryBytes`), copies the database on the snapshot thread, then
    /// compacts the log through the copy's index.
    private func maybeSnapshot(_ group: GroupID) {
        let side = applyState.value
        guard config.snapshotEveryEntries > 0, let machine = side.machines[group], !side.snapshotInProgress.contains(group),
              machine.appliedIndex >= (side.lastSnapshotIndex[group] ?? 0) + config.snapshotEveryEntries
                || (side.bytesSinceSnapshot[group] ?? 0) >= config.snapshotEveryBytes else { return }
        side.bytesSinceSnapshot[group] = 0
        side.snapshotInProgress.insert(group)
        let source = machine.path, temporary = snapshotDirectory + "/group-\(group).copying"
        let directory = snapshotDirectory
        snapshotPool.runIfActive(eventLoop: applyLoop) { () throws -> (index: LogIndex, conf: ConfState?) in
            let meta = try SQLStateMachine.writeSnapshot(of: source, to: temporary)
            guard rename(temporary, Self.snapshotPath(in: directory, group: group, index: meta.index)) == 0 else {
                throw RuntimeError.raft("cannot name the snapshot of group \(group)")
            }
            // The log is compacted past this snapshot next: its name must survive power loss first.
            try DurableFile.sync(directory)
            return meta
        }.whenComplete { result in
            let side = self.applyState.value
            side.snapshotInProgress.remove(group)
            switch result {
            case .success(let meta):
                side.lastSnapshotIndex[group] = max(side.lastSnapshotIndex[group] ?? 0, meta.index)
                self.raftLoop.execute { self.compact(group, through: meta.index, conf: meta.conf) }
            case .failure(let error):
                self.log("node \(self.config.nodeID) group \(group): snapshot failed: \(error)")
            }
        }
    }

    private func compact(_ group: GroupID, through index: LogIndex, conf: ConfState?) {
        let side = raftState.value
        guard let g = side.groups[group], index > g.storage.snapshotMetadata.index else { return }
        do {
            // No membership recorded in the database means none was applied since the last compaction point.
            try side.store.compact(group: group, through: index, confState: conf ?? g.storage.snapshotMetadata.confState)
            snapshotCounts.withLockedValue { $0.taken += 1 }
            removeSnapshots(of: group, before: index)
        } catch {
            log("node \(config.nodeID) group \(group): cannot compact the log through \(index): \(error)")
        }
    }

    /// Replaces the group's database with a snapshot received from the leader (already on disk).
    private func dispatchInstall(group: GroupID, index: LogIndex) {
        let file = snapshotPath(group, index)
        applyLoop.execute {
            let side = self.applyState.value
            guard let machine = side.machines[group], machine.appliedIndex < index else { return }
            do {
                try machine.install(snapshotFile: file)
            } catch {
                self.fail("group \(group): cannot install the snapshot at \(index): \(error)")
                return
            }
            side.lastSnapshotIndex[group] = index
            self.snapshotCounts.withLockedValue { $0.installed += 1 }
            self.removeSnapshots(of: group, before: index)
            self.serveWaitingReads(group)
        }
    }

    private func serveWaitingReads(_ group: GroupID) {
        let side = applyState.value
        guard let machine = side.machines[group], var waiting = side.waitingReads[group] else { return }
        let ready = waiting.filter { $0.index <= machine.appliedIndex }
        waiting.removeAll { $0.index <= machine.appliedIndex }
        side.waitingReads[group] = waiting
        for r in ready { run(r.request, on: machine.reads) }
    }

    /// Serves a read once the database has applied through `index`: at once if it has (from any
    /// thread), otherwise when the apply loop gets there.
    private func serve(_ read: ReadRequest, at index: LogIndex) {
        guard let reader = readers.withLockedValue({ $0[read.group] }) else {
            return read.promise.fail(RuntimeError.unknownGroup(read.group))
        }
        if reader.state.applied >= index { return run(read, on: reader) }
        applyLoop.execute {
            let side = self.applyState.value
            guard let machine = side.machines[read.group] else { return read.promise.fail(RuntimeError.unknownGroup(read.group)) }
            if machine.appliedIndex >= index {
                self.run(read, on: machine.reads)
            } else {
                side.waitingReads[read.group, default: []].append(WaitingRead(index: index, request: read))
            }
        }
    }

    /// Runs a read on the read pool, on a read connection of its own.
    private func run(_ read: ReadRequest, on reader: ReadConnections) {
        readPool.submit { state in
            guard case .active = state else { return read.promise.fail(RuntimeError.shutDown) }
            let at = reader.state
            if at.dropped != nil { return read.promise.fail(RuntimeError.databaseDropped) }
            read.promise.succeed((reader.query(read.statements, timeoutNanos: read.timeoutNanos), at.applied))
        }
    }

    // MARK: - Client operations

    /// Proposes a batch of statements and waits until it is applied here; returns each statement's result.
    public func execute(group: GroupID, _ command: SQLCommand) async throws -> [StatementResult] {
        try await executeIndexed(group: group, command).results
    }

    /// `execute`, also returning the log index the batch was committed at.
    public func executeIndexed(group: GroupID, _ command: SQLCommand) async throws -> (results: [StatementResult], index: LogIndex) {
        if let why = failure { throw RuntimeError.failed(why) }
        let timeout = TimeAmount.milliseconds(config.requestTimeoutMillis)
        // Proposed on the Raft loop, answered by the apply loop: one suspension, two hand-offs per write.
        let data = command.encoded()
        guard data.count <= config.maxEntryBytes else { throw RuntimeError.entryTooLarge(bytes: data.count, limit: config.maxEntryBytes) }
        let promise = applyLoop.makePromise(of: ([StatementResult], LogIndex).self)
        raftLoop.execute {
            guard let g = self.raftState.value.groups[group] else { return promise.fail(RuntimeError.unknownGroup(group)) }
            let index: LogIndex
            self.wake(group)
            do throws(RaftError) {
                index = try g.node.propose(data)
            } catch {
                if case .notLeader(let l) = error { return promise.fail(RuntimeError.notLeader(leader: l)) }
                return promise.fail(RuntimeError.raft(error.description))
            }
            self.raftState.value.pendingWrites[group, default: [:]][index] = PendingWrite(term: g.node.term, promise: promise, proposedNanos: DispatchTime.now().uptimeNanoseconds,
                                                                                      deadline: .now() + timeout)
            self.pump()
        }
        return try await promise.futureResult.get()
    }

    /// Fails writes and reads that waited past their deadline (every 100 ms, on each loop).
    private func sweepTimeouts() {
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
            for (id, r) in side.pendingReads where r.deadline < now {
                side.pendingReads[id] = nil
                r.promise.fail(RuntimeError.timedOut("confirming leadership for a linearizable read"))
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
        if let why = failure { throw RuntimeError.failed(why) }
        let timeout = TimeAmount.milliseconds(config.requestTimeoutMillis)
        if case .stale(let freshness) = consistency {
            try await raftLoop.submit {
                let side = self.raftState.value
                guard let g = side.groups[group] else { throw RuntimeError.unknownGroup(group) }
                if g.node.role == .leader { return }
                // A quiesced group hears nothing while nothing changes: its leader's node pinging is the contact.
                let contact = side.quiesced.contains(group) ? side.lastHeard[g.node.lead] : side.lastLeaderContact[group]
                let ageMillis = contact.map { Int64((DispatchTime.now().uptimeNanoseconds &- $0) / 1_000_000) }
                guard g.node.lead != noNode, let age = ageMillis, age <= freshness else {
                    throw RuntimeError.tooStale(lastContactMillis: ageMillis, freshnessMillis: freshness)
                }
            }.get()
        }
        // Confirmed on the Raft loop, served and answered by the apply loop: one suspension per read.
        let promise = applyLoop.makePromise(of: ([StatementResult], LogIndex).self)
        let statementTimeout = statementTimeoutNanos > 0 ? statementTimeoutNanos : UInt64(config.readTimeoutMillis) * 1_000_000
        let read = ReadRequest(group: group, statements: statements, timeoutNanos: statementTimeout,
                               deadline: .now() + timeout, promise: promise)
        if consistency == .linearizable {
            raftLoop.execute {
                let side = self.raftState.value
                guard let g = side.groups[group] else { return promise.fail(RuntimeError.unknownGroup(group)) }
                let id = side.nextRequestID
                side.nextRequestID += 1
                self.wake(group)
                do throws(RaftError) {
                    try g.node.readIndex(requestID: id)
                } catch {
                    return promise.fail(RuntimeError.notLeader(leader: g.node.lead))
                }
                side.pendingReads[id] = read
                self.pump()
            }
        } else {
            serve(read, at: 0)
        }
        return try await promise.futureResult.get()
    }

    /// Deletes this node's copy of a group (its database was dropped, or moved to other nodes): the
    /// log forgets it durably, then its database and snapshot files go. Requests waiting on it fail.
    public func retireGroup(_ id: GroupID) async throws {
        guard id != 0 else { throw RuntimeError.raft("the metadata group cannot be retired") }
        try await raftLoop.submit {
            let side = self.raftState.value
            guard side.groups[id] != nil else { return }
            try side.store.dropGroup(id)
            side.groups[id] = nil
            self.hosted.withLockedValue { _ = $0.remove(id) }
            side.quiesced.remove(id)
            side.idleTicks[id] = nil
            side.lastLeaderContact[id] = nil
            for (rid, r) in side.pendingReads where r.group == id {
                side.pendingReads[rid] = nil
                r.promise.fail(RuntimeError.unknownGroup(id))
            }
            for (_, w) in side.pendingWrites.removeValue(forKey: id) ?? [:] { w.promise.fail(RuntimeError.unknownGroup(id)) }
        }.get()
        let path = config.dataDirectory + "/group-\(id).sqlite"
        try await applyLoop.submit {
            let side = self.applyState.value
            self.readers.withLockedValue { _ = $0.removeValue(forKey: id) }
            self.consistencyRecords.withLockedValue { _ = $0.removeValue(forKey: id) }
            side.machines.removeValue(forKey: id)?.close()
            for r in side.waitingReads.removeValue(forKey: id) ?? [] { r.request.promise.fail(RuntimeError.unknownGroup(id)) }
            side.lastSnapshotIndex[id] = nil
            side.bytesSinceSnapshot[id] = nil
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            self.removeSnapshots(of: id, before: .max)
        }.get()
        log("node \(config.nodeID): deleted its copy of group \(id)")
    }

    /// Whether `sql` only reads, judged by SQLite against this node's copy of the group's schema, on a
    /// read connection (preparing client SQL never touches the connection that applies entries).
    public func isReadOnly(group: GroupID, _ sql: String) async throws -> Bool {
        guard let reader = readers.withLockedValue({ $0[group] }) else { throw RuntimeError.unknownGroup(group) }
        return try await readPool.runIfActive(eventLoop: applyLoop) { try reader.isReadOnly(sql) }.get()
    }

    /// Asks every replica of `group` for a digest at one entry, and then hands them the leader's
    /// (this node must lead the group): each replica compares, and one that differs reports itself
    /// diverged (`consistency(group:)`) and stops being ready. Returns the leader's digest.
    public func checkConsistency(group: GroupID) async throws -> ContentDigest {
        guard let record = consistencyRecords.withLockedValue({ $0[group] }) else { throw RuntimeError.unknownGroup(group) }
        let first = try await executeIndexed(group: group, .checkConsistency(expected: record.takeUnannounced().map { .init(index: $0.index, hash: $0.hash) }))
        // The digest is taken off the apply thread: wait for it (bounded), then announce it.
        let deadline = ContinuousClock.now + .milliseconds(config.requestTimeoutMillis)
        var digest = record.digest(at: first.index)
        while digest == nil && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
            digest = record.digest(at: first.index)
        }
        guard let digest else { throw RuntimeError.timedOut("taking the digest at entry \(first.index)") }
        _ = record.takeUnannounced()
        _ = try await executeIndexed(group: group, .checkConsistency(expected: .init(index: digest.index, hash: digest.hash)))
        return digest
    }

    /// How long the apply loop has been busy without a break (one entry, an install): while it is, no
    /// write on this node is applied and no query waiting for one is answered.
    public var applyLoopBusyMillis: Int64 {
        Int64((DispatchTime.now().uptimeNanoseconds &- applyLoopSeen.withLockedValue { $0 }) / 1_000_000)
    }

    /// What this replica knows of its agreement with the leader of `group`.
    public func consistency(group: GroupID) -> ConsistencyRecord.Summary? {
        consistencyRecords.withLockedValue { $0[group] }?.current
    }

    /// Test only: makes this replica of `group` diverge by running `sql` outside the log.
    public func divergeForTesting(group: GroupID, sql: String) async throws {
        try await applyLoop.submit {
            guard let machine = self.applyState.value.machines[group] else { throw RuntimeError.unknownGroup(group) }
            try machine.divergeForTesting(sql)
        }.get()
    }

    /// Leaders ask their groups for digests every `consistencyCheckMillis`.
    private func scheduleConsistencyChecks() {
        guard config.consistencyCheckMillis > 0 else { return }
        let every = TimeAmount.milliseconds(config.consistencyCheckMillis)
        raftLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { task in
            let side = self.raftState.value
            guard !side.stopped else { return task.cancel() }
            for (id, g) in side.groups where g.node.role == .leader {
                Task {
                    do {
                        _ = try await self.checkConsistency(group: id)
                    } catch {
                        self.log("node \(self.config.nodeID) group \(id): consistency check failed to run: \(error)")
                    }
                }
            }
        }
    }

    /// Writes a consistent copy of this node's database of `group` to `destination` (off the apply loop).
    public func backup(group: GroupID, to destination: String) async throws {
        guard try await groupIDs().contains(group) else { throw RuntimeError.unknownGroup(group) }
        let source = config.dataDirectory + "/group-\(group).sqlite"
        try await snapshotPool.runIfActive(eventLoop: applyLoop) {
            try SQLStateMachine.writeBackup(of: source, to: destination)
        }.get()
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
    }

    public func status(group: GroupID) async throws -> GroupStatus {
        try await raftLoop.submit {
            guard let g = self.raftState.value.groups[group] else { throw RuntimeError.unknownGroup(group) }
            let s = g.node.status
            return GroupStatus(role: s.role, term: s.term, leader: s.lead, commit: s.commit, applied: s.applied,
                               lastIndex: s.lastIndex, config: s.config, configIndex: s.configIndex,
                               firstIndex: s.firstIndex, matchIndex: s.progress.mapValues(\.match))
        }.get()
    }

    /// Whether this node holds `group` (a lock, no loop hop: for routing every request).
    public func hosts(_ group: GroupID) -> Bool { hosted.withLockedValue { $0.contains(group) } }

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
                try g.node.transferLeadership(to: target)
                self.pump()
            } catch {
                if case .notLeader(let l) = error { throw RuntimeError.notLeader(leader: l) }
                throw RuntimeError.raft(error.description)
            }
        }.get()
    }

    /// Groups that are quiesced on this node right now.
    public func quiescedGroups() async throws -> Set<GroupID> {
        try await raftLoop.submit { self.raftState.value.quiesced }.get()
    }

    /// Log syncs so far (each covers every group's writes of one loop turn).
    public var syncCount: Int { syncs.withLockedValue { $0 } }

    /// Snapshots this node took (each followed by a log compaction) and installed from a leader, and
    /// the pieces of snapshot files it streamed out and received.
    public var snapshotStats: (taken: Int, installed: Int, chunksSent: Int, chunksReceived: Int) { snapshotCounts.withLockedValue { $0 } }

    public func shutdown() async {
        try? await raftLoop.submit {
            let side = self.raftState.value
            side.stopped = true
            for (_, pending) in side.pendingReads { pending.promise.fail(RuntimeError.shutDown) }
            side.pendingReads = [:]
            for (_, writes) in side.pendingWrites { for (_, w) in writes { w.promise.fail(RuntimeError.shutDown) } }
            side.pendingWrites = [:]
        }.get()
        try? await applyLoop.submit {
            let side = self.applyState.value
            for (_, reads) in side.waitingReads { for r in reads { r.request.promise.fail(RuntimeError.shutDown) } }
            side.waitingReads = [:]
        }.get()
        await transport.shutdown()
        try? await snapshotPool.shutdownGracefully()
        try? await readPool.shutdownGracefully()
        try? await loops.shutdownGracefully()
    }
}

/// The runtime's metrics (swift-metrics; exported by whatever backend the process bootstrapped).
enum RuntimeMetrics {
    static let walSync = Timer(label: "cairn_wal_sync_seconds")
    /// One batch of committed entries applied to a group's database (one SQLite transaction).
    static let applyBatch = Timer(label: "cairn_apply_batch_seconds")
    /// A write on the node that proposed it, from the proposal to its result (commit and apply).
    static let write = Timer(label: "cairn_write_seconds")
    static func leaderChanges(_ group: GroupID) -> Counter {
        Counter(label: "cairn_raft_leader_changes_total", dimensions: [("group", String(group))])
    }
}
