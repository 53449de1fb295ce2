/// Level one of placement: which shard owns each slot of the ring. Each shard owns one contiguous
/// arc, and the arcs together cover the ring exactly once; the map never depends on nodes, so adding
/// a node never changes which shard a key belongs to (only whole shards move between nodes, at level
/// two). A split halves one shard's arc and gives the upper half to a new shard, numbered next.
public struct ShardMap: Sendable, Equatable {
    public struct Arc: Sendable, Equatable {
        /// Slots `lo ..< hi`.
        public var lo: Int
        public var hi: Int
        public init(lo: Int, hi: Int) { self.lo = lo; self.hi = hi }
        public func contains(_ slot: Int) -> Bool { lo <= slot && slot < hi }
        public var slots: Int { hi - lo }
        /// Where a split divides the arc unless told otherwise.
        public var middle: Int { lo + slots / 2 }
    }

    /// Shard i owns arcs[i].
    public let arcs: [Arc]
    /// The map version at which shard i's arc last changed (0: never split): every replica of shard i
    /// that has applied that split says so at its read point (`_cairn_split_state`), and one that says
    /// less has not applied it yet (it may still hold the rows that moved).
    public let arcVersions: [UInt32]
    /// The shards in ring order (by their arcs' `lo`), for lookups.
    private let ringOrder: [Int]
    /// A range-sharded table's ranges live on shards 0 ..< rangeShardCount (the count the database was
    /// created with): splits divide arcs of the ring, not ranges.
    public let rangeShardCount: Int

    public static let maxShards = 4096

    /// `count` shards of (nearly) equal arcs: shard i owns the slots s with ⌊s·count / 65536⌋ = i.
    public static func uniform(count: Int) -> ShardMap {
        precondition(count >= 1 && count <= maxShards, "a database has 1 to \(maxShards) shards")
        let n = SlotHash.slotCount
        let bounds = (0...count).map { i in (i * n + count - 1) / count }
        return ShardMap(arcs: (0..<count).map { Arc(lo: bounds[$0], hi: bounds[$0 + 1]) }, arcVersions: nil, rangeShardCount: count)!
    }

    /// Nil unless the arcs cover the ring once and `rangeShardCount` is between 1 and the shard count.
    public init?(arcs: [Arc], arcVersions: [UInt32]? = nil, rangeShardCount: Int? = nil) {
        guard !arcs.isEmpty, arcs.count <= Self.maxShards, arcs.allSatisfy({ $0.lo < $0.hi }) else { return nil }
        let order = arcs.indices.sorted { arcs[$0].lo < arcs[$1].lo }
        guard arcs[order.first!].lo == 0, arcs[order.last!].hi == SlotHash.slotCount else { return nil }
        for (a, b) in zip(order, order.dropFirst()) where arcs[a].hi != arcs[b].lo { return nil }
        let ranges = rangeShardCount ?? arcs.count
        guard ranges >= 1, ranges <= arcs.count else { return nil }
        let versions = arcVersions ?? Array(repeating: 0, count: arcs.count)
        guard versions.count == arcs.count, versions.allSatisfy({ $0 <= UInt32(arcs.count) }) else { return nil }
        self.arcs = arcs
        self.arcVersions = versions
        self.ringOrder = order
        self.rangeShardCount = ranges
    }

    public var count: Int { arcs.count }

    /// Every split adds a shard: the count orders maps, and a shard refuses commands planned with a
    /// map older than its last split (`SQLCommand.mapVersion`).
    public var version: UInt32 { UInt32(arcs.count) }

    /// The shard that owns `slot` (binary search over the arcs in ring order).
    public func shard(ofSlot slot: Int) -> Int {
        precondition(slot >= 0 && slot < SlotHash.slotCount, "slot out of range")
        var lo = 0, hi = ringOrder.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if arcs[ringOrder[mid]].lo <= slot { lo = mid } else { hi = mid - 1 }
        }
        return ringOrder[lo]
    }

    public func shard(of key: [SQLValue]) -> Int { shard(ofSlot: SlotHash.slot(of: key)) }

    /// The map after `shard` splits at the middle of its arc: it keeps the lower half, and a new shard
    /// (numbered `count`) owns the upper. Nil when the arc is a single slot or the map is full.
    public func splitting(_ shard: Int) -> (map: ShardMap, mid: Int)? {
        guard shard >= 0, shard < count else { return nil }
        return splitting(shard, at: arcs[shard].middle)
    }

    /// The map after `shard` splits at `mid`: it keeps `lo ..< mid`, and a new shard (numbered
    /// `count`) owns `mid ..< hi`. Nil unless `mid` leaves both sides a slot, or when the map is full.
    public func splitting(_ shard: Int, at mid: Int) -> (map: ShardMap, mid: Int)? {
        guard shard >= 0, shard < count, count < Self.maxShards, arcs[shard].lo < mid, mid < arcs[shard].hi else { return nil }
        let arc = arcs[shard]
        var next = arcs, versions = arcVersions
        next[shard] = Arc(lo: arc.lo, hi: mid)
        next.append(Arc(lo: mid, hi: arc.hi))
        let version = UInt32(next.count)
        versions[shard] = version
        versions.append(version)
        return (ShardMap(arcs: next, arcVersions: versions, rangeShardCount: rangeShardCount)!, mid)
    }

    /// `r<range shards>;<lo>-<hi>@<version>,...` (shard order): how the catalog keeps a map that splits changed.
    public var encoded: String {
        "r\(rangeShardCount);" + zip(arcs, arcVersions).map { "\($0.lo)-\($0.hi)@\($1)" }.joined(separator: ",")
    }

    public init?(encoded text: String) {
        let parts = text.split(separator: ";", maxSplits: 1)
        guard parts.count == 2, parts[0].first == "r", let ranges = Int(parts[0].dropFirst()) else { return nil }
        var arcs: [Arc] = [], versions: [UInt32] = []
        for item in parts[1].split(separator: ",", omittingEmptySubsequences: false) {
            let fields = item.split(separator: "@", omittingEmptySubsequences: false)
            let bounds = fields[0].split(separator: "-", omittingEmptySubsequences: false)
            guard fields.count == 2, let version = UInt32(fields[1]), bounds.count == 2, let lo = Int(bounds[0]), let hi = Int(bounds[1]) else { return nil }
            arcs.append(Arc(lo: lo, hi: hi))
            versions.append(version)
        }
        self.init(arcs: arcs, arcVersions: versions, rangeShardCount: ranges)
    }
}
