import CairnTestSupport
import Foundation
import Testing

/// Requests counted by a node's HTTP server on the data endpoints (`/v1/db/...`), from its metrics.
private func dataRequests(_ node: NodeProcess) async throws -> Int {
    try await node.get("/metrics").text.split(separator: "\n")
        .filter { $0.hasPrefix("cairn_http_requests_total{") && $0.contains("/v1/db/") }
        .reduce(0) { $0 + (Int($1.split(separator: " ").last ?? "") ?? 0) }
}

extension ProcessTests {
@Suite("The router on real processes", .serialized)
struct RouterProcessTests {
    @Test("a follower runs writes, reads and mixed requests on the leader as encoded calls, never as HTTP requests; a reader's write is refused where it is judged")
    func followerRoutesEncodedCalls() async throws {
        let c = try await ProcessCluster.founded("router", count: 3)
        defer { c.destroy() }
        let leader = try await c.leader(of: 1)
        let follower = c.nodes.first { $0 !== leader }!
        let created = try await follower.post("/v1/users", ["username": "reader", "password": "reader-password",
                                                             "grants": [["permission": "read", "database": "default"]]])
        #expect(created.status == 201, "\(created.text)")
        #expect(try await follower.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]).status == 200)
        let before = try await dataRequests(leader)

        for i in 1...20 {
            let w = try await follower.execute([["INSERT INTO t(id, v) VALUES(?, ?)", i, "v\(i)"]])
            #expect(w.status == 200 && w.header("X-Cairn-Node") == "\(leader.id)", "\(w.status) \(w.text) \(w.headers)")
        }
        let read = try await follower.query("SELECT count(*), max(v) FROM t")
        #expect(read.status == 200 && read.text.contains("[[20,\"v9\"]]"), "\(read.text)")
        let mixed = try await follower.post("/v1/db/default/request", ["statements": ["INSERT INTO t(id, v) VALUES(21, 'm')", "SELECT count(*) FROM t"]])
        #expect(mixed.status == 200 && mixed.text.contains("[[21]]"), "\(mixed.text)")

        // A user who may only read: a request that writes is refused by the node that judges it, and nothing is written.
        let reader = "Basic " + Data("reader:reader-password".utf8).base64EncodedString()
        let refused = try await follower.raw(.POST, "/v1/db/default/request", #"{"statements":["INSERT INTO t(id) VALUES(99)"]}"#,
                                             contentType: "application/json", authorization: reader)
        #expect(refused.status == 403, "\(refused.status) \(refused.text)")
        let reads = try await follower.raw(.POST, "/v1/db/default/request", #"{"statements":["SELECT count(*) FROM t"]}"#,
                                           contentType: "application/json", authorization: reader)
        #expect(reads.status == 200 && reads.text.contains("[[21]]"), "\(reads.text)")

        // rqlite's API takes the same road.
        let rq = try await follower.raw(.POST, "/db/execute?raft_index", #"["INSERT INTO t(id, v) VALUES(22, 'rq')"]"#, contentType: "application/json")
        #expect(rq.status == 200 && rq.text.contains("\"raft_index\":"), "\(rq.text)")

        #expect(try await dataRequests(leader) == before, "the leader's HTTP server served none of the follower's requests")
        let calls = try await follower.get("/metrics").text.split(separator: "\n").first { $0.hasPrefix("cairn_router_calls_total") }
        // One call per request that writes or may write (23); linearizable reads may be served by the
        // follower itself, after a ReadIndex round through the leader.
        #expect(calls.flatMap { Int($0.split(separator: " ").last ?? "") }.map { $0 >= 23 } == true, "\(calls ?? "no router metric")")
        #expect(try await ids(leader, "t").count == 22)
    }
}
}
