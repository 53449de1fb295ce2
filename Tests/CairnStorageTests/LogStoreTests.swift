import Foundation
import Synchronization
import Testing
import CairnRaft
@testable import CairnStorage

/// A fresh directory per test, removed afterwards.
final class TempDir {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "cairn-wal-test-" + UUID().uuidString
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    var segments: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasPrefix("wal-") }.sorted()
    }

    func segmentPath(_ i: Int) -> String { path + "/" + segments[i] }

    /// Where a segment's records end (past them the file holds the zeros allocated ahead), found by
    /// walking its frames' lengths.
    func recordsEnd(_ i: Int) throws -> Int {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: segmentPath(i))))
        var offset = 0
        while offset + WALRecord.headerBytes <= bytes.count {
            var cursor = offset
            let length = Int(ByteCoding.readUInt32(bytes, &cursor)!)
            if length == 0 { break }
            offset += WALRecord.headerBytes + length
        }
        return offset
    }

    func fileSize(_ i: Int) throws -> Int { try FileManager.default.attributesOfItem(atPath: segmentPath(i))[.size] as! Int }

    /// Writes `bytes` at `offset` of segment `i`, as a crash in the middle of a write leaves them.
    func overwrite(_ i: Int, at offset: Int, with bytes: [UInt8]) throws {
        let handle = try #require(FileHandle(forWritingAtPath: segmentPath(i)))
        try handle.seek(toOffset: UInt64(offset))
        handle.write(Data(bytes))
        try handle.close()
    }
}

private func entries(_ range: ClosedRange<LogIndex>, term: Term, prefix: String = "e") -> [Entry] {
    range.map { Entry(term: term, index: $0, data: Array("\(prefix)\($0)".utf8)) }
}

/// Captures what a log store reports.
private final class LogLines: Sendable {
    let lines = Mutex<[String]>([])
}

private func logged() -> (log: @Sendable (String) -> Void, lines: () -> [String]) {
    let box = LogLines()
    return ({ line in box.lines.withLock { $0.append(line) } }, { box.lines.withLock { $0 } })
}

@Suite("Write-ahead log")
struct LogStoreTests {
    let conf = ConfState(voters: [1, 2, 3])

    /// Opens a log in `dir`, creates group 1, runs `body`, and closes the log again.
    private func withGroup(in dir: TempDir, _ body: (LogStore) throws -> Void) throws {
        let store = try LogStore(directory: dir.path, log: { _ in })
        _ = try store.createGroup(1, confState: conf)
        try body(store)
    }

    @Test("entries, hard state and membership survive a reopen")
    func roundTrip() throws {
        let dir = TempDir()
        do {
            let store = try LogStore(directory: dir.path, log: { _ in })
            _ = try store.createGroup(7, confState: conf)
            try store.persist([GroupWrite(group: 7, entries: entries(1...5, term: 1), hardState: HardState(term: 1, vote: 2, commit: 3))])
        }
        let store = try LogStore(directory: dir.path, log: { _ in })
        let g = try #require(store.group(7))
        #expect(g.firstIndex() == 1 && g.lastIndex() == 5)
        #expect(try g.entries(from: 1, to: 6, maxBytes: .max) == entries(1...5, term: 1))
        let (hs, cs) = try g.initialState()
        #expect(hs == HardState(term: 1, vote: 2, commit: 3))
        #expect(cs == conf)
    }

    @Test("a dropped group is forgotten across a reopen, and its entries stop keeping old segments")
    func dropGroup() throws {
        let dir = TempDir()
        do {
            let store = try LogStore(directory: dir.path, segmentBytes: 4096, log: { _ in })
            _ = try store.createGroup(1, confState: conf)
            _ = try store.createGroup(2, confState: conf)
            for i in 1...60 as ClosedRange<LogIndex> {
                try store.persist([GroupWrite(group: 2, entries: [Entry(term: 1, index: i, data: Array(repeating: 9, count: 300))])])
            }
            try store.persist([GroupWrite(group: 1, entries: entries(1...3, term: 1))])
            let before = store.segmentCount
            #expect(before > 3)
            try store.dropGroup(2)
            #expect(store.groupIDs == [1])
            #expect(store.segmentCount < before, "group 2's entries no longer pin segments")
        }
        let store = try LogStore(directory: dir.path, segmentBytes: 4096, log: { _ in })
        #expect(store.groupIDs == [1])
        #expect(try store.group(1)!.entries(from: 1, to: 4, maxBytes: .max) == entries(1...3, term: 1))
    }

