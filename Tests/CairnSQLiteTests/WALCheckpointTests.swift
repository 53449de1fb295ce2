import CairnRaft
import Foundation
import Testing
@testable import CairnSQLite

/// The apply connection checkpoints its WAL often enough that no checkpoint has much to flush: each
/// one stops the writes behind it for as long as its sync takes.
@Suite struct WALCheckpointTests {
    @Test("a busy database's WAL never grows past the checkpoint threshold by more than a commit, and nothing applied is lost")
    func shortWAL() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: SQLCommand(statements: [SQLStatement("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")],
                                                       timestampMillis: 1_790_000_000_000, randomSeed: 1))
        // One row per commit: two frames each (the row's page and the applied-index marker).
        for i in 0..<3_000 {
            let write = SQLCommand(statements: [SQLStatement("INSERT OR REPLACE INTO t VALUES (\(i % 300), 'v\(i)')")],
                                   timestampMillis: 1_790_000_000_000, randomSeed: 1)
            _ = try sm.apply(index: LogIndex(i + 2), command: write)
        }
        let walBytes = (try FileManager.default.attributesOfItem(atPath: tmp.path() + "-wal")[.size] as? Int) ?? 0
        let frames = max(0, walBytes - 32) / (4_096 + 24)
        #expect(frames <= SQLiteConnection.walAutocheckpointFrames + 4, "the WAL reached \(frames) frames")
        sm.close()
        let reopened = try SQLStateMachine(path: tmp.path())
        #expect(reopened.appliedIndex == 3_001)
        #expect(reopened.query(SQLStatement("SELECT count(*), max(v) FROM t")).rows == [[.integer(300), .text("v2999")]])
    }
}
