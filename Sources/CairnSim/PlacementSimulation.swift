import CairnRaft
@_spi(Mutants) import CairnPlacement

/// What one seeded run of the placement simulator saw.
public struct PlacementSimResult: Sendable {
    public var seed: UInt64
    public var violation: String?
    public var trace: [String] = []
    /// Joins measured alone (no other event under way), the moves they caused, and the ideal
    /// RF·S/(N+1) summed over them.
    public var joins = 0, joinMoves = 0
    public var joinIdeal = 0.0
    /// Deaths measured alone, the replicas the dead nodes held, and the copies made for them.
    public var deaths = 0, deadReplicas = 0, deathCopies = 0
    /// Deaths after which survivors already holding most of the dead node's groups could not take
    /// their share of its copies, so that balancing moves followed; and those moves.
    public var deathsRebalanced = 0, deathRebalances = 0
    /// Convergences checked, and the worst max/mean replica count seen at one with m ≥ 10.
    public var convergences = 0
    public var worstSpreadAtTen = 1.0
    /// The widest gap between live nodes' leader counts seen at a convergence.
    public var worstLeaderSpread = 0
    public var ticks = 0

    public init(seed: UInt64) { self.seed = seed }

    public mutating func add(_ r: PlacementSimResult) {
        joins += r.joins; joinMoves += r.joinMoves; joinIdeal += r.joinIdeal
        deaths += r.deaths; deadReplicas += r.deadReplicas; deathCopies += r.deathCopies
        deathsRebalanced += r.deathsRebalanced; deathRebalances += r.deathRebalances
        convergences += r.convergences; ticks += r.ticks
        worstSpreadAtTen = max(worstSpreadAtTen, r.worstSpreadAtTen)
        worstLeaderSpread = max(worstLeaderSpread, r.worstLeaderSpread)
    }
}

/// The placement simulator (sharding-design §5.2, like PD's pd-simulator and CockroachDB's asim): the
/// rebalancer, the liveness rule and every group leader's membership plan, driven as the cluster
/// drives them, over seeded joins, drains, deaths and returns of 3-20 nodes holding 16-256 groups,
/// in virtual time. Snapshots take a random number of ticks; a group changes membership only while a
/// majority of its voters is up. Checked on every tick:
/// - never two copies of a group on one node, and copies only placed on live nodes;
/// - a move never leaves a group fewer voters than its target (add, catch up, promote, then remove);
/// - snapshots in and out per node, and moves cluster-wide, within their limits;
/// - no rebalancing while a group is below its replication factor; no one declared dead by a
///   metadata leader that has not watched for `deadAfter`.
/// At every convergence: counts within one of each other, max/mean ≤ 1.1 when m = RF·S/N ≥ 10, and
/// nothing moves for 20 more ticks. For a join alone: every move onto the new node, at most
/// ⌈RF·S/(N+1)⌉ + 1 of them. For a death alone: exactly the dead node's replicas copied, nothing else.
public enum PlacementSimulation {
    public static let replicationFactor = 3
    static let suspectTicks = 10, deadTicks = 30
    static let tickNanos: UInt64 = 1_000_000_000

    @_spi(Mutants) public static func run(seed: UInt64, mutation: PlacementMutation? = nil, trace: Bool = false) -> PlacementSimResult {
        var sim = Run(seed: seed, mutation: mutation, tracing: trace)
        sim.main()
        return sim.result
    }

    public struct Summary: Sendable {
        public var seeds = 0
        public var failures: [PlacementSimResult] = []
        public var totals = PlacementSimResult(seed: 0)
        public init() {}
    }

    @_spi(Mutants) public static func runSeeds(start: UInt64, count: Int, mutation: PlacementMutation? = nil, maxFailures: Int = .max) -> Summary {
        var summary = Summary()
        for i in 0..<count {
            let r = run(seed: start + UInt64(i), mutation: mutation)
            summary.seeds += 1
            summary.totals.add(r)
            if r.violation != nil {
                summary.failures.append(r)
                if summary.failures.count >= maxFailures { break }
            }
        }
        return summary
    }

    struct Node {
        var up = true
        var downSince = 0
        /// What the catalog records: live, draining or dead.
        var recorded = NodeState.live
    }

    struct Group {
        var replicas: [NodeID: ReplicaState]
        var voters: Set<NodeID>
        var learners: Set<NodeID> = []
        /// When each learner's snapshot finishes (it has caught up once then, if its node is up).
        var caughtUpAt: [NodeID: Int] = [:]
        var leader: NodeID
    }

    struct Failure: Error { let message: String }

