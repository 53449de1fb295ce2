import CairnRaft

/// Level two of placement: which nodes hold a group (level one, key to shard, is the slot hash).
/// Everything here is pure, values in and decisions out, so every rule is tested without a cluster:
/// `founders` for new groups, `Rebalancer` for moves, `Liveness` for node states.
public enum Placement {
    /// Founders for `groups` new groups, `replicationFactor` each (fewer if there are fewer nodes in
    /// `load`): each group takes the least-loaded nodes (ties by id), and counts towards the next
    /// one's choice, so new shards spread evenly: per-node counts end within one of each other when
    /// loads start equal.
    ///
    /// Among equally loaded nodes, each next founder is the one sharing the fewest of these new groups
    /// with those already chosen, so 16 shards on 9 nodes do not fall into three fixed triples (whose
    /// members would hold every copy of each other's groups, leaving a dead node's copies to the
    /// other six alone).
    public static func founders(groups: Int, replicationFactor: Int, load start: [NodeID: Int]) -> [[NodeID]] {
        precondition(replicationFactor >= 1, "a group needs at least one replica")
        var load = start
        var overlap = Overlap([])
        var out: [[NodeID]] = []
        for g in 0..<groups {
            var chosen: [NodeID] = []
            while chosen.count < min(replicationFactor, load.count) {
                let group = PlacementGroup(id: GroupID(g), replicas: Dictionary(uniqueKeysWithValues: chosen.map { ($0, .active) }))
                let score = { (n: NodeID) in overlap.score(n, group, except: nil) }
                let next = load.keys.filter { !chosen.contains($0) }.min { (load[$0]!, score($0), $0) < (load[$1]!, score($1), $1) }!
                chosen.append(next)
            }
            for n in chosen { load[n]! += 1 }
            overlap.add(chosen.last!, to: PlacementGroup(id: GroupID(g), replicas: Dictionary(uniqueKeysWithValues: chosen.dropLast().map { ($0, .active) })))
            for (k, a) in chosen.dropLast().enumerated() {
                for b in chosen.dropLast()[(k + 1)...] { overlap.shared[Overlap.Pair(a, b), default: 0] += 1 }
            }
            out.append(chosen.sorted())
        }
        return out
    }
}
