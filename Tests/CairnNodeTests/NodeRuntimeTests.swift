@testable import CairnNode
import CairnRaft
import CairnSQLite
import CairnTestSupport
import CairnTransport
import Foundation
import NIOConcurrencyHelpers
import NIOPosix
import Testing

/// Three (or more) runtimes in this process, each with its own data directory, over loopback TCP.
final class LocalCluster {
    let root = NSTemporaryDirectory() + "cairn-node-test-" + UUID().uuidString
    var nodes: [NodeID: NodeRuntime] = [:]
    var addresses: [NodeID: PeerAddress] = [:]
    /// Entries between snapshots on every node started by this cluster.
    var snapshotEveryEntries: LogIndex = 10_000
    var snapshotChunkBytes = 1 << 20
    var snapshotBytesPerSecond = 32 << 20
    /// How long followers hold committed entries back (nil: the default).
    var followerApplyDelayMillis: Int64?
    /// The longest a pass waits for its group commit window (nil: the default).
    var groupCommitMaxWaitMicros: Int64?
    /// The groups every node started by this cluster hosts.
    var groups: [GroupID] = [1]

    init(size: Int) throws {
        for id in 1...NodeID(size) { addresses[id] = PeerAddress(host: "127.0.0.1", port: freePort()) }
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    func start(_ id: NodeID, voters: [NodeID]) async throws {
        var config = RuntimeConfig(nodeID: id, dataDirectory: root + "/node\(id)", raftAddress: addresses[id]!)
        config.snapshotEveryEntries = snapshotEveryEntries
        config.snapshotChunkBytes = snapshotChunkBytes
        config.snapshotBytesPerSecond = snapshotBytesPerSecond
        if let followerApplyDelayMillis { config.followerApplyDelayMillis = followerApplyDelayMillis }
        if let groupCommitMaxWaitMicros { config.groupCommitMaxWaitMicros = groupCommitMaxWaitMicros }
        let node = try NodeRuntime(config: config, log: { _ in })
        try await node.start(peers: addresses)
        for g in groups { try await node.bootstrapGroup(g, voters: voters) }
        nodes[id] = node
    }

    func startAll() async throws {
        let voters = addresses.keys.sorted()
        for id in voters { try await start(id, voters: voters) }
    }

    func stop(_ id: NodeID) async {
        await nodes.removeValue(forKey: id)?.shutdown()
    }

    func stopAll() async {
        for id in nodes.keys.sorted() { await stop(id) }
    }

    /// Waits for a leader that every running node agrees on.
    func leader(of group: GroupID = 1, timeoutSeconds: Double = 15) async throws -> NodeID {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            var seen = Set<NodeID>()
            var leaderRole = false
            for (id, node) in nodes {
                let s = try await node.status(group: group)
                seen.insert(s.leader)
                if s.role == .leader && s.leader == id { leaderRole = true }
            }
            if seen.count == 1, let l = seen.first, l != noNode, leaderRole, nodes[l] != nil { return l }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RuntimeError.timedOut("waiting for a leader")
    }

    /// Waits until node `id` answers `sql` with `rows` at the local level.
    func eventually(_ id: NodeID, _ sql: String, _ rows: [[SQLValue]], group: GroupID = 1, seconds: Double = 15) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let r = try? await nodes[id]?.query(group: group, SQLStatement(sql), consistency: .local), r.rows == rows { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    func sql(_ statements: String..., atomic: Bool = false) -> SQLCommand {
        SQLCommand(statements: statements.map { SQLStatement($0) }, atomic: atomic,
                   timestampMillis: Int64(Date().timeIntervalSince1970 * 1000), randomSeed: UInt64.random(in: 0...UInt64.max))
    }
}

@Suite("Node runtime: an in-process cluster over TCP", .serialized)
struct NodeRuntimeTests {
    @Test("write through the leader, read the same rows from every node at the linearizable level")
    func writeAndReadEverywhere() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let leader = try await c.leader()
        let node = c.nodes[leader]!
        _ = try await node.execute(group: 1, c.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))
        let r = try await node.execute(group: 1, c.sql("INSERT INTO t(v) VALUES ('a')", "INSERT INTO t(v) VALUES ('b')"))
        #expect(r.map(\.rowsAffected) == [1, 1])
        for (_, n) in c.nodes {
            let rows = try await n.query(group: 1, SQLStatement("SELECT v FROM t ORDER BY id"))
            #expect(rows.rows == [[.text("a")], [.text("b")]])
        }
        await c.stopAll()
    }

