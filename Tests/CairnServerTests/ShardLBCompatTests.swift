import CairnTestSupport
import Foundation
import NIOConcurrencyHelpers
import NIOHTTP1
import Testing

/// Seed 004's load balancer API (`--compat shard-lb`) on a 3-node cluster: the compat document's
/// examples replayed, with the status and body each must answer.
extension ProcessTests {
    @Test func shardLBSpeaksSeed004() async throws {
        let ports = (0..<3).map { _ in freePort() }
        let c = try await ProcessCluster.founded("shard-lb", count: 3) { i in
            ["--name", "Server\(i)", "--compat", "shard-lb=127.0.0.1:\(ports[i])", "--compat-user", "admin"]
        }
        defer { c.destroy() }
        let lb = "http://127.0.0.1:\(ports[0])", other = "http://127.0.0.1:\(ports[2])"
        func call(_ method: HTTPMethod, _ base: String, _ path: String, _ body: Any? = nil) async throws -> HTTPResult {
            try await TestHTTP.request(method, base + path, body, authorization: nil)
        }
        func expectAnswer(_ r: HTTPResult, _ status: Int, _ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(r.status == status, "\(r.text)", sourceLocation: sourceLocation)
            #expect(r.json["message"] as? String == message, "\(r.text)", sourceLocation: sourceLocation)
            #expect(r.json["status"] as? String == (status == 200 ? "success" : "failure"), "\(r.text)", sourceLocation: sourceLocation)
        }

        // Every node carries its name.
        let names = try await c.nodes[0].get("/v1/cluster").json["nodes"] as? [Object] ?? []
        #expect(Set(names.compactMap { $0["name"] as? String }) == ["Server0", "Server1", "Server2"])

        expectAnswer(try await call(.POST, lb, "/read", ["Stud_id": ["low": 0, "high": 10]]), 400,
                     "<Error> the database is not configured yet: POST /init first")
        let schema: Object = ["columns": ["Stud_id", "Stud_name", "Stud_marks"], "dtypes": ["Number", "String", "String"]]
        let shards: [Object] = [["Stud_id_low": 0, "Shard_id": "sh1", "Shard_size": 4096],
                                ["Stud_id_low": 4096, "Shard_id": "sh2", "Shard_size": 4096],
                                ["Stud_id_low": 8192, "Shard_id": "sh3", "Shard_size": 4096]]
        let initBody: Object = ["N": 3, "schema": schema, "shards": shards,
                                "servers": ["Server0": ["sh1", "sh2"], "Server1": ["sh2", "sh3"], "Server2": ["sh1", "sh3"]]]
        // Server names are node names.
        var wrong = initBody
        wrong["servers"] = ["Server0": ["sh1", "sh2"], "Server9": ["sh3"]]
        let unknown = try await call(.POST, lb, "/init", wrong)
        #expect(unknown.status == 400 && (unknown.json["message"] as? String)?.contains("no node is named Server9") == true, "\(unknown.text)")
        var duplicate = initBody
        duplicate["shards"] = [shards[0], shards[0]]
        expectAnswer(try await call(.POST, lb, "/init", duplicate), 400, "<Error> Duplicate shard id sh1 found in request")
        var mismatch = initBody
        mismatch["servers"] = ["Server0": ["sh1"]]
        expectAnswer(try await call(.POST, lb, "/init", mismatch), 400, "<Error> Mismatch between shards in 'shards' and 'servers'")
        #expect(try await call(.POST, lb, "/init", ["shards": shards]).status == 422)

        expectAnswer(try await call(.POST, lb, "/init", initBody), 200, "Configured Database")
        let again = try await call(.POST, other, "/init", initBody)
        #expect(again.status == 400 && (again.json["message"] as? String)?.contains("use /add and /rm") == true, "\(again.text)")

        let status = try await call(.GET, other, "/status")
        #expect(status.status == 200, "\(status.text)")
        #expect(status.json["N"] as? Int == 3)
        #expect((status.json["shards"] as? [Object])?.map { $0["Shard_id"] as? String } == ["sh1", "sh2", "sh3"])
        #expect((status.json["schema"] as? Object)?["dtypes"] as? [String] == ["Number", "String", "String"])
        // Where the copies are: with 3 nodes and 3 copies of each shard, every server holds every shard.
        #expect((status.json["servers"] as? [String: [String]])?["Server1"]?.sorted() == ["sh1", "sh2", "sh3"], "\(status.text)")

        // 100 entries over the three shards, and one in no shard: skipped, and counted, as the seed did.
        var batch: [Object] = (0..<100).map { k in ["Stud_id": k * 120, "Stud_name": "S\(k)", "Stud_marks": k % 50] }
        batch.append(["Stud_id": 20_000, "Stud_name": "nowhere", "Stud_marks": 1])
        expectAnswer(try await call(.POST, lb, "/write", ["data": batch]), 200, "101 Data entries added")

        let read = try await call(.POST, other, "/read", ["Stud_id": ["low": 1000, "high": 8889]])
        #expect(read.status == 200, "\(read.text)")
        #expect(read.json["shards_queried"] as? [String] == ["sh1", "sh2", "sh3"])
        let ids = (read.json["data"] as? [Object] ?? []).compactMap { $0["Stud_id"] as? Int }
        #expect(ids == (0..<100).map { $0 * 120 }.filter { $0 >= 1000 && $0 <= 8889 })
        #expect((read.json["data"] as? [Object])?.first?["Stud_name"] as? String == "S9")
        let none = try await call(.POST, lb, "/read", ["Stud_id": ["low": 20_000, "high": 30_000]])
        #expect(none.json["shards_queried"] as? [String] == [] && (none.json["data"] as? [Any])?.isEmpty == true, "\(none.text)")

        // The spec's /update sends Stud_id as a string.
        expectAnswer(try await call(.PUT, lb, "/update", ["Stud_id": "2280", "data": ["Stud_id": 2280, "Stud_name": "GHI", "Stud_marks": 30]]),
                     200, "Data entry for Stud_id: 2280 updated")
        let updated = try await call(.POST, other, "/read", ["Stud_id": ["low": 2280, "high": 2280]])
        #expect((updated.json["data"] as? [Object])?.first?["Stud_name"] as? String == "GHI", "\(updated.text)")
        let moved = try await call(.PUT, lb, "/update", ["Stud_id": 2280, "data": ["Stud_id": 2281, "Stud_name": "GHI", "Stud_marks": 30]])
        #expect(moved.status == 400, "\(moved.text)")
        expectAnswer(try await call(.PUT, lb, "/update", ["Stud_id": 2281, "data": ["Stud_id": 2281, "Stud_name": "X", "Stud_marks": 1]]),
                     404, "Student ID not found")
        expectAnswer(try await call(.DELETE, other, "/del", ["Stud_id": 2280]), 200, "Data entry with Stud_id:2280 removed from all replicas")
        expectAnswer(try await call(.DELETE, lb, "/del", ["Stud_id": 2280]), 404, "Student ID not found")

        // A batch is atomic across shards: one existing id refuses all of it.
        let clash = try await call(.POST, lb, "/write", ["data": [["Stud_id": 1, "Stud_name": "new", "Stud_marks": 1],
                                                                  ["Stud_id": 5000, "Stud_name": "new", "Stud_marks": 1],
                                                                  ["Stud_id": 120, "Stud_name": "again", "Stud_marks": 1]]])
        #expect(clash.status == 400 && clash.json["status"] as? String == "failure", "\(clash.text)")
        let after = try await call(.POST, lb, "/read", ["Stud_id": ["low": 0, "high": 12287]])
        #expect(!(after.json["data"] as? [Object] ?? []).contains { $0["Stud_name"] as? String == "new" }, "\(after.text)")

        // Bad bodies: FastAPI's 422 with `detail`, never a 500.
        let missingField = try await call(.POST, lb, "/write", ["data": [["Stud_id": 7]]])
        #expect(missingField.status == 422 && missingField.json["detail"] != nil, "\(missingField.text)")
        let garbage = try await TestHTTP.request(.POST, lb + "/write", authorization: nil, rawBody: Array("{\"data\": [".utf8), contentType: "application/json")
        #expect(garbage.status == 422, "\(garbage.text)")
        #expect(try await call(.POST, lb, "/read", [String: Any]()).status == 422)

        // A shard server's own endpoints, on any node.
        let home = try await call(.GET, other, "/home")
        #expect((home.json["response"] as? Object)?["message"] as? String == "Hello from server: Server2", "\(home.text)")
        expectAnswer(try await call(.POST, other, "/config", ["schema": schema, "shards": ["sh1", "sh2"]]), 200, "Server2:sh1, Server2:sh2 configured")
        let copy = try await call(.POST, lb, "/copy", ["shards": ["sh2"]])
        let inSh2 = (0..<100).map { $0 * 120 }.filter { $0 >= 4096 && $0 < 8192 }.count
        let copied = (copy.json["sh2"] as? [Object])?.count
        #expect(copied == inSh2, "\(copy.text)")
        let serverRead = try await call(.POST, lb, "/read", ["shard": "sh2", "Stud_id": ["low": 2235, "high": 4400]])
        #expect((serverRead.json["data"] as? [Object])?.compactMap { $0["Stud_id"] as? Int } == [4200, 4320], "\(serverRead.text)")
        #expect(serverRead.json["shards_queried"] == nil)
        let serverWrite = try await call(.POST, lb, "/write", ["shard": "sh2", "curr_idx": 507, "data": [["Stud_id": 4097, "Stud_name": "W", "Stud_marks": 2]]])
        #expect(serverWrite.status == 200 && serverWrite.json["current_idx"] as? Int == 508, "\(serverWrite.text)")
        let elsewhere = try await call(.POST, lb, "/write", ["shard": "sh2", "curr_idx": 0, "data": [["Stud_id": 1, "Stud_name": "W", "Stud_marks": 2]]])
        #expect(elsewhere.status == 400, "\(elsewhere.text)")
        expectAnswer(try await call(.PUT, lb, "/update", ["shard": "sh2", "Stud_id": 4097, "data": ["Stud_id": 4097, "Stud_name": "W2", "Stud_marks": 3]]),
                     200, "Data entry for Stud_id:4097 updated")
        expectAnswer(try await call(.POST, lb, "/del", ["shard": "sh2", "Stud_id": 4097]), 200, "Data entry with Stud_id:4097 removed")
        let beat = try await call(.GET, other, "/heartbeat")
        #expect(beat.status == 200 && beat.text.isEmpty)
    }
}

