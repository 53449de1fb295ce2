import CSQLite3
import CairnRaft
import Foundation
import Testing
@testable import CairnSQLite

private func command(_ sql: String...) -> SQLCommand {
    SQLCommand(statements: sql.map { SQLStatement($0) }, atomic: false, timestampMillis: 1_790_000_000_123, randomSeed: 5)
}

/// The files of a database at one moment, to put back later: what a crash or a power loss leaves when
/// one file's write reached the disk and another's did not.
private struct FileImage {
    var contents: [String: Data?] = [:]

    init(_ paths: [String]) {
        for p in paths { contents[p] = FileManager.default.contents(atPath: p) as Data? }
    }

    func restore() throws {
        for (p, data) in contents {
            try? FileManager.default.removeItem(atPath: p)
            if let data { try data.write(to: URL(fileURLWithPath: p)) }
        }
    }
}

@Suite("SQLite state machine: bookkeeping")
struct BookkeepingTests {
    @Test("the header marker resolves to the applied index nearest the reference, across every 2^32 boundary",
          arguments: [
            (LogIndex(0), Int32(0), LogIndex(0)),
            (0, 7, 7),
            (100, 90, 90),
            (4_294_967_290, 5, 4_294_967_301),          // past 2^32: the marker wrapped
            (4_294_967_301, -6, 4_294_967_290),         // back before it (a power loss rolled the file back)
            (1 << 40, 0, 1 << 40),
            ((1 << 40) + 3, -1, (1 << 40) - 1),
            ((1 << 40) - 1, 2, (1 << 40) + 2),
            (0, Int32.max, LogIndex(Int32.max)),         // the farthest ahead a marker reaches
          ] as [(LogIndex, Int32, LogIndex)])
    func resolve(reference: LogIndex, marker: Int32, index: LogIndex) throws {
        #expect(try Bookkeeping.resolve(marker: marker, near: reference) == index)
        #expect(Bookkeeping.marker(of: index) == marker)
    }

    @Test("a marker that would put the index below zero is an error, not a wrap")
    func resolveBelowZero() {
        #expect(throws: (any Error).self) { try Bookkeeping.resolve(marker: -1, near: 0) }
    }

    @Test("the state at an index is the newest record at or before it; records beyond what is kept are an error, never a guess")
    func records() throws {
        var b = Bookkeeping(reference: 0)
        #expect(try b.state(at: 10).conf == nil)
        for i in 1...LogIndex(Bookkeeping.maxConfRecords + 2) { b.record(conf: ConfState(voters: [i]), at: i * 10) }
        #expect(b.confs.count == Bookkeeping.maxConfRecords && b.confsTrimmed)
        #expect(try b.state(at: 35).conf == ConfState(voters: [3]))
        #expect(try b.state(at: 1_000).conf == ConfState(voters: [LogIndex(Bookkeeping.maxConfRecords + 2)]))
        #expect(throws: (any Error).self) { try b.state(at: 15) }
        // Applied again after a crash: the record is replaced, and what came after it forgotten.
        b.droppedAt = 95
        b.record(conf: ConfState(voters: [9, 9 + 1]), at: 50)
        b.forget(after: 50)
        #expect(b.confs.last == Bookkeeping.ConfRecord(index: 50, conf: Data(ConfState(voters: [9, 10]).encoded())))
        #expect(b.droppedAt == nil)
        #expect(try b.state(at: 60).conf == ConfState(voters: [9, 10]))
    }

    @Test("the sidecar is written before the file: when the file's transaction is lost (a crash, a power loss), the database reopens at the file's entry with the membership in force there, and applies the lost entries again")
    func sidecarAheadOfTheFile() throws {
        let tmp = TempDB()
        let path = tmp.path()
        var sm = try SQLStateMachine(path: path)
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(x)"))
        try sm.applyEmpty(index: 2, confState: ConfState(voters: [1, 2, 3]))
        _ = try sm.apply(index: 3, command: command("INSERT INTO t VALUES (3)"))
        sm.close()
        // The file as it was at entry 3; then entries 4-6 apply, with a membership change and a drop.
        let before = FileImage([path, path + "-wal", path + "-shm"])
        sm = try SQLStateMachine(path: path)
        _ = try sm.apply(batch: [(4, .command(command("INSERT INTO t VALUES (4)"))), (5, .empty(ConfState(voters: [1, 2, 4]))),
                                 (6, .command(.dropDatabase()))])
        #expect(sm.droppedAt == 6 && sm.confState == ConfState(voters: [1, 2, 4]))
        sm.close()
        try before.restore()
        sm = try SQLStateMachine(path: path)
        #expect(sm.appliedIndex == 3 && sm.confState == ConfState(voters: [1, 2, 3]) && sm.droppedAt == nil)
        #expect(sm.query(SQLStatement("SELECT x FROM t")).rows == [[.integer(3)]])
        _ = try sm.apply(batch: [(4, .command(command("INSERT INTO t VALUES (4)"))), (5, .empty(ConfState(voters: [1, 2, 4])))])
        sm.close()
        sm = try SQLStateMachine(path: path)
        #expect(sm.appliedIndex == 5 && sm.confState == ConfState(voters: [1, 2, 4]) && sm.droppedAt == nil)
        #expect(sm.query(SQLStatement("SELECT x FROM t ORDER BY x")).rows == [[.integer(3)], [.integer(4)]])
    }

