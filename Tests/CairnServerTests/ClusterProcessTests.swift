import CairnTestSupport
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

extension ProcessTests {
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

        // Group commit under concurrent load: log syncs per acknowledged write, on each node.
        #expect(try await a.execute(["CREATE TABLE g(id INTEGER PRIMARY KEY)"]).status == 200)
        func syncs() async throws -> [Int] {
            var out: [Int] = []
            for n in c.nodes { out.append(((try await n.status())["storage"] as? Object)?["log_syncs"] as? Int ?? 0) }
            return out
        }
        let before = try await syncs()
        let history = History()
        let nodes = c.nodes
        await runWriters(16, table: "g", history: history, until: Date().addingTimeInterval(2)) { nodes }
        let after = try await syncs()
        let writes = await history.writes.count
        let perWrite = zip(after, before).map { Double($0 - $1) / Double(max(writes, 1)) }
        print("group commit: \(writes) writes from 16 clients in 2 s; log syncs per write on each node: \(perWrite.map { String(format: "%.3f", $0) })")
        #expect(writes > 0)
        #expect(perWrite.allSatisfy { $0 < 1 }, "16 concurrent clients should share syncs: \(perWrite)")
    }

    @Test("3 nodes with mutual TLS between them replicate; a node with a foreign certificate cannot take part")
    func mutualTLS() async throws {
        let certs = NSTemporaryDirectory() + "cairn-tls-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: certs) }
        try await makeTestCertificates(in: certs, ca: "cluster-ca", nodes: ["node"])
        try await makeTestCertificates(in: certs, ca: "other-ca", nodes: ["intruder"])
        let c = try await ProcessCluster.founded("tls", count: 3, extraArgs: [
            "--tls-cert", certs + "/node.pem", "--tls-key", certs + "/node.key", "--tls-ca", certs + "/cluster-ca.pem"])
        defer { c.destroy() }
        #expect(try await c.write(["CREATE TABLE s(id INTEGER PRIMARY KEY)", "INSERT INTO s(id) VALUES(7)"]).status == 200)
        for n in c.nodes { #expect(try await ids(n, "s") == [7]) }
        let intruder = NodeProcess(name: "intruder", root: c.root, extraArgs: [
            "--tls-cert", certs + "/intruder.pem", "--tls-key", certs + "/intruder.key", "--tls-ca", certs + "/other-ca.pem"])
        c.nodes.append(intruder)
        try intruder.start(["--join", c.nodes[0].http])
        try await Task.sleep(for: .seconds(3))
        let ready = try await intruder.get("/v1/ready")
        #expect(ready.status == 503, "a node without the cluster's CA must not become a working member: \(ready.text)")
        #expect(c.nodes[0].log.contains("closing the connection") || intruder.log.contains("closing the connection"))
        await intruder.kill9()
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
        await leader.kill9()
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
        #expect(try await c.write(["CREATE TABLE k(id INTEGER PRIMARY KEY, b BLOB)"]).status == 200)
        let leader = try await c.leader(of: 1)
        let lagger = c.nodes.first { $0 !== leader }!

        await lagger.kill9()
        for i in 1...100 { _ = try await c.write([["INSERT INTO k(id) VALUES(?)", i]]) }
        try lagger.start()
        let viaLog = try await catchUp(lagger, expect: 100)
        let installedAfterLog = try await lagger.status()["storage"] as? Object
        #expect(installedAfterLog?["snapshots_installed"] as? Int == 0)

        await lagger.kill9()
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
        #expect((storage?["snapshot_chunks_received"] as? Int ?? 0) >= 4, "a ~5 MiB database streams in 1 MiB pieces: \(storage ?? [:])")
        print("catch-up: 100 entries through the log in \(String(format: "%.3f", viaLog)) s; \(n - 100) more through a snapshot in \(String(format: "%.3f", viaSnapshot)) s")
    }

    /// 8 KiB per row, so the snapshot is several MiB and streams in several pieces.
    private func writeOne(_ c: ProcessCluster, _ i: Int) async throws -> HTTPResult {
        try await c.write([["INSERT INTO k(id, b) VALUES(?, randomblob(8192))", i]])
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
}

extension ProcessTests {
@Suite("Real cairn server processes: faults", .serialized)
struct ClusterFaultTests {
    @Test("cut the leader off: no acknowledged write is lost and no linearizable read is stale, on either side")
    func partitionLeader() async throws {
        let c = try await ProcessCluster.founded("partition", count: 3, extraArgs: ["--request-timeout-ms", "1500"])
        defer { c.destroy() }
        #expect(try await c.write(["CREATE TABLE p(id INTEGER PRIMARY KEY)"]).status == 200)
        let cut = try await c.leader(of: 1)
        let history = History()
        let stop = Date().addingTimeInterval(6)
        let nodes = c.nodes
        async let writing: Void = runWriters(4, table: "p", history: history, until: stop) { nodes }
        async let reading: Void = withTaskGroup(of: Void.self) { group in
            for node in nodes {
                group.addTask {
                    while Date() < stop {
                        let start = Date()
                        if let rows = try? await node.rows("SELECT count(*) FROM p"), let n = rows.first?.first as? Int {
                            await history.read(node.name, start, n)
                        } else {
                            await history.readFailed()
                        }
                    }
                }
            }
        }
        try await Task.sleep(for: .seconds(1))
        try await c.cutOff(cut)
        let cutAt = Date()
        try await Task.sleep(for: .seconds(4))
        try await c.heal()
        let healedAt = Date()
        _ = await (writing, reading)

        let writes = await history.writes
        let reads = await history.reads
        // A read is stale if it misses a write acknowledged before the read began (rows are only added).
        var stale: [String] = []
        for r in reads {
            let mustSee = writes.filter { $0.end < r.start }.count
            if r.count < mustSee { stale.append("\(r.node) saw \(r.count) rows at \(r.start), \(mustSee) were acknowledged before") }
        }
        #expect(stale.isEmpty, "stale linearizable reads: \(stale.prefix(5))")
        // The cut-off old leader cannot commit anything: a write acknowledged within the cut was the majority's.
        let duringCut = writes.filter { $0.start > cutAt && $0.end < healedAt }.count
        let cutReads = reads.filter { $0.node == cut.name && $0.start > cutAt.addingTimeInterval(0.5) && $0.start < cutAt.addingTimeInterval(2.5) }
        print("partition: \(writes.count) writes acknowledged, \(duringCut) of them within the 4 s cut (majority side); \(reads.count) reads, \(await history.failedReads) refused; \(cutReads.count) served by the cut-off node while cut off")
        #expect(duringCut > 0, "the majority side made no progress while the old leader was cut off")
        #expect(cutReads.isEmpty, "the cut-off node served linearizable reads: \(cutReads.prefix(3))")
        try await c.waitReady()
        let acked = Set(writes.map(\.id))
        for n in c.nodes {
            let present = try await ids(n, "p")
            #expect(acked.isSubset(of: present), "\(n.name) lost \(acked.subtracting(present).count) acknowledged writes")
        }
    }

    @Test("a torn log tail is truncated with a log line; corruption inside the log stops the node with the file and byte")
    func tornAndCorruptLog() async throws {
        let c = try await ProcessCluster.founded("torn", count: 3)
        defer { c.destroy() }
        #expect(try await c.write(["CREATE TABLE d(id INTEGER PRIMARY KEY)"]).status == 200)
        for i in 1...30 { _ = try await c.write([["INSERT INTO d(id) VALUES(?)", i]]) }
        let leader = try await c.leader(of: 1)
        let victim = c.nodes.first { $0 !== leader }!
        await victim.kill9()
        let wal = victim.dataDir + "/wal"
        let segments = try FileManager.default.contentsOfDirectory(atPath: wal).filter { $0.hasSuffix(".log") }.sorted()
        // Where the records end, the allocated zeros begin: a crash mid-write leaves part of a frame there.
        // (Frames are a little-endian u32 length, a u32 checksum and the payload; zeros after the last.)
        let recordsEnd = { (path: String) throws -> Int in
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            var offset = 0
            while offset + 8 <= bytes.count {
                let length = (0..<4).reduce(0) { $0 | Int(bytes[offset + $1]) << (8 * $1) }
                if length == 0 { break }
                offset += 8 + length
            }
            return offset
        }
        let last = try FileHandle(forWritingTo: URL(fileURLWithPath: wal + "/" + segments.last!))
        try last.seek(toOffset: UInt64(try recordsEnd(wal + "/" + segments.last!)))
        last.write(Data((0..<37).map { UInt8(truncatingIfNeeded: $0 &* 97 &+ 13) }))
        try last.close()
        for i in 31...40 { _ = try await c.write([["INSERT INTO d(id) VALUES(?)", i]]) }
        try victim.start()
        try await c.waitReady([victim])
        #expect(victim.log.contains("discarding a torn tail of 37 bytes"), "\(victim.log.suffix(2000))")
        #expect(try await ids(victim, "d") == Set(1...40))

        // Synced records lost from the end (a disk that lied): the log now ends before what the node
        // applied. It must refuse to start with a clear error, not crash or run with a shorter history.
        await victim.kill9()
        let lastSegment = wal + "/" + segments.last!
        let full = try Data(contentsOf: URL(fileURLWithPath: lastSegment))
        try full.prefix(try recordsEnd(lastSegment) * 6 / 10).write(to: URL(fileURLWithPath: lastSegment))
        try victim.start()
        let refused = await victim.waitForExit(seconds: 15)
        #expect(refused != nil && refused != 0, "a node whose log lost applied entries must refuse to start")
        #expect(victim.log.contains("the log lost entries that were synced"), "\(victim.log.suffix(1500))")
        #expect(!victim.log.contains("Precondition failed"), "it must refuse, not crash")
        try full.write(to: URL(fileURLWithPath: lastSegment))

        let first = wal + "/" + segments.first!
        var bytes = try Data(contentsOf: URL(fileURLWithPath: first))
        // Inside an early record, with many records after it: corruption, not a torn final write.
        let middle = min(bytes.count / 4, 200)
        bytes[middle] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: first))
        try victim.start()
        let exit = await victim.waitForExit(seconds: 15)
        #expect(exit != nil && exit != 0, "a node with a corrupt log must refuse to start")
        #expect(victim.log.contains("is corrupt at byte"), "\(victim.log.suffix(1500))")
        #expect(victim.log.contains(segments.first!))
        // The other two still serve every write.
        for n in c.nodes where n !== victim { #expect(try await ids(n, "d") == Set(1...40)) }
    }

    @Test("a full disk on one node: it stops with a clear error and stays up; nothing acknowledged is lost; it recovers after a restart")
    func fullDisk() async throws {
        let c = ProcessCluster("fulldisk")
        defer { c.destroy() }
        for i in 1...3 { c.nodes.append(NodeProcess(name: "n\(i)", root: c.root, extraArgs: [])) }
        let small = c.nodes[2]
        try FileManager.default.createDirectory(atPath: small.dataDir, withIntermediateDirectories: true)
        #expect(await run("/bin/mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", small.dataDir]) == 0, "mounting a small tmpfs needs root")
        defer { _ = try? Process.run(URL(fileURLWithPath: "/bin/umount"), arguments: ["-l", small.dataDir]) }
        let join = c.nodes.map(\.http).joined(separator: ",")
        for n in c.nodes { try n.start(["--join", join, "--bootstrap-expect", "3"]) }
        try await c.waitReady()
        #expect(try await c.write(["CREATE TABLE f(id INTEGER PRIMARY KEY, b BLOB)"]).status == 200)
        var acked: Set<Int> = []
        var failure = ""
        for i in 1...200 {
            let r = try await c.write([["INSERT INTO f(id, b) VALUES(?, randomblob(32768))", i]])
            if r.status == 200 { acked.insert(i) }
            if let ready = try? await small.get("/v1/ready"), ready.status == 503, ready.text.contains("storage failure") {
                failure = ready.text
                break
            }
        }
        #expect(failure.contains("No space left") || failure.contains("no space left") || failure.contains("full"), "\(failure)\n\(small.log.suffix(1500))")
        #expect(small.isRunning, "the node must stay up and report the failure, not crash")
        let refused = try await small.execute([["INSERT INTO f(id) VALUES(?)", 100_000]])
        #expect(refused.status == 503 && refused.text.contains("storage failure"), "\(refused.text)")
        for i in 1_001...1_010 { if try await c.write([["INSERT INTO f(id) VALUES(?)", i]]).status == 200 { acked.insert(i) } }

        // The operator frees space (here: moves the data to a roomier disk) and restarts the node.
        await small.kill9()
        let copy = c.root + "/n3-copy"
        #expect(await run("/bin/cp", ["-a", small.dataDir, copy]) == 0)
        #expect(await run("/bin/umount", [small.dataDir]) == 0)
        try FileManager.default.removeItem(atPath: small.dataDir)
        try FileManager.default.moveItem(atPath: copy, toPath: small.dataDir)
        try small.start()
        try await c.waitReady([small])
        for n in c.nodes {
            let present = try await ids(n, "f")
            #expect(acked.isSubset(of: present), "\(n.name) lost \(acked.subtracting(present).count) acknowledged writes")
        }
    }

    private func run(_ tool: String, _ args: [String]) async -> Int32 {
        (try? await runProgram(tool, args)) ?? -1
    }
}
}

