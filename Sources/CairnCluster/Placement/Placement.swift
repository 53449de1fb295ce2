import CairnRaft

/// Level two of placement: which nodes hold a group. Pure: loads in, founders out. Today it chooses the
/// founders of new groups (a database, a database's shards); moving replicas as nodes join and leave
/// (issue 13's balancer) grows here under the same rule.
public enum Placement {
    /// Replicas each voter holds now.
    public static func load(of catalog: Catalog, voters: [NodeID]) -> [NodeID: Int] {
        var load = Dictionary(uniqueKeysWithValues: voters.map { ($0, 0) })
        for db in catalog.databases.values { for r in db.replicas where load[r] != nil { load[r]! += 1 } }
        return load
    }

    /// Founders for `groups` new groups, `replicationFactor` each (fewer if there are fewer voters):
    /// each group takes the least-loaded voters (ties by id), and counts towards the next one's choice,
    /// so new shards spread evenly: per-node counts end within one of each other when loads start equal.
    public static func founders(groups: Int, replicationFactor: Int, load start: [NodeID: Int]) -> [[NodeID]] {
        precondition(replicationFactor >= 1, "a group needs at least one replica")
        var load = start
        var out: [[NodeID]] = []
        for _ in 0..<groups {
            let chosen = load.keys.sorted { (load[$0]!, $0) < (load[$1]!, $1) }.prefix(replicationFactor).sorted()
            for n in chosen { load[n]! += 1 }
            out.append(Array(chosen))
        }
        return out
    }
}
