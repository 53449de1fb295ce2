import ArgumentParser
import AsyncHTTPClient
import CairnClient
import CairnJSON
import Foundation
import Histogram
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `cairn bench`: a load generator against a running cluster (native API, or rqlite's with --rqlite).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Load a running cluster and report throughput and latency percentiles.",
        discussion: """
            Workloads: insert (one row per request), batch-insert (--batch rows per request), select (point read by \
            primary key at --consistency), mixed-90-10 and mixed-50-50 (reads/writes), kv-put and kv-get (upsert \
            and get by key). Reads and updates use --keys pre-loaded rows, drawn uniformly or zipfian.
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "insert, batch-insert, select, mixed-90-10, mixed-50-50, kv-put, kv-get.") var workload: String = "insert"
    @Option(help: "Concurrent clients.") var concurrency: Int = 16
    @Option(help: "Seconds to measure (unless --ops is given).") var duration: Double = 10
    @Option(help: "Operations to measure instead of a duration.") var ops: Int?
    @Option(help: "Seconds of load before measuring.") var warmup: Double = 2
    @Option(help: "Rows loaded for reads and updates.") var keys: Int = 10_000
    @Option(help: "uniform or zipfian.") var distribution: String = "uniform"
    @Option(help: "Bytes per value.") var valueSize: Int = 100
    @Option(help: "Rows per request for batch-insert.") var batch: Int = 10
    @Option(help: "Database (created if missing).") var database: String = "bench"
    @Option(help: "Read level: linearizable, stale or local.") var consistency: String = "linearizable"
    @Flag(help: "Use rqlite's API (/db/execute, /db/query) on the default database.") var rqlite = false
    @Flag(help: "Skip creating and loading the table (it is there from an earlier run).") var noSetup = false
    @Flag(help: "Print the result as JSON.") var json = false

    func validate() throws {
        let workloads = ["insert", "batch-insert", "select", "mixed-90-10", "mixed-50-50", "kv-put", "kv-get"]
        guard workloads.contains(workload) else { throw ValidationError("--workload must be one of \(workloads.joined(separator: ", "))") }
        guard ["uniform", "zipfian"].contains(distribution) else { throw ValidationError("--distribution must be uniform or zipfian") }
        guard concurrency >= 1, keys >= 1, valueSize >= 0, batch >= 1 else { throw ValidationError("counts must be positive") }
    }

    func run() async throws {
        let base = try await connection.connect()
        let authorization = base.authorization
        let db = rqlite ? "default" : database
        do {
            if !noSetup { try await setUp(base, db: db) }
        } catch {
            printError(error)
            throw ExitCode(1)
        }
        await base.shutdown()

        var config = HTTPClient.Configuration(timeout: .init(connect: .seconds(5), read: .seconds(60)))
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: concurrency)
        let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: config)
        let keysChooser = KeyChooser(count: keys, zipfian: distribution == "zipfian")
        let value = String(repeating: "x", count: valueSize)
        let state = BenchState()
        let url = connection.hostURL
        let started = ContinuousClock.now
        let measureFrom = started + .milliseconds(Int64(warmup * 1000))
        let end = ops == nil ? measureFrom + .milliseconds(Int64(duration * 1000)) : nil
        let showProgress = isatty(STDERR_FILENO) != 0
        let progress = Task {
            while showProgress && !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                state.progressLine(since: measureFrom)
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for client in 0..<concurrency {
                group.addTask {
                    var rng = SystemRandomNumberGenerator()
                    var seq = 0
                    var local = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
                    var errors = 0, done = 0
                    while true {
                        let now = ContinuousClock.now
                        if let end, now >= end { break }
                        if let ops, state.measured >= ops { break }
                        seq += 1
                        let (path, body) = request(client: client, seq: seq, db: db, value: value, keys: keysChooser, rng: &rng)
                        var r = HTTPClientRequest(url: url + path)
                        r.method = .POST
                        r.headers.add(name: "Content-Type", value: "application/json")
                        if let authorization, !authorization.isEmpty { r.headers.add(name: "Authorization", value: authorization) }
                        r.body = .bytes(ByteBuffer(bytes: body))
                        let t0 = ContinuousClock.now
                        var ok = false
                        if let response = try? await http.execute(r, timeout: .seconds(60)),
                           let bytes = try? await response.body.collect(upTo: 16 << 20) {
                            ok = response.status == .ok && Self.noError(bytes)
                        }
                        let t1 = ContinuousClock.now
                        guard t0 >= measureFrom else { continue }
                        let micros = (t1 - t0).components.seconds * 1_000_000 + (t1 - t0).components.attoseconds / 1_000_000_000_000
                        if ok { _ = local.record(UInt64(max(1, micros))); done += 1 } else { errors += 1 }
                        if done % 64 == 0 || !ok { state.publish(&local, done: &done, errors: &errors) }
                    }
                    state.publish(&local, done: &done, errors: &errors)
                }
            }
        }
        progress.cancel()
        let elapsed = ContinuousClock.now - measureFrom
        try? await http.shutdown()
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let result = state.summary(seconds: seconds)
        if showProgress { try? FileHandle.standardError.write(contentsOf: Data("\r\u{1B}[K".utf8)) }
        if json {
            let fields: [(String, JSON)] = [("workload", .string(workload)), ("api", .string(rqlite ? "rqlite" : "native")),
                                            ("concurrency", .int(concurrency)), ("seconds", JSON.goNumber(seconds)),
                                            ("operations", .int(result.ops)), ("errors", .int(result.errors)),
                                            ("throughput", JSON.goNumber(result.throughput)),
                                            ("latency_us", .object(result.percentiles.map { ($0.0, .int($0.1)) }))]
            print(String(decoding: JSON.object(fields).serialized(), as: UTF8.self))
        } else {
            print("\(workload) (\(rqlite ? "rqlite API" : "native API")), \(concurrency) clients, \(String(format: "%.1f", seconds)) s: \(result.ops) operations, \(result.errors) errors, \(String(format: "%.0f", result.throughput)) ops/s")
            print("latency: " + result.percentiles.map { "\($0.0) \(Self.format(micros: $0.1))" }.joined(separator: ", "))
        }
    }

    static func noError(_ bytes: ByteBuffer) -> Bool {
        !String(buffer: bytes).contains("\"error\"")
    }

    static func format(micros: UInt64) -> String {
        micros >= 1000 ? String(format: "%.2f ms", Double(micros) / 1000) : "\(micros) µs"
    }

    private func setUp(_ client: CairnClient, db: String) async throws {
        if !rqlite {
            let dbs = try await client.call(.GET, "/v1/databases")
            if case .array(let list)? = dbs["databases"], !list.contains(where: { $0["name"] == .string(db) }) {
                try await client.call(.POST, "/v1/databases", .object([("name", .string(db))]))
            }
        }
        try await exec(client, db: db, ["DROP TABLE IF EXISTS bench", "CREATE TABLE bench(k INTEGER PRIMARY KEY, v TEXT)"])
        let value = String(repeating: "x", count: valueSize)
        var k = 0
        while k < keys {
            let n = min(500, keys - k)
            let rows = (0..<n).map { "(\(k + $0), '\(value)')" }.joined(separator: ",")
            try await exec(client, db: db, ["INSERT INTO bench(k, v) VALUES " + rows])
            k += n
        }
    }

    private func exec(_ client: CairnClient, db: String, _ statements: [String]) async throws {
        if rqlite {
            let (status, body) = try await client.raw(.POST, "/db/execute", body: JSON.array(statements.map { .string($0) }).serialized())
            guard status == 200, !String(decoding: body, as: UTF8.self).contains("\"error\"") else {
                throw ClientError(status: status, message: String(decoding: body, as: UTF8.self))
            }
        } else {
            try await client.call(.POST, "/v1/db/\(db)/execute", .object([("statements", .array(statements.map { .string($0) }))]))
        }
    }

    /// One operation's path and body.
    private func request(client: Int, seq: Int, db: String, value: String, keys: KeyChooser,
                         rng: inout SystemRandomNumberGenerator) -> (String, [UInt8]) {
        enum Kind { case insert, batch, read, upsert }
        let kind: Kind
        switch workload {
        case "insert": kind = .insert
        case "batch-insert": kind = .batch
        case "select", "kv-get": kind = .read
        case "kv-put": kind = .upsert
        case "mixed-90-10": kind = Int.random(in: 0..<100, using: &rng) < 90 ? .read : .upsert
        default: kind = Int.random(in: 0..<100, using: &rng) < 50 ? .read : .upsert
        }
        let key = keys.next(&rng)
        // New rows get keys above the loaded ones, distinct per client and request.
        let fresh = keys.count + (client << 40) + seq * batch
        let statements: [JSON]
        switch kind {
        case .insert: statements = [.array([.string("INSERT INTO bench(k, v) VALUES(?, ?)"), .int(fresh), .string(value)])]
        case .batch:
            let rows = (0..<batch).map { "(\(fresh + $0), ?)" }.joined(separator: ",")
            statements = [.array([.string("INSERT INTO bench(k, v) VALUES " + rows)] + Array(repeating: JSON.string(value), count: batch))]
        case .read: statements = [.array([.string("SELECT v FROM bench WHERE k = ?"), .int(key)])]
        case .upsert: statements = [.array([.string("INSERT OR REPLACE INTO bench(k, v) VALUES(?, ?)"), .int(key), .string(value)])]
        }
        if rqlite {
            let level = consistency == "linearizable" ? "linearizable" : "none"
            return (kind == .read ? "/db/query?level=\(level)" : "/db/execute", JSON.array(statements).serialized())
        }
        if kind == .read {
            return ("/v1/db/\(db)/query", JSON.object([("statements", .array(statements)), ("consistency", .string(consistency))]).serialized())
        }
        return ("/v1/db/\(db)/execute", JSON.object([("statements", .array(statements))]).serialized())
    }
}

/// Keys 0..<count, uniform or zipfian (theta 0.99, as YCSB).
final class KeyChooser: Sendable {
    let count: Int
    private let cdf: [Double]

    init(count: Int, zipfian: Bool) {
        self.count = count
        guard zipfian else { cdf = []; return }
        var weights = (1...count).map { 1 / pow(Double($0), 0.99) }
        let total = weights.reduce(0, +)
        var running = 0.0
        for i in weights.indices { running += weights[i] / total; weights[i] = running }
        cdf = weights
    }

    func next(_ rng: inout SystemRandomNumberGenerator) -> Int {
        guard !cdf.isEmpty else { return Int.random(in: 0..<count, using: &rng) }
        let u = Double.random(in: 0..<1, using: &rng)
        var lo = 0, hi = cdf.count - 1
        while lo < hi {
            let mid = (lo + hi) / 2
            if cdf[mid] < u { lo = mid + 1 } else { hi = mid }
        }
        // Hot keys spread over the key space rather than all at its start.
        return (lo &* 2_654_435_761) % count
    }
}

/// Results merged from every client.
final class BenchState: Sendable {
    private struct Totals {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var ops = 0
        var errors = 0
    }
    private let totals = Mutex(Totals())

    var measured: Int { totals.withLock { $0.ops } }

    func publish(_ local: inout Histogram<UInt64>, done: inout Int, errors: inout Int) {
        let snapshot = local
        let d = done, e = errors
        totals.withLock { t in
            t.histogram.add(snapshot)
            t.ops += d
            t.errors += e
        }
        local.reset()
        done = 0
        errors = 0
    }

    func progressLine(since start: ContinuousClock.Instant) {
        let (ops, errors, p99) = totals.withLock { ($0.ops, $0.errors, $0.histogram.valueAtPercentile(99)) }
        let elapsed = ContinuousClock.now - start
        let seconds = max(0.001, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        guard seconds > 0 else { return }
        let line = String(format: "\r\u{1B}[K%.0f s: %d ops (%.0f/s), %d errors, p99 %@", seconds, ops, Double(ops) / seconds, errors,
                          BenchCommand.format(micros: p99))
        try? FileHandle.standardError.write(contentsOf: Data(line.utf8))
    }

    func summary(seconds: Double) -> (ops: Int, errors: Int, throughput: Double, percentiles: [(String, UInt64)]) {
        totals.withLock { t in
            let h = t.histogram
            let ps: [(String, UInt64)] = [("p50", h.valueAtPercentile(50)), ("p90", h.valueAtPercentile(90)), ("p99", h.valueAtPercentile(99)),
                                          ("p99.9", h.valueAtPercentile(99.9)), ("max", h.max)]
            return (t.ops, t.errors, Double(t.ops) / max(seconds, 0.001), ps)
        }
    }
}
