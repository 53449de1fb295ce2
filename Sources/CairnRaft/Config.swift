public struct RaftConfig: Sendable {
    public var id: NodeID
    /// Ticks without hearing from a leader before a follower starts an election. The actual timeout is
    /// randomized in [electionTimeoutTicks, 2 * electionTimeoutTicks).
    public var electionTimeoutTicks: Int = 10
    public var heartbeatIntervalTicks: Int = 1
    /// Upper bound on the entry bytes in one append message (at least one entry is always sent).
    public var maxMessageBytes: Int = 1 << 20
    /// Appends in flight to one follower in replicate mode before the leader waits for acknowledgements.
    public var maxInflightAppends: Int = 256
    /// Upper bound on the bytes of committed entries handed out in one `Ready`.
    public var maxApplyBytes: Int = 16 << 20
    /// Index the application's state machine has already applied (it is never handed out again).
    public var appliedIndex: LogIndex = 0
    public var preVote: Bool = true
    public var checkQuorum: Bool = true
    /// Seeds the election-timeout randomization. The core has no randomness of its own.
    public var randomSeed: UInt64
    /// The last entry an earlier copy of this group on this node held, kept when that copy was deleted
    /// (nil: there was none). A copy made again starts empty, yet it votes only for candidates at
    /// least this up to date, as the deleted copy would have, and stands for election only once its
    /// own log is: deleting a copy must not take back the entries a quorum counted it for, or a member
    /// several configurations behind could win an election among the old members (two leaders;
    /// found by the sharded simulator).
    public var voteFloor: LastEntry? = nil

    /// Deliberate bug injected for simulator self-tests; never set by production code.
    @_spi(Mutants) public var mutation: RaftMutation? = nil

    public init(id: NodeID, randomSeed: UInt64) {
        self.id = id
        self.randomSeed = randomSeed
    }

    func validate() {
        precondition(id != noNode, "node id 0 is reserved")
        precondition(heartbeatIntervalTicks > 0, "heartbeatIntervalTicks must be positive")
        precondition(electionTimeoutTicks > heartbeatIntervalTicks, "electionTimeoutTicks must exceed heartbeatIntervalTicks")
        precondition(maxInflightAppends > 0, "maxInflightAppends must be positive")
        precondition(maxMessageBytes > 0 && maxApplyBytes > 0, "byte limits must be positive")
    }
}

/// A log's last entry, as a vote compares logs.
public struct LastEntry: Sendable, Equatable {
    public var term: Term
    public var index: LogIndex

    public init(term: Term, index: LogIndex) {
        self.term = term
        self.index = index
    }

    /// Whether a log ending at (`lastTerm`, `lastIndex`) is at least as up to date as this one.
    public func isCovered(byTerm lastTerm: Term, index lastIndex: LogIndex) -> Bool {
        lastTerm > term || (lastTerm == term && lastIndex >= index)
    }
}

/// Known-wrong variants of the core. They exist to prove that the simulator catches each class of bug.
@_spi(Mutants) public enum RaftMutation: String, Sendable, CaseIterable {
    /// Advance the commit index by counting replicas of an entry from an earlier term (Raft paper, Figure 8).
    case commitOldTermByCount = "commit-old-term"
    /// Grant votes without checking that the candidate's log is at least as up to date.
    case voteWithoutLogCheck = "vote-without-log-check"
    /// Send vote grants and append acknowledgements before the state they promise is durable.
    case replyBeforePersist = "reply-before-persist"
    /// Answer ReadIndex before the leader has committed an entry of its own term.
    case readIndexBeforeTermCommit = "read-before-term-commit"
    /// Hand entries to the application as soon as they are in the log, before they commit.
    case applyBeforeCommit = "apply-before-commit"
    /// A leader that sees a higher term adopts it but keeps leading.
    case noStepDownOnHigherTerm = "no-step-down"
    /// A read lease that lasts three election timeouts: longer than followers promise not to vote.
    case leaseOutlivesElectionTimeout = "lease-outlives-election-timeout"
    /// A leader that keeps its read lease while it hands leadership over (the target's election is forced).
    case leaseSurvivesTransfer = "lease-survives-transfer"
    /// A restarted node votes at once, forgetting heartbeats it acknowledged before it went down.
    case noStartupHold = "no-startup-hold"
}

/// SplitMix64: small, fast, good enough for timeout jitter, and reproducible from its seed.
public struct SplitMix64: Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<bound (bound > 0).
    public mutating func below(_ bound: UInt64) -> UInt64 {
        precondition(bound > 0)
        return next() % bound
    }
}
