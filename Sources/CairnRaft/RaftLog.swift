/// Entries and a snapshot that the application has not yet made durable.
struct UnstableLog {
    var snapshot: Snapshot?
    var entries: [Entry] = []
    /// Index of entries[0] (or where it would be).
    var offset: LogIndex

    var firstIndexIfSnapshot: LogIndex? { snapshot.map { $0.metadata.index + 1 } }

    var lastIndex: LogIndex? {
        if let last = entries.last { return last.index }
        return snapshot?.metadata.index
    }

    func term(at index: LogIndex) -> Term? {
        if index < offset {
            if let s = snapshot, s.metadata.index == index { return s.metadata.term }
            return nil
        }
        guard let last = lastIndex, index <= last else { return nil }
        return entries[Int(index - offset)].term
    }

    /// The application made everything up to (index, term) durable.
    mutating func stableTo(index: LogIndex, term: Term) {
        // An entry that was replaced after the Ready was taken stays unstable.
        guard let t = self.term(at: index), t == term, index >= offset else { return }
        entries.removeFirst(Int(index + 1 - offset))
        offset = index + 1
    }

    mutating func stableSnapshotTo(index: LogIndex) {
        if let s = snapshot, s.metadata.index == index { snapshot = nil }
    }

    mutating func restore(_ s: Snapshot) {
        offset = s.metadata.index + 1
        entries = []
        snapshot = s
    }

    mutating func truncateAndAppend(_ ents: [Entry]) {
        let first = ents[0].index
        if first == offset + LogIndex(entries.count) {
            entries.append(contentsOf: ents)
        } else if first <= offset {
            // Replaces everything unstable (and shadows the storage suffix from `first` on).
            offset = first
            entries = ents
        } else {
            entries.removeSubrange(Int(first - offset)...)
            entries.append(contentsOf: ents)
        }
    }

    func slice(_ lo: LogIndex, _ hi: LogIndex) -> ArraySlice<Entry> {
        precondition(lo >= offset && hi <= offset + LogIndex(entries.count) && lo <= hi, "unstable slice out of range")
        return entries[Int(lo - offset)..<Int(hi - offset)]
    }
}

/// The node's view of the log: durable entries in storage plus the unstable tail.
struct RaftLog {
    let storage: any RaftStorage
    var unstable: UnstableLog
    /// Highest index known to be committed by a quorum.
    var committed: LogIndex
    /// Highest index handed to the application to apply.
    var applying: LogIndex
    /// Highest index the application confirmed applied.
    var applied: LogIndex
    let maxApplyBytes: Int

    init(storage: any RaftStorage, appliedIndex: LogIndex, maxApplyBytes: Int) {
        self.storage = storage
        let first = storage.firstIndex()
        let last = storage.lastIndex()
        unstable = UnstableLog(offset: last + 1)
        committed = first - 1
        applied = max(first - 1, appliedIndex)
        applying = applied
        self.maxApplyBytes = maxApplyBytes
    }

    var firstIndex: LogIndex {
        if let i = unstable.firstIndexIfSnapshot { return i }
        return storage.firstIndex()
    }

    var lastIndex: LogIndex {
        if let i = unstable.lastIndex { return i }
        return storage.lastIndex()
    }

    /// Last index that is durable (in storage and not shadowed by an unstable replacement).
    var stableLastIndex: LogIndex {
        // Until a received snapshot is durable, nothing past it is either, and nothing before it matters.
        if unstable.snapshot != nil { return 0 }
        return min(storage.lastIndex(), unstable.offset - 1)
    }

    /// Term at `index`, or nil when compacted or beyond the end.
    func term(at index: LogIndex) -> Term? {
        let dummy = firstIndex - 1
        if index < dummy || index > lastIndex { return nil }
        if let t = unstable.term(at: index) { return t }
        return try? storage.term(at: index)
    }

    var lastTerm: Term { term(at: lastIndex) ?? 0 }

