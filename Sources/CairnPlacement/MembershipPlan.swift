import CairnRaft

/// What a group's leader does next to bring the group's Raft membership to what the catalog wants:
/// one single-server change at a time, or a catalog note that a move advanced.
public enum MembershipAction: Sendable, Equatable, CustomStringConvertible {
    case propose(ConfChange)
    /// The leader is the copy leaving: it hands leadership to a caught-up voter before it is removed.
    case transferLeadership(to: NodeID)
    /// A joining copy is a voter now: the catalog marks it active.
    case caughtUp(NodeID)
    /// A leaving copy is out of the group: the catalog forgets it (and its node deletes its copy).
    case left(NodeID)

    public var description: String {
        switch self {
        case .propose(let c): return "propose \(c)"
        case .transferLeadership(let to): return "transfer leadership to \(to)"
        case .caughtUp(let n): return "note \(n) caught up"
        case .left(let n): return "note \(n) left"
        }
    }
}

/// The membership half of a move, decided on the group's leader. The order is what keeps a group
/// whole: a new copy is added as a learner, promoted only once caught up, and only then is the old
/// copy removed, so a move never leaves fewer voters than the group had (sharding-design §4.6).
public enum MembershipPlan {
    /// - Parameters:
    ///   - leader: this node, the group's leader.
    ///   - voters, learners: the group's committed configuration.
    ///   - replicas: the catalog's voting copies of the group, by state.
    ///   - readReplicas: nodes meant to hold every group as learners.
    ///   - known: every node the catalog lists and has not removed; a member the catalog does not
    ///     know yet (a join not yet registered) is left alone.
    ///   - match, commit: the leader's view of each member's log, and its commit index.
    ///   - reachable: members the leader heard from lately; leadership is handed to one of them.
    ///   - target: copies the group should have, min(RF, nodes not dead): a leaving copy stays
    ///     while fewer copies than that would be left (a death during the move), until re-replication
    ///     has brought a new one up.
    public static func next(leader: NodeID, voters: Set<NodeID>, learners: Set<NodeID>, replicas: [NodeID: ReplicaState],
                            readReplicas: Set<NodeID>, known: Set<NodeID>, removed: Set<NodeID>,
                            match: [NodeID: LogIndex], commit: LogIndex, reachable: Set<NodeID>, target: Int) -> MembershipAction? {
        next(leader: leader, voters: voters, learners: learners, replicas: replicas, readReplicas: readReplicas, known: known,
             removed: removed, match: match, commit: commit, reachable: reachable, target: target, mutation: nil)
    }

    @_spi(Mutants) public static func next(leader: NodeID, voters: Set<NodeID>, learners: Set<NodeID>, replicas: [NodeID: ReplicaState],
                                           readReplicas: Set<NodeID>, known: Set<NodeID>, removed: Set<NodeID>,
                                           match: [NodeID: LogIndex], commit: LogIndex, reachable: Set<NodeID>, target: Int,
                                           mutation: PlacementMutation?) -> MembershipAction? {
        let members = voters.union(learners)
        // A copy no one wants any more (forgotten on a dead node, or its node removed): silent ones
        // first, and never a voter whose removal would leave the rest without a majority it hears
        // from (removing a live voter while a silent one stays could stall the group for good).
        let unwanted = members.filter { removed.contains($0) || (known.contains($0) && replicas[$0] == nil && !readReplicas.contains($0)) }
        if let gone = unwanted.sorted(by: { (reachable.contains($0) ? 1 : 0, $0) < (reachable.contains($1) ? 1 : 0, $1) }).first(where: { g in
            guard voters.contains(g) else { return true }
            let rest = voters.subtracting([g])
            return !rest.isEmpty && rest.count { $0 == leader || reachable.contains($0) } * 2 > rest.count
        }) {
            return .propose(.removeNode(gone))
        }
        // A leaving copy already out of the group (removed by an earlier leader of it).
        if let left = replicas.keys.sorted().first(where: { replicas[$0] == .leaving && !members.contains($0) }) {
            return .left(left)
        }
        if mutation == .removeBeforeAdd, let leaving = replicas.keys.sorted().first(where: { replicas[$0] == .leaving && $0 != leader }),
           voters.contains(leaving) {
            return .propose(.removeNode(leaving))
        }
        if let missing = Set(replicas.keys).union(readReplicas).sorted().first(where: { !members.contains($0) }) {
            return .propose(.addLearner(missing))
        }
        if let ready = learners.sorted().first(where: { replicas[$0] != nil && (match[$0] ?? 0) >= commit }) {
            return .propose(.promoteLearner(ready))
        }
        if let demote = voters.sorted().first(where: { readReplicas.contains($0) && replicas[$0] == nil }), voters.count > 1 {
            return .propose(.addLearner(demote))
        }
        if let joined = replicas.keys.sorted().first(where: { replicas[$0] == .joining && voters.contains($0) }) {
            return .caughtUp(joined)
        }
        // Every copy that stays votes: the leaving one may go.
        let staying = replicas.keys.filter { replicas[$0] != .leaving }
        guard let leaving = replicas.keys.sorted().first(where: { replicas[$0] == .leaving }),
              staying.allSatisfy(voters.contains), staying.count >= target else { return nil }
        // The rest must keep a majority the leader hears from (a trim removes a copy without adding
        // one: with another copy silent, removing this one would leave the group without a quorum).
        let rest = voters.subtracting([leaving])
        guard !voters.contains(leaving) || (!rest.isEmpty && rest.count { $0 == leader || reachable.contains($0) } * 2 > rest.count) else { return nil }
        if leaving == leader {
            // A reachable heir first (a transfer to a silent node only times out), then the most caught up.
            let rank = { (n: NodeID) in (reachable.contains(n) ? 1 : 0, match[n] ?? 0) }
            let heir = staying.filter { $0 != leader }.max { (rank($0).0, rank($0).1, $1) < (rank($1).0, rank($1).1, $0) }
            return heir.map { .transferLeadership(to: $0) }
        }
        return .propose(.removeNode(leaving))
    }
}
