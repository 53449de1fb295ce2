import CairnPlacement
@_spi(Mutants) import CairnRaft

/// Deliberately broken moves and splits: the sharded simulator must catch each.
@_spi(Mutants) public enum ShardMutation: String, Sendable, CaseIterable {
    /// A move removes the old copy before it adds the new one: the shard runs on RF - 1 voters meanwhile
    /// (the production planner's own broken variant, `PlacementMutation.removeBeforeAdd`).
    case removeBeforeAdd = "remove-before-add"
    /// A split hands the upper half to the child but the parent keeps accepting writes for it (its
    /// guard is not narrowed): a router with the old map writes where nobody will read.
    case splitKeepsParentGuard = "split-keeps-parent-guard"
    /// The child starts from the parent's last snapshot instead of its state at the split entry: the
    /// writes applied in between are lost.
    case splitChildFromSnapshot = "split-child-from-snapshot"
    /// A node that deletes its copy of a shard keeps nothing of it: a copy made there again votes as
    /// a brand-new member would, though a stale member may still count it as the old one.
    case forgetDeletedCopies = "forget-deleted-copies"
}

public struct ShardedSimOptions: Sendable {
    /// Nodes in the cluster (4 to 7); each shard is replicated on 3 of them.
    public var nodes: Int = 5
    /// Virtual milliseconds of faults, moves and splits before everything heals.
    public var faultPhaseMs: UInt64 = 3_000
    /// After healing: a write committed, every move finished and every key read within this bound.
    public var livenessBoundMs: UInt64 = 8_000
    /// Concurrent clients; nil lets the seed choose 3, 5 or 8.
    public var clients: Int? = nil
    /// Keys 0..<keys, spread over the shards' arcs; splits halve arcs down to a single key.
    public var keys: Int = 8
    @_spi(Mutants) public var mutation: ShardMutation? = nil
    public var trace = false

    public init() {}
}

public struct ShardedSimStats: Sendable {
    public var events = 0
    public var crashes = 0
    public var partitions = 0
    public var pauses = 0
    public var movesStarted = 0
    public var movesFinished = 0
    public var splitsProposed = 0
    public var splitsApplied = 0
    public var transfers = 0
    public var compactions = 0
    public var snapshotsInstalled = 0
    public var replicasRetired = 0
    public var leadersElected = 0
    public var writesAcked = 0
    public var writesUnknown = 0
    public var writesRefused = 0
    /// Writes a shard refused because their key had moved to another shard (the router's map was old).
    public var staleMapRefusals = 0
    public var readsServed = 0
    public var readsFailed = 0
    public var inconclusiveChecks = 0
    public var virtualMs: UInt64 = 0

    public init() {}

    public mutating func add(_ o: ShardedSimStats) {
        events += o.events; crashes += o.crashes; partitions += o.partitions; pauses += o.pauses
        movesStarted += o.movesStarted; movesFinished += o.movesFinished; splitsProposed += o.splitsProposed
        splitsApplied += o.splitsApplied; transfers += o.transfers; compactions += o.compactions
        snapshotsInstalled += o.snapshotsInstalled; replicasRetired += o.replicasRetired; leadersElected += o.leadersElected
        writesAcked += o.writesAcked; writesUnknown += o.writesUnknown; writesRefused += o.writesRefused
        staleMapRefusals += o.staleMapRefusals; readsServed += o.readsServed; readsFailed += o.readsFailed
        inconclusiveChecks += o.inconclusiveChecks; virtualMs += o.virtualMs
    }
}

public struct ShardedSimResult: Sendable {
    public var seed: UInt64
    public var violation: String?
    public var stats: ShardedSimStats
    public var trace: [String]
}

