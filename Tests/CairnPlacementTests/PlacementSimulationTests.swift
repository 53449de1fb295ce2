@_spi(Mutants) import CairnPlacement
@_spi(Mutants) import CairnSim
import Foundation
import Testing

/// The placement simulator's short run (`cairn-sim --placement --seeds 10000` is the long one).
@Suite struct PlacementSimulationTests {
    static let seeds = Int(ProcessInfo.processInfo.environment["CAIRN_PLACEMENT_SEEDS"] ?? "") ?? 40

    @Test("joins, drains, deaths and returns over 3-20 nodes and 16-256 groups keep every placement rule")
    func seededRunsKeepEveryRule() {
        let summary = PlacementSimulation.runSeeds(start: 1, count: Self.seeds)
        let t = summary.totals
        #expect(summary.failures.isEmpty, "\(summary.failures.prefix(3).map { "seed \($0.seed): \($0.violation!)" })")
        // The runs exercised what they claim to check.
        #expect(t.joins >= Self.seeds / 4 && t.deaths >= Self.seeds / 10, "joins \(t.joins), deaths \(t.deaths)")
        #expect(t.deathCopies == t.deadReplicas)
        // Joins move close to the ideal RF·S/(N+1) in total, never more than one over it each.
        #expect(Double(t.joinMoves) <= t.joinIdeal + Double(t.joins), "\(t.joinMoves) moves for an ideal of \(t.joinIdeal)")
        #expect(t.worstSpreadAtTen <= 1.1)
        // Leaders within one of each other (so of the mean) at every convergence.
        #expect(t.worstLeaderSpread <= 1)
        print("placement simulator: \(summary.seeds) seeds, \(t.ticks) ticks, \(t.convergences) convergences; joins \(t.joins): \(t.joinMoves) moves (ideal \(String(format: "%.1f", t.joinIdeal))); deaths \(t.deaths): \(t.deadReplicas) replicas, \(t.deathCopies) copies; worst max/mean at m >= 10: \(String(format: "%.3f", t.worstSpreadAtTen)); leader counts at most \(t.worstLeaderSpread) apart")
    }

    @Test("each deliberately broken placement is caught", arguments: PlacementMutation.allCases)
    func brokenPlacementIsCaught(_ mutation: PlacementMutation) {
        let summary = PlacementSimulation.runSeeds(start: 1, count: 200, mutation: mutation, maxFailures: 1)
        #expect(!summary.failures.isEmpty, "mutant \(mutation.rawValue) survived 200 seeds")
        if let f = summary.failures.first { print("placement mutant \(mutation.rawValue) caught by seed \(f.seed): \(f.violation!)") }
    }

    @Test("a seed replays exactly")
    func seedsReplay() {
        let a = PlacementSimulation.run(seed: 42, trace: true)
        let b = PlacementSimulation.run(seed: 42, trace: true)
        #expect(a.trace == b.trace && a.violation == b.violation && !a.trace.isEmpty)
    }
}
