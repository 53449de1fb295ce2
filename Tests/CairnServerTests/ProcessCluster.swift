import AsyncHTTPClient
import CairnTestSupport
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOSSL
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Every test that starts `cairn` processes runs inside this suite, one at a time: on two cores,
/// several clusters at once would turn timing-sensitive checks (elections, failover) into noise.
@Suite("Real cairn processes", .serialized)
struct ProcessTests {}

/// JSON as tests read it.
typealias Object = [String: Any]

struct HTTPResult: @unchecked Sendable {
    var status: Int
    var json: Object
    var text: String
    var headers: [(String, String)] = []

    func header(_ name: String) -> String? { headers.first { $0.0 == name.lowercased() }?.1 }
}

enum TestHTTP {
    /// Redirects are not followed: tests look at them.
    static let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup,
                                   configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(1), read: .seconds(20))))

    /// For nodes serving HTTPS with a test CA: the tests look at what the server does, the CLI's own
    /// test checks the certificate.
    static let tlsClient: HTTPClient = {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup,
                          configuration: .init(tlsConfiguration: tls, redirectConfiguration: .disallow,
                                               timeout: .init(connect: .seconds(1), read: .seconds(20))))
    }()

    /// For the few requests that take minutes (large loads).
    static let patientClient = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup,
                                          configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(1), read: .seconds(900))))

    /// The admin account every test cluster is founded with.
    static let adminPassword = "test-admin-password"
    static let admin = "Basic " + Data("admin:\(adminPassword)".utf8).base64EncodedString()

    /// A GET's body as bytes (backups).
    static func bytes(_ url: String, authorization: String? = admin) async throws -> [UInt8] {
        var r = HTTPClientRequest(url: url)
        if let authorization { r.headers.add(name: "Authorization", value: authorization) }
        let response = try await client.execute(r, timeout: .seconds(20))
        return Array(buffer: try await response.body.collect(upTo: 256 << 20))
    }

    static func request(_ method: HTTPMethod, _ url: String, _ body: Any? = nil, timeout: Int64 = 20,
                        authorization: String? = admin, rawBody: [UInt8]? = nil, contentType: String? = nil,
                        headers: [(String, String)] = []) async throws -> HTTPResult {
        var r = HTTPClientRequest(url: url)
        r.method = method
        if let authorization { r.headers.add(name: "Authorization", value: authorization) }
        for (name, value) in headers { r.headers.add(name: name, value: value) }
        if let rawBody {
            if let contentType { r.headers.add(name: "Content-Type", value: contentType) }
            r.body = .bytes(ByteBuffer(bytes: rawBody))
        } else if let body {
            r.headers.add(name: "Content-Type", value: "application/json")
            r.body = .bytes(ByteBuffer(data: try JSONSerialization.data(withJSONObject: body)))
        }
        let response = try await (url.hasPrefix("https:") ? tlsClient : timeout > 20 ? patientClient : client).execute(r, timeout: .seconds(timeout))
        let bytes = try await response.body.collect(upTo: 64 << 20)
        let data = Data(buffer: bytes)
        let json = (try? JSONSerialization.jsonObject(with: data)) as? Object ?? [:]
        return HTTPResult(status: Int(response.status.code), json: json, text: String(decoding: data, as: UTF8.self),
                          headers: response.headers.map { ($0.name.lowercased(), $0.value) })
    }
}

/// Where `swift build` put the `cairn` executable: next to the test bundle.
let cairnBinary: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    while dir.path != "/" {
        let candidate = dir.appendingPathComponent("cairn").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return ".build/debug/cairn"
}()

/// One `cairn server` process.
final class NodeProcess: @unchecked Sendable {
    let name: String
    let dataDir: String
    let httpPort: Int
    let raftPort: Int
    let logPath: String
    var extraArgs: [String]
    /// The user it joins as (its password is the admin's); nil: none (a join token, say).
    var joinAs: String? = "admin"
    /// Added to the process's environment.
    var environment: [String: String] = [:]
    private(set) var process: Process?
    var id: UInt64 = 0

    init(name: String, root: String, extraArgs: [String]) {
        self.name = name
        dataDir = root + "/" + name
        httpPort = freePort()
        raftPort = freePort()
        logPath = root + "/" + name + ".log"
        self.extraArgs = extraArgs
    }

    var http: String { "127.0.0.1:\(httpPort)" }
    var url: String { (extraArgs.contains("--http-tls-cert") ? "https://" : "http://") + http }