    @Test("one sync covers a batch of writes from many groups")
    func groupCommit() throws {
        let dir = TempDir()
        let store = try LogStore(directory: dir.path, log: { _ in })
        for g: UInt64 in 1...3 { _ = try store.createGroup(g, confState: conf) }
        let before = store.syncCount
        try store.persist((1...3).map { GroupWrite(group: $0, entries: entries(1...10, term: 1), hardState: HardState(term: 1, vote: 1, commit: 0)) })
        #expect(store.syncCount == before + 1)
        let reopened = try LogStore(directory: dir.path, log: { _ in })
        #expect(reopened.groupIDs == [1, 2, 3])
        for g: UInt64 in 1...3 { #expect(reopened.group(g)?.lastIndex() == 10) }
    }

    /// Group 1 with entries 1-3 and 4-6, written as two batches.
    private func twoBatches(in dir: TempDir) throws {
        try withGroup(in: dir) { store in
            try store.persist([GroupWrite(group: 1, entries: entries(1...3, term: 1))])
            try store.persist([GroupWrite(group: 1, entries: entries(4...6, term: 1))])
        }
    }

    @Test("a torn final record is cut off with a log line; everything before it survives")
    func tornTail() throws {
        let dir = TempDir()
        try twoBatches(in: dir)
        // A crash in the middle of the last (unsynced) write leaves part of a record: its last bytes
        // never reached the disk, which still holds the zeros allocated there.
        let end = try dir.recordsEnd(0)
        try dir.overwrite(0, at: end - 5, with: [0, 0, 0, 0, 0])
        let (log, lines) = logged()
        let store = try LogStore(directory: dir.path, log: log)
        #expect(store.group(1)?.lastIndex() == 3)
        #expect(lines().count == 1)
        #expect(lines().first?.contains("torn tail") == true)
        // The log goes on from the cut, and a second reopen is clean.
        try store.persist([GroupWrite(group: 1, entries: entries(4...4, term: 2))])
        let (log2, lines2) = logged()
        let again = try LogStore(directory: dir.path, log: log2)
        #expect(again.group(1)?.lastIndex() == 4)
        #expect(try again.group(1)?.term(at: 4) == 2)
        #expect(lines2().isEmpty)
    }

    @Test("a torn record at the very end of a file that was not allocated ahead is cut off too")
    func tornTailWithoutAllocation() throws {
        let dir = TempDir()
        try twoBatches(in: dir)
        #expect(truncate(dir.segmentPath(0), off_t(try dir.recordsEnd(0) - 5)) == 0)
        let (log, lines) = logged()
        let store = try LogStore(directory: dir.path, log: log)
        #expect(store.group(1)?.lastIndex() == 3)
        #expect(lines().first?.contains("torn tail") == true)
    }

    @Test("a partial record header at the end is a torn tail too")
    func tornHeader() throws {
        let dir = TempDir()
        try withGroup(in: dir) { store in
            try store.persist([GroupWrite(group: 1, entries: entries(1...2, term: 1))])
        }
        try dir.overwrite(0, at: try dir.recordsEnd(0), with: [0x10, 0x00, 0x07])
        let (log, lines) = logged()
        let store = try LogStore(directory: dir.path, log: log)
        #expect(store.group(1)?.lastIndex() == 2)
        #expect(lines().count == 1)
        #expect(lines().first?.contains("torn tail of 3 bytes") == true, "\(lines())")
    }

    @Test("a segment is allocated ahead of its records: syncs do not grow the file, the zeros after the records end the log, and appends after a reopen go where the records end")
    func allocatedAhead() throws {
        let dir = TempDir()
        try withGroup(in: dir) { store in
            try store.persist([GroupWrite(group: 1, entries: entries(1...3, term: 1))])
        }
        let end = try dir.recordsEnd(0)
        let size = try dir.fileSize(0)
        #expect(size > end, "the file is allocated past its records (\(size) bytes for \(end))")
        #expect(size % 4096 == 0)
        let (log, lines) = logged()
        let store = try LogStore(directory: dir.path, log: log)
        #expect(store.group(1)?.lastIndex() == 3)
        #expect(lines().isEmpty, "zeros past the records are not a torn tail: \(lines())")
        #expect(try dir.fileSize(0) == size, "the allocation is kept")
        try store.persist([GroupWrite(group: 1, entries: entries(4...4, term: 1))])
        #expect(try dir.recordsEnd(0) > end)
        #expect(try dir.fileSize(0) == size)
        let again = try LogStore(directory: dir.path, log: { _ in })
        #expect(try again.group(1)?.entries(from: 1, to: 5, maxBytes: .max) == entries(1...4, term: 1))
    }

    @Test("a segment no longer written gives its allocated space back")
    func closedSegmentReleased() throws {
        let dir = TempDir()
        let store = try LogStore(directory: dir.path, segmentBytes: 64 << 10, log: { _ in })
        _ = try store.createGroup(1, confState: conf)
        for i in 1...100 as ClosedRange<LogIndex> {
            try store.persist([GroupWrite(group: 1, entries: [Entry(term: 1, index: i, data: Array(repeating: 9, count: 1_000))])])
        }
        #expect(dir.segments.count > 1)
        for i in 0..<(dir.segments.count - 1) { #expect(try dir.fileSize(i) == dir.recordsEnd(i)) }
        #expect(try dir.fileSize(dir.segments.count - 1) > dir.recordsEnd(dir.segments.count - 1))
        let again = try LogStore(directory: dir.path, segmentBytes: 64 << 10, log: { _ in })
        #expect(again.group(1)?.lastIndex() == 100)
    }

    @Test("a zero-filled tail (power loss after the file grew) ends the log quietly; zeros before the end of the log are corruption")
    func zeroFilledTail() throws {
        let dir = TempDir()
        try withGroup(in: dir) { store in
            try store.persist([GroupWrite(group: 1, entries: entries(1...3, term: 1))])
        }
        let path = dir.segmentPath(0)
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(count: 4096))
        try handle.close()
        let size = try dir.fileSize(0)
        let (log, lines) = logged()
        let store = try LogStore(directory: dir.path, log: log)
        #expect(store.group(1)?.lastIndex() == 3)
        #expect(lines().isEmpty, "\(lines())")
        #expect(try dir.fileSize(0) == size)
        try store.persist([GroupWrite(group: 1, entries: entries(4...4, term: 1))])
        // Zeros followed by a real frame are not a tail: refused.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        for i in 0..<16 { bytes[i] = 0 }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: WALError.self) { _ = try LogStore(directory: dir.path, log: { _ in }) }
    }

    @Test("garbage after the zeros allocated ahead is corruption, not a tail")
    func garbageAfterZeros() throws {
        let dir = TempDir()
        try withGroup(in: dir) { store in
            try store.persist([GroupWrite(group: 1, entries: entries(1...3, term: 1))])
        }
        // A torn write lands where the records end; bytes far past it were never written by the log.
        try dir.overwrite(0, at: try dir.fileSize(0) - 8, with: [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(throws: WALError.self) { _ = try LogStore(directory: dir.path, log: { _ in }) }
    }

    @Test("corruption before the end refuses to start, naming the file and offset")
    func corruptionInTheMiddle() throws {
        let dir = TempDir()
        try twoBatches(in: dir)
        let path = dir.segmentPath(0)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[12] ^= 0xFF   // inside the first record's payload
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: WALError.corrupt(file: dir.segments[0], offset: 0, reason: "checksum mismatch")) {
            _ = try LogStore(directory: dir.path, log: { _ in })
        }
    }

    @Test("entries replacing a conflicting suffix replace it after a reopen too")
    func conflictingSuffix() throws {
        let dir = TempDir()
        try withGroup(in: dir) { store in
            try store.persist([GroupWrite(group: 1, entries: entries(1...5, term: 1))])
            try store.persist([GroupWrite(group: 1, entries: entries(3...4, term: 2, prefix: "new"))])
        }
        let g = try #require(try LogStore(directory: dir.path, log: { _ in }).group(1))
        #expect(g.lastIndex() == 4)
        #expect(try g.entries(from: 1, to: 5, maxBytes: .max) == entries(1...2, term: 1) + entries(3...4, term: 2, prefix: "new"))
    }

    @Test("a snapshot received from the leader replaces a log that lacks its last entry")
    func receivedSnapshot() throws {
        let dir = TempDir()
        try withGroup(in: dir) { store in
            try store.persist([GroupWrite(group: 1, entries: entries(1...5, term: 1))])
            let meta = SnapshotMetadata(index: 10, term: 3, confState: ConfState(voters: [1, 2, 3, 4]))
            try store.persist([GroupWrite(group: 1, hardState: HardState(term: 3, vote: 0, commit: 10), snapshot: meta)])
        }
        let g = try #require(try LogStore(directory: dir.path, log: { _ in }).group(1))
        #expect(g.firstIndex() == 11 && g.lastIndex() == 10)
        #expect(try g.term(at: 10) == 3)
        #expect(try g.initialState().1 == ConfState(voters: [1, 2, 3, 4]))
    }

    @Test("a crash at any byte of an unsynced write recovers exactly the writes synced before it, whether the file had grown or was allocated ahead")
    func crashAtEveryByte() throws {
        let dir = TempDir()
        let segmentBytes = 64 << 10
        var boundaries: [Int] = []   // where the records end after each synced batch
        do {
            let store = try LogStore(directory: dir.path, segmentBytes: segmentBytes, log: { _ in })
            _ = try store.createGroup(1, confState: conf)
            for b in 0..<6 {
                let first = LogIndex(b * 3 + 1)
                try store.persist([GroupWrite(group: 1, entries: entries(first...(first + 2), term: 1),
                                              hardState: HardState(term: 1, vote: 1, commit: first))])
                boundaries.append(try dir.recordsEnd(0))
            }
        }
        let full = try Data(contentsOf: URL(fileURLWithPath: dir.segmentPath(0)))
        #expect(full.count > boundaries.last!, "allocated ahead")
        let name = dir.segments[0]
        for cut in boundaries[0]...boundaries.last! {
            // The bytes past the cut never reached the disk: a file that grew shows its end there, one
            // allocated ahead shows zeros.
            for padded in [false, true] {
                let image = padded ? full.prefix(cut) + Data(count: full.count - cut) : full.prefix(cut)
                let copy = TempDir()
                try FileManager.default.createDirectory(atPath: copy.path, withIntermediateDirectories: true)
                try image.write(to: URL(fileURLWithPath: copy.path + "/" + name))
                let store = try LogStore(directory: copy.path, segmentBytes: segmentBytes, log: { _ in })
                // A write whose missing bytes were zeros anyway reached the disk whole (it was never
                // acknowledged, and keeping it is as right as dropping it).
                let synced = boundaries.lastIndex { $0 <= cut || (padded && full[cut..<$0].allSatisfy { $0 == 0 }) }!
                let g = try #require(store.group(1))
                #expect(g.lastIndex() == LogIndex(synced * 3 + 3), "cut at byte \(cut) of \(image.count)")
                #expect(g.hardState.commit == LogIndex(synced * 3 + 1), "cut at byte \(cut) of \(image.count)")
            }
        }
    }

    @Test("a full disk fails the write with a clear error, and nothing of it becomes visible")
    func diskFull() throws {
        let dir = TempDir()
        try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: true)
        // The current segment is /dev/full: every write to it fails with ENOSPC.
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/" + SegmentFile.name(1), withDestinationPath: "/dev/full")
        let store = try LogStore(directory: dir.path, log: { _ in })
        #expect(throws: WALError.diskFull(path: dir.path + "/" + SegmentFile.name(1))) {
            _ = try store.createGroup(1, confState: conf)
        }
        #expect(store.group(1) == nil)
        #expect(store.syncCount == 0)
        let message = WALError.diskFull(path: "x").description
        #expect(message.contains("no space left") && message.contains("nothing was acknowledged"))
    }

