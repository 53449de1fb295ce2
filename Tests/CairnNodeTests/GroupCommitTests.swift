@testable import CairnNode
import CairnRaft
import CairnSQLite
import CairnTransport
import Foundation
import Testing

/// Group commit under load (`GroupCommitWindow`): once a sync of the log carried a batch, the next
/// pass that writes waits as long as that sync took, so writes arriving meanwhile share one sync.
/// What a user must see: a lone writer never waits, writers at once lose nothing.
@Suite("Node runtime: group commit under load")
struct GroupCommitTests {
    /// One row per case: the last sync's entries, when it started and ended (µs), the limits, when the
    /// next pass asks (µs), and how long it waits (µs).
    @Test("a pass waits only after a sync that carried a batch, as long as that sync took, at most the limit")
    func window() {
        let cases: [(entries: Int, started: UInt64, ended: UInt64, minEntries: Int, maxWait: UInt64, now: UInt64, wait: UInt64)] = [
            (1, 1_000, 1_600, 4, 1_000, 1_700, 0),        // a lone write: never waits
            (3, 1_000, 1_600, 4, 1_000, 1_700, 0),        // still below the batch
            (4, 1_000, 1_600, 4, 1_000, 1_700, 500),      // a batch: waits out 600 µs after the sync ended
            (4, 1_000, 1_600, 4, 1_000, 1_600, 600),      // asked the moment it ended
            (4, 1_000, 1_600, 4, 1_000, 2_200, 0),        // the window has passed
            (4, 1_000, 1_600, 4, 1_000, 2_500, 0),
            (40, 1_000, 4_000, 4, 1_000, 4_100, 900),     // a slow sync: capped at the limit
            (40, 1_000, 1_050, 4, 1_000, 1_060, 40),      // a fast disk waits as little as it syncs
            (40, 1_000, 1_600, 4, 0, 1_700, 0),           // switched off
            (2, 1_000, 1_600, 1, 1_000, 1_700, 500),      // any sync may open a window
            (4, 1_600, 1_000, 4, 1_000, 1_000, 0),        // a clock that went back: no wait
        ]
        for c in cases {
            var w = GroupCommitWindow(minEntries: c.minEntries, maxWaitNanos: c.maxWait * 1_000)
            #expect(w.waitNanos(nowNanos: c.now * 1_000) == 0, "nothing synced yet: no wait")
            w.synced(entries: c.entries, startedNanos: c.started * 1_000, endedNanos: c.ended * 1_000)
            #expect(w.waitNanos(nowNanos: c.now * 1_000) == c.wait * 1_000, "\(c)")
        }
    }

    private func started(maxWaitMicros: Int64? = nil) async throws -> (LocalCluster, NodeRuntime) {
        let c = try LocalCluster(size: 3)
        c.groupCommitMaxWaitMicros = maxWaitMicros
        try await c.startAll()
        let node = c.nodes[try await c.leader()]!
        _ = try await node.executeIndexed(group: 1, c.sql("CREATE TABLE t(v INTEGER)"))
        return (c, node)
    }

    @Test("a lone writer's passes never wait: each sync carries one write")
    func loneWriterNeverWaits() async throws {
        let (c, node) = try await started()
        for i in 0..<40 { _ = try await node.executeIndexed(group: 1, c.sql("INSERT INTO t VALUES (\(i))")) }
        // The leader's syncs carry its proposals, one write each. (A follower cut off for a moment is
        // sent what it missed in one append, a batch: its next pass may rightly wait.)
        #expect(node.groupCommitWaitCount == 0, "the leader waited with one writer")
        await c.stopAll()
    }

    /// 16 writers at once, 20 writes each: every write is there, once. (Whether passes waited depends on
    /// the disk's speed; `aPassWaitsThenCommits` shows the wait itself.)
    private func concurrentWrites(_ c: LocalCluster, _ node: NodeRuntime) async throws {
        let writers = (0..<16).map { w in (0..<20).map { i in c.sql("INSERT INTO t VALUES (\(w * 100 + i))") } }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for commands in writers {
                tasks.addTask {
                    for command in commands { _ = try await node.executeIndexed(group: 1, command) }
                }
            }
            try await tasks.waitForAll()
        }
        let r = try await node.query(group: 1, SQLStatement("SELECT count(*), count(DISTINCT v) FROM t"))
        #expect(r.rows == [[.integer(320), .integer(320)]])
    }

    @Test("after a sync that carried a batch, the next write's pass waits for its window, then commits")
    func aPassWaitsThenCommits() async throws {
        let (c, node) = try await started()
        // A sync of 100 entries that took 1 ms, ending 100 ms from now (so the write below surely
        // arrives inside its window, however loaded the machine).
        let now = DispatchTime.now().uptimeNanoseconds
        try await node.raftLoop.submit {
            node.raftState.value.commitWindow.synced(entries: 100, startedNanos: now + 99_000_000, endedNanos: now + 100_000_000)
        }.get()
        let before = node.groupCommitWaitCount
        _ = try await node.executeIndexed(group: 1, c.sql("INSERT INTO t VALUES (1)"))
        #expect(node.groupCommitWaitCount == before + 1)
        #expect(DispatchTime.now().uptimeNanoseconds >= now + 100_000_000, "the write's pass started before its window ended")
        let r = try await node.query(group: 1, SQLStatement("SELECT count(*) FROM t"))
        #expect(r.rows == [[.integer(1)]])
        await c.stopAll()
    }

    @Test("writers at once lose nothing to passes that wait")
    func concurrentWritersLoseNothing() async throws {
        let (c, node) = try await started()
        try await concurrentWrites(c, node)
        await c.stopAll()
    }

    @Test("the window is at most a tenth of a tick, whatever is asked")
    func cappedByTheTick() {
        var config = RuntimeConfig(nodeID: 1, dataDirectory: "/nonexistent", raftAddress: PeerAddress(host: "127.0.0.1", port: 1))
        #expect(config.groupCommitMaxWaitNanos == 1_000_000)
        config.tickMillis = 5
        #expect(config.groupCommitMaxWaitNanos == 500_000)
        config.groupCommitMaxWaitMicros = 0
        #expect(config.groupCommitMaxWaitNanos == 0)
    }

    @Test("with the window switched off no pass waits")
    func switchedOff() async throws {
        let (c, node) = try await started(maxWaitMicros: 0)
        try await concurrentWrites(c, node)
        for (id, n) in c.nodes { #expect(n.groupCommitWaitCount == 0, "node \(id) waited with the window off") }
        await c.stopAll()
    }
}
