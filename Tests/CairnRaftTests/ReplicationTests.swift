import Testing
@_spi(Mutants) import CairnRaft

@Suite("Log replication and commit")
struct ReplicationTests {
    /// The Raft paper's Figure 8, step by step, with one entry per append so the old-term entry and the
    /// new leader's no-op travel separately.
    /// Returns the cluster after node 1, leader of term 3, has its term-1 entry "a" (index 2) on a majority.
    private func figure8(mutation: RaftMutation?) -> TestCluster {
        let c = TestCluster(voters: [1, 2, 3, 4, 5]) { cfg in
            cfg.maxMessageBytes = 1
            cfg.mutation = mutation
        }
        c.elect(1)
        // (a) Leader 1 (term 1) replicates "a" at index 2 to node 2 only.
        c.propose(1, "a")
        c.stabilize { !($0.kind == .append && $0.from == 1 && $0.to != 2) }
        // (b) Node 5 wins term 2 with votes from 3 and 4; its no-op at index 2 goes nowhere.
        c.isolated = [1, 2]
        #expect(c.campaignOnly(5))
        c.drop { $0.from == 5 }
        // (c) Node 5 is lost; node 1 steps down, then wins term 3 with 2, 3 and 4.
        c.isolated = [5]
        c.tick(1)
        c.stabilize { $0.kind == .heartbeat || $0.kind == .heartbeatResponse || $0.kind == .appendResponse }
        #expect(c.node(1).role == .follower)
        c.campaignOnly(1)
        if c.node(1).role != .leader { c.campaignOnly(1) }
        #expect(c.node(1).role == .leader)
        #expect(c.node(1).term == 3)
        // Node 1 replicates "a" to 3 (so 1, 2 and 3 hold it) but its term-3 no-op only reaches node 2.
        c.stabilize { m in
            if m.to == 4 || m.from == 4 { return false }
            // Drop only an append that node 3 would accept and that carries the no-op.
            let accepted = c.node(3).term(at: m.index) == m.logTerm
            return !(m.kind == .append && m.to == 3 && accepted && m.entries.contains { $0.index >= 3 })
        }
        #expect(c.node(3).term(at: 2) == 1)
        return c
    }

    /// (d) Node 1 is lost before its no-op spreads; node 5 (last term 2) steps down in isolation, then
    /// wins term 4 with the votes of 3 and 4, whose last term is 1.
    private func nodeFiveTakesOver(_ c: TestCluster) {
        c.isolated = [1, 5]
        c.tick(5, times: 25)
        c.isolated = [1]
        c.campaignOnly(5)
        if c.node(5).role != .leader { c.campaignOnly(5) }
    }

    @Test("Figure 8: an entry of an earlier term is not committed by counting replicas")
    func figure8OldTermEntryIsNotCommittedByCount() {
        let c = figure8(mutation: nil)
        #expect(c.node(1).status.commit == 1, "index 2 (term 1) is on 3 of 5 nodes, yet not committed")
        // Node 5 overwrites index 2: nothing acknowledged is lost, because "a" was never committed.
        nodeFiveTakesOver(c)
        #expect(c.node(5).role == .leader)
        c.stabilize()
        for id: NodeID in [2, 3, 4, 5] {
            #expect(c.node(id).term(at: 2) == 2)
            #expect(!c.appliedTexts(id).contains("a"))
        }
        #expect(!c.appliedTexts(1).contains("a"))
    }

    @Test("Figure 8: once the leader's own-term entry reaches a majority, everything before it commits")
    func figure8CommitThroughCurrentTerm() {
        let c = figure8(mutation: nil)
        c.isolated = [5]
        c.tick(1)
        c.stabilize()
        #expect(c.node(1).status.commit == 3)
        #expect(c.appliedTexts(1) == ["a"])
    }

    @Test("Figure 8 with the broken commit rule: an acknowledged entry is overwritten")
    func figure8MutantLosesCommittedEntry() {
        let c = figure8(mutation: .commitOldTermByCount)
        #expect(c.node(1).status.commit == 2, "the broken rule commits index 2 by counting")
        #expect(c.appliedTexts(1) == ["a"])
        nodeFiveTakesOver(c)
        c.stabilize()
        #expect(c.node(3).term(at: 2) == 2, "the committed entry was replaced")
    }