extension ProcessTests {
    /// Seed 004 promised failure recovery: a dead server respawned and its shards copied. Here: kill -9
    /// one of 4 nodes while `/write` and `/read` requests run; its copies are rebuilt on the others,
    /// every acknowledged `/write` is there afterwards, and `/read` never stopped answering.
    @Test func shardLBSurvivesAKilledNode() async throws {
        let ports = (0..<4).map { _ in freePort() }
        let c = try await ProcessCluster.founded("shard-lb-kill", count: 4, extraArgs: ["--suspect-after", "1s", "--dead-after", "4s"]) { i in
            ["--name", "Server\(i)", "--compat", "shard-lb=127.0.0.1:\(ports[i])", "--compat-user", "admin"]
        }
        defer { c.destroy() }
        let lbs = (0..<3).map { "http://127.0.0.1:\(ports[$0])" }
        let layout: Object = ["schema": ["columns": ["Stud_id", "Stud_name", "Stud_marks"], "dtypes": ["Number", "String", "String"]],
                              "shards": (0..<4).map { ["Stud_id_low": 4096 * $0, "Shard_id": "sh\($0 + 1)", "Shard_size": 4096] }]
        let configured = try await TestHTTP.request(.POST, lbs[0] + "/init", layout, authorization: nil)
        #expect(configured.status == 200, "\(configured.text)")

        let acked = NIOLockedValueBox<[Int]>([]), writeFailures = NIOLockedValueBox<[String]>([])
        let reads = NIOLockedValueBox(0), readFailures = NIOLockedValueBox<[String]>([])
        let stop = NIOLockedValueBox(false)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for w in 0..<6 {
                tasks.addTask {
                    var k = 0
                    while !stop.withLockedValue({ $0 }) {
                        let id = (w * 2_731 + k * 6) % 16_384
                        k += 1
                        let r = try? await TestHTTP.request(.POST, lbs[k % 3] + "/write", ["data": [["Stud_id": id, "Stud_name": "S\(id)", "Stud_marks": 1]]],
                                                            authorization: nil)
                        if r?.status == 200 { acked.withLockedValue { $0.append(id) } } else { writeFailures.withLockedValue { $0.append("\(r?.status ?? 0) \(r?.text ?? "no answer")") } }
                        if k >= 2_700 { break }
                    }
                }
            }
            for rd in 0..<2 {
                tasks.addTask {
                    var k = 0
                    while !stop.withLockedValue({ $0 }) {
                        k += 1
                        let id = (rd * 977 + k * 13) % 16_384
                        let r = try? await TestHTTP.request(.POST, lbs[(k + rd) % 3] + "/read", ["Stud_id": ["low": id, "high": id + 50]], authorization: nil)
                        if r?.status == 200 { reads.withLockedValue { $0 += 1 } } else { readFailures.withLockedValue { $0.append("\(r?.status ?? 0) \(r?.text ?? "no answer")") } }
                    }
                }
            }
            tasks.addTask {
                try await Task.sleep(for: .seconds(2))
                await c.nodes[3].kill9()
                let seconds = try await ElasticClusterTests.wait("the killed node's copies rebuilt", on: c.nodes[0], seconds: 90) {
                    $0.states[c.nodes[3].id] == "dead" && $0.balanced && $0.replicas[c.nodes[3].id] == 0
                }
                print("shard-lb: node killed; its copies rebuilt on the other three in \(String(format: "%.1f", seconds)) s")
                try await Task.sleep(for: .seconds(1))
                stop.withLockedValue { $0 = true }
            }
            try await tasks.waitForAll()
        }
        let all = try await TestHTTP.request(.POST, lbs[1] + "/read", ["Stud_id": ["low": 0, "high": 16_383]], authorization: nil)
        let present = Set((all.json["data"] as? [Object] ?? []).compactMap { $0["Stud_id"] as? Int })
        let lost = Set(acked.withLockedValue { $0 }).subtracting(present)
        #expect(acked.withLockedValue { $0.count } > 100, "too few writes to mean anything")
        #expect(lost.isEmpty, "acknowledged writes missing: \(lost.sorted().prefix(20))")
        #expect(readFailures.withLockedValue { $0 }.isEmpty, "reads failed: \(readFailures.withLockedValue { $0.prefix(5) })")
        print("shard-lb: \(acked.withLockedValue { $0.count }) writes acknowledged, \(writeFailures.withLockedValue { $0.count }) refused, \(reads.withLockedValue { $0 }) reads; 0 lost")
    }
}

