import CairnRaft
import Foundation

/// What one Raft group persists from one `Ready`.
public struct GroupWrite: Sendable {
    public var group: UInt64
    public var entries: [Entry]
    public var hardState: HardState?
    /// Set when the group installed a snapshot received from its leader.
    public var snapshot: SnapshotMetadata?

    public init(group: UInt64, entries: [Entry] = [], hardState: HardState? = nil, snapshot: SnapshotMetadata? = nil) {
        self.group = group
        self.entries = entries
        self.hardState = hardState
        self.snapshot = snapshot
    }
}

/// The durable Raft log of one group, as its `RawNode` reads it. Only `LogStore` changes it, and only
/// after the change is synced.
public final class GroupLog: RaftStorage {
    public let group: UInt64
    let memory = MemoryStorage()

    init(group: UInt64) { self.group = group }

    public func initialState() throws -> (HardState, ConfState) { try memory.initialState() }
    public func entries(from lo: LogIndex, to hi: LogIndex, maxBytes: Int) throws(StorageError) -> [Entry] {
        try memory.entries(from: lo, to: hi, maxBytes: maxBytes)
    }
    public func term(at index: LogIndex) throws(StorageError) -> Term { try memory.term(at: index) }
    public func firstIndex() -> LogIndex { memory.firstIndex() }
    public func lastIndex() -> LogIndex { memory.lastIndex() }
    public func snapshot() throws(StorageError) -> Snapshot {
        let meta = memory.snapshotValue.metadata
        if meta.index == 0 { return Snapshot(metadata: meta) }
        guard let load = snapshotData, let data = try? load(meta) else { throw .snapshotTemporarilyUnavailable }
        return Snapshot(metadata: meta, data: data)
    }

    /// Produces the state-machine snapshot for the log's compaction point (set by the node runtime,
    /// which keeps the snapshot files).
    public var snapshotData: ((SnapshotMetadata) throws -> [UInt8])?

    public var hardState: HardState { memory.hardState }
    public var snapshotMetadata: SnapshotMetadata { memory.snapshotValue.metadata }

    /// Starts the group's log at `floor`, its newest snapshot point, before a replay.
    func start(at floor: SnapshotMetadata) { memory.applySnapshot(Snapshot(metadata: floor)) }

    /// Returns false if the record cannot follow what the group holds (a gap in its log).
    func apply(_ record: WALRecord) -> Bool {
        switch record {
        case .entries(_, let entries):
            // Entries at or below the snapshot point are already covered by it (copy only in that rare case).
            let floor = memory.snapshotValue.metadata.index
            let kept = (entries.first?.index ?? 0) > floor ? entries : entries.filter { $0.index > floor }
            guard let first = kept.first else { return true }
            guard first.index <= memory.lastIndex() + 1 else { return false }
            memory.append(kept)
        case .hardState(_, let hs):
            memory.setHardState(hs)
        case .dropGroup:
            return true
        case .snapshot(_, let meta, let replacesLog):
            let current = memory.snapshotValue.metadata
            if meta.index > current.index {
                if !replacesLog, meta.index <= memory.lastIndex(), (try? memory.term(at: meta.index)) == meta.term {
                    memory.createSnapshot(at: meta.index, confState: meta.confState, data: [])
                    memory.compact(upTo: meta.index)
                } else {
                    memory.applySnapshot(Snapshot(metadata: meta))
                }
            } else if replacesLog {
                // Replaying from a newer snapshot point: anything appended before this replacement came
                // from the history it discarded.
                memory.applySnapshot(Snapshot(metadata: meta.index == current.index ? meta : current))
            }
        }
        return true
    }
}

/// The node's write-ahead log: one sequence of segment files shared by every Raft group, so a single
/// sync makes a whole batch of groups' writes durable (group commit).
///
/// Layout: `DIR/wal-<16 hex digits>.log`. Each record is length (u32) + CRC-32C (u32) + payload. Each
/// segment begins with a checkpoint (snapshot point and hard state of every group), so once every group
/// has compacted past a segment's entries the segment can be deleted. A segment is allocated ahead of
/// its records and reads as zeros past them; a segment no longer written gives that space back.
public final class LogStore {
    public let directory: String
    public let segmentBytes: Int
    private var segments: [SegmentFile] = []
    private var groups: [UInt64: GroupLog] = [:]
    /// For each segment sequence number, the highest entry index each group wrote into it.
    private var highestIndex: [UInt64: [UInt64: LogIndex]] = [:]
    /// Syncs performed since opening (group commit shows as fewer syncs than writes).
    public private(set) var syncCount = 0
    private let log: (String) -> Void

