/// One client operation on the simulated key-value store, as the client saw it.
public struct HistoryOp: Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case write(value: UInt64)
        /// The value read; 0 is "never written".
        case read(value: UInt64)
    }

    public var opID: UInt64
    public var client: Int
    public var key: UInt64
    public var kind: Kind
    /// Position of the invocation in the run's global event order.
    public var invoke: UInt64
    /// Position of the response; nil when the outcome is unknown (a write that timed out or whose node
    /// crashed): such a write may or may not have taken effect, at any time after its invocation.
    public var response: UInt64?

    public init(opID: UInt64, client: Int, key: UInt64, kind: Kind, invoke: UInt64, response: UInt64? = nil) {
        self.opID = opID
        self.client = client
        self.key = key
        self.kind = kind
        self.invoke = invoke
        self.response = response
    }

    public var description: String {
        let r = response.map(String.init) ?? "?"
        switch kind {
        case .write(let v): return "c\(client) write k\(key)=\(v) [\(invoke),\(r)]"
        case .read(let v): return "c\(client) read k\(key)->\(v) [\(invoke),\(r)]"
        }
    }
}

/// Wing & Gong's linearizability search with memoization (as in Porcupine), one key at a time:
/// a register history is linearizable iff each key's sub-history is.
public enum LinearizabilityChecker {
    public enum Outcome: Equatable, Sendable {
        case linearizable
        case violation(key: UInt64, detail: String)
        /// The search exceeded its budget without an answer.
        case inconclusive(key: UInt64)
    }

    public static func check(_ history: [HistoryOp], stateBudget: Int = 2_000_000) -> Outcome {
        var byKey: [UInt64: [HistoryOp]] = [:]
        for op in history { byKey[op.key, default: []].append(op) }
        for key in byKey.keys.sorted() {
            let outcome = checkKey(key, byKey[key]!, stateBudget: stateBudget)
            if outcome != .linearizable { return outcome }
        }
        return .linearizable
    }

    private struct MemoKey: Hashable {
        var bits: [UInt64]
        var value: UInt64
    }

    static func checkKey(_ key: UInt64, _ allOps: [HistoryOp], stateBudget: Int) -> Outcome {
        // A write of unknown outcome whose value nobody read can always be dropped: values are unique, so
        // no read depends on it, and leaving it out never invalidates an order of the rest.
        var readValues = Set<UInt64>()
        for op in allOps { if case .read(let v) = op.kind { readValues.insert(v) } }
        let ops = allOps.filter { op in
            if op.response == nil, case .write(let v) = op.kind { return readValues.contains(v) }
            return true
        }.sorted { $0.invoke < $1.invoke }
        let n = ops.count
        if n == 0 { return .linearizable }
        let words = (n + 63) / 64
        var bits = [UInt64](repeating: 0, count: words)
        var memo = Set<MemoKey>()
        var completedLeft = ops.filter { $0.response != nil }.count
        var budgetExceeded = false
        var deepest = 0
        var linearizedCount = 0

        func isSet(_ i: Int) -> Bool { bits[i >> 6] & (1 << UInt64(i & 63)) != 0 }
        func flip(_ i: Int) { bits[i >> 6] ^= (1 << UInt64(i & 63)) }

        func search(_ value: UInt64) -> Bool {
            if completedLeft == 0 { return true }
            if memo.count > stateBudget {
                budgetExceeded = true
                return false
            }
            var minResponse = UInt64.max
            for i in 0..<n where !isSet(i) { if let r = ops[i].response, r < minResponse { minResponse = r } }
            for i in 0..<n where !isSet(i) {
                let op = ops[i]
                if op.invoke > minResponse { break }
                let next: UInt64
                switch op.kind {
                case .write(let v): next = v
                case .read(let v):
                    guard v == value else { continue }
                    next = value
                }
                flip(i)
                if op.response != nil { completedLeft -= 1 }
                linearizedCount += 1
                deepest = max(deepest, linearizedCount)
                if memo.insert(MemoKey(bits: bits, value: next)).inserted && search(next) { return true }
                linearizedCount -= 1
                if op.response != nil { completedLeft += 1 }
                flip(i)
                if budgetExceeded { return false }
            }
            return false
        }

        if search(0) { return .linearizable }
        if budgetExceeded { return .inconclusive(key: key) }
        let context = ops.prefix(deepest + 3).suffix(8).map { "  \($0)" }.joined(separator: "\n")
        return .violation(key: key, detail: "no linearization of key \(key); stuck after \(deepest) of \(n) operations near:\n\(context)")
    }
}
