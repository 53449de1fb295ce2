import CairnRaft

/// The simulator's single source of randomness. Every decision in a run draws from one of these,
/// so a seed replays the run exactly.
struct SimRandom {
    private var gen: SplitMix64

    init(seed: UInt64) { gen = SplitMix64(seed: seed) }

    mutating func next() -> UInt64 { gen.next() }

    /// Uniform in `range`.
    mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(gen.below(UInt64(range.upperBound - range.lowerBound + 1)))
    }

    mutating func chance(_ p: Double) -> Bool {
        guard p > 0 else { return false }
        return Double(gen.next() >> 11) / Double(1 << 53) < p
    }

    mutating func pick<T>(_ items: [T]) -> T {
        precondition(!items.isEmpty)
        return items[int(0...(items.count - 1))]
    }

    mutating func shuffled<T>(_ items: [T]) -> [T] {
        var a = items
        if a.count < 2 { return a }
        for i in stride(from: a.count - 1, to: 0, by: -1) { a.swapAt(i, int(0...i)) }
        return a
    }
}

/// A min-heap of timed events; ties are broken by insertion order so runs are deterministic.
struct EventQueue<Event> {
    private var heap: [(time: UInt64, seq: UInt64, event: Event)] = []
    private var nextSeq: UInt64 = 0

    var isEmpty: Bool { heap.isEmpty }
    var count: Int { heap.count }

    mutating func push(_ event: Event, at time: UInt64) {
        heap.append((time, nextSeq, event))
        nextSeq += 1
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(i, parent) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (time: UInt64, event: Event)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && less(l, m) { m = l }
            if r < heap.count && less(r, m) { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return (top.time, top.event)
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        heap[a].time < heap[b].time || (heap[a].time == heap[b].time && heap[a].seq < heap[b].seq)
    }
}

/// The replicated state machine of the simulation: a tiny key-value store. A write's value is its
/// operation id, so every written value is unique and a read names exactly the write it saw.
struct KVCommand: Equatable {
    var opID: UInt64
    var key: UInt64

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        ByteCoding.append(opID, to: &out)
        ByteCoding.append(key, to: &out)
        return out
    }

    init(opID: UInt64, key: UInt64) {
        self.opID = opID
        self.key = key
    }

    init?(decoding bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        var c = 0
        opID = ByteCoding.readUInt64(bytes, &c)!
        key = ByteCoding.readUInt64(bytes, &c)!
    }
}

enum KVSnapshot {
    static func encode(_ kv: [UInt64: UInt64]) -> [UInt8] {
        var out: [UInt8] = []
        for k in kv.keys.sorted() {
            ByteCoding.append(k, to: &out)
            ByteCoding.append(kv[k]!, to: &out)
        }
        return out
    }

    static func decode(_ bytes: [UInt8]) -> [UInt64: UInt64] {
        var kv: [UInt64: UInt64] = [:]
        var c = 0
        while let k = ByteCoding.readUInt64(bytes, &c), let v = ByteCoding.readUInt64(bytes, &c) { kv[k] = v }
        return kv
    }
}

/// FNV-1a over an entry's payload: enough to tell two different entries apart in the checks.
func payloadHash(_ e: Entry) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(e.kind.rawValue)
    for b in e.data {
        h ^= UInt64(b)
        h &*= 0x100_0000_01b3
    }
    return h
}