    func matchTerm(_ index: LogIndex, _ term: Term) -> Bool { self.term(at: index) == term }

    func isUpToDate(lastIndex candidateIndex: LogIndex, lastTerm candidateTerm: Term) -> Bool {
        LastEntry(term: lastTerm, index: lastIndex).isCovered(byTerm: candidateTerm, index: candidateIndex)
    }

    /// Index of the first entry that is new or disagrees in term with the log; 0 if all are present.
    func findConflict(_ entries: [Entry]) -> LogIndex {
        for e in entries where !matchTerm(e.index, e.term) { return e.index }
        return 0
    }

    /// The largest index <= `index` whose term is <= `term`: where the leader should probe next after a
    /// rejection, skipping whole terms at once.
    func findConflictByTerm(index: LogIndex, term: Term) -> (LogIndex, Term) {
        var i = index
        while true {
            guard let t = self.term(at: i) else { return (i, 0) }
            if t <= term { return (i, t) }
            if i == 0 { return (0, 0) }
            i -= 1
        }
    }

    @discardableResult
    mutating func append(_ entries: [Entry]) -> LogIndex {
        guard let first = entries.first else { return lastIndex }
        precondition(first.index > committed, "appending over committed entry \(first.index) (committed \(committed))")
        precondition(first.index <= lastIndex + 1, "append leaves a gap")
        unstable.truncateAndAppend(entries)
        return lastIndex
    }

    mutating func commitTo(_ index: LogIndex) {
        guard index > committed else { return }
        precondition(index <= lastIndex, "commit index \(index) beyond last index \(lastIndex)")
        committed = index
    }

    /// Entries in lo..<hi from storage and the unstable tail, about `maxBytes` at most (at least one).
    func slice(_ lo: LogIndex, _ hi: LogIndex, maxBytes: Int) throws(StorageError) -> [Entry] {
        if lo >= hi { return [] }
        if lo < firstIndex { throw .compacted }
        precondition(hi <= lastIndex + 1, "slice beyond the log")
        var out: [Entry] = []
        if lo < unstable.offset {
            out = try storage.entries(from: lo, to: min(hi, unstable.offset), maxBytes: maxBytes)
            if LogIndex(out.count) < min(hi, unstable.offset) - lo { return out }
        }
        if hi > unstable.offset {
            var bytes = out.reduce(0) { $0 + $1.sizeBytes }
            for e in unstable.slice(max(lo, unstable.offset), hi) {
                bytes += e.sizeBytes
                if !out.isEmpty && bytes > maxBytes { break }
                out.append(e)
            }
        }
        return out
    }

    func entries(from lo: LogIndex, maxBytes: Int) throws(StorageError) -> [Entry] {
        if lo > lastIndex { return [] }
        return try slice(lo, lastIndex + 1, maxBytes: maxBytes)
    }

    var unstableEntries: [Entry] { unstable.entries }

    /// Highest index that may be handed to the application: committed and durable here.
    func applyLimit(allowUncommitted: Bool) -> LogIndex {
        min(allowUncommitted ? lastIndex : committed, stableLastIndex)
    }

    func nextCommittedEntries(allowUncommitted: Bool) -> [Entry] {
        let lo = max(applying + 1, firstIndex)
        let hi = applyLimit(allowUncommitted: allowUncommitted) + 1
        guard lo < hi else { return [] }
        // Storage failing here means the application compacted unapplied entries: a broken contract.
        do { return try slice(lo, hi, maxBytes: maxApplyBytes) } catch { preconditionFailure("cannot read entries to apply: \(error)") }
    }

    func hasNextCommittedEntries(allowUncommitted: Bool) -> Bool {
        max(applying + 1, firstIndex) <= applyLimit(allowUncommitted: allowUncommitted)
    }

    mutating func restore(_ s: Snapshot) {
        committed = s.metadata.index
        unstable.restore(s)
    }
}
