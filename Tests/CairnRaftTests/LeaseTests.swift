import Testing
@_spi(Mutants) import CairnRaft

@Suite("Leader read leases")
struct LeaseTests {
    /// Node 1 leads, with a write of its term committed everywhere.
    func leaderWithWrite(voters: [NodeID] = [1, 2, 3]) -> TestCluster {
        let c = TestCluster(voters: voters)
        c.elect(1)
        c.propose(1, "w")
        c.stabilize()
        return c
    }

    /// `leaderWithWrite`, and a heartbeat round acknowledged by everyone.
    func leaderWithAckedRound() -> TestCluster {
        let c = leaderWithWrite()
        c.tick(1)
        c.stabilize()
        return c
    }

    @Test("a leader holds a lease once a quorum acknowledged a heartbeat round of its term")
    func leaseAfterQuorumAck() throws {
        let c = leaderWithWrite()
        #expect(c.node(1).leaseRead == nil, "no heartbeat round acknowledged yet")
        c.tick(1)
        #expect(c.node(1).leaseRead == nil, "sent, not yet acknowledged")
        c.stabilize()
        let lease = try #require(c.node(1).leaseRead)
        #expect(lease.index == c.node(1).status.commit)
        #expect(lease.term == c.node(1).term)
        // Followers refuse votes for a full election timeout after a heartbeat; one tick goes to
        // granularity and one to margin.
        #expect(lease.durationTicks == RaftConfig(id: 1, randomSeed: 0).electionTimeoutTicks - 2)
        #expect(c.node(2).leaseRead == nil, "followers hold no lease")
    }

    @Test("one follower's acknowledgement in a group of five is not a quorum")
    func leaseNeedsQuorum() {
        let c = leaderWithWrite(voters: [1, 2, 3, 4, 5])
        c.tick(1)
        c.stabilize { !($0.kind == .heartbeatResponse && $0.from != 2) }
        #expect(c.node(1).leaseRead == nil)
        c.tick(1)
        c.stabilize()
        #expect(c.node(1).leaseRead != nil)
    }

    @Test("an acknowledgement of a round never sent confirms nothing")
    func forgedRoundAck() {
        let c = leaderWithWrite()
        // Heartbeats of the next round are lost; a forged answer claims a far later round.
        c.tick(1)
        c.drop { $0.kind == .heartbeat }
        let term = c.node(1).term
        c.node(1).step(Message(kind: .heartbeatResponse, from: 2, to: 1, term: term, context: 1_000))
        #expect(c.node(1).leaseRead == nil)
        c.tick(1)
        c.stabilize()
        #expect(c.node(1).leaseRead != nil, "a real round still confirms")
    }

    @Test("starting a leadership transfer voids the lease for the rest of the term")
    func transferRevokesLease() throws {
        let c = leaderWithAckedRound()
        #expect(c.node(1).leaseRead != nil)
        // Node 3 hears nothing more, so the transfer cannot finish and is abandoned after a timeout.
        c.isolated = [3]
        try c.node(1).transferLeadership(to: 3)
        #expect(c.node(1).leaseRead == nil)
        for _ in 0..<25 { c.tick(1); c.tick(2); c.stabilize() }
        #expect(c.node(1).role == .leader && c.node(1).status.leadTransferee == noNode)
        #expect(c.node(1).leaseRead == nil, "the target may still hold a forced election message")
    }

    @Test("no lease while a membership change is uncommitted")
    func noLeaseDuringConfChange() throws {
        let c = leaderWithAckedRound()
        try c.node(1).proposeConfChange(.addLearner(4))
        #expect(c.node(1).leaseRead == nil)
    }

    @Test("a restarted node refuses to vote for an election timeout, then votes again")
    func restartedNodeHoldsItsVote() throws {
        let c = leaderWithAckedRound()
        #expect(c.node(1).leaseRead != nil)
        let term = c.node(1).term
        c.restart(2)
        // Node 3 campaigns (pre-vote first) while node 1 is cut off: only node 2 can give it a quorum.
        c.isolated = [1]
        let timeout = RaftConfig(id: 2, randomSeed: 0).electionTimeoutTicks
        c.node(2).tick()
        c.forceElectionAttempt(3)
        #expect(c.node(3).role != .leader, "node 2 acknowledged node 1's lease before it restarted")
        c.tick(2, times: timeout)
        c.tick(3, times: 3 * timeout)
        c.stabilize()
        #expect(c.node(3).role == .leader || c.node(2).role == .leader)
        #expect(c.node(3).term > term)
    }

    @Test("without the hold, a restarted node helps elect a new leader inside the old one's lease")
    func restartWithoutHoldBreaksTheLease() {
        let c = TestCluster(voters: [1, 2, 3]) { $0.mutation = .noStartupHold }
        c.elect(1)
        c.propose(1, "w")
        c.stabilize()
        c.tick(1)
        c.stabilize()
        #expect(c.node(1).leaseRead != nil)
        c.restart(2)
        c.isolated = [1]
        c.forceElectionAttempt(3)
        #expect(c.node(3).role == .leader, "the broken variant votes at once")
        #expect(c.node(1).leaseRead != nil, "while node 1 still counts on node 2's acknowledgement")
    }

