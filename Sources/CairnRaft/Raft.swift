/// The consensus state machine for one group. Single-threaded, deterministic, no I/O:
/// outputs accumulate in `msgs`, `msgsAfterPersist` and `readStates`, and `RawNode` hands them out.
final class Raft {
    let id: NodeID
    let cfg: RaftConfig
    let mutation: RaftMutation?

    private(set) var term: Term = 0
    var vote: NodeID = noNode
    private(set) var lead: NodeID = noNode
    private(set) var role: RaftRole = .follower
    var log: RaftLog

    /// Membership in force: the newest configuration entry in the log (effective on append, not on commit).
    private(set) var config: ConfState
    /// Configuration entries above the compaction point, oldest first; the first is the base
    /// configuration at the compaction point. Truncating the log drops the configurations it carried.
    private var configHistory: [(index: LogIndex, conf: ConfState)]

    var progress: [NodeID: Progress] = [:]
    var votes: [NodeID: Bool] = [:]
    var msgs: [Message] = []
    var msgsAfterPersist: [Message] = []
    var readStates: [ReadState] = []

    var electionElapsedTicks = 0
    private var heartbeatElapsedTicks = 0
    private var randomizedElectionTimeoutTicks = 0
    private var rng: SplitMix64
    var leadTransferee: NodeID = noNode

    // Linearizable reads (RaftReads.swift).
    var readRound: UInt64 = 0
    var pendingReads: [PendingRead] = []
    var readsAwaitingTermCommit: [(from: NodeID, requestID: UInt64)] = []
    var readBroadcastNeeded = false
    /// Set by the caller for one `step`: its clock says this leader's lease (`leaseRead`) runs now.
    var leaseRunning = false
    /// Set once this leader starts handing leadership over: the target's election is forced past the
    /// followers' leases, so this leader's own lease is void for the rest of its term.
    var leaseRevoked = false
    /// Ticks left in which this node helps elect no one (unless a leader's transfer forced the
    /// election): an election timeout from the last message it accepted from a leader, and from its
    /// start (before a restart it may have acknowledged a heartbeat it no longer remembers). A leader's
    /// read lease counts on this promise, so it is kept whatever happens to the term or the known
    /// leader meanwhile (a rejection carrying a higher term makes a node forget its leader).
    var voteHoldTicks: Int

    /// Invariant failures recorded instead of trapping; only possible while a mutation is active.
    private(set) var violations: [String] = []

    init(config: RaftConfig, storage: any RaftStorage) throws {
        config.validate()
        cfg = config
        id = config.id
        mutation = config.mutation
        rng = SplitMix64(seed: config.randomSeed ^ (config.id &* 0x9E37_79B9_7F4A_7C15))
        let (hs, baseConf) = try storage.initialState()
        log = RaftLog(storage: storage, appliedIndex: config.appliedIndex, maxApplyBytes: config.maxApplyBytes)
        configHistory = [(log.firstIndex - 1, baseConf)]
        let first = storage.firstIndex(), last = storage.lastIndex()
        if last >= first {
            for e in try storage.entries(from: first, to: last + 1, maxBytes: Int.max) where e.kind == .confChange {
                guard let cs = ConfState(decoding: e.data) else { throw RaftError.storage("corrupt configuration entry at \(e.index)") }
                configHistory.append((e.index, cs))
            }
        }
        self.config = configHistory[configHistory.count - 1].conf
        if !hs.isEmpty {
            precondition(hs.commit <= log.lastIndex, "hard state commit \(hs.commit) beyond last index \(log.lastIndex)")
            term = hs.term
            vote = hs.vote
            log.committed = max(log.committed, hs.commit)
        }
        // Only a node that has been in a term can have acknowledged a heartbeat (`RawNode.ready` holds
        // back a heartbeat's acknowledgement until the term it was sent in is on disk).
        voteHoldTicks = hs.term > 0 && config.mutation != .noStartupHold ? config.electionTimeoutTicks : 0
        if config.appliedIndex > log.committed {
            // Applied entries were committed even if the commit index was not persisted in time.
            precondition(config.appliedIndex <= log.lastIndex, "applied index beyond the log")
            log.committed = config.appliedIndex
        }
        becomeFollower(term: term, lead: noNode)
    }

