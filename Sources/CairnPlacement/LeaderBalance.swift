import CairnRaft

/// Leaders spread like replicas. A leader does each write's work first (it proposes, fsyncs, sends
/// to every follower and answers the client), so a node leading more groups than others is the
/// cluster's bottleneck even when replicas are even.
///
/// Decided locally by every node, for the groups it leads: it hands one of them to a fellow voter
/// of that group that leads at least two fewer groups (every node learns every peer's count from the
/// node-to-node pings). That is the count balancer again: each transfer lowers the sum of squared
/// counts, so transfers stop, with counts within one of each other wherever the groups' voter sets
/// allow, and nothing moves once they are.
public enum LeaderBalance {
    /// - Parameters:
    ///   - me: this node; `led` the groups it leads, each with the voters leadership may go to
    ///     (caught up, heard from, not leaving, on a live node).
    ///   - counts: groups each node leads (this one's included, which may count groups not in `led`,
    ///     such as the catalog's), as the pings said.
    /// - Returns: the group to hand over and to whom: the least-leading eligible voter (ties by id),
    ///   from the lowest group id that has one.
    public static func next(me: NodeID, led: [(group: GroupID, voters: Set<NodeID>)], counts: [NodeID: Int]) -> (group: GroupID, to: NodeID)? {
        let mine = counts[me] ?? led.count
        var best: (group: GroupID, to: NodeID, count: Int)?
        for (group, voters) in led.sorted(by: { $0.group < $1.group }) {
            for v in voters.sorted() where v != me {
                guard let c = counts[v], c <= mine - 2 else { continue }
                if best == nil || c < best!.count { best = (group, v, c) }
            }
        }
        return best.map { ($0.group, $0.to) }
    }
}
