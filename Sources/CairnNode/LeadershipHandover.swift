import CairnRaft

/// Before a node stops (SIGTERM), every group it leads gets another leader at once, instead of after
/// the election timeout its followers would otherwise wait out: a rolling restart costs each group a
/// leadership transfer, not a spell without a leader.
extension NodeRuntime {
    /// Hands leadership of every group led here to the voter most caught up among those heard from
    /// within an election timeout, and refuses leadership from then on (a transfer asking this node to
    /// campaign is ignored; it may still win an election its peers start). Returns how many transfers
    /// it asked for, and how many groups it still leads when those are done or `timeoutMillis` passed.
    public func handOverLeadership(timeoutMillis: Int64) async -> (asked: Int, kept: Int) {
        _ = try? await raftLoop.submit { self.raftState.value.refusingLeadership = true }.get()
        let deadline = ContinuousClock.now + .milliseconds(timeoutMillis)
        var asked: Set<GroupID> = []
        for group in (try? await groupIDs()) ?? [] {
            guard let s = try? await status(group: group), s.role == .leader else { continue }
            let candidates = s.config.voters.filter { $0 != config.nodeID && s.recentlyActive.contains($0) }
            // The most caught up takes over soonest (the transfer waits until it has every entry).
            guard let target = candidates.max(by: { (s.matchIndex[$0] ?? 0, $1) < (s.matchIndex[$1] ?? 0, $0) }) else { continue }
            if (try? await transferLeadership(group: group, to: target)) != nil { asked.insert(group) }
        }
        // Only the transfers asked for are waited on: a group with no one to take it (a one-node
        // cluster, every other voter silent) stays led here until the node stops.
        while ContinuousClock.now < deadline, await !ledGroups().isDisjoint(with: asked) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return (asked.count, await ledGroups().count)
    }

    private func ledGroups() async -> Set<GroupID> {
        (try? await raftLoop.submit { Set(self.raftState.value.groups.filter { $0.value.node.role == .leader }.keys) }.get()) ?? []
    }
}
