/// A leader's read lease as the core sees it: a quorum acknowledged heartbeat round `round` of `term`,
/// so no other leader can be elected for `durationTicks` ticks after that round was sent.
public struct LeaseRead: Sendable, Equatable {
    public var term: Term
    public var round: UInt64
    /// The commit index now: a read served once this is applied is linearizable.
    public var index: LogIndex
    public var durationTicks: Int
}

/// When each heartbeat round left a leader, in the caller's monotonic clock: the other half of a lease.
///
/// The core counts ticks, and ticks are not time: a paused process or a quiesced group stops ticking
/// while the rest of the cluster moves on, so a lease measured in the leader's ticks would outlive the
/// followers' promises. The caller records each round as it sends it (any time at or before the bytes
/// leave is safe: the followers start counting when they receive it) and asks with the time now.
public struct LeaseClock: Sendable {
    /// Rounds remembered: enough for the rounds in flight in one election timeout, and a bound.
    public static let maxRounds = 64

    private var sent: [(round: UInt64, atNanos: UInt64)] = []

    public init() {}

    /// Records the heartbeat rounds among `messages`, about to be sent at `nowNanos`.
    public mutating func recordSent(_ messages: [Message], atNanos nowNanos: UInt64) {
        for m in messages where m.kind == .heartbeat && m.context > (sent.last?.round ?? 0) {
            sent.append((m.context, nowNanos))
            if sent.count > Self.maxRounds { sent.removeFirst(sent.count - Self.maxRounds) }
        }
    }

    /// The read index `lease` allows at `nowNanos`, or nil once it has expired (or was never recorded).
    public mutating func index(_ lease: LeaseRead?, nowNanos: UInt64, nanosPerTick: UInt64) -> LogIndex? {
        guard let lease, let i = sent.lastIndex(where: { $0.round <= lease.round }) else { return nil }
        // Rounds before the confirmed one can never matter again.
        if i > 0 { sent.removeFirst(i) }
        let expires = sent[0].atNanos &+ UInt64(lease.durationTicks) &* nanosPerTick
        return nowNanos < expires ? lease.index : nil
    }
}
