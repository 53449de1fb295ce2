import Testing
import CairnRaft

@Suite("Leader election")
struct ElectionTests {
    @Test("a single voter elects itself and commits its no-op")
    func singleNode() {
        let c = TestCluster(voters: [1])
        c.elect(1)
        #expect(c.node(1).term == 1)
        #expect(c.node(1).status.commit == 1)
        c.propose(1, "a")
        #expect(c.appliedTexts(1) == ["a"])
    }

    @Test("three voters elect one leader; every node applies the same entries")
    func threeNodes() {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        #expect(c.leaders == [1])
        for id: NodeID in [2, 3] {
            #expect(c.node(id).lead == 1)
            #expect(c.node(id).term == 1)
        }
        c.propose(1, "x")
        c.propose(1, "y")
        c.stabilize()
        for id: NodeID in [1, 2, 3] { #expect(c.appliedTexts(id) == ["x", "y"]) }
    }

    @Test("a new leader appends a no-op of its own term")
    func noOpOnElection() throws {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        let first = c.storages[1]!
        #expect(try first.term(at: 1) == 1)
        #expect(try first.entries(from: 1, to: 2, maxBytes: .max)[0].data.isEmpty)
        c.isolated = [1]
        c.forceElection(2)
        let last = c.node(2).status.lastIndex
        #expect(c.node(2).term(at: last) == c.node(2).term)
    }

    @Test("timeouts are randomized so two followers rarely campaign together")
    func randomizedTimeouts() {
        // Two nodes with different ids draw different timeouts from the same seed.
        var timeouts: Set<Int> = []
        for id: NodeID in 1...5 {
            let c = TestCluster(voters: [id, 100])
            var ticks = 0
            while c.node(id).role == .follower {
                c.node(id).tick()
                ticks += 1
            }
            #expect(ticks >= 10 && ticks < 20)
            timeouts.insert(ticks)
        }
        #expect(timeouts.count > 1)
    }

    @Test("PreVote: an isolated node does not inflate its term, and on return does not disrupt the leader")
    func preVoteKeepsIsolatedNodeHarmless() {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.isolated = [3]
        c.tick(3, times: 200)
        #expect(c.node(3).term == 1, "pre-votes never reach a quorum, so the term stays")
        c.isolated = []
        c.tickAll(times: 30)
        #expect(c.leaders == [1])
        #expect(c.node(1).term == 1)
        c.propose(1, "after")
        c.stabilize()
        #expect(c.appliedTexts(3) == ["after"])
    }

    @Test("CheckQuorum lease: followers ignore a candidate while they hear from a live leader")
    func leaseIgnoresDisruptiveCandidate() {
        // Node 3 runs without PreVote, so isolation does inflate its term.
        let c = TestCluster(voters: [1, 2, 3]) { cfg in if cfg.id == 3 { cfg.preVote = false } }
        c.elect(1)
        c.isolated = [3]
        c.tick(3, times: 100)
        #expect(c.node(3).term > 1)
        c.isolated = []
        // Its vote requests reach node 2, which has a leader in lease: ignored.
        for _ in 0..<3 {
            c.node(1).tick()
            c.node(3).tick()
            c.stabilize { !($0.from == 3 && $0.to == 1) }
        }
        #expect(c.node(2).lead == 1)
        #expect(c.node(2).term == 1)
    }

    @Test("CheckQuorum: a leader that cannot reach a quorum steps down")
    func leaderStepsDownWithoutQuorum() {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.isolated = [1]
        c.tick(1, times: 25)
        #expect(c.node(1).role == .follower)
        #expect(c.node(1).lead == noNode)
    }

    @Test("a node votes at most once per term, and only for a candidate whose log is up to date")
    func voteRules() {
        // Without CheckQuorum, so that no lease hides the vote rule under test.
        let c = TestCluster(voters: [1, 2, 3]) { $0.checkQuorum = false }
        c.elect(1)
        c.propose(1, "only-on-1-and-2")
        c.stabilize { $0.to != 3 && $0.from != 3 }
        // Node 3 lacks the entry: 1 and 2 refuse it even though it asks in a higher term.
        c.isolated = [1]
        let voteRequests = { (m: Message) in m.kind == .vote || m.kind == .preVote }
        c.tick(3, times: 25)
        c.deliver(voteRequests)
        c.deliver { $0.kind == .preVoteResponse || $0.kind == .voteResponse }
        #expect(c.node(3).role != .leader)
        // Node 2 can win: its log is up to date.
        c.elect(2)
        #expect(c.node(2).role == .leader)
    }

    @Test("a leader that sees a higher term steps down")
    func stepDownOnHigherTerm() {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.node(1).step(Message(kind: .heartbeat, from: 2, to: 1, term: 5))
        #expect(c.node(1).role == .follower)
        #expect(c.node(1).term == 5)
        #expect(c.node(1).lead == 2)
    }

    @Test("a restarted node recovers term, vote and commit from storage")
    func restartRecoversHardState() {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.propose(1, "a")
        c.stabilize()
        c.restart(2)
        #expect(c.node(2).term == 1)
        #expect(c.node(2).status.vote == 1)
        #expect(c.node(2).status.commit == 2)
    }

    @Test("a copy made again on a node votes only for candidates as up to date as the copy it replaced")
    func voteFloor() throws {
        func granted(floor: LastEntry?, candidateIndex: LogIndex) throws -> Bool {
            var cfg = RaftConfig(id: 3, randomSeed: 1)
            cfg.voteFloor = floor
            let node = try RawNode(config: cfg, storage: MemoryStorage())
            #expect(node.step(Message(kind: .vote, from: 2, to: 3, term: 2, logTerm: 1, index: candidateIndex)) == nil)
            let rd = node.ready()
            let answer = try #require((rd.messages + rd.messagesAfterPersist).first { $0.kind == .voteResponse })
            return !answer.reject
        }
        // A brand-new member's empty log is behind every candidate.
        #expect(try granted(floor: nil, candidateIndex: 30))
        #expect(try !granted(floor: LastEntry(term: 1, index: 40), candidateIndex: 30))
        #expect(try granted(floor: LastEntry(term: 1, index: 40), candidateIndex: 40))
        #expect(try !granted(floor: LastEntry(term: 2, index: 5), candidateIndex: 40))
    }

    @Test("a copy made again does not stand for election, even asked to take over, until its log reaches its vote floor")
    func noCandidacyBelowVoteFloor() throws {
        func campaigns(floor: LastEntry?) throws -> Bool {
            var cfg = RaftConfig(id: 3, randomSeed: 1)
            cfg.voteFloor = floor
            // An old configuration listing this node as a voter, as a replayed entry would.
            let node = try RawNode(config: cfg, storage: MemoryStorage(bootstrap: ConfState(voters: [1, 2, 3])))
            var sent: [Message] = []
            for _ in 0..<100 {
                node.tick()
                if node.hasReady { let rd = node.ready(); sent += rd.messages + rd.messagesAfterPersist; node.advance(rd) }
            }
            _ = node.step(Message(kind: .timeoutNow, from: 1, to: 3, term: 1))
            if node.hasReady { let rd = node.ready(); sent += rd.messages + rd.messagesAfterPersist; node.advance(rd) }
            return sent.contains { $0.kind == .vote || $0.kind == .preVote }
        }
        #expect(try campaigns(floor: nil))
        #expect(try !campaigns(floor: LastEntry(term: 1, index: 10)))
    }
}
