/// Linearizable reads: ReadIndex rounds, and the leader's read lease. Every call is made on the
/// group's one thread, through `RawNode`.

/// A read request registered with the leader, waiting for a quorum to confirm leadership.
struct PendingRead {
    var from: NodeID
    var requestID: UInt64
    var index: LogIndex
    /// The heartbeat round whose acknowledgement by a quorum makes this read safe. Rounds are numbered
    /// per broadcast, so a late or duplicated acknowledgement of an older round can never release it.
    var round: UInt64
}

extension Raft {
    /// A follower's ReadIndex request, on the leader.
    func handleFollowerRead(_ m: Message) {
        if leaseRunning && leaseRead != nil {
            // The caller's clock says the lease runs: the commit index now is a read point for the
            // follower too, with no heartbeat round.
            send(Message(kind: .readIndexResponse, to: m.from, index: log.committed, context: m.context))
        } else {
            handleReadRequest(from: m.from, requestID: m.context)
        }
    }

    func readIndex(requestID: UInt64) throws(RaftError) {
        switch role {
        case .leader:
            handleReadRequest(from: id, requestID: requestID)
        default:
            guard lead != noNode else { throw .notLeader(leader: noNode) }
            send(Message(kind: .readIndex, to: lead, context: requestID))
        }
    }

    func handleReadRequest(from: NodeID, requestID: UInt64) {
        // Until the leader commits an entry of its term, its commit index may lag what an earlier leader
        // acknowledged to clients; a read index taken now could be stale.
        guard mutation == .readIndexBeforeTermCommit || committedInCurrentTerm else {
            readsAwaitingTermCommit.append((from, requestID))
            return
        }
        pendingReads.append(PendingRead(from: from, requestID: requestID, index: log.committed, round: readRound + 1))
        readBroadcastNeeded = true
    }

    /// Sends the heartbeat round that confirms the reads registered since the last one (batched per Ready).
    func flushReadBroadcast() {
        if role == .leader && readBroadcastNeeded { broadcastHeartbeat() }
    }

    /// What a read may rely on without a round of its own: a quorum acknowledged heartbeat round
    /// `round` of this term, and each acknowledging follower then promised (`step`'s lease check) not to
    /// help elect anyone for an election timeout after it heard that heartbeat. So until `durationTicks`
    /// ticks after the round was sent, no other leader can exist and `index` is a linearizable read
    /// point. The core has no clock: the caller knows when it sent each round (`LeaseClock`).
    var leaseRead: LeaseRead? {
        let transferring = mutation != .leaseSurvivesTransfer && (leaseRevoked || leadTransferee != noNode)
        guard role == .leader, cfg.checkQuorum, !transferring, committedInCurrentTerm,
              lastConfigIndex <= log.committed, config.isVoter(id) else { return nil }
        // One tick of the followers' timeout is lost to tick granularity (their first tick may come at
        // once), one more is margin for clocks running at different rates.
        let durationTicks = mutation == .leaseOutlivesElectionTimeout ? 3 * cfg.electionTimeoutTicks : cfg.electionTimeoutTicks - 2
        guard durationTicks > 0 else { return nil }
        let confirmed = Quorum.committedIndex(voters: config.voters) { v in
            v == self.id ? self.readRound : (self.progress[v]?.readAckRound ?? 0)
        }
        guard confirmed > 0 else { return nil }
        return LeaseRead(term: term, round: confirmed, index: log.committed, durationTicks: durationTicks)
    }

    func releaseConfirmedReads() {
        guard !pendingReads.isEmpty else { return }
        let confirmed = Quorum.committedIndex(voters: config.voters) { v in
            v == self.id ? self.readRound : (self.progress[v]?.readAckRound ?? 0)
        }
        var released = 0
        for r in pendingReads {
            guard r.round <= confirmed else { break }
            released += 1
            if r.from == id {
                readStates.append(ReadState(index: r.index, requestID: r.requestID))
            } else {
                send(Message(kind: .readIndexResponse, to: r.from, index: r.index, context: r.requestID))
            }
        }
        pendingReads.removeFirst(released)
    }
}
