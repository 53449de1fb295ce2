public enum ProgressState: String, Sendable, Equatable {
    /// One append per heartbeat interval until the follower's match index is found.
    case probe
    /// Optimistic pipelining: `next` runs ahead of `match`, bounded by the in-flight window.
    case replicate
    /// A snapshot is on its way; appends wait until the follower acknowledges it.
    case snapshot
}

/// Last indexes of the appends in flight to one follower, oldest first: a bounded ring.
struct Inflights {
    private var buffer: [LogIndex]
    private var start = 0
    private(set) var count = 0

    init(capacity: Int) { buffer = Array(repeating: 0, count: capacity) }

    var isFull: Bool { count == buffer.count }

    mutating func add(_ lastIndex: LogIndex) {
        precondition(!isFull, "inflight window overflow")
        buffer[(start + count) % buffer.count] = lastIndex
        count += 1
    }

    /// Frees every append whose last index is <= `index`.
    mutating func freeUpTo(_ index: LogIndex) {
        while count > 0 && buffer[start] <= index {
            start = (start + 1) % buffer.count
            count -= 1
        }
    }

    mutating func freeFirst() {
        guard count > 0 else { return }
        start = (start + 1) % buffer.count
        count -= 1
    }

    mutating func reset() {
        start = 0
        count = 0
    }
}

/// The leader's view of one follower's log.
public struct Progress: Sendable, Equatable {
    public internal(set) var match: LogIndex
    public internal(set) var next: LogIndex
    public internal(set) var state: ProgressState = .probe
    public internal(set) var isLearner: Bool
    /// Heard from since the last CheckQuorum round.
    public internal(set) var recentActive = false
    var probeSent = false
    var pendingSnapshot: LogIndex = 0
    /// Ticks since the snapshot was sent; a lost snapshot is retried after a timeout.
    var snapshotTicks = 0
    /// Highest commit index sent to this follower, to tell it promptly when that falls behind.
    var sentCommit: LogIndex = 0
    /// Highest heartbeat round this follower acknowledged in the current term (for ReadIndex).
    var readAckRound: UInt64 = 0
    var inflights: Inflights

    init(next: LogIndex, isLearner: Bool, maxInflight: Int) {
        match = 0
        self.next = next
        self.isLearner = isLearner
        inflights = Inflights(capacity: maxInflight)
    }

    public static func == (a: Progress, b: Progress) -> Bool {
        a.match == b.match && a.next == b.next && a.state == b.state && a.isLearner == b.isLearner
    }

    var isPaused: Bool {
        switch state {
        case .probe: return probeSent
        case .replicate: return inflights.isFull
        case .snapshot: return true
        }
    }

    private mutating func resetState(_ s: ProgressState) {
        probeSent = false
        pendingSnapshot = 0
        snapshotTicks = 0
        state = s
        inflights.reset()
    }

    mutating func becomeProbe() {
        if state == .snapshot {
            let pending = pendingSnapshot
            resetState(.probe)
            next = max(match + 1, pending + 1)
        } else {
            resetState(.probe)
            next = match + 1
        }
    }

    mutating func becomeReplicate() {
        resetState(.replicate)
        next = match + 1
    }

    mutating func becomeSnapshot(_ index: LogIndex) {
        resetState(.snapshot)
        pendingSnapshot = index
    }

    /// Acknowledgement up to `index`. Returns false for a stale one.
    mutating func maybeUpdate(_ index: LogIndex) -> Bool {
        var updated = false
        if match < index {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index + 1)
        return updated
    }

    /// Records that entries up to `lastIndex` were sent.
    mutating func sentEntries(lastIndex: LogIndex, count: Int) {
        switch state {
        case .replicate:
            if count > 0 {
                next = lastIndex + 1
                inflights.add(lastIndex)
            }
        case .probe:
            probeSent = true
        case .snapshot:
            preconditionFailure("sending entries while a snapshot is pending")
        }
    }

    /// A rejection of the append at `rejected`; `hint` is where to probe next. Returns false if stale.
    mutating func maybeDecrease(rejected: LogIndex, hint: LogIndex) -> Bool {
        // A follower never loses entries it acknowledged (they were durable), so a rejection at or
        // below `match` is a late copy of an old message.
        if rejected <= match { return false }
        if state == .replicate {
            next = match + 1
            return true
        }
        // Probing: only the rejection of the last probe counts.
        if next - 1 != rejected { return false }
        next = max(min(rejected, hint + 1), match + 1)
        probeSent = false
        return true
    }
}

/// Majority arithmetic over a set of voters.
enum Quorum {
    /// The highest index that a majority of `voters` has matched. `match` must give every voter's index.
    static func committedIndex(voters: [NodeID], match: (NodeID) -> LogIndex) -> LogIndex {
        guard !voters.isEmpty else { return 0 }
        var indexes = voters.map(match)
        indexes.sort(by: >)
        return indexes[voters.count / 2]
    }

    enum VoteResult { case pending, won, lost }

    static func voteResult(voters: [NodeID], votes: [NodeID: Bool]) -> VoteResult {
        guard !voters.isEmpty else { return .won }
        var granted = 0, rejected = 0
        for v in voters {
            switch votes[v] {
            case true?: granted += 1
            case false?: rejected += 1
            case nil: break
            }
        }
        let quorum = voters.count / 2 + 1
        if granted >= quorum { return .won }
        if rejected > voters.count - quorum { return .lost }
        return .pending
    }
}