    /// Opens (or creates) the log in `directory`, replaying every segment. A torn tail in the last
    /// segment, left by a crash during an unsynced write, is cut off and reported through `log`.
    public init(directory: String, segmentBytes: Int = 64 << 20, log: @escaping (String) -> Void) throws {
        self.directory = directory
        self.segmentBytes = segmentBytes
        self.log = log
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let sequences = try FileManager.default.contentsOfDirectory(atPath: directory)
            .compactMap(SegmentFile.sequence(ofFileNamed:)).sorted()
        // Pass 1: read and check every segment; find each group's newest snapshot point.
        var recovered: [(segment: SegmentFile, records: [(offset: Int, record: WALRecord)])] = []
        var floors: [UInt64: SnapshotMetadata] = [:]
        for (i, seq) in sequences.enumerated() {
            let segment = try SegmentFile(directory: directory, sequence: seq, create: false, preallocationBytes: preallocationBytes)
            let records = try read(segment, isLast: i == sequences.count - 1)
            for (_, r) in records {
                if case .snapshot(let g, let meta, _) = r, meta.index >= (floors[g]?.index ?? 0) { floors[g] = meta }
            }
            recovered.append((segment, records))
        }
        // Pass 2: start each group at its floor (older segments may be gone) and replay in order.
        for (g, floor) in floors {
            let log = GroupLog(group: g)
            log.start(at: floor)
            groups[g] = log
        }
        for (segment, records) in recovered {
            for (offset, r) in records where !apply(r, segment: segment.sequence) {
                throw WALError.corrupt(file: SegmentFile.name(segment.sequence), offset: offset,
                                       reason: "entries leave a gap in a group's log")
            }
            segments.append(segment)
        }
        if segments.isEmpty { try startSegment(sequence: 1) }
    }

    /// How far ahead of the writes a segment is allocated (`SegmentFile`).
    var preallocationBytes: Int { min(4 << 20, max(4096, segmentBytes)) }

    public var groupIDs: [UInt64] { groups.keys.sorted() }
    public func group(_ id: UInt64) -> GroupLog? { groups[id] }
    public var segmentCount: Int { segments.count }

    /// Creates a group whose initial membership is `confState` (durably).
    public func createGroup(_ id: UInt64, confState: ConfState) throws -> GroupLog {
        try createGroup(id, snapshot: SnapshotMetadata(index: 0, term: 0, confState: confState))
    }

    /// Creates a group whose history starts with a snapshot (a split's child: every founder holds the
    /// same first state, and a replica created empty is sent it).
    public func createGroup(_ id: UInt64, snapshot: SnapshotMetadata) throws -> GroupLog {
        precondition(groups[id] == nil, "group \(id) exists")
        try write([.snapshot(group: id, snapshot, replacesLog: true)])
        return groups[id]!
    }

    /// Makes every group's writes durable with one sync, then shows them to the groups' readers.
    /// `sync: false` only when nothing in the batch needs durability before messages go out (a commit
    /// index alone: `Ready.mustSync` is false); a later sync covers it anyway.
    public func persist(_ writes: [GroupWrite], sync: Bool = true) throws {
        var records: [WALRecord] = []
        for w in writes {
            precondition(groups[w.group] != nil, "unknown group \(w.group)")
            if let s = w.snapshot { records.append(.snapshot(group: w.group, s, replacesLog: true)) }
            if !w.entries.isEmpty { records.append(.entries(group: w.group, w.entries)) }
            if let hs = w.hardState { records.append(.hardState(group: w.group, hs)) }
        }
        if !records.isEmpty { try write(records, sync: sync) }
    }

    /// Deletes a group (its database was dropped), durably: recovery forgets it, and its entries no
    /// longer keep old segments alive.
    public func dropGroup(_ id: UInt64) throws {
        guard groups[id] != nil else { return }
        try write([.dropGroup(group: id)])
        forget(id)
        try removeObsoleteSegments()
    }

    private func forget(_ id: UInt64) {
        groups[id] = nil
        for seq in highestIndex.keys { highestIndex[seq]?[id] = nil }
    }

    /// Records that `group`'s state machine holds everything through `index` in a snapshot, drops the
    /// log up to there, and deletes the oldest segments once no group needs their entries.
    public func compact(group id: UInt64, through index: LogIndex, confState: ConfState) throws {
        guard let g = groups[id], index > g.snapshotMetadata.index else { return }
        let term = try g.term(at: index)
        try write([.snapshot(group: id, SnapshotMetadata(index: index, term: term, confState: confState), replacesLog: false)])
        try removeObsoleteSegments()
    }