    struct Run {
        var rng: SimRandom
        let mutation: PlacementMutation?
        let tracing: Bool
        var result: PlacementSimResult
        var nodes: [NodeID: Node] = [:]
        var removed = Set<NodeID>()
        var groups: [GroupID: Group] = [:]
        var tick = 0
        var observedSince = 0
        var nextNode: NodeID = 1
        /// Bumped by every catalog change, so an unchanged catalog is known without comparing it.
        var catalogVersion = 0
        /// Groups whose leader has something to do (`busy`); every other group is in step with the catalog.
        var busyGroups = Set<GroupID>()
        /// Some leadership was handed over in the last tick.
        var leadersMoved = false
        var membershipChanges = 0
        var lastLeaderLook = (-1, -1, -1)
        var upNodes: Int { nodes.values.count(where: \.up) }
        var lastEmptyPlan: PlanInputs?
        let limits: PlacementLimits
        let shards: Int

        init(seed: UInt64, mutation: PlacementMutation?, tracing: Bool) {
            rng = SimRandom(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ 0x5bd1_e995)
            self.mutation = mutation
            self.tracing = tracing
            result = PlacementSimResult(seed: seed)
            var limits = PlacementLimits(replicationFactor: PlacementSimulation.replicationFactor)
            limits.mutation = mutation
            self.limits = limits
            shards = [16, 32, 64, 128, 256][rng.int(0...4)]
        }

        /// A class, so that logging is not a mutation of the run (its lines close over the run's state).
        final class Trace { var lines: [String] = [] }
        let traceLines = Trace()

        func log(_ line: @autoclosure () -> String) {
            if tracing { traceLines.lines.append("t\(tick) \(line())") }
        }

        mutating func main() {
            let n = rng.int(3...20)
            for _ in 0..<n { addNode() }
            let founders = Placement.founders(groups: shards, replicationFactor: limits.replicationFactor,
                                              load: Dictionary(uniqueKeysWithValues: nodes.keys.map { ($0, 0) }))
            for (i, f) in founders.enumerated() {
                groups[GroupID(i + 1)] = Group(replicas: Dictionary(uniqueKeysWithValues: f.map { ($0, .active) }), voters: Set(f), leader: f[0])
            }
            log("start: \(n) nodes, \(shards) groups, RF \(limits.replicationFactor)")
            do {
                try converge(measure: nil)
                var calm = true
                for _ in 0..<6 {
                    let overlap = rng.chance(0.3)
                    guard let event = pickEvent() else { break }
                    // Measured only when it starts from a converged cluster and runs alone.
                    let before = calm && !overlap ? snapshotForMeasure(event) : nil
                    calm = !overlap
                    try apply(event)
                    if overlap {
                        // The next event lands while this one's moves are under way: safety only.
                        for _ in 0..<rng.int(0...20) { try step() }
                    } else {
                        try converge(measure: before)
                    }
                }
                try converge(measure: nil)
            } catch let f as Failure {
                result.violation = f.message
                log("VIOLATION: \(f.message)")
            } catch {
                result.violation = "\(error)"
            }
            result.ticks = tick
            result.trace = traceLines.lines
        }

        mutating func addNode() {
            nodes[nextNode] = Node()
            nextNode += 1
        }

        enum Event { case join, drain(NodeID), die(NodeID), back(NodeID), metaLeaderChange }

        var upLive: [NodeID] { nodes.keys.filter { nodes[$0]!.up && nodes[$0]!.recorded == .live }.sorted() }

        mutating func pickEvent() -> Event? {
            var options: [Event] = []
            if nodes.count < 20 { options.append(.join) }
            let live = upLive
            // Never take a group below a majority: one node down at a time, and only once every
            // group is whole again.
            let allWhole = groups.values.allSatisfy { g in g.voters.allSatisfy { nodes[$0]?.up == true } && g.learners.isEmpty }
            if live.count > limits.replicationFactor + 1 {
                options.append(.drain(rng.pick(live)))
                if allWhole && nodes.values.allSatisfy(\.up) { options.append(.die(rng.pick(live))) }
            }
            let down = nodes.keys.filter { !nodes[$0]!.up }.sorted()
            if !down.isEmpty { options.append(.back(rng.pick(down))) }
            options.append(.metaLeaderChange)
            return options.isEmpty ? nil : rng.pick(options)
        }

        enum Measure { case join(new: NodeID, nodesBefore: Int), die(NodeID, held: Int) }

        func snapshotForMeasure(_ e: Event) -> Measure? {
            switch e {
            case .join: return .join(new: nextNode, nodesBefore: nodes.values.count { $0.recorded == .live })
            case .die(let n): return .die(n, held: groups.values.count { $0.replicas[n] != nil })
            default: return nil
            }
        }