/// One seeded run of a sharded cluster in virtual time: several Raft groups (shards) hosted on a few
/// nodes, each owning an arc of the keys; moves (learner, catch-up, promote, remove) and splits (an
/// entry in the shard's own log) run during crashes, pauses and partitions. Checked: every group's Raft
/// safety, no leader's configuration with fewer than RF voters, every shard refusing keys outside its arc,
/// and the whole history (all shards) linearizable per key.
public final class ShardedSimulation {
    typealias ShardID = UInt64
    static let tickMs: UInt64 = 10
    static let replicationFactor = 3
    static let maxConcurrentMoves = 2

    enum Event {
        case tick(NodeID)
        case deliver(ShardID, Message)
        case persisted(NodeID, ShardID, serial: UInt64, epoch: UInt64)
        case resume(NodeID, epoch: UInt64)
        case restart(NodeID, epoch: UInt64)
        case clientStep(Int)
        case clientTimeout(Int, opID: UInt64)
        case nemesis
        case controller
        case heal
        case deadline
    }

    enum NodeState: Equatable { case up, crashed, paused(until: UInt64) }

    /// One node's copy of one shard: its Raft core, its durable log and the state machine.
    final class Replica {
        let shard: ShardID
        /// Distinguishes a copy from a later one of the same shard on the same node.
        let serial: UInt64
        let storage: MemoryStorage
        var raw: RawNode?
        var inFlight: Ready?
        var state = ShardState()
        var applied: LogIndex = 0
        var appliedConf = ConfState()
        var readsAwaitingApply: [ReadState] = []
        var proposals: [LogIndex: (opID: UInt64, client: Int)] = [:]
        var commitChecked: LogIndex = 0

        init(shard: ShardID, serial: UInt64, storage: MemoryStorage) {
            self.shard = shard
            self.serial = serial
            self.storage = storage
        }
    }

    final class SimNode {
        let id: NodeID
        var state: NodeState = .up
        var epoch: UInt64 = 0
        var replicas: [ShardID: Replica] = [:]
        /// Shards this node was removed from: a late message must not make it a copy again.
        var retired = Set<ShardID>()
        /// What a deleted copy leaves behind, kept durably for good: its term and vote, and its last
        /// entry (the vote floor of any later copy of the shard here).
        var tombstones: [ShardID: (hardState: HardState, last: LastEntry)] = [:]
        var slowDiskUntil: UInt64 = 0

        init(id: NodeID) { self.id = id }
    }

    struct PendingOp {
        var opID: UInt64
        var key: UInt64
        var isWrite: Bool
        var node: NodeID
        var shard: ShardID
        var invoke: UInt64
        var historyIndex: Int?
    }

    struct Client {
        var pending: PendingOp?
        /// The client's copy of the shard map: refreshed now and then, and whenever a shard refuses it.
        var map: [ShardID: Arc] = [:]
        var leaderHint: [ShardID: NodeID] = [:]
    }

    enum Phase { case faults, healed, finalReads, settling, done }

    let seed: UInt64
    let options: ShardedSimOptions
    var rng: SimRandom
    var queue = EventQueue<Event>()
    var now: UInt64 = 0
    var nodes: [NodeID: SimNode] = [:]
    var clients: [Client]
    var history: [HistoryOp] = []
    var refusedOps = Set<UInt64>()
    var orderSeq: UInt64 = 0
    var nextOpID: UInt64 = 1
    var nextSerial: UInt64 = 1
    var stats = ShardedSimStats()
    var violation: String?
    var traceLines: [String] = []
    var phase = Phase.faults
    var finalReadKeys: [UInt64] = []
    var blocked = Set<UInt64>()
    var dropRate = 0.0
    let maxMessageBytes: Int
    let clientTimeoutMs: UInt64 = 400

    // The catalog: an oracle here (the metadata group is not what this simulation tests).
    var arcs: [ShardID: Arc] = [:]
    var recordedSplits = Set<ShardID>()
    var pendingSplits: [ShardID: UInt64] = [:]
    var nextShard: ShardID = 1
    /// Each shard's copies as the catalog wants them: moves are `joining` and `leaving` entries.
    var placement: [ShardID: [NodeID: ReplicaState]] = [:]

