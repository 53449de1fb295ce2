import CairnSQLite
import Foundation
import NIOConcurrencyHelpers
import Testing

extension ProcessTests {
@Suite("Shard splits on real processes", .serialized)
struct ShardSplitProcessTests {
    /// Writes rows with distinct keys through every node until stopped, keeping what was acknowledged.
    final class Writer: @unchecked Sendable {
        let acked = NIOLockedValueBox<[Int]>([])
        let failures = NIOLockedValueBox<[String]>([])
        let stop = NIOLockedValueBox(false)
        let nodes: [NodeProcess]
        let db: String
        let padding: String

        init(_ nodes: [NodeProcess], db: String, rowBytes: Int = 20) {
            self.nodes = nodes
            self.db = db
            padding = String(repeating: "x", count: rowBytes)
        }

        /// `lanes` writers at once, lane i writing keys i, i + lanes, ...
        func run(lanes: Int = 4) async {
            await withTaskGroup(of: Void.self) { tasks in
                for lane in 0..<lanes { tasks.addTask { await self.run(lane: lane, lanes: lanes) } }
            }
        }

        private func run(lane: Int, lanes: Int) async {
            var key = lane
            while !stop.withLockedValue({ $0 }) {
                key += lanes
                let node = nodes[key % nodes.count]
                do {
                    let r = try await node.execute([["INSERT INTO items(k, v) VALUES (?, ?)", key, padding]], db: db)
                    if r.status == 200 && !r.text.contains("\"error\"") {
                        acked.withLockedValue { $0.append(key) }
                    } else {
                        failures.withLockedValue { $0.append("\(node.name): \(r.status) \(r.text)") }
                    }
                } catch {
                    failures.withLockedValue { $0.append("\(node.name): \(error)") }
                }
            }
        }
    }

    /// The database's shards as `/v1/db/:db/shards` lists them: each one's slots.
    static func arcs(_ n: NodeProcess, _ db: String) async throws -> [[Int]] {
        let r = try await n.get("/v1/db/\(db)/shards")
        guard r.status == 200 else { throw TestFailure("shards of \(db): \(r.status) \(r.text)") }
        return (r.json["shards"] as? [Object] ?? []).compactMap { $0["slots"] as? [Int] }
    }

    static func ints(_ r: HTTPResult) -> [Int] {
        ((r.json["results"] as? [Object])?.first?["rows"] as? [[Any]] ?? []).compactMap { $0.first as? Int }
    }

