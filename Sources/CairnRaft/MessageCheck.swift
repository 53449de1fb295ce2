/// The gate in front of `step` for messages from the network: a peer may be buggy, corrupt or hostile,
/// and the core's invariants trap, so a message that is malformed, impossible in this node's state, or
/// out of place is refused with a reason (the caller drops it, logs and counts it) before any of it is
/// stepped. An honest cluster never sends one: the simulator checks that no message of its runs is
/// ever refused.
///
/// What the gate cannot judge is whether a well-formed message comes from the node it names: that is
/// the transport's job (mutual TLS between members). Nor does it judge by the group's configuration:
/// the simulator showed honest traffic from outside it (a voter added by an entry a lagging follower
/// has not received can lead it, and must, for it to catch up). Nor by who leads now: a read index
/// confirmed by a leader that has since lost its place, and a transfer's `timeoutNow` to a node that
/// restarted and knows no leader yet, are both honest (the simulator caught each).
extension Raft {
    /// Indexes and terms at or past this are refused: nothing honest comes near, and arithmetic on them
    /// (`term + 1`, `index + count`) must never overflow.
    static let maxMessageValue: UInt64 = 1 << 62

    func refusal(_ m: Message) -> String? {
        if m.to != id { return "addressed to node \(m.to)" }
        if m.from == noNode || m.from == id { return "from node \(m.from)" }
        // A node that never left term 0 rejects a pre-vote at term 0; nothing else is sent without a term.
        if m.term == 0 && m.kind != .preVoteResponse { return "\(m.kind) without a term" }
        let largest = max(m.term, m.logTerm, m.index, m.commit, m.rejectHint)
        if largest >= Self.maxMessageValue { return "\(m.kind) carrying \(largest), beyond any real index or term" }
        // Only a leader sends these, and a term has at most one: to a leader of the same term, they
        // come from an impostor (or a corrupt peer).
        let fromLeader = m.kind == .append || m.kind == .heartbeat || m.kind == .snapshot
        if fromLeader && role == .leader && m.term == term { return "\(m.kind) from node \(m.from) to the leader of the same term \(term)" }
        switch m.kind {
        case .append: return appendRefusal(m)
        case .snapshot:
            guard let s = m.snapshot else { return "a snapshot message without a snapshot" }
            if s.metadata.index == 0 || s.metadata.index >= Self.maxMessageValue || s.metadata.term == 0 || s.metadata.term > m.term {
                return "a snapshot at entry \(s.metadata.index) of term \(s.metadata.term) in term \(m.term)"
            }
            if s.metadata.confState.voters.isEmpty { return "a snapshot without voters" }
            // At or below the commit index the snapshot changes nothing; any other must not contradict
            // an entry this node already committed. (A message of an older term is only answered.)
            if m.term >= term, s.metadata.index <= log.committed, let t = log.term(at: s.metadata.index), t != s.metadata.term {
                return "a snapshot at committed entry \(s.metadata.index) with term \(s.metadata.term), not \(t)"
            }
        case .appendResponse:
            if !m.reject && m.index > log.lastIndex && role == .leader && m.term == term {
                return "acknowledges entry \(m.index) beyond the last one, \(log.lastIndex)"
            }
            if m.reject && m.rejectHint > m.index { return "a rejection hinting at \(m.rejectHint) past the rejected \(m.index)" }
        case .vote, .preVote:
            if m.logTerm > m.term { return "a candidate whose last entry's term \(m.logTerm) is past its term \(m.term)" }
        default:
            break
        }
        return nil
    }

    private func appendRefusal(_ m: Message) -> String? {
        if m.logTerm > m.term { return "an append after an entry of term \(m.logTerm) in term \(m.term)" }
        if UInt64(m.entries.count) >= Self.maxMessageValue - m.index { return "an append past any real index" }
        var previousTerm = m.logTerm
        for (k, e) in m.entries.enumerated() {
            if e.index != m.index + 1 + UInt64(k) { return "an append whose entries are not consecutive from \(m.index + 1)" }
            if e.term < previousTerm || e.term > m.term {
                return "an append with entry \(e.index) of term \(e.term) (after term \(previousTerm), in term \(m.term))"
            }
            previousTerm = e.term
            if e.kind == .confChange && ConfState(decoding: e.data) == nil { return "an append with an undecodable configuration at \(e.index)" }
            // What this node committed is final: a leader never contradicts it. (A message of an older
            // term, from a deposed leader, is only answered.)
            if m.term >= term, e.index <= log.committed, let t = log.term(at: e.index), t != e.term {
                return "an append contradicting committed entry \(e.index) (term \(e.term), not \(t))"
            }
        }
        return nil
    }
}
