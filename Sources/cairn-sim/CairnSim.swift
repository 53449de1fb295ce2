import ArgumentParser
import Foundation
@_spi(Mutants) import CairnRaft
@_spi(Mutants) import CairnSim
@_spi(Mutants) import CairnPlacement

@main
struct CairnSimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cairn-sim",
        abstract: "Deterministic Raft cluster simulator: seeded faults in virtual time, invariants checked after every step."
    )

    @Option(help: "Number of seeds to run.") var seeds: Int = 100
    @Option(help: "First seed.") var start: UInt64 = 1
    @Option(help: "Initial voters per run (3-7); by default it varies with the seed.") var nodes: Int?
    @Option(help: "Nemesis profile: \(SimProfile.allCases.map(\.rawValue).joined(separator: ", ")); by default it varies with the seed.")
    var profile: String?
    @Option(help: "Run a deliberately broken core variant (see --list-mutants); succeeds only if it is caught.") var mutant: String?
    @Flag(help: "List the broken core variants.") var listMutants = false
    @Flag(help: "Print the trace of every failing seed (always printed for the first).") var trace = false
    @Option(help: "Trace lines to print for a failing seed.") var traceLines: Int = 60
    @Flag(help: "Print the whole trace of the first seed, whether it fails or not, and stop.") var fullTrace = false
    @Flag(help: "Run the placement simulator (joins, drains, deaths and returns against the rebalancer) instead of Raft's.")
    var placement = false
    @Option(help: "With --placement: run a deliberately broken placement (\(PlacementMutation.allCases.map(\.rawValue).joined(separator: ", "))); succeeds only if it is caught.")
    var placementMutant: String?

    @Flag(help: "Run the sharded simulator (several Raft groups on a few nodes; moves and splits during faults) instead.")
    var sharded = false
    @Option(help: "With --sharded: run a deliberately broken move or split (\(ShardMutation.allCases.map(\.rawValue).joined(separator: ", "))); succeeds only if it is caught.")
    var shardMutant: String?

    func validate() throws {
        if let n = nodes, !(3...7).contains(n) { throw ValidationError("--nodes must be between 3 and 7") }
        if let p = profile, SimProfile(rawValue: p) == nil {
            throw ValidationError("unknown profile '\(p)'; known: \(SimProfile.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if seeds < 1 { throw ValidationError("--seeds must be at least 1") }
        if let m = mutant, RaftMutation(rawValue: m) == nil {
            throw ValidationError("unknown mutant '\(m)'; known: \(RaftMutation.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        if placement || placementMutant != nil { return try runPlacement() }
        if sharded || shardMutant != nil { return try runSharded() }
        if listMutants {
            for m in RaftMutation.allCases { print(m.rawValue) }
            return
        }
        let mutation = mutant.flatMap(RaftMutation.init(rawValue:))
        // Hunting a mutant, default to the most aggressive nemesis.
        let profile = profile.flatMap(SimProfile.init(rawValue:)) ?? (mutation == nil ? nil : .leaderHunting)
        if fullTrace {
            let r = SimRunner.run(seed: start, nodes: nodes, profile: profile, mutation: mutation, trace: true)
            for line in r.trace { print(line) }
            print("seed \(start): \(r.violation ?? "no violation")")
            return
        }
        let clock = ContinuousClock()
        let began = clock.now
        let summary = SimRunner.runSeeds(start: start, count: seeds, nodes: nodes, profile: profile, mutation: mutation,
                                         maxFailures: mutation == nil ? .max : 1) { done, _ in
            if done % 1000 == 0 { print("... \(done) seeds") }
        }
        let elapsed = clock.now - began
        let s = summary.stats
        if let m = mutation {
            if let caught = summary.failures.first {
                print(SimRunner.report(caught, nodes: nodes, profile: profile, mutation: m, traceLines: traceLines))
                print("mutant \(m.rawValue) caught by seed \(caught.seed) after \(summary.seeds) seeds")
                return
            }
            print("mutant \(m.rawValue) NOT caught in \(summary.seeds) seeds; old-term commits \(summary.stats.oldTermCommits)")
            throw ExitCode(1)
        }
        for (i, f) in summary.failures.enumerated() where i == 0 || trace {
            print(SimRunner.report(f, nodes: nodes, profile: profile, mutation: nil, traceLines: traceLines))
        }
        if summary.failures.count > 1 {
            print("failing seeds: \(summary.failures.map { String($0.seed) }.joined(separator: " "))")
        }
        print("coverage: \(s.events) events, \(s.virtualMs / 1000) virtual s; faults \(s.faults) (crashes \(s.crashes), partitions \(s.partitions), pauses \(s.pauses), slow disks \(s.slowDisks), lossy periods \(s.lossyPeriods)); membership changes \(s.confChangesProposed) proposed; leader transfers \(s.transfers); compactions \(s.compactions), snapshots installed \(s.snapshotsInstalled); leaders elected \(s.leadersElected); writes acked \(s.writesAcked), unknown \(s.writesUnknown); reads \(s.readsServed) (\(s.followerReads) on followers, \(s.leaseReads) on leases); inconclusive checks \(s.inconclusiveChecks); old-term commits \(s.oldTermCommits); wall \(elapsed)")
        print("\(summary.seeds) seeds, \(summary.failures.count) violations")
        if !summary.failures.isEmpty { throw ExitCode(1) }
    }

    func runPlacement() throws {
        var mutation: PlacementMutation?
        if let m = placementMutant {
            guard let parsed = PlacementMutation(rawValue: m) else {
                throw ValidationError("unknown placement mutant '\(m)'; known: \(PlacementMutation.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            mutation = parsed
        }
        if fullTrace {
            let r = PlacementSimulation.run(seed: start, mutation: mutation, trace: true)
            for line in r.trace { print(line) }
            print("seed \(start): \(r.violation ?? "no violation")")
            return
        }
        let clock = ContinuousClock()
        let began = clock.now
        var summary = PlacementSimulation.Summary()
        var next = start
        while summary.seeds < seeds {
            let batch = min(1000, seeds - summary.seeds)
            let part = PlacementSimulation.runSeeds(start: next, count: batch, mutation: mutation, maxFailures: mutation == nil ? .max : 1)
            summary.seeds += part.seeds
            summary.failures += part.failures
            summary.totals.add(part.totals)
            next += UInt64(batch)
            if mutation != nil && !summary.failures.isEmpty { break }
            if summary.seeds % 1000 == 0 { print("... \(summary.seeds) seeds") }
        }
        let elapsed = clock.now - began
        let replay = { (f: PlacementSimResult) -> String in
            let r = PlacementSimulation.run(seed: f.seed, mutation: mutation, trace: true)
            return r.trace.suffix(traceLines).map { "    " + $0 }.joined(separator: "\n")
                + "\n  replay: cairn-sim --placement --start \(f.seed) --full-trace" + (mutation.map { " --placement-mutant \($0.rawValue)" } ?? "")
        }
        if let m = mutation {
            guard let caught = summary.failures.first else {
                print("placement mutant \(m.rawValue) NOT caught in \(summary.seeds) seeds")
                throw ExitCode(1)
            }
            print("seed \(caught.seed): \(caught.violation!)\n\(replay(caught))")
            print("placement mutant \(m.rawValue) caught by seed \(caught.seed) after \(summary.seeds) seeds")
            return
        }
        for (i, f) in summary.failures.enumerated() where i == 0 || trace {
            print("seed \(f.seed) FAILED: \(f.violation!)\n\(replay(f))")
        }
        let t = summary.totals
        print("coverage: \(t.ticks) ticks, \(t.convergences) convergences; joins measured \(t.joins): \(t.joinMoves) moves, ideal RF*S/(N+1) summed \(String(format: "%.1f", t.joinIdeal)); deaths measured \(t.deaths): \(t.deadReplicas) replicas held, \(t.deathCopies) copies made, then \(t.deathRebalances) balancing moves after \(t.deathsRebalanced) of them; worst max/mean at m >= 10: \(String(format: "%.3f", t.worstSpreadAtTen)); leader counts at most \(t.worstLeaderSpread) apart; wall \(elapsed)")
        print("\(summary.seeds) seeds, \(summary.failures.count) violations")
        if !summary.failures.isEmpty { throw ExitCode(1) }
    }

    func runSharded() throws {
        var mutation: ShardMutation?
        if let m = shardMutant {
            guard let parsed = ShardMutation(rawValue: m) else {
                throw ValidationError("unknown shard mutant '\(m)'; known: \(ShardMutation.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            mutation = parsed
        }
        if fullTrace {
            let r = ShardedSimRunner.run(seed: start, mutation: mutation, trace: true)
            for line in r.trace { print(line) }
            print("seed \(start): \(r.violation ?? "no violation")")
            return
        }
        let clock = ContinuousClock()
        let began = clock.now
        var summary = ShardedSimRunner.Summary()
        var next = start
        while summary.seeds < seeds {
            let batch = min(1000, seeds - summary.seeds)
            let part = ShardedSimRunner.runSeeds(start: next, count: batch, mutation: mutation, maxFailures: mutation == nil ? .max : 1)
            summary.seeds += part.seeds
            summary.failures += part.failures
            summary.stats.add(part.stats)
            next += UInt64(batch)
            if mutation != nil && !summary.failures.isEmpty { break }
            if summary.seeds % 1000 == 0 { print("... \(summary.seeds) seeds") }
        }
        let elapsed = clock.now - began
        if let m = mutation {
            guard let caught = summary.failures.first else {
                print("shard mutant \(m.rawValue) NOT caught in \(summary.seeds) seeds")
                throw ExitCode(1)
            }
            print(ShardedSimRunner.report(caught, mutation: m, traceLines: traceLines))
            print("shard mutant \(m.rawValue) caught by seed \(caught.seed) after \(summary.seeds) seeds")
            return
        }
        for (i, f) in summary.failures.enumerated() where i == 0 || trace {
            print(ShardedSimRunner.report(f, mutation: nil, traceLines: traceLines))
        }
        if summary.failures.count > 1 { print("failing seeds: \(summary.failures.map { String($0.seed) }.joined(separator: " "))") }
        let s = summary.stats
        print("coverage: \(s.events) events, \(s.virtualMs / 1000) virtual s; crashes \(s.crashes), partitions \(s.partitions), pauses \(s.pauses); moves \(s.movesStarted) started, \(s.movesFinished) finished; splits \(s.splitsProposed) proposed, \(s.splitsApplied) applied; copies deleted \(s.replicasRetired); snapshots installed \(s.snapshotsInstalled); leader transfers \(s.transfers); leaders elected \(s.leadersElected); writes acked \(s.writesAcked), unknown \(s.writesUnknown), refused for an old map \(s.staleMapRefusals); reads \(s.readsServed); inconclusive checks \(s.inconclusiveChecks); wall \(elapsed)")
        print("\(summary.seeds) seeds, \(summary.failures.count) violations")
        if !summary.failures.isEmpty { throw ExitCode(1) }
    }
}
