import CairnPlacement
import Testing

@Suite struct LoadSplitTests {
    @Test("the split point is the sampled slots' median, inside the arc; samples outside the arc do not count")
    func medianOfSamples() {
        let samples = Array(100..<164) + [9_000, 9_001]
        #expect(LoadSplit.splitSlot(samples: samples, lo: 0, hi: 1_000) == 132)
        // Two hot slots, half the samples each: the upper one starts the upper side.
        #expect(LoadSplit.splitSlot(samples: Array(repeating: 10, count: 30) + Array(repeating: 50, count: 30), lo: 10, hi: 100) == 50)
    }

    @Test("no split point where one slot holds over half the samples, with too few samples, or in a one-slot arc")
    func noSplitPoint() {
        let hotKey = Array(repeating: 500, count: 40) + Array(0..<39)
        #expect(LoadSplit.splitSlot(samples: hotKey, lo: 0, hi: 1_000) == nil)
        let halfHot = Array(repeating: 500, count: 40) + Array(0..<40)
        #expect(LoadSplit.splitSlot(samples: halfHot, lo: 0, hi: 1_000) != nil)
        #expect(LoadSplit.splitSlot(samples: Array(0..<(LoadSplit.minSamples - 1)), lo: 0, hi: 1_000) == nil)
        #expect(LoadSplit.splitSlot(samples: Array(repeating: 5, count: 100), lo: 5, hi: 6) == nil)
    }

    @Test("a shard is hot only after every pass for the hot period ran at the rate; a slow pass starts the count again")
    func hotForTheWholePeriod() {
        var heat = HotShard(seed: 1)
        let second: UInt64 = 1_000_000_000
        let slots = Array(0..<64).map { $0 * 10 }
        func pass(_ ops: Int, at t: UInt64) -> Int? {
            heat.observe(ops: ops, seconds: 1, slots: slots, nowNanos: t * second, opsPerSecond: 100, hotNanos: 3 * second, lo: 0, hi: 1_000)
        }
        #expect(pass(150, at: 1) == nil)
        #expect(pass(150, at: 2) == nil)
        #expect(pass(50, at: 3) == nil)  // slow: the count starts again
        #expect(heat.hotSinceNanos == nil && heat.samples.isEmpty)
        #expect(pass(150, at: 4) == nil)
        #expect(pass(150, at: 6) == nil)
        #expect(pass(150, at: 7) == 320)
        // Turned off: never hot.
        var off = HotShard(seed: 1)
        #expect(off.observe(ops: 1_000_000, seconds: 1, slots: slots, nowNanos: 0, opsPerSecond: 0, hotNanos: 0, lo: 0, hi: 1_000) == nil)
    }

    @Test("the sample stays bounded and uniform however many slots pass")
    func boundedSample() {
        var heat = HotShard(seed: 7)
        for t in 1...50 {
            _ = heat.observe(ops: 1_000, seconds: 1, slots: Array(0..<1_000), nowNanos: UInt64(t), opsPerSecond: 1, hotNanos: .max, lo: 0, hi: 1_000)
        }
        #expect(heat.samples.count == HotShard.maxSamples)
        let mean = Double(heat.samples.reduce(0, +)) / Double(heat.samples.count)
        #expect(abs(mean - 499.5) < 40, "mean \(mean)")
    }
}
