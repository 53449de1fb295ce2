import CairnRaft

/// A voting node as placement sees it. Read replicas are not placed: they hold every group as learners.
public enum NodeState: String, Sendable, Equatable, CaseIterable {
    /// Heard from lately: may receive replicas.
    case live
    /// Silent past `--suspect-after`: keeps its replicas and receives none, as it may be gone.
    case suspect
    /// Being emptied by an operator (`cairn node drain`): its replicas move away, none arrive.
    case draining
    /// Silent past `--dead-after`: its replicas are forgotten and rebuilt on live nodes.
    case dead
}

/// Where one replica of a group stands in a move. A move is two of these at once: the new copy
/// `joining`, the old one `leaving`; the old one goes only after every staying copy votes and the
/// staying copies are at least the group's target (`MembershipPlan`).
public enum ReplicaState: String, Sendable, Equatable {
    /// Placed here, not yet a caught-up voter: a learner receiving the group's snapshot and log.
    case joining
    case active
    /// Stays a voter until every staying copy votes (and there are enough of them), then is removed.
    case leaving
}

public struct PlacementGroup: Sendable, Equatable {
    public var id: GroupID
    public var replicas: [NodeID: ReplicaState]
    /// Nodes an operator placed the group's copies on (seed 004's servers map); empty: anywhere.
    /// Copies go to live pinned nodes first, a copy elsewhere moves to a live pinned node that lacks
    /// one, and the count balancer leaves the group alone. A dead or draining pinned node does not
    /// hold the group back: availability comes first.
    public var pinned: Set<NodeID>

    public init(id: GroupID, replicas: [NodeID: ReplicaState], pinned: Set<NodeID> = []) {
        self.id = id
        self.replicas = replicas
        self.pinned = pinned
    }

    /// 0 for a node the group may be placed on by preference (pinned there, or not pinned at all).
    func unpinned(_ n: NodeID) -> Int { pinned.isEmpty || pinned.contains(n) ? 0 : 1 }

    /// Copies the group will have once its moves finish.
    public var planned: Int { replicas.values.count { $0 != .leaving } }
    /// Copies that vote now (a joining one is still a learner).
    public var serving: Int { replicas.values.count { $0 != .joining } }
    public var moving: Bool { replicas.values.contains { $0 != .active } }
}

/// How much copying placement may start at once. A snapshot costs its receiver disk writes and its
/// sender (the group's leader) disk reads and network: copies coming into a node are bounded per
/// node, copies moved away from a node too (the sender is whichever node leads the group, so a
/// node leading many groups may stream several at once, each paced by the runtime's
/// `snapshotBytesPerSecond`), and moves cluster-wide, so a large rebalance stays gradual.
public struct PlacementLimits: Sendable, Equatable {
    public var replicationFactor: Int
    /// Replicas joining one node at a time (each one a snapshot in).
    public var snapshotsInPerNode: Int
    /// Replicas leaving one node at a time (moves out).
    public var snapshotsOutPerNode: Int
    /// Groups in a move at once, cluster-wide; nil: max(4, nodes / 2). Re-replication is bounded by
    /// `snapshotsInPerNode` alone: a group below its replication factor should not wait for a
    /// rebalance elsewhere.
    public var movesInFlight: Int?

    public init(replicationFactor: Int, snapshotsInPerNode: Int = 1, snapshotsOutPerNode: Int = 1, movesInFlight: Int? = nil) {
        precondition(replicationFactor >= 1 && snapshotsInPerNode >= 1 && snapshotsOutPerNode >= 1 && (movesInFlight ?? 1) >= 1,
                     "placement limits must each allow at least one")
        self.replicationFactor = replicationFactor
        self.snapshotsInPerNode = snapshotsInPerNode
        self.snapshotsOutPerNode = snapshotsOutPerNode
        self.movesInFlight = movesInFlight
    }

    public func maxMovesInFlight(nodes: Int) -> Int { movesInFlight ?? max(4, nodes / 2) }

    @_spi(Mutants) public var mutation: PlacementMutation?
}