    @Test("a replaced history stays discarded when a compaction later moves the snapshot point past it")
    func replacedHistoryAfterCompaction() throws {
        let dir = TempDir()
        try withGroup(in: dir) { store in
            try store.persist([GroupWrite(group: 1, entries: entries(1...50, term: 1, prefix: "old"))])
            let meta = SnapshotMetadata(index: 20, term: 3, confState: conf)
            try store.persist([GroupWrite(group: 1, snapshot: meta)])
            try store.persist([GroupWrite(group: 1, entries: entries(21...30, term: 3))])
            try store.compact(group: 1, through: 25, confState: conf)
        }
        let g = try #require(try LogStore(directory: dir.path, log: { _ in }).group(1))
        #expect(g.firstIndex() == 26 && g.lastIndex() == 30)
        #expect(try g.entries(from: 26, to: 31, maxBytes: .max) == entries(26...30, term: 3))
    }

    @Test("after compaction, segments no group needs are deleted and recovery still sees every live entry")
    func compactionRemovesSegments() throws {
        let dir = TempDir()
        let store = try LogStore(directory: dir.path, segmentBytes: 2048, log: { _ in })
        for g: UInt64 in 1...2 { _ = try store.createGroup(g, confState: conf) }
        var next: LogIndex = 1
        func write(_ n: Int) throws {
            for _ in 0..<n {
                try store.persist((1...2).map { GroupWrite(group: $0, entries: entries(next...(next + 4), term: 1)) })
                next += 5
            }
        }
        try write(40)
        let grown = store.segmentCount
        #expect(grown > 5)
        for g: UInt64 in 1...2 { try store.compact(group: g, through: next - 10, confState: conf) }
        try write(10)
        #expect(store.segmentCount < grown, "covered segments were deleted")
        #expect(dir.segments.count == store.segmentCount)
        let reopened = try LogStore(directory: dir.path, log: { _ in })
        for g: UInt64 in 1...2 {
            let log = try #require(reopened.group(g))
            #expect(log.lastIndex() == next - 1)
            #expect(log.firstIndex() == (next - 60) + 1)
            #expect(try log.entries(from: log.firstIndex(), to: next, maxBytes: .max).count == 59)
        }
    }

