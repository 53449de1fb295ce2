import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Records acknowledged writes and reads with their times, across concurrent client tasks.
actor History {
    struct Write { var id: Int; var start: Date; var end: Date }
    struct Read { var node: String; var start: Date; var count: Int }
    var writes: [Write] = []
    var reads: [Read] = []
    var failedReads = 0
    func acked(_ id: Int, _ start: Date, _ end: Date) { writes.append(Write(id: id, start: start, end: end)) }
    func read(_ node: String, _ start: Date, _ count: Int) { reads.append(Read(node: node, start: start, count: count)) }
    func readFailed() { failedReads += 1 }
    var ackedIDs: Set<Int> { Set(writes.map(\.id)) }
}

/// Ids of every row in `table`, read at the linearizable level from `node`.
func ids(_ node: NodeProcess, _ table: String) async throws -> Set<Int> {
    Set(try await node.rows("SELECT id FROM \(table)").compactMap { $0.first as? Int })
}

/// Writers inserting unique ids through the given nodes until `stop`.
func runWriters(_ count: Int, table: String, history: History, until stop: Date,
                targets: @escaping @Sendable () -> [NodeProcess]) async {
    await withTaskGroup(of: Void.self) { group in
        for w in 0..<count {
            group.addTask {
                var seq = 0
                while Date() < stop {
                    seq += 1
                    let id = (w + 1) * 1_000_000 + seq
                    let nodes = targets()
                    guard !nodes.isEmpty else { return }
                    let node = nodes[(w + seq) % nodes.count]
                    let start = Date()
                    if let r = try? await node.execute([["INSERT INTO \(table)(id) VALUES(?)", id]]), r.status == 200,
                       let results = r.json["results"] as? [Object], results.first?["error"] == nil {
                        await history.acked(id, start, Date())
                    } else {
                        try? await Task.sleep(for: .milliseconds(10))
                    }
                }
            }
        }
    }
}

@Suite("Real cairn server processes", .serialized)
struct ClusterProcessTests {
    @Test("3 nodes: a write through one node reads back the same on every node; random() and 'now' are the same everywhere")
    func threeNodesReplicate() async throws {
        let c = try await ProcessCluster.founded("three", count: 3)
        defer { c.destroy() }
        let a = c.nodes[0]
        let created = try await a.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", ["INSERT INTO t(v) VALUES(?)", "one"],
                                           ["INSERT INTO t(v) VALUES(?)", "two"]])
        #expect(created.status == 200, "\(created.text)")
        let nd = try await c.nodes[1].execute(["CREATE TABLE nd(r INTEGER, t TEXT, b BLOB)",
                                               "INSERT INTO nd VALUES(random(), datetime('now'), randomblob(16))"])
        #expect(nd.status == 200, "\(nd.text)")
        var seen: Set<String> = []
        for n in c.nodes {
            let rows = try await n.rows("SELECT id, v FROM t ORDER BY id")
            #expect(rows.count == 2 && rows[0][1] as? String == "one" && rows[1][1] as? String == "two", "\(n.name): \(rows)")
            let row = try await n.rows("SELECT r, t, hex(b) FROM nd")
            #expect(row.count == 1)
            seen.insert("\(row)")
            // Local reads after the linearizable one: each replica's own SQLite file has the same row.
            let local = try await n.rows("SELECT r, t, hex(b) FROM nd", consistency: "local")
            #expect("\(local)" == "\(row)", "\(n.name)")
        }
        #expect(seen.count == 1, "replicas disagree on a non-deterministic row: \(seen)")
    }

    @Test("kill -9 the leader mid-stream: every acknowledged write survives and writes resume")
    func killLeaderMidStream() async throws {
        let c = try await ProcessCluster.founded("failover", count: 3)
        defer { c.destroy() }
        #expect(try await c.write(["CREATE TABLE w(id INTEGER PRIMARY KEY)"]).status == 200)
        let leader = try await c.leader(of: 1)
        let history = History()
        let killAt = Date().addingTimeInterval(1.5)
        let stop = killAt.addingTimeInterval(5)
        let nodes = c.nodes
        async let writing: Void = runWriters(6, table: "w", history: history, until: stop) { nodes.filter(\.isRunning) }
        try await Task.sleep(until: .now + .seconds(1.5))
        let killed = Date()
        leader.kill9()
        await writing
        let writes = await history.writes
        let before = writes.filter { $0.end < killed }.count
        let firstAfter = writes.filter { $0.start > killed }.map(\.end).min()
        let failover = firstAfter.map { $0.timeIntervalSince(killed) }
        print("failover: \(before) writes acknowledged before the kill; first write started after the kill acknowledged \(failover.map { String(format: "%.3f", $0) } ?? "never") s after it; \(writes.count) in all")
        #expect(before > 0)
        #expect(failover != nil && failover! < 10)
        try leader.start()
        try await c.waitReady()
        let acked = await history.ackedIDs
        for n in c.nodes {
            let present = try await ids(n, "w")
            #expect(acked.isSubset(of: present), "\(n.name) lost \(acked.subtracting(present).count) acknowledged writes")
        }
    }

    @Test("a restarted node catches up: through the log, then through a snapshot after compaction")
    func laggingNodeCatchesUp() async throws {
        let c = try await ProcessCluster.founded("catchup", count: 3, extraArgs: ["--snapshot-entries", "200"])
        defer { c.destroy() }
        #expect(try await c.write(["CREATE TABLE k(id INTEGER PRIMARY KEY)"]).status == 200)
        let leader = try await c.leader(of: 1)
        let lagger = c.nodes.first { $0 !== leader }!

        lagger.kill9()
        for i in 1...100 { _ = try await c.write([["INSERT INTO k(id) VALUES(?)", i]]) }
        try lagger.start()
        let viaLog = try await catchUp(lagger, expect: 100)
        let installedAfterLog = try await lagger.status()["storage"] as? Object
        #expect(installedAfterLog?["snapshots_installed"] as? Int == 0)

        lagger.kill9()
        var n = 100
        while n < 700 {
            let batch = (n + 1)...(n + 8)
            try await withThrowingTaskGroup(of: Void.self) { g in
                for i in batch { g.addTask { _ = try await self.writeOne(c, i) } }
                try await g.waitForAll()
            }
            n += 8
        }
        let compacted = try await leader.group(1)
        #expect((compacted?["first_index"] as? Int ?? 0) > 150, "the leader has not compacted its log: \(compacted ?? [:])")
        try lagger.start()
        let viaSnapshot = try await catchUp(lagger, expect: n)
        let storage = try await lagger.status()["storage"] as? Object
        #expect((storage?["snapshots_installed"] as? Int ?? 0) >= 1, "\(storage ?? [:])")
        print("catch-up: 100 entries through the log in \(String(format: "%.3f", viaLog)) s; \(n - 100) more through a snapshot in \(String(format: "%.3f", viaSnapshot)) s")
    }

    private func writeOne(_ c: ProcessCluster, _ i: Int) async throws -> HTTPResult {
        try await c.write([["INSERT INTO k(id) VALUES(?)", i]])
    }

    /// Seconds until `node` (just restarted) holds `expect` rows locally.
    private func catchUp(_ node: NodeProcess, expect: Int) async throws -> Double {
        let start = Date()
        while Date().timeIntervalSince(start) < 60 {
            if let rows = try? await node.rows("SELECT count(*) FROM k", consistency: "local"), rows.first?.first as? Int == expect {
                return Date().timeIntervalSince(start)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("\(node.name) did not catch up to \(expect) rows\n\(node.log.suffix(2000))")
    }
}