    // What the checks remember, per shard.
    var leaderOfTerm: [ShardID: [Term: NodeID]] = [:]
    var appliedEntry: [ShardID: [LogIndex: (term: Term, hash: UInt64)]] = [:]
    var committedTerm: [ShardID: [LogIndex: Term]] = [:]

    public init(seed: UInt64, options: ShardedSimOptions) {
        precondition((4...7).contains(options.nodes), "the sharded simulator runs 4 to 7 nodes")
        precondition(options.keys >= 2)
        self.seed = seed
        self.options = options
        rng = SimRandom(seed: seed)
        let clientChoice = [3, 5, 8][Int(rng.next() % 3)]
        clients = Array(repeating: Client(), count: options.clients ?? clientChoice)
        maxMessageBytes = [256, 1024, 65536][Int(rng.next() % 3)]
    }

    // MARK: - Running

    public func run() -> ShardedSimResult {
        for id in 1...NodeID(options.nodes) {
            nodes[id] = SimNode(id: id)
            queue.push(.tick(id), at: UInt64(rng.int(0...Int(Self.tickMs - 1))))
        }
        // Two shards, each on three nodes the seed picks, each founded like a split's child: from a
        // snapshot at entry 1 that holds its arc.
        let half = UInt64(options.keys / 2)
        for (lo, hi) in [(UInt64(0), half), (half, UInt64(options.keys))] {
            let shard = nextShard
            nextShard += 1
            let voters = Array(rng.shuffled(nodes.keys.sorted()).prefix(Self.replicationFactor))
            arcs[shard] = Arc(lo: lo, hi: hi)
            placement[shard] = Dictionary(uniqueKeysWithValues: voters.map { ($0, .active) })
            for id in voters {
                found(shard, on: nodes[id]!, conf: ConfState(voters: voters), state: ShardState(arc: Arc(lo: lo, hi: hi), kv: [:]))
            }
            trace("shard \(shard) [\(lo), \(hi)) on \(voters.sorted())")
        }
        for c in clients.indices {
            clients[c].map = arcs
            queue.push(.clientStep(c), at: UInt64(rng.int(0...20)))
        }
        queue.push(.nemesis, at: UInt64(rng.int(20...200)))
        queue.push(.controller, at: 15)
        queue.push(.heal, at: options.faultPhaseMs)

        var eventsThisInstant = 0
        while violation == nil, phase != .done, let (time, event) = queue.pop() {
            eventsThisInstant = time == now ? eventsThisInstant + 1 : 0
            now = time
            stats.events += 1
            if eventsThisInstant > 20_000 {
                fail("livelock: over 20000 events at one virtual instant, the last \(event)")
                break
            }
            handle(event)
        }
        if violation == nil && phase == .done { checkHistory() }
        stats.virtualMs = now
        return ShardedSimResult(seed: seed, violation: violation, stats: stats, trace: traceLines)
    }

    func fail(_ message: String) {
        guard violation == nil else { return }
        violation = "t=\(now)ms: \(message)"
        trace("VIOLATION \(message)")
    }

    func trace(_ line: @autoclosure () -> String) {
        guard options.trace else { return }
        traceLines.append("[\(now)ms] \(line())")
        if traceLines.count > 200_000 { traceLines.removeFirst(100_000) }
    }

    /// A shard's first copy on a node, durable at once: a snapshot at entry 1 of term 1 holding `state`.
    func found(_ shard: ShardID, on node: SimNode, conf: ConfState, state: ShardState) {
        let storage = MemoryStorage()
        storage.applySnapshot(Snapshot(metadata: SnapshotMetadata(index: 1, term: 1, confState: conf), data: state.encoded()))
        let r = Replica(shard: shard, serial: nextSerial, storage: storage)
        nextSerial += 1
        node.replicas[shard] = r
        if node.state != .crashed { start(r, on: node) }
    }