        mutating func apply(_ e: Event) throws {
            switch e {
            case .join:
                log("join node \(nextNode)")
                addNode()
            case .drain(let n):
                log("drain node \(n)")
                nodes[n]!.recorded = .draining
            case .die(let n):
                log("node \(n) goes down")
                nodes[n]!.up = false
                nodes[n]!.downSince = tick
            case .back(let n):
                log("node \(n) comes back")
                nodes[n]!.up = true
            case .metaLeaderChange:
                log("a new metadata leader starts observing")
                observedSince = tick
            }
        }

        /// Steps until nothing is under way and the plan is empty, then checks balance and stability.
        mutating func converge(measure: Measure?) throws {
            var moves: [PlacementStep] = []
            let limit = tick + 20_000
            while true {
                // Settled before the tick too: its plan then saw the settled state.
                let calm = settled
                let steps = try step()
                moves += steps
                let now = settled
                if calm && steps.isEmpty && now { break }
                guard tick < limit else { throw Failure(message: "did not converge within 20,000 ticks") }
            }
            result.convergences += 1
            let live = nodes.keys.filter { nodes[$0]!.recorded == .live && nodes[$0]!.up }.sorted()
            let counts = live.map { n in groups.values.count { $0.replicas[n] != nil } }
            log("converged: replicas per live node \(zip(live, counts).map { "\($0.0):\($0.1)" }.joined(separator: " "))")
            if let hi = counts.max(), let lo = counts.min() {
                guard hi - lo <= 1 else { throw Failure(message: "converged unbalanced: counts from \(lo) to \(hi)") }
                let mean = Double(counts.reduce(0, +)) / Double(counts.count)
                if mean >= 10 {
                    result.worstSpreadAtTen = max(result.worstSpreadAtTen, Double(hi) / mean)
                    guard Double(hi) / mean <= 1.1 else { throw Failure(message: "max/mean \(Double(hi) / mean) > 1.1 at m = \(mean)") }
                }
            }
            var leading: [NodeID: Int] = Dictionary(uniqueKeysWithValues: live.map { ($0, 0) })
            for g in groups.values where leading[g.leader] != nil { leading[g.leader]! += 1 }
            if let hi = leading.values.max(), let lo = leading.values.min() {
                // Within one of each other, so within one of the mean.
                result.worstLeaderSpread = max(result.worstLeaderSpread, hi - lo)
                guard hi - lo <= 1 else { throw Failure(message: "converged with leader counts from \(lo) to \(hi)") }
            }
            for _ in 0..<20 {
                let later = try step()
                guard later.isEmpty else { throw Failure(message: "moved after convergence: \(later)") }
            }
            switch measure {
            case .join(let new, let before)?:
                let ideal = Double(limits.replicationFactor * shards) / Double(before + 1)
                result.joins += 1
                result.joinMoves += moves.count
                result.joinIdeal += ideal
                for m in moves {
                    guard case .move(_, _, let to) = m, to == new else { throw Failure(message: "a join's step \(m) did not go to the new node \(new)") }
                }
                guard Double(moves.count) <= ideal.rounded(.up) + 1 else {
                    throw Failure(message: "a join moved \(moves.count) replicas; ideal \(ideal)")
                }
            case .die(let n, let held)?:
                let copies = moves.count { if case .add = $0 { return true } else { return false } }
                result.deaths += 1
                result.deadReplicas += held
                result.deathCopies += copies
                let others = moves.count { if case .move = $0 { return true } else { return false } }
                result.deathRebalances += others
                if others > 0 { result.deathsRebalanced += 1 }
                guard copies == held else {
                    throw Failure(message: "node \(n) held \(held) replicas; its death made \(copies) copies")
                }
            case nil: break
            }
        }

        /// Nothing under way: every group's membership is its catalog entry, no node drains with copies.
        var settled: Bool {
            busyGroups.isEmpty && !leadersMoved && lastLeaderLook == (catalogVersion, membershipChanges, upNodes)
                && !nodes.values.contains { $0.recorded == .draining }
                && !nodes.contains { !$0.value.up && $0.value.recorded != .dead }
        }