    func start(_ args: [String] = []) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cairnBinary)
        p.arguments = ["server", "--data-dir", dataDir, "--http-addr", http, "--raft-addr", "127.0.0.1:\(raftPort)",
                       "--enable-fault-injection"] + (joinAs.map { ["--join-as", $0] } ?? []) + extraArgs + args
        // Tests assert the shard counts they create: shards double, or split by load, only in the
        // tests of those.
        if !(extraArgs + args).contains("--min-replicas-per-node") { p.arguments! += ["--min-replicas-per-node", "0"] }
        if !(extraArgs + args).contains("--shard-split-ops-per-second") { p.arguments! += ["--shard-split-ops-per-second", "0"] }
        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_ADMIN_PASSWORD"] = TestHTTP.adminPassword
        environment["CAIRN_JOIN_PASSWORD"] = TestHTTP.adminPassword
        environment.merge(self.environment) { $1 }
        p.environment = environment
        if !FileManager.default.fileExists(atPath: logPath) { FileManager.default.createFile(atPath: logPath, contents: nil) }
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        out.seekToEndOfFile()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        process = p
    }

    var isRunning: Bool { process?.isRunning ?? false }

    /// Peak resident memory of the running process so far (VmHWM), from /proc.
    var peakRSSMiB: Int? {
        guard let pid = process?.processIdentifier,
              let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kb = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return nil }
        return kb / 1024
    }

    func kill9() async {
        guard let p = process, p.isRunning else { return }
        kill(p.processIdentifier, SIGKILL)
        _ = await exitStatus(of: p, seconds: 30)
    }

    func terminate() async {
        guard let p = process, p.isRunning else { return }
        kill(p.processIdentifier, SIGTERM)
        _ = await exitStatus(of: p, seconds: 30)
    }

    /// Waits for the process to exit by itself; nil if it is still running after `seconds`.
    func waitForExit(seconds: Double) async -> Int32? {
        guard let p = process else { return nil }
        return await exitStatus(of: p, seconds: seconds)
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func get(_ path: String) async throws -> HTTPResult { try await TestHTTP.request(.GET, url + path) }

    /// A request with a body sent exactly as given.
    func raw(_ method: HTTPMethod, _ path: String, _ body: String? = nil, contentType: String? = nil,
             authorization: String? = TestHTTP.admin, headers: [(String, String)] = []) async throws -> HTTPResult {
        try await TestHTTP.request(method, url + path, timeout: 20, authorization: authorization,
                                   rawBody: body.map { Array($0.utf8) } ?? (method == .POST ? [] : nil), contentType: contentType, headers: headers)
    }
    func post(_ path: String, _ body: Any) async throws -> HTTPResult { try await TestHTTP.request(.POST, url + path, body) }

    func execute(_ statements: [Any], db: String = "default") async throws -> HTTPResult {
        try await post("/v1/db/\(db)/execute", ["statements": statements])
    }

    func query(_ sql: String, consistency: String = "linearizable", db: String = "default") async throws -> HTTPResult {
        try await post("/v1/db/\(db)/query", ["statements": [sql], "consistency": consistency])
    }

    /// The rows of a successful single-statement query.
    func rows(_ sql: String, consistency: String = "linearizable") async throws -> [[Any]] {
        let r = try await query(sql, consistency: consistency)
        guard r.status == 200, let results = r.json["results"] as? [Object], let first = results.first,
              let rows = first["rows"] as? [[Any]] else {
            throw TestFailure("query on \(name) failed: \(r.status) \(r.text)")
        }
        return rows
    }

    func setFaults(partitioned: [UInt64]) async throws {
        let r = try await TestHTTP.request(.PUT, url + "/v1/debug/faults", ["partitioned": partitioned])
        guard r.status == 200 else { throw TestFailure("faults on \(name): \(r.status) \(r.text)") }
    }

    func status() async throws -> Object { try await get("/v1/status").json }

    func group(_ g: Int) async throws -> Object? {
        (try await status()["groups"] as? [Object])?.first { ($0["group"] as? Int) == g }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Several `cairn server` processes on loopback, each in its own data directory under a temporary root.
final class ProcessCluster: @unchecked Sendable {
    let root: String
    var nodes: [NodeProcess] = []

    init(_ label: String) {
        root = NSTemporaryDirectory() + "cairn-test-\(label)-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    /// `count` founders started together with `--bootstrap-expect`.
    /// `nodeArgs`: arguments of the `i`th node's own (from 0).
    static func founded(_ label: String, count: Int, extraArgs: [String] = [], nodeArgs: (Int) -> [String] = { _ in [] }) async throws -> ProcessCluster {
        let c = ProcessCluster(label)
        for i in 1...count { c.nodes.append(NodeProcess(name: "n\(i)", root: c.root, extraArgs: extraArgs + nodeArgs(i - 1))) }
        let join = c.nodes.map(\.http).joined(separator: ",")
        for n in c.nodes { try n.start(["--join", join, "--bootstrap-expect", "\(count)"]) }
        try await c.waitReady()
        return c
    }

    /// One node founding a cluster alone.
    static func single(_ label: String, extraArgs: [String] = []) async throws -> ProcessCluster {
        let c = ProcessCluster(label)
        c.nodes.append(NodeProcess(name: "n1", root: c.root, extraArgs: extraArgs))
        try c.nodes[0].start()
        try await c.waitReady()
        return c
    }

    /// Adds a node that joins through the first one.
    @discardableResult
    func join(extraArgs: [String] = [], nodeArgs: [String] = []) async throws -> NodeProcess {
        let n = NodeProcess(name: "n\(nodes.count + 1)", root: root, extraArgs: extraArgs)
        nodes.append(n)
        try n.start(["--join", nodes[0].http] + nodeArgs)
        try await waitReady([n])
        return n
    }

    func waitReady(_ which: [NodeProcess]? = nil, seconds: Double = 60) async throws {
        let end = Date().addingTimeInterval(seconds)
        for n in which ?? nodes.filter(\.isRunning) {
            var last = ""
            while true {
                if let r = try? await n.get("/v1/ready"), r.status == 200 {
                    n.id = UInt64(r.json["node"] as? Int ?? 0)
                    break
                } else if let r = try? await n.get("/v1/ready") {
                    last = r.text
                }
                guard Date() < end else { throw TestFailure("\(n.name) not ready after \(seconds) s: \(last)\n\(n.log.suffix(3000))") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// Cuts `node` off from every other node, both ways (Raft traffic; HTTP between nodes stays up).
    func cutOff(_ node: NodeProcess) async throws {
        let rest = nodes.filter { $0 !== node }
        try await node.setFaults(partitioned: rest.map(\.id))
        for n in rest { try await n.setFaults(partitioned: [node.id]) }
    }

    /// Ends every cut.
    func heal() async throws {
        for n in nodes { try await n.setFaults(partitioned: []) }
    }

    /// The node leading `group`, as the running nodes report it.
    func leader(of group: Int = 1) async throws -> NodeProcess {
        let end = Date().addingTimeInterval(20)
        while Date() < end {
            for n in nodes where n.isRunning {
                if let g = try? await n.group(group), g["role"] as? String == "leader" { return n }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestFailure("no leader for group \(group)")
    }

    func node(id: UInt64) -> NodeProcess? { nodes.first { $0.id == id } }

    /// Retries a write on every running node until one acknowledges it (or the deadline).
    func write(_ statements: [Any], seconds: Double = 20) async throws -> HTTPResult {
        let end = Date().addingTimeInterval(seconds)
        var k = Int.random(in: 0..<100)
        var last = ""
        while Date() < end {
            let running = nodes.filter(\.isRunning)
            k += 1
            if let r = try? await running[k % running.count].execute(statements), r.status == 200 { return r } else { last = "" }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("no node acknowledged the write within \(seconds) s \(last)")
    }

    /// The environment the `cairn` CLI runs in against this cluster: signed in as admin, its profile
    /// and history under the cluster's directory.
    var cliEnvironment: [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_HOME"] = root + "/home"
        environment["CAIRN_USER"] = "admin"
        environment["CAIRN_PASSWORD"] = TestHTTP.adminPassword
        return environment
    }

    /// Kills every process (without waiting: it runs from `defer`) and deletes the data.
    func destroy() {
        for n in nodes {
            if let p = n.process, p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        try? FileManager.default.removeItem(atPath: root)
    }
}

/// A GET with an Origin header (CORS checks).
struct HTTPClientRequestBuilder {
    var url: String
    var origin: String

    func send() async throws -> HTTPResult {
        var r = HTTPClientRequest(url: url)
        r.headers.add(name: "Origin", value: origin)
        let response = try await TestHTTP.client.execute(r, timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 1 << 20)
        return HTTPResult(status: Int(response.status.code), json: [:], text: "", headers: response.headers.map { ($0.name.lowercased(), $0.value) })
    }
}
