import CairnJSON
import Foundation
import NIOHTTP1
import Testing

private func basic(_ user: String, _ password: String) -> String {
    "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
}

extension ProcessTests {
@Suite("Native API, auth and bad input on real nodes", .serialized)
struct NativeAPITests {
    @Test("every data and admin endpoint refuses callers without credentials (401) and without the permission (403)")
    func unauthenticatedAndUnauthorized() async throws {
        let c = try await ProcessCluster.single("authz")
        defer { c.destroy() }
        let n = c.nodes[0]
        let created = try await n.post("/v1/users", ["username": "reader", "password": "reader-password",
                                                      "grants": [["permission": "read", "database": "default"]]])
        #expect(created.status == 201, "\(created.text)")
        let endpoints: [(HTTPMethod, String, String?)] = [
            (.POST, "/v1/db/default/execute", #"{"statements":["CREATE TABLE t(x)"]}"#),
            (.POST, "/v1/db/default/request", #"{"statements":["INSERT INTO t VALUES(1)"]}"#),
            (.POST, "/v1/databases", #"{"name":"other"}"#),
            (.DELETE, "/v1/databases/other", nil),
            (.GET, "/v1/status", nil), (.GET, "/v1/cluster", nil),
            (.GET, "/v1/users", nil), (.POST, "/v1/users", #"{"username":"x","password":"xxxxxxxxxx"}"#),
            (.DELETE, "/v1/users/reader", nil), (.PUT, "/v1/users/admin/password", #"{"password":"yyyyyyyyyy"}"#),
            (.POST, "/v1/users/reader/grants", #"{"permission":"all"}"#), (.DELETE, "/v1/users/reader/grants", #"{"permission":"read","database":"default"}"#),
            (.POST, "/v1/cluster/join", #"{"id":5,"raft_address":"127.0.0.1:1","http_address":"127.0.0.1:2","voter":true}"#),
            (.POST, "/v1/cluster/remove", #"{"id":5}"#), (.PUT, "/v1/debug/faults", #"{"partitioned":[]}"#),
            (.POST, "/v1/internal/catalog", #"{"statements":[]}"#), (.GET, "/metrics", nil),
        ]
        for (k, (method, path, body)) in endpoints.enumerated() {
            let anonymous = try await n.raw(method, path, body, authorization: nil)
            #expect(anonymous.status == 401, "\(method) \(path) without credentials: \(anonymous.status) \(anonymous.text)")
            #expect(anonymous.header("www-authenticate")?.contains("Bearer") == true)
            // A different unknown user each time: repeated failures for one user would (rightly) be rate-limited.
            let wrong = try await n.raw(method, path, body, authorization: basic("nobody\(k)", "not-the-password"))
            #expect(wrong.status == 401, "\(method) \(path) with a wrong password: \(wrong.status)")
            let reader = try await n.raw(method, path, body, authorization: basic("reader", "reader-password"))
            #expect(reader.status == 403, "\(method) \(path) as a reader: \(reader.status) \(reader.text)")
            #expect(reader.text.contains("lacks the"), "\(reader.text)")
        }
        // The reader reads what it was granted, and nothing else.
        _ = try await n.execute(["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"])
        let read = try await n.raw(.POST, "/v1/db/default/query", #"{"statements":["SELECT x FROM t"]}"#, authorization: basic("reader", "reader-password"))
        #expect(read.status == 200 && read.text.contains("[[1]]"), "\(read.text)")
        let readOnly = try await n.raw(.POST, "/v1/db/default/request", #"{"statements":["SELECT x FROM t"]}"#, authorization: basic("reader", "reader-password"))
        #expect(readOnly.status == 200, "a read-only mixed request needs only read: \(readOnly.text)")
        let listed = try await n.raw(.GET, "/v1/databases", authorization: basic("reader", "reader-password"))
        #expect(listed.status == 200 && listed.text.contains("\"default\""))
        // Health is open; readiness is granted to everyone by default.
        #expect(try await n.raw(.GET, "/v1/health", authorization: nil).status == 200)
        #expect(try await n.raw(.GET, "/v1/ready", authorization: nil).status == 200)
    }

    @Test("tokens: issued for a password, accepted as Bearer, revoked by a password change; failed logins are limited")
    func tokens() async throws {
        let c = try await ProcessCluster.single("tokens")
        defer { c.destroy() }
        let n = c.nodes[0]
        #expect(try await n.post("/v1/users", ["username": "alice", "password": "alice-password-1",
                                               "grants": [["permission": "write", "database": "*"]]]).status == 201)
        let issued = try await TestHTTP.request(.POST, n.url + "/v1/auth/token", ["username": "alice", "password": "alice-password-1"], authorization: nil)
        #expect(issued.status == 200, "\(issued.text)")
        let token = try #require(issued.json["token"] as? String)
        let bearer = "Bearer " + token
        let write = try await n.raw(.POST, "/v1/db/default/execute", #"{"statements":["CREATE TABLE a(x)"]}"#, authorization: bearer)
        #expect(write.status == 200, "\(write.text)")
        #expect(try await n.raw(.POST, "/v1/db/default/execute", #"{"statements":["SELECT 1"]}"#, authorization: "Bearer garbage").status == 401)
        // Alice changes her own password: the old token stops working, a new one works.
        let changed = try await n.raw(.PUT, "/v1/users/alice/password", #"{"password":"alice-password-2"}"#, authorization: bearer)
        #expect(changed.status == 200, "\(changed.text)")
        let revoked = try await n.raw(.POST, "/v1/db/default/execute", #"{"statements":["SELECT 1"]}"#, authorization: bearer)
        #expect(revoked.status == 401 && revoked.text.contains("revoked"), "\(revoked.text)")
        #expect(try await n.raw(.POST, "/v1/db/default/query", #"{"statements":["SELECT 1"]}"#, authorization: basic("alice", "alice-password-2")).status == 200)
        // Alice may not change someone else's password.
        #expect(try await n.raw(.PUT, "/v1/users/admin/password", #"{"password":"hijacked-password"}"#, authorization: basic("alice", "alice-password-2")).status == 403)
        // Guessing: after 5 failures in a minute, even the right password is refused for a while.
        for _ in 0..<5 {
            let r = try await TestHTTP.request(.POST, n.url + "/v1/auth/token", ["username": "alice", "password": "guess"], authorization: nil)
            #expect(r.status == 401)
        }
        let limited = try await TestHTTP.request(.POST, n.url + "/v1/auth/token", ["username": "alice", "password": "alice-password-2"], authorization: nil)
        #expect(limited.status == 429 && limited.header("retry-after") != nil, "\(limited.status) \(limited.text)")
        // Guesses sent all at once: no more than five are checked, however slow each check is.
        #expect(try await n.post("/v1/users", ["username": "bob", "password": "bob-password-1"]).status == 201)
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {  // within the test client's 8 connections per host
                group.addTask {
                    try await TestHTTP.request(.POST, n.url + "/v1/auth/token", ["username": "bob", "password": "guess"], authorization: nil).status
                }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses.filter { $0 == 401 }.count == 5 && statuses.filter { $0 == 429 }.count == 3, "\(statuses.sorted())")
        // The audit log names users and actions, never passwords. It is written every 100 ms.
        var audit = ""
        for _ in 0..<50 {
            audit = (try? String(contentsOfFile: n.dataDir + "/audit.log", encoding: .utf8)) ?? ""
            if audit.contains(#""action":"change password of alice""#) { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(audit.contains(#""user":"alice","action":"write","database":"default","statement":"CREATE TABLE a(x)""#), "\(audit)")
        #expect(audit.contains(#""action":"create user alice""#) && audit.contains(#""action":"change password of alice""#))
        #expect(!audit.contains("alice-password"), "passwords must never be logged")
        // Every line is one JSON object that starts with the time, in UTC to the second.
        for line in audit.split(separator: "\n") {
            let parsed = try JSON.parse(Array(line.utf8))
            guard case .string(let time) = parsed["time"] ?? .null else { Issue.record("no time: \(line)"); continue }
            #expect(time.utf8.count == 20 && time.hasSuffix("Z") && Array(time.utf8)[10] == UInt8(ascii: "T"), "\(line)")
            #expect(parsed["node"] != nil && parsed["action"] != nil && parsed["user"] != nil, "\(line)")
        }
        #expect(!n.log.contains("alice-password") && !n.log.contains(TestHTTP.adminPassword))
    }

    @Test("a token works until it expires, however often it was used; schemes match regardless of case")
    func tokenExpiry() async throws {
        let c = try await ProcessCluster.single("expiry", extraArgs: ["--token-ttl-seconds", "3"])
        defer { c.destroy() }
        let n = c.nodes[0]
        let issued = try await TestHTTP.request(.POST, n.url + "/v1/auth/token", ["username": "admin", "password": TestHTTP.adminPassword], authorization: nil)
        let token = try #require(issued.json["token"] as? String, "\(issued.text)")
        for scheme in ["Bearer ", "bearer ", "BEARER   "] {
            let r = try await n.raw(.POST, "/v1/db/default/query", #"{"statements":["SELECT 1"]}"#, authorization: scheme + token + " ")
            #expect(r.status == 200, "\(scheme): \(r.status) \(r.text)")
        }
        let basic = try await n.raw(.POST, "/v1/db/default/query", #"{"statements":["SELECT 1"]}"#,
                                    authorization: "bASIC  " + Data("admin:\(TestHTTP.adminPassword)".utf8).base64EncodedString())
        #expect(basic.status == 200, "\(basic.text)")
        #expect(try await n.raw(.POST, "/v1/db/default/query", #"{"statements":["SELECT 1"]}"#, authorization: "Bearer" + token).status == 401)
        #expect(try await n.raw(.POST, "/v1/db/default/query", #"{"statements":["SELECT 1"]}"#, authorization: "Bearer " + token.dropLast(2) + "xx").status == 401)
        try await Task.sleep(for: .milliseconds(3_500))
        let late = try await n.raw(.POST, "/v1/db/default/query", #"{"statements":["SELECT 1"]}"#, authorization: "Bearer " + token)
        #expect(late.status == 401 && late.text.contains("expired"), "\(late.status) \(late.text)")
    }

    @Test("bad input gets a 4xx that says what is wrong; nothing crashes and nothing acknowledged is lost")
    func badInput() async throws {
        let c = try await ProcessCluster.single("badinput", extraArgs: ["--max-body-bytes", "2000", "--max-statements", "5"])
        defer { c.destroy() }
        let n = c.nodes[0]
        #expect(try await n.execute(["CREATE TABLE k(id INTEGER PRIMARY KEY, v)", "INSERT INTO k VALUES(1, 'kept')"]).status == 200)
        let cases: [(HTTPMethod, String, String?, Int, String)] = [
            (.POST, "/v1/db/default/execute", "{", 400, "malformed JSON"),
            (.POST, "/v1/db/default/execute", "", 400, "empty"),
            (.POST, "/v1/db/default/execute", "[1]", 400, "must be a JSON object"),
            (.POST, "/v1/db/default/execute", #"{"statements":"SELECT 1"}"#, 400, "must be an array"),
            (.POST, "/v1/db/default/execute", #"{"statements":[]}"#, 400, "is empty"),
            (.POST, "/v1/db/default/execute", #"{"statements":[7]}"#, 400, "statement 0"),
            (.POST, "/v1/db/default/execute", #"{"statements":[{"sql":"SELECT ?","params":[{"a":1}]}]}"#, 400, "not a valid SQL value"),
            (.POST, "/v1/db/default/execute", #"{"statements":["SELECT 1"],"atomic":"yes"}"#, 400, "must be true or false"),
            (.POST, "/v1/db/default/execute", #"{"statements":["a","b","c","d","e","f"]}"#, 400, "exceed the limit of 5"),
            (.POST, "/v1/db/default/execute", #"{"statements":["SELECT '"# + String(repeating: "x", count: 3000) + #"'"]}"#, 413, "exceeds the limit"),
            (.POST, "/v1/db/default/query", #"{"statements":["SELECT 1"],"consistency":"eventual"}"#, 400, "unknown consistency"),
            (.POST, "/v1/db/default/query", #"{"statements":["SELECT 1"],"consistency":"stale","freshness_ms":-5}"#, 400, "freshness_ms"),
            (.POST, "/v1/db/nosuch/execute", #"{"statements":["SELECT 1"]}"#, 404, "no database named"),
            (.POST, "/v1/databases", #"{"name":"9bad name"}"#, 400, "must start with a letter"),
            (.POST, "/v1/users", #"{"username":"bob","password":"short"}"#, 400, "at least 8"),
            (.POST, "/v1/users/bob/grants", #"{"permission":"read"}"#, 404, "no user named"),
            (.POST, "/v1/users/admin/grants", #"{"permission":"fly"}"#, 400, "unknown permission"),
            (.DELETE, "/v1/databases/default", nil, 400, "cannot be dropped"),
            (.POST, "/v1/auth/token", #"{"username":"admin"}"#, 400, "username"),
        ]
        for (method, path, body, status, fragment) in cases {
            let r = try await n.raw(method, path, body)
            #expect(r.status == status, "\(method) \(path) \(body?.prefix(60) ?? ""): \(r.status) \(r.text)")
            #expect(r.text.contains(fragment), "\(method) \(path): \(r.text)")
            #expect(r.text.hasPrefix("{\"error\":") || status == 413, "errors are JSON: \(r.text)")
        }
        // SQL errors are per statement; refused statements say why.
        let sql = try await n.execute(["INSERT INTO nosuch VALUES(1)", "PRAGMA journal_mode=DELETE", "ATTACH 'x.db' AS x"])
        let results = sql.json["results"] as? [Object] ?? []
        #expect(results.map { $0["error"] as? String ?? "" } == ["no such table: nosuch",
                                                               "PRAGMA journal_mode is not allowed: it could change durability or make replicas diverge",
                                                               "ATTACH and DETACH are not allowed: a statement may only use its own database"], "\(sql.text)")
        // A statement whose conflict resolution rolls back the whole transaction fails alone; it used to
        // stop every replica.
        let rollback = try await n.execute(["INSERT INTO k VALUES(2, 'two')", "INSERT OR ROLLBACK INTO k VALUES(1, 'dup')", "INSERT INTO k VALUES(3, 'three')"])
        let rolled = rollback.json["results"] as? [Object] ?? []
        #expect(rollback.status == 200 && rolled.map { $0["error"] as? String } == [nil, "UNIQUE constraint failed: k.id", nil], "\(rollback.text)")
        #expect(try await n.execute(["INSERT INTO k VALUES(4, 'after')"]).status == 200)
        #expect(try await n.rows("SELECT v FROM k ORDER BY id").map { $0.first as? String } == ["kept", "two", "three", "after"])
        #expect(n.isRunning)
    }

    @Test("databases: created on the least-loaded nodes, each its own Raft group, listed, and dropped with their files")
    func databases() async throws {
        let c = try await ProcessCluster.founded("dbs", count: 3)
        defer { c.destroy() }
        let n = c.nodes[1]
        let created = try await n.post("/v1/databases", ["name": "sales"])
        #expect(created.status == 201, "\(created.text)")
        let group = created.json["group"] as? Int ?? 0
        #expect(group > 1)
        #expect(try await n.post("/v1/databases", ["name": "sales"]).status == 409)
        #expect(try await n.post("/v1/db/sales/execute", ["statements": ["CREATE TABLE s(x)", "INSERT INTO s VALUES(42)"]]).status == 200)
        for node in c.nodes {
            let r = try await node.post("/v1/db/sales/query", ["statements": ["SELECT x FROM s"]])
            #expect(r.text.contains("[[42]]"), "\(node.name): \(r.text)")
        }
        let listed = try await n.get("/v1/databases")
        #expect(listed.text.contains(#""name":"sales""#) && listed.text.contains(#""name":"default""#))
        let dropped = try await TestHTTP.request(.DELETE, c.nodes[2].url + "/v1/databases/sales")
        #expect(dropped.status == 200, "\(dropped.text)")
        // Refused at once through every node, whatever its copy of the catalog says: the drop is an
        // entry in the database's own log, ordered before these.
        for node in c.nodes {
            let write = try await node.post("/v1/db/sales/execute", ["statements": ["INSERT INTO s VALUES(43)"]])
            #expect(write.status == 404, "a write through \(node.name) after the drop: \(write.status) \(write.text)")
            let read = try await node.post("/v1/db/sales/query", ["statements": ["SELECT x FROM s"]])
            #expect(read.status == 404, "a read through \(node.name) after the drop: \(read.status) \(read.text)")
        }
        let deadline = Date().addingTimeInterval(15)
        var files: [String] = []
        repeat {
            try await Task.sleep(for: .milliseconds(200))
            files = c.nodes.flatMap { node in
                ((try? FileManager.default.contentsOfDirectory(atPath: node.dataDir)) ?? []).filter { $0.hasPrefix("group-\(group).") }
            }
        } while !files.isEmpty && Date() < deadline
        #expect(files.isEmpty, "every node deletes its copy of a dropped database: \(files)")
        // A new database never reuses a dropped one's group.
        let again = try await n.post("/v1/databases", ["name": "sales"])
        #expect((again.json["group"] as? Int ?? 0) > group)
    }

    @Test("the status pages answer 200 while databases are created and dropped: a group gone between listing and reading it is left out, not a 503")
    func statusPagesDuringChurn() async throws {
        let c = try await ProcessCluster.single("churn")
        defer { c.destroy() }
        let n = c.nodes[0]
        // Polls until the churn is over; counts its answers.
        let answers = try await withThrowingTaskGroup(of: Int.self) { group in
            group.addTask {
                for i in 0..<8 {
                    let created = try await n.post("/v1/databases", ["name": "churn\(i)"])
                    #expect(created.status == 201, "\(created.text)")
                    let dropped = try await TestHTTP.request(.DELETE, n.url + "/v1/databases/churn\(i)")
                    #expect(dropped.status == 200, "\(dropped.text)")
                }
                return 0
            }
            group.addTask {
                var answers = 0
                while !Task.isCancelled {
                    for path in ["/v1/cluster?detail=true", "/v1/status", "/v1/cluster"] {
                        guard let r = try? await n.get(path) else { break }
                        if Task.isCancelled { break }
                        #expect(r.status == 200, "GET \(path) during churn: \(r.status) \(r.text)")
                        answers += 1
                    }
                }
                return answers
            }
            _ = try await group.next()
            group.cancelAll()
            return try await group.reduce(0, +)
        }
        #expect(answers > 8)
    }

    @Test("a change made through one node holds at once through every other: databases, users, grants, passwords, tokens")
    func changesSeenEverywhereAtOnce() async throws {
        let c = try await ProcessCluster.founded("everywhere", count: 3)
        defer { c.destroy() }
        let (a, b, d) = (c.nodes[0], c.nodes[1], c.nodes[2])
        // Each database is created through one node and used at once through the others, with no
        // pause: a node that has not yet read the change used to answer 404 or "no such table".
        for (k, creator) in c.nodes.enumerated() {
            let name = "db\(k)"
            let created = try await creator.post("/v1/databases", ["name": name])
            #expect(created.status == 201, "\(created.text)")
            let writer = c.nodes[(k + 1) % 3], reader = c.nodes[(k + 2) % 3]
            let wrote = try await writer.execute(["CREATE TABLE s(x)", "INSERT INTO s VALUES(\(k))"], db: name)
            #expect(wrote.status == 200 && !wrote.text.contains("error"), "\(name) through \(writer.name): \(wrote.text)")
            let read = try await reader.query("SELECT x FROM s", db: name)
            #expect(read.text.contains("[[\(k)]]"), "\(name) through \(reader.name): \(read.text)")
        }
        // Listings too: a drop through one node is gone from another's list at once.
        #expect(try await a.raw(.DELETE, "/v1/databases/db2").status == 200)
        let listed = try await b.get("/v1/databases").text
        #expect(listed.contains(#""name":"db0""#) && listed.contains(#""name":"db1""#) && !listed.contains(#""name":"db2""#), "\(listed)")
        // A user created through one node is listed by a second, granted through it, and signs in through a third.
        #expect(try await a.post("/v1/users", ["username": "carol", "password": "carol-password-1"]).status == 201)
        let users = try await b.get("/v1/users").text
        #expect(users.contains(#""username":"carol""#), "\(users)")
        let granted = try await b.post("/v1/users/carol/grants", ["permission": "read", "database": "db0"])
        #expect(granted.status == 200, "\(granted.text)")
        let carol = try await d.raw(.POST, "/v1/db/db0/query", #"{"statements":["SELECT x FROM s"]}"#, authorization: basic("carol", "carol-password-1"))
        #expect(carol.status == 200 && carol.text.contains("[[0]]"), "\(carol.status) \(carol.text)")
        // A new password works at once elsewhere, and so does a token issued under it.
        let changed = try await d.raw(.PUT, "/v1/users/carol/password", #"{"password":"carol-password-2"}"#, authorization: basic("carol", "carol-password-1"))
        #expect(changed.status == 200, "\(changed.text)")
        let issued = try await TestHTTP.request(.POST, a.url + "/v1/auth/token", ["username": "carol", "password": "carol-password-2"], authorization: nil)
        #expect(issued.status == 200, "\(issued.text)")
        let bearer = "Bearer " + (issued.json["token"] as? String ?? "")
        let withToken = try await b.raw(.POST, "/v1/db/db0/query", #"{"statements":["SELECT x FROM s"]}"#, authorization: bearer)
        #expect(withToken.status == 200, "\(withToken.text)")
        // Unknown names are still refused, after the node has checked with the cluster.
        #expect(try await a.query("SELECT 1", db: "nosuch").status == 404)
        #expect(try await b.post("/v1/users/nobody/grants", ["permission": "read", "database": "db0"]).status == 404)
        // The same name created through two nodes at once: one wins, the other hears it exists.
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for node in [a, b] { group.addTask { try await node.post("/v1/databases", ["name": "twice"]).status } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses.sorted() == [201, 409], "\(statuses)")
    }

    @Test("CORS is off by default and answers only configured origins")
    func cors() async throws {
        let c = try await ProcessCluster.single("cors", extraArgs: ["--cors-origins", "https://app.example"])
        defer { c.destroy() }
        let n = c.nodes[0]
        var r = HTTPClientRequestBuilder(url: n.url + "/v1/health", origin: "https://app.example")
        let allowed = try await r.send()
        #expect(allowed.header("access-control-allow-origin") == "https://app.example")
        r = HTTPClientRequestBuilder(url: n.url + "/v1/health", origin: "https://evil.example")
        #expect(try await r.send().header("access-control-allow-origin") == nil)
        let plain = try await ProcessCluster.single("nocors")
        defer { plain.destroy() }
        r = HTTPClientRequestBuilder(url: plain.nodes[0].url + "/v1/health", origin: "https://app.example")
        #expect(try await r.send().header("access-control-allow-origin") == nil)
    }
}
}