    @Test("a follower's ReadIndex request is answered at once when the caller says the lease runs")
    func followerReadOnLease() throws {
        let c = leaderWithAckedRound()
        let commit = c.node(1).status.commit
        try c.node(3).readIndex(requestID: 11)
        c.process(3)
        let request = try #require(c.inFlight.first { $0.kind == .readIndex })
        c.inFlight.removeAll()
        c.node(1).step(request, leaseRunning: true)
        c.process(1)
        #expect(c.inFlight.map(\.kind) == [.readIndexResponse], "no heartbeat round")
        #expect(c.inFlight.first?.index == commit)
        c.stabilize()
        #expect(c.readStates[3] == [ReadState(index: commit, requestID: 11)])
        // Without the caller's word, the request waits for a round.
        try c.node(3).readIndex(requestID: 12)
        c.process(3)
        let second = try #require(c.inFlight.first { $0.kind == .readIndex })
        c.inFlight.removeAll()
        c.node(1).step(second)
        c.process(1)
        #expect(c.inFlight.allSatisfy { $0.kind == .heartbeat })
    }

    @Test("a rejection carrying a higher term does not release a follower from its promise")
    func promiseOutlivesTermChange() throws {
        let c = leaderWithAckedRound()
        let term = c.node(1).term
        let last = c.node(2).status.lastIndex
        // A stale pre-vote rejection from node 3, already in the next term, reaches node 2: it adopts
        // the term and forgets its leader, but it acknowledged node 1 a moment ago.
        c.node(2).step(Message(kind: .preVoteResponse, from: 3, to: 2, term: term + 1, reject: true))
        #expect(c.node(2).term == term + 1 && c.node(2).lead == noNode)
        c.process(2)
        c.inFlight.removeAll()
        c.node(2).step(Message(kind: .vote, from: 3, to: 2, term: term + 1, logTerm: term, index: last))
        c.process(2)
        #expect(!c.inFlight.contains { $0.kind == .voteResponse && !$0.reject }, "node 1's lease counts on node 2")
        // An election timeout later, it votes.
        c.inFlight.removeAll()
        for _ in 0..<RaftConfig(id: 2, randomSeed: 0).electionTimeoutTicks { c.node(2).tick() }
        c.node(2).step(Message(kind: .vote, from: 3, to: 2, term: term + 1, logTerm: term, index: last))
        c.process(2)
        #expect(c.inFlight.contains { $0.kind == .voteResponse && !$0.reject })
    }

    @Test("the first heartbeat acknowledgement in a new term waits until the term is on disk")
    func firstAckWaitsForTheTerm() {
        let c = TestCluster(voters: [1, 2, 3])
        c.node(2).step(Message(kind: .heartbeat, from: 1, to: 2, term: 1, context: 1))
        var rd = c.node(2).ready()
        #expect(rd.hardState?.term == 1)
        #expect(!rd.messages.contains { $0.kind == .heartbeatResponse })
        #expect(rd.messagesAfterPersist.map(\.kind) == [.heartbeatResponse])
        c.node(2).advance(rd)
        c.node(2).step(Message(kind: .heartbeat, from: 1, to: 2, term: 1, context: 2))
        rd = c.node(2).ready()
        #expect(rd.messages.map(\.kind) == [.heartbeatResponse], "later ones go out at once")
        c.node(2).advance(rd)
    }

    @Test("the lease clock: a lease lasts its duration from when the confirmed round was sent")
    func leaseClockExpiry() throws {
        let c = leaderWithWrite()
        var clock = LeaseClock()
        let tick: UInt64 = 50_000_000
        // Round sent at t=1s, acknowledged.
        c.node(1).tick()
        var rd = c.node(1).ready()
        clock.recordSent(rd.messages, atNanos: 1_000_000_000)
        for m in rd.messages { c.send(m) }
        c.node(1).advance(rd)
        c.stabilize()
        let lease = try #require(c.node(1).leaseRead)
        let expires = 1_000_000_000 + UInt64(lease.durationTicks) * tick
        #expect(clock.index(lease, nowNanos: expires - 1, nanosPerTick: tick) == lease.index)
        #expect(clock.index(lease, nowNanos: expires, nanosPerTick: tick) == nil)
        // A later round that is sent but not acknowledged does not extend the lease.
        c.node(1).tick()
        rd = c.node(1).ready()
        clock.recordSent(rd.messages, atNanos: 2_000_000_000)
        c.node(1).advance(rd)
        #expect(clock.index(c.node(1).leaseRead, nowNanos: expires, nanosPerTick: tick) == nil)
        // A clock that never saw the confirmed round (a fresh one after a restart) grants nothing.
        var fresh = LeaseClock()
        #expect(fresh.index(lease, nowNanos: 0, nanosPerTick: tick) == nil)
    }
}

extension TestCluster {
    /// Lets `id` run its pre-vote and election, delivering only election traffic.
    func forceElectionAttempt(_ id: NodeID) {
        for _ in 0..<(3 * config(for: id).electionTimeoutTicks) where node(id).role == .follower { tick(id) }
        for _ in 0..<4 {
            deliver { [.preVote, .preVoteResponse, .vote, .voteResponse].contains($0.kind) }
        }
    }
}
