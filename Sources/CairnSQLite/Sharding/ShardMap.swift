/// Level one of placement: which shard owns each slot of the ring. Shards own contiguous arcs that
/// together cover the ring exactly once; the map never depends on nodes, so adding a node never changes
/// which shard a key belongs to (only whole shards move between nodes, at level two).
public struct ShardMap: Sendable, Equatable {
    public struct Arc: Sendable, Equatable {
        /// Slots `lo ..< hi`.
        public var lo: Int
        public var hi: Int
        public init(lo: Int, hi: Int) { self.lo = lo; self.hi = hi }
        public func contains(_ slot: Int) -> Bool { lo <= slot && slot < hi }
    }

    /// Shard i owns arcs[i]; sorted by `lo`, without gaps or overlaps, covering 0 ..< slotCount.
    public let arcs: [Arc]

    public static let maxShards = 4096

    /// `count` shards of (nearly) equal arcs: shard i owns the slots s with ⌊s·count / 65536⌋ = i.
    public static func uniform(count: Int) -> ShardMap {
        precondition(count >= 1 && count <= maxShards, "a database has 1 to \(maxShards) shards")
        let n = SlotHash.slotCount
        let bounds = (0...count).map { i in (i * n + count - 1) / count }
        return ShardMap(checked: (0..<count).map { Arc(lo: bounds[$0], hi: bounds[$0 + 1]) })
    }

    public init?(arcs: [Arc]) {
        guard Self.covers(arcs) else { return nil }
        self.arcs = arcs
    }

    private init(checked arcs: [Arc]) {
        precondition(Self.covers(arcs), "shard arcs must cover the ring once, in order")
        self.arcs = arcs
    }

    private static func covers(_ arcs: [Arc]) -> Bool {
        guard let first = arcs.first, first.lo == 0, arcs.last!.hi == SlotHash.slotCount else { return false }
        for (a, b) in zip(arcs, arcs.dropFirst()) where a.hi != b.lo { return false }
        return arcs.allSatisfy { $0.lo < $0.hi }
    }

    public var count: Int { arcs.count }

    /// The shard that owns `slot` (binary search over the arcs).
    public func shard(ofSlot slot: Int) -> Int {
        precondition(slot >= 0 && slot < SlotHash.slotCount, "slot out of range")
        var lo = 0, hi = arcs.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if arcs[mid].lo <= slot { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    public func shard(of key: [SQLValue]) -> Int { shard(ofSlot: SlotHash.slot(of: key)) }
}