extension ProcessTests {
@Suite("Real cairn server processes: membership", .serialized)
struct ClusterMembershipTests {
    @Test("5 nodes joining one by one, one a read replica: writes through any node, the same rows on all; a removed node leaves and the database stays 3-way replicated")
    func fiveNodes() async throws {
        let c = ProcessCluster("five")
        defer { c.destroy() }
        let first = NodeProcess(name: "n1", root: c.root, extraArgs: [])
        c.nodes.append(first)
        try first.start()
        try await c.waitReady()
        for _ in 2...4 { try await c.join() }
        let replica = try await c.join(nodeArgs: ["--non-voter"])
        #expect(try await replica.execute(["CREATE TABLE m(id INTEGER PRIMARY KEY, v TEXT)"]).status == 200)
        for (k, n) in c.nodes.enumerated() {
            let r = try await n.execute([["INSERT INTO m(id, v) VALUES(?, ?)", k + 1, n.name]])
            #expect(r.status == 200, "write through \(n.name): \(r.text)")
        }
        for n in c.nodes {
            let rows = try await n.rows("SELECT id, v FROM m ORDER BY id")
            #expect(rows.map { $0[1] as? String ?? "" } == c.nodes.map(\.name), "\(n.name) read \(rows)")
        }
        let cluster = try await first.get("/v1/cluster").json
        let groups = cluster["groups"] as? [Object] ?? []
        let defaultDB = groups.first { $0["name"] as? String == "default" }
        let replicas = (defaultDB?["replicas"] as? [Int] ?? []).map(UInt64.init)
        #expect(replicas.count == 3, "\(cluster)")
        #expect(!replicas.contains(replica.id))
        let onReplica = try await replica.group(1)
        #expect((onReplica?["learners"] as? [Int])?.contains(Int(replica.id)) == true, "\(onReplica ?? [:])")

        // Remove a node that holds the database; the cluster moves its copy to the spare voter.
        let gone = c.node(id: replicas.first { $0 != first.id }!)!
        let removed = try await c.nodes.first { $0 !== gone && $0 !== first }!.post("/v1/cluster/remove", ["id": gone.id])
        #expect(removed.status == 200, "\(removed.text)")
        #expect(await gone.waitForExit(seconds: 20) != nil, "a removed node shuts itself down")
        let end = Date().addingTimeInterval(30)
        var voters: Set<UInt64> = []
        while Date() < end {
            let leader = try await c.leader(of: 1)
            voters = Set(((try await leader.group(1))?["voters"] as? [Int] ?? []).map(UInt64.init))
            if voters.count == 3 && !voters.contains(gone.id) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(voters.count == 3 && !voters.contains(gone.id), "voters of the default database: \(voters)")
        #expect(try await c.write([["INSERT INTO m(id, v) VALUES(?, ?)", 100, "after"]]).status == 200)
        for n in c.nodes where n !== gone {
            #expect(try await n.rows("SELECT count(*) FROM m").first?.first as? Int == 6, "\(n.name)")
        }
        let meta = try await c.leader(of: 0).group(0)
        #expect(!((meta?["voters"] as? [Int] ?? []).contains(Int(gone.id))) && !((meta?["learners"] as? [Int] ?? []).contains(Int(gone.id))))
    }
}
}
