@_spi(Mutants) import CairnRaft

/// How hard the nemesis hits. Each seed draws one unless `SimOptions.profile` fixes it.
public enum SimProfile: String, Sendable, CaseIterable {
    /// A fault every 100-400 ms.
    case calm
    /// A fault every 30-250 ms.
    case normal
    /// A fault every 5-60 ms: elections and faults overlap constantly.
    case chaotic
    /// Jepsen's "partition the leader", aimed: a node is often isolated or killed the moment it wins an
    /// election or first commits entries of earlier terms. This is what exposes the paper's Figure 8.
    case leaderHunting = "leader-hunting"

    var nemesisGapMs: ClosedRange<Int> {
        switch self {
        case .calm: return 100...400
        case .normal, .leaderHunting: return 30...250
        case .chaotic: return 5...60
        }
    }

    /// Chance to strike a node that just won an election, or whose commit just passed earlier terms' entries.
    var strikeOnElection: Double { self == .leaderHunting ? 0.5 : 0.05 }
    var strikeOnEarlierTermCommit: Double { self == .leaderHunting ? 0.6 : 0.1 }
}

public struct SimOptions: Sendable {
    /// The nemesis profile; nil lets the seed choose.
    public var profile: SimProfile? = nil
    /// Voters at the start (3 to 7). Membership changes may add learners and voters up to 7 members.
    public var nodes: Int = 5
    /// Virtual milliseconds of faults before everything heals.
    public var faultPhaseMs: UInt64 = 2_000
    /// After healing, a leader must be elected and a write committed within this many virtual milliseconds.
    public var livenessBoundMs: UInt64 = 4_000
    /// Concurrent clients; nil lets the seed choose 3, 5 or 8. Many clients give a cut-off leader a long
    /// uncommitted tail, which later leaders must replicate in several appends.
    public var clients: Int? = nil
    public var keys: Int = 4
    @_spi(Mutants) public var mutation: RaftMutation? = nil
    /// Keep a readable trace of the run (slower; used to replay a failing seed).
    public var trace: Bool = false

    public init() {}
}

public struct SimStats: Sendable {
    public var events = 0
    public var messagesDelivered = 0
    public var messagesDropped = 0
    public var crashes = 0
    public var restarts = 0
    public var pauses = 0
    public var slowDisks = 0
    public var partitions = 0
    public var lossyPeriods = 0
    public var confChangesProposed = 0
    public var confChangesApplied = 0
    public var transfers = 0
    public var compactions = 0
    public var snapshotsInstalled = 0
    public var leadersElected = 0
    public var writesAcked = 0
    public var writesUnknown = 0
    public var writesRefused = 0
    public var readsServed = 0
    public var readsFailed = 0
    public var followerReads = 0
    /// Reads a leader served or answered (a follower's ReadIndex) on its lease, without a heartbeat round.
    public var leaseReads = 0
    public var inconclusiveChecks = 0
    /// Leaders whose commit index advanced to an entry of an older term (only a broken core does this).
    public var oldTermCommits = 0
    public var virtualMs: UInt64 = 0

    public init() {}

    public var faults: Int { crashes + pauses + slowDisks + partitions + lossyPeriods }

    public mutating func add(_ o: SimStats) {
        events += o.events; messagesDelivered += o.messagesDelivered; messagesDropped += o.messagesDropped
        crashes += o.crashes; restarts += o.restarts; pauses += o.pauses; slowDisks += o.slowDisks; partitions += o.partitions
        lossyPeriods += o.lossyPeriods; confChangesProposed += o.confChangesProposed
        confChangesApplied += o.confChangesApplied; transfers += o.transfers; compactions += o.compactions
        snapshotsInstalled += o.snapshotsInstalled; leadersElected += o.leadersElected
        writesAcked += o.writesAcked; writesUnknown += o.writesUnknown; writesRefused += o.writesRefused
        readsServed += o.readsServed; readsFailed += o.readsFailed; followerReads += o.followerReads
        leaseReads += o.leaseReads
        inconclusiveChecks += o.inconclusiveChecks; oldTermCommits += o.oldTermCommits; virtualMs += o.virtualMs
    }
}