    @Test("a follower's divergent tail is replaced with a few rejections, not one per entry")
    func fastBacktracking() {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        // Node 1 is cut off and accumulates 50 entries of term 1 nobody else has.
        c.isolated = [1]
        for i in 0..<50 { c.propose(1, "stale-\(i)") }
        c.forceElection(2)
        for i in 0..<60 { c.propose(2, "new-\(i)") }
        c.stabilize()
        // A third leader starts probing node 1 from its own last index, 60-odd entries ahead.
        c.forceElection(3)
        c.isolated = []
        let sentBefore = c.sent.count
        c.tick(3)
        c.stabilize()
        let rejections = c.sent[sentBefore...].filter { $0.kind == .appendResponse && $0.reject && $0.from == 1 }
        #expect(rejections.count >= 1 && rejections.count <= 2)
        #expect(c.appliedTexts(1) == (0..<60).map { "new-\($0)" })
        #expect(c.node(1).status.lastIndex == c.node(3).status.lastIndex)
    }

    @Test("followers move from probe to replicate once their match index is known")
    func progressModes() {
        let c = TestCluster(voters: [1, 2, 3])
        c.campaignOnly(1)
        #expect(c.node(1).status.progress[2]?.state == .probe)
        c.stabilize()
        #expect(c.node(1).status.progress[2]?.state == .replicate)
        #expect(c.node(1).status.progress[2]?.match == c.node(1).status.lastIndex)
    }

    @Test("pipelining stops at maxInflightAppends unacknowledged appends")
    func inflightWindow() {
        let c = TestCluster(voters: [1, 2, 3]) { $0.maxInflightAppends = 4 }
        c.elect(1)
        let before = c.sent.count
        for i in 0..<20 { c.propose(1, "e\(i)") }
        let appendsTo3 = c.sent[before...].filter { $0.kind == .append && $0.to == 3 && !$0.entries.isEmpty }
        #expect(appendsTo3.count == 4)
        c.stabilize()
        #expect(c.appliedTexts(3).count == 20)
    }

    @Test("an append message stays within maxMessageBytes (or carries a single entry)")
    func messageByteLimit() {
        let c = TestCluster(voters: [1, 2, 3]) { $0.maxMessageBytes = 300 }
        c.elect(1)
        c.isolated = [3]
        for i in 0..<40 { c.propose(1, String(repeating: "x", count: 40) + "\(i)") }
        c.stabilize()
        c.isolated = []
        let before = c.sent.count
        c.tick(1)
        c.stabilize()
        let appends = c.sent[before...].filter { $0.kind == .append && !$0.entries.isEmpty }
        #expect(appends.count > 5)
        for m in appends { #expect(m.entries.count == 1 || m.entries.reduce(0) { $0 + $1.sizeBytes } <= 300) }
        #expect(c.appliedTexts(3).count == 40)
    }

    @Test("lost appends are resent after a heartbeat")
    func lostAppendsAreRecovered() {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.propose(1, "lost")
        c.stabilize { !($0.kind == .append && $0.to == 3) }
        #expect(c.appliedTexts(3).isEmpty)
        c.tick(1)
        c.stabilize()
        #expect(c.appliedTexts(3) == ["lost"])
    }

    @Test("a lagging follower whose entries were compacted away receives a snapshot")
    func snapshotToLaggingFollower() {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.isolated = [3]
        for i in 0..<30 { c.propose(1, "v\(i)") }
        c.stabilize()
        let leaderStatus = c.node(1).status
        let storage = c.storages[1]!
        storage.createSnapshot(at: leaderStatus.applied, confState: leaderStatus.config, data: Array("state-30".utf8))
        storage.compact(upTo: leaderStatus.applied)
        c.isolated = []
        c.tick(1)
        c.stabilize()
        #expect(c.sent.contains { $0.kind == .snapshot && $0.to == 3 })
        #expect(c.storages[3]!.snapshotValue.metadata.index == leaderStatus.applied)
        #expect(c.storages[3]!.snapshotValue.data == Array("state-30".utf8))
        c.propose(1, "after-snapshot")
        c.stabilize()
        #expect(c.appliedTexts(3) == ["after-snapshot"])
        #expect(c.node(1).status.progress[3]?.state == .replicate)
    }

    @Test("a restarted follower re-applies nothing below its applied index")
    func restartResumesFromApplied() {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        c.propose(1, "a")
        c.stabilize()
        var cfg = c.config(for: 2, applied: 2)
        cfg.appliedIndex = 2
        let restarted = try! RawNode(config: cfg, storage: c.storages[2]!)
        #expect(!restarted.hasReady || restarted.ready().committedEntries.isEmpty)
    }
}
