import ArgumentParser
import CairnClient
import CairnJSON
import CairnServer
import CairnTransport
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `cairn demo`: a real local cluster in one command, as `cockroach demo` is: auth on with the
/// credentials it prints, sample data (a sharded table too), a shell opened in place that can kill,
/// stop and restart nodes, an optional background workload; gone again on Ctrl-C or on leaving the
/// shell.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Start a local cluster of real cairn server processes with sample data and open a shell on it; leaving stops it and deletes its data."
    )

    @Option(help: "Number of nodes.") var nodes: Int = 3
    @Option(help: "Shards of the sample sharded database `shop` (0: none).") var shards: Int = 4
    @Flag(help: "Run without authentication (anything on this machine can use the cluster).") var insecure = false
    @Flag(help: "Only serve: no shell (also when standard input is not a terminal); Ctrl-C stops the demo.") var noShell = false
    @Option(help: "Run this `cairn bench` workload against the cluster in the background (insert, select, mixed-90-10, mixed-50-50, kv-put, kv-get).")
    var workload: String?
    @Option(help: "Clients of the background workload.") var workloadClients: Int = 4

    /// The most nodes a demo runs, those shard-lb's /add starts included.
    static let maxNodes = 9

    func validate() throws {
        guard (1...Self.maxNodes).contains(nodes) else { throw ValidationError("--nodes must be between 1 and \(Self.maxNodes)") }
        guard (0...64).contains(shards) else { throw ValidationError("--shards must be between 0 and 64") }
        let workloads = ["insert", "batch-insert", "select", "mixed-90-10", "mixed-50-50", "kv-put", "kv-get"]
        if let workload, !workloads.contains(workload) { throw ValidationError("--workload must be one of \(workloads.joined(separator: ", "))") }
        guard (1...256).contains(workloadClients) else { throw ValidationError("--workload-clients must be between 1 and 256") }
    }

    func run() async throws {
        let root = NSTemporaryDirectory() + "cairn-demo-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let password = String(UUID().uuidString.prefix(13)).lowercased()
        let binary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let ports = (0..<(3 * nodes)).map { _ in freeLoopbackPort() }
        let http = (0..<nodes).map { "127.0.0.1:\(ports[3 * $0])" }
        // Each node also serves seed 004's load balancer API, under the server names its clients use.
        let shardLB = (0..<nodes).map { "127.0.0.1:\(ports[3 * $0 + 2])" }
        // Supervised local mode: shard-lb's /add asks this process for servers it names that have not
        // joined, as the seed's load balancer started containers (`LocalSupervisor`).
        let supervisorAddress = "127.0.0.1:\(freeLoopbackPort())"
        let supervisorToken = UUID().uuidString
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CAIRN_") }
        environment["CAIRN_ADMIN_PASSWORD"] = password
        environment["CAIRN_JOIN_PASSWORD"] = password
        environment[LocalSupervisor.tokenVariable] = supervisorToken
        let children = DemoNodes(binary: binary, environment: environment)
        let authorization: String? = insecure ? nil : CairnClient.basic(user: "admin", password: password)
        let shell = !noShell && isatty(STDIN_FILENO) != 0

        // Ctrl-C and SIGTERM stop the children and delete the data, whatever state the demo is in
        // (in the shell, Ctrl-C only drops the statement being typed: the terminal is in raw mode).
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let caught = CaughtSignal()
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            let source = DispatchSource.makeSignalSource(signal: sig)
            source.setEventHandler { caught.set(sig) }
            source.resume()
            sources.append(source)
        }
        // Polls with Task.sleep: Process.waitUntilExit from a task can deadlock with Foundation's
        // own child monitor, which shares the thread pool.
        func cleanUp() async {
            await children.stopAll()
            try? FileManager.default.removeItem(atPath: root)
        }

        /// Node `number` (from 1); `founders` lists the founding nodes' HTTP addresses.
        let insecure = self.insecure
        @Sendable func spec(_ number: Int, name: String, http address: String, raft: String, shardLB lb: String, founders: [String], bootstrap: Bool) -> DemoNodes.Spec {
            var args = ["server", "--data-dir", "\(root)/node\(number)", "--http-addr", address, "--raft-addr", raft,
                        "--name", name, "--compat", "shard-lb=\(lb)", "--supervisor", supervisorAddress]
            args += insecure ? ["--insecure-dev"] : ["--compat-user", "admin"]
            if founders.count > 1 || !bootstrap {
                args += ["--join", founders.joined(separator: ",")]
                args += bootstrap ? ["--bootstrap-expect", "\(founders.count)"] : (insecure ? [] : ["--join-as", "admin"])
            }
            return DemoNodes.Spec(number: number, name: name, http: address, arguments: args, log: "\(root)/node\(number).log")
        }

        say("Starting \(nodes) cairn server processes (data and logs in \(root)) ...")
        if insecure { say("WARNING: the demo runs WITHOUT authentication (--insecure): anything on this machine can use it.") }
        for i in 0..<nodes {
            try children.start(spec(i + 1, name: "Server\(i)", http: http[i], raft: "127.0.0.1:\(ports[3 * i + 1])", shardLB: shardLB[i],
                                    founders: http, bootstrap: true))
        }
        let supervisor = LocalSupervisor.application(
            address: PeerAddress(parsing: supervisorAddress)!, token: supervisorToken,
            spawn: { name in
                guard let number = children.reserve(limit: Self.maxNodes) else {
                    throw ClientError(status: 400, message: "the demo runs at most \(Self.maxNodes) nodes")
                }
                let address = "127.0.0.1:\(freeLoopbackPort())", lb = "127.0.0.1:\(freeLoopbackPort())"
                try children.start(spec(number, name: name, http: address, raft: "127.0.0.1:\(freeLoopbackPort())", shardLB: lb,
                                        founders: http, bootstrap: false))
                say("Started node \(number), \(name), for shard-lb's /add: API http://\(address), seed 004's API http://\(lb)")
                return address
            },
            onRunning: { _ in })
        let supervising = Task { try? await supervisor.runService(gracefulShutdownSignals: []) }

        let client = CairnClient(baseURL: "http://" + http[0], authorization: authorization)
        do {
            let deadline = Date() + 60
            for address in http {
                let probe = CairnClient(baseURL: "http://" + address)
                defer { Task { await probe.shutdown() } }
                while (try? await probe.raw(.GET, "/v1/ready"))?.status != 200 {
                    guard Date() < deadline, children.all.allSatisfy(\.isRunning) else {
                        throw ClientError(status: 0, message: "the cluster did not become ready; see the logs in \(root)")
                    }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            try await client.call(.POST, "/v1/db/default/execute", .object([("atomic", .bool(true)), ("statements", .array(Self.sample.map { .string($0) }))]))
            if shards > 0 {
                try await client.call(.POST, "/v1/databases", .object([("name", .string("shop")), ("shards", .int(shards))]))
                try await client.call(.POST, "/v1/db/shop/execute", .object([("statements", .array([.string(Self.shardedTable)]))]))
                try await client.call(.POST, "/v1/db/shop/execute", .object([("statements", .array([.string(Self.shardedRows)]))]))
            }
        } catch {
            printError(error)
            await cleanUp()
            throw ExitCode(1)
        }

        if let workload {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = ["bench", "--host", "http://" + http[0], "--workload", workload, "--concurrency", "\(workloadClients)",
                           "--duration", "31536000", "--warmup", "0", "--database", "workload"]
            var env = environment
            if !insecure {
                env["CAIRN_USER"] = "admin"
                env["CAIRN_PASSWORD"] = password
            }
            env["CAIRN_HOME"] = root + "/home"
            p.environment = env
            FileManager.default.createFile(atPath: root + "/workload.log", contents: nil)
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: root + "/workload.log"))
            p.standardOutput = log
            p.standardError = log
            try p.run()
            children.adopt(p)
        }

        let nodeList = (1...nodes).map { "node \($0)" }.joined(separator: ", ")
        say("""

            CairnDB demo cluster is up: \(nodes) node\(nodes == 1 ? "" : "s") (\(nodeList)); sample tables `cities` and `trips` in database `default`\(shards > 0 ? ", `orders` sharded over \(shards) shards in database `shop`" : "").

              API (any node):  \(http.map { "http://\($0)" }.joined(separator: "  "))
              Web console:     http://\(http[0])/console
              Shell:           \(binary) shell --host http://\(http[0])
              Credentials:     \(insecure ? "none needed (--insecure)" : "admin / \(password)")
              Try:             curl -s \(insecure ? "" : "-u admin:\(password) ")-XPOST http://\(http[0])/v1/db/default/query -d '{"statements":["SELECT name, population FROM cities ORDER BY population DESC LIMIT 3"]}'
              Seed 004's API:  \(shardLB.map { "http://\($0)" }.joined(separator: "  "))  (nodes named \((0..<nodes).map { "Server\($0)" }.joined(separator: ", ")); see the README)
            \(workload.map { "  Workload:        \($0) from \(workloadClients) clients (progress in \(root)/workload.log)\n" } ?? "")
            \(shell ? "In the shell, .demo ls|kill N|stop N|restart N acts on the nodes; .quit (or Ctrl-D) stops every node and deletes the demo's data." : "Press Ctrl-C to stop every node and delete the demo's data.")
            """)

        var reason: Int32 = 0
        if shell {
            // The shell waits on the terminal: SIGTERM (or SIGINT from outside) still stops the demo,
            // with the terminal put back as it was.
            var terminal = termios()
            tcgetattr(STDIN_FILENO, &terminal)
            let original = terminal
            let watcher = Task.detached {
                while !Task.isCancelled {
                    if let sig = caught.value {
                        var restore = original
                        tcsetattr(STDIN_FILENO, TCSADRAIN, &restore)
                        say("\nSignal \(sig): stopping every node and deleting \(root) ...")
                        await children.stopAll()
                        try? FileManager.default.removeItem(atPath: root)
                        say("Done.")
                        Glibc.exit(0)
                    }
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            defer { watcher.cancel() }
            try? FileManager.default.createDirectory(atPath: Profile.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            var session = Shell(client: client, database: "default", editor: LineEditor(historyPath: Profile.directory + "/history"))
            session.demo = children
            await session.loop()
        } else {
            // Wait for Ctrl-C, or for a node to die (then say so and stop the rest).
            while reason == 0 {
                if let sig = caught.value { reason = sig } else if let dead = children.all.firstIndex(where: { !$0.isRunning }) { reason = -Int32(dead + 1) }
                try? await Task.sleep(for: .milliseconds(100))
            }
            if reason < 0 { say("\nNode \(-reason) stopped unexpectedly; see \(root)/node\(-reason).log. Stopping the demo.") }
        }
        await client.shutdown()
        let count = children.all.count
        say("\nStopping \(count) node\(count == 1 ? "" : "s") and deleting \(root) ...")
        supervising.cancel()
        await cleanUp()
        say("Done.")
        _ = sources
        if reason < 0 { throw ExitCode(1) }
    }

    static let sample = [
        "CREATE TABLE cities (id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT NOT NULL, population INTEGER)",
        "INSERT INTO cities (name, country, population) VALUES ('Tokyo', 'Japan', 37400068), ('Delhi', 'India', 28514000), ('Shanghai', 'China', 25582000), ('São Paulo', 'Brazil', 21650000), ('Mexico City', 'Mexico', 21581000), ('Cairo', 'Egypt', 20076000), ('Mumbai', 'India', 19980000), ('Beijing', 'China', 19618000), ('Osaka', 'Japan', 19281000), ('New York', 'United States', 18819000)",
        "CREATE TABLE trips (id INTEGER PRIMARY KEY, city_id INTEGER REFERENCES cities(id), traveller TEXT, started TEXT DEFAULT CURRENT_TIMESTAMP, km REAL)",
        "INSERT INTO trips (city_id, traveller, km) VALUES (1, 'ada', 12.5), (3, 'grace', 40.2), (10, 'alan', 7.9), (6, 'ada', 22.0), (2, 'edsger', 15.3)",
    ]

    static let shardedTable = "CREATE TABLE orders (customer INTEGER NOT NULL, id INTEGER NOT NULL, item TEXT, amount REAL, PRIMARY KEY (customer, id)) SHARD BY HASH (customer)"
    static let shardedRows = "INSERT INTO orders VALUES " + (1...24).map { "(\($0 % 8 + 1), \($0), '" + ["tea", "bread", "rice", "salt"][$0 % 4] + "', \(Double($0 * 37 % 50) + 0.5))" }.joined(separator: ", ")
}

/// The demo's server processes, those the supervisor starts included, by number (from 1), each
/// restartable from its data directory.
final class DemoNodes: DemoControl, Sendable {
    struct Spec: Sendable {
        var number: Int
        var name: String
        var http: String
        var arguments: [String]
        var log: String
    }

    private let binary: String
    private let environment: [String: String]
    private let state = Mutex<(specs: [Int: Spec], processes: [Int: Process], reserved: Int)>(([:], [:], 0))

    init(binary: String, environment: [String: String]) {
        self.binary = binary
        self.environment = environment
    }

    var all: [Process] { state.withLock { s in s.processes.keys.sorted().map { s.processes[$0]! } } }
    /// Other processes the demo runs (the workload), stopped with the nodes.
    var extras: [Process] { others.withLock { $0 } }
    private let others = Mutex<[Process]>([])

    func adopt(_ p: Process) { others.withLock { $0.append(p) } }

    /// SIGTERM to every process, SIGKILL to those still running 10 s later.
    func stopAll() async {
        let all = self.all + extras
        for p in all where p.isRunning { Glibc.kill(p.processIdentifier, SIGTERM) }
        var deadline = Date() + 10
        while all.contains(where: \.isRunning) && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        for p in all where p.isRunning { Glibc.kill(p.processIdentifier, SIGKILL) }
        deadline = Date() + 5
        while all.contains(where: \.isRunning) && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
    }

    func start(_ spec: Spec) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = spec.arguments
        p.environment = environment
        if !FileManager.default.fileExists(atPath: spec.log) { FileManager.default.createFile(atPath: spec.log, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: spec.log))
        _ = try? log.seekToEnd()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        state.withLock { s in
            s.specs[spec.number] = spec
            s.processes[spec.number] = p
        }
    }

    /// The number (from 1) of the next node, if fewer than `limit` run or are starting.
    func reserve(limit: Int) -> Int? {
        state.withLock { s in
            let count = max(s.processes.count, s.reserved)
            guard count < limit else { return nil }
            s.reserved = count + 1
            return count + 1
        }
    }

    func describe() -> String {
        state.withLock { s in
            s.specs.keys.sorted().map { n in
                let spec = s.specs[n]!
                return "node \(n) (\(spec.name)): http://\(spec.http), " + (s.processes[n]?.isRunning == true ? "running, pid \(s.processes[n]!.processIdentifier)" : "stopped")
            }.joined(separator: "\n")
        }
    }

    func signal(_ number: Int, _ sig: Int32) async -> String {
        guard let p = state.withLock({ $0.processes[number] }) else { return "Error: no node \(number) (see .demo ls)" }
        guard p.isRunning else { return "Node \(number) is stopped already." }
        Glibc.kill(p.processIdentifier, sig)
        let deadline = Date() + 30
        while p.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return p.isRunning ? "Error: node \(number) did not stop" : "Node \(number) " + (sig == SIGKILL ? "killed (kill -9)." : "stopped (SIGTERM: its leadership handed over first).")
    }

    func kill(_ number: Int) async -> String { await signal(number, SIGKILL) }
    func stop(_ number: Int) async -> String { await signal(number, SIGTERM) }

    func restart(_ number: Int) async -> String {
        guard let (spec, p) = state.withLock({ s in s.specs[number].map { ($0, s.processes[number]) } }) else { return "Error: no node \(number) (see .demo ls)" }
        if p?.isRunning == true { return "Node \(number) is running; .demo stop \(number) or .demo kill \(number) first." }
        do {
            try start(spec)
        } catch {
            return "Error: cannot start node \(number): \(error)"
        }
        let probe = CairnClient(baseURL: "http://" + spec.http)
        defer { Task { await probe.shutdown() } }
        let deadline = Date() + 60
        while (try? await probe.raw(.GET, "/v1/ready"))?.status != 200 {
            guard Date() < deadline else { return "Node \(number) started but is not ready yet; see its log \(spec.log)" }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return "Node \(number) restarted from its data directory and is ready."
    }
}

/// A loopback port nothing listens on right now.
func freeLoopbackPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// The signal that asked the demo to stop, set from a dispatch source.
final class CaughtSignal: Sendable {
    private let caught = Mutex<Int32?>(nil)

    func set(_ sig: Int32) { caught.withLock { $0 = sig } }
    var value: Int32? { caught.withLock { $0 } }
}

/// Writes at once, even into a pipe or a file, so whoever started the demo sees the URLs immediately.
func say(_ text: String) {
    try? FileHandle.standardOutput.write(contentsOf: Data((text + "\n").utf8))
}
