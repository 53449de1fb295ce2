import CairnTestSupport
import Foundation
import HTTPTypes
import NIOHTTP1
import Testing
@testable import CairnServer

/// A request no route takes: which paths are known with which methods (`RouteTable`), and the answer each
/// listener gives, in the shape its API's clients know.
@Suite struct RouteTableTests {
    static let table: RouteTable = {
        var t = RouteTable()
        t.add("/v1/db/{db}/execute", .post)
        t.add("/v1/db/{db}/backup", .get)
        t.add("/v1/users/{name}", .delete)
        t.add("/v1/users", .get)
        t.add("/v1/users", .post)
        t.add("/db/query", .get, family: .rqlite)
        t.add("/db/query", .post, family: .rqlite)
        t.add("/console/*", .get)
        t.add("/files/**", .get)
        return t
    }()

    @Test("a path is matched segment by segment, a parameter or * taking one, ** the rest; the methods of every match")
    func matching() {
        let t = Self.table
        #expect(t.allowed(at: "/v1/db/shop/execute").methods == [.post])
        #expect(t.allowed(at: "/v1/db/shop/execute/").methods == [.post], "the router ignores empty parts")
        #expect(t.allowed(at: "/v1/db/shop/execute/more").methods.isEmpty)
        #expect(t.allowed(at: "/v1/db//execute").methods.isEmpty, "an empty part is no parameter")
        #expect(t.allowed(at: "/v1/users").methods == [.get, .post])
        #expect(t.allowed(at: "/v1/users/ann").methods == [.delete])
        #expect(t.allowed(at: "/db/query").family == .rqlite)
        #expect(t.allowed(at: "/v1/users").family == .native)
        // The pattern as added, for a listener's wrong-method answer (rqlite's permissions, rest-db's handler).
        #expect(t.allowed(at: "/v1/db/shop/execute/").pattern == "/v1/db/{db}/execute")
        #expect(t.allowed(at: "/db/query").pattern == "/db/query")
        #expect(t.allowed(at: "/nowhere").pattern == nil)
        #expect(t.allowed(at: "/console/app.js").methods == [.get])
        #expect(t.allowed(at: "/console").methods.isEmpty)
        #expect(t.allowed(at: "/files/a/b/c").methods == [.get])
        #expect(t.allowed(at: "/files").methods.isEmpty)
        #expect(t.allowed(at: "/nowhere").methods.isEmpty && t.allowed(at: "/nowhere").family == nil)
        #expect(t.allowed(at: "/").methods.isEmpty)
    }
}