    @Test("stale reads: served locally while the leader is heard from, refused with a reason once it is not")
    func staleReads() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let leader = try await c.leader()
        _ = try await c.nodes[leader]!.execute(group: 1, c.sql("CREATE TABLE t(v)", "INSERT INTO t VALUES (1)"))
        let follower = c.nodes.keys.sorted().first { $0 != leader }!
        // Wait until the follower has applied the write (stale reads do not wait).
        var rows: [[SQLValue]] = []
        for _ in 0..<100 where rows != [[.integer(1)]] {
            rows = (try? await c.nodes[follower]!.query(group: 1, SQLStatement("SELECT v FROM t"), consistency: .stale(freshnessMillis: 1000)))?.rows ?? []
            if rows != [[.integer(1)]] { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(rows == [[.integer(1)]])
        // Cut the follower off: its freshness runs out.
        c.nodes[follower]!.transport.faults = TransportFaults(partitioned: Set(c.addresses.keys))
        try await Task.sleep(for: .milliseconds(400))
        await #expect(throws: RuntimeError.self) {
            _ = try await c.nodes[follower]!.query(group: 1, SQLStatement("SELECT v FROM t"), consistency: .stale(freshnessMillis: 200))
        }
        // A local read still answers from what it has.
        let local = try await c.nodes[follower]!.query(group: 1, SQLStatement("SELECT v FROM t"), consistency: .local)
        #expect(local.rows == [[.integer(1)]])
        await c.stopAll()
    }

