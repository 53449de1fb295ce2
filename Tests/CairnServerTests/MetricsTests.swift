import CairnTestSupport
import Foundation
import Testing

/// `/metrics` as Prometheus expects it: every family described, counters typed as counters and named
/// `_total`, the standard process metrics and the build's version; `promtool check metrics` agrees.
extension ProcessTests {
    @Test func metricsFollowPrometheusConventions() async throws {
        let c = try await ProcessCluster.single("metrics")
        defer { c.destroy() }
        let n = c.nodes[0]
        _ = try await n.post("/v1/db/default/execute", ["statements": ["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"]])
        _ = try await n.post("/v1/db/default/query", ["statements": ["SELECT * FROM t"]])
        let text = try await n.get("/metrics").text
        let lines = text.split(separator: "\n").map(String.init)
        var types: [String: String] = [:]
        for (k, line) in lines.enumerated() where line.hasPrefix("# TYPE ") {
            let parts = line.split(separator: " ")
            let name = String(parts[2]), type = String(parts[3])
            types[name] = type
            #expect(k > 0 && lines[k - 1].hasPrefix("# HELP \(name) "), "\(name) has no HELP line")
            #expect(!(lines[k - 1].contains("CairnDB metric \(name).")), "\(name) has only the generic HELP text: add it to MetricHelp")
            if type == "counter" { #expect(name.hasSuffix("_total"), "the counter \(name) is not named _total") }
        }
        #expect(types["cairn_wal_syncs_total"] == "counter")
        #expect(types["cairn_wal_syncs"] == nil, "a total exposed as a gauge")
        for family in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds",
                       "process_start_time_seconds", "cairn_build_info", "cairn_http_requests_total", "cairn_write_seconds",
                       "cairn_storage_failed", "cairn_snapshots_taken_total", "cairn_transport_envelopes_dropped_total",
                       "cairn_transport_handshakes_refused_total"] {
            #expect(types[family] != nil, "\(family) missing")
        }
        #expect(lines.contains { $0.hasPrefix("cairn_build_info{version=\"cairn-") })
        // Prometheus's own linter (Debian's prometheus package; .ci/run installs it).
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/promtool")
        p.arguments = ["check", "metrics"]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = output
        try p.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try input.fileHandleForWriting.close()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "promtool check metrics: \(said)")
    }
}