    var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }

    /// Records a broken invariant. Traps in production; with a mutation active, the simulator reports it.
    @discardableResult
    func invariant(_ condition: Bool, _ message: @autoclosure () -> String) -> Bool {
        if condition { return true }
        if mutation == nil { preconditionFailure("raft \(id): invariant violated: \(message())") }
        violations.append(message())
        return false
    }

    // MARK: - Roles

    /// A copy made again whose log does not yet reach what its deleted predecessor held (`voteFloor`)
    /// never stands for election: the entries it is missing may be ones that copy helped commit, and a
    /// member of an old configuration could still vote for it.
    var isPromotable: Bool {
        config.isVoter(id) && log.unstable.snapshot == nil
            && cfg.voteFloor?.isCovered(byTerm: log.lastTerm, index: log.lastIndex) != false
    }
    var committedInCurrentTerm: Bool { log.term(at: log.committed) == term }

    private func reset(term newTerm: Term) {
        invariant(newTerm >= term, "term went back from \(term) to \(newTerm)")
        if newTerm != term {
            term = newTerm
            vote = noNode
        }
        lead = noNode
        electionElapsedTicks = 0
        heartbeatElapsedTicks = 0
        randomizedElectionTimeoutTicks = cfg.electionTimeoutTicks + Int(rng.below(UInt64(cfg.electionTimeoutTicks)))
        leadTransferee = noNode
        votes = [:]
        progress = [:]
        pendingReads = []
        readsAwaitingTermCommit = []
        readBroadcastNeeded = false
        leaseRevoked = false
    }

    func becomeFollower(term: Term, lead: NodeID) {
        reset(term: term)
        self.lead = lead
        role = .follower
    }

    func becomePreCandidate() {
        invariant(role != .leader, "leader cannot become pre-candidate")
        // Term and vote stay: a pre-election changes nothing durable.
        votes = [:]
        lead = noNode
        role = .preCandidate
    }

    func becomeCandidate() {
        invariant(role != .leader, "leader cannot become candidate")
        reset(term: term + 1)
        vote = id
        role = .candidate
    }

    func becomeLeader() {
        invariant(role == .candidate, "only a candidate can become leader")
        invariant(vote == id, "a leader voted for itself in its term")
        reset(term: term)
        lead = id
        role = .leader
        rebuildProgress()
        // A no-op of the new term: committing it commits every earlier entry (the paper's §5.4.2) and
        // unlocks ReadIndex and configuration changes.
        appendEntries([Entry(term: term, index: log.lastIndex + 1)])
    }

    private func rebuildProgress() {
        let last = log.lastIndex
        for m in config.members where progress[m] == nil {
            var pr = Progress(next: last + 1, isLearner: config.isLearner(m), maxInflight: cfg.maxInflightAppends)
            if m == id {
                pr.match = log.stableLastIndex
                pr.recentActive = true
            }
            progress[m] = pr
        }
        for m in progress.keys.sorted() where !config.isMember(m) { progress[m] = nil }
        for m in config.members { progress[m]!.isLearner = config.isLearner(m) }
    }

    // MARK: - Membership

    private func setConfig(_ c: ConfState) {
        config = c
        guard role == .leader else { return }
        rebuildProgress()
        if leadTransferee != noNode && !c.isVoter(leadTransferee) { leadTransferee = noNode }
    }

    /// Keeps the configuration in step with the log after entries from `entries[0].index` on were written.
    private func noteAppended(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        var changed = false
        while configHistory.count > 1 && configHistory[configHistory.count - 1].index >= first.index {
            configHistory.removeLast()
            changed = true
        }
        for e in entries where e.kind == .confChange {
            guard let cs = ConfState(decoding: e.data) else {
                invariant(false, "undecodable configuration entry at \(e.index)")
                continue
            }
            configHistory.append((e.index, cs))
            changed = true
        }
        if changed { setConfig(configHistory[configHistory.count - 1].conf) }
    }

    private func pruneConfigHistory() {
        // Keep the newest configuration at or below the commit index as the base.
        while configHistory.count > 1 && configHistory[1].index <= log.committed { configHistory.removeFirst() }
    }

    /// Index of the newest configuration entry (0 when the configuration came from a snapshot or bootstrap).
    var lastConfigIndex: LogIndex { configHistory[configHistory.count - 1].index }

    // MARK: - Ticks

    func tick() {
        if voteHoldTicks > 0 { voteHoldTicks -= 1 }
        switch role {
        case .leader: tickLeader()
        case .follower, .preCandidate, .candidate: tickElection()
        }
    }

    private func tickElection() {
        electionElapsedTicks += 1
        if isPromotable && electionElapsedTicks >= randomizedElectionTimeoutTicks {
            electionElapsedTicks = 0
            hup(transfer: false)
        }
    }

    private func tickLeader() {
        heartbeatElapsedTicks += 1
        electionElapsedTicks += 1
        if electionElapsedTicks >= cfg.electionTimeoutTicks {
            electionElapsedTicks = 0
            if cfg.checkQuorum {
                if !quorumActive() {
                    becomeFollower(term: term, lead: noNode)
                    return
                }
                for m in config.members where m != id { progress[m]?.recentActive = false }
            }
            // A transfer that did not finish within an election timeout is abandoned.
            leadTransferee = noNode
        }
        for m in config.members where m != id && progress[m]?.state == .snapshot {
            progress[m]!.snapshotTicks += 1
            if progress[m]!.snapshotTicks > 2 * cfg.electionTimeoutTicks {
                // The snapshot (or its acknowledgement) was lost: start over from probing.
                progress[m]!.becomeProbe()
                progress[m]!.next = progress[m]!.match + 1
            }
        }
        if heartbeatElapsedTicks >= cfg.heartbeatIntervalTicks {
            heartbeatElapsedTicks = 0
            broadcastHeartbeat()
        }
    }

    private func quorumActive() -> Bool {
        let active = config.voters.filter { $0 == id || progress[$0]?.recentActive == true }.count
        return active >= config.voters.count / 2 + 1
    }

    // MARK: - Messages in

    func step(_ m: Message) {
        if m.term > term {
            if m.kind == .vote || m.kind == .preVote {
                let forced = m.context == 1
                let inLease = cfg.checkQuorum
                    && ((lead != noNode && electionElapsedTicks < cfg.electionTimeoutTicks) || voteHoldTicks > 0)
                // A node that heard from a live leader recently ignores disruptive candidates:
                // a partitioned node that returns cannot depose a healthy leader. This promise is
                // also what a leader's read lease stands on (`leaseRead`).
                if !forced && inLease { return }
            }
            if m.kind == .preVote || (m.kind == .preVoteResponse && !m.reject) {
                // Pre-votes never change terms: a granted pre-vote is for a term the candidate has not entered.
            } else if role == .leader && mutation == .noStepDownOnHigherTerm {
                term = m.term
                vote = noNode
            } else if m.kind == .append || m.kind == .heartbeat || m.kind == .snapshot {
                becomeFollower(term: m.term, lead: m.from)
            } else {
                becomeFollower(term: m.term, lead: noNode)
            }
        } else if m.term < term {
            if (cfg.checkQuorum || cfg.preVote) && (m.kind == .heartbeat || m.kind == .append) {
                // Tell the stale leader about the newer term so it steps down.
                send(Message(kind: .appendResponse, to: m.from))
            } else if m.kind == .preVote {
                send(Message(kind: .preVoteResponse, to: m.from, reject: true))
            }
            return
        }

        switch m.kind {
        case .vote, .preVote:
            handleVoteRequest(m)
        default:
            switch role {
            case .leader: stepLeader(m)
            case .candidate, .preCandidate: stepCandidate(m)
            case .follower: stepFollower(m)
            }
        }
    }

    private func stepLeader(_ m: Message) {
        switch m.kind {
        case .appendResponse:
            handleAppendResponse(m)
        case .heartbeatResponse:
            guard var pr = progress[m.from] else { return }
            pr.recentActive = true
            pr.probeSent = false
            if pr.state == .replicate && pr.inflights.isFull { pr.inflights.freeFirst() }
            // A round never sent cannot be acknowledged: such an ack would confirm reads (and leases) unheard.
            if m.context > pr.readAckRound && m.context <= readRound { pr.readAckRound = m.context }
            progress[m.from] = pr
            // Even an empty append helps: a follower that lost entries rejects it and the leader re-probes.
            if pr.match < log.lastIndex { maybeSendAppend(to: m.from, sendIfEmpty: true) }
            releaseConfirmedReads()
        case .readIndex:
            handleFollowerRead(m)
        case .append, .heartbeat, .snapshot:
            invariant(false, "leader \(id) got \(m.kind) from \(m.from) in its own term \(term)")
        default:
            break
        }
    }

    private func handleAppendResponse(_ m: Message) {
        guard var pr = progress[m.from] else { return }
        guard invariant(m.reject || m.index <= log.lastIndex,
                        "follower \(m.from) acknowledged index \(m.index) beyond our last index \(log.lastIndex)") else { return }
        pr.recentActive = true
        if m.reject {
            var hint = m.rejectHint
            if m.logTerm > 0 { hint = log.findConflictByTerm(index: m.rejectHint, term: m.logTerm).0 }
            if pr.maybeDecrease(rejected: m.index, hint: hint) {
                if pr.state == .replicate { pr.becomeProbe() }
                progress[m.from] = pr
                maybeSendAppend(to: m.from, sendIfEmpty: true)
            } else {
                progress[m.from] = pr
            }
            return
        }
        let wasPaused = pr.isPaused
        guard pr.maybeUpdate(m.index) else {
            progress[m.from] = pr
            return
        }
        switch pr.state {
        case .probe: pr.becomeReplicate()
        case .snapshot: if pr.match >= pr.pendingSnapshot { pr.becomeProbe() }
        case .replicate: pr.inflights.freeUpTo(m.index)
        }
        progress[m.from] = pr
        if maybeCommit() {
            broadcastAppend()
        } else if wasPaused || (pr.state == .replicate && pr.sentCommit < log.committed) {
            // Unblocked, or it missed the commit broadcast while paused: tell it the commit index now.
            maybeSendAppend(to: m.from, sendIfEmpty: pr.sentCommit < log.committed)
        }
        // Keep the pipeline full.
        while role == .leader && maybeSendAppend(to: m.from, sendIfEmpty: false) {}
        if role == .leader && m.from == leadTransferee && progress[m.from]?.match == log.lastIndex {
            send(Message(kind: .timeoutNow, to: m.from))
        }
    }

    private func stepFollower(_ m: Message) {
        switch m.kind {
        case .append:
            electionElapsedTicks = 0
            lead = m.from
            handleAppend(m)
        case .heartbeat:
            electionElapsedTicks = 0
            lead = m.from
            handleHeartbeat(m)
        case .snapshot:
            electionElapsedTicks = 0
            lead = m.from
            handleSnapshot(m)
        case .timeoutNow:
            hup(transfer: true)
        case .readIndexResponse:
            readStates.append(ReadState(index: m.index, requestID: m.context))
        default:
            break
        }
    }

    func handleAppend(_ m: Message) {
        holdVote()
        if m.index < log.committed {
            send(Message(kind: .appendResponse, to: m.from, index: log.committed))
            return
        }
        guard log.matchTerm(m.index, m.logTerm) else {
            let (hintIndex, hintTerm) = log.findConflictByTerm(index: min(m.index, log.lastIndex), term: m.logTerm)
            send(Message(kind: .appendResponse, to: m.from, logTerm: hintTerm, index: m.index, reject: true,
                         rejectHint: hintIndex))
            return
        }
        let lastNew = m.index + LogIndex(m.entries.count)
        let conflict = log.findConflict(m.entries)
        if conflict != 0 {
            guard invariant(conflict > log.committed, "entry \(conflict) from leader \(m.from) conflicts with committed entry (commit \(log.committed))") else { return }
            appendEntries(Array(m.entries[Int(conflict - m.index - 1)...]))
        }
        log.commitTo(min(m.commit, lastNew))
        send(Message(kind: .appendResponse, to: m.from, index: lastNew))
    }

    func handleHeartbeat(_ m: Message) {
        holdVote()
        log.commitTo(min(m.commit, log.lastIndex))
        send(Message(kind: .heartbeatResponse, to: m.from, context: m.context))
    }

    func handleSnapshot(_ m: Message) {
        holdVote()
        guard let s = m.snapshot else { return }
        if restore(s) {
            send(Message(kind: .appendResponse, to: m.from, index: log.lastIndex))
        } else {
            send(Message(kind: .appendResponse, to: m.from, index: log.committed))
        }
    }

    private func restore(_ s: Snapshot) -> Bool {
        let meta = s.metadata
        if meta.index <= log.committed { return false }
        if log.matchTerm(meta.index, meta.term) {
            // We already hold the snapshot's last entry: just move the commit index forward.
            log.commitTo(meta.index)
            return false
        }
        log.restore(s)
        configHistory = [(meta.index, meta.confState)]
        setConfig(meta.confState)
        return true
    }

    // MARK: - Messages out

    func send(_ message: Message) {
        var m = message
        m.from = id
        if m.term == 0 { m.term = term }
        switch m.kind {
        case .appendResponse, .voteResponse, .vote:
            // These promise durable state (an append, a vote, a term): they wait for the persist.
            if mutation == .replyBeforePersist { msgs.append(m) } else { msgsAfterPersist.append(m) }
        default:
            msgs.append(m)
        }
    }

    /// Sends the follower what it is missing. Returns true if a message was sent.
    @discardableResult
    func maybeSendAppend(to target: NodeID, sendIfEmpty: Bool) -> Bool {
        guard target != id, var pr = progress[target], !pr.isPaused else { return false }
        let prevIndex = pr.next - 1
        guard let prevTerm = log.term(at: prevIndex),
              let entries = try? log.entries(from: pr.next, maxBytes: cfg.maxMessageBytes) else {
            return sendSnapshot(to: target)
        }
        if entries.isEmpty && !sendIfEmpty { return false }
        send(Message(kind: .append, to: target, logTerm: prevTerm, index: prevIndex, entries: entries,
                     commit: log.committed))
        pr.sentEntries(lastIndex: entries.last?.index ?? prevIndex, count: entries.count)
        pr.sentCommit = max(pr.sentCommit, log.committed)
        progress[target] = pr
        return true
    }

    private func sendSnapshot(to target: NodeID) -> Bool {
        guard var pr = progress[target], pr.recentActive else { return false }
        let snap: Snapshot
        if let s = log.unstable.snapshot {
            snap = s
        } else {
            guard let s = try? log.storage.snapshot(), !s.isEmpty else { return false }
            snap = s
        }
        pr.becomeSnapshot(snap.metadata.index)
        progress[target] = pr
        send(Message(kind: .snapshot, to: target, snapshot: snap))
        return true
    }

    func broadcastAppend() {
        for m in config.members where m != id { maybeSendAppend(to: m, sendIfEmpty: true) }
    }

    func broadcastHeartbeat() {
        readRound += 1
        readBroadcastNeeded = false
        for m in config.members where m != id {
            let commit = min(progress[m]?.match ?? 0, log.committed)
            if commit > (progress[m]?.sentCommit ?? 0) { progress[m]?.sentCommit = commit }
            send(Message(kind: .heartbeat, to: m, commit: commit, context: readRound))
        }
        releaseConfirmedReads()
    }

    // MARK: - Log and commit

    func appendEntries(_ entries: [Entry]) {
        log.append(entries)
        noteAppended(entries)
    }

    /// Advances the commit index to what a quorum of voters holds durably, but only through an entry of
    /// the current term: counting replicas of an older term's entry is not enough (the paper's Figure 8).
    @discardableResult
    func maybeCommit() -> Bool {
        let quorumIndex = Quorum.committedIndex(voters: config.voters) { self.progress[$0]?.match ?? 0 }
        guard quorumIndex > log.committed else { return false }
        guard mutation == .commitOldTermByCount || log.term(at: quorumIndex) == term else { return false }
        log.commitTo(quorumIndex)
        afterCommitAdvanced()
        return true
    }

    private func afterCommitAdvanced() {
        pruneConfigHistory()
        if committedInCurrentTerm && !readsAwaitingTermCommit.isEmpty {
            let waiting = readsAwaitingTermCommit
            readsAwaitingTermCommit = []
            for r in waiting { handleReadRequest(from: r.from, requestID: r.requestID) }
        }
        if !config.isVoter(id) && lastConfigIndex <= log.committed {
            // This leader was removed (or demoted) and the change is committed: hand over and step down.
            let successor = config.voters.max { (progress[$0]?.match ?? 0) < (progress[$1]?.match ?? 0) }
            if let s = successor, progress[s]?.match == log.lastIndex { send(Message(kind: .timeoutNow, to: s)) }
            becomeFollower(term: term, lead: noNode)
        }
    }

    /// The application made the log durable through `stableLastIndex`; the leader counts itself now.
    func persisted() {
        guard role == .leader, var pr = progress[id] else { return }
        if pr.maybeUpdate(log.stableLastIndex) {
            progress[id] = pr
            if maybeCommit() { broadcastAppend() }
        }
    }
}