/// One change placement asks the catalog for.
public enum PlacementStep: Sendable, Equatable, CustomStringConvertible {
    /// A replica on a dead (or vanished) node is dropped: its group re-replicates elsewhere.
    case forget(group: GroupID, node: NodeID)
    /// A group below its replication factor gets a new copy.
    case add(group: GroupID, node: NodeID)
    /// A copy moves: `to` joins as a learner, `from` leaves once `to` is a caught-up voter.
    case move(group: GroupID, from: NodeID, to: NodeID)
    /// A group with more copies than its target gives one up: it leaves once the rest vote.
    case trim(group: GroupID, node: NodeID)

    public var description: String {
        switch self {
        case .forget(let g, let n): return "forget g\(g) on \(n)"
        case .add(let g, let n): return "add g\(g) on \(n)"
        case .move(let g, let from, let to): return "move g\(g) \(from)->\(to)"
        case .trim(let g, let n): return "trim g\(g) on \(n)"
        }
    }
}

/// The count balancer (sharding-design §3b): the next steps that make every group whole and every
/// live node's replica count within one of every other's, within `PlacementLimits`.
///
/// Rules, in order:
/// 1. Replicas on dead nodes are forgotten, so a death costs exactly the dead node's replicas.
/// 2. A group with fewer planned copies than min(RF, nodes not dead) gets one on the least-loaded
///    live node without a copy.
/// 3. Only when every group has its voters: a group with more copies than the target (the
///    replication factor lowered, or two plans that raced) gives one up, from its busiest holder.
/// 4. Only when every group has its voters (re-replication before rebalancing): draining nodes
///    hand their replicas to the least-loaded live nodes, then a replica moves from the most to the
///    least loaded live node while their counts differ by two or more. Once counts are within one,
///    nothing moves: no oscillation. A group moves one copy at a time, and never onto a node that
///    has one (in any state).
///
/// Loads count planned copies (active and joining), so a move in flight already counts where it goes.
public enum Rebalancer {
    public static func plan(nodes: [NodeID: NodeState], groups input: [PlacementGroup], limits: PlacementLimits) -> [PlacementStep] {
        var steps: [PlacementStep] = []
        var groups = input.sorted { $0.id < $1.id }
        for i in groups.indices where groups[i].replicas.keys.contains(where: { nodes[$0] == nil || nodes[$0] == .dead }) {
            for n in groups[i].replicas.keys.sorted() where nodes[n] == nil || nodes[n] == .dead {
                steps.append(.forget(group: groups[i].id, node: n))
                groups[i].replicas[n] = nil
            }
        }
        let holders = nodes.filter { $0.value != .dead }
        let target = min(limits.replicationFactor, holders.count)
        var load = holders.mapValues { _ in 0 }
        var inbound = load, outbound = load
        var inFlight = 0
        for g in groups {
            for (n, s) in g.replicas {
                if s != .leaving { load[n]! += 1 }
                if s == .joining { inbound[n]! += 1 }
                if s == .leaving { outbound[n]! += 1 }
            }
            if g.moving { inFlight += 1 }
        }
        // Built only when a step is to be chosen: most passes of a balanced cluster choose none.
        var pairs: Overlap?
        var overlap: Overlap {
            get {
                if pairs == nil { pairs = Overlap(groups) }
                return pairs!
            }
            set { pairs = newValue }
        }
        let live = holders.keys.filter { holders[$0] == .live }.sorted()
        let inLimit = limits.mutation == .noInboundLimit ? Int.max : limits.snapshotsInPerNode
        func receiver(for g: PlacementGroup) -> NodeID? {
            live.filter { g.replicas[$0] == nil && inbound[$0]! < inLimit }.min { (load[$0]!, $0) < (load[$1]!, $1) }
        }

        var underReplicated = groups.contains { $0.serving < target || $0.planned < target }
        let missing = groups.contains { $0.planned < target }
        for (i, n) in missing ? copies(groups: groups, target: target, live: live, load: load, overlap: overlap, mutation: limits.mutation) : []
        where inbound[n]! < inLimit {
            steps.append(.add(group: groups[i].id, node: n))
            if groups[i].replicas[n] == nil {
                overlap.add(n, to: groups[i])
                groups[i].replicas[n] = .joining
                load[n]! += 1
            }
            inbound[n]! += 1
        }
        underReplicated = underReplicated || groups.contains { $0.planned < target }
        guard !underReplicated || limits.mutation == .rebalanceWhileUnderReplicated else { return steps }

        let maxInFlight = limits.maxMovesInFlight(nodes: holders.count)
        // A silent holder's copy goes first (removing a copy that answers could leave the rest without
        // a majority that answers), then a draining one's, then the busiest's. A trim streams nothing,
        // so only the cluster-wide bound on groups changing at once applies.
        let trimOrder: (PlacementGroup, NodeID) -> (Int, Int, Int, Int) = { g, n in
            (holders[n] == .suspect ? 2 : holders[n] == .draining ? 1 : 0, g.unpinned(n), load[n]!, -Int(truncatingIfNeeded: n))
        }
        for i in groups.indices where !groups[i].moving && groups[i].planned > target && inFlight < maxInFlight {
            let holding = groups[i].replicas.keys.filter { load[$0] != nil }
            guard let n = holding.max(by: { trimOrder(groups[i], $0) < trimOrder(groups[i], $1) }) else { continue }
            steps.append(.trim(group: groups[i].id, node: n))
            groups[i].replicas[n] = .leaving
            load[n]! -= 1
            inFlight += 1
        }

        func move(_ i: Int, from: NodeID, to: NodeID) {
            steps.append(.move(group: groups[i].id, from: from, to: to))
            overlap.move(groups[i], from: from, to: to)
            groups[i].replicas[from] = .leaving
            groups[i].replicas[to] = .joining
            load[from]! -= 1
            load[to]! += 1
            outbound[from]! += 1
            inbound[to]! += 1
            inFlight += 1
        }
        for source in holders.keys.filter({ holders[$0] == .draining }).sorted() {
            for i in groups.indices where groups[i].replicas[source] == .active && !groups[i].moving {
                guard inFlight < maxInFlight, outbound[source]! < limits.snapshotsOutPerNode else { break }
                // Only to a least-loaded node that may hold it: a busier one would be rebalanced
                // again at once. If those are all receiving already, the drain waits for them.
                let open = live.filter { groups[i].replicas[$0] == nil }
                let g = groups[i]
                guard let least = open.map({ (g.unpinned($0), load[$0]!) }).min(by: <) else { continue }
                if let to = open.first(where: { (g.unpinned($0), load[$0]!) == least && inbound[$0]! < inLimit }) { move(i, from: source, to: to) }
            }
        }
        // A pinned group's copy on a node outside its pins moves to a live pinned node without one.
        for i in groups.indices where !groups[i].pinned.isEmpty && !groups[i].moving && inFlight < maxInFlight {
            let g = groups[i]
            guard let to = live.filter({ g.pinned.contains($0) && g.replicas[$0] == nil && inbound[$0]! < inLimit }).min(by: { (load[$0]!, $0) < (load[$1]!, $1) }),
                  let from = g.replicas.filter({ $0.value == .active && !g.pinned.contains($0.key) && holders[$0.key] == .live && outbound[$0.key]! < limits.snapshotsOutPerNode })
                    .keys.max(by: { (load[$0]!, $0) < (load[$1]!, $1) }) else { continue }
            move(i, from: from, to: to)
        }
        while inFlight < maxInFlight {
            let sources = live.filter { outbound[$0]! < limits.snapshotsOutPerNode }.sorted { (load[$0]!, $1) > (load[$1]!, $0) }
            let receivers = live.filter { inbound[$0]! < inLimit }.sorted { (load[$0]!, $0) < (load[$1]!, $1) }
            var chosen: (group: Int, from: NodeID, to: NodeID)?
            search: for from in sources {
                for to in receivers {
                    guard load[from]! - load[to]! >= 2 else { break }
                    // Of the groups that could go, the one whose other copies `to` shares the fewest
                    // groups with: copies spread over many node sets, so a dead node's groups are
                    // rarely all where one survivor already is.
                    let movable = groups.indices.filter {
                        groups[$0].replicas[from] == .active && groups[$0].replicas[to] == nil && !groups[$0].moving && groups[$0].pinned.isEmpty
                    }
                    if let i = movable.min(by: { (overlap.score(to, groups[$0], except: from), $0) < (overlap.score(to, groups[$1], except: from), $1) }) {
                        chosen = (i, from, to)
                        break search
                    }
                }
            }
            guard let c = chosen else { break }
            move(c.group, from: c.from, to: c.to)
        }
        return steps
    }