    @Test("shards split under writes, a split's child splitting in turn: every acknowledged row is read back exactly once, by scan and by key, through every node; no client sees an error; the halves cover the ring; a killed and restarted replica serves the same")
    func splitsUnderWrites() async throws {
        let c = try await ProcessCluster.founded("splits", count: 3, extraArgs: ["--shard-split-bytes", "0"])
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "split", "shards": 2]).status == 201)
        #expect(try await a.execute(["CREATE TABLE items (k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"], db: "split").status == 200)
        #expect(try await a.execute(["CREATE TABLE colours (name TEXT PRIMARY KEY) REFERENCE"], db: "split").status == 200)
        #expect(try await a.execute(["INSERT INTO colours VALUES ('red'), ('green')"], db: "split").status == 200)

        let writer = Writer(c.nodes, db: "split")
        let writing = Task { await writer.run() }
        // Reads by key of acknowledged rows, through every node, all along: a router whose map is a
        // split behind must never answer "no such row" from the half that no longer holds it.
        let misses = NIOLockedValueBox<[String]>([])
        let reads = NIOLockedValueBox(0)
        let reading = Task {
            var n = 0
            while !writer.stop.withLockedValue({ $0 }) {
                n += 1
                guard let key = writer.acked.withLockedValue({ $0.randomElement() }) else {
                    try? await Task.sleep(for: .milliseconds(5))
                    continue
                }
                let node = c.nodes[n % c.nodes.count]
                guard let r = try? await node.query("SELECT k FROM items WHERE k = \(key)", db: "split") else { continue }
                reads.withLockedValue { $0 += 1 }
                if Self.ints(r) != [key] { misses.withLockedValue { $0.append("\(node.name) key \(key): \(r.status) \(r.text)") } }
            }
        }
        try await Task.sleep(for: .seconds(1))
        // Shard 0 splits (its child is shard 2), then the child (its child is shard 3), then shard 1,
        // each through a different node, while the writes go on.
        var splitSeconds: [Double] = []
        for (shard, via) in [(0, c.nodes[1]), (2, c.nodes[2]), (1, a)] {
            let began = Date()
            let r = try await via.post("/v1/db/split/shards/\(shard)/split", [String: Any]())
            #expect(r.status == 200, "split of shard \(shard): \(r.status) \(r.text)")
            splitSeconds.append(Date().timeIntervalSince(began))
            try await Task.sleep(for: .milliseconds(700))
        }
        writer.stop.withLockedValue { $0 = true }
        await writing.value
        await reading.value
        #expect(misses.withLockedValue { $0 }.isEmpty, "reads by key missed acknowledged rows: \(misses.withLockedValue { $0.prefix(5) })")
        let acked = writer.acked.withLockedValue { $0 }
        #expect(writer.failures.withLockedValue { $0 }.isEmpty, "writes failed while shards split: \(writer.failures.withLockedValue { $0.prefix(5) })")
        #expect(acked.count > 100, "only \(acked.count) writes in the run")

        // Five shards whose arcs cover the ring once.
        let arcs = try await Self.arcs(a, "split").sorted { $0[0] < $1[0] }
        #expect(arcs.count == 5, "\(arcs)")
        #expect(arcs.first?[0] == 0 && arcs.last?[1] == 65536 && zip(arcs, arcs.dropFirst()).allSatisfy { $0[1] == $1[0] }, "\(arcs)")

        // Every acknowledged row once, through every node: by a scan across shards and by key.
        for n in c.nodes {
            let scan = Self.ints(try await n.query("SELECT k FROM items ORDER BY k", db: "split"))
            #expect(Set(acked).isSubset(of: Set(scan)), "\(n.name): \(Set(acked).subtracting(scan).count) acknowledged rows missing")
            #expect(Set(scan).count == scan.count, "\(n.name): rows on two shards")
            let count = Self.ints(try await n.query("SELECT count(*) FROM items", db: "split"))
            #expect(count == [scan.count], "\(n.name): count \(count) for \(scan.count) rows")
            let colours = Self.ints(try await n.query("SELECT count(*) FROM colours", db: "split"))
            #expect(colours == [2], "\(n.name): the reference table reads \(colours)")
        }
        for key in acked.shuffled().prefix(40) {
            let one = Self.ints(try await c.nodes[key % 3].query("SELECT k FROM items WHERE k = \(key)", db: "split"))
            #expect(one == [key], "key \(key) read by key: \(one)")
        }
        // A replica killed and restarted comes back with every half, and reads through it agree.
        let victim = c.nodes[2]
        await victim.kill9()
        try victim.start()
        try await c.waitReady([victim])
        let after = Self.ints(try await victim.query("SELECT count(*) FROM items", db: "split"))
        #expect(after.first.map { $0 >= acked.count } == true, "after the restart: \(after)")
        let more = try await victim.execute([["INSERT INTO items(k, v) VALUES (?, 'late')", 1_000_000]], db: "split")
        #expect(more.status == 200 && !more.text.contains("\"error\""), "\(more.text)")
        print("splits: 3 splits under writes took \(splitSeconds.map { String(format: "%.2f", $0) }) s; \(acked.count) writes acknowledged, 0 failed; \(reads.withLockedValue { $0 }) reads by key, 0 missed")
    }

    @Test("a shard whose database passes --shard-split-bytes splits by itself, again until every shard is under it, and then stops; rows written meanwhile are all there, and the CLI shows the new shards")
    func splitsBySize() async throws {
        let limit = 96 * 1024
        let c = try await ProcessCluster.founded("bysize", count: 3, extraArgs: ["--shard-split-bytes", "\(limit)"])
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "grow", "shards": 2]).status == 201)
        #expect(try await a.execute(["CREATE TABLE items (k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"], db: "grow").status == 200)
        // About 400 KiB of rows in all: each shard holds some 200 KiB at first.
        let writer = Writer(c.nodes, db: "grow", rowBytes: 1000)
        let writing = Task { await writer.run() }
        while writer.acked.withLockedValue({ $0.count }) < 400 { try await Task.sleep(for: .milliseconds(100)) }
        writer.stop.withLockedValue { $0 = true }
        await writing.value
        #expect(writer.failures.withLockedValue { $0 }.isEmpty, "\(writer.failures.withLockedValue { $0.prefix(5) })")

        // Splits continue until every shard's pages in use are under the limit; then the count holds.
        let began = Date()
        var counts: [Int] = []
        var shards: [Object] = []
        while Date().timeIntervalSince(began) < 90 {
            let r = try await a.get("/v1/db/grow/shards")
            shards = r.json["shards"] as? [Object] ?? []
            counts.append(shards.count)
            if shards.count >= 4, shards.allSatisfy({ ($0["bytes"] as? Int ?? .max) <= limit }), counts.suffix(4).allSatisfy({ $0 == shards.count }) { break }
            try await Task.sleep(for: .seconds(2))
        }
        let splitLog = c.nodes.flatMap { $0.log.components(separatedBy: "\n").filter { $0.contains("split") } }.suffix(30).joined(separator: "\n")
        #expect(shards.count >= 4 && shards.allSatisfy { ($0["bytes"] as? Int ?? .max) <= limit },
                "after \(Int(Date().timeIntervalSince(began))) s: \(shards.map { "\($0["shard"] ?? "?"): \($0["bytes"] ?? "?") bytes" })\n\(splitLog)")
        try await Task.sleep(for: .seconds(5))
        let settled = (try await a.get("/v1/db/grow/shards")).json["shards"] as? [Object] ?? []
        #expect(settled.count == shards.count, "still splitting: \(shards.count) then \(settled.count) shards")
        let acked = writer.acked.withLockedValue { $0 }
        let scan = Self.ints(try await c.nodes[1].query("SELECT k FROM items", db: "grow"))
        #expect(Set(acked).isSubset(of: Set(scan)) && Set(scan).count == scan.count, "\(Set(acked).subtracting(scan).count) missing")
        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_USER"] = "admin"
        environment["CAIRN_PASSWORD"] = TestHTTP.adminPassword
        let (code, table) = try await runCairn(["shards", "grow", "--host", a.url], environment: environment)
        #expect(code == 0 && table.contains("\(settled.count - 1) "), "\(table)")
        print("splits: by size, 2 shards became \(settled.count) in \(Int(Date().timeIntervalSince(began))) s (limit \(limit) bytes)")
    }

    @Test("shards double while shards × RF / nodes is under --min-replicas-per-node: 4 shards on 3 nodes become 16 of equal arcs, under writes, and then stay; every acknowledged row is there")
    func shardsDouble() async throws {
        let c = try await ProcessCluster.founded("doubling", count: 3, extraArgs: ["--shard-split-bytes", "0", "--min-replicas-per-node", "10"])
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "few", "shards": 4]).status == 201)
        #expect(try await a.execute(["CREATE TABLE items (k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"], db: "few").status == 200)
        let writer = Writer(c.nodes, db: "few", rowBytes: 100)
        let writing = Task { await writer.run() }
        // 4 × 3 / 3 = 4 replicas a node: two rounds, 8 then 16 (16 a node).
        let began = Date()
        var shards: [Object] = []
        while Date().timeIntervalSince(began) < 120 {
            shards = (try await a.get("/v1/db/few/shards")).json["shards"] as? [Object] ?? []
            if shards.count >= 16 { break }
            try await Task.sleep(for: .seconds(1))
        }
        let took = Date().timeIntervalSince(began)
        writer.stop.withLockedValue { $0 = true }
        await writing.value
        let widths = Set(shards.compactMap { ($0["slots"] as? [Int]).map { $0[1] - $0[0] } })
        #expect(shards.count == 16 && widths == [4096], "after \(Int(took)) s: \(shards.count) shards, widths \(widths)")
        try await Task.sleep(for: .seconds(6))
        let settled = (try await a.get("/v1/db/few/shards")).json["shards"] as? [Object] ?? []
        #expect(settled.count == 16, "the shards kept splitting: \(settled.count)")
        #expect(writer.failures.withLockedValue { $0 }.isEmpty, "\(writer.failures.withLockedValue { $0.prefix(5) })")
        let acked = writer.acked.withLockedValue { $0 }
        let scan = Self.ints(try await c.nodes[2].query("SELECT k FROM items", db: "few"))
        #expect(!acked.isEmpty && Set(acked).isSubset(of: Set(scan)) && Set(scan).count == scan.count, "\(Set(acked).subtracting(scan).count) missing")
        print("doubling: 4 shards became \(shards.count) in \(String(format: "%.1f", took)) s; \(acked.count) writes acknowledged meanwhile, 0 lost")
    }

    @Test("a shard that runs hot splits by load, where its written keys divide (not at the middle of its arc); one hot key alone never splits it; every acknowledged row is there")
    func hotShardsSplit() async throws {
        let c = try await ProcessCluster.founded("hot", count: 3, extraArgs: ["--shard-split-bytes", "0", "--shard-split-ops-per-second", "30",
                                                                             "--shard-split-hot-seconds", "3"])
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "hot", "shards": 1]).status == 201)
        #expect(try await a.execute(["CREATE TABLE items (k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"], db: "hot").status == 200)
        let stop = NIOLockedValueBox(false), acked = NIOLockedValueBox<[Int]>([]), failures = NIOLockedValueBox<[String]>([])
        /// Four lanes writing keys from `keys` (lane i takes i, i + 4, ...) through every node until stopped.
        func write(_ keys: [Int]) async {
            await withTaskGroup(of: Void.self) { lanes in
                for lane in 0..<4 {
                    lanes.addTask {
                        var i = lane
                        while !stop.withLockedValue({ $0 }) && i < keys.count {
                            let node = c.nodes[i % c.nodes.count]
                            let r = try? await node.execute([["INSERT OR REPLACE INTO items(k, v) VALUES (?, 'v')", keys[i]]], db: "hot")
                            if r?.status == 200 && r?.text.contains("\"error\"") == false { acked.withLockedValue { $0.append(keys[i]) } } else {
                                failures.withLockedValue { $0.append("\(node.name): \(r.map { "\($0.status) \($0.text)" } ?? "no answer")") }
                            }
                            i += 4
                        }
                    }
                }
            }
        }

        // One key, rewritten many times a second for three times the hot period: no split divides it.
        let oneKey = Task { await write(Array(repeating: 7, count: 1_000_000)) }
        try await Task.sleep(for: .seconds(9))
        stop.withLockedValue { $0 = true }
        await oneKey.value
        let oneKeyWrites = acked.withLockedValue { $0.count }
        #expect(oneKeyWrites >= 9 * 30, "only \(oneKeyWrites) writes in 9 s: the shard never ran hot")
        #expect(try await Self.arcs(a, "hot").count == 1, "a shard split for a load on one key")

        // Many keys, all in the ring's first quarter: the split divides them, well below the middle.
        stop.withLockedValue { $0 = false }
        let quarter = SlotHash.slotCount / 4
        let keys = (1...2_000_000).lazy.filter { SlotHash.slot(of: [.integer(Int64($0))]) < quarter }.prefix(200_000).map { $0 }
        let spread = Task { await write(Array(keys)) }
        let began = Date()
        var arcs: [[Int]] = []
        while Date().timeIntervalSince(began) < 60 {
            arcs = try await Self.arcs(a, "hot")
            if arcs.count >= 2 { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        let took = Date().timeIntervalSince(began)
        stop.withLockedValue { $0 = true }
        await spread.value
        let first = arcs.first { $0[0] == 0 }
        #expect(arcs.count >= 2 && first.map { $0[1] > 0 && $0[1] < quarter } == true, "after \(Int(took)) s: arcs \(arcs)")
        #expect(failures.withLockedValue { $0 }.isEmpty, "\(failures.withLockedValue { $0.prefix(5) })")
        let stored = Set(Self.ints(try await c.nodes[1].query("SELECT k FROM items", db: "hot")))
        let missing = Set(acked.withLockedValue { $0 }).subtracting(stored)
        #expect(missing.isEmpty, "\(missing.count) acknowledged rows missing")
        print("load splits: one key rewritten \(oneKeyWrites) times in 9 s, no split; keys in the first quarter split the shard at slot \(first?[1] ?? -1) \(String(format: "%.1f", took)) s after they began (arcs \(arcs))")
    }

    /// A request sent again while it answers 503 (which says "retry": nothing was done, or a node just
    /// died), as a client would, for up to 30 s; the retries are counted.
    static let retries = NIOLockedValueBox(0)
    static func retrying503(_ send: () async throws -> HTTPResult) async throws -> HTTPResult {
        let deadline = Date().addingTimeInterval(30)
        while true {
            let r = try await send()
            guard r.status == 503, Date() < deadline else { return r }
            retries.withLockedValue { $0 += 1 }
            try await Task.sleep(for: .milliseconds(500))
        }
    }

    @Test("a split whose driver dies half-way: after the reservation, the database still drops; after the split entry, the shard's leader finishes it (size splitting off), writes planned with the old map succeed (a 503 sent again, as a client would), and every row is kept")
    func halfDoneSplits() async throws {
        let c = try await ProcessCluster.founded("halfsplit", count: 3, extraArgs: ["--shard-split-bytes", "0", "--enable-fault-injection"])
        defer { c.destroy() }
        let a = c.nodes[0]
        for db in ["first", "second"] {
            #expect(try await a.post("/v1/databases", ["name": db, "shards": 2]).status == 201)
            #expect(try await a.execute(["CREATE TABLE items (k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"], db: db).status == 200)
            let rows = (1...40).map { ["INSERT INTO items VALUES (?, 'v')", $0] as [Any] }
            #expect(try await a.execute(rows, db: db).status == 200)
        }

        // Dead after the reservation: the child exists nowhere, and the database drops all the same.
        let first = c.nodes[1]
        #expect(try await TestHTTP.request(.PUT, first.url + "/v1/debug/crash-point", ["point": "split_after_reserve"]).status == 200)
        _ = try? await first.post("/v1/db/first/shards/0/split", [String: Any]())
        #expect(await first.waitForExit(seconds: 10) != nil, "the driver did not die after the reservation")
        // As this node's catalog copy shows it (a controller pass later at most).
        var shown: String?
        for _ in 0..<25 where shown == nil {
            shown = ((try await a.get("/v1/cluster")).json["splits"] as? [Object])?.first?["state"] as? String
            if shown == nil { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(shown == "reserved")
        let dropped = try await Self.retrying503 { try await TestHTTP.request(.DELETE, a.url + "/v1/databases/first") }
        #expect(dropped.status == 200, "dropping a database with a split reserved: \(dropped.status) \(dropped.text)")
        try first.start()
        try await c.waitReady([first])

        // Dead after the split entry, before the map is recorded: the parent refuses the old map until
        // its leader's pass records the new one; clients see no errors.
        let second = c.nodes[2]
        #expect(try await TestHTTP.request(.PUT, second.url + "/v1/debug/crash-point", ["point": "split_after_entry"]).status == 200)
        _ = try? await second.post("/v1/db/second/shards/0/split", [String: Any]())
        #expect(await second.waitForExit(seconds: 10) != nil, "the driver did not die after the split entry")
        for k in 41...80 {
            let r = try await Self.retrying503 { try await c.nodes[k % 2].execute([["INSERT INTO items VALUES (?, 'w')", k]], db: "second") }
            #expect(r.status == 200 && !r.text.contains("\"error\""), "key \(k): \(r.status) \(r.text)")
        }
        let shards = try await Self.arcs(a, "second")
        #expect(shards.count == 3, "\(shards)")
        try second.start()
        try await c.waitReady([second])
        for n in c.nodes {
            let keys = Self.ints(try await n.query("SELECT k FROM items ORDER BY k", db: "second"))
            #expect(keys == Array(1...80), "\(n.name): \(keys.count) rows")
        }
        print("splits: drivers killed half-way; the drop and 40 writes needed \(Self.retries.withLockedValue { $0 }) retries after 503")
    }

    @Test("range splits under writes: a new split point gives the keys above it a shard and Raft group of their own, an existing one moves its range whole; every acknowledged row is read back once, by scan, by key and by range, through every node; no client sees an error; bad requests get a 400 saying why")
    func rangeSplitsUnderWrites() async throws {
        let c = try await ProcessCluster.founded("rangesplits", count: 3, extraArgs: ["--shard-split-bytes", "0"])
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "ranged", "shards": 2]).status == 201)
        #expect(try await a.execute(["CREATE TABLE items (k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY RANGE (k) SPLIT AT (100, 200)"], db: "ranged").status == 200)
        #expect(try await a.execute(["CREATE TABLE hashed (k INTEGER NOT NULL PRIMARY KEY) SHARD BY HASH (k)"], db: "ranged").status == 200)
        let writer = Writer(c.nodes, db: "ranged")
        let writing = Task { await writer.run() }
        try await Task.sleep(for: .seconds(1))
        // Ranges (-∞,100) [100,200) [200,+∞) on shards 0, 1, 0. Keys grow with time: the range from a
        // point above every key written so far fills after its split.
        let top = (writer.acked.withLockedValue { $0.max() } ?? 0) + 100
        let opened = try await c.nodes[1].post("/v1/db/ranged/tables/items/split", ["at": top])
        #expect(opened.status == 200 && opened.json["shard"] as? Int == 0 && opened.json["child"] as? Int == 2, "\(opened.status) \(opened.text)")
        try await Task.sleep(for: .milliseconds(700))
        // [200, top) shares shard 0 with (-∞,100): it moves whole.
        let moved = try await c.nodes[2].post("/v1/db/ranged/tables/items/split", ["at": 200])
        #expect(moved.status == 200 && moved.json["shard"] as? Int == 0 && moved.json["child"] as? Int == 3, "\(moved.status) \(moved.text)")
        try await Task.sleep(for: .milliseconds(700))
        for (path, body, want) in [("/v1/db/ranged/tables/items/split", ["at": 200] as [String: Any], "to themselves already"),
                                   ("/v1/db/ranged/tables/items/split", [:], "the key value the new range starts at"),
                                   ("/v1/db/ranged/tables/hashed/split", ["at": 5], "not a range-sharded table"),
                                   ("/v1/db/ranged/tables/nosuch/split", ["at": 5], "not a range-sharded table")] {
            let r = try await a.post(path, body)
            #expect(r.status == 400 && r.text.contains(want), "\(path) \(body): \(r.status) \(r.text)")
        }
        writer.stop.withLockedValue { $0 = true }
        await writing.value
        let acked = writer.acked.withLockedValue { $0 }
        #expect(writer.failures.withLockedValue { $0 }.isEmpty, "writes failed while ranges split: \(writer.failures.withLockedValue { $0.prefix(5) })")
        #expect(acked.contains { $0 >= top }, "no write reached the new range")

        let layout = try await a.get("/v1/db/ranged/shards")
        let ranges = ((layout.json["range_tables"] as? [Object])?.first?["ranges"] as? [Object]) ?? []
        #expect(ranges.map { $0["shard"] as? Int } == [0, 1, 3, 2] && ranges.map { $0["from"] as? Int } == [nil, 100, 200, top], "\(layout.text)")
        #expect(layout.json["shard_count"] as? Int == 4)
        for n in c.nodes {
            let scan = Self.ints(try await n.query("SELECT k FROM items ORDER BY k", db: "ranged"))
            #expect(Set(acked).isSubset(of: Set(scan)) && Set(scan).count == scan.count, "\(n.name): \(Set(acked).subtracting(scan).count) missing, \(scan.count - Set(scan).count) twice")
            let middle = Self.ints(try await n.query("SELECT k FROM items WHERE k >= 150 AND k < \(top) ORDER BY k", db: "ranged"))
            #expect(middle == scan.filter { $0 >= 150 && $0 < top }, "\(n.name): the moved range reads \(middle.count) rows")
        }
        for key in acked.shuffled().prefix(30) {
            #expect(Self.ints(try await c.nodes[key % 3].query("SELECT k FROM items WHERE k = \(key)", db: "ranged")) == [key], "key \(key)")
        }
        // A replica killed and restarted holds every range where the layout says.
        let victim = c.nodes[2]
        await victim.kill9()
        try victim.start()
        try await c.waitReady([victim])
        let count = Self.ints(try await victim.query("SELECT count(*) FROM items", db: "ranged"))
        #expect(count.first.map { $0 >= acked.count } == true, "after the restart: \(count)")
        let late = try await victim.execute([["INSERT INTO items(k, v) VALUES (?, 'late')", -7], "UPDATE items SET v = 'late' WHERE k = 250"], db: "ranged")
        #expect(late.status == 200 && !late.text.contains("\"error\"") && late.text.contains("\"rows_affected\":1"), "\(late.text)")
    }

    @Test("a split pass that chose to finish a half-done split, by its own catalog copy, and found it finished by a request meanwhile splits nothing more: the shard is split once")
    func staleSplitPassSplitsNothing() async throws {
        let c = try await ProcessCluster.founded("stalesplit", count: 3, extraArgs: ["--shard-split-bytes", "0"])
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "stale", "shards": 2]).status == 201)
        #expect(try await a.execute(["CREATE TABLE items (k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"], db: "stale").status == 200)
        #expect(try await a.execute((1...40).map { ["INSERT INTO items VALUES (?, 'v')", $0] as [Any] }, db: "stale").status == 200)

        // The leader of shard 0 runs the pass that finishes splits left half done; it is made to stop
        // between choosing one and making it.
        let shards = try await a.get("/v1/db/stale/shards")
        let leaderID = ((shards.json["shards"] as? [Object])?.first { ($0["slots"] as? [Int])?.first == 0 })?["leader"] as? Int
        let leader = try #require(c.nodes.first { leaderID != nil && $0.id == UInt64(leaderID!) }, "no leader of shard 0 in \(shards.text)")
        let others = c.nodes.filter { $0 !== leader }
        let (driver, finisher) = (others[0], others[1])
        #expect(try await TestHTTP.request(.PUT, leader.url + "/v1/debug/pause-point", ["point": "split_pass_before_split", "millis": 6000]).status == 200)
        #expect(try await TestHTTP.request(.PUT, driver.url + "/v1/debug/crash-point", ["point": "split_after_entry"]).status == 200)
        _ = try? await driver.post("/v1/db/stale/shards/0/split", [String: Any]())
        #expect(await driver.waitForExit(seconds: 10) != nil, "the driver did not die after the split entry")

        var paused = false
        for _ in 0..<50 where !paused {
            paused = leader.log.contains("pausing 6000 ms at split_pass_before_split")
            if !paused { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(paused, "the leader's split pass never chose the half-done split")
        // While the pass sleeps, a request finishes the split it chose.
        let finished = try await Self.retrying503 { try await finisher.post("/v1/db/stale/shards/0/split", [String: Any]()) }
        #expect(finished.status == 200 && finished.json["child"] as? Int == 2, "\(finished.status) \(finished.text)")
        var resumed = false
        for _ in 0..<60 where !resumed {
            resumed = leader.log.contains("resuming after split_pass_before_split")
            if !resumed { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(resumed)
        try await Task.sleep(for: .seconds(3))
        let arcs = try await Self.arcs(finisher, "stale").sorted { $0[0] < $1[0] }
        #expect(arcs == [[0, 16384], [16384, 32768], [32768, 65536]], "shard 0 split more than once: \(arcs)")
        try driver.start()
        try await c.waitReady([driver])
        let keys = Self.ints(try await driver.query("SELECT k FROM items ORDER BY k", db: "stale"))
        #expect(keys == Array(1...40))
    }
}
}
