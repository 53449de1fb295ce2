/// More shards as the cluster grows. Replica counts can be even only to within one per node, so a
/// database with few replicas per node is unbalanced in proportion (4 shards × RF 3 on 6 nodes: two
/// replicas each, and a node holding three carries 1.5 × the mean). Splitting every shard once, a
/// round of doubling, keeps the shards equal in size while it halves that spread; rounds go on while
/// shards × RF / nodes stays under the cluster's `min_replicas_per_node` (sharding-design §3: at ten
/// replicas a node, max/mean stays within 1.1).
public enum ShardDoubling {
    /// The shard count a round of doublings should reach, or nil when the database has enough shards.
    ///   - shards: the database's shard count now; nodes: nodes that may hold replicas (live, not draining).
    ///   - minReplicasPerNode: 0 turns doubling off.
    public static func target(shards: Int, replicationFactor: Int, nodes: Int, minReplicasPerNode: Int, maxShards: Int) -> Int? {
        guard minReplicasPerNode > 0, shards >= 1, nodes >= 1, replicationFactor >= 1 else { return nil }
        let copies = min(replicationFactor, nodes)
        var count = shards
        while count * copies < minReplicasPerNode * nodes && count * 2 <= maxShards { count *= 2 }
        return count > shards ? count : nil
    }

    /// The shard to split next on the way to `target`: a widest one (the lowest numbered among
    /// equals), so every shard splits once before any splits twice. Nil once `target` is reached, or
    /// when no shard can split (single slots).
    public static func nextSplit(arcSlots: [Int], target: Int) -> Int? {
        guard arcSlots.count < target, let widest = arcSlots.max(), widest >= 2 else { return nil }
        return arcSlots.firstIndex(of: widest)
    }
}
