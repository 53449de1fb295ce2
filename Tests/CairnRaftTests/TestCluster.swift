@_spi(Mutants) import CairnRaft

/// A synchronous cluster for unit tests: every node persists and applies its Ready at once, and
/// messages wait in `inFlight` until the test delivers, drops or holds them.
final class TestCluster {
    var nodes: [NodeID: RawNode] = [:]
    var storages: [NodeID: MemoryStorage] = [:]
    var applied: [NodeID: [Entry]] = [:]
    var readStates: [NodeID: [ReadState]] = [:]
    var inFlight: [Message] = []
    /// Every message ever sent, for assertions about traffic.
    var sent: [Message] = []
    /// Nodes whose traffic is dropped in both directions.
    var isolated = Set<NodeID>()
    private let configure: (inout RaftConfig) -> Void

    init(voters: [NodeID], learners: [NodeID] = [], configure: @escaping (inout RaftConfig) -> Void = { _ in }) {
        self.configure = configure
        let conf = ConfState(voters: voters, learners: learners)
        for id in conf.members { start(id, storage: MemoryStorage(bootstrap: conf)) }
    }

    func config(for id: NodeID, applied: LogIndex = 0) -> RaftConfig {
        var c = RaftConfig(id: id, randomSeed: 42)
        c.appliedIndex = applied
        configure(&c)
        return c
    }

    /// Starts (or restarts) a node on `storage`.
    func start(_ id: NodeID, storage: MemoryStorage) {
        storages[id] = storage
        nodes[id] = try! RawNode(config: config(for: id, applied: storage.snapshotValue.metadata.index), storage: storage)
        applied[id, default: []] = []
    }

    /// Loses the node's volatile state; its storage (all of it synced in this harness) survives.
    func restart(_ id: NodeID) {
        nodes[id] = try! RawNode(config: config(for: id, applied: storages[id]!.snapshotValue.metadata.index),
                                 storage: storages[id]!)
    }

    func node(_ id: NodeID) -> RawNode { nodes[id]! }

    /// Persists, sends and applies everything the node has ready.
    func process(_ id: NodeID) {
        guard let n = nodes[id] else { return }
        while n.hasReady {
            let rd = n.ready()
            let storage = storages[id]!
            if let s = rd.snapshot {
                storage.applySnapshot(s)
                applied[id, default: []].removeAll()
            }
            storage.append(rd.entries)
            if let hs = rd.hardState { storage.setHardState(hs) }
            for m in rd.messages + rd.messagesAfterPersist { send(m) }
            applied[id, default: []].append(contentsOf: rd.committedEntries)
            readStates[id, default: []].append(contentsOf: rd.readStates)
            n.advance(rd)
        }
    }

    func send(_ m: Message) {
        sent.append(m)
        if isolated.contains(m.from) || isolated.contains(m.to) { return }
        inFlight.append(m)
    }

    func processAll() { for id in nodes.keys.sorted() { process(id) } }

    /// Delivers in-flight messages (those matching `filter`; the rest are dropped) until none are left.
    func stabilize(maxRounds: Int = 1000, filter: (Message) -> Bool = { _ in true }) {
        processAll()
        var rounds = 0
        while !inFlight.isEmpty {
            rounds += 1
            precondition(rounds < maxRounds, "cluster did not stabilize")
            let batch = inFlight
            inFlight = []
            for m in batch where filter(m) && !isolated.contains(m.to) && !isolated.contains(m.from) {
                guard let n = nodes[m.to] else { continue }
                n.step(m)
                process(m.to)
            }
            processAll()
        }
    }

    /// Delivers only the in-flight messages matching `filter`, once; keeps the others in flight.
    func deliver(_ filter: (Message) -> Bool) {
        processAll()
        let batch = inFlight
        inFlight = batch.filter { !filter($0) }
        for m in batch where filter(m) {
            nodes[m.to]?.step(m)
            process(m.to)
        }
    }

    func drop(_ filter: (Message) -> Bool) { inFlight.removeAll(where: filter) }

    func tick(_ id: NodeID, times: Int = 1) {
        for _ in 0..<times {
            node(id).tick()
            process(id)
        }
    }

    func tickAll(times: Int = 1) {
        for _ in 0..<times {
            for id in nodes.keys.sorted() { node(id).tick() }
            stabilize()
        }
    }

    /// Ticks only `id` until it campaigns, then lets the election run.
    func elect(_ id: NodeID) {
        let electionTicks = config(for: id).electionTimeoutTicks
        for _ in 0..<(2 * electionTicks) {
            tick(id)
            if node(id).role != .follower { break }
        }
        stabilize()
        precondition(node(id).role == .leader, "node \(id) did not win: role \(node(id).role)")
    }

    /// Starts an election on `id` at once, as a leader transfer does (ignoring followers' leases).
    func forceElection(_ id: NodeID) {
        for _ in 0..<3 where node(id).role != .leader {
            node(id).forceCampaign()
            stabilize()
        }
        precondition(node(id).role == .leader, "node \(id) did not win a forced election")
    }

    /// Runs a forced election delivering only votes: the winner's first appends stay in flight.
    /// Returns whether `id` won.
    @discardableResult
    func campaignOnly(_ id: NodeID) -> Bool {
        node(id).forceCampaign()
        process(id)
        deliver { $0.kind == .vote }
        deliver { $0.kind == .voteResponse }
        return node(id).role == .leader
    }

    @discardableResult
    func propose(_ id: NodeID, _ text: String) -> LogIndex {
        let index = try! node(id).propose(Array(text.utf8))
        process(id)
        return index
    }

    func appliedTexts(_ id: NodeID) -> [String] {
        applied[id, default: []].filter { $0.kind == .normal && !$0.data.isEmpty }.map { String(decoding: $0.data, as: UTF8.self) }
    }

    var leaders: [NodeID] { nodes.keys.sorted().filter { nodes[$0]!.role == .leader } }
}