public struct SimResult: Sendable {
    public var seed: UInt64
    public var violation: String?
    public var stats: SimStats
    /// The last events before the violation (only when the run was traced).
    public var trace: [String]
}

/// One seeded run of a simulated cluster: nodes, network, clients and a nemesis, all in virtual time.
public final class Simulation {
    static let tickMs: UInt64 = 10
    static let maxMembers = 7
    static let maxNodeID: NodeID = 9

    enum Event {
        case tick(NodeID)
        case deliver(Message)
        case persisted(NodeID, epoch: UInt64)
        case resume(NodeID, epoch: UInt64)
        case restart(NodeID, epoch: UInt64)
        case clientStep(Int)
        case clientTimeout(Int, opID: UInt64)
        case nemesis
        /// The later steps of a strike on a lease (see `strikeLease`).
        case strikeLease(step: Int, leader: NodeID, follower: NodeID, candidate: NodeID)
        case heal
        case deadline
    }

    enum NodeState: Equatable { case up, crashed, paused(until: UInt64) }

    final class Node {
        let id: NodeID
        let storage: MemoryStorage
        var raw: RawNode?
        var state: NodeState = .up
        /// Bumped on crash so that events scheduled for the old incarnation are ignored.
        var epoch: UInt64 = 0
        var inFlight: Ready?
        var kv: [UInt64: UInt64] = [:]
        var applied: LogIndex = 0
        var appliedConf = ConfState()
        var readsAwaitingApply: [ReadState] = []
        /// When this incarnation sent each heartbeat round, in virtual time.
        var leaseClock = LeaseClock()
        /// Writes proposed through this node: log index -> (op id, client).
        var proposals: [LogIndex: (opID: UInt64, client: Int)] = [:]
        var commitChecked: LogIndex = 0
        /// Until this time every sync takes 10-80 ms (an fsync stall).
        var slowDiskUntil: UInt64 = 0

        init(id: NodeID, storage: MemoryStorage) {
            self.id = id
            self.storage = storage
        }
    }

    struct PendingOp {
        var opID: UInt64
        var key: UInt64
        var isWrite: Bool
        var node: NodeID
        var invoke: UInt64
        var historyIndex: Int?
    }

    struct Client {
        var pending: PendingOp?
        var leaderHint: NodeID = noNode
    }

    enum Phase { case faults, healed, finalReads, done }

    let seed: UInt64
    let options: SimOptions
    var rng: SimRandom
    var queue = EventQueue<Event>()
    var now: UInt64 = 0
    var nodes: [NodeID: Node] = [:]
    var clients: [Client]
    var history: [HistoryOp] = []
    /// Writes known not to have taken effect (another entry committed at their index).
    var refusedOps = Set<UInt64>()
    var orderSeq: UInt64 = 0
    var nextOpID: UInt64 = 1
    var stats = SimStats()
    var violation: String?
    var traceLines: [String] = []
    var phase = Phase.faults
    var healedAt: UInt64 = 0
    var finalReadKeys: [UInt64] = []
    /// Until then, clients only read: an idle spell, in which a node cut off from the leader stays
    /// as up to date as everyone else and can win an election.
    var writesQuietUntil: UInt64 = 0

    // Network faults: blocked directed links, loss, duplication, delay spikes.
    var blocked = Set<UInt64>()
    var dropRate = 0.0
    var duplicateRate = 0.0
    var delaySpikes = false
    /// Small limits split long log tails over several appends, as in the paper's Figure 8.
    let maxMessageBytes: Int
    let profile: SimProfile
    /// How long a client waits for an answer before it gives up (the outcome stays unknown).
    let clientTimeoutMs: UInt64 = 400