    @Test("a Raft node restarts from the log with its term, vote, commit and entries")
    func rawNodeRestart() throws {
        let dir = TempDir()
        var committed: [Entry] = []
        do {
            let store = try LogStore(directory: dir.path, log: { _ in })
            let storage = try store.createGroup(1, confState: ConfState(voters: [1]))
            let node = try RawNode(config: RaftConfig(id: 1, randomSeed: 1), storage: storage)
            func drain() throws {
                while node.hasReady {
                    let rd = node.ready()
                    try store.persist([GroupWrite(group: 1, entries: rd.entries, hardState: rd.hardState, snapshot: rd.snapshot?.metadata)])
                    committed += rd.committedEntries
                    node.advance(rd)
                }
            }
            for _ in 0..<20 { node.tick() }
            try drain()
            try node.propose(Array("hello".utf8))
            try drain()
        }
        #expect(committed.map { String(decoding: $0.data, as: UTF8.self) } == ["", "hello"])
        let store = try LogStore(directory: dir.path, log: { _ in })
        let node = try RawNode(config: RaftConfig(id: 1, randomSeed: 1), storage: try #require(store.group(1)))
        #expect(node.status.term == 1)
        #expect(node.status.vote == 1)
        #expect(node.status.commit == 2)
        #expect(node.term(at: 2) == 1)
    }
}