    /// An empty copy (a move's new learner, or a founder that never applied its parent's split): the
    /// leader sends it a snapshot.
    @discardableResult
    func emptyCopy(_ shard: ShardID, on node: SimNode) -> Replica {
        node.retired.remove(shard)
        let storage = MemoryStorage()
        if let tomb = node.tombstones[shard], options.mutation != .forgetDeletedCopies {
            storage.setHardState(HardState(term: tomb.hardState.term, vote: tomb.hardState.vote))
        }
        let r = Replica(shard: shard, serial: nextSerial, storage: storage)
        nextSerial += 1
        node.replicas[shard] = r
        if node.state != .crashed { start(r, on: node) }
        return r
    }

    func start(_ r: Replica, on node: SimNode) {
        let snap = r.storage.snapshotValue
        r.state = ShardState(decoding: snap.data)
        r.applied = snap.metadata.index
        r.appliedConf = snap.metadata.confState
        r.commitChecked = snap.metadata.index
        r.readsAwaitingApply = []
        r.proposals = [:]
        r.inFlight = nil
        var c = RaftConfig(id: node.id, randomSeed: rng.next())
        c.appliedIndex = r.applied
        c.maxMessageBytes = maxMessageBytes
        c.maxInflightAppends = 8
        if options.mutation != .forgetDeletedCopies { c.voteFloor = node.tombstones[r.shard]?.last }
        do {
            r.raw = try RawNode(config: c, storage: r.storage)
        } catch {
            fail("node \(node.id) cannot start shard \(r.shard) from its storage: \(error)")
        }
    }

    func handle(_ event: Event) {
        switch event {
        case .tick(let id):
            queue.push(.tick(id), at: now + Self.tickMs)
            guard let node = nodes[id], node.state == .up else { return }
            for shard in node.replicas.keys.sorted() {
                guard let r = node.replicas[shard], let raw = r.raw else { continue }
                raw.tick()
                afterInput(node, r)
            }
        case .deliver(let shard, let m):
            guard let node = nodes[m.to], node.state != .crashed else { return }
            if case .paused(let until) = node.state {
                queue.push(.deliver(shard, m), at: until + 1)
                return
            }
            if isBlocked(m.from, m.to) { return }
            // A message for a shard this node has no copy of: it is a member the leader counts on
            // (a founder that never applied the split, its parent's copy having been replaced by a
            // snapshot), unless it was removed from the shard.
            if node.replicas[shard] == nil {
                guard arcs[shard] != nil, !node.retired.contains(shard) else { return }
                emptyCopy(shard, on: node)
                trace("node \(node.id) makes an empty copy of shard \(shard) for a message from node \(m.from)")
            }
            guard let r = node.replicas[shard], let raw = r.raw else { return }
            if let why = raw.step(m) {
                fail("shard \(shard): node \(m.to) refused a message from node \(m.from): \(why) (\(m.kind), term \(m.term), index \(m.index))")
                return
            }
            afterInput(node, r)
        case .persisted(let id, let shard, let serial, let epoch):
            guard let node = nodes[id], node.epoch == epoch, let r = node.replicas[shard], r.serial == serial else { return }
            if case .paused(let until) = node.state {
                queue.push(.persisted(id, shard, serial: serial, epoch: epoch), at: until + 1)
                return
            }
            finishPersist(node, r)
        case .resume(let id, let epoch):
            guard let node = nodes[id], node.epoch == epoch, case .paused = node.state else { return }
            node.state = .up
            trace("node \(id) resumes")
            for shard in node.replicas.keys.sorted() { if let r = node.replicas[shard] { afterInput(node, r) } }
        case .restart(let id, let epoch):
            guard let node = nodes[id], node.epoch == epoch, node.state == .crashed, phase == .faults else { return }
            restart(node)
        case .clientStep(let c):
            clientStep(c)
        case .clientTimeout(let c, let opID):
            guard let p = clients[c].pending, p.opID == opID else { return }
            completeUnknown(c)
        case .nemesis:
            guard phase == .faults else { return }
            nemesis()
            queue.push(.nemesis, at: now + UInt64(rng.int(30...250)))
        case .controller:
            controller()
            queue.push(.controller, at: now + 15)
        case .heal:
            heal()
        case .deadline:
            guard phase != .done else { return }
            let shards = arcs.keys.sorted().map { s -> String in
                let leader = leaderCopy(of: s).map { "leader \($0.node.id)" } ?? "no leader"
                return "\(s):\(leader)"
            }.joined(separator: ", ")
            fail("liveness: \(options.livenessBoundMs)ms after healing, phase \(phase) not complete (a write committed, every key read, every move finished); moving shards \(movingShards.map { s in "\(s): \(placement[s]!.keys.sorted().map { n in "\(n) \(placement[s]![n]!.rawValue)" })" }); shards \(shards)")
        }
    }

