import Testing
import CairnRaft

@Suite("Membership changes and leader transfer")
struct MembershipTests {
    private func clusterWithLearner() -> TestCluster {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.propose(1, "before-4")
        c.stabilize()
        #expect(throws: Never.self) { try c.node(1).proposeConfChange(.addLearner(4)) }
        c.start(4, storage: MemoryStorage())
        c.stabilize()
        return c
    }

    @Test("a learner receives the log but never votes or campaigns")
    func learnerReceivesLog() {
        let c = clusterWithLearner()
        #expect(c.node(1).status.config == ConfState(voters: [1, 2, 3], learners: [4]))
        #expect(c.appliedTexts(4) == ["before-4"])
        c.tick(4, times: 100)
        #expect(c.node(4).role == .follower)
        #expect(!c.sent.contains { $0.from == 4 && ($0.kind == .vote || $0.kind == .preVote) })
    }

    @Test("a learner's acknowledgement does not count toward commit")
    func learnerDoesNotCount() {
        let c = clusterWithLearner()
        let commit = c.node(1).status.commit
        c.isolated = [2, 3]
        c.propose(1, "needs-a-voter")
        c.stabilize()
        #expect(c.node(4).status.lastIndex > commit)
        #expect(c.node(1).status.commit == commit)
    }

    @Test("a learner is promoted only once it has caught up")
    func promotionWaitsForCatchUp() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        try c.node(1).proposeConfChange(.addLearner(4))
        c.start(4, storage: MemoryStorage())
        c.stabilize { $0.to != 4 }
        #expect(throws: RaftError.self) { try c.node(1).proposeConfChange(.promoteLearner(4)) }
        c.tick(1)
        c.stabilize()
        try c.node(1).proposeConfChange(.promoteLearner(4))
        c.stabilize()
        #expect(c.node(1).status.config == ConfState(voters: [1, 2, 3, 4]))
        #expect(c.node(4).status.config.isVoter(4))
    }

    @Test("one configuration change at a time")
    func oneChangeAtATime() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        try c.node(1).proposeConfChange(.addLearner(4))
        #expect(throws: RaftError.self) { try c.node(1).proposeConfChange(.addLearner(5)) }
    }

    @Test("no configuration change before the new leader commits an entry of its term")
    func noChangeBeforeTermCommit() {
        let c = TestCluster(voters: [1, 2, 3])
        #expect(c.campaignOnly(1))
        #expect(throws: RaftError.confChangeRejected(reason: "the leader has not committed an entry in its term yet")) {
            try c.node(1).proposeConfChange(.addLearner(4))
        }
    }

    @Test("changes that make no sense are refused with a reason")
    func invalidChanges() {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        #expect(throws: RaftError.self) { try c.node(1).proposeConfChange(.promoteLearner(2)) }
        #expect(throws: RaftError.self) { try c.node(1).proposeConfChange(.removeNode(9)) }
        #expect(throws: RaftError.notLeader(leader: 1)) { try c.node(2).proposeConfChange(.addLearner(9)) }
    }

    @Test("removing the leader: it steps down once the change commits, and the rest elect a new one")
    func removeLeader() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        try c.node(1).proposeConfChange(.removeNode(1))
        c.stabilize()
        #expect(c.node(1).role == .follower)
        c.tickAll(times: 30)
        let leaders = c.leaders
        #expect(leaders.count == 1 && leaders[0] != 1)
        let newLeader = leaders[0]
        #expect(c.node(newLeader).status.config == ConfState(voters: [2, 3]))
        c.propose(newLeader, "without-1")
        c.stabilize()
        #expect(c.appliedTexts(newLeader).last == "without-1")
        c.tick(1, times: 100)
        #expect(c.node(1).role == .follower, "a removed node never campaigns")
    }

    @Test("membership is recovered from the log after a restart")
    func configSurvivesRestart() throws {
        let c = clusterWithLearner()
        c.restart(2)
        #expect(c.node(2).status.config == ConfState(voters: [1, 2, 3], learners: [4]))
    }

    @Test("leader transfer to an up-to-date follower needs no election timeout")
    func transfer() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        try c.node(1).transferLeadership(to: 2)
        c.stabilize()
        #expect(c.leaders == [2])
        #expect(c.node(2).term == 2)
    }

    @Test("leader transfer to a lagging follower catches it up first; proposals wait meanwhile")
    func transferToLaggingFollower() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.propose(1, "a")
        c.stabilize { $0.to != 3 }
        try c.node(1).transferLeadership(to: 3)
        #expect(throws: RaftError.self) { try c.node(1).propose(Array("refused".utf8)) }
        c.stabilize()
        #expect(c.leaders == [3])
        #expect(c.node(3).term(at: 2) == 1)
    }

    @Test("an unfinished transfer is abandoned after an election timeout")
    func transferTimesOut() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.isolated = [3]
        try c.node(1).transferLeadership(to: 3)
        c.stabilize()
        #expect(throws: RaftError.self) { try c.node(1).propose(Array("x".utf8)) }
        for _ in 0..<10 {
            c.tick(1)
            c.stabilize()
        }
        #expect(c.node(1).role == .leader)
        #expect(throws: Never.self) { try c.node(1).propose(Array("accepted".utf8)) }
    }

    @Test("configuration payloads round-trip and garbage is refused")
    func confStateEncoding() {
        let cs = ConfState(voters: [3, 1, 2], learners: [9])
        #expect(ConfState(decoding: cs.encoded()) == cs)
        #expect(ConfState(decoding: [1, 2, 3]) == nil)
        #expect(ConfState(decoding: Array(cs.encoded().dropLast())) == nil)
    }
}
