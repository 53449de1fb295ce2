import CairnRaft

/// Leaders spread like replicas. A leader does each write's work first (it proposes, fsyncs, sends
/// to every follower and answers the client), so a node leading more groups than others is the
/// cluster's bottleneck even when replicas are even.
///
/// Every node computes the same plan from the same picture (each group's leader, as the nodes'
/// pings list the groups they lead, and each group's voters, from the catalog) and carries out its
/// own part of it: transfers out of groups it leads.
///
/// A plan is a set of chains. A chain starts at a node leading the most and ends at one leading two
/// or more fewer; each link hands a group to one of its voters, which hands another group on. Made
/// whole, a chain changes only its two ends, the top by minus one and the end by plus one, and the
/// sum of squared counts falls. A plan with no chain left is as even as the groups' voter sets allow:
/// a chain is what a lopsided assignment always has (the exchange argument of load balancing over
/// restricted assignments), whereas handing only to a fellow voter leaves counts two apart wherever
/// no single group links the top node to the bottom one.
///
/// Chains are made from the end, one link a round (`links`): only each chain's last link is made,
/// the one into the node leading the fewest. Alone, that link never raises the highest count (its
/// giver leads at least as many as its taker afterwards), so a round made only in part, or from a
/// picture a second old, still never makes things worse; the next round's plan finds the rest of
/// the chain, one link shorter. Chains in one plan share no node.
public enum LeaderBalance {
    public struct Transfer: Sendable, Equatable, CustomStringConvertible {
        public var group: GroupID
        public var from: NodeID
        public var to: NodeID
        public init(group: GroupID, from: NodeID, to: NodeID) { (self.group, self.from, self.to) = (group, from, to) }
        public var description: String { "g\(group) \(from)->\(to)" }
    }

    /// The links to make this round: each chain's last.
    public static func links(leaders: [GroupID: NodeID], heirs: [GroupID: Set<NodeID>], nodes: Set<NodeID>) -> [Transfer] {
        plan(leaders: leaders, heirs: heirs, nodes: nodes).compactMap(\.last)
    }

    /// - Parameters:
    ///   - leaders: each group's leader, where known.
    ///   - heirs: voters each group's leadership may go to (active copies on live nodes); a group
    ///     without heirs (the catalog's, one being moved) counts for its leader but never moves.
    ///   - nodes: nodes that may lead (live, with a known picture); groups led elsewhere are left out.
    /// - Returns: the chains, each its links from the top down.
    public static func plan(leaders: [GroupID: NodeID], heirs: [GroupID: Set<NodeID>], nodes: Set<NodeID>) -> [[Transfer]] {
        plan(leaders: leaders, heirs: heirs, nodes: nodes, mutation: nil)
    }

    @_spi(Mutants) public static func plan(leaders: [GroupID: NodeID], heirs: [GroupID: Set<NodeID>], nodes: Set<NodeID>,
                                           mutation: PlacementMutation?) -> [[Transfer]] {
        var counts = Dictionary(uniqueKeysWithValues: nodes.map { ($0, 0) })
        var led: [NodeID: [GroupID]] = [:]
        for (g, n) in leaders where nodes.contains(n) {
            counts[n]! += 1
            led[n, default: []].append(g)
        }
        for n in led.keys { led[n]!.sort() }
        var chains: [[Transfer]] = []
        var used = Set<NodeID>(), stuck = Set<NodeID>()
        while true {
            let free = nodes.subtracting(used)
            guard let least = free.map({ counts[$0]! }).min(),
                  let top = free.subtracting(stuck).filter({ counts[$0]! >= least + 2 })
                    .min(by: { (-counts[$0]!, $0) < (-counts[$1]!, $1) }) else { break }
            guard let chain = shortestChain(from: top, counts: counts, led: led, heirs: heirs, allowed: free,
                                            maxLinks: mutation == .leadersHandDownOnly ? 1 : .max) else {
                stuck.insert(top)
                continue
            }
            precondition(counts[chain.last!.to]! <= counts[top]! - 2, "a chain ends two or more below its top")
            for t in chain {
                led[t.from]!.removeAll { $0 == t.group }
                led[t.to, default: []].append(t.group)
                led[t.to]!.sort()
                used.insert(t.from)
                used.insert(t.to)
            }
            counts[top]! -= 1
            counts[chain.last!.to]! += 1
            chains.append(chain)
        }
        return chains
    }

    /// Breadth first from `top`, groups and voters in id order; the chain ends at the node reached
    /// that leads the fewest, when that is two or more fewer than `top` (ties: the nearer, then the
    /// lower id).
    private static func shortestChain(from top: NodeID, counts: [NodeID: Int], led: [NodeID: [GroupID]],
                                      heirs: [GroupID: Set<NodeID>], allowed: Set<NodeID>, maxLinks: Int) -> [Transfer]? {
        var via: [NodeID: (transfer: Transfer, depth: Int)] = [:]
        var queue = [top], head = 0
        var end: (node: NodeID, depth: Int)?
        while head < queue.count {
            let x = queue[head]
            head += 1
            let depth = (via[x]?.depth ?? 0) + 1
            guard depth <= maxLinks else { break }
            for g in led[x] ?? [] {
                for y in (heirs[g] ?? []).sorted() where y != top && y != x && via[y] == nil && allowed.contains(y) {
                    via[y] = (Transfer(group: g, from: x, to: y), depth)
                    queue.append(y)
                    guard counts[y]! <= counts[top]! - 2 else { continue }
                    if end == nil || (counts[y]!, depth, y) < (counts[end!.node]!, end!.depth, end!.node) { end = (y, depth) }
                }
            }
        }
        guard let end else { return nil }
        var chain: [Transfer] = []
        var at = end.node
        while at != top, let t = via[at]?.transfer {
            chain.append(t)
            at = t.from
        }
        return chain.reversed()
    }
}
