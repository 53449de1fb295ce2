import CairnTestSupport
import Foundation
import Testing

/// Hostile clients on every HTTP API of a 3-node cluster with auth on (`Tests/Clients/api_fuzz.py`):
/// random and mutated requests to the native API, rqlite's and the four compatibility listeners. No
/// answer is a 5xx (but readiness's 503), every native 4xx has a message, none is dropped, no node stops, and every
/// row acknowledged meanwhile reads back. `CAIRN_FUZZ_SEED` and `CAIRN_FUZZ_SECONDS` replay or lengthen
/// a run.
extension ProcessTests {
    @Test func hostileRequestsOnEveryAPI() async throws {
        let ports = (0..<4).map { _ in freePort() }
        let apis = ["shard-lb", "key-endpoint", "rest-db", "master-api"]
        var listeners: [String] = ["--compat-user", "admin", "--name", "Server0"]
        for (api, port) in zip(apis, ports) { listeners += ["--compat", "\(api)=127.0.0.1:\(port)"] }
        let first = listeners
        let c = try await ProcessCluster.founded("fuzz", count: 3) { i in i == 0 ? first : [] }
        defer { c.destroy() }
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["CAIRN_FUZZ_SEED"] ?? "1"
        let seconds = Double(environment["CAIRN_FUZZ_SECONDS"] ?? "") ?? 30
        var arguments: [String] = ["--password", TestHTTP.adminPassword, "--seconds", "\(seconds)", "--seed", seed]
        for n in c.nodes { arguments += ["--node", n.url] }
        for (api, port) in zip(apis, ports) { arguments += ["--compat", "\(api)=\(port)"] }
        let (status, said) = try await Self.runClientScript("api_fuzz.py", arguments, seconds: seconds + 180)
        #expect(status == 0, "seed \(seed): \(said.suffix(4000))")
        #expect(said.contains("failures 0"), "\(said.suffix(2000))")
        for n in c.nodes { #expect(n.isRunning, "\(n.name) stopped: \(n.log.suffix(2000))") }
    }
}