    private func write(_ records: [WALRecord], sync: Bool = true) throws {
        var bytes: [UInt8] = []
        WALRecord.frame(records, into: &bytes)
        let segment = segments[segments.count - 1]
        try segment.append(bytes)
        if sync {
            try segment.sync()
            syncCount += 1
        }
        for r in records { precondition(apply(r, segment: segment.sequence), "a Raft group wrote entries with a gap") }
        if segment.size >= segmentBytes {
            segment.release()
            try startSegment(sequence: segment.sequence + 1)
            try removeObsoleteSegments()
        }
    }

    private func apply(_ record: WALRecord, segment: UInt64) -> Bool {
        let id: UInt64
        switch record {
        case .dropGroup(let g):
            forget(g)
            return true
        case .entries(let g, let entries):
            id = g
            if let last = entries.last { highestIndex[segment, default: [:]][g] = max(highestIndex[segment]?[g] ?? 0, last.index) }
        case .hardState(let g, _), .snapshot(let g, _, _):
            id = g
        }
        let g = groups[id] ?? GroupLog(group: id)
        groups[id] = g
        return g.apply(record)
    }

    private func startSegment(sequence: UInt64) throws {
        let segment = try SegmentFile(directory: directory, sequence: sequence, create: true, preallocationBytes: preallocationBytes)
        var records: [WALRecord] = []
        for id in groups.keys.sorted() {
            let g = groups[id]!
            records.append(.snapshot(group: id, g.snapshotMetadata, replacesLog: false))
            records.append(.hardState(group: id, g.hardState))
        }
        var checkpoint: [UInt8] = []
        if !records.isEmpty { WALRecord.frame(records, into: &checkpoint) }
        try segment.append(checkpoint)
        try segment.sync()
        try DurableFile.sync(directory)
        segments.append(segment)
    }

    private func removeObsoleteSegments() throws {
        var removed = false
        while segments.count > 1 {
            let oldest = segments[0]
            // Recovery starts every group at its newest snapshot point, which a later segment holds (each
            // segment opens with a checkpoint), so only entries above that point must stay.
            let needed = (highestIndex[oldest.sequence] ?? [:]).contains { id, highest in
                highest > (groups[id]?.snapshotMetadata.index ?? 0)
            }
            if needed { break }
            guard unlink(oldest.path) == 0 else { throw WALError.io(operation: "unlink", path: oldest.path, errno: errno) }
            highestIndex[oldest.sequence] = nil
            segments.removeFirst()
            removed = true
        }
        if removed { try DurableFile.sync(directory) }
    }

    /// Reads a segment's records. A torn tail of the last segment is cut off and reported; anything
    /// else that fails its checksum is corruption.
    private func read(_ segment: SegmentFile, isLast: Bool) throws -> [(offset: Int, record: WALRecord)] {
        let bytes = try segment.readAll()
        let name = SegmentFile.name(segment.sequence)
        var out: [(Int, WALRecord)] = []
        var offset = 0
        while offset < bytes.count {
            // Zeros to the end: the space allocated ahead of the writes (or a file that grew before its
            // new bytes reached the disk). No frame is ever written as zeros (each holds at least one
            // record), so the records end here.
            if bytes[offset...].allSatisfy({ $0 == 0 }) {
                segment.adoptEnd(offset)
                return out
            }
            let remaining = bytes.count - offset
            var cursor = offset
            let length = remaining >= WALRecord.headerBytes ? Int(ByteCoding.readUInt32(bytes, &cursor)!) : -1
            let checksum = remaining >= WALRecord.headerBytes ? ByteCoding.readUInt32(bytes, &cursor)! : 0
            let end = offset + WALRecord.headerBytes + max(length, 0)
            let complete = length >= 0 && end <= bytes.count
            let valid = complete && CRC32C.checksum(bytes[(offset + WALRecord.headerBytes)..<end]) == checksum
            if !valid {
                // Only the final write of the last segment can be torn: anything after it would be a
                // later write, and a later write is only made after the earlier one was synced. After
                // a torn write the file holds nothing but the zeros allocated ahead.
                guard isLast, !complete || bytes[end...].allSatisfy({ $0 == 0 }) else {
                    throw WALError.corrupt(file: name, offset: offset, reason: complete ? "checksum mismatch" : "record runs past the end of a closed segment")
                }
                let written = (bytes.lastIndex { $0 != 0 } ?? offset) + 1 - offset
                log("write-ahead log \(name): discarding a torn tail of \(written) bytes at byte \(offset) (a write that was never synced, interrupted by a crash)")
                try segment.truncate(to: offset)
                return out
            }
            guard let records = WALRecord.records(inFrame: Array(bytes[(offset + WALRecord.headerBytes)..<end])) else {
                throw WALError.corrupt(file: name, offset: offset, reason: "record with a valid checksum cannot be decoded")
            }
            for r in records { out.append((offset, r)) }
            offset = end
        }
        return out
    }
}
