@_spi(Mutants) import CairnRaft

/// Runs many seeds and, for a failure, replays it with tracing on.
@_spi(Mutants) public enum SimRunner {
    public struct Summary: Sendable {
        public var seeds: Int
        public var failures: [SimResult]
        public var stats: SimStats
    }

    /// The options used for a seed: the node count varies with the seed unless fixed.
    public static func options(seed: UInt64, nodes: Int?, profile: SimProfile?, mutation: RaftMutation?) -> SimOptions {
        var o = SimOptions()
        o.nodes = nodes ?? (3 + Int(seed % 5))
        o.profile = profile
        o.mutation = mutation
        return o
    }

    public static func run(seed: UInt64, nodes: Int? = nil, profile: SimProfile? = nil, mutation: RaftMutation? = nil,
                           trace: Bool = false) -> SimResult {
        var o = options(seed: seed, nodes: nodes, profile: profile, mutation: mutation)
        o.trace = trace
        return Simulation(seed: seed, options: o).run()
    }

    /// Runs seeds `start ..< start + count`; stops early after `maxFailures` failures.
    public static func runSeeds(start: UInt64, count: Int, nodes: Int? = nil, profile: SimProfile? = nil,
                                mutation: RaftMutation? = nil, maxFailures: Int = .max,
                                progress: ((Int, SimStats) -> Void)? = nil) -> Summary {
        var summary = Summary(seeds: 0, failures: [], stats: SimStats())
        for i in 0..<count {
            let r = run(seed: start + UInt64(i), nodes: nodes, profile: profile, mutation: mutation)
            summary.seeds += 1
            summary.stats.add(r.stats)
            if r.violation != nil {
                summary.failures.append(r)
                if summary.failures.count >= maxFailures { break }
            }
            progress?(summary.seeds, summary.stats)
        }
        return summary
    }

    /// Human-readable report of a failing seed, with the trace of a replay.
    public static func report(_ failure: SimResult, nodes: Int?, profile: SimProfile?, mutation: RaftMutation?,
                              traceLines: Int = 60) -> String {
        let replay = run(seed: failure.seed, nodes: nodes, profile: profile, mutation: mutation, trace: true)
        var out = "seed \(failure.seed) FAILED: \(failure.violation ?? "?")\n"
        if replay.violation != failure.violation {
            out += "  (replay differs: \(replay.violation ?? "no violation") - nondeterminism bug)\n"
        }
        out += "  last events:\n"
        for line in replay.trace.suffix(traceLines) { out += "    \(line)\n" }
        var cmd = "cairn-sim --seeds 1 --start \(failure.seed)"
        if let n = nodes { cmd += " --nodes \(n)" }
        if let p = profile { cmd += " --profile \(p.rawValue)" }
        if let m = mutation { cmd += " --mutant \(m.rawValue)" }
        out += "  replay: \(cmd) --trace\n"
        return out
    }
}
