import Foundation
import NIOConcurrencyHelpers
import Testing

extension ProcessTests {
@Suite("The elastic cluster on real processes", .serialized)
struct ElasticClusterTests {
    /// What `/v1/cluster` says about placement, through one node.
    struct Placement {
        var states: [UInt64: String] = [:]
        var replicas: [UInt64: Int] = [:]
        /// Groups each node leads, as the node asked heard from the pings.
        var leaders: [UInt64: Int] = [:]
        var moves = 0
        /// Groups with fewer than 3 replicas on live nodes.
        var short = 0

        init(_ json: Object) {
            for n in json["nodes"] as? [Object] ?? [] where n["voter"] as? Bool == true && n["removed"] as? Bool == false {
                let id = UInt64(n["id"] as? Int ?? 0)
                states[id] = n["state"] as? String
                replicas[id] = n["replicas"] as? Int
                leaders[id] = n["leaders"] as? Int
            }
            moves = (json["moves"] as? [Object])?.count ?? 0
            let live = Set(states.filter { $0.value == "live" }.keys)
            for g in json["groups"] as? [Object] ?? [] {
                guard let r = g["replicas"] as? [Int] else { continue }
                if r.filter({ live.contains(UInt64($0)) }).count < min(3, live.count) { short += 1 }
            }
        }

        /// Live nodes' counts within one of each other, nothing moving, every group whole.
        var balanced: Bool {
            let counts = states.filter { $0.value == "live" }.keys.compactMap { replicas[$0] }
            return moves == 0 && short == 0 && !counts.isEmpty && counts.max()! - counts.min()! <= 1
        }

        /// Live nodes' leader counts within one of each other (so within one of the mean).
        var leadersEven: Bool {
            let counts = states.filter { $0.value == "live" }.keys.compactMap { leaders[$0] }
            return counts.count == states.values.count { $0 == "live" } && !counts.isEmpty && counts.max()! - counts.min()! <= 1
        }
    }

    static func placement(_ n: NodeProcess) async throws -> Placement {
        let r = try await n.get("/v1/cluster")
        guard r.status == 200 else { throw TestFailure("GET /v1/cluster: \(r.status) \(r.text)") }
        return Placement(r.json)
    }