    /// Where every missing copy should go, all at once, so that a dead node's copies land evenly:
    /// each first on the least-loaded live node without one, then improved along augmenting paths
    /// (a chain of copies each handed to a node that may hold it) while some node could pass one
    /// to a node two or more below it. With no such path left, the counts are as even as these
    /// copies can make them, so a death needs no rebalancing afterwards. Ordered by group.
    static func copies(groups: [PlacementGroup], target: Int, live: [NodeID], load start: [NodeID: Int], overlap: Overlap,
                       mutation: PlacementMutation?) -> [(group: Int, node: NodeID)] {
        var load = start
        var placed: [(group: Int, node: NodeID)] = []
        var on = Set<[UInt64]>()  // [group index, node] pairs placed
        func free(_ i: Int, _ n: NodeID) -> Bool {
            (groups[i].replicas[n] == nil || (mutation == .addWhereHeld && groups[i].replicas[n] == .active)) && !on.contains([UInt64(i), n])
        }
        for i in groups.indices where groups[i].planned < target {
            for _ in 0..<(target - groups[i].planned) {
                let score = { (n: NodeID) in overlap.score(n, groups[i], except: nil) }
                let g = groups[i]
                guard let n = live.filter({ free(i, $0) }).min(by: { (g.unpinned($0), load[$0]!, score($0), $0) < (g.unpinned($1), load[$1]!, score($1), $1) }) else { break }
                placed.append((i, n))
                on.insert([UInt64(i), n])
                load[n]! += 1
            }
        }
        guard !placed.isEmpty else { return [] }
        improving: while true {
            for level in Set(live.map { load[$0]! }).sorted(by: >) {
                // Breadth-first from every node at `level`, along placed copies, to a node at most level - 2.
                var via: [NodeID: (from: NodeID, copy: Int)] = [:]
                var queue = live.filter { load[$0]! == level }
                var seen = Set(queue)
                var head = 0
                while head < queue.count {
                    let a = queue[head]
                    head += 1
                    // A pinned group's copy stays where its pins put it.
                    for (k, c) in placed.enumerated() where c.node == a && groups[c.group].pinned.isEmpty {
                        for b in live where !seen.contains(b) && free(c.group, b) {
                            seen.insert(b)
                            via[b] = (a, k)
                            if load[b]! <= level - 2 {
                                var node = b
                                while let step = via[node] {
                                    on.remove([UInt64(placed[step.copy].group), step.from])
                                    placed[step.copy].node = node
                                    on.insert([UInt64(placed[step.copy].group), node])
                                    node = step.from
                                }
                                load[b]! += 1
                                load[node]! -= 1
                                continue improving
                            }
                            queue.append(b)
                        }
                    }
                }
            }
            break
        }
        return placed.sorted { ($0.group, $0.node) < ($1.group, $1.node) }
    }
}