    // What the checks remember across the run.
    var leaderOfTerm: [Term: NodeID] = [:]
    /// What is known committed, per index: the entry's term and the earliest term in which a node
    /// observed it committed (the committing leader observes it first). Index 0 is a placeholder.
    var committed: [(entryTerm: Term, commitTerm: Term)] = [(0, 0)]
    var appliedEntry: [LogIndex: (term: Term, hash: UInt64)] = [:]
    var persistedEntry: [LogIndex: [Term: (hash: UInt64, prevTerm: Term?)]] = [:]

    public init(seed: UInt64, options: SimOptions) {
        precondition((3...7).contains(options.nodes), "the simulator runs 3 to 7 nodes")
        self.seed = seed
        self.options = options
        rng = SimRandom(seed: seed)
        let clientChoice = [3, 5, 8][Int(rng.next() % 3)]
        let clientCount = options.clients ?? clientChoice
        clients = Array(repeating: Client(), count: clientCount)
        maxMessageBytes = [128, 256, 1024, 65536][Int(rng.next() % 4)]
        let profileChoice = SimProfile.allCases[Int(rng.next() % UInt64(SimProfile.allCases.count))]
        profile = options.profile ?? profileChoice
    }

    // MARK: - Running

    public func run() -> SimResult {
        let initial = ConfState(voters: (1...NodeID(options.nodes)).map { $0 })
        for id in initial.voters {
            let node = Node(id: id, storage: MemoryStorage(bootstrap: initial))
            nodes[id] = node
            start(node)
            queue.push(.tick(id), at: UInt64(rng.int(0...Int(Self.tickMs - 1))))
        }
        for c in clients.indices { queue.push(.clientStep(c), at: UInt64(rng.int(0...20))) }
        queue.push(.nemesis, at: UInt64(rng.int(20...200)))
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
        return SimResult(seed: seed, violation: violation, stats: stats, trace: traceLines)
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

    private func raftConfig(_ id: NodeID, applied: LogIndex) -> RaftConfig {
        var c = RaftConfig(id: id, randomSeed: rng.next())
        c.appliedIndex = applied
        c.maxMessageBytes = maxMessageBytes
        c.maxInflightAppends = 8
        c.mutation = options.mutation
        return c
    }

    func start(_ node: Node) {
        // The state machine restarts from the durable snapshot; the log replays the rest.
        let snap = node.storage.snapshotValue
        node.kv = KVSnapshot.decode(snap.data)
        node.applied = snap.metadata.index
        node.appliedConf = snap.metadata.confState
        node.commitChecked = snap.metadata.index
        node.leaseClock = LeaseClock()
        do {
            node.raw = try RawNode(config: raftConfig(node.id, applied: node.applied), storage: node.storage)
        } catch {
            fail("node \(node.id) cannot restart from its storage: \(error)")
        }
    }

    func handle(_ event: Event) {
        switch event {
        case .tick(let id):
            queue.push(.tick(id), at: now + Self.tickMs)
            guard let node = nodes[id], node.state == .up, let raw = node.raw else { return }
            raw.tick()
            afterInput(node)
        case .deliver(let m):
            guard let node = nodes[m.to], node.state != .crashed, let raw = node.raw else {
                stats.messagesDropped += 1
                return
            }
            if case .paused(let until) = node.state {
                queue.push(.deliver(m), at: until + 1)
                return
            }
            if isBlocked(m.from, m.to) {
                stats.messagesDropped += 1
                return
            }
            stats.messagesDelivered += 1
            // Every node here is honest: a message the gate refuses is a bug in the sender or the gate.
            var leaseRunning = false
            if m.kind == .readIndex, let lease = validLease(node) {
                // A follower's read, answered on the lease: checked like a read served here.
                leaseRunning = true
                checkLeaseRead(node, lease)
                stats.leaseReads += 1
            }
            if let why = raw.step(m, leaseRunning: leaseRunning) {
                fail("node \(m.to) refused a message from node \(m.from): \(why) (\(m.kind), term \(m.term), index \(m.index))")
                return
            }
            afterInput(node)
        case .persisted(let id, let epoch):
            guard let node = nodes[id], node.epoch == epoch else { return }
            if case .paused(let until) = node.state {
                queue.push(.persisted(id, epoch: epoch), at: until + 1)
                return
            }
            finishPersist(node)
        case .resume(let id, let epoch):
            guard let node = nodes[id], node.epoch == epoch, case .paused = node.state else { return }
            node.state = .up
            trace("node \(id) resumes")
            afterInput(node)
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
            queue.push(.nemesis, at: now + UInt64(rng.int(profile.nemesisGapMs)))
        case .strikeLease(let step, let leader, let follower, let candidate):
            strikeLease(step: step, leader: leader, follower: follower, candidate: candidate)
        case .heal:
            heal()
        case .deadline:
            guard phase != .done else { return }
            let roles = nodes.keys.sorted().map { id -> String in
                let n = nodes[id]!
                return "\(id):\(n.state == .up ? (n.raw.map { "\($0.role.rawValue)@\($0.term)" } ?? "?") : "\(n.state)")"
            }.joined(separator: " ")
            var detail = ""
            if let leader = currentLeader, let st = leader.raw?.status {
                detail = "; leader \(leader.id) commit \(st.commit) last \(st.lastIndex) config \(st.config.voters)+\(st.config.learners)@\(st.configIndex) progress "
                    + st.progress.keys.sorted().map { "\($0):\(st.progress[$0]!.state.rawValue) m\(st.progress[$0]!.match) n\(st.progress[$0]!.next)" }.joined(separator: " ")
            }
            fail("liveness: \(options.livenessBoundMs)ms after healing, phase \(phase) not complete (leader elected and a write committed, then every key read); nodes \(roles)\(detail)")
        }
    }

    // MARK: - Driving a node

    /// After any input, check the node and hand its next Ready to "disk" and "network".
    func afterInput(_ node: Node) {
        guard let raw = node.raw else { return }
        checkNode(node)
        guard violation == nil, node.state == .up, node.inFlight == nil, raw.hasReady else { return }
        let rd = raw.ready()
        if let soft = rd.softState { trace("node \(node.id) is \(soft.role.rawValue) in term \(raw.term) (leader \(soft.lead))") }
        node.leaseClock.recordSent(rd.messages, atNanos: now * 1_000_000)
        for m in rd.messages { send(m) }
        node.inFlight = rd
        var syncMs: UInt64 = rd.mustSync ? UInt64(rng.int(1...3)) : 0
        if rd.mustSync && now < node.slowDiskUntil { syncMs = UInt64(rng.int(10...80)) }
        queue.push(.persisted(node.id, epoch: node.epoch), at: now + syncMs)
    }

    /// The write of a Ready reached the disk: make it durable, release the messages that waited for it, apply.
    func finishPersist(_ node: Node) {
        guard let rd = node.inFlight, let raw = node.raw else { return }
        node.inFlight = nil
        if let s = rd.snapshot { node.storage.applySnapshot(s) }
        if !rd.entries.isEmpty {
            node.storage.append(rd.entries)
            checkPersistedEntries(node, rd.entries)
        }
        if let hs = rd.hardState { node.storage.setHardState(hs) }
        for m in rd.messagesAfterPersist { send(m) }
        if let s = rd.snapshot {
            node.kv = KVSnapshot.decode(s.data)
            node.applied = s.metadata.index
            node.appliedConf = s.metadata.confState
            stats.snapshotsInstalled += 1
            trace("node \(node.id) installed snapshot at \(s.metadata.index)")
        }
        for e in rd.committedEntries { apply(e, at: node) }
        node.readsAwaitingApply.append(contentsOf: rd.readStates)
        raw.advance(rd)
        serveReads(node)
        if node.storage.lastIndex() > node.storage.firstIndex() + 400 { compact(node) }
        afterInput(node)
    }

    func apply(_ e: Entry, at node: Node) {
        guard violation == nil else { return }
        guard e.index == node.applied + 1 else {
            fail("node \(node.id) applied index \(e.index) after \(node.applied)")
            return
        }
        let h = payloadHash(e)
        if let seen = appliedEntry[e.index] {
            if seen.term != e.term || seen.hash != h {
                fail("state machine safety: node \(node.id) applied (term \(e.term)) at index \(e.index), another node applied (term \(seen.term))")
                return
            }
        } else {
            appliedEntry[e.index] = (e.term, h)
        }
        if Int(e.index) < committed.count, committed[Int(e.index)].entryTerm != 0, committed[Int(e.index)].entryTerm != e.term {
            fail("node \(node.id) applied term \(e.term) at \(e.index) but term \(committed[Int(e.index)].entryTerm) committed there")
            return
        }
        node.applied = e.index
        var appliedOp: UInt64 = 0
        switch e.kind {
        case .confChange:
            if let cs = ConfState(decoding: e.data) {
                node.appliedConf = cs
                if node.id == leaderOfTerm[e.term] || appliedEntry[e.index]?.term == e.term { stats.confChangesApplied += 1 }
                trace("node \(node.id) applied config \(cs.voters) learners \(cs.learners) at \(e.index)")
            }
        case .normal:
            if let cmd = KVCommand(decoding: e.data) {
                node.kv[cmd.key] = cmd.opID
                appliedOp = cmd.opID
            }
        }
        if let p = node.proposals.removeValue(forKey: e.index) {
            if appliedOp == p.opID {
                completeWrite(p.client, opID: p.opID)
            } else {
                // A different entry committed at this index: ours can never commit anywhere.
                refuseWrite(p.client, opID: p.opID)
            }
        }
    }

    func serveReads(_ node: Node) {
        guard !node.readsAwaitingApply.isEmpty else { return }
        var waiting: [ReadState] = []
        for rs in node.readsAwaitingApply {
            if rs.index > node.applied {
                waiting.append(rs)
                continue
            }
            guard let c = clients.indices.first(where: { clients[$0].pending?.opID == rs.requestID }),
                  let p = clients[c].pending, p.node == node.id else { continue }
            if node.raw?.role != .leader { stats.followerReads += 1 }
            completeRead(c, value: node.kv[p.key] ?? 0)
        }
        node.readsAwaitingApply = waiting
    }

    // MARK: - Network

    private func linkKey(_ from: NodeID, _ to: NodeID) -> UInt64 { from << 32 | to }

    func isBlocked(_ from: NodeID, _ to: NodeID) -> Bool { blocked.contains(linkKey(from, to)) }

    func send(_ m: Message) {
        if isBlocked(m.from, m.to) || rng.chance(dropRate) {
            stats.messagesDropped += 1
            return
        }
        queue.push(.deliver(m), at: now + messageDelay())
        if rng.chance(duplicateRate) { queue.push(.deliver(m), at: now + messageDelay()) }
    }

    private func messageDelay() -> UInt64 {
        var d = UInt64(rng.int(1...4))
        if delaySpikes && rng.chance(0.15) { d += UInt64(rng.int(20...120)) }
        return d
    }

    // MARK: - Checks after every step

    func checkNode(_ node: Node) {
        guard let raw = node.raw else { return }
        if let v = raw.invariantViolations.first {
            fail("node \(node.id) broke a core invariant: \(v)")
            return
        }
        if raw.role == .leader {
            if let other = leaderOfTerm[raw.term] {
                if other != node.id { fail("election safety: nodes \(other) and \(node.id) are both leaders of term \(raw.term)") }
            } else {
                leaderOfTerm[raw.term] = node.id
                stats.leadersElected += 1
                checkLeaderCompleteness(node)
                checkNoLeaseOutlives(newLeader: node)
                if violation == nil { targetedFault(node, chance: profile.strikeOnElection, moment: "won an election") }
            }
        }
        let commit = raw.status.commit
        if commit > node.commitChecked {
            var committedEarlierTerms = false
            for i in (node.commitChecked + 1)...commit {
                guard let t = raw.term(at: i) else { continue }
                if t < raw.term { committedEarlierTerms = true }
                while committed.count <= Int(i) { committed.append((0, 0)) }
                let known = committed[Int(i)]
                if known.entryTerm == 0 {
                    committed[Int(i)] = (t, raw.term)
                } else if known.entryTerm != t {
                    fail("committed entry changed: node \(node.id) has term \(t) at committed index \(i), term \(known.entryTerm) was committed there")
                    return
                } else if raw.term < known.commitTerm {
                    committed[Int(i)].commitTerm = raw.term
                }
            }
            node.commitChecked = commit
            if raw.role == .leader {
                if let t = raw.term(at: commit), t != raw.term { stats.oldTermCommits += 1 }
                // Right after a leader commits entries of earlier terms (its first commit, in a correct
                // core) is when a wrong commit rule would be exposed.
                targetedFault(node, chance: committedEarlierTerms ? profile.strikeOnEarlierTermCommit : 0.005, moment: "advanced its commit index")
            }
        }
    }

    /// Leader completeness: a leader of term T holds every entry committed in a term before T.
    func checkLeaderCompleteness(_ node: Node) {
        guard let raw = node.raw else { return }
        let st = raw.status
        for i in stride(from: Int(st.firstIndex), to: committed.count, by: 1) {
            let c = committed[i]
            guard c.entryTerm != 0, c.commitTerm < st.term else { continue }
            guard let t = raw.term(at: LogIndex(i)), t == c.entryTerm else {
                fail("leader completeness: node \(node.id), leader of term \(st.term), lacks entry \(i) (term \(c.entryTerm)) committed in term \(c.commitTerm)")
                return
            }
        }
    }

    /// The node's lease at this instant, if it holds one (by its own record of when it sent each round).
    /// A paused node is asked too: virtual time runs on while it is stopped, as a real clock does.
    func validLease(_ node: Node) -> LeaseRead? {
        guard node.state != .crashed, let raw = node.raw, let lease = raw.leaseRead else { return nil }
        let index = node.leaseClock.index(lease, nowNanos: now * 1_000_000, nanosPerTick: Self.tickMs * 1_000_000)
        return index == nil ? nil : lease
    }

    /// Lease safety, checked directly rather than left to show up as a stale read: while a node holds a
    /// valid read lease of term T, no node leads a later term.
    func checkNoLeaseOutlives(newLeader: Node) {
        guard let term = newLeader.raw?.term else { return }
        for id in nodes.keys.sorted() where id != newLeader.id {
            guard let other = nodes[id], let lease = validLease(other), lease.term < term else { continue }
            fail("lease safety: node \(newLeader.id) became leader of term \(term) while node \(id) still held a read lease of term \(lease.term)")
            return
        }
    }

    /// Before a read is served on `node`'s lease: no node has led a later term, even one that has
    /// since crashed or stepped down (with a correct core, no later leader can exist while a lease runs).
    func checkLeaseRead(_ node: Node, _ lease: LeaseRead) {
        guard let (term, leader) = leaderOfTerm.filter({ $0.key > lease.term }).min(by: { $0.key < $1.key }) else { return }
        fail("lease safety: node \(node.id) served a read on its lease of term \(lease.term) after node \(leader) led term \(term)")
    }

    /// Log matching: an entry identified by (index, term) has the same payload and the same predecessor
    /// term on every node that ever persisted it.
    func checkPersistedEntries(_ node: Node, _ entries: [Entry]) {
        var prevTerm: Term? = try? node.storage.term(at: entries[0].index - 1)
        for e in entries {
            let h = payloadHash(e)
            if let seen = persistedEntry[e.index]?[e.term] {
                if seen.hash != h {
                    fail("log matching: two different entries with index \(e.index) and term \(e.term)")
                    return
                }
                if let a = seen.prevTerm, let b = prevTerm, a != b {
                    fail("log matching: entry (\(e.index), term \(e.term)) follows term \(b) on node \(node.id) but term \(a) elsewhere")
                    return
                }
            } else {
                persistedEntry[e.index, default: [:]][e.term] = (h, prevTerm)
            }
            prevTerm = e.term
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
