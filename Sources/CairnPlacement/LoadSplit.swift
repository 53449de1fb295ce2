/// Splits by load: a shard whose leader has served more than `shard_split_ops_per_second` for
/// `shard_split_hot_seconds` in a row splits where its sampled keys divide in two, so its children can
/// be led from different nodes (CockroachDB's load-based splitting, on this project's fixed slots).
///
/// The shard's leader measures (`HotShard`), one pass at a time: the operations it served (writes
/// applied, reads answered) and a sample of the slots its writes touched. A split needs a point the
/// load divides at: the sampled slots' median, moved inside the arc. None is taken when the load sits
/// on one slot (over half the samples): a split would leave all of it on one side, and the other side
/// nothing to do. Nor with too few samples to say where the load is (a shard hot with reads alone).
public enum LoadSplit {
    /// Samples a split point needs, at the least.
    public static let minSamples = 32

    /// The slot to split the arc `lo ..< hi` at (the upper side starts there), or nil.
    public static func splitSlot(samples: [Int], lo: Int, hi: Int) -> Int? {
        guard hi - lo >= 2 else { return nil }
        let inside = samples.filter { $0 >= lo && $0 < hi }.sorted()
        guard inside.count >= minSamples else { return nil }
        // One slot with over half the samples: no split divides it.
        var run = 1, longest = 1
        for (a, b) in zip(inside, inside.dropFirst()) {
            run = a == b ? run + 1 : 1
            longest = max(longest, run)
        }
        guard longest * 2 <= inside.count else { return nil }
        // The upper side starts at the median. No slot holds over half the samples, so the median
        // is above the arc's first slot, and both sides hold slots of the arc (asserted: a split
        // at `lo` would leave the shard nothing).
        let median = inside[inside.count / 2]
        precondition(median > lo && median < hi, "a load split's point is inside its arc")
        return median
    }
}

/// One shard's heat, as its leader sees it pass by pass: hot once every pass for `hotNanos` served at
/// least `opsPerSecond`; the slots sampled meanwhile say where to split. A pass below the rate, or a
/// change of leader (a fresh tracker), starts the count again.
public struct HotShard: Sendable, Equatable {
    public private(set) var hotSinceNanos: UInt64?
    /// Slots written since the shard ran hot, at most `maxSamples` (a uniform sample of them).
    public private(set) var samples: [Int] = []
    private var seen = 0
    private var rng: UInt64

    public static let maxSamples = 1_024

    public init(seed: UInt64) { rng = seed | 1 }

    /// Records one pass: `ops` served over `seconds`, and the slots the pass sampled. Returns the
    /// split slot for `lo ..< hi` once the shard has run hot for `hotNanos`, else nil.
    public mutating func observe(ops: Int, seconds: Double, slots: [Int], nowNanos: UInt64, opsPerSecond: Int, hotNanos: UInt64,
                                 lo: Int, hi: Int) -> Int? {
        guard opsPerSecond > 0, seconds > 0, Double(ops) / seconds >= Double(opsPerSecond) else {
            self = HotShard(seed: rng)
            return nil
        }
        if hotSinceNanos == nil { hotSinceNanos = nowNanos }
        for s in slots { keep(s) }
        guard nowNanos &- hotSinceNanos! >= hotNanos else { return nil }
        return LoadSplit.splitSlot(samples: samples, lo: lo, hi: hi)
    }

    /// Reservoir sampling (algorithm R): every slot seen has the same chance to be kept.
    private mutating func keep(_ slot: Int) {
        seen += 1
        if samples.count < Self.maxSamples {
            samples.append(slot)
            return
        }
        rng ^= rng << 13
        rng ^= rng >> 7
        rng ^= rng << 17
        let j = Int(rng % UInt64(seen))
        if j < Self.maxSamples { samples[j] = slot }
    }
}