/// How many groups each pair of nodes holds together. Placement keeps it even as a tie-breaker:
/// when copies sit on many different node sets, the copies a dead node leaves behind can go
/// anywhere, not only to the few nodes that happen not to share its groups.
struct Overlap {
    struct Pair: Hashable {
        let low: NodeID, high: NodeID
        init(_ a: NodeID, _ b: NodeID) { (low, high) = a < b ? (a, b) : (b, a) }
    }

    var shared: [Pair: Int] = [:]

    init(_ groups: [PlacementGroup]) {
        for g in groups {
            let held = g.replicas.filter { $0.value != .leaving }.keys.sorted()
            for (k, a) in held.enumerated() { for b in held[(k + 1)...] { shared[Pair(a, b), default: 0] += 1 } }
        }
    }

    /// Groups `node` would share with `g`'s copies (leaving ones and `except` aside).
    func score(_ node: NodeID, _ g: PlacementGroup, except: NodeID?) -> Int {
        g.replicas.reduce(0) { sum, r in
            r.key == node || r.key == except || r.value == .leaving ? sum : sum + (shared[Pair(node, r.key)] ?? 0)
        }
    }

    mutating func add(_ node: NodeID, to g: PlacementGroup) {
        for (r, s) in g.replicas where s != .leaving && r != node { shared[Pair(node, r), default: 0] += 1 }
    }

    mutating func move(_ g: PlacementGroup, from: NodeID, to: NodeID) {
        for (r, s) in g.replicas where s != .leaving && r != from && r != to {
            shared[Pair(from, r), default: 0] -= 1
            shared[Pair(to, r), default: 0] += 1
        }
    }
}