    @Test("a follower refuses a write and names the leader")
    func followerRefusesWrites() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let leader = try await c.leader()
        let follower = c.nodes.keys.first { $0 != leader }!
        await #expect(throws: RuntimeError.notLeader(leader: leader)) {
            _ = try await c.nodes[follower]!.execute(group: 1, c.sql("CREATE TABLE t(x)"))
        }
        await c.stopAll()
    }

    @Test("non-deterministic SQL gives the same row on every replica")
    func determinism() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let node = c.nodes[try await c.leader()]!
        _ = try await node.execute(group: 1, c.sql("CREATE TABLE t(r, b, d)",
                                                   "INSERT INTO t VALUES (random(), randomblob(16), datetime('now'))"))
        var seen: [[[SQLValue]]] = []
        for (_, n) in c.nodes { seen.append(try await n.query(group: 1, SQLStatement("SELECT * FROM t")).rows) }
        #expect(Set(seen.map { "\($0)" }).count == 1)
        await c.stopAll()
    }

    @Test("when the leader stops, a new one is elected, acknowledged writes survive and writes resume")
    func failover() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let first = try await c.leader()
        _ = try await c.nodes[first]!.execute(group: 1, c.sql("CREATE TABLE t(v INTEGER)"))
        for i in 0..<20 { _ = try await c.nodes[first]!.execute(group: 1, c.sql("INSERT INTO t VALUES (\(i))")) }
        let stoppedAt = Date()
        await c.stop(first)
        let second = try await c.leader()
        #expect(second != first)
        _ = try await c.nodes[second]!.execute(group: 1, c.sql("INSERT INTO t VALUES (20)"))
        let failoverSeconds = Date().timeIntervalSince(stoppedAt)
        print("failover: first successful write \(String(format: "%.2f", failoverSeconds)) s after the leader stopped")
        #expect(failoverSeconds < 5)
        let rows = try await c.nodes[second]!.query(group: 1, SQLStatement("SELECT count(*) FROM t"))
        #expect(rows.rows == [[.integer(21)]])
        // The old leader restarts from its data directory and catches up.
        try await c.start(first, voters: c.addresses.keys.sorted())
        let deadline = Date().addingTimeInterval(10)
        var caughtUp = false
        while Date() < deadline && !caughtUp {
            let r = try? await c.nodes[first]!.query(group: 1, SQLStatement("SELECT count(*) FROM t"))
            caughtUp = r?.rows == [[.integer(21)]]
            if !caughtUp { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(caughtUp)
        await c.stopAll()
    }

    @Test("concurrent linearizable reads through a follower share ReadIndex requests, and each sees every write acknowledged before it began")
    func followerReadsShareReadIndex() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let leaderID = try await c.leader()
        let leader = c.nodes[leaderID]!
        let followerID = c.nodes.keys.sorted().first { $0 != leaderID }!
        let follower = c.nodes[followerID]!
        _ = try await leader.execute(group: 1, c.sql("CREATE TABLE t(v INTEGER)"))
        let writes = 20, readsPerWrite = 24
        let sentBefore = follower.transport.stats.envelopesSent
        var reads = 0
        for k in 1...writes {
            _ = try await leader.execute(group: 1, c.sql("INSERT INTO t VALUES (\(k))"))
            // Acknowledged: every read through the follower that starts now sees it.
            let seen = try await withThrowingTaskGroup(of: Int64.self) { group in
                for _ in 0..<readsPerWrite {
                    group.addTask {
                        let r = try await follower.query(group: 1, SQLStatement("SELECT max(v) FROM t"))
                        if case .integer(let v) = r.rows.first?.first { return v }
                        return 0
                    }
                }
                return try await group.reduce(into: [Int64]()) { $0.append($1) }
            }
            #expect(seen.allSatisfy { $0 >= Int64(k) }, "reads begun after write \(k) was acknowledged saw \(seen)")
            reads += seen.count
        }
        // One request per pass for all the reads that arrived in it (the pings and heartbeats of the
        // second or so this takes are a few dozen envelopes more).
        let sent = follower.transport.stats.envelopesSent - sentBefore
        print("follower reads: \(reads) linearizable reads through a follower sent \(sent) envelopes")
        #expect(sent < reads / 2, "\(reads) reads through the follower sent \(sent) envelopes")
        await c.stopAll()
    }

    @Test("writes that arrive together are proposed together: the leader sends each follower one append for them, not one per write, and every write is applied once")
    func concurrentWritesShareAppends() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let leaderID = try await c.leader()
        let leader = c.nodes[leaderID]!
        _ = try await leader.execute(group: 1, c.sql("CREATE TABLE t(v INTEGER)"))
        let rounds = 10, perRound = 48
        let sentBefore = leader.transport.stats.envelopesSent
        var indexes: [LogIndex] = []
        for round in 0..<rounds {
            let answered = try await withThrowingTaskGroup(of: LogIndex.self) { group in
                for k in 0..<perRound {
                    let insert = c.sql("INSERT INTO t VALUES (\(round * perRound + k))")
                    group.addTask { try await leader.executeIndexed(group: 1, insert).index }
                }
                return try await group.reduce(into: [LogIndex]()) { $0.append($1) }
            }
            indexes += answered
        }
        let writes = rounds * perRound
        #expect(Set(indexes).count == writes, "every write has an index of its own")
        let r = try await leader.query(group: 1, SQLStatement("SELECT count(*), count(DISTINCT v) FROM t"))
        #expect(r.rows.first == [.integer(Int64(writes)), .integer(Int64(writes))])
        // One by one, each write made two appends and two answers at the leader's side alone.
        let sent = leader.transport.stats.envelopesSent - sentBefore
        print("concurrent writes: \(writes) writes, the leader sent \(sent) envelopes")
        #expect(sent < writes, "\(writes) writes made the leader send \(sent) envelopes")
        await c.stopAll()
    }

    @Test("every node knows which node leads a group it holds without asking its Raft loop (a router sends writes there at once), follows a leadership transfer, and forgets it with the group")
    func leaderHintsFollowLeadership() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let leader = try await c.leader()
        func hintsAgree(_ expected: NodeID) async throws -> Bool {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                if c.nodes.values.allSatisfy({ $0.leaderHint(1) == expected }) { return true }
                try await Task.sleep(for: .milliseconds(20))
            }
            return false
        }
        #expect(try await hintsAgree(leader), "hints: \(c.nodes.mapValues { $0.leaderHint(1) as Any })")
        let next = c.nodes.keys.sorted().first { $0 != leader }!
        try await c.nodes[leader]!.transferLeadership(group: 1, to: next)
        #expect(try await hintsAgree(next), "after the transfer to \(next): \(c.nodes.mapValues { $0.leaderHint(1) as Any })")
        #expect(c.nodes[next]!.leaderHint(2) == nil, "a group the node does not hold has no hint")
        let retiring = c.nodes.keys.sorted().first { $0 != next }!
        try await c.nodes[retiring]!.retireGroup(1)
        #expect(c.nodes[retiring]!.leaderHint(1) == nil)
        await c.stopAll()
    }

    @Test("a write whose entry was cut from the leader's log is answered as lost when a later term proposes at its index, never left waiting")
    func overwrittenProposalIsAnsweredLost() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let node = c.nodes[try await c.leader()]!
        _ = try await node.execute(group: 1, c.sql("CREATE TABLE t(v INTEGER)"))
        // As a leader holds it after losing its term and winning again before applying what replaced
        // its entries: a write of an earlier term waiting at the index the next proposal takes.
        let next = try await node.status(group: 1).lastIndex + 1
        let promise = node.applyLoop.makePromise(of: ([StatementResult], LogIndex).self)
        let outcome = NIOLockedValueBox<Result<([StatementResult], LogIndex), any Error>?>(nil)
        promise.futureResult.whenComplete { r in outcome.withLockedValue { $0 = r } }
        try await node.raftLoop.submit {
            node.raftState.value.pendingWrites[1, default: [:]][next] = NodeRuntime.PendingWrite(term: 0, promise: promise, proposedNanos: 0, deadline: .distantFuture)
        }.get()
        let (_, index) = try await node.executeIndexed(group: 1, c.sql("INSERT INTO t VALUES (1)"))
        #expect(index == next)
        let deadline = Date().addingTimeInterval(5)
        while outcome.withLockedValue({ $0 }) == nil && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        if case .failure(let e)? = outcome.withLockedValue({ $0 }) {
            #expect(e as? RuntimeError == .proposalLost)
        } else {
            Issue.record("the replaced write was not answered as lost")
            promise.fail(RuntimeError.shutDown)
        }
        await c.stopAll()
    }

    @Test("a write or read asked on the Raft loop (a call from another node, read by the transport there) is answered on the apply loop, not on the Raft loop; one asked on another event loop is answered there")
    func answersStayOffTheRaftLoop() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let leaderID = try await c.leader()
        let node = c.nodes[leaderID]!
        _ = try await node.execute(group: 1, c.sql("CREATE TABLE t(v INTEGER)"))
        let command = c.sql("INSERT INTO t VALUES (1)")
        let (write, read) = try await node.raftLoop.submit {
            (node.executeFuture(group: 1, command), node.queryFuture(group: 1, [SQLStatement("SELECT count(*) FROM t")]))
        }.get()
        #expect(write.eventLoop !== node.raftLoop && write.eventLoop === node.applyLoop)
        #expect(read.eventLoop !== node.raftLoop && read.eventLoop === node.applyLoop)
        _ = try await write.get()
        _ = try await read.get()
        let other = MultiThreadedEventLoopGroup.singleton.next()
        let elsewhere = try await other.submit { node.executeFuture(group: 1, command) }.get()
        #expect(elsewhere.eventLoop === other)
        _ = try await elsewhere.get()
        await c.stopAll()
    }

    @Test("concurrent writes share log syncs (group commit)")
    func groupCommit() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let leaderID = try await c.leader()
        let node = c.nodes[leaderID]!
        _ = try await node.execute(group: 1, c.sql("CREATE TABLE t(v INTEGER)"))
        let before = c.nodes.mapValues(\.syncCount)
        // 16 clients, each writing one row at a time: a steady concurrent load.
        let clients = 16, perClient = 25
        let commands = (0..<clients).map { k in (0..<perClient).map { c.sql("INSERT INTO t VALUES (\(k * 1000 + $0))") } }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for mine in commands {
                group.addTask { for command in mine { _ = try await node.execute(group: 1, command) } }
            }
            try await group.waitForAll()
        }
        let writes = clients * perClient
        let leaderSyncs = node.syncCount - before[leaderID]!
        let followerSyncs = c.nodes.filter { $0.key != leaderID }.map { $0.value.syncCount - before[$0.key]! }
        print("group commit: \(writes) writes from \(clients) concurrent clients; leader syncs \(leaderSyncs) (\(String(format: "%.2f", Double(leaderSyncs) / Double(writes))) per write), follower syncs \(followerSyncs)")
        #expect(leaderSyncs < writes)
        let rows = try await node.query(group: 1, SQLStatement("SELECT count(*) FROM t"))
        #expect(rows.rows == [[.integer(Int64(writes))]])
        await c.stopAll()
    }

    @Test("a node that missed many writes catches up through a snapshot once the log was compacted")
    func catchUpThroughSnapshot() async throws {
        let c = try LocalCluster(size: 3)
        c.snapshotEveryEntries = 20
        // Small pieces, so the database file (tens of KiB) streams in many of them.
        c.snapshotChunkBytes = 1024
        try await c.startAll()
        let leader = try await c.leader()
        let lagging = c.nodes.keys.sorted().first { $0 != leader }!
        await c.stop(lagging)
        let node = c.nodes[leader]!
        _ = try await node.execute(group: 1, c.sql("CREATE TABLE t(v INTEGER)"))
        for i in 0..<100 { _ = try await node.execute(group: 1, c.sql("INSERT INTO t VALUES (\(i))")) }
        // Snapshots are taken in the background; wait for the leader's log to be compacted.
        let deadline = Date().addingTimeInterval(10)
        while try await node.status(group: 1).firstIndex < 50 && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(try await node.status(group: 1).firstIndex >= 50)
        #expect(node.snapshotStats.taken >= 1)
        let started = Date()
        try await c.start(lagging, voters: c.addresses.keys.sorted())
        #expect(await c.eventually(lagging, "SELECT count(*), sum(v) FROM t", [[.integer(100), .integer(4950)]]))
        print("catch-up: 100 missed writes, log compacted; restarted node caught up in \(String(format: "%.2f", Date().timeIntervalSince(started))) s via \(c.nodes[lagging]!.snapshotStats.installed) snapshot(s)")
        #expect(c.nodes[lagging]!.snapshotStats.installed >= 1)
        #expect(c.nodes[lagging]!.snapshotStats.chunksReceived > 4, "the snapshot should arrive in pieces")
        #expect(node.snapshotStats.chunksSent >= c.nodes[lagging]!.snapshotStats.chunksReceived)
        // It keeps following after the snapshot.
        _ = try await node.execute(group: 1, c.sql("INSERT INTO t VALUES (100)"))
        #expect(await c.eventually(lagging, "SELECT count(*) FROM t", [[.integer(101)]]))
        await c.stopAll()
    }

    @Test("a node sends one snapshot stream at a time: three groups catching up one follower take turns, and all catch up")
    func snapshotStreamsTakeTurns() async throws {
        let c = try LocalCluster(size: 3)
        c.groups = [1, 2, 3]
        c.snapshotEveryEntries = 20
        // Small, slow pieces: each stream lasts long enough for the three to overlap if they could.
        c.snapshotChunkBytes = 1024
        c.snapshotBytesPerSecond = 16 * 1024
        try await c.startAll()
        // One node leads all three groups, so all three streams leave from it.
        let leader = try await c.leader(of: 1)
        for g: GroupID in [2, 3] {
            let current = try await c.leader(of: g)
            if current != leader {
                try await c.nodes[current]!.transferLeadership(group: g, to: leader)
                let deadline = Date().addingTimeInterval(10)
                while try await c.nodes[leader]!.status(group: g).role != .leader && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
            }
        }
        let lagging = c.nodes.keys.sorted().first { $0 != leader }!
        await c.stop(lagging)
        let node = c.nodes[leader]!
        for g: GroupID in [1, 2, 3] {
            _ = try await node.execute(group: g, c.sql("CREATE TABLE t(v INTEGER)"))
            for i in 0..<60 { _ = try await node.execute(group: g, c.sql("INSERT INTO t VALUES (\(i))")) }
            let deadline = Date().addingTimeInterval(10)
            while try await node.status(group: g).firstIndex < 30 && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        }
        try await c.start(lagging, voters: c.addresses.keys.sorted())
        for g: GroupID in [1, 2, 3] {
            #expect(await c.eventually(lagging, "SELECT count(*) FROM t", [[.integer(60)]], group: g, seconds: 60), "group \(g) did not catch up")
        }
        let stats = node.snapshotStats
        print("snapshot streams: \(c.nodes[lagging]!.snapshotStats.installed) installed on the returning node; at most \(stats.mostStreamsOut) sent at once")
        #expect(c.nodes[lagging]!.snapshotStats.installed >= 3)
        #expect(stats.mostStreamsOut == 1)
        await c.stopAll()
    }

    @Test("a node back from an absence receives one snapshot stream at a time, though two leaders stream to it; the refused leader tries again and every group catches up")
    func snapshotStreamsInTakeTurns() async throws {
        let c = try LocalCluster(size: 3)
        c.groups = [1, 2, 3, 4]
        c.snapshotEveryEntries = 20
        // Small, slow pieces: each stream lasts long enough for two to overlap if they could.
        c.snapshotChunkBytes = 1024
        c.snapshotBytesPerSecond = 16 * 1024
        try await c.startAll()
        // Two nodes lead two groups each, so streams to the third leave from both at once.
        let ids = c.nodes.keys.sorted()
        let lagging = ids[2]
        let leads: [GroupID: UInt64] = [1: ids[0], 2: ids[0], 3: ids[1], 4: ids[1]]
        for (g, want) in leads {
            let current = try await c.leader(of: g)
            if current != want {
                try await c.nodes[current]!.transferLeadership(group: g, to: want)
                let deadline = Date().addingTimeInterval(10)
                while try await c.nodes[want]!.status(group: g).role != .leader && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
            }
        }
        await c.stop(lagging)
        for (g, leader) in leads.sorted(by: { $0.key < $1.key }) {
            let node = c.nodes[leader]!
            _ = try await node.execute(group: g, c.sql("CREATE TABLE t(v INTEGER)"))
            for i in 0..<60 { _ = try await node.execute(group: g, c.sql("INSERT INTO t VALUES (\(i))")) }
            let deadline = Date().addingTimeInterval(10)
            while try await node.status(group: g).firstIndex < 30 && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        }
        try await c.start(lagging, voters: c.addresses.keys.sorted())
        for g: GroupID in [1, 2, 3, 4] {
            #expect(await c.eventually(lagging, "SELECT count(*) FROM t", [[.integer(60)]], group: g, seconds: 90), "group \(g) did not catch up")
        }
        let stats = c.nodes[lagging]!.snapshotStats
        print("snapshot streams in: \(stats.installed) installed, at most \(stats.mostStreamsIn) received at once, \(stats.busyRefusals) refused while busy")
        #expect(stats.installed >= 4)
        #expect(stats.mostStreamsIn == 1)
        #expect(stats.busyRefusals >= 1, "the two leaders' streams never met: the test shows nothing")
        await c.stopAll()
    }

    @Test("a restart after compaction, even with the database lost, rebuilds it from the snapshot and the log")
    func recoverFromSnapshotFile() async throws {
        let c = try LocalCluster(size: 3)
        c.snapshotEveryEntries = 20
        try await c.startAll()
        let leader = try await c.leader()
        let node = c.nodes[leader]!
        _ = try await node.execute(group: 1, c.sql("CREATE TABLE t(v INTEGER)"))
        for i in 0..<60 { _ = try await node.execute(group: 1, c.sql("INSERT INTO t VALUES (\(i))")) }
        let follower = c.nodes.keys.sorted().first { $0 != leader }!
        #expect(await c.eventually(follower, "SELECT count(*) FROM t", [[.integer(60)]]))
        let deadline = Date().addingTimeInterval(10)
        while try await c.nodes[follower]!.status(group: 1).firstIndex < 20 && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        await c.stop(follower)
        // As if power loss had taken every transaction SQLite had not synced: the database is gone.
        let db = c.root + "/node\(follower)/group-1.sqlite"
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: db + suffix) }
        try await c.start(follower, voters: c.addresses.keys.sorted())
        #expect(await c.eventually(follower, "SELECT count(*) FROM t", [[.integer(60)]]))
        await c.stopAll()
    }

    @Test("a write waiting behind a database's drop, when its copy is deleted, is told the database was dropped, not that its outcome is unknown")
    func writeAfterDropIsRefused() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let leader = try await c.leader()
        let node = c.nodes[leader]!
        _ = try await node.execute(group: 1, c.sql("CREATE TABLE t(v)"))
        _ = try await node.execute(group: 1, SQLCommand.dropDatabase())
        // Cut off, the leader cannot commit the write: it stays pending until the copy goes.
        node.transport.faults = TransportFaults(partitioned: Set(c.addresses.keys))
        let insert = c.sql("INSERT INTO t VALUES (1)")
        let write = Task { try await node.execute(group: 1, insert) }
        try await Task.sleep(for: .milliseconds(300))
        try await node.retireGroup(1)
        await #expect(throws: RuntimeError.databaseDropped) { _ = try await write.value }
        await c.stopAll()
    }

    @Test("a copy deleted and made again goes on in the old copy's term, and keeps what the old one held as its vote floor")
    func copyMadeAgainKeepsItsTerm() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let leader = try await c.leader()
        _ = try await c.nodes[leader]!.execute(group: 1, c.sql("CREATE TABLE t(v)"))
        let follower = c.nodes.keys.sorted().first { $0 != leader }!
        let node = c.nodes[follower]!
        #expect(await c.eventually(follower, "SELECT count(*) FROM t", [[.integer(0)]]))
        let before = try await node.status(group: 1)
        #expect(before.term > 0)
        try await node.retireGroup(1)
        let tombstone = c.root + "/node\(follower)/tombstones/group-1.json"
        #expect(FileManager.default.fileExists(atPath: tombstone))
        // Made again empty, waiting to be added: not term 0, and not free to vote as a new member.
        try await node.bootstrapGroup(1, voters: [])
        let after = try await node.status(group: 1)
        #expect(after.term >= before.term && after.lastIndex == 0, "\(after)")
        await c.stopAll()
    }
}
