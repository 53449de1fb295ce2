import Foundation
import Testing

/// What readers and writers saw during a run.
actor BankLedger {
    var transfers = 0
    var reads = 0
    var violations: [String] = []
    func transferred() { transfers += 1 }
    func read(sum: Int, min: Int, count: Int, expectedCount: Int) {
        reads += 1
        if sum != 100 || min < 0 || count != expectedCount { violations.append("sum \(sum), min \(min), rows \(count)") }
    }
    func violation(_ v: String) { violations.append(v) }
}

extension ProcessTests {
@Suite("Transactions across shards on real processes", .serialized)
struct CrossShardProcessTests {
    static func bankRun(nodes: Int, seconds: Double) async throws {
        let c = try await ProcessCluster.founded("bank\(nodes)", count: nodes)
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "bank", "shards": 4]).status == 201)
        let created = try await a.execute(["CREATE TABLE acct (id INTEGER NOT NULL PRIMARY KEY, bal INTEGER NOT NULL CHECK (bal >= 0)) SHARD BY HASH (id)"], db: "bank")
        #expect(created.status == 200, "\(created.text)")
        // Eight accounts, 100 in all, written in one request across the shards.
        let opened = try await a.execute(["INSERT INTO acct VALUES (1, 12), (2, 12), (3, 12), (4, 12), (5, 13), (6, 13), (7, 13), (8, 13)"], db: "bank")
        #expect(opened.status == 200 && !opened.text.contains("error"), "\(opened.text)")
        let ledger = BankLedger()

        /// Transfers and whole-table reads through the running nodes until `until`.
        func load(until: Date) async {
            await withTaskGroup(of: Void.self) { tasks in
                for w in 0..<4 {
                    tasks.addTask {
                        var k = w
                        while Date() < until {
                            k += 1
                            let running = c.nodes.filter(\.isRunning)
                            guard !running.isEmpty else { return }
                            let from = Int.random(in: 1...8), to = (from + Int.random(in: 1...7) - 1) % 8 + 1, amount = Int.random(in: 1...5)
                            guard let r = try? await running[k % running.count].post("/v1/db/bank/execute", [
                                "statements": [["UPDATE acct SET bal = bal - ? WHERE id = ?", amount, from], ["UPDATE acct SET bal = bal + ? WHERE id = ?", amount, to]],
                                "atomic": true]) else { continue }
                            if r.status == 200 && !r.text.contains("error") { await ledger.transferred() }
                            if r.status >= 500 && r.status != 503 { await ledger.violation("transfer answered \(r.status): \(r.text)") }
                        }
                    }
                }
                // Four readers: a read across the shards waits out transactions left prepared by a
                // killed coordinator, so two alone made as few as five reads in a run.
                for rd in 0..<4 {
                    tasks.addTask {
                        var k = rd
                        while Date() < until {
                            k += 1
                            let running = c.nodes.filter(\.isRunning)
                            guard !running.isEmpty else { return }
                            guard let r = try? await running[k % running.count].post("/v1/db/bank/query", [
                                "statements": ["SELECT sum(bal), min(bal), count(*) FROM acct"]]), r.status == 200,
                                  let row = ((r.json["results"] as? [Object])?.first?["rows"] as? [[Any]])?.first, row.count == 3 else { continue }
                            await ledger.read(sum: row[0] as? Int ?? -1, min: row[1] as? Int ?? -1, count: row[2] as? Int ?? -1, expectedCount: 8)
                        }
                    }
                }
            }
        }

        await load(until: Date().addingTimeInterval(seconds))
        // The coordinator dies between prepare and decide, then between decide and finish: its
        // transaction is resolved by the others after its deadline, and the shards are released.
        for (point, victim) in [("after_prepare", c.nodes[nodes - 1]), ("after_decide", c.nodes[nodes - 2])] {
            #expect(try await TestHTTP.request(.PUT, victim.url + "/v1/debug/crash-point", ["point": point]).status == 200)
            _ = try? await victim.post("/v1/db/bank/execute", ["statements": [["UPDATE acct SET bal = bal - 1 WHERE id = ?", 1],
                                                                              ["UPDATE acct SET bal = bal + 1 WHERE id = ?", 2],
                                                                              ["UPDATE acct SET bal = bal - 1 WHERE id = ?", 3],
                                                                              ["UPDATE acct SET bal = bal + 1 WHERE id = ?", 4]], "atomic": true])
            #expect(await victim.waitForExit(seconds: 10) != nil, "\(point): the coordinator did not die")
            await load(until: Date().addingTimeInterval(seconds))
            try victim.start()
            // Listening again before the faults that follow address every node (on a loaded machine a
            // restart took long enough for a partition request to find it closed).
            try await c.waitReady([victim])
        }
        // A shard's leader killed mid-run.
        let shards = (try await a.get("/v1/db/bank/shards")).json["shards"] as? [Object] ?? []
        if let leader = shards.first?["leader"] as? Int, let node = c.nodes.first(where: { Int($0.id) == leader }) {
            await node.kill9()
            await load(until: Date().addingTimeInterval(seconds))
            try node.start()
            try await c.waitReady([node])
        }
        // A node cut off from the others' Raft traffic mid-run, then healed.
        try await c.cutOff(c.nodes[1])
        await load(until: Date().addingTimeInterval(seconds))
        try await c.heal()
        await load(until: Date().addingTimeInterval(seconds))

        // After healing, nothing stays prepared, and the money is all there.
        var prepared = -1
        let until = Date().addingTimeInterval(30)
        while prepared != 0 && Date() < until {
            let list = (try? await c.nodes[0].get("/v1/db/bank/shards"))?.json["shards"] as? [Object] ?? []
            prepared = list.count == 4 && list.allSatisfy({ $0["prepared_transactions"] is Int }) ? list.reduce(0) { $0 + ($1["prepared_transactions"] as! Int) } : -1
            if prepared != 0 { try await Task.sleep(for: .milliseconds(250)) }
        }
        #expect(prepared == 0, "transactions still prepared after healing")
        let final = try await c.nodes[1].post("/v1/db/bank/query", ["statements": ["SELECT sum(bal), min(bal), count(*) FROM acct"]])
        #expect(final.text.contains("[100,") , "\(final.text)")
        let (transfers, reads, violations) = await (ledger.transfers, ledger.reads, ledger.violations)
        print("bank on \(nodes) nodes: \(transfers) transfers, \(reads) whole-table reads, \(violations.count) violations")
        #expect(violations.isEmpty, "\(violations.prefix(10))")
        #expect(transfers > 20 && reads > 5, "too little happened to judge: \(transfers) transfers, \(reads) reads")
    }

    @Test("bank (Jepsen's): 8 accounts over 4 shards, total 100, concurrent transfers of at most 5 across shards and whole-table reads; coordinators killed between prepare and decide and between decide and finish, a shard leader killed, a node cut off: every read sums to 100, none negative, nothing left prepared")
    func bankOnThreeNodes() async throws {
        // The long runner: CAIRN_BANK_RUNS=100 swift test --filter bankOnThreeNodes (each run a fresh cluster).
        let runs = Int(ProcessInfo.processInfo.environment["CAIRN_BANK_RUNS"] ?? "") ?? 1
        for run in 1...max(1, runs) {
            if runs > 1 { print("bank run \(run) of \(runs)") }
            try await Self.bankRun(nodes: 3, seconds: 3)
        }
    }

    @Test("bank on 5 nodes, with the same faults")
    func bankOnFiveNodes() async throws {
        try await Self.bankRun(nodes: 5, seconds: 3)
    }

    @Test("pairs: each request inserts two rows on different shards and one in an unsharded table; no read across shards ever sees one row of a pair without the other, nor a pair whose unsharded row a read after it misses")
    func pairsAreNeverFractured() async throws {
        let c = try await ProcessCluster.founded("pairs", count: 3)
        defer { c.destroy() }
        #expect(try await c.nodes[0].post("/v1/databases", ["name": "p", "shards": 4]).status == 201)
        #expect(try await c.nodes[0].execute(["CREATE TABLE pair (k INTEGER NOT NULL PRIMARY KEY, partner INTEGER NOT NULL) SHARD BY HASH (k)"], db: "p").status == 200)
        #expect(try await c.nodes[0].execute(["CREATE TABLE seen (k INTEGER PRIMARY KEY)"], db: "p").status == 200)
        // A request writing sharded and unsharded tables is one transaction: a failing statement in
        // either leaves both untouched.
        #expect(try await c.nodes[1].execute(["INSERT INTO seen VALUES (-1)"], db: "p").status == 200)
        let failed = try await c.nodes[2].execute(["INSERT INTO pair VALUES (-2, -3), (-3, -2)", "INSERT INTO seen VALUES (-1)"], db: "p")
        #expect(failed.status == 200 && failed.text.contains("UNIQUE"), "\(failed.text)")
        let untouched = try await c.nodes[0].post("/v1/db/p/query", ["statements": ["SELECT count(*) FROM pair", "SELECT count(*) FROM seen"]])
        #expect(untouched.text.contains(#"[[0]]"#) && untouched.text.contains(#"[[1]]"#), "\(untouched.text)")
        // At least 6 s, and on until enough happened to judge (a loaded machine writes fewer pairs a
        // second), but never past a minute.
        let until = Date().addingTimeInterval(6), cap = Date().addingTimeInterval(60)
        let ledger = BankLedger()
        @Sendable func going() async -> Bool {
            if Date() < until { return true }
            let (pairs, reads) = await (ledger.transfers, ledger.reads)
            return (pairs <= 20 || reads <= 10) && Date() < cap
        }
        await withTaskGroup(of: Void.self) { tasks in
            for w in 0..<3 {
                tasks.addTask {
                    var k = w * 1_000_000
                    while await going() {
                        k += 2
                        let r = try? await c.nodes[k % 3].execute([["INSERT INTO pair VALUES (?, ?), (?, ?)", k, k + 1, k + 1, k], ["INSERT INTO seen VALUES (?)", k]], db: "p")
                        guard r?.status == 200 && r?.text.contains("error") == false else { continue }
                        await ledger.transferred()
                        // Acknowledged: a read after it, through another node, sees the unsharded row (its
                        // home group may still be finishing the transaction; the read waits for it).
                        if let back = try? await c.nodes[(k + 1) % 3].post("/v1/db/p/query", ["statements": [["SELECT count(*) FROM seen WHERE k = ?", k]]]),
                           back.status == 200, !back.text.contains(#"[[1]]"#) {
                            await ledger.violation("write \(k) acknowledged, then not read: \(back.text)")
                        }
                    }
                }
            }
            for rd in 0..<2 {
                tasks.addTask {
                    var n = rd
                    while await going() {
                        n += 1
                        guard let r = try? await c.nodes[n % 3].post("/v1/db/p/query", ["statements": ["SELECT k, partner FROM pair"]]), r.status == 200,
                              let rows = (r.json["results"] as? [Object])?.first?["rows"] as? [[Any]] else { continue }
                        let keys = Set(rows.compactMap { $0[0] as? Int })
                        var missing = rows.filter { !keys.contains($0[1] as? Int ?? -1) }.count
                        // Read after: the unsharded row of every pair just seen (its home group may still be
                        // finishing the transaction; the read waits for it).
                        if let r = try? await c.nodes[(n + 1) % 3].post("/v1/db/p/query", ["statements": ["SELECT k FROM seen"]]), r.status == 200,
                           let seenRows = (r.json["results"] as? [Object])?.first?["rows"] as? [[Any]] {
                            let seen = Set(seenRows.compactMap { $0[0] as? Int })
                            missing += keys.filter { $0 % 2 == 0 && !seen.contains($0) }.count
                        }
                        await ledger.read(sum: 100, min: 0, count: missing == 0 ? 8 : -missing, expectedCount: 8)
                    }
                }
            }
        }
        let (pairs, reads, violations) = await (ledger.transfers, ledger.reads, ledger.violations)
        print("pairs: \(pairs) pairs written, \(reads) reads across shards, \(violations.count) fractured")
        #expect(violations.isEmpty, "fractured reads: \(violations.prefix(5))")
        #expect(pairs > 20 && reads > 10)
    }
}
}
