/// What the node's owner asks of the group: proposals, membership changes, leadership transfers, and
/// reports about followers it could not reach.
extension Raft {
    func propose(_ payloads: [[UInt8]]) throws(RaftError) -> ClosedRange<LogIndex> {
        guard role == .leader else { throw .notLeader(leader: lead) }
        guard leadTransferee == noNode else { throw .proposalDropped(reason: "leadership transfer to \(leadTransferee) in progress") }
        guard config.isVoter(id) else { throw .proposalDropped(reason: "this leader is being removed from the cluster") }
        precondition(!payloads.isEmpty, "empty proposal batch")
        let first = log.lastIndex + 1
        var entries: [Entry] = []
        entries.reserveCapacity(payloads.count)
        for (i, p) in payloads.enumerated() { entries.append(Entry(term: term, index: first + LogIndex(i), data: p)) }
        appendEntries(entries)
        broadcastAppend()
        return first...(first + LogIndex(payloads.count) - 1)
    }

    func proposeConfChange(_ change: ConfChange) throws(RaftError) -> LogIndex {
        guard role == .leader else { throw .notLeader(leader: lead) }
        guard leadTransferee == noNode else { throw .confChangeRejected(reason: "leadership transfer in progress") }
        // The single-server-change fix: a new leader first commits an entry of its own term, so a
        // configuration from an earlier term can no longer be overwritten behind this one.
        guard committedInCurrentTerm else { throw .confChangeRejected(reason: "the leader has not committed an entry in its term yet") }
        guard lastConfigIndex <= log.committed else { throw .confChangeRejected(reason: "another configuration change (index \(lastConfigIndex)) is not committed yet") }
        var voters = config.voters, learners = config.learners
        switch change {
        case .addLearner(let n):
            guard n != noNode else { throw .confChangeRejected(reason: "node id 0 is reserved") }
            guard !config.isLearner(n) else { throw .confChangeRejected(reason: "\(n) is already a learner") }
            voters.removeAll { $0 == n }
            learners.append(n)
        case .promoteLearner(let n):
            guard config.isLearner(n) else { throw .confChangeRejected(reason: "\(n) is not a learner") }
            let match = progress[n]?.match ?? 0
            guard match >= log.committed else {
                throw .confChangeRejected(reason: "learner \(n) has not caught up (match \(match), commit \(log.committed))")
            }
            learners.removeAll { $0 == n }
            voters.append(n)
        case .removeNode(let n):
            guard config.isMember(n) else { throw .confChangeRejected(reason: "\(n) is not a member") }
            voters.removeAll { $0 == n }
            learners.removeAll { $0 == n }
        }
        guard !voters.isEmpty else { throw .confChangeRejected(reason: "the cluster would have no voters") }
        let next = ConfState(voters: voters, learners: learners)
        let index = log.lastIndex + 1
        appendEntries([Entry(term: term, index: index, kind: .confChange, data: next.encoded())])
        broadcastAppend()
        return index
    }

    func transferLeadership(to target: NodeID) throws(RaftError) {
        guard role == .leader else { throw .notLeader(leader: lead) }
        if target == id { return }
        guard config.isVoter(target) else { throw .transferRejected(reason: "\(target) is not a voter") }
        if leadTransferee == target { return }
        leadTransferee = target
        leaseRevoked = true
        electionElapsedTicks = 0
        if progress[target]?.match == log.lastIndex {
            send(Message(kind: .timeoutNow, to: target))
        } else {
            maybeSendAppend(to: target, sendIfEmpty: true)
        }
    }

    func reportUnreachable(_ target: NodeID) {
        guard role == .leader, progress[target]?.state == .replicate else { return }
        progress[target]!.becomeProbe()
    }

    func reportSnapshot(to target: NodeID, failed: Bool) {
        guard role == .leader, var pr = progress[target], pr.state == .snapshot else { return }
        if failed {
            pr.becomeProbe()
            pr.next = pr.match + 1
        } else {
            pr.becomeProbe()
        }
        // Wait for the next heartbeat response before probing again.
        pr.probeSent = true
        progress[target] = pr
    }
}
