import CairnTestSupport
import Foundation
import NIOHTTP1
import Testing

/// Seed 000's auth server and key endpoint (`--compat key-endpoint`) on a 3-node cluster with auth on:
/// its token scheme on CairnDB's users, its answers word for word, and the original client's put and
/// get of a file round-tripping byte for byte.
extension ProcessTests {
    @Test func keyEndpointSpeaksSeed000() async throws {
        let ports = (0..<3).map { _ in freePort() }
        let c = try await ProcessCluster.founded("key-endpoint", count: 3) { i in
            ["--name", "node\(i)", "--compat", "key-endpoint=127.0.0.1:\(ports[i])"]
        }
        defer { c.destroy() }
        let ep = "http://127.0.0.1:\(ports[0])", other = "http://127.0.0.1:\(ports[1])"
        func basic(_ user: String, _ password: String) -> String { "Basic " + Data("\(user):\(password)".utf8).base64EncodedString() }

        // The auth server: HTTP Basic against CairnDB's users.
        let noAuth = try await TestHTTP.request(.POST, ep + "/token", authorization: nil)
        #expect(noAuth.status == 401 && noAuth.json["message"] as? String == "Could not verify", "\(noAuth.text)")
        let wrong = try await TestHTTP.request(.POST, ep + "/token", authorization: basic("admin", "not-the-password"))
        #expect(wrong.status == 200 && wrong.json["message"] as? String == "Token not granted" && wrong.json["token"] == nil, "\(wrong.text)")
        let granted = try await TestHTTP.request(.POST, ep + "/token", authorization: basic("admin", TestHTTP.adminPassword))
        #expect(granted.json["message"] as? String == "Token created, admin access granted" && granted.json["username"] as? String == "admin")
        let token = try #require(granted.json["token"] as? String, "\(granted.text)")

        // A user who may only read gets no token here, and its CairnDB token may not write.
        let reader = try await c.nodes[0].post("/v1/users", ["username": "reader", "password": "reader-password",
                                                             "grants": [["permission": "read", "database": "kv"]]])
        #expect(reader.status == 201, "\(reader.text)")
        let refused = try await TestHTTP.request(.POST, ep + "/token", authorization: basic("reader", "reader-password"))
        #expect(refused.json["message"] as? String == "Token not granted", "\(refused.text)")
        let readerToken = try #require(try await TestHTTP.request(.POST, c.nodes[0].url + "/v1/auth/token",
                                                                   ["username": "reader", "password": "reader-password"], authorization: nil).json["token"] as? String)

        // The original client's put of a file: its text as {"value": ...}, the token in a `token` header.
        var file = "line one\nüñíçødé ✓ \"quoted\" \\ back\\slash\t\r\n"
        while file.utf8.count < 1 << 20 { file += "0123456789abcdef" }
        let put = try await TestHTTP.request(.POST, ep + "/key/report.txt", ["value": file], authorization: nil, headers: [("token", token)])
        #expect(put.status == 200, "\(put.text)")
        let lines = (try? JSONSerialization.jsonObject(with: Data(put.text.utf8))) as? [[String: String]]
        #expect(lines?.count == 3 && lines?.allSatisfy { $0["message"]?.hasPrefix("Replication successful at node") == true } == true, "\(put.text)")
        let got = try await TestHTTP.request(.GET, other + "/key/report.txt", authorization: nil, headers: [("token", token)])
        #expect(got.status == 200)
        let rows = (try? JSONSerialization.jsonObject(with: Data(got.text.utf8))) as? [[String]]
        #expect(rows?.first?.first == file, "the file came back changed")

        #expect(try await TestHTTP.request(.POST, ep + "/key/k", ["value": "v"], authorization: nil).status == 401)
        let bad = try await TestHTTP.request(.POST, ep + "/key/k", ["value": "v"], authorization: nil, headers: [("token", "garbage")])
        #expect(bad.status == 401 && bad.json["error"] as? String == "Invalid or Expired token", "\(bad.text)")
        let notAdmin = try await TestHTTP.request(.POST, ep + "/key/k", ["value": "v"], authorization: nil, headers: [("token", readerToken)])
        #expect(notAdmin.status == 402 && notAdmin.json["error"] as? String == "Admin access required", "\(notAdmin.text)")
        // Reads need a token here: no --compat-user stands in for a client without one.
        #expect(try await TestHTTP.request(.GET, ep + "/key/report.txt", authorization: nil).status == 401)
        let readerGet = try await TestHTTP.request(.GET, ep + "/key/report.txt", authorization: nil, headers: [("token", readerToken)])
        #expect(readerGet.status == 200)
        let missing = try await TestHTTP.request(.GET, ep + "/key/nothing-here", authorization: nil, headers: [("token", token)])
        #expect(missing.status == 404 && missing.json["error"] as? String == "No updated data found", "\(missing.text)")
        let noValue = try await TestHTTP.request(.POST, ep + "/key/k", ["other": 1], authorization: nil, headers: [("token", token)])
        #expect(noValue.status == 400, "\(noValue.text)")

        // The server lists are the cluster's nodes.
        #expect(try await TestHTTP.request(.GET, ep + "/heartbeat", authorization: nil).json["alive"] as? Bool == true)
        #expect(try await TestHTTP.request(.GET, ep + "/heartbeat/", authorization: nil).json["alive"] as? Bool == true)
        // They say who the members are: only to a user who may see the cluster's status.
        #expect(try await TestHTTP.request(.POST, ep + "/slaves", ["slaves": [c.nodes[1].http]], authorization: nil).status == 401)
        let listed = try await TestHTTP.request(.POST, ep + "/slaves", ["slaves": [c.nodes[1].http, "node2"]], authorization: nil, headers: [("token", token)])
        #expect(listed.status == 200 && listed.json["alive"] as? Bool == true, "\(listed.text)")
        let stranger = try await TestHTTP.request(.POST, ep + "/masters", ["masters": ["192.0.2.1:5000"]], authorization: nil, headers: [("token", token)])
        #expect(stranger.status == 400, "\(stranger.text)")

        // The values live in a hash-sharded table of the `kv` database, readable through CairnDB's API.
        let native = try await c.nodes[2].post("/v1/db/kv/query", ["statements": ["SELECT length(value) FROM kv WHERE key = 'report.txt'"]])
        #expect(native.text.contains("[[\(file.unicodeScalars.count)]]"), "\(native.text)")
    }
}

