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

/// `cairn demo`: a real local cluster in one command, gone again on Ctrl-C.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Start a local cluster of real cairn server processes with sample data; Ctrl-C stops it and deletes its data."
    )

    @Option(help: "Number of nodes.") var nodes: Int = 3

    /// The most nodes a demo runs, those shard-lb's /add starts included.
    static let maxNodes = 9

    func validate() throws {
        guard (1...Self.maxNodes).contains(nodes) else { throw ValidationError("--nodes must be between 1 and \(Self.maxNodes)") }
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
        let children = DemoChildren()
        // Supervised local mode: shard-lb's /add asks this process for servers it names that have not
        // joined, as the seed's load balancer started containers (`LocalSupervisor`).
        let supervisorAddress = "127.0.0.1:\(freeLoopbackPort())"
        let supervisorToken = UUID().uuidString

        // Ctrl-C and SIGTERM stop the children and delete the data, whatever state the demo is in.
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
            let all = children.all
            for child in all where child.isRunning { kill(child.processIdentifier, SIGTERM) }
            var deadline = Date() + 10
            while all.contains(where: \.isRunning) && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            for child in all where child.isRunning { kill(child.processIdentifier, SIGKILL) }
            deadline = Date() + 5
            while all.contains(where: \.isRunning) && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            try? FileManager.default.removeItem(atPath: root)
        }

        /// Starts node `number` (from 1); `founders` lists the founding nodes' HTTP addresses.
        @Sendable func start(_ number: Int, name: String, http address: String, raft: String, shardLB lb: String, founders: [String], bootstrap: Bool) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            var args = ["server", "--data-dir", "\(root)/node\(number)", "--http-addr", address, "--raft-addr", raft,
                        "--insecure-dev", "--name", name, "--compat", "shard-lb=\(lb)", "--supervisor", supervisorAddress]
            if founders.count > 1 { args += ["--join", founders.joined(separator: ",")] + (bootstrap ? ["--bootstrap-expect", "\(founders.count)"] : []) }
            p.arguments = args
            var environment = ProcessInfo.processInfo.environment
            environment["CAIRN_ADMIN_PASSWORD"] = password
            environment[LocalSupervisor.tokenVariable] = supervisorToken
            p.environment = environment
            let logPath = "\(root)/node\(number).log"
            FileManager.default.createFile(atPath: logPath, contents: nil)
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
            p.standardOutput = log
            p.standardError = log
            try p.run()
            children.append(p)
        }

        say("Starting \(nodes) cairn server processes (data and logs in \(root)) ...")
        say("WARNING: the demo runs WITHOUT authentication (--insecure-dev): anything on this machine can use it.")
        for i in 0..<nodes {
            try start(i + 1, name: "Server\(i)", http: http[i], raft: "127.0.0.1:\(ports[3 * i + 1])", shardLB: shardLB[i], founders: http, bootstrap: true)
        }
        let supervisor = LocalSupervisor.application(
            address: PeerAddress(parsing: supervisorAddress)!, token: supervisorToken,
            spawn: { name in
                guard let number = children.reserve(limit: Self.maxNodes) else {
                    throw ClientError(status: 400, message: "the demo runs at most \(Self.maxNodes) nodes")
                }
                let address = "127.0.0.1:\(freeLoopbackPort())", lb = "127.0.0.1:\(freeLoopbackPort())"
                try start(number, name: name, http: address, raft: "127.0.0.1:\(freeLoopbackPort())", shardLB: lb, founders: http, bootstrap: false)
                say("Started node \(number), \(name), for shard-lb's /add: API http://\(address), seed 004's API http://\(lb)")
                return address
            },
            onRunning: { _ in })
        let supervising = Task { try? await supervisor.runService(gracefulShutdownSignals: []) }

        let client = CairnClient(baseURL: "http://" + http[0])
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
        } catch {
            printError(error)
            await cleanUp()
            throw ExitCode(1)
        }
        await client.shutdown()

        say("""

            CairnDB demo cluster is up: \(nodes) node\(nodes == 1 ? "" : "s"), sample tables `cities` and `trips` in database `default`.

              API (any node):  \(http.map { "http://\($0)" }.joined(separator: "  "))
              Web console:     http://\(http[0])/console
              Shell:           \(binary) shell --host http://\(http[0])
              Credentials:     admin / \(password)
              Try:             curl -s -XPOST http://\(http[0])/v1/db/default/query -d '{"statements":["SELECT name, population FROM cities ORDER BY population DESC LIMIT 3"]}'
              Seed 004's API:  \(shardLB.map { "http://\($0)" }.joined(separator: "  "))  (nodes named \((0..<nodes).map { "Server\($0)" }.joined(separator: ", ")); see the README)

            Press Ctrl-C to stop every node and delete the demo's data.
            """)

        // Wait for Ctrl-C, or for a node to die (then say so and stop the rest).
        var reason: Int32 = 0
        while reason == 0 {
            if let sig = caught.value { reason = sig } else if let dead = children.all.firstIndex(where: { !$0.isRunning }) { reason = -Int32(dead + 1) }
            try? await Task.sleep(for: .milliseconds(100))
        }
        if reason < 0 { say("\nNode \(-reason) stopped unexpectedly; see \(root)/node\(-reason).log. Stopping the demo.") }
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

/// The demo's server processes, those the supervisor starts included.
final class DemoChildren: Sendable {
    private let state = Mutex<(processes: [Process], reserved: Int)>(([], 0))

    var all: [Process] { state.withLock { $0.processes } }

    func append(_ p: Process) { state.withLock { $0.processes.append(p) } }

    /// The number (from 1) of the next node, if fewer than `limit` run or are starting.
    func reserve(limit: Int) -> Int? {
        state.withLock { s in
            let count = max(s.processes.count, s.reserved)
            guard count < limit else { return nil }
            s.reserved = count + 1
            return count + 1
        }
    }
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
