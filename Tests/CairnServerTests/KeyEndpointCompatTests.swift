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
        let listed = try await TestHTTP.request(.POST, ep + "/slaves", ["slaves": [c.nodes[1].http, "node2"]], authorization: nil)
        #expect(listed.status == 200 && listed.json["alive"] as? Bool == true, "\(listed.text)")
        let stranger = try await TestHTTP.request(.POST, ep + "/masters", ["masters": ["192.0.2.1:5000"]], authorization: nil)
        #expect(stranger.status == 400, "\(stranger.text)")

        // The values live in a hash-sharded table of the `kv` database, readable through CairnDB's API.
        let native = try await c.nodes[2].post("/v1/db/kv/query", ["statements": ["SELECT length(value) FROM kv WHERE key = 'report.txt'"]])
        #expect(native.text.contains("[[\(file.unicodeScalars.count)]]"), "\(native.text)")
    }
}