    // MARK: - Driving a copy

    func afterInput(_ node: SimNode, _ r: Replica) {
        guard let raw = r.raw else { return }
        check(node, r)
        guard violation == nil, node.state == .up, r.inFlight == nil, raw.hasReady else { return }
        let rd = raw.ready()
        if let soft = rd.softState { trace("shard \(r.shard): node \(node.id) is \(soft.role.rawValue) in term \(raw.term)") }
        for m in rd.messages { send(r.shard, m) }
        r.inFlight = rd
        var syncMs: UInt64 = rd.mustSync ? UInt64(rng.int(1...3)) : 0
        if rd.mustSync && now < node.slowDiskUntil { syncMs = UInt64(rng.int(10...80)) }
        queue.push(.persisted(node.id, r.shard, serial: r.serial, epoch: node.epoch), at: now + syncMs)
    }

    func finishPersist(_ node: SimNode, _ r: Replica) {
        guard let rd = r.inFlight, let raw = r.raw else { return }
        r.inFlight = nil
        if let s = rd.snapshot { r.storage.applySnapshot(s) }
        if !rd.entries.isEmpty { r.storage.append(rd.entries) }
        if let hs = rd.hardState { r.storage.setHardState(hs) }
        for m in rd.messagesAfterPersist { send(r.shard, m) }
        if let s = rd.snapshot {
            r.state = ShardState(decoding: s.data)
            r.applied = s.metadata.index
            r.appliedConf = s.metadata.confState
            stats.snapshotsInstalled += 1
            trace("shard \(r.shard): node \(node.id) installed a snapshot at \(s.metadata.index)")
        }
        for e in rd.committedEntries {
            apply(e, to: r, on: node)
            // A split may have made this node's copy of the child: it lives on its own from here.
            if violation != nil { return }
        }
        r.readsAwaitingApply.append(contentsOf: rd.readStates)
        raw.advance(rd)
        serveReads(r, on: node)
        if r.storage.lastIndex() > r.storage.firstIndex() + 300 { compact(r) }
        afterInput(node, r)
    }

    func apply(_ e: Entry, to r: Replica, on node: SimNode) {
        guard e.index == r.applied + 1 else {
            fail("shard \(r.shard): node \(node.id) applied index \(e.index) after \(r.applied)")
            return
        }
        let h = payloadHash(e)
        if let seen = appliedEntry[r.shard]?[e.index] {
            if seen.term != e.term || seen.hash != h {
                fail("state machine safety: shard \(r.shard), node \(node.id) applied (term \(e.term)) at \(e.index), another copy (term \(seen.term))")
                return
            }
        } else {
            appliedEntry[r.shard, default: [:]][e.index] = (e.term, h)
        }
        r.applied = e.index
        var appliedOp: UInt64 = 0
        var refusedOp: UInt64 = 0
        switch e.kind {
        case .confChange:
            if let cs = ConfState(decoding: e.data) { r.appliedConf = cs }
        case .normal:
            switch ShardCommand(decoding: e.data) {
            case .write(let opID, let key)?:
                // The guard: a key outside this shard's arc was routed with an old map.
                if r.state.arc.contains(key) {
                    r.state.kv[key] = opID
                    appliedOp = opID
                } else {
                    refusedOp = opID
                }
            case .split(let at, let child)?:
                applySplit(at: at, child: child, index: e.index, r, on: node)
            case nil:
                break
            }
        }
        if let p = r.proposals.removeValue(forKey: e.index) {
            if appliedOp == p.opID {
                completeWrite(p.client, opID: p.opID)
            } else {
                if refusedOp == p.opID {
                    stats.staleMapRefusals += 1
                    clients[p.client].map = arcs
                }
                refuseWrite(p.client, opID: p.opID)
            }
        }
    }

