/// Elections: standing for one (pre-vote, then vote), granting votes, and counting them.
extension Raft {
    func hup(transfer: Bool) {
        guard role != .leader, isPromotable else { return }
        if cfg.preVote && !transfer {
            campaign(pre: true, transfer: false)
        } else {
            campaign(pre: false, transfer: transfer)
        }
    }

    func campaign(pre: Bool, transfer: Bool) {
        let voteKind: MessageKind
        let voteTerm: Term
        if pre {
            becomePreCandidate()
            voteKind = .preVote
            voteTerm = term + 1
        } else {
            becomeCandidate()
            voteKind = .vote
            voteTerm = term
        }
        votes[id] = true
        if Quorum.voteResult(voters: config.voters, votes: votes) == .won {
            if pre { campaign(pre: false, transfer: transfer) } else { becomeLeader() }
            return
        }
        for v in config.voters where v != id {
            send(Message(kind: voteKind, to: v, term: voteTerm, logTerm: log.lastTerm, index: log.lastIndex,
                         context: transfer ? 1 : 0))
        }
    }

    func handleVoteRequest(_ m: Message) {
        var canVote = vote == m.from || (vote == noNode && lead == noNode) || (m.kind == .preVote && m.term > term)
        if cfg.checkQuorum && voteHoldTicks > 0 && m.context != 1 && vote != m.from { canVote = false }
        let upToDate = mutation == .voteWithoutLogCheck
            || (log.isUpToDate(lastIndex: m.index, lastTerm: m.logTerm) && cfg.voteFloor?.isCovered(byTerm: m.logTerm, index: m.index) != false)
        let responseKind: MessageKind = m.kind == .vote ? .voteResponse : .preVoteResponse
        if canVote && upToDate {
            send(Message(kind: responseKind, to: m.from, term: m.term))
            if m.kind == .vote {
                electionElapsedTicks = 0
                vote = m.from
            }
        } else {
            send(Message(kind: responseKind, to: m.from, term: term, reject: true))
        }
    }

    func stepCandidate(_ m: Message) {
        let myResponse: MessageKind = role == .preCandidate ? .preVoteResponse : .voteResponse
        switch m.kind {
        case .append:
            becomeFollower(term: m.term, lead: m.from)
            handleAppend(m)
        case .heartbeat:
            becomeFollower(term: m.term, lead: m.from)
            handleHeartbeat(m)
        case .snapshot:
            becomeFollower(term: m.term, lead: m.from)
            handleSnapshot(m)
        case myResponse:
            if votes[m.from] == nil { votes[m.from] = !m.reject }
            switch Quorum.voteResult(voters: config.voters, votes: votes) {
            case .won:
                if role == .preCandidate {
                    campaign(pre: false, transfer: false)
                } else {
                    becomeLeader()
                    broadcastAppend()
                }
            case .lost:
                becomeFollower(term: term, lead: noNode)
            case .pending:
                break
            }
        default:
            break
        }
    }

    /// A message from the leader of this term was accepted: promise not to help elect anyone for an
    /// election timeout (what the leader's read lease stands on).
    func holdVote() {
        voteHoldTicks = max(voteHoldTicks, cfg.electionTimeoutTicks)
    }
}