        /// One tick: liveness, the plan and its checks, then every group leader's next change.
        @discardableResult
        mutating func step() throws -> [PlacementStep] {
            tick += 1
            let settings = LivenessSettings(suspectAfterNanos: UInt64(suspectTicks) * tickNanos, deadAfterNanos: UInt64(deadTicks) * tickNanos)
            let observed = UInt64(tick - observedSince) * tickNanos
            var states: [NodeID: NodeState] = [:]
            for (id, node) in nodes.sorted(by: { $0.key < $1.key }) {
                let silent: UInt64? = node.up ? 0 : UInt64(tick - node.downSince) * tickNanos
                let state = Liveness.state(silentNanos: silent, observedNanos: observed, recorded: node.recorded, settings: settings)
                if state == .dead && node.recorded != .dead {
                    guard tick - observedSince >= deadTicks else { throw Failure(message: "node \(id) declared dead after \(tick - observedSince) ticks of observation") }
                    log("node \(id) declared dead")
                    nodes[id]!.recorded = .dead
                } else if state == .live && node.recorded == .dead {
                    log("node \(id) is live again")
                    nodes[id]!.recorded = .live
                }
                states[id] = state
            }
            // The plan is a pure function of the states and the catalog: unchanged inputs, unchanged (empty) plan.
            let inputs = PlanInputs(states: states, catalogVersion: catalogVersion)
            if inputs == lastEmptyPlan {
                try leadAll()
                return []
            }
            let planGroups = groups.map { PlacementGroup(id: $0.key, replicas: $0.value.replicas) }
            let target = min(limits.replicationFactor, states.values.count { $0 != .dead })
            let underReplicated = planGroups.contains { $0.serving < target }
            let steps = Rebalancer.plan(nodes: states, groups: planGroups, limits: limits)
            for s in steps {
                log("\(s)")
                switch s {
                case .forget(let g, _), .add(let g, _), .move(let g, _, _), .trim(let g, _): busyGroups.insert(g)
                }
                switch s {
                case .forget(let g, let n):
                    guard states[n] == nil || states[n] == .dead else { throw Failure(message: "\(s): node \(n) is \(states[n]!)") }
                    groups[g]!.replicas[n] = nil
                case .trim(let g, let n):
                    // The simulation's groups always have their target; a trim here is a wrong plan.
                    throw Failure(message: "\(s) of a group with \(groups[g]!.replicas.count) copies, target \(target)")
                case .add(let g, let n), .move(let g, _, let n):
                    guard groups[g]!.replicas[n] == nil else { throw Failure(message: "\(s): node \(n) already holds a copy of g\(g)") }
                    guard states[n] == .live else { throw Failure(message: "\(s): node \(n) is \(states[n].map { "\($0)" } ?? "gone")") }
                    if case .move(_, let from, _) = s {
                        guard !underReplicated else { throw Failure(message: "\(s) while a group is below its replication factor") }
                        groups[g]!.replicas[from] = .leaving
                    }
                    groups[g]!.replicas[n] = .joining
                }
            }
            if !steps.isEmpty { catalogVersion += 1 }
            lastEmptyPlan = steps.isEmpty ? PlanInputs(states: states, catalogVersion: catalogVersion) : nil
            try checkLimits(states)
            try leadAll()
            return steps
        }

        struct PlanInputs: Equatable {
            var states: [NodeID: NodeState]
            var catalogVersion: Int
        }

        mutating func leadAll() throws {
            for id in busyGroups.sorted() {
                try lead(id)
                if !busy(groups[id]!) { busyGroups.remove(id) }
            }
            // A drained node leaves the cluster once nothing of it is left anywhere.
            for (id, node) in nodes where node.recorded == .draining && groups.values.allSatisfy({ $0.replicas[id] == nil && !$0.voters.contains(id) && !$0.learners.contains(id) }) {
                log("node \(id) drained and removed")
                nodes[id] = nil
                removed.insert(id)
                catalogVersion += 1
            }
            balanceLeaders()
        }

        /// Every live node carries out its part of the leader plan (`LeaderBalance.links`): the
        /// chains' last links, from the picture as of the round's start (as pings would tell). Nodes'
        /// rounds do not line up in the cluster (each has its own 2 s timer, and a link's own checks
        /// may hold it back), so each link is made in a round only with probability 0.7.
        mutating func balanceLeaders() {
            // Nothing changed since the last look, and it handed nothing over then: nothing to do.
            // And as in the cluster (every 2 s), not every tick.
            guard tick % 3 == 0 else { return }
            let now = (catalogVersion, membershipChanges, upNodes)
            guard leadersMoved || now != lastLeaderLook else { return }
            lastLeaderLook = now
            leadersMoved = false
            let liveUp = Set(nodes.keys.filter { nodes[$0]!.up && nodes[$0]!.recorded == .live })
            var leaders: [GroupID: NodeID] = [:], heirs: [GroupID: Set<NodeID>] = [:]
            for (id, g) in groups where nodes[g.leader]?.up == true {
                leaders[id] = g.leader
                if !g.moving { heirs[id] = g.voters.filter { $0 != g.leader && liveUp.contains($0) && g.replicas[$0] == .active } }
            }
            let links = LeaderBalance.plan(leaders: leaders, heirs: heirs, nodes: liveUp, mutation: mutation).compactMap(\.last)
            // Looked at again next round while any link is left to make.
            leadersMoved = !links.isEmpty
            for t in links where rng.chance(0.7) {
                log("g\(t.group): leadership from \(t.from) to \(t.to)")
                groups[t.group]!.leader = t.to
            }
        }