    /// The split entry, on every copy alike: the upper half of the arc, with its rows, becomes the
    /// child's founding snapshot on this node, and the parent keeps the lower half.
    func applySplit(at: UInt64, child: ShardID, index: LogIndex, _ r: Replica, on node: SimNode) {
        let arc = r.state.arc
        // A split proposed twice, or over a map that has changed since: nothing to do.
        guard at > arc.lo, at < arc.hi else { return }
        let source = options.mutation == .splitChildFromSnapshot ? ShardState(decoding: r.storage.snapshotValue.data) : r.state
        let upper = ShardState(arc: Arc(lo: at, hi: arc.hi), kv: source.kv.filter { at <= $0.key && $0.key < arc.hi })
        // As in production: never made again here once a copy of it was deleted (it would come back as a
        // founding voter with no memory); an empty copy and a snapshot instead, if it is wanted here.
        if node.replicas[child] == nil && node.tombstones[child] == nil {
            found(child, on: node, conf: r.appliedConf, state: upper)
        }
        if options.mutation != .splitKeepsParentGuard {
            r.state.arc = Arc(lo: arc.lo, hi: at)
            r.state.kv = r.state.kv.filter { $0.key < at }
        }
        if !recordedSplits.contains(child) {
            // The catalog records the new map once the split has committed (its first apply anywhere).
            recordedSplits.insert(child)
            arcs[r.shard] = Arc(lo: arc.lo, hi: at)
            arcs[child] = Arc(lo: at, hi: arc.hi)
            // The child is placed where its parent is, a move in progress included.
            placement[child] = placement[r.shard]
            if placement[child]!.values.contains(where: { $0 != .active }) { stats.movesStarted += 1 }
            pendingSplits[r.shard] = nil
            stats.splitsApplied += 1
            trace("shard \(r.shard) split at key \(at) (entry \(index)): child \(child) [\(at), \(arc.hi)) on \(r.appliedConf.voters)+\(r.appliedConf.learners)")
        }
    }

    func serveReads(_ r: Replica, on node: SimNode) {
        guard !r.readsAwaitingApply.isEmpty else { return }
        var waiting: [ReadState] = []
        for rs in r.readsAwaitingApply {
            if rs.index > r.applied {
                waiting.append(rs)
                continue
            }
            guard let c = clients.indices.first(where: { clients[$0].pending?.opID == rs.requestID }),
                  let p = clients[c].pending, p.node == node.id, p.shard == r.shard else { continue }
            if r.state.arc.contains(p.key) {
                completeRead(c, value: r.state.kv[p.key] ?? 0)
            } else {
                // The key moved to another shard: the read is refused, the client refreshes its map.
                stats.readsFailed += 1
                clients[c].map = arcs
                finishOp(c)
            }
        }
        r.readsAwaitingApply = waiting
    }

    func compact(_ r: Replica) {
        let index = r.applied
        guard index > r.storage.snapshotValue.metadata.index, index <= r.storage.lastIndex(), index >= r.storage.firstIndex() else { return }
        r.storage.createSnapshot(at: index, confState: r.appliedConf, data: r.state.encoded())
        let keep = LogIndex(rng.int(0...3))
        r.storage.compact(upTo: index > keep ? index - keep : index)
        stats.compactions += 1
    }

    // MARK: - Network

    func isBlocked(_ from: NodeID, _ to: NodeID) -> Bool { blocked.contains(from << 32 | to) }

