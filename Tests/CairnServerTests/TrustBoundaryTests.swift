import AsyncHTTPClient
import CairnTestSupport
import Foundation
import NIOCore
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension ProcessTests {
@Suite("The trust boundary on real nodes", .serialized)
struct TrustBoundaryTests {
    /// Every path under `root` whose mode lets the group or others in.
    private static func loose(_ root: String) -> [String] {
        var out: [String] = []
        var st = stat()
        if stat(root, &st) == 0, st.st_mode & 0o077 != 0 { out.append(root) }
        for relative in (FileManager.default.enumerator(atPath: root)?.allObjects as? [String]) ?? [] {
            let full = root + "/" + relative
            if lstat(full, &st) == 0, (st.st_mode & S_IFMT) != S_IFLNK, st.st_mode & 0o077 != 0 { out.append(full) }
        }
        return out
    }

    @Test("the data directory is 0700 and everything in it 0600 (log, databases, snapshots, audit log, identity); looser modes are tightened at start, with a log line")
    func fileModes() async throws {
        let c = try await ProcessCluster.single("modes")
        defer { c.destroy() }
        let n = c.nodes[0]
        _ = try await n.execute(["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"])
        try await Task.sleep(for: .milliseconds(300))  // the audit log is written every 100 ms
        #expect(FileManager.default.fileExists(atPath: n.dataDir + "/audit.log"))
        #expect(Self.loose(n.dataDir).isEmpty, "\(Self.loose(n.dataDir))")
        await n.terminate()
        chmod(n.dataDir, 0o755)
        chmod(n.dataDir + "/node-id", 0o644)
        chmod(n.dataDir + "/audit.log", 0o666)
        #expect(Self.loose(n.dataDir).count == 3)
        try n.start()
        try await c.waitReady()
        #expect(Self.loose(n.dataDir).isEmpty, "\(Self.loose(n.dataDir))")
        #expect(n.log.contains("3 files and directories were readable by other users"), "\(n.log.suffix(1500))")
    }

    @Test("a failed login takes as long whether or not the user exists")
    func loginTiming() async throws {
        let c = try await ProcessCluster.single("logintime")
        defer { c.destroy() }
        let n = c.nodes[0]
        let created = try await n.post("/v1/users", ["username": "real", "password": "real-password-1"])
        #expect(created.status == 201, "\(created.text)")
        func failedLogin(_ user: String) async throws -> Double {
            let started = Date()
            let r = try await TestHTTP.request(.POST, n.url + "/v1/auth/token", ["username": user, "password": "wrong-password"], authorization: nil)
            #expect(r.status == 401, "\(r.status) \(r.text)")
            return Date().timeIntervalSince(started)
        }
        var known: [Double] = [], unknown: [Double] = []
        for k in 0..<3 {
            known.append(try await failedLogin("real"))
            unknown.append(try await failedLogin("nobody-\(k)"))
        }
        let median = { (xs: [Double]) in xs.sorted()[xs.count / 2] }
        print("login: a wrong password takes \(Int(median(known) * 1000)) ms, an unknown user \(Int(median(unknown) * 1000)) ms (medians of 3)")
        #expect(median(unknown) >= 0.5 * median(known), "unknown \(unknown), known \(known)")
    }

    @Test("rqlite's write queue is bounded: when nothing can be applied, a flood gets 503 instead of the node's memory")
    func boundedQueue() async throws {
        let c = try await ProcessCluster.founded("queue", count: 3)
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE q(x)"])
        let n = c.nodes[0]
        for other in c.nodes.dropFirst() { await other.kill9() }
        let body = "[" + Array(repeating: #""INSERT INTO q VALUES (1)""#, count: 10_000).joined(separator: ",") + "]"
        var statuses: [Int] = []
        for _ in 0..<6 {
            statuses.append(try await n.raw(.POST, "/db/execute?queue", body, contentType: "application/json").status)
        }
        #expect(statuses == [200, 200, 200, 200, 200, 503], "\(statuses)")
    }

    @Test("rqlite's queued writes apply at most once: a flush whose outcome is unknown (the leader cut off past the request timeout, healed before an election) is not proposed again")
    func queueAtMostOnce() async throws {
        // Requests give up after 300 ms; elections take 3 s or more.
        let c = try await ProcessCluster.founded("queueonce", count: 3, extraArgs: ["--request-timeout-ms", "300", "--election-ticks", "60"])
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE q(x)"])
        let leader = try await c.leader(of: 1)
        try await c.cutOff(leader)
        let queued = try await leader.raw(.POST, "/db/execute?queue", #"["INSERT INTO q VALUES ('once')"]"#, contentType: "application/json")
        #expect(queued.status == 200, "\(queued.text)")
        try await Task.sleep(for: .milliseconds(1_500))
        try await c.heal()
        // The first proposal commits once the leader is heard again; nothing else may follow it.
        var count = 0
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            count = try await leader.rows("SELECT count(*) FROM q").first?.first as? Int ?? 0
            if count > 0 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        try await Task.sleep(for: .milliseconds(1_000))
        count = try await leader.rows("SELECT count(*) FROM q").first?.first as? Int ?? 0
        #expect(count == 1, "the queued write was applied \(count) times")
        #expect(leader.log.contains("outcome is unknown"), "\(leader.log.suffix(2000))")
    }

    @Test("rqlite's queue through a follower: batches larger than one request may be (30,000 statements) reach the leader whole, as the entry itself, and every queued write is applied once")
    func queueThroughFollower() async throws {
        let c = try await ProcessCluster.founded("queuefollower", count: 3)
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE q(x)"])
        let leader = try await c.leader(of: 1)
        let follower = c.nodes.first { $0 !== leader }!
        let body = "[" + Array(repeating: #""INSERT INTO q VALUES (1.0)""#, count: 10_000).joined(separator: ",") + "]"
        for k in 0..<3 {
            let r = try await follower.raw(.POST, "/db/execute?queue" + (k == 2 ? "&wait" : ""), body, contentType: "application/json")
            #expect(r.status == 200, "\(r.status) \(r.text.prefix(300))")
        }
        let rows = try await leader.rows("SELECT count(*), typeof(min(x)) FROM q")
        #expect(rows.first?.first as? Int == 30_000, "\(rows)")
        // The values arrive as sent (through rqlite's JSON, 1.0 became the integer 1).
        #expect(rows.first?.last as? String == "real", "\(rows)")
    }

    @Test("a join never takes over a member: another node's id with other addresses, or with its own addresses and another key, is refused (409) before any certificate is issued, and the member keeps its addresses")
    func joinCannotTakeOverAMember() async throws {
        let c = try await ProcessCluster.single("takeover")
        defer { c.destroy() }
        let n = c.nodes[0]
        let body = #"{"id":\#(n.id),"raft_address":"127.0.0.1:1","http_address":"127.0.0.1:2","voter":true,"public_key":null}"#
        let r = try await n.raw(.POST, "/v1/cluster/join", body, contentType: "application/json")
        #expect(r.status == 409 && r.text.contains("cannot join under the id of another"), "\(r.status) \(r.text)")
        // Its own addresses (public) and a key of the caller's: no certificate for another's id either.
        let pem = try await runProgramOutput("/bin/sh", ["-c", "openssl ecparam -name prime256v1 -genkey -noout | openssl ec -pubout 2>/dev/null"])
        #expect(pem.hasPrefix("-----BEGIN PUBLIC KEY-----"), "\(pem)")
        let key = pem.replacingOccurrences(of: "\n", with: "\\n")
        let own = #"{"id":\#(n.id),"raft_address":"127.0.0.1:\#(n.raftPort)","http_address":"\#(n.http)","voter":true,"public_key":"\#(key)"}"#
        let r2 = try await n.raw(.POST, "/v1/cluster/join", own, contentType: "application/json")
        #expect(r2.status == 409 && !r2.text.contains("BEGIN CERTIFICATE"), "\(r2.status) \(r2.text)")
        // Not a key at all: 400, saying so.
        let garbage = own.replacingOccurrences(of: key, with: "not a key")
        let r3 = try await n.raw(.POST, "/v1/cluster/join", garbage, contentType: "application/json")
        #expect(r3.status == 400 && r3.text.contains("P-256"), "\(r3.status) \(r3.text)")
        let nodes = try await n.get("/v1/cluster").json["nodes"] as? [[String: Any]] ?? []
        #expect(nodes.count == 1 && nodes.first?["http_addr"] as? String == n.http, "\(nodes)")
        #expect(try await n.execute(["CREATE TABLE t(x)"]).status == 200)
    }

    @Test("rotating the token-signing key revokes every token at once, users' and nodes'; new logins work and forwarding between nodes goes on with new node tokens")
    func rotateKeys() async throws {
        let c = try await ProcessCluster.founded("rotate", count: 3)
        defer { c.destroy() }
        let login = try await c.nodes[0].post("/v1/auth/token", ["username": "admin", "password": TestHTTP.adminPassword])
        let token = try #require(login.json["token"] as? String, "\(login.text)")
        for n in c.nodes { #expect(try await n.raw(.GET, "/v1/status", authorization: "Bearer " + token).status == 200) }
        _ = try await c.write(["CREATE TABLE t(x)"])
        let r = try await c.nodes[1].raw(.POST, "/v1/cluster/rotate-keys")
        #expect(r.status == 200, "\(r.text)")
        // Every node learns the new key from the catalog within moments.
        let deadline = Date().addingTimeInterval(5)
        var refused: [Int] = []
        repeat {
            refused = []
            for n in c.nodes { refused.append(try await n.raw(.GET, "/v1/status", authorization: "Bearer " + token).status) }
            if refused.allSatisfy({ $0 == 401 }) { break }
            try await Task.sleep(for: .milliseconds(100))
        } while Date() < deadline
        #expect(refused == [401, 401, 401], "the old token still works somewhere: \(refused)")
        let again = try await c.nodes[2].post("/v1/auth/token", ["username": "admin", "password": TestHTTP.adminPassword])
        let fresh = try #require(again.json["token"] as? String, "\(again.text)")
        for n in c.nodes { #expect(try await n.raw(.GET, "/v1/status", authorization: "Bearer " + fresh).status == 200) }
        // Writes sent to every node, followers forwarding with node tokens signed by the new key.
        for (i, n) in c.nodes.enumerated() {
            let w = try await n.execute(["INSERT INTO t VALUES (\(i))"])
            #expect(w.status == 200, "\(n.name): \(w.text)")
        }
    }

    @Test("a forwarding count outside 0...3 is refused (a negative one would lift the bound on forwarding loops)")
    func hopCounts() async throws {
        let c = try await ProcessCluster.single("hops")
        defer { c.destroy() }
        let n = c.nodes[0]
        for value in ["-5", "4", "x", "99999999999999999999"] {
            var r = HTTPClientRequest(url: n.url + "/v1/db/default/query")
            r.method = .POST
            r.headers.add(name: "Authorization", value: TestHTTP.admin)
            r.headers.add(name: "X-Cairn-Hops", value: value)
            r.body = .bytes(ByteBuffer(string: #"{"statements":["SELECT 1"]}"#))
            let response = try await TestHTTP.client.execute(r, timeout: .seconds(10))
            let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
            #expect(response.status.code == 400 && body.contains("from 0 to 3"), "\(value): \(response.status) \(body)")
            let rq = try await TestHTTP.request(.GET, n.url + "/db/query?q=SELECT+1", authorization: TestHTTP.admin)
            #expect(rq.status == 200)
        }
    }

    @Test("joining takes a user holding all or a single-use join token: a user holding join cannot; a token minted with the CLI admits one node, which may retry, and no other; an expired token admits none")
    func joinTokens() async throws {
        let c = try await ProcessCluster.single("jointoken")
        defer { c.destroy() }
        let first = c.nodes[0]
        #expect(try await first.post("/v1/users", ["username": "joiner", "password": "joiner-password",
                                                   "grants": [["permission": "join"]]]).status == 201)
        let joiner = "Basic " + Data("joiner:joiner-password".utf8).base64EncodedString()
        func join(_ id: Int, port: Int, token: String? = nil, authorization: String? = nil) async throws -> HTTPResult {
            var body = #"{"id":\#(id),"raft_address":"127.0.0.1:\#(port)","http_address":"127.0.0.1:\#(port + 1)","voter":true"#
            if let token { body += #","join_token":"\#(token)""# }
            return try await first.raw(.POST, "/v1/cluster/join", body + "}", contentType: "application/json", authorization: authorization)
        }
        // The join permission alone, or nothing at all, admits no one.
        let byJoiner = try await join(71, port: 20_001, authorization: joiner)
        #expect(byJoiner.status == 403 && byJoiner.text.contains("join token"), "\(byJoiner.status) \(byJoiner.text)")
        #expect(try await join(71, port: 20_001).status == 401)
        #expect(try await join(71, port: 20_001, token: "cairn-join-made-up", authorization: joiner).status == 403)

        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_USER"] = "admin"
        environment["CAIRN_PASSWORD"] = TestHTTP.adminPassword
        let (status, out) = try await runCairn(["cluster", "join-token", "--host", first.url], environment: environment)
        #expect(status == 0, "\(out)")
        let token = try #require(out.split(separator: "\n").first { $0.hasPrefix("cairn-join-") }.map(String.init), "\(out)")

        // A node started with the token alone (no user, no password) joins and serves.
        let n2 = NodeProcess(name: "n2", root: c.root, extraArgs: [])
        n2.joinAs = nil
        n2.environment = ["CAIRN_JOIN_TOKEN": token]
        c.nodes.append(n2)
        try n2.start(["--join", first.http])
        try await c.waitReady([n2])
        #expect(try await c.write(["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"]).status == 200)
        #expect(try await n2.rows("SELECT x FROM t").count == 1)
        // The node it admitted may ask again (a join retried after a crash).
        let retry = try await first.raw(.POST, "/v1/cluster/join", #"{"id":\#(n2.id),"raft_address":"127.0.0.1:\#(n2.raftPort)","http_address":"\#(n2.http)","voter":true,"join_token":"\#(token)"}"#,
                                        contentType: "application/json", authorization: nil)
        #expect(retry.status == 200, "\(retry.status) \(retry.text)")
        // Spent: another node cannot use it, even with a user holding join, and nothing of it is registered.
        let again = try await join(72, port: 20_003, token: token, authorization: joiner)
        #expect(again.status == 403 && again.text.contains("another node"), "\(again.status) \(again.text)")
        let nodes = try await first.get("/v1/cluster").json["nodes"] as? [[String: Any]] ?? []
        #expect(Set(nodes.compactMap { $0["id"] as? Int }) == [Int(first.id), Int(n2.id)], "\(nodes)")
        // An expired token admits no one.
        let short = try await first.post("/v1/cluster/join-tokens", ["ttl_seconds": 1])
        let shortToken = try #require(short.json["token"] as? String, "\(short.text)")
        try await Task.sleep(for: .milliseconds(1_500))
        #expect(try await join(73, port: 20_005, token: shortToken).status == 403)
        // No endpoint gives out a secret, not even to the admin: hashes, keys, tokens.
        for path in ["/v1/status", "/v1/cluster", "/v1/users", "/v1/databases", "/v1/cluster/bootstrap", "/status", "/nodes",
                     "/db/backup?fmt=sql", "/metrics", "/v1/health", "/readyz"] {
            let r = try await first.get(path)
            for secret in ["scrypt$", "PRIVATE KEY", token, shortToken] {
                #expect(!r.text.contains(secret), "\(path) gives out \(secret)")
            }
        }
        // Minting needs all; the lifetime is bounded.
        #expect(try await first.raw(.POST, "/v1/cluster/join-tokens", "{}", contentType: "application/json", authorization: joiner).status == 403)
        #expect(try await first.post("/v1/cluster/join-tokens", ["ttl_seconds": 86_400 * 30]).status == 400)
    }

    @Test("HTTPS: with --http-tls-cert and --http-tls-key every node serves its API over TLS, founders meet, nodes join and forward over it; the CLI connects to https:// with --ca-cert; plain HTTP and an unknown CA are refused")
    func https() async throws {
        let certs = NSTemporaryDirectory() + "cairn-https-certs-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: certs) }
        try await makeTestCertificates(in: certs, ca: "httpca", nodes: ["api"])
        let args = ["--http-tls-cert", certs + "/api.pem", "--http-tls-key", certs + "/api.key", "--http-tls-ca", certs + "/httpca.pem"]
        let c = try await ProcessCluster.founded("https", count: 3, extraArgs: args)
        defer { c.destroy() }
        #expect(c.nodes.allSatisfy { $0.url.hasPrefix("https://") })
        #expect(try await c.write(["CREATE TABLE t(x)"]).status == 200)
        // Written through every node: followers forward to the leader over HTTPS.
        for (i, n) in c.nodes.enumerated() {
            let w = try await n.execute([["INSERT INTO t VALUES (?)", i]])
            #expect(w.status == 200, "\(n.name): \(w.text)")
        }
        let n4 = try await c.join(extraArgs: args)
        #expect(try await n4.rows("SELECT count(*) FROM t").first?.first as? Int == 3)
        // rqlite's redirect names the leader with the scheme it serves.
        let leader = try await c.leader(of: 1)
        let follower = c.nodes.first { $0 !== leader && $0 !== n4 }!
        let redirect = try await follower.raw(.POST, "/db/execute?redirect", #"["INSERT INTO t VALUES (9)"]"#, contentType: "application/json")
        #expect(redirect.status == 301 && redirect.header("location")?.hasPrefix("https://\(leader.http)/db/execute") == true, "\(redirect.headers)")
        // Plain HTTP gets no answer from an HTTPS port.
        await #expect(throws: (any Error).self) { _ = try await TestHTTP.request(.GET, "http://\(follower.http)/v1/ready") }

        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_USER"] = "admin"
        environment["CAIRN_PASSWORD"] = TestHTTP.adminPassword
        environment["CAIRN_HOME"] = c.root + "/home"
        let (status, out) = try await runCairn(["sql", "--host", follower.url, "--ca-cert", certs + "/httpca.pem", "--format", "csv",
                                                "-e", "SELECT count(*) FROM t"], environment: environment)
        #expect(status == 0 && out.contains("3"), "\(out)")
        // Without the CA, the CLI does not trust the server (and says why).
        let (refused, why) = try await runCairn(["sql", "--host", follower.url, "-e", "SELECT 1"], environment: environment)
        #expect(refused != 0 && why.lowercased().contains("certificate"), "\(refused): \(why)")
    }

    @Test("a member of a multi-node cluster restarted without its certificate refuses to start, saying why, and does not make a CA of its own; with the directory restored it rejoins")
    func resumedWithoutCertificate() async throws {
        let c = try await ProcessCluster.founded("nocert", count: 3)
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"])
        let n2 = c.nodes[1]
        await n2.terminate()
        let saved = c.root + "/n2-tls"
        try FileManager.default.moveItem(atPath: n2.dataDir + "/tls", toPath: saved)
        try n2.start()
        let status = await n2.waitForExit(seconds: 30)
        #expect(status != nil && status != 0, "n2 kept running without its certificate")
        #expect(n2.log.contains("has no certificate"), "\(n2.log.suffix(1500))")
        #expect(!FileManager.default.fileExists(atPath: n2.dataDir + "/tls/ca.key"), "n2 made a CA of its own")
        try? FileManager.default.removeItem(atPath: n2.dataDir + "/tls")
        try FileManager.default.moveItem(atPath: saved, toPath: n2.dataDir + "/tls")
        try n2.start()
        try await c.waitReady([n2])
        #expect(try await n2.rows("SELECT x FROM t").count == 1)
    }

    @Test("every client write is audited exactly once, by the node the client sent it to, whatever forwarding headers it sends and whichever node runs it; those headers give a client nothing")
    func auditedOnce() async throws {
        let c = try await ProcessCluster.founded("audit", count: 3)
        defer { c.destroy() }
        let first = c.nodes[0]
        #expect(try await first.post("/v1/users", ["username": "wanda", "password": "wanda-password",
                                                   "grants": [["permission": "write", "database": "*"], ["permission": "read", "database": "*"]]]).status == 201)
        #expect(try await first.post("/v1/users", ["username": "rita", "password": "rita-password",
                                                   "grants": [["permission": "read", "database": "default"]]]).status == 201)
        _ = try await c.write(["CREATE TABLE a(x TEXT)"])
        let wanda = "Basic " + Data("wanda:wanda-password".utf8).base64EncodedString()
        let rita = "Basic " + Data("rita:rita-password".utf8).base64EncodedString()
        let spoofs: [[(String, String)]] = [[], [("X-Cairn-Hops", "1")], [("X-Cairn-Hops", "3")],
                                            [("X-Cairn-Principal", "user:admin")], [("X-Cairn-Hops", "2"), ("X-Cairn-Principal", "anonymous")]]
        // marker -> the node the client sent it to
        var sent: [String: String] = [:]
        for n in c.nodes {
            for (i, headers) in spoofs.enumerated() {
                let tag = "\(n.name)-\(i)"
                let native = try await n.raw(.POST, "/v1/db/default/execute", #"{"statements":["INSERT INTO a VALUES ('native-\#(tag)')"]}"#,
                                             contentType: "application/json", authorization: wanda, headers: headers)
                let mixed = try await n.raw(.POST, "/v1/db/default/request", #"{"statements":["INSERT INTO a VALUES ('mixed-\#(tag)')"]}"#,
                                            contentType: "application/json", authorization: wanda, headers: headers)
                let rq = try await n.raw(.POST, "/db/execute", #"["INSERT INTO a VALUES ('rq-\#(tag)')"]"#,
                                         contentType: "application/json", authorization: wanda, headers: headers)
                let rqMixed = try await n.raw(.POST, "/db/request", #"["INSERT INTO a VALUES ('rqmixed-\#(tag)')"]"#,
                                              contentType: "application/json", authorization: wanda, headers: headers)
                let queued = try await n.raw(.POST, "/db/execute?queue&wait", #"["INSERT INTO a VALUES ('queued-\#(tag)')"]"#,
                                             contentType: "application/json", authorization: wanda, headers: headers)
                for (kind, r) in [("native", native), ("mixed", mixed), ("rq", rq), ("rqmixed", rqMixed), ("queued", queued)] {
                    #expect(r.status == 200 && !r.text.contains("error"), "\(kind) through \(n.name) with \(headers): \(r.status) \(r.text)")
                    sent["\(kind)-\(tag)"] = n.name
                }
                // A reader claiming to be forwarded for the admin is still the reader.
                let escalated = try await n.raw(.POST, "/v1/db/default/execute", #"{"statements":["INSERT INTO a VALUES ('rita-\#(tag)')"]}"#,
                                                contentType: "application/json", authorization: rita, headers: headers)
                #expect(escalated.status == 403, "\(n.name) with \(headers): \(escalated.status) \(escalated.text)")
            }
        }
        // A database dropped through each node in turn (mostly followers of its group).
        for (i, n) in c.nodes.enumerated() {
            #expect(try await n.post("/v1/databases", ["name": "gone\(i)"]).status == 201)
            let dropped = try await n.raw(.DELETE, "/v1/databases/gone\(i)", headers: [("X-Cairn-Hops", "1")])
            #expect(dropped.status == 200, "\(dropped.text)")
        }
        let rows = try await first.rows("SELECT count(*) FROM a")
        #expect((rows.first?.first as? Int) == spoofs.count * c.nodes.count * 5, "\(rows)")
        try await Task.sleep(for: .milliseconds(400))  // the audit log is written every 100 ms
        var lines: [(node: String, line: [String: Any])] = []
        for n in c.nodes {
            let text = (try? String(contentsOfFile: n.dataDir + "/audit.log", encoding: .utf8)) ?? ""
            for l in text.split(separator: "\n") {
                if let o = try JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any] { lines.append((n.name, o)) }
            }
        }
        for (marker, node) in sent.sorted(by: { $0.key < $1.key }) {
            let found = lines.filter { ($0.line["statement"] as? String)?.contains("'\(marker)'") == true }
            #expect(found.count == 1, "\(marker): \(found.count) audit lines (\(found.map(\.node)))")
            #expect(found.first?.node == node, "\(marker) was sent to \(node), audited by \(found.map(\.node))")
            #expect(found.first?.line["user"] as? String == "wanda", "\(marker): \(found.first?.line ?? [:])")
        }
        for (i, n) in c.nodes.enumerated() {
            let found = lines.filter { $0.line["action"] as? String == "drop database gone\(i)" }
            #expect(found.map(\.node) == [n.name], "drop of gone\(i) sent to \(n.name): audited by \(found.map(\.node))")
        }
    }

    @Test("a write in a mixed request is audited even when its outcome is unknown (the leader cut off past the request timeout)")
    func auditedWhenUnknown() async throws {
        let c = try await ProcessCluster.founded("auditunknown", count: 3, extraArgs: ["--request-timeout-ms", "300", "--election-ticks", "60"])
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE a(x TEXT)"])
        let leader = try await c.leader(of: 1)
        try await c.cutOff(leader)
        let native = try await leader.raw(.POST, "/v1/db/default/request", #"{"statements":["INSERT INTO a VALUES ('mixed-unknown')"]}"#,
                                          contentType: "application/json")
        let rq = try await leader.raw(.POST, "/db/request", #"["INSERT INTO a VALUES ('rqmixed-unknown')"]"#, contentType: "application/json")
        #expect(native.status == 503 && rq.status == 503, "\(native.status) \(native.text) \(rq.status) \(rq.text)")
        try await c.heal()
        try await Task.sleep(for: .milliseconds(400))
        let audit = (try? String(contentsOfFile: leader.dataDir + "/audit.log", encoding: .utf8)) ?? ""
        for marker in ["'mixed-unknown'", "'rqmixed-unknown'"] {
            #expect(audit.components(separatedBy: marker).count == 2, "\(marker) is not in the audit log once: \(audit.suffix(800))")
        }
    }

    @Test("CORS for any origin ('*') never allows the browser's credentials")
    func corsWildcard() async throws {
        let c = try await ProcessCluster.single("corsall", extraArgs: ["--cors-origins", "*"])
        defer { c.destroy() }
        let r = try await HTTPClientRequestBuilder(url: c.nodes[0].url + "/v1/health", origin: "https://evil.example").send()
        #expect(r.header("access-control-allow-origin") == "*")
        #expect(r.header("access-control-allow-credentials") == nil)
    }
}
}
