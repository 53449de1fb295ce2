/// Volatile state worth telling the application about when it changes.
public struct SoftState: Sendable, Equatable {
    public var lead: NodeID
    public var role: RaftRole
}

/// A batch of work for the application. Handle it in this order:
/// 1. send `messages` (they may go out at once, in parallel with the write below);
/// 2. write `snapshot`, `entries` and then `hardState` to stable storage and sync (if `mustSync`);
/// 3. send `messagesAfterPersist` (vote grants, append acknowledgements: promises about durable state);
/// 4. apply `snapshot` and then `committedEntries` to the state machine; serve `readStates` once applied.
///    Committed entries are always ones persisted by an earlier `Ready`, so without a snapshot they may be
///    applied at once, in parallel with steps 1–3;
/// 5. call `advance(_:)` before asking for the next `Ready`.
public struct Ready: Sendable {
    public var softState: SoftState?
    public var hardState: HardState?
    public var entries: [Entry] = []
    public var snapshot: Snapshot?
    public var committedEntries: [Entry] = []
    public var messages: [Message] = []
    public var messagesAfterPersist: [Message] = []
    public var readStates: [ReadState] = []
    /// True when the write in step 2 must be synced before step 3.
    public var mustSync: Bool = false
}

public struct Status: Sendable, Equatable {
    public var id: NodeID
    public var term: Term
    public var vote: NodeID
    public var lead: NodeID
    public var role: RaftRole
    public var commit: LogIndex
    public var applied: LogIndex
    public var firstIndex: LogIndex
    public var lastIndex: LogIndex
    public var config: ConfState
    /// Index of the newest configuration entry (uncommitted while it exceeds `commit`).
    public var configIndex: LogIndex
    /// Replication progress per member; only on the leader.
    public var progress: [NodeID: Progress]
    public var leadTransferee: NodeID
}

/// The application-facing handle on one Raft group: feed it ticks, messages and requests; take `Ready`s.
/// Not thread-safe; the owner serializes all calls (one group is driven by one task or thread at a time).
public final class RawNode {
    private let raft: Raft
    private var previousSoft: SoftState
    private var previousHard: HardState
    private var awaitingAdvance = false

    public init(config: RaftConfig, storage: any RaftStorage) throws {
        raft = try Raft(config: config, storage: storage)
        previousSoft = SoftState(lead: raft.lead, role: raft.role)
        previousHard = raft.hardState
    }

    public func tick() { raft.tick() }

    /// Feeds a message from a peer, unless it is malformed, impossible or out of place (see
    /// `MessageCheck.swift`): then it changes nothing, and the reason is returned for the caller to log
    /// and count.
    ///
    /// `leaseRunning`: the caller's `LeaseClock` just confirmed this leader's `leaseRead`; a follower's
    /// ReadIndex request is then answered at once, without a heartbeat round.
    @discardableResult
    public func step(_ message: Message, leaseRunning: Bool = false) -> String? {
        if let why = raft.refusal(message) { return why }
        raft.leaseRunning = leaseRunning
        defer { raft.leaseRunning = false }
        raft.step(message)
        return nil
    }

    /// Starts an election now, as the target of a leadership transfer does (followers' leases do not
    /// hold it back): for tests and tools that choose a leader.
    public func forceCampaign() { raft.hup(transfer: true) }

    /// Proposes one entry; returns its index. Only the leader accepts proposals.
    @discardableResult
    public func propose(_ data: [UInt8]) throws(RaftError) -> LogIndex {
        try raft.propose([data]).lowerBound
    }

    /// Proposes several entries in one append; returns their indexes.
    @discardableResult
    public func propose(batch: [[UInt8]]) throws(RaftError) -> ClosedRange<LogIndex> {
        try raft.propose(batch)
    }

    /// Proposes a membership change; returns the index of its entry. One change at a time.
    @discardableResult
    public func proposeConfChange(_ change: ConfChange) throws(RaftError) -> LogIndex {
        try raft.proposeConfChange(change)
    }

    /// Requests a linearizable read point. A `ReadState` with `requestID` appears in a later `Ready`
    /// (or never, if leadership changes first: the caller retries after a timeout).
    public func readIndex(requestID: UInt64) throws(RaftError) {
        try raft.readIndex(requestID: requestID)
    }

    /// The read point a leader's lease allows, if it holds one; valid only until `LeaseClock` says it
    /// expired. A read served at `index` (once applied that far) is linearizable without a round of its own.
    public var leaseRead: LeaseRead? { raft.leaseRead }

    public func transferLeadership(to target: NodeID) throws(RaftError) {
        try raft.transferLeadership(to: target)
    }

    /// The transport could not reach `target`; the leader stops pipelining to it.
    public func reportUnreachable(_ target: NodeID) { raft.reportUnreachable(target) }

