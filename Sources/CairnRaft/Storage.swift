public enum StorageError: Error, Sendable, Equatable {
    /// The requested index is at or below the compaction point.
    case compacted
    /// The requested index is beyond the last entry.
    case unavailable
    /// A snapshot is being produced; the leader will try again later.
    case snapshotTemporarilyUnavailable
}

/// The durable part of the log as the core reads it. The application writes to it (after a `Ready`)
/// and the core only reads. Everything returned must already be durable.
public protocol RaftStorage: AnyObject {
    /// Hard state, and the membership in force at the compaction point (`firstIndex() - 1`).
    func initialState() throws -> (HardState, ConfState)
    /// Entries in `lo..<hi`, truncated to about `maxBytes` (at least one entry when the range is non-empty).
    func entries(from lo: LogIndex, to hi: LogIndex, maxBytes: Int) throws(StorageError) -> [Entry]
    /// Term of the entry at `index`; valid for `firstIndex() - 1 ... lastIndex()`.
    func term(at index: LogIndex) throws(StorageError) -> Term
    /// Index of the first entry still held (one past the snapshot index).
    func firstIndex() -> LogIndex
    func lastIndex() -> LogIndex
    func snapshot() throws(StorageError) -> Snapshot
}

/// An in-memory `RaftStorage` for tests and the simulator. Not thread-safe: one owner at a time.
public final class MemoryStorage: RaftStorage {
    public private(set) var hardState = HardState()
    public private(set) var snapshotValue = Snapshot()
    /// entries[0] is a sentinel holding the snapshot's index and term.
    private var log: [Entry] = [Entry(term: 0, index: 0)]

    public init() {}

    /// A storage for a brand-new cluster member whose initial membership is `confState`.
    public convenience init(bootstrap confState: ConfState) {
        self.init()
        snapshotValue = Snapshot(metadata: SnapshotMetadata(index: 0, term: 0, confState: confState))
    }

    public func initialState() throws -> (HardState, ConfState) { (hardState, snapshotValue.metadata.confState) }

    public func setHardState(_ hs: HardState) { hardState = hs }

    private var offset: LogIndex { log[0].index }

    public func firstIndex() -> LogIndex { offset + 1 }
    public func lastIndex() -> LogIndex { offset + LogIndex(log.count) - 1 }

    public func term(at index: LogIndex) throws(StorageError) -> Term {
        if index < offset { throw .compacted }
        if index > lastIndex() { throw .unavailable }
        return log[Int(index - offset)].term
    }

    public func entries(from lo: LogIndex, to hi: LogIndex, maxBytes: Int) throws(StorageError) -> [Entry] {
        if lo <= offset { throw .compacted }
        if hi > lastIndex() + 1 { throw .unavailable }
        precondition(lo <= hi, "entries(from:to:) with lo > hi")
        var out: [Entry] = []
        var bytes = 0
        for i in lo..<hi {
            let e = log[Int(i - offset)]
            bytes += e.sizeBytes
            if !out.isEmpty && bytes > maxBytes { break }
            out.append(e)
        }
        return out
    }

    public func snapshot() throws(StorageError) -> Snapshot { snapshotValue }

    /// Appends entries, replacing any existing suffix they conflict with.
    public func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        precondition(first.index > offset, "append below the snapshot index \(offset)")
        precondition(first.index <= lastIndex() + 1, "append leaves a gap: \(first.index) after \(lastIndex())")
        log.removeSubrange(Int(first.index - offset)...)
        log.append(contentsOf: entries)
    }

    /// Replaces the whole log with a snapshot received from the leader.
    public func applySnapshot(_ snap: Snapshot) {
        precondition(snap.metadata.index >= offset, "snapshot older than the current one")
        snapshotValue = snap
        log = [Entry(term: snap.metadata.term, index: snap.metadata.index)]
    }

    /// Records a snapshot of the state machine taken at `index` (which must be applied, hence held here).
    public func createSnapshot(at index: LogIndex, confState: ConfState, data: [UInt8]) {
        precondition(index > offset && index <= lastIndex(), "snapshot index \(index) outside the log")
        snapshotValue = Snapshot(metadata: SnapshotMetadata(index: index, term: log[Int(index - offset)].term,
                                                            confState: confState), data: data)
    }

    /// Drops entries up to and including `index` (which must not exceed the snapshot index).
    public func compact(upTo index: LogIndex) {
        guard index > offset else { return }
        precondition(index <= snapshotValue.metadata.index, "compacting past the snapshot loses entries")
        let keep = Entry(term: log[Int(index - offset)].term, index: index)
        log.removeSubrange(0...Int(index - offset))
        log.insert(keep, at: 0)
    }
}