        /// Whether the group's leader has anything to do: a change under way, or a member that is not
        /// the catalog's (a forgotten copy, a removed node).
        func busy(_ g: Group) -> Bool {
            g.moving || !g.learners.isEmpty || g.voters.count != g.replicas.count || !g.voters.allSatisfy { g.replicas[$0] != nil }
        }

        func checkLimits(_ states: [NodeID: NodeState]) throws {
            var inbound: [NodeID: Int] = [:], outbound: [NodeID: Int] = [:]
            var moves = 0
            for g in groups.values {
                for (n, s) in g.replicas {
                    if s == .joining { inbound[n, default: 0] += 1 }
                    if s == .leaving { outbound[n, default: 0] += 1 }
                }
                if g.replicas.values.contains(.leaving) { moves += 1 }
            }
            if let (n, c) = inbound.first(where: { $0.value > limits.snapshotsInPerNode }) { throw Failure(message: "node \(n) receives \(c) snapshots at once") }
            if let (n, c) = outbound.first(where: { $0.value > limits.snapshotsOutPerNode }) { throw Failure(message: "node \(n) sends \(c) copies away at once") }
            let cap = limits.maxMovesInFlight(nodes: states.values.count { $0 != .dead })
            if moves > cap { throw Failure(message: "\(moves) moves in flight, over the limit of \(cap)") }
        }

        /// The group's leader takes one membership step, as `ClusterNode.reconcile` does.
        mutating func lead(_ id: GroupID) throws {
            var g = groups[id]!
            let up = g.voters.filter { nodes[$0]?.up == true }
            guard up.count * 2 > g.voters.count else { return }
            if !up.contains(g.leader) { g.leader = up.min()! }
            for (n, at) in g.caughtUpAt where at <= tick && nodes[n]?.up == true { g.caughtUpAt[n] = 0 }
            let match = Dictionary(uniqueKeysWithValues: g.voters.union(g.learners).map { n in
                (n, LogIndex(g.voters.contains(n) || g.caughtUpAt[n] == 0 ? 1 : 0))
            })
            let known = Set(nodes.keys)
            let target = min(limits.replicationFactor, nodes.values.count { $0.recorded != .dead })
            guard let action = MembershipPlan.next(leader: g.leader, voters: g.voters, learners: g.learners, replicas: g.replicas,
                                                   readReplicas: [], known: known, removed: removed, match: match, commit: 1,
                                                   reachable: Set(g.voters.union(g.learners).filter { nodes[$0]?.up == true }),
                                                   target: target, mutation: mutation) else { return }
            log("g\(id) leader \(g.leader): \(action)")
            membershipChanges += 1
            switch action {
            case .propose(.addLearner(let n)):
                g.voters.remove(n)
                g.learners.insert(n)
                g.caughtUpAt[n] = tick + rng.int(1...6)
            case .propose(.promoteLearner(let n)):
                g.learners.remove(n)
                g.voters.insert(n)
                g.caughtUpAt[n] = nil
            case .propose(.removeNode(let n)):
                if g.replicas[n] == .leaving {
                    let target = min(limits.replicationFactor, nodes.values.count { $0.recorded != .dead })
                    guard g.voters.count - 1 >= target else {
                        throw Failure(message: "g\(id): removing leaving copy \(n) leaves \(g.voters.count - 1) voters of \(target)")
                    }
                }
                g.voters.remove(n)
                g.learners.remove(n)
                g.caughtUpAt[n] = nil
                if g.leader == n { g.leader = g.voters.min() ?? noNode }
            case .transferLeadership(let to):
                // A silent target never takes over: the transfer times out and the leader stays.
                if nodes[to]?.up == true { g.leader = to }
            case .caughtUp(let n):
                g.replicas[n] = .active
                catalogVersion += 1
            case .left(let n):
                g.replicas[n] = nil
                catalogVersion += 1
            }
            groups[id] = g
        }
    }
}

extension PlacementSimulation.Group {
    var moving: Bool { replicas.values.contains { $0 != .active } }
}