    public func reportSnapshot(to target: NodeID, failed: Bool) { raft.reportSnapshot(to: target, failed: failed) }

    private var allowUncommittedApply: Bool { raft.mutation == .applyBeforeCommit }

    public var hasReady: Bool {
        if awaitingAdvance { return false }
        let soft = SoftState(lead: raft.lead, role: raft.role)
        return soft != previousSoft
            || raft.hardState != previousHard
            || raft.log.unstable.snapshot != nil
            || !raft.log.unstable.entries.isEmpty
            || !raft.msgs.isEmpty
            || !raft.msgsAfterPersist.isEmpty
            || !raft.readStates.isEmpty
            || (raft.role == .leader && raft.readBroadcastNeeded)
            || raft.log.hasNextCommittedEntries(allowUncommitted: allowUncommittedApply)
    }

    /// Takes the pending work. Call `advance(_:)` once it is handled, before the next `ready()`.
    public func ready() -> Ready {
        precondition(!awaitingAdvance, "ready() called again before advance()")
        raft.flushReadBroadcast()
        var rd = Ready()
        let soft = SoftState(lead: raft.lead, role: raft.role)
        if soft != previousSoft {
            rd.softState = soft
            previousSoft = soft
        }
        let hard = raft.hardState
        let termChanged = hard.term != previousHard.term
        if hard != previousHard {
            rd.hardState = hard
            rd.mustSync = termChanged || hard.vote != previousHard.vote
            previousHard = hard
        }
        rd.entries = raft.log.unstable.entries
        rd.snapshot = raft.log.unstable.snapshot
        if !rd.entries.isEmpty || rd.snapshot != nil { rd.mustSync = true }
        rd.committedEntries = raft.log.nextCommittedEntries(allowUncommitted: allowUncommittedApply)
        if let last = rd.committedEntries.last {
            // (The apply-before-commit mutation is exactly the removal of this guard.)
            if !allowUncommittedApply {
                raft.invariant(last.index <= raft.log.committed, "handing out entry \(last.index) beyond commit \(raft.log.committed)")
            }
            raft.invariant(rd.committedEntries.first!.index == raft.log.applying + 1 || rd.snapshot != nil
                           || rd.committedEntries.first!.index == raft.log.firstIndex,
                           "gap in the entries handed out to apply")
            raft.log.applying = last.index
        }
        if let s = rd.snapshot { raft.log.applying = max(raft.log.applying, s.metadata.index) }
        rd.messages = raft.msgs
        rd.messagesAfterPersist = raft.msgsAfterPersist
        if termChanged && raft.mutation != .replyBeforePersist && rd.messages.contains(where: { $0.kind == .heartbeatResponse }) {
            // Acknowledging a heartbeat promises not to vote for an election timeout, and a node
            // restarted in term 0 makes no such promise (`Raft.voteHoldTicks`): the first
            // acknowledgement in a term waits until the term is on disk.
            rd.messagesAfterPersist += rd.messages.filter { $0.kind == .heartbeatResponse }
            rd.messages.removeAll { $0.kind == .heartbeatResponse }
        }
        rd.readStates = raft.readStates
        raft.msgs = []
        raft.msgsAfterPersist = []
        raft.readStates = []
        awaitingAdvance = true
        return rd
    }

    /// The application persisted and applied everything in `rd`.
    public func advance(_ rd: Ready) {
        precondition(awaitingAdvance, "advance() without ready()")
        awaitingAdvance = false
        if let s = rd.snapshot { raft.log.unstable.stableSnapshotTo(index: s.metadata.index) }
        if let last = rd.entries.last { raft.log.unstable.stableTo(index: last.index, term: last.term) }
        if let last = rd.committedEntries.last { raft.log.applied = max(raft.log.applied, last.index) }
        if let s = rd.snapshot { raft.log.applied = max(raft.log.applied, s.metadata.index) }
        raft.persisted()
    }

    public var status: Status {
        Status(id: raft.id, term: raft.term, vote: raft.vote, lead: raft.lead, role: raft.role,
               commit: raft.log.committed, applied: raft.log.applied, firstIndex: raft.log.firstIndex,
               lastIndex: raft.log.lastIndex, config: raft.config, configIndex: raft.lastConfigIndex,
               progress: raft.role == .leader ? raft.progress : [:], leadTransferee: raft.leadTransferee)
    }

    public var id: NodeID { raft.id }
    public var role: RaftRole { raft.role }
    public var term: Term { raft.term }
    public var lead: NodeID { raft.lead }

    /// Term of the entry at `index` in this node's log (unstable tail included); nil if absent or compacted.
    public func term(at index: LogIndex) -> Term? { raft.log.term(at: index) }

    /// Broken invariants recorded instead of trapping (only while a mutation is active).
    @_spi(Mutants) public var invariantViolations: [String] { raft.violations }
}
