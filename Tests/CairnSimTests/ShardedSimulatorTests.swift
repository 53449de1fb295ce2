import Testing
@_spi(Mutants) import CairnSim

/// Shards on a few nodes, moved and split during faults. CI runs 50 seeds (about a minute in a debug
/// build); `cairn-sim --sharded --seeds 10000` is the long run.
@Suite("Sharded cluster simulator")
struct ShardedSimulatorTests {
    @Test("moves and splits during crashes, pauses and partitions keep every shard's Raft safety, RF voters and a linearizable history")
    func seedsRunClean() async {
        let summary = await onOwnThread { ShardedSimRunner.runSeeds(start: 1, count: 50) }
        for f in summary.failures.prefix(3) { Issue.record("\(ShardedSimRunner.report(f, mutation: nil))") }
        #expect(summary.seeds == 50 && summary.failures.isEmpty)
        // The runs exercise what they claim to.
        let s = summary.stats
        #expect(s.movesFinished > 75 && s.splitsApplied > 50 && s.replicasRetired > 75, "\(s)")
        #expect(s.staleMapRefusals > 25 && s.snapshotsInstalled > 75 && s.crashes > 30, "\(s)")
        #expect(s.writesAcked > 7_500 && s.readsServed > 7_500 && s.inconclusiveChecks == 0, "\(s)")
    }

    /// Each broken variant is caught within a few seeds (runs are deterministic; measured from seed 1):
    /// the move and the splits by seed 1; a node that forgets its deleted copies first at seed 248
    /// (it takes a member cut off through two membership changes, and the move back of a copy
    /// deleted meanwhile), so that run starts near it to stay short.
    @Test("the simulator catches a move that removes before it adds, splits that lose or misplace writes, and copies made again with no memory", arguments: ShardMutation.allCases)
    func mutantIsCaught(mutation: ShardMutation) async {
        let start: UInt64 = mutation == .forgetDeletedCopies ? 241 : 1
        let summary = await onOwnThread { ShardedSimRunner.runSeeds(start: start, count: 20, mutation: mutation, maxFailures: 1) }
        #expect(summary.failures.count == 1, "\(mutation.rawValue) survived seeds \(start)..<\(start + 20)")
        if let caught = summary.failures.first {
            let replay = ShardedSimRunner.run(seed: caught.seed, mutation: mutation)
            #expect(replay.violation == caught.violation)
            let violation = caught.violation ?? ""
            switch mutation {
            case .removeBeforeAdd: #expect(violation.contains("weakened by a move"), "\(violation)")
            case .splitKeepsParentGuard, .splitChildFromSnapshot: #expect(violation.contains("linearizability"), "\(violation)")
            case .forgetDeletedCopies: #expect(violation.contains("committed entry") || violation.contains("safety"), "\(violation)")
            }
        }
    }

    @Test("a seed replays exactly, with or without tracing")
    func deterministicReplay() {
        for seed: UInt64 in [3, 4] {
            let a = ShardedSimRunner.run(seed: seed)
            let b = ShardedSimRunner.run(seed: seed, trace: true)
            #expect(a.violation == b.violation && a.stats.events == b.stats.events && a.stats.writesAcked == b.stats.writesAcked)
            #expect(!b.trace.isEmpty)
        }
    }
}