    /// Polls until `done` holds for the placement `n` reports; returns the seconds it took.
    @discardableResult
    static func wait(_ what: String, on n: NodeProcess, seconds: Double, _ done: (Placement) -> Bool) async throws -> Double {
        let start = Date()
        var last = ""
        while Date().timeIntervalSince(start) < seconds {
            if let p = try? await placement(n) {
                if done(p) { return Date().timeIntervalSince(start) }
                last = "states \(p.states.sorted { $0.key < $1.key }), replicas \(p.replicas.sorted { $0.key < $1.key }), leaders \(p.leaders.sorted { $0.key < $1.key }), moves \(p.moves), short \(p.short)"
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw TestFailure("\(what) not reached within \(seconds) s; last: \(last)\n\(n.log.suffix(4000))")
    }

    /// Writes rows with distinct keys through the running nodes until stopped, keeping what was acknowledged.
    final class Writer: @unchecked Sendable {
        let acked = NIOLockedValueBox<[Int]>([])
        let failures = NIOLockedValueBox<[String]>([])
        let stop = NIOLockedValueBox(false)
        /// Failures are expected (a killed node's requests) only while this is set.
        let tolerant = NIOLockedValueBox(false)
        /// The nodes to write through (the test changes the list as nodes join).
        let targets: NIOLockedValueBox<[NodeProcess]>

        init(_ nodes: [NodeProcess]) { targets = NIOLockedValueBox(nodes) }

        func run() async {
            var key = 0
            while !stop.withLockedValue({ $0 }) {
                key += 1
                let running = targets.withLockedValue { $0 }.filter(\.isRunning)
                let node = running[key % running.count]
                do {
                    let r = try await node.execute([["INSERT INTO items(k, v) VALUES (?, ?)", key, "value \(key)"]], db: "grow")
                    if r.status == 200 && !r.text.contains("\"error\"") {
                        acked.withLockedValue { $0.append(key) }
                    } else if !tolerant.withLockedValue({ $0 }) {
                        failures.withLockedValue { $0.append("\(node.name): \(r.status) \(r.text)") }
                    }
                } catch {
                    if !tolerant.withLockedValue({ $0 }) { failures.withLockedValue { $0.append("\(node.name): \(error)") } }
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    @Test("a sharded database under writes: a joining node is filled to within one replica of the others, new copy first; a killed node is declared dead and its replicas rebuilt; back, it is refilled; a drained node empties and is removed; no acknowledged write is lost")
    func growHealDrain() async throws {
        let fast = ["--suspect-after", "1s", "--dead-after", "4s"]
        let c = try await ProcessCluster.founded("elastic", count: 3, extraArgs: fast)
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "grow", "shards": 8]).status == 201)
        let made = try await a.execute(["CREATE TABLE items (k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"], db: "grow")
        #expect(made.status == 200, "\(made.text)")
        try await Self.wait("a balanced start", on: a, seconds: 30) { $0.balanced }

        let writer = Writer(c.nodes)
        let writing = Task { await writer.run() }

        // Grow: 3 -> 4 nodes. Every replica the new node gets is a move onto it, and nothing else moves.
        let before = try await Self.placement(a)
        let total = before.replicas.values.reduce(0, +)
        let d = try await c.join(extraArgs: fast)
        writer.targets.withLockedValue { $0 = c.nodes }
        let joinSeconds = try await Self.wait("balance after the join", on: a, seconds: 90) { $0.balanced && $0.replicas[d.id] ?? 0 > 0 }
        let grown = try await Self.placement(a)
        #expect(grown.replicas.values.reduce(0, +) == total, "\(grown.replicas)")
        #expect(grown.replicas[d.id]! >= total / 4, "\(grown.replicas)")
        let moves = d.log.components(separatedBy: "placement: move").count - 1 + c.nodes.prefix(3).map { $0.log.components(separatedBy: "placement: move").count - 1 }.reduce(0, +)
        #expect(moves <= Int((Double(total) / 4).rounded(.up)) + 1, "\(moves) moves for \(total) replicas over 4 nodes")
        #expect(writer.failures.withLockedValue { $0 }.isEmpty, "writes failed while replicas moved: \(writer.failures.withLockedValue { $0.prefix(5) })")
        print("elastic: the 4th node was balanced in \(String(format: "%.1f", joinSeconds)) s with \(moves) moves (\(grown.replicas))")
        // Leaders follow: the leader plan spreads them to within one of each other.
        let leaderSeconds = try await Self.wait("leaders within one of each other", on: a, seconds: 90) { $0.balanced && $0.leadersEven }
        print("elastic: leaders within one of each other \(String(format: "%.1f", leaderSeconds)) s later (\(try await Self.placement(a).leaders))")

        // Heal: kill -9 one node; silent past --dead-after, it is declared dead and its replicas rebuilt.
        let victim = c.nodes[1]
        writer.tolerant.withLockedValue { $0 = true }
        await victim.kill9()
        let healSeconds = try await Self.wait("re-replication after a death", on: a, seconds: 60) {
            $0.states[victim.id] == "dead" && $0.balanced && $0.replicas[victim.id] == 0
        }
        print("elastic: node \(victim.id) declared dead and its replicas rebuilt \(String(format: "%.1f", healSeconds)) s after kill -9")
        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_USER"] = "admin"
        environment["CAIRN_PASSWORD"] = TestHTTP.adminPassword
        let (statusCode, table) = try await runCairn(["cluster", "status", "--host", a.url], environment: environment)
        #expect(statusCode == 0 && table.contains("dead") && table.contains("live"), "\(table)")

        // Back: live again, and refilled.
        try victim.start()
        try await c.waitReady([victim])
        try await Self.wait("the returned node refilled", on: a, seconds: 90) { $0.states[victim.id] == "live" && $0.balanced && $0.replicas[victim.id] ?? 0 > 0 }
        writer.tolerant.withLockedValue { $0 = false }
        writer.failures.withLockedValue { $0 = [] }

        // Drain the joined node, then remove it.
        let (drainCode, drained) = try await runCairn(["node", "drain", "\(d.id)", "--host", a.url], environment: environment)
        #expect(drainCode == 0 && drained.contains("Draining node \(d.id)"), "\(drained)")
        writer.targets.withLockedValue { $0 = Array(c.nodes.prefix(3)) }
        try await Self.wait("the drained node empty", on: a, seconds: 90) { $0.replicas[d.id] == 0 && $0.moves == 0 && $0.short == 0 }
        #expect(try await a.post("/v1/cluster/remove", ["id": Int(d.id)]).status == 200)
        // A write in flight to a node as it is removed (it shuts down) may end 503 "outcome unknown";
        // any other failure is a bug. (Seen once in a dozen runs; to be understood, see the notes.)
        let drainFailures = writer.failures.withLockedValue { $0 }
        #expect(drainFailures.allSatisfy { $0.contains("503") && $0.contains("outcome is unknown") }, "writes failed during the drain: \(drainFailures.prefix(5))")
        if !drainFailures.isEmpty { print("elastic: \(drainFailures.count) writes of unknown outcome during the drain and removal: \(drainFailures.prefix(3))") }

        writer.stop.withLockedValue { $0 = true }
        await writing.value
        let acked = writer.acked.withLockedValue { $0 }
        #expect(acked.count > 50, "only \(acked.count) writes acknowledged")
        let r = try await a.query("SELECT k FROM items ORDER BY k", db: "grow")
        let stored = Set(((r.json["results"] as? [Object])?.first?["rows"] as? [[Any]] ?? []).compactMap { $0.first as? Int })
        let lost = acked.filter { !stored.contains($0) }
        #expect(lost.isEmpty, "\(lost.count) acknowledged writes lost: \(lost.prefix(10))")
    }

    @Test("runtime settings: shown as the flags set them, changed through one node and used by every node at once (a killed node is declared dead by the new dead_after_ms), bad values refused with the reason, changed through the CLI")
    func runtimeSettings() async throws {
        let c = try await ProcessCluster.founded("settings", count: 3, extraArgs: ["--dead-after", "5m", "--shard-split-bytes", "0"])
        defer { c.destroy() }
        let a = c.nodes[0], b = c.nodes[1]
        let shown = try await a.get("/v1/cluster/settings")
        #expect(shown.status == 200 && shown.json["dead_after_ms"] as? Int == 300_000 && shown.json["shard_split_bytes"] as? Int == 0, "\(shown.text)")
        for (bad, reason) in [(["dead_after_ms": 50], "at least suspect_after_ms"), (["nope": 1], "no setting named"),
                              (["replication_factor": 0], "replication_factor"), (["shard_split_bytes": 10], "65536")] {
            let r = try await TestHTTP.request(.PUT, a.url + "/v1/cluster/settings", bad)
            #expect(r.status == 400 && r.text.contains(reason), "\(bad): \(r.status) \(r.text)")
        }
        let changed = try await TestHTTP.request(.PUT, a.url + "/v1/cluster/settings", ["suspect_after_ms": 1000, "dead_after_ms": 3000])
        #expect(changed.status == 200 && changed.json["dead_after_ms"] as? Int == 3000, "\(changed.text)")
        let elsewhere = try await b.get("/v1/cluster/settings")
        #expect(elsewhere.json["suspect_after_ms"] as? Int == 1000 && elsewhere.json["dead_after_ms"] as? Int == 3000, "\(elsewhere.text)")

        // Silent past the new dead_after_ms (not the 5 minutes its flag said): declared dead.
        let victim = c.nodes[2]
        await victim.kill9()
        let seconds = try await Self.wait("the killed node declared dead", on: a, seconds: 30) { $0.states[victim.id] == "dead" }
        #expect(seconds < 20, "declared dead after \(seconds) s")

        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_USER"] = "admin"
        environment["CAIRN_PASSWORD"] = TestHTTP.adminPassword
        let (code, table) = try await runCairn(["cluster", "settings", "shard_split_bytes=1048576", "--host", b.url], environment: environment)
        #expect(code == 0 && table.contains("shard_split_bytes") && table.contains("1048576"), "\(table)")
        #expect(try await a.get("/v1/cluster/settings").json["shard_split_bytes"] as? Int == 1_048_576)
        print("settings: a node killed after dead_after_ms was lowered to 3 s at runtime was declared dead in \(String(format: "%.1f", seconds)) s")
    }

    @Test("the replication factor lowered at runtime: every group gives up a copy (its node deletes it) and the rows stay; raised again: every group is copied back to three")
    func replicationFactorLoweredAndRaised() async throws {
        let c = try await ProcessCluster.founded("rf", count: 3, extraArgs: ["--shard-split-bytes", "0"])
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "kept"]).status == 201)
        #expect(try await a.execute(["CREATE TABLE t(x)", "INSERT INTO t VALUES (1), (2), (3)"], db: "kept").status == 200)
        func copies() async throws -> [String: Int] {
            let listed = (try await a.get("/v1/databases")).json["databases"] as? [Object] ?? []
            return Dictionary(uniqueKeysWithValues: listed.compactMap { d in (d["name"] as? String).map { ($0, (d["replicas"] as? [Any])?.count ?? -1) } })
        }
        func groupFiles() -> Int {
            c.nodes.reduce(0) { sum, n in
                sum + ((try? FileManager.default.contentsOfDirectory(atPath: n.dataDir)) ?? []).count { $0.hasPrefix("group-") && $0.hasSuffix(".sqlite") }
            }
        }
        let before = groupFiles()
        #expect(try await TestHTTP.request(.PUT, a.url + "/v1/cluster/settings", ["replication_factor": 2]).status == 200)
        var seen: [String: Int] = [:]
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            seen = try await copies()
            if !seen.isEmpty && seen.values.allSatisfy({ $0 == 2 }) && groupFiles() == before - seen.count { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(!seen.isEmpty && seen.values.allSatisfy { $0 == 2 }, "\(seen)")
        #expect(groupFiles() == before - seen.count, "group files \(groupFiles()), \(before) before, \(seen.count) groups")
        #expect(try await c.nodes[2].query("SELECT count(*) FROM t", db: "kept").text.contains("[[3]]"))
        #expect(try await TestHTTP.request(.PUT, a.url + "/v1/cluster/settings", ["replication_factor": 3]).status == 200)
        let back = Date().addingTimeInterval(60)
        while Date() < back {
            seen = try await copies()
            if seen.values.allSatisfy({ $0 == 3 }) { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(seen.values.allSatisfy { $0 == 3 }, "\(seen)")
        #expect(try await c.nodes[1].query("SELECT count(*) FROM t", db: "kept").text.contains("[[3]]"))
    }

    /// Writes with distinct keys through every running node, several lanes at once, timing each.
    final class TimedWriter: @unchecked Sendable {
        let acked = NIOLockedValueBox<[Int]>([])
        let failures = NIOLockedValueBox<[String]>([])
        /// (when it finished, seconds since the start; how long it took, seconds)
        let latencies = NIOLockedValueBox<[(at: Double, seconds: Double)]>([])
        let stop = NIOLockedValueBox(false)
        let targets: NIOLockedValueBox<[NodeProcess]>
        let began = Date()

        init(_ nodes: [NodeProcess]) { targets = NIOLockedValueBox(nodes) }

        func run(lanes: Int) async {
            await withTaskGroup(of: Void.self) { tasks in
                for lane in 0..<lanes {
                    tasks.addTask {
                        var key = lane
                        while !self.stop.withLockedValue({ $0 }) {
                            key += lanes
                            let nodes = self.targets.withLockedValue { $0 }
                            let node = nodes[key % nodes.count]
                            let start = Date()
                            do {
                                let r = try await node.execute([["INSERT INTO items(k, v) VALUES (?, ?)", key, String(repeating: "v", count: 200)]], db: "grow")
                                if r.status == 200 && !r.text.contains("\"error\"") {
                                    self.acked.withLockedValue { $0.append(key) }
                                    let done = Date()
                                    self.latencies.withLockedValue { $0.append((done.timeIntervalSince(self.began), done.timeIntervalSince(start))) }
                                } else {
                                    self.failures.withLockedValue { $0.append("\(node.name): \(r.status) \(r.text)") }
                                }
                            } catch {
                                self.failures.withLockedValue { $0.append("\(node.name): \(error)") }
                            }
                        }
                    }
                }
            }
        }

        func p99(from: Double, to: Double) -> Double {
            let xs = latencies.withLockedValue { $0 }.filter { $0.at >= from && $0.at < to }.map(\.seconds).sorted()
            return xs.isEmpty ? 0 : xs[min(xs.count - 1, Int(Double(xs.count) * 0.99))]
        }

        var now: Double { Date().timeIntervalSince(began) }
    }

    /// By hand (CAIRN_GROWTH_TEST=1; about 3 minutes): the issue's growth run, with its numbers printed.
    @Test("a 16-shard database under writes grows from 3 to 6 nodes one at a time: each join balanced to within one replica in a bound set by the data and the stream limit; moves within one of the ideal; p99 write latency during the moves at most twice before; no client errors; no acknowledged write lost",
          .enabled(if: ProcessInfo.processInfo.environment["CAIRN_GROWTH_TEST"] != nil))
    func growThreeToSix() async throws {
        let c = try await ProcessCluster.founded("grow6", count: 3, extraArgs: ["--shard-split-bytes", "0"])
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "grow", "shards": 16]).status == 201)
        #expect(try await a.execute(["CREATE TABLE items (k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"], db: "grow").status == 200)
        try await Self.wait("a balanced start", on: a, seconds: 60) { $0.balanced }
        let writer = TimedWriter(c.nodes)
        let writing = Task { await writer.run(lanes: 4) }
        try await Task.sleep(for: .seconds(15))
        let baselineEnd = writer.now
        let before = writer.p99(from: 3, to: baselineEnd)
        var joins: [(nodes: Int, seconds: Double, moves: Int)] = []
        var movedTotal = 0
        for _ in 0..<3 {
            let replicasBefore = try await Self.placement(a).replicas.values.reduce(0, +)
            let movesBefore = c.nodes.map { $0.log.components(separatedBy: "placement: move").count - 1 }.reduce(0, +)
            let joined = try await c.join()
            writer.targets.withLockedValue { $0 = c.nodes }
            // Bound: the data is small (well under a MiB a shard), so each move is a snapshot of under a
            // second at the 32 MiB/s stream limit plus catching up and the membership changes: about
            // 2 s a move, one snapshot into the new node at a time.
            let n = c.nodes.count
            let ideal = Int((Double(replicasBefore) / Double(n)).rounded(.up))
            let seconds = try await Self.wait("balance with \(n) nodes", on: a, seconds: Double(ideal) * 2 + 30) { $0.balanced && ($0.replicas[joined.id] ?? 0) > 0 }
            let moves = c.nodes.map { $0.log.components(separatedBy: "placement: move").count - 1 }.reduce(0, +) - movesBefore
            #expect(moves <= ideal + 1, "\(moves) moves onto node \(n) (ideal \(ideal))")
            movedTotal += moves
            joins.append((n, seconds, moves))
        }
        let movesEnd = writer.now
        try await Task.sleep(for: .seconds(5))
        writer.stop.withLockedValue { $0 = true }
        await writing.value
        let during = writer.p99(from: baselineEnd, to: movesEnd)
        #expect(writer.failures.withLockedValue { $0 }.isEmpty, "\(writer.failures.withLockedValue { $0.prefix(5) })")
        #expect(during <= 2 * before, "p99 \(during * 1000) ms during the moves against \(before * 1000) ms before")
        let acked = writer.acked.withLockedValue { $0 }
        let r = try await a.query("SELECT k FROM items", db: "grow")
        let stored = Set(((r.json["results"] as? [Object])?.first?["rows"] as? [[Any]] ?? []).compactMap { $0.first as? Int })
        #expect(acked.allSatisfy { stored.contains($0) }, "\(acked.filter { !stored.contains($0) }.count) acknowledged writes lost")
        let final = try await Self.placement(a)
        print("growth: \(joins.map { "\($0.nodes) nodes balanced in \(String(format: "%.1f", $0.seconds)) s with \($0.moves) moves" }.joined(separator: "; ")); "
              + "\(movedTotal) moves in all; replicas \(final.replicas.sorted { $0.key < $1.key }.map(\.value)); p99 \(String(format: "%.1f", before * 1000)) ms before, "
              + "\(String(format: "%.1f", during * 1000)) ms during; \(acked.count) writes, \(writer.failures.withLockedValue { $0.count }) failed, 0 lost")
    }
}
}
