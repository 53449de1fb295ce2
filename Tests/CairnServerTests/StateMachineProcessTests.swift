import CSQLite3
import Foundation
import NIOHTTP1
import Testing

extension ProcessTests {
@Suite("The state machine on real nodes: hostile SQL, consistency checks, readiness", .serialized)
struct StateMachineProcessTests {
    /// The first statement's result of a request: its error, or nil.
    private static func firstError(_ r: HTTPResult) -> String? {
        ((r.json["results"] as? [Object])?.first?["error"] as? String)
    }

    /// Asks for a consistency check through `via` and waits until every node has compared its digest
    /// with the leader's at the check's entry; returns each node's consistency object.
    private static func checkAll(_ c: ProcessCluster, via: NodeProcess) async throws -> [Object] {
        let r = try await via.post("/v1/db/default/check", [String: Any]())
        guard r.status == 200, let index = r.json["index"] as? Int else { throw TestFailure("check: \(r.status) \(r.text)") }
        let end = Date().addingTimeInterval(10)
        while true {
            var all: [Object] = []
            for n in c.nodes where n.isRunning {
                if let g = try await n.group(1), let cons = g["consistency"] as? Object { all.append(cons) }
            }
            let settled = all.count == c.nodes.filter(\.isRunning).count
                && all.allSatisfy { ($0["verified_index"] as? Int ?? 0) >= index || !($0["mismatch"] is NSNull) }
            if settled { return all }
            guard Date() < end else { throw TestFailure("digests at \(index) not compared everywhere: \(all)") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    @Test("every hazard gets a clear per-statement error or a result every replica shares; then the replicas' digests match, a write commits within a second, every node is ready, also after all restart")
    func hazardsOnThreeNodes() async throws {
        let c = try await ProcessCluster.founded("hazards", count: 3, extraArgs: ["--max-body-bytes", "\(40 << 20)"])
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "CREATE TABLE log(a, b, c)", "INSERT INTO t(v) VALUES (1), (2)"])
        let refused: [(String, String)] = [
            ("PRAGMA application_id=1", "reserved for CairnDB"),
            ("ALTER TABLE _cairn_reset RENAME TO x", "reserved for CairnDB"),
            ("DELETE FROM _cairn_reset", "reserved for CairnDB"),
            ("PRAGMA foreign_keys=ON", "cannot be changed"),
            ("INSERT INTO log SELECT count(*), 0, 0 FROM sqlite_stmt", "not allowed in a write"),
            ("INSERT INTO log SELECT count(*), 0, 0 FROM dbstat", "not allowed in a write"),
            ("INSERT INTO log SELECT page_count, 0, 0 FROM pragma_page_count", "not allowed in a write"),
            ("INSERT INTO log VALUES (sqlite_version(), 0, 0)", "not allowed in a write"),
            ("INSERT INTO t(id, v) VALUES (9223372036854775807, 1)", "rowid 9223372036854775807 is not allowed"),
            ("CREATE TEMP TABLE tt(a)", "TEMP tables"),
            ("CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END", "TEMP tables"),
            ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer() is not allowed"),
            ("SELECT fts3_tokenizer('simple', x'0000000000000000')", "fts3_tokenizer() is not allowed"),
            ("SELECT randomblob(2000000000)", "exceeds the limit"),
            ("INSERT INTO log WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x, 0, 0 FROM c", "exceeded its budget"),
        ]
        for (k, (sql, reason)) in refused.enumerated() {
            let r = try await c.nodes[k % 3].execute([sql])
            #expect(r.status == 200 && Self.firstError(r)?.contains(reason) == true, "\(sql): \(r.status) \(r.text)")
        }
        // Deterministic results: the same on every replica (the digests below say so).
        for (k, statement) in [
            ["INSERT INTO log VALUES (total_changes(), changes(), last_insert_rowid())"],
            ["INSERT INTO log VALUES (datetime('now', 'localtime'), datetime('now'), random())"],
            ["INSERT INTO log VALUES (?, 0, 0)", "a\u{0}b"],
            ["DROP TABLE IF EXISTS nosuch"], ["INSERT INTO log VALUES (changes(), last_insert_rowid(), 0)"],
        ].enumerated() {
            let r = try await c.nodes[k % 3].execute([statement])
            #expect(r.status == 200 && Self.firstError(r) == nil, "\(statement): \(r.text)")
        }
        #expect(try await c.nodes[1].rows("SELECT length(CAST(a AS BLOB)) FROM log WHERE b = 0 AND c = 0 AND typeof(a) = 'text'")
            .contains { ($0.first as? Int) == 3 }, "NUL kept inside a parameter")
        // Queries run on read connections: a setting they try is refused and cannot reach the apply path.
        for (sql, reason) in [("PRAGMA foreign_keys=ON", "cannot be set"), ("CREATE TEMP TABLE q(a)", "TEMP tables"),
                              ("SELECT fts3_tokenizer('simple')", "not allowed")] {
            let r = try await c.nodes[2].query(sql)
            #expect(Self.firstError(r)?.contains(reason) == true, "query \(sql): \(r.text)")
        }
        for sql in ["PRAGMA read_uncommitted", "PRAGMA table_info(t)", "PRAGMA index_list(t)", "PRAGMA foreign_key_list(t)"] {
            let r = try await c.nodes[0].query(sql)
            #expect(r.status == 200 && Self.firstError(r) == nil, "query \(sql): \(r.text)")
        }
        // An entry larger than the log carries is refused before it is proposed, naming the limit.
        let huge = String(repeating: "x", count: 21 << 20)
        let tooLarge = try await c.nodes[0].execute([["INSERT INTO log VALUES (?, 1, 1)", huge]])
        #expect(tooLarge.status == 413 && (tooLarge.json["error"] as? String)?.contains("limit of") == true, "\(tooLarge.status) \(tooLarge.text.prefix(300))")
        // A runaway query is interrupted at its timeout on its own thread; writes through the same node
        // commit meanwhile.
        let slow = Task {
            try await c.nodes[0].raw(.GET, "/db/query?db_timeout=3s&q=" + "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
                .addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)
        }
        try await Task.sleep(for: .milliseconds(300))
        let started = Date()
        let during = try await c.nodes[0].execute(["INSERT INTO t(v) VALUES (3)"])
        let writeSeconds = Date().timeIntervalSince(started)
        #expect(during.status == 200 && writeSeconds < 1, "a write waited \(writeSeconds) s behind a slow query")
        let slowReply = try await slow.value
        #expect(slowReply.text.contains("query timed out"), "\(slowReply.text)")

        for round in ["before", "after"] {
            if round == "after" {
                for n in c.nodes { await n.terminate() }
                for n in c.nodes { try n.start() }
                try await c.waitReady()
            }
            let consistency = try await Self.checkAll(c, via: c.nodes[2])
            #expect(consistency.allSatisfy { $0["mismatch"] is NSNull }, "\(round) restart: \(consistency)")
            let digests = Set(consistency.compactMap { $0["digest"] as? String })
            #expect(digests.count == 1, "\(round) restart: digests \(digests)")
            let started = Date()
            let w = try await c.nodes[1].execute(["INSERT INTO t(v) VALUES (4)"])
            #expect(w.status == 200 && Date().timeIntervalSince(started) < 1, "\(round) restart: \(w.text)")
            for n in c.nodes {
                let ready = try await n.get("/v1/ready")
                #expect(ready.status == 200, "\(round) restart: \(n.name) \(ready.text)")
            }
        }
    }