extension ProcessTests {
    /// Before, every listener answered both an unknown path and a known path asked with the wrong
    /// method with an empty 404: rqlite's clients expect a 405 for the second, CairnDB's own a message
    /// saying what is wrong, and the compatibility APIs their originals' pages.
    @Test func unmatchedRequestsAnsweredInEachAPIsShape() async throws {
        let ports = (0..<4).map { _ in freePort() }
        let apis = ["shard-lb", "key-endpoint", "rest-db", "master-api"]
        let c = try await ProcessCluster.single("unmatched", extraArgs: zip(apis, ports).flatMap { ["--compat", "\($0)=127.0.0.1:\($1)"] } + ["--compat-user", "admin"])
        defer { c.destroy() }
        let n = c.nodes[0]

        // CairnDB's own API: a message, and the methods that would do.
        let wrong = try await n.raw(.GET, "/v1/db/default/execute")
        #expect(wrong.status == 405 && wrong.header("allow") == "POST", "\(wrong.status) \(wrong.text)")
        #expect((wrong.json["error"] as? String)?.contains("use POST") == true, "\(wrong.text)")
        let users = try await n.raw(.PUT, "/v1/users", "{}")
        #expect(users.status == 405 && users.header("allow") == "GET, POST", "\(users.status) \(users.text)")
        let unknown = try await n.raw(.POST, "/v1/no/such/thing", "{}")
        #expect(unknown.status == 404 && (unknown.json["error"] as? String)?.contains("/v1/no/such/thing") == true, "\(unknown.status) \(unknown.text)")
        // What the router takes is unchanged.
        #expect(try await n.raw(.POST, "/v1/db/default/execute", #"{"statements":["SELECT 1"]}"#).status == 200)

        // rqlite's: credentials first (401), then 405 for a wrong method, empty bodies; 404 for an unknown
        // path, 200 for OPTIONS.
        let rqWrong = try await n.raw(.GET, "/db/execute")
        #expect(rqWrong.status == 405 && rqWrong.text.isEmpty, "\(rqWrong.status) \(rqWrong.text)")
        #expect(rqWrong.header("content-type") == "application/json; charset=utf-8")
        let rqNobody = try await n.raw(.GET, "/db/execute", authorization: nil)
        #expect(rqNobody.status == 401 && rqNobody.text.isEmpty, "\(rqNobody.status) \(rqNobody.text)")
        let rqUnknown = try await n.raw(.GET, "/db/nothing")
        #expect(rqUnknown.status == 404 && rqUnknown.text.isEmpty, "\(rqUnknown.status) \(rqUnknown.text)")
        #expect(try await n.raw(.OPTIONS, "/db/execute").status == 200)

        func call(_ port: Int, _ method: HTTPMethod, _ path: String) async throws -> HTTPResult {
            try await TestHTTP.request(method, "http://127.0.0.1:\(port)\(path)", timeout: 20, authorization: nil, rawBody: method == .POST ? [] : nil)
        }
        // Seed 004's load balancer was FastAPI (its body ends in a newline, as every JSON answer of this listener does).
        let lbWrong = try await call(ports[0], .GET, "/write")
        #expect(lbWrong.status == 405 && lbWrong.text == #"{"detail":"Method Not Allowed"}"# + "\n" && lbWrong.header("allow") == "POST", "\(lbWrong.status) \(lbWrong.text)")
        let lbUnknown = try await call(ports[0], .GET, "/students")
        #expect(lbUnknown.status == 404 && lbUnknown.text == #"{"detail":"Not Found"}"# + "\n", "\(lbUnknown.status) \(lbUnknown.text)")

        // Seed 000's servers were Flask: Werkzeug's pages.
        let keyWrong = try await call(ports[1], .DELETE, "/token")
        #expect(keyWrong.status == 405 && keyWrong.text.contains("<title>405 Method Not Allowed</title>"), "\(keyWrong.status) \(keyWrong.text)")
        #expect(keyWrong.header("allow") == "OPTIONS, POST" && keyWrong.header("content-type") == "text/html; charset=utf-8")
        let keyOptions = try await call(ports[1], .OPTIONS, "/token")
        #expect(keyOptions.status == 200 && keyOptions.header("allow") == "OPTIONS, POST" && keyOptions.text.isEmpty, "\(keyOptions.status) \(keyOptions.text)")
        let keyUnknown = try await call(ports[1], .GET, "/keys")
        #expect(keyUnknown.status == 404 && keyUnknown.text.contains("The requested URL was not found on the server."), "\(keyUnknown.status) \(keyUnknown.text)")

        // Seeds 003 and 002 were Go's net/http: its text for an unknown path.
        for port in [ports[2], ports[3]] {
            let goUnknown = try await call(port, .GET, "/tables")
            #expect(goUnknown.status == 404 && goUnknown.text == "404 page not found\n", "\(goUnknown.status) \(goUnknown.text)")
        }
        // rest-db's routes take every method, as the original's handlers did.
        #expect(try await call(ports[2], .PATCH, "/ping").text == "pong")
        #expect(try await call(ports[2], .TRACE, "/ping").text == "pong", "a method no route lists is served too")
        let masterWrong = try await call(ports[3], .GET, "/api/query")
        #expect(masterWrong.status == 405 && masterWrong.json["status"] as? String == "error" && masterWrong.header("allow") == "OPTIONS, POST",
                "\(masterWrong.status) \(masterWrong.text)")
        #expect(masterWrong.header("access-control-allow-origin") == "*")
    }
}