extension ProcessTests {
    /// Seed 004's `/add` and `/rm` on 4 nodes: a shard added takes its ids at once, in a range and Raft
    /// group of its own (a range split) placed on the servers named for it; a server removed is
    /// drained first (its copies rebuilt on the others), so nothing written is lost; the seed's refusals.
    @Test func shardLBAddsAndRemoves() async throws {
        let ports = (0..<4).map { _ in freePort() }
        let c = try await ProcessCluster.founded("shard-lb-add-rm", count: 4) { i in
            ["--name", "Server\(i)", "--compat", "shard-lb=127.0.0.1:\(ports[i])", "--compat-user", "admin"]
        }
        defer { c.destroy() }
        let lb = "http://127.0.0.1:\(ports[0])"
        func call(_ method: HTTPMethod, _ path: String, _ body: Any? = nil) async throws -> HTTPResult {
            try await TestHTTP.request(method, lb + path, body, timeout: 300, authorization: nil)
        }
        let configured = try await call(.POST, "/init", ["schema": ["columns": ["Stud_id", "Stud_name", "Stud_marks"], "dtypes": ["Number", "String", "String"]],
                                                         "shards": (0..<3).map { ["Stud_id_low": 4096 * $0, "Shard_id": "sh\($0 + 1)", "Shard_size": 4096] },
                                                         "servers": ["Server0": ["sh1", "sh2", "sh3"], "Server1": ["sh1", "sh2", "sh3"], "Server2": ["sh1", "sh2", "sh3"]]])
        #expect(configured.status == 200, "\(configured.text)")
        // Each shard's copies go to the servers named for it: none on Server3, though the cluster left
        // to itself spreads copies evenly over all four nodes.
        func placed(_ want: [String: [String]], not unwanted: [String: [String]] = [:]) async throws {
            let deadline = Date().addingTimeInterval(60)
            var last = ""
            while Date() < deadline {
                let r = try await call(.GET, "/status")
                last = r.text
                let servers = r.json["servers"] as? [String: [String]] ?? [:]
                if want.allSatisfy({ name, shards in Set(shards).isSubset(of: Set(servers[name] ?? [])) }),
                   unwanted.allSatisfy({ name, shards in Set(shards).isDisjoint(with: Set(servers[name] ?? [])) }) { return }
                try await Task.sleep(for: .milliseconds(300))
            }
            throw TestFailure("copies not placed as named \(want) within 60 s: \(last)")
        }
        try await placed(["Server0": ["sh1", "sh2", "sh3"], "Server1": ["sh1", "sh2", "sh3"], "Server2": ["sh1", "sh2", "sh3"]],
                         not: ["Server3": ["sh1", "sh2", "sh3"]])
        let before = try await call(.POST, "/write", ["data": [["Stud_id": 100, "Stud_name": "a", "Stud_marks": 1], ["Stud_id": 13_000, "Stud_name": "b", "Stud_marks": 2]]])
        #expect(before.json["message"] as? String == "2 Data entries added")
        #expect((try await call(.POST, "/read", ["Stud_id": ["low": 12_000, "high": 14_000]]).json["data"] as? [Any])?.isEmpty == true,
                "an id in no shard was written")

