import CairnTestSupport
import Foundation
@testable import CairnServer
import Testing

/// What `deploy/` relies on: nodes configured by `CAIRN_*` variables alone, finding each other by DNS
/// names (as a StatefulSet's pods do through their headless Service), SIGTERM handing leadership
/// over before the node stops (rolling restarts), and the alert rules and dashboard naming only
/// series a node exports.
extension ProcessTests {
@Suite("Deployment: environment, DNS names, SIGTERM, monitoring files", .serialized)
struct DeploymentTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("three nodes configured by CAIRN_* variables alone (a flag on the command line wins; an unknown variable is reported), found through DNS names: they form one cluster, each under its name and advertised address")
    func environmentAndDNSNames() async throws {
        let root = NSTemporaryDirectory() + "cairn-env-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let http = (0..<3).map { _ in freePort() }, raft = (0..<3).map { _ in freePort() }
        var processes: [Process] = []
        defer { for p in processes where p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        for i in 0..<3 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: cairnBinary)
            // The third node's name comes from its command line, over its variable.
            p.arguments = ["server"] + (i == 2 ? ["--name", "from-flag"] : [])
            var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CAIRN_") }
            environment["CAIRN_DATA_DIR"] = "\(root)/n\(i)"
            environment["CAIRN_HTTP_ADDR"] = "127.0.0.1:\(http[i])"
            environment["CAIRN_RAFT_ADDR"] = "127.0.0.1:\(raft[i])"
            environment["CAIRN_HTTP_ADV"] = "localhost:\(http[i])"
            environment["CAIRN_RAFT_ADV"] = "localhost:\(raft[i])"
            environment["CAIRN_JOIN"] = http.map { "localhost:\($0)" }.joined(separator: ",")
            environment["CAIRN_BOOTSTRAP_EXPECT"] = "3"
            environment["CAIRN_NAME"] = "env-\(i)"
            environment["CAIRN_INSECURE_DEV"] = "true"
            environment["CAIRN_MIN_REPLICAS_PER_NODE"] = "0"
            environment["CAIRN_HTTP_ADR"] = "a typo"
            p.environment = environment
            let log = FileManager.default.createFile(atPath: "\(root)/n\(i).log", contents: nil) ? try FileHandle(forWritingTo: URL(fileURLWithPath: "\(root)/n\(i).log")) : nil
            p.standardOutput = log
            p.standardError = log
            try p.run()
            processes.append(p)
        }
        for port in http {
            let end = Date().addingTimeInterval(60)
            while (try? await TestHTTP.request(.GET, "http://127.0.0.1:\(port)/v1/ready", authorization: nil))?.status != 200 {
                guard Date() < end else {
                    throw TestFailure("node on \(port) not ready: \((try? String(contentsOfFile: "\(root)/n\(http.firstIndex(of: port)!).log", encoding: .utf8))?.suffix(2000) ?? "")")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let cluster = try await TestHTTP.request(.GET, "http://127.0.0.1:\(http[1])/v1/cluster", authorization: nil)
        let nodes = cluster.json["nodes"] as? [Object] ?? []
        #expect(Set(nodes.compactMap { $0["name"] as? String }) == ["env-0", "env-1", "from-flag"], "\(cluster.text)")
        #expect(Set(nodes.compactMap { $0["http_addr"] as? String }) == Set(http.map { "localhost:\($0)" }), "\(cluster.text)")
        let wrote = try await TestHTTP.request(.POST, "http://127.0.0.1:\(http[2])/v1/db/default/execute",
                                               ["statements": ["CREATE TABLE t (x)", "INSERT INTO t VALUES (42)"]], authorization: nil)
        #expect(wrote.status == 200 && !wrote.text.contains("\"error\""), "\(wrote.text)")
        let read = try await TestHTTP.request(.POST, "http://127.0.0.1:\(http[0])/v1/db/default/query", ["statements": ["SELECT x FROM t"]], authorization: nil)
        #expect(read.text.contains("[[42]]"), "\(read.text)")
        let log = (try? String(contentsOfFile: "\(root)/n0.log", encoding: .utf8)) ?? ""
        #expect(log.contains("ignoring CAIRN_HTTP_ADR: there is no --http-adr option"), "\(log.prefix(2000))")
    }

    @Test("SIGTERM hands every group the node leads to another node before it stops: the moment it has exited, the others name live leaders for every group, and writes go on")
    func sigtermHandsLeadershipOver() async throws {
        let c = try await ProcessCluster.founded("sigterm", count: 3)
        defer { c.destroy() }
        // More groups than one: a sharded database's shards.
        #expect(try await c.nodes[0].post("/v1/databases", ["name": "many", "shards": 6]).status == 201)
        #expect(try await c.nodes[0].execute(["CREATE TABLE t (k INTEGER NOT NULL PRIMARY KEY) SHARD BY HASH (k)"], db: "many").status == 200)
        func led(_ n: NodeProcess) async throws -> [Int] {
            ((try await n.status()["groups"] as? [Object]) ?? []).filter { $0["role"] as? String == "leader" }.compactMap { $0["group"] as? Int }
        }
        var victim = c.nodes[0], most: [Int] = []
        for n in c.nodes {
            let groups = try await led(n)
            if groups.count > most.count { (victim, most) = (n, groups) }
        }
        #expect(!most.isEmpty)
        await victim.terminate()
        #expect(!victim.isRunning)
        // At once, no election timeout later: each survivor names a leader other than the stopped node.
        for n in c.nodes where n !== victim {
            for g in (try await n.status()["groups"] as? [Object]) ?? [] {
                let leader = UInt64(g["leader"] as? Int ?? 0)
                #expect(leader != 0 && leader != victim.id, "\(n.name): group \(g["group"] ?? "?") has leader \(leader) right after node \(victim.id) stopped")
            }
        }
        #expect(victim.log.contains("asked \(most.count) groups to change leader; leads 0 still"), "\(victim.log.suffix(1500))")
        let r = try await c.nodes.first { $0 !== victim }!.execute([["INSERT INTO t VALUES (?)", 7]], db: "many")
        #expect(r.status == 200 && !r.text.contains("\"error\""), "\(r.text)")
    }

    @Test("the alert rules pass promtool's check and their unit tests; every series the rules and the dashboard name is one a node exports")
    func alertRulesAndDashboard() throws {
        let prometheus = Self.repository.appendingPathComponent("deploy/prometheus").path
        for arguments in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"], ["check", "config", "prometheus.yml"]] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/promtool")
            p.arguments = arguments
            p.currentDirectoryURL = URL(fileURLWithPath: prometheus)
            let output = Pipe()
            p.standardOutput = output
            p.standardError = output
            try p.run()
            let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "promtool \(arguments.joined(separator: " ")): \(said)")
        }
        let known = Set(MetricHelp.text.keys).union(["up", "process_resident_memory_bytes", "process_cpu_seconds_total"])
        let rules = try String(contentsOfFile: prometheus + "/alerts.yml", encoding: .utf8)
        let dashboard = try String(contentsOf: Self.repository.appendingPathComponent("deploy/grafana/cairn-dashboard.json"), encoding: .utf8)
        #expect(try JSONSerialization.jsonObject(with: Data(dashboard.utf8)) is [String: Any])
        for (file, text) in [("alerts.yml", rules), ("cairn-dashboard.json", dashboard)] {
            let named = Set(text.matches(of: /\b(cairn_[a-z_]+|process_[a-z_]+)\b/).map { String($0.1) })
            #expect(!named.isEmpty)
            for name in named {
                let family = ["_bucket", "_count", "_sum"].reduce(name) { $0.hasSuffix($1) ? String($0.dropLast($1.count)) : $0 }
                #expect(known.contains(family), "\(file) names \(name), which no node exports")
            }
        }
    }
}
}