extension ProcessTests {
    /// Seed 001's use (store objects spread over the nodes, fetch them back) through `cairn kv`: a file
    /// larger than a request streams in chunks and comes back byte for byte, through the CLI and through
    /// seed 000's `GET /key`; a binary one too; small values, listing and deleting.
    @Test func kvFilesOfAnySize() async throws {
        let port = freePort()
        let c = try await ProcessCluster.founded("kv", count: 3) { i in i == 0 ? ["--compat", "key-endpoint=127.0.0.1:\(port)"] : [] }
        defer { c.destroy() }
        let environment = c.cliEnvironment
        let host = ["--host", c.nodes[1].url]

        // 9 MiB of text with multi-byte characters (cut across chunk ends), and 5 MiB of every byte value.
        var text = ""
        var k = 0
        while text.utf8.count < 9 << 20 { text += "line \(k): é✓ \"q\" \\ \t\n"; k += 1 }
        let textPath = c.root + "/big.txt", binPath = c.root + "/big.bin"
        try Data(text.utf8).write(to: URL(fileURLWithPath: textPath))
        let binary = Data((0..<(5 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) })
        try binary.write(to: URL(fileURLWithPath: binPath))

        for (key, path, data) in [("docs/big.txt", textPath, Data(text.utf8)), ("blobs/big.bin", binPath, binary)] {
            let (put, putOut) = try await runCairn(["kv", "put", key, path] + host, environment: environment)
            #expect(put == 0, "\(putOut)")
            let back = c.root + "/back-" + key.replacingOccurrences(of: "/", with: "_")
            let (get, getOut) = try await runCairn(["kv", "get", key, "-o", back] + host, environment: environment)
            #expect(get == 0, "\(getOut)")
            #expect(FileManager.default.contents(atPath: back) == data, "\(key) came back changed")
        }
        // Seed 000's endpoint streams the large text value as [["..."]].
        let token = try #require(try await TestHTTP.request(.POST, "http://127.0.0.1:\(port)/token",
                                                            authorization: "Basic " + Data("admin:\(TestHTTP.adminPassword)".utf8).base64EncodedString()).json["token"] as? String)
        let streamed = try await TestHTTP.request(.GET, "http://127.0.0.1:\(port)/key/docs%2Fbig.txt", authorization: nil, headers: [("token", token)])
        let rows = (try? JSONSerialization.jsonObject(with: Data(streamed.text.utf8))) as? [[String]]
        #expect(rows?.first?.first == text, "GET /key streamed a different text (\(streamed.status), \(streamed.text.utf8.count) bytes)")

        // A new value replaces the chunks; small values are stored as themselves.
        #expect(try await runCairn(["kv", "put", "docs/big.txt", "--value", "small now"] + host, environment: environment).0 == 0)
        #expect(try await runCairn(["kv", "get", "docs/big.txt"] + host, environment: environment).1 == "small now")
        let stdin = try await runCairn(["kv", "put", "notes/from-stdin"] + host, environment: environment, input: "piped\nin")
        #expect(stdin.0 == 0, "\(stdin.1)")
        #expect(try await runCairn(["kv", "get", "notes/from-stdin"] + host, environment: environment).1 == "piped\nin")
        let chunksLeft = try await c.nodes[0].post("/v1/db/kv/query", ["statements": ["SELECT count(*) FROM kv_chunks WHERE key = 'docs/big.txt'"]])
        #expect(chunksLeft.text.contains("[[0]]"), "\(chunksLeft.text)")
        let (_, listed) = try await runCairn(["kv", "list"] + host, environment: environment)
        #expect(listed.contains("blobs/big.bin\t2 chunks") && listed.contains("docs/big.txt\t9 bytes") && listed.contains("notes/from-stdin"), "\(listed)")
        let (_, prefixed) = try await runCairn(["kv", "list", "--prefix", "notes/"] + host, environment: environment)
        #expect(prefixed == "notes/from-stdin\t8 bytes", "\(prefixed)")
        #expect(try await runCairn(["kv", "delete", "blobs/big.bin"] + host, environment: environment).0 == 0)
        let (missing, missingOut) = try await runCairn(["kv", "get", "blobs/big.bin"] + host, environment: environment)
        #expect(missing != 0 && missingOut.contains("no key"), "\(missingOut)")
        let gone = try await c.nodes[0].post("/v1/db/kv/query", ["statements": ["SELECT count(*) FROM kv_chunks"]])
        #expect(gone.text.contains("[[0]]"), "\(gone.text)")
    }
}