        // /add: its refusals, then a new shard on a fourth server.
        let tooMany = try await call(.POST, "/add", ["n": 2, "new_shards": [], "servers": ["Server3": ["sh3"]]])
        #expect(tooMany.status == 400 && tooMany.json["message"] as? String == "<Error> Number of new servers (n) is greater than newly added instances", "\(tooMany.text)")
        let template = try await call(.POST, "/add", ["n": 1, "new_shards": [["Stud_id_low": 12_288, "Shard_id": "sh4", "Shard_size": 4096]], "servers": ["Server[5]": ["sh4"]]])
        #expect(template.status == 400 && (template.json["message"] as? String)?.contains("Server[5]") == true, "\(template.text)")
        let overlap = try await call(.POST, "/add", ["n": 1, "new_shards": [["Stud_id_low": 12_000, "Shard_id": "sh4", "Shard_size": 4096]], "servers": ["Server3": ["sh4"]]])
        #expect(overlap.status == 400 && (overlap.json["message"] as? String)?.contains("overlap") == true, "\(overlap.text)")
        let added = try await call(.POST, "/add", ["n": 1, "new_shards": [["Stud_id_low": 12_288, "Shard_id": "sh4", "Shard_size": 4096]], "servers": ["Server3": ["sh3", "sh4"]]])
        #expect(added.status == 200 && added.json["N"] as? Int == 4 && added.json["message"] as? String == "Add Server3" && added.json["status"] as? String == "successful",
                "\(added.text)")
        // The new shard's ids have a range, and a Raft group, of their own, its copies on the server named.
        let layout = try await c.nodes[1].get("/v1/db/shard_lb/shards")
        #expect(layout.json["shard_count"] as? Int == 4, "\(layout.text)")
        let ranges = ((layout.json["range_tables"] as? [Object])?.first?["ranges"] as? [Object]) ?? []
        #expect(ranges.map { $0["shard"] as? Int } == [0, 1, 2, 3] && ranges.last?["from"] as? Int == 12_288, "\(layout.text)")
        #expect(Set(((layout.json["shards"] as? [Object]) ?? []).compactMap { $0["group"] as? Int }).count == 4, "\(layout.text)")
        try await placed(["Server3": ["sh4"]])
        let after = try await TestHTTP.request(.POST, "http://127.0.0.1:\(ports[2])/write", ["data": [["Stud_id": 13_000, "Stud_name": "b", "Stud_marks": 2]]], authorization: nil)
        #expect(after.status == 200, "\(after.text)")
        let read = try await call(.POST, "/read", ["Stud_id": ["low": 0, "high": 16_383]])
        #expect(read.json["shards_queried"] as? [String] == ["sh1", "sh2", "sh3", "sh4"], "\(read.text)")
        #expect((read.json["data"] as? [Object])?.compactMap { $0["Stud_id"] as? Int } == [100, 13_000], "\(read.text)")
        #expect(((try await call(.GET, "/status")).json["shards"] as? [Object])?.count == 4)

        // /rm: its refusals, then a server drained and removed, nothing lost.
        let long = try await call(.DELETE, "/rm", ["n": 2, "servers": ["Server1", "Server3", "Server2"]])
        #expect(long.status == 400 && long.json["message"] as? String == "<Error> Length of server list is more than removable instances", "\(long.text)")
        #expect(try await call(.DELETE, "/rm", ["n": 1, "servers": ["Server0"]]).status == 400, "the node serving the request cannot remove itself")
        #expect(try await call(.DELETE, "/rm", ["n": 2]).status == 400, "4 - 2 nodes cannot keep 3 copies")
        let removed = try await call(.DELETE, "/rm", ["n": 1, "servers": ["Server3"]])
        #expect(removed.status == 200 && removed.json["status"] as? String == "successful", "\(removed.text)")
        #expect((removed.json["message"] as? Object)?["N"] as? Int == 3 && (removed.json["message"] as? Object)?["servers"] as? [String] == ["Server3"], "\(removed.text)")
        let cluster = try await c.nodes[0].get("/v1/cluster").json["nodes"] as? [Object] ?? []
        #expect(cluster.first { $0["name"] as? String == "Server3" }?["removed"] as? Bool == true)
        let still = try await call(.POST, "/read", ["Stud_id": ["low": 0, "high": 16_383]])
        #expect((still.json["data"] as? [Object])?.compactMap { $0["Stud_id"] as? Int } == [100, 13_000], "\(still.text)")
        let placement = try await call(.GET, "/status")
        #expect((placement.json["servers"] as? [String: [String]])?.keys.sorted() == ["Server0", "Server1", "Server2"], "\(placement.text)")
    }
}