    @Test("a replica made to diverge on purpose is caught by the consistency check: shown in its status and metrics, and it is not ready")
    func divergenceIsCaught() async throws {
        let c = try await ProcessCluster.founded("diverge", count: 3)
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "INSERT INTO t(v) VALUES (1), (2), (3)"])
        let clean = try await Self.checkAll(c, via: c.nodes[0])
        #expect(clean.allSatisfy { $0["mismatch"] is NSNull }, "\(clean)")
        let leader = try await c.leader()
        let victim = c.nodes.first { $0 !== leader }!
        let d = try await TestHTTP.request(.PUT, victim.url + "/v1/debug/diverge", ["database": "default", "sql": "UPDATE t SET v = 99 WHERE id = 2"])
        #expect(d.status == 200, "\(d.text)")
        _ = try await Self.checkAll(c, via: c.nodes[0])
        for n in c.nodes {
            let cons = try await n.group(1)?["consistency"] as? Object
            let ready = try await n.get("/v1/ready")
            let metrics = try await n.get("/metrics").text
            if n === victim {
                #expect(cons?["mismatch"] is Object, "\(String(describing: cons))")
                #expect(ready.status == 503 && ready.text.contains("diverged"), "\(ready.text)")
                #expect(metrics.contains("cairn_consistency_mismatch{group=\"1\"} 1"), "\(metrics.split(separator: "\n").filter { $0.contains("consistency") })")
                #expect(victim.log.contains("DIVERGED"))
            } else {
                #expect(cons?["mismatch"] is NSNull, "\(n.name): \(String(describing: cons))")
                #expect(ready.status == 200, "\(n.name): \(ready.text)")
                #expect(metrics.contains("cairn_consistency_mismatch{group=\"1\"} 0"))
            }
        }
    }

    /// Size of the loaded file in the normal test run; `CAIRN_LOAD_MIB` loads a larger one (256 for the long run).
    static var loadMiB: Int { ProcessInfo.processInfo.environment["CAIRN_LOAD_MIB"].flatMap(Int.init) ?? 24 }


    @Test("a SQLite file larger than any entry loads through a follower of 3 nodes: it replaces the database whole, replicas agree, memory stays bounded")
    func largeLoad() async throws {
        let c = try await ProcessCluster.founded("load", count: 3)
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE old(x)", "INSERT INTO old VALUES (1)"])
        let file = c.root + "/upload.sqlite"
        let rowsWanted = Self.loadMiB * 1024
        var db: OpaquePointer?
        sqlite3_open(file, &db)
        let schema = """
            CREATE TABLE big(id INTEGER PRIMARY KEY, payload BLOB, note TEXT);
            CREATE INDEX big_note ON big(note);
            CREATE TABLE "we""ird tbl"(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
            CREATE VIEW big_small AS SELECT id FROM big WHERE id < 10;
            CREATE TRIGGER big_gone AFTER DELETE ON big BEGIN INSERT INTO "we""ird tbl" VALUES ('deleted ' || old.id, 1); END;
            INSERT INTO "we""ird tbl" VALUES ('a', x'00ff'), ('b', NULL);
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < \(rowsWanted))
              INSERT INTO big SELECT i, randomblob(1000), 'n' || (i % 100) FROM c;
            """
        #expect(sqlite3_exec(db, schema, nil, nil, nil) == SQLITE_OK, "\(String(cString: sqlite3_errmsg(db)))")
        sqlite3_close(db)
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: file)))
        let leader = try await c.leader()
        let follower = c.nodes.first { $0 !== leader }!
        // A small file whose generated column makes a 200 MB value: refused with the limit, nothing changed.
        let hostile = c.root + "/generated.sqlite"
        sqlite3_open(hostile, &db)
        sqlite3_exec(db, "CREATE TABLE g(a INTEGER, z BLOB GENERATED ALWAYS AS (zeroblob(200000000)) VIRTUAL); INSERT INTO g(a) VALUES (1);", nil, nil, nil)
        sqlite3_close(db)
        let refused = try await TestHTTP.request(.POST, follower.url + "/db/load", rawBody: Array(try Data(contentsOf: URL(fileURLWithPath: hostile))),
                                                 contentType: "application/octet-stream")
        #expect(refused.status == 400 && refused.text.contains("exceeds the limit of 33554432 bytes"), "\(refused.status) \(refused.text)")
        #expect(try await leader.rows("SELECT count(*) FROM old").first?.first as? Int == 1, "a refused load changes nothing")
        let started = Date()
        let loaded = try await TestHTTP.request(.POST, follower.url + "/db/load", timeout: 900, rawBody: bytes, contentType: "application/octet-stream")
        let seconds = Date().timeIntervalSince(started)
        #expect(loaded.status == 200 && !loaded.text.contains("error"), "\(loaded.status) \(loaded.text.prefix(500))")
        #expect(try await follower.rows("SELECT count(*) FROM sqlite_master WHERE name = 'old'").first?.first as? Int == 0, "the load replaced the database")
        #expect(try await leader.rows("SELECT count(*), sum(length(payload)) FROM big").first?.map { $0 as? Int } == [rowsWanted, rowsWanted * 1000])
        #expect(try await follower.rows("SELECT count(*) FROM big_small").first?.first as? Int == 9)
        #expect(try await follower.rows("SELECT k FROM \"we\"\"ird tbl\" ORDER BY k").count == 2)
        #expect(try await follower.rows("SELECT count(*) FROM sqlite_master WHERE name IN ('big_note', 'big_gone') OR name LIKE '_cairn_load%'").first?.first as? Int == 2)
        let w = try await follower.execute(["DELETE FROM big WHERE id = 1"])
        #expect(w.status == 200)
        #expect(try await leader.rows("SELECT v FROM \"we\"\"ird tbl\" WHERE k = 'deleted 1'").count == 1, "the trigger came along")
        let consistency = try await Self.checkAll(c, via: leader)
        #expect(Set(consistency.compactMap { $0["digest"] as? String }).count == 1 && consistency.allSatisfy { $0["mismatch"] is NSNull })
        let rss = c.nodes.map { "\($0 === follower ? "receiving follower" : $0 === leader ? "leader" : "follower") \($0.peakRSSMiB.map(String.init) ?? "?") MiB" }
        print("load: \(bytes.count >> 20) MiB file, \(rowsWanted) rows, \(String(format: "%.1f", seconds)) s on 3 nodes; peak RSS: \(rss.joined(separator: ", "))")
        // A file too large for --max-load-bytes is refused before it is stored whole; garbage is refused.
        let garbage = try await TestHTTP.request(.POST, leader.url + "/db/load", rawBody: Array("SQLite format 3\u{0}garbage".utf8), contentType: "application/octet-stream")
        #expect(garbage.status == 400, "\(garbage.text)")
    }

    /// Fresh starts in the normal test run; `CAIRN_FRESH_STARTS` runs more (50 for the long run).
    static var freshStarts: Int { ProcessInfo.processInfo.environment["CAIRN_FRESH_STARTS"].flatMap(Int.init) ?? 4 }

    @Test("right after a fresh start, a 200 from /readyz means the next write and read through rqlite's API succeed")
    func readinessTellsTheTruth() async throws {
        var failures: [String] = []
        for size in [1, 3] {
            for attempt in 0..<Self.freshStarts {
                let c = ProcessCluster("fresh\(size)")
                defer { c.destroy() }
                for i in 1...size { c.nodes.append(NodeProcess(name: "n\(i)", root: c.root, extraArgs: [])) }
                let join = c.nodes.map(\.http).joined(separator: ",")
                for n in c.nodes { try n.start(size == 1 ? [] : ["--join", join, "--bootstrap-expect", "\(size)"]) }
                let n = c.nodes[attempt % size]
                let end = Date().addingTimeInterval(60)
                while (try? await n.raw(.GET, "/readyz"))?.status != 200 {
                    guard Date() < end else { throw TestFailure("never ready: \(n.log.suffix(2000))") }
                    try await Task.sleep(for: .milliseconds(20))
                }
                let w = try await n.raw(.POST, "/db/execute", #"["CREATE TABLE IF NOT EXISTS t(x)", "INSERT INTO t VALUES (1)"]"#,
                                        contentType: "application/json")
                let q = try await n.raw(.GET, "/db/query?q=SELECT+count(*)+FROM+t")
                if w.status != 200 || w.text.contains("error") { failures.append("\(size) nodes, start \(attempt): write \(w.status) \(w.text)") }
                if q.status != 200 || !q.text.contains("[[1]]") { failures.append("\(size) nodes, start \(attempt): read \(q.status) \(q.text)") }
            }
        }
        print("readiness: \(Self.freshStarts) fresh starts of 1 and of 3 nodes, \(failures.count) failures")
        #expect(failures.isEmpty, "\(failures)")
    }
}
}
