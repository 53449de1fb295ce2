import CairnTestSupport
import Foundation
import NIOHTTP1
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension ProcessTests {
@Suite("rqlite's HTTP API, byte for byte", .serialized)
struct RqliteCompatTests {
    /// The request/response pairs of the compatibility document (section 1.6), in order on one node,
    /// compared as bytes.
    @Test("the compatibility document's examples give the same bytes")
    func documentExamples() async throws {
        let c = try await ProcessCluster.single("compat")
        defer { c.destroy() }
        let n = c.nodes[0]
        let disallowed = #"{"results":[],"error":"disallowed pragma"}"#
        let cases: [(HTTPMethod, String, String?, String)] = [
            (.POST, "/db/execute", #"["CREATE TABLE foo (id integer not null primary key, name text)"]"#, #"{"results":[{}]}"#),
            (.POST, "/db/execute", #"["INSERT INTO foo(name) VALUES(\"fiona\")"]"#, #"{"results":[{"last_insert_id":1,"rows_affected":1}]}"#),
            (.POST, "/db/execute", #"["INSERT blah blah"]"#, #"{"results":[{"error":"near \"blah\": syntax error"}]}"#),
            (.GET, "/db/query?q=SELECT+*+FROM+foo", nil, #"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[1,"fiona"]]}]}"#),
            (.POST, "/db/execute", #"["INSERT INTO foo(id, name) VALUES(2, \"declan\") RETURNING *"]"#,
             #"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[2,"declan"]]}]}"#),
            (.GET, "/db/query?associative&q=SELECT%20*%20from%20foo", nil,
             #"{"results":[{"types":{"id":"integer","name":"text"},"rows":[{"id":1,"name":"fiona"},{"id":2,"name":"declan"}]}]}"#),
            (.POST, "/db/execute?associative", #"["UPDATE foo SET name = 'x' WHERE name='no one' RETURNING name"]"#,
             #"{"results":[{"types":{"name":"text"},"rows":[]}]}"#),
            (.POST, "/db/execute", #"["PRAGMA synchronous = NORMAL"]"#, disallowed),
            (.POST, "/db/query", #"["PRAGMA synchronous = NORMAL"]"#, disallowed),
            (.POST, "/db/request", #"["pragma  journal_mode = wal"]"#, disallowed),
            (.POST, "/db/query", #"["INSERT INTO foo(name) VALUES('z')"]"#, #"{"results":[{"error":"attempt to change database via query operation"}]}"#),
            // DDL reports the row id SQLite still holds from the last insert, as rqlite does.
            (.POST, "/db/execute", #"["CREATE TABLE bar (id integer not null primary key, name text, age integer)"]"#, #"{"results":[{"last_insert_id":2}]}"#),
            (.POST, "/db/query", #"[["SELECT * FROM bar WHERE age=?", 21]]"#, #"{"results":[{"columns":["id","name","age"],"types":["integer","text","integer"]}]}"#),
            (.POST, "/db/request?associative", #"[["INSERT INTO bar(name, age) VALUES(?, ?)", "fiona", 20],["SELECT id, name FROM bar"],["SELECT * FROM nosuch"]]"#,
             #"{"results":[{"last_insert_id":1,"rows_affected":1,"rows":null},{"types":{"id":"integer","name":"text"},"rows":[{"id":1,"name":"fiona"}]},{"error":"no such table: nosuch"}]}"#),
            (.POST, "/db/execute", #"[["INSERT INTO bar(name, age) VALUES(:name, :age)", {"name": "declan", "age": 30}]]"#,
             #"{"results":[{"last_insert_id":2,"rows_affected":1}]}"#),
            (.POST, "/db/query", #"[["SELECT name FROM bar WHERE age > ?", 25], "SELECT count(*) FROM bar", ""]"#,
             #"{"results":[{"columns":["name"],"types":["text"],"values":[["declan"]]},{"columns":["count(*)"],"types":["integer"],"values":[[2]]}]}"#),
            (.POST, "/db/query?pretty", #"["SELECT * FROM foo"]"#, """
                {
                    "results": [
                        {
                            "columns": [
                                "id",
                                "name"
                            ],
                            "types": [
                                "integer",
                                "text"
                            ],
                            "values": [
                                [
                                    1,
                                    "fiona"
                                ],
                                [
                                    2,
                                    "declan"
                                ]
                            ]
                        }
                    ]
                }
                """),
        ]
        for (method, path, body, expected) in cases {
            let r = try await n.raw(method, path, body)
            #expect(r.status == 200, "\(method) \(path)")
            #expect(r.text == expected, "\(method) \(path) \(body ?? "")")
            #expect(r.header("content-type") == "application/json; charset=utf-8")
        }
        let queued = try await n.raw(.POST, "/db/execute?queue", #"["INSERT INTO foo(name) VALUES('q')"]"#)
        #expect(queued.text.range(of: #"^\{"results":\[\],"sequence_number":\d+\}$"#, options: .regularExpression) != nil, "\(queued.text)")
        let indexed = try await n.raw(.POST, "/db/execute?raft_index", #"["INSERT INTO foo(name) VALUES('r')"]"#)
        #expect(indexed.text.range(of: #"^\{"results":\[\{"last_insert_id":\d+,"rows_affected":1\}\],"raft_index":\d+\}$"#, options: .regularExpression) != nil,
                "\(indexed.text)")
        let waited = try await n.raw(.POST, "/db/execute?queue&wait&timeout=10s", #"["INSERT INTO foo(name) VALUES('w')"]"#)
        #expect(waited.status == 200)
        #expect(try await n.raw(.GET, "/db/query?q=SELECT+count(*)+FROM+foo+WHERE+name+IN+('q','w')").text.contains("[[2]]"))
    }

    @Test("values and types: BLOBs (base64, byte arrays, x'..' parameters), reals as Go prints them, booleans, times, inferred types")
    func valueEncodings() async throws {
        let c = try await ProcessCluster.single("values")
        defer { c.destroy() }
        let n = c.nodes[0]
        _ = try await n.raw(.POST, "/db/execute", #"["CREATE TABLE v (b blob, r real, f boolean, t timestamp, d datetime)"]"#)
        let insert = #"[["INSERT INTO v VALUES(?, ?, ?, ?, ?)", "x'00ff10'", 1.5, true, "2020-01-01 10:11:12", 1577836800], ["INSERT INTO v VALUES(?, 3.0, 0, '2021-06-01T00:00:00+02:00', NULL)", [1,2,3]]]"#
        #expect(try await n.raw(.POST, "/db/execute", insert).status == 200)
        let q = try await n.raw(.GET, "/db/query?q=SELECT+*+FROM+v")
        #expect(q.text == #"{"results":[{"columns":["b","r","f","t","d"],"types":["blob","real","boolean","timestamp","datetime"],"values":[["AP8Q",1.5,true,"2020-01-01T10:11:12Z","2020-01-01T00:00:00Z"],["AQID",3,false,"2021-06-01T00:00:00+02:00",null]]}]}"#, "\(q.text)")
        let arrays = try await n.raw(.GET, "/db/query?blob_array&q=SELECT+b+FROM+v")
        #expect(arrays.text == #"{"results":[{"columns":["b"],"types":["blob"],"values":[[[0,255,16]],[[1,2,3]]]}]}"#, "\(arrays.text)")
        let inferred = try await n.raw(.GET, "/db/query?q=SELECT+1,+2.5,+'a',+1e21,+0.0000001,+NULL")
        #expect(inferred.text == #"{"results":[{"columns":["1","2.5","'a'","1e21","0.0000001","NULL"],"types":["integer","real","text","real","real",""],"values":[[1,2.5,"a",1e+21,1e-7,null]]}]}"#,
                "\(inferred.text)")
        let timed = try await n.raw(.GET, "/db/query?timings&q=SELECT+1")
        #expect(timed.text.contains(#""time":"#))
        let html = try await n.raw(.GET, "/db/query?q=SELECT+'%3Ca%3E%26'")
        #expect(html.text.contains(#""\u003ca\u003e\u0026""#), "Go escapes <, > and & in JSON: \(html.text)")
        let plain = try await n.raw(.POST, "/db/query", "SELECT 42", contentType: "text/plain")
        #expect(plain.text.contains("[[42]]"))
    }

    @Test("rqlite's errors: status codes and bodies for bad requests, and 401 with an empty body")
    func errors() async throws {
        let c = try await ProcessCluster.single("rqerrors")
        defer { c.destroy() }
        let n = c.nodes[0]
        let bad: [(HTTPMethod, String, String?, Int, String)] = [
            (.POST, "/db/execute", "[]", 400, "no statements\n"),
            (.POST, "/db/execute", #"{"a":1}"#, 400, "invalid request\n"),
            (.POST, "/db/execute", "[1,", 400, "invalid JSON body\n"),
            (.POST, "/db/execute", #"[["INSERT INTO t VALUES(?)", {"a": {"b": 1}}]]"#, 400, "unsupported type\n"),
            (.GET, "/db/query?q=", nil, 400, "query parameter not set\n"),
            (.GET, "/db/query?q=SELECT+1&timeout=soon", nil, 400, "timeout is not a valid duration: soon\n"),
            (.GET, "/db/query?q=SELECT+1&freshness_strict", nil, 400, "freshness_strict requires freshness\n"),
            (.GET, "/db/backup?fmt=xml", nil, 400, "invalid fmt: xml; use binary, sql or delete\n"),
            (.DELETE, "/remove", #"{"id":"1","x":2}"#, 400, "the body must be {\"id\": \"<node id>\"}\n"),
        ]
        for (method, path, body, status, text) in bad {
            let r = try await n.raw(method, path, body)
            #expect(r.status == status && r.text == text, "\(method) \(path): \(r.status) \(r.text)")
        }
        for (method, path) in [(HTTPMethod.POST, "/db/execute"), (.GET, "/db/query?q=SELECT+1"), (.POST, "/db/request"), (.GET, "/db/backup"),
                               (.POST, "/db/load"), (.GET, "/status"), (.GET, "/nodes"), (.GET, "/leader"), (.POST, "/leader"),
                               (.DELETE, "/remove")] {
            let r = try await n.raw(method, path, #"["SELECT 1"]"#, authorization: nil)
            #expect(r.status == 401 && r.text.isEmpty && r.header("www-authenticate") == #"Basic realm="rqlite""#, "\(method) \(path): \(r.status)")
        }
        // Readiness is open to everyone by default (load balancers probe without credentials).
        let ready = try await n.raw(.GET, "/readyz", authorization: nil)
        #expect(ready.status == 200 && ready.text == "[+]node ok\n[+]leader ok\n[+]store ok\n[+]db ok\n", "\(ready.text)")
        #expect(try await n.raw(.GET, "/readyz?noleader", authorization: nil).text == "[+]node ok\n")
    }

    @Test("operations: status keys, nodes in both formats, leader, backup and load, stale reads")
    func operations() async throws {
        let c = try await ProcessCluster.single("rqops")
        defer { c.destroy() }
        let n = c.nodes[0]
        let state = try await n.raw(.GET, "/status?key=store.raft.state")
        #expect(state.text == #""Leader""#, "\(state.text)")
        let status = try await n.get("/status")
        let store = status.json["store"] as? Object
        #expect((store?["leader"] as? Object)?["node_id"] as? String == String(n.id))
        #expect(status.text.hasPrefix(#"{"build":"#), "Go sorts map keys: \(status.text.prefix(40))")
        let legacy = try await n.get("/nodes")
        let entry = legacy.json[String(n.id)] as? Object
        #expect(entry?["api_addr"] as? String == "http://\(n.http)" && entry?["leader"] as? Bool == true && entry?["reachable"] as? Bool == true)
        let v2 = try await n.get("/nodes?ver=2")
        #expect((v2.json["nodes"] as? [Object])?.first?["id"] as? String == String(n.id))
        let leader = try await n.get("/leader")
        #expect(leader.json["addr"] as? String == "127.0.0.1:\(n.raftPort)")

        _ = try await n.raw(.POST, "/db/execute", #"["CREATE TABLE b (id integer primary key, v text)", "INSERT INTO b(v) VALUES('one')", "INSERT INTO b(v) VALUES('two')"]"#)
        let dump = try await n.raw(.GET, "/db/backup?fmt=sql")
        #expect(dump.status == 200 && dump.header("content-type") == "application/sql")
        #expect(dump.text.contains("CREATE TABLE b (id integer primary key, v text);") && dump.text.contains("INSERT INTO \"b\" VALUES(2,'two');"))
        #expect(!dump.text.contains("_cairn"), "CairnDB's bookkeeping is not part of a backup")
        let file = try await TestHTTP.bytes(n.url + "/db/backup")
        #expect(file.starts(with: Array("SQLite format 3\u{0}".utf8)))
        _ = try await n.raw(.POST, "/db/execute", #"["DROP TABLE b", "CREATE TABLE other(x)"]"#)
        // Loading a SQLite file replaces the database.
        let loaded = try await TestHTTP.request(.POST, n.url + "/db/load", rawBody: file, contentType: "application/octet-stream")
        #expect(loaded.status == 200, "\(loaded.text)")
        #expect(try await n.raw(.GET, "/db/query?q=SELECT+v+FROM+b+ORDER+BY+id").text.contains(#"[["one"],["two"]]"#))
        #expect(try await n.raw(.GET, "/db/query?q=SELECT+*+FROM+other").text.contains("no such table"))
        // SQL text runs on top.
        let text = try await n.raw(.POST, "/db/load", "BEGIN TRANSACTION;\nINSERT INTO b(v) VALUES('three');\nCOMMIT;\n", contentType: "text/plain")
        #expect(text.status == 200, "\(text.text)")
        #expect(try await n.raw(.GET, "/db/query?q=SELECT+count(*)+FROM+b").text.contains("[[3]]"))
        // level=none reads this node; with a freshness bound a leader answers at once.
        #expect(try await n.raw(.GET, "/db/query?level=none&freshness=1s&q=SELECT+count(*)+FROM+b").text.contains("[[3]]"))
        // A dump loads back to the same values: quotes, NUL inside text (kept whole, as bytes cast to text), BLOBs, reals.
        _ = try await n.raw(.POST, "/db/execute", #"["CREATE TABLE d(k INTEGER PRIMARY KEY, v)", ["INSERT INTO d(v) VALUES(?), (?), (?), (?), (?)", "it's", "a\u0000b", "x'00ff'", -0.5, -7]]"#)
        _ = try await n.raw(.POST, "/db/execute", #"["INSERT INTO d(v) VALUES (x'00ff10'), (''), ('line one\nCOMMIT;\nEND;'), (CAST(x'ff61' AS TEXT))"]"#)
        // A trigger over several lines (its last is "END;") and a generated column.
        let schema = try await n.raw(.POST, "/db/execute", #"["CREATE TABLE g(a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2))", "INSERT INTO g(a) VALUES (21)", "CREATE TRIGGER d_log AFTER INSERT ON d\nBEGIN\n  INSERT INTO g(a) VALUES (NEW.k);\nEND"]"#)
        #expect(!schema.text.contains("error"), "\(schema.text)")
        let before = try await n.raw(.GET, "/db/query?q=SELECT+k,typeof(v),hex(v)+FROM+d+ORDER+BY+k").text
        let beforeG = try await n.raw(.GET, "/db/query?q=SELECT+a,b+FROM+g").text
        let dumped = try await n.raw(.GET, "/db/backup?fmt=sql&tables=d,g")
        #expect(dumped.status == 200 && dumped.text.contains("CAST(X'610062' AS TEXT)"), "\(dumped.text)")
        _ = try await n.raw(.POST, "/db/execute", #"["DROP TABLE d", "DROP TABLE g"]"#)
        let reloaded = try await n.raw(.POST, "/db/load", dumped.text, contentType: "text/plain")
        #expect(reloaded.status == 200 && !reloaded.text.contains("error"), "\(reloaded.text)")
        let after = try await n.raw(.GET, "/db/query?q=SELECT+k,typeof(v),hex(v)+FROM+d+ORDER+BY+k").text
        #expect(after == before && before.contains("610062") && before.contains("FF61"), "\(before)\n\(after)")
        #expect(try await n.raw(.GET, "/db/query?q=SELECT+a,b+FROM+g").text == beforeG && beforeG.contains("[21,42]"), "\(beforeG)")
        // The trigger came back whole.
        _ = try await n.raw(.POST, "/db/execute", #"["INSERT INTO d(v) VALUES ('fires')"]"#)
        #expect(try await n.raw(.GET, "/db/query?q=SELECT+count(*)+FROM+g").text.contains("[[2]]"))
    }
}
}

extension ProcessTests {
@Suite("rqlite's API on 3 nodes, the CLI's backup and restore, shutdown", .serialized)
struct ThreeNodeOperationsTests {
    @Test("redirect, forwarding, leader stepdown, db_timeout on reads, backup and restore through the CLI, SIGTERM")
    func operations() async throws {
        let c = try await ProcessCluster.founded("ops3", count: 3)
        defer { c.destroy() }
        let leader = try await c.leader(of: 1)
        let follower = c.nodes.first { $0 !== leader }!
        // ?redirect: a follower answers 301 pointing at the leader; without it, it forwards.
        let redirected = try await follower.raw(.POST, "/db/execute?redirect", #"["CREATE TABLE r(x)"]"#)
        #expect(redirected.status == 301 && redirected.header("location") == "http://\(leader.http)/db/execute?redirect",
                "\(redirected.status) \(redirected.header("location") ?? "")")
        let forwarded = try await follower.raw(.POST, "/db/execute", #"["CREATE TABLE r(x)", "INSERT INTO r VALUES(1)"]"#)
        #expect(forwarded.text == #"{"results":[{},{"last_insert_id":1,"rows_affected":1}]}"#, "\(forwarded.text)")
        // A slow read is cut off by db_timeout; without it, it finishes.
        let slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000000) SELECT count(*) FROM n"
        let cut = try await follower.raw(.POST, "/db/query?db_timeout=50ms", "[\"\(slow)\"]")
        #expect(cut.text == #"{"results":[{"error":"query timed out (db_timeout)"}]}"#, "\(cut.text)")
        // Stepdown: leadership moves to the named node.
        let target = c.nodes.first { $0 !== leader && $0 !== follower }!
        let stepdown = try await follower.raw(.POST, "/leader?wait&timeout=10s", "{\"id\":\"\(target.id)\"}")
        #expect(stepdown.status == 200, "\(stepdown.status) \(stepdown.text)")
        #expect(try await c.leader(of: 1) === target)

        // Backup through one node, restore through another (the CLI, with a saved password).
        let home = c.root + "/home"
        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_HOME"] = home
        environment["CAIRN_USER"] = "admin"
        environment["CAIRN_PASSWORD"] = TestHTTP.adminPassword
        func cli(_ args: [String]) async throws -> (Int32, String) { try await runCairn(args, environment: environment) }
        let file = c.root + "/backup.sqlite"
        let backup = try await cli(["backup", file, "--host", follower.url])
        #expect(backup.0 == 0 && backup.1.contains("Wrote"), "\(backup.1)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)).starts(with: Array("SQLite format 3".utf8)))
        _ = try await target.raw(.POST, "/db/execute", #"["DROP TABLE r"]"#)
        let restore = try await cli(["restore", file, "--host", target.url])
        #expect(restore.0 == 0 && restore.1.contains("Restored"), "\(restore.1)")
        for n in c.nodes { #expect(try await n.rows("SELECT x FROM r") .count == 1) }
        let bad = try await cli(["sql", "--host", target.url, "-e", "SELEC 1"])
        #expect(bad.0 == 1 && bad.1.contains("syntax error"), "\(bad.1)")

        // SIGTERM: the node finishes, exits 0, and restarts with everything.
        let stopping = c.nodes[2]
        kill(stopping.process!.processIdentifier, SIGTERM)
        #expect(await stopping.waitForExit(seconds: 20) == 0)
        #expect(stopping.log.contains("shutting down"))
        try stopping.start()
        try await c.waitReady([stopping])
        #expect(try await stopping.rows("SELECT x FROM r").count == 1)
    }
}
}