    func send(_ shard: ShardID, _ m: Message) {
        if isBlocked(m.from, m.to) || rng.chance(dropRate) { return }
        queue.push(.deliver(shard, m), at: now + UInt64(rng.int(1...4)))
    }

    // MARK: - Checks

    func check(_ node: SimNode, _ r: Replica) {
        guard let raw = r.raw else { return }
        if let v = raw.invariantViolations.first {
            fail("shard \(r.shard): node \(node.id) broke a core invariant: \(v)")
            return
        }
        let st = raw.status
        if st.role == .leader {
            if let other = leaderOfTerm[r.shard]?[st.term] {
                if other != node.id { fail("election safety: nodes \(other) and \(node.id) both lead shard \(r.shard) in term \(st.term)") }
            } else {
                leaderOfTerm[r.shard, default: [:]][st.term] = node.id
                stats.leadersElected += 1
            }
            // A move never weakens a shard: its newest configuration keeps RF voters throughout.
            if st.config.voters.count < Self.replicationFactor {
                fail("shard \(r.shard) weakened by a move: its leader's configuration has \(st.config.voters.count) voters \(st.config.voters), fewer than RF \(Self.replicationFactor)")
                return
            }
        }
        if st.commit > r.commitChecked {
            for i in (r.commitChecked + 1)...st.commit {
                guard let t = raw.term(at: i) else { continue }
                if let known = committedTerm[r.shard]?[i] {
                    if known != t {
                        fail("shard \(r.shard): committed entry \(i) changed: node \(node.id) has term \(t), term \(known) committed there")
                        return
                    }
                } else {
                    committedTerm[r.shard, default: [:]][i] = t
                }
            }
            r.commitChecked = st.commit
        }
    }

    func checkHistory() {
        switch LinearizabilityChecker.check(history.filter { !refusedOps.contains($0.opID) }) {
        case .linearizable: break
        case .violation(_, let detail): fail("linearizability: \(detail)")
        case .inconclusive: stats.inconclusiveChecks += 1
        }
    }
}

/// A half-open range of keys.
struct Arc: Equatable {
    var lo: UInt64
    var hi: UInt64

    func contains(_ key: UInt64) -> Bool { lo <= key && key < hi }
}

/// A shard's state machine: the arc it owns and its rows. An empty copy owns nothing until its first snapshot.
struct ShardState: Equatable {
    var arc = Arc(lo: 0, hi: 0)
    var kv: [UInt64: UInt64] = [:]

    init(arc: Arc = Arc(lo: 0, hi: 0), kv: [UInt64: UInt64] = [:]) {
        self.arc = arc
        self.kv = kv
    }

    init(decoding bytes: [UInt8]) {
        var c = 0
        guard let lo = ByteCoding.readUInt64(bytes, &c), let hi = ByteCoding.readUInt64(bytes, &c) else { return }
        arc = Arc(lo: lo, hi: hi)
        kv = KVSnapshot.decode(Array(bytes[c...]))
    }

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        ByteCoding.append(arc.lo, to: &out)
        ByteCoding.append(arc.hi, to: &out)
        return out + KVSnapshot.encode(kv)
    }
}

/// A shard's log entries: a client's write, or a split.
enum ShardCommand: Equatable {
    case write(opID: UInt64, key: UInt64)
    case split(at: UInt64, child: UInt64)

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        switch self {
        case .write(let opID, let key):
            out.append(0)
            ByteCoding.append(opID, to: &out)
            ByteCoding.append(key, to: &out)
        case .split(let at, let child):
            out.append(1)
            ByteCoding.append(at, to: &out)
            ByteCoding.append(child, to: &out)
        }
        return out
    }

    init?(decoding bytes: [UInt8]) {
        guard bytes.count == 17 else { return nil }
        var c = 1
        guard let a = ByteCoding.readUInt64(bytes, &c), let b = ByteCoding.readUInt64(bytes, &c) else { return nil }
        switch bytes[0] {
        case 0: self = .write(opID: a, key: b)
        case 1: self = .split(at: a, child: b)
        default: return nil
        }
    }
}
