import Testing
import CairnRaft

@Suite("ReadIndex linearizable reads")
struct ReadIndexTests {
    @Test("the leader answers a read with its commit index after a quorum confirms its leadership")
    func leaderRead() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.propose(1, "w")
        c.stabilize()
        try c.node(1).readIndex(requestID: 7)
        c.process(1)
        #expect(c.readStates[1, default: []].isEmpty, "not before the heartbeat round is acknowledged")
        c.stabilize()
        #expect(c.readStates[1] == [ReadState(index: 2, requestID: 7)])
    }

    @Test("a follower gets the read index from the leader")
    func followerRead() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.propose(1, "w")
        c.stabilize()
        try c.node(3).readIndex(requestID: 9)
        c.stabilize()
        #expect(c.readStates[3] == [ReadState(index: 2, requestID: 9)])
        #expect(c.node(3).status.applied >= 2)
    }

    @Test("a follower without a known leader refuses a read")
    func followerWithoutLeader() {
        let c = TestCluster(voters: [1, 2, 3])
        #expect(throws: RaftError.notLeader(leader: noNode)) { try c.node(2).readIndex(requestID: 1) }
    }

    @Test("no read index before the leader has committed an entry of its term")
    func notBeforeTermCommit() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.propose(1, "w")
        // The write commits on 1 and 2, but node 2 never hears the new commit index.
        c.stabilize { !($0.kind == .append && ($0.to == 3 || $0.entries.isEmpty)) }
        #expect(c.node(1).status.commit == 2)
        c.isolated = [1]
        #expect(c.campaignOnly(2))
        #expect(c.node(2).status.commit < 2, "the new leader does not know the latest commit yet")
        try c.node(2).readIndex(requestID: 5)
        // Heartbeats alone (its no-op held back) must not release the read.
        c.stabilize { $0.kind == .heartbeat || $0.kind == .heartbeatResponse }
        #expect(c.readStates[2, default: []].isEmpty)
        c.tick(2)
        c.stabilize()
        let rs = try #require(c.readStates[2]?.first)
        #expect(rs.requestID == 5)
        #expect(rs.index >= 3, "the read index covers the no-op, hence the earlier write")
    }

    @Test("late or duplicated heartbeat acknowledgements never release a newer read")
    func staleAcksDoNotReleaseNewerReads() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        try c.node(1).readIndex(requestID: 1)
        c.process(1)
        c.deliver { $0.kind == .heartbeat }
        let staleAcks = c.inFlight.filter { $0.kind == .heartbeatResponse }
        #expect(staleAcks.count == 2)
        c.deliver { $0.kind == .heartbeatResponse }
        #expect(c.readStates[1] == [ReadState(index: 1, requestID: 1)])

        c.propose(1, "w")
        c.stabilize()
        try c.node(1).readIndex(requestID: 2)
        c.process(1)
        c.drop { $0.kind == .heartbeat }
        // The old round's acknowledgements arrive again, reordered.
        for m in staleAcks.reversed() + staleAcks { c.node(1).step(m) }
        c.process(1)
        #expect(c.readStates[1]?.count == 1, "round-1 acks say nothing about a read registered after round 1")
        c.tick(1)
        c.stabilize()
        #expect(c.readStates[1]?.last == ReadState(index: 2, requestID: 2))
    }

    @Test("reads registered together share one heartbeat round")
    func readsAreBatched() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        let before = c.sent.count
        for id in 1...10 { try c.node(1).readIndex(requestID: UInt64(id)) }
        c.process(1)
        #expect(c.sent[before...].filter { $0.kind == .heartbeat }.count == 2)
        c.stabilize()
        #expect(c.readStates[1]?.map(\.requestID) == (1...10).map { UInt64($0) })
    }
}