    @Test("an install interrupted after the sidecar took the snapshot's bookkeeping, before the rename: the old file opens at its own entry and membership")
    func interruptedInstall() throws {
        let tmp = TempDB()
        let source = try SQLStateMachine(path: tmp.path("source.sqlite"))
        _ = try source.apply(index: 1, command: command("CREATE TABLE t(x)"))
        try source.applyEmpty(index: 2, confState: ConfState(voters: [7, 8, 9]))
        for i in 3...20 { _ = try source.apply(index: LogIndex(i), command: command("INSERT INTO t VALUES (\(i))")) }
        _ = try SQLStateMachine.writeSnapshot(of: source.path, to: tmp.path("snap.sqlite"))

        let path = tmp.path("target.sqlite")
        var target = try SQLStateMachine(path: path)
        _ = try target.apply(index: 1, command: command("CREATE TABLE t(x)"))
        try target.applyEmpty(index: 2, confState: ConfState(voters: [7, 8]))
        target.close()
        let before = FileImage([path, path + "-wal", path + "-shm"])
        target = try SQLStateMachine(path: path)
        try target.install(snapshotFile: tmp.path("snap.sqlite"))
        #expect(target.appliedIndex == 20 && target.confState == ConfState(voters: [7, 8, 9]))
        target.close()
        try before.restore()
        target = try SQLStateMachine(path: path)
        #expect(target.appliedIndex == 2 && target.confState == ConfState(voters: [7, 8]))
        try target.install(snapshotFile: tmp.path("snap.sqlite"))
        #expect(target.appliedIndex == 20 && target.query(SQLStatement("SELECT count(*) FROM t")).rows == [[.integer(18)]])
    }

    @Test("applied indexes past 2^32 survive reopen, snapshot and install")
    func pastTwoToTheThirtyTwo() throws {
        let tmp = TempDB()
        var db: OpaquePointer?
        sqlite3_open(tmp.path("far.sqlite"), &db)
        sqlite3_exec(db, "CREATE TABLE _cairn_meta(key TEXT PRIMARY KEY, value); INSERT INTO _cairn_meta VALUES ('applied_index', 4294967294); CREATE TABLE t(x)", nil, nil, nil)
        sqlite3_close(db)
        let sm = try SQLStateMachine(path: tmp.path("replica.sqlite"))
        try sm.install(snapshotFile: tmp.path("far.sqlite"))
        #expect(sm.appliedIndex == 4_294_967_294)
        for i in 4_294_967_295...4_294_967_299 as ClosedRange<LogIndex> {
            _ = try sm.apply(index: i, command: command("INSERT INTO t VALUES (\(i))"))
        }
        sm.close()
        let reopened = try SQLStateMachine(path: tmp.path("replica.sqlite"))
        #expect(reopened.appliedIndex == 4_294_967_299)
        #expect(try SQLStateMachine.writeSnapshot(of: reopened.path, to: tmp.path("snap.sqlite")).index == 4_294_967_299)
        let digest = try reopened.reads.digest()
        #expect(digest.index == 4_294_967_299)
    }

    @Test("a database created where an old one's sidecar was left behind (a crash while its files were deleted) starts at entry 0, not at the old one's")
    func leftoverSidecar() throws {
        let tmp = TempDB()
        let path = tmp.path()
        var sm = try SQLStateMachine(path: path)
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(x)"))
        for i in 1...(Bookkeeping.maxConfRecords + 2) { try sm.applyEmpty(index: LogIndex(1 + i), confState: ConfState(voters: [NodeID(i)])) }
        sm.close()
        for file in SQLStateMachine.files(of: path) where !file.hasSuffix("-cairn") { try? FileManager.default.removeItem(atPath: file) }
        #expect(FileManager.default.fileExists(atPath: path + "-cairn"))
        sm = try SQLStateMachine(path: path)
        #expect(sm.appliedIndex == 0 && sm.confState == nil)
        _ = try sm.apply(index: 1, command: command("CREATE TABLE u(x)"))
        #expect(sm.appliedIndex == 1)
    }
}
