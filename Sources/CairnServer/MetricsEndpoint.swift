import CairnCluster
import CairnNode
import Foundation
import Hummingbird
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import Prometheus

/// Prometheus exposition of the process's swift-metrics, plus per-group Raft gauges read at scrape time.
final class MetricsExporter: Sendable {
    let registry = PrometheusCollectorRegistry()

    /// Installs the exporter as the process's metrics backend (once per process).
    static let shared: MetricsExporter = {
        let exporter = MetricsExporter()
        var factory = PrometheusMetricsFactory(registry: exporter.registry)
        factory.defaultDurationHistogramBuckets = [.microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
                                                   .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                                   .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                                                   .seconds(1), .seconds(2.5), .seconds(5), .seconds(10)]
        MetricsSystem.bootstrap(factory)
        return exporter
    }()

    func render(runtime: NodeRuntime, catalog: Catalog) async -> [UInt8] {
        for (g, s) in (try? await runtime.statuses()) ?? [] {
            let d = [("group", String(g))]
            // Which database (and shard of it) a group is, to join the per-group series on.
            if let entry = catalog.database(group: g) {
                let shard = Catalog.shardOf(entry.name)
                Gauge(label: "cairn_group_info", dimensions: d + [("database", shard?.database ?? entry.name),
                                                                  ("shard", shard.map { String($0.shard) } ?? "")]).record(1)
            }
            Gauge(label: "cairn_raft_term", dimensions: d).record(Double(s.term))
            Gauge(label: "cairn_raft_commit_index", dimensions: d).record(Double(s.commit))
            Gauge(label: "cairn_raft_applied_index", dimensions: d).record(Double(s.applied))
            Gauge(label: "cairn_raft_is_leader", dimensions: d).record(s.role == .leader ? 1 : 0)
            if s.role == .leader {
                // How far each other copy's disk trails the leader's log: a copy falling behind shows
                // here before it needs a snapshot.
                for peer in Set(s.config.voters + s.config.learners) where peer != runtime.config.nodeID {
                    Gauge(label: "cairn_raft_follower_lag_entries", dimensions: d + [("peer", String(peer))])
                        .record(Double(s.lastIndex >= (s.matchIndex[peer] ?? 0) ? s.lastIndex - (s.matchIndex[peer] ?? 0) : 0))
                }
            }
            if let c = runtime.consistency(group: g) {
                Gauge(label: "cairn_consistency_checks", dimensions: d).record(Double(c.checks))
                Gauge(label: "cairn_consistency_mismatch", dimensions: d).record(c.mismatch == nil ? 0 : 1)
            }
        }
        var out: [UInt8] = []
        registry.emit(into: &out)
        var text = MetricHelp.described(String(decoding: out, as: UTF8.self))
        // Totals the runtime keeps itself: counters, written as such (a gauge handle would say gauge).
        text += MetricHelp.family("cairn_wal_syncs_total", "counter", [("", Double(runtime.syncCount))])
        text += MetricHelp.family("cairn_apply_loop_busy_seconds_total", "counter", [("", Double(runtime.applyLoopBusyMillis) / 1000)])
        text += MetricHelp.family("cairn_build_info", "gauge", [("{version=\"\(cairnVersion)\"}", 1)])
        text += MetricHelp.family("cairn_storage_failed", "gauge", [("", runtime.failure == nil ? 0 : 1)])
        let snapshots = runtime.snapshotStats
        text += MetricHelp.family("cairn_snapshots_taken_total", "counter", [("", Double(snapshots.taken))])
        text += MetricHelp.family("cairn_snapshots_installed_total", "counter", [("", Double(snapshots.installed))])
        text += MetricHelp.family("cairn_snapshot_chunks_sent_total", "counter", [("", Double(snapshots.chunksSent))])
        text += MetricHelp.family("cairn_snapshot_chunks_received_total", "counter", [("", Double(snapshots.chunksReceived))])
        let transport = runtime.transport.stats
        text += MetricHelp.family("cairn_transport_frames_sent_total", "counter", [("", Double(transport.framesSent))])
        text += MetricHelp.family("cairn_transport_envelopes_sent_total", "counter", [("", Double(transport.envelopesSent))])
        text += MetricHelp.family("cairn_transport_envelopes_dropped_total", "counter", [
            ("{reason=\"queue_full\"}", Double(transport.envelopesDroppedQueueFull)),
            ("{reason=\"unreachable\"}", Double(transport.envelopesDroppedUnreachable)),
            ("{reason=\"fault\"}", Double(transport.envelopesDroppedFault)),
        ])
        text += MetricHelp.family("cairn_transport_connections_opened_total", "counter", [("", Double(transport.connectionsOpened))])
        text += MetricHelp.family("cairn_transport_handshakes_refused_total", "counter", [("", Double(transport.handshakesRefused))])
        text += MetricHelp.family("cairn_transport_connections_refused_at_limit_total", "counter", [("", Double(transport.connectionsRefusedAtLimit))])
        text += MetricHelp.family("cairn_transport_outgoing_errors_total", "counter", [("", Double(transport.outgoingErrors))])
        text += ProcessMetrics.render()
        return Array(text.utf8)
    }
}

/// What each metric family means: Prometheus shows it as `# HELP`, and a family without one is
/// refused by `promtool check metrics`. A family added without a line here gets a generic text, which
/// the metrics test refuses.
enum MetricHelp {
    static let text: [String: String] = [
        "cairn_apply_batch_seconds": "Time to apply one batch of committed entries to SQLite.",
        "cairn_apply_loop_busy_seconds_total": "Time the apply loop spent applying entries and taking snapshots.",
        "cairn_build_info": "The running build: its version as a label, always 1.",
        "cairn_consistency_checks": "Consistency checks of a group's replicas this node has run as its leader.",
        "cairn_consistency_mismatch": "1 if the last consistency check found a replica of the group that differs, else 0.",
        "cairn_group_commit_waits_total": "Raft passes that waited to share one log sync with writes arriving under load (group commit).",
        "cairn_group_info": "Which database (and shard of it) each group hosted here is; always 1.",
        "cairn_http_forwarded_in_total": "HTTP requests another node forwarded to this one.",
        "cairn_http_forwarded_out_total": "HTTP requests this node forwarded to another.",
        "cairn_http_request_duration_seconds": "Time to answer an HTTP request, by method and endpoint.",
        "cairn_http_requests_total": "HTTP requests answered, by method, endpoint and status.",
        "cairn_lease_reads_total": "Linearizable reads served under the leader's lease, without a heartbeat round.",
        "cairn_placement_dead_nodes": "Nodes the catalog records as dead.",
        "cairn_placement_moves_in_flight": "Replicas being moved between nodes now.",
        "cairn_placement_under_replicated_groups": "Groups with fewer live voting copies than the replication factor.",
        "cairn_raft_applied_index": "The last log index applied to the group's SQLite here.",
        "cairn_raft_commit_index": "The group's commit index as this node knows it.",
        "cairn_raft_is_leader": "1 if this node leads the group, else 0.",
        "cairn_raft_leader_changes_total": "Leaders this node has seen the group take.",
        "cairn_raft_messages_refused_total": "Raft messages from peers refused as malformed, impossible or out of place.",
        "cairn_raft_term": "The group's current Raft term here.",
        "cairn_raft_follower_lag_entries": "On a group's leader: entries of its log a copy (peer) does not yet have on disk.",
        "cairn_storage_failed": "1 once the node's storage failed (it stops serving and must be restarted), else 0.",
        "cairn_snapshots_taken_total": "Snapshots of groups' databases this node took.",
        "cairn_snapshots_installed_total": "Snapshots this node installed from its groups' leaders.",
        "cairn_snapshot_chunks_sent_total": "Pieces of snapshot files this node streamed to followers.",
        "cairn_snapshot_chunks_received_total": "Pieces of snapshot files this node received.",
        "cairn_transport_frames_sent_total": "Frames this node sent to peers (each carries a batch of messages).",
        "cairn_transport_envelopes_sent_total": "Raft messages this node sent to peers.",
        "cairn_transport_envelopes_dropped_total": "Raft messages dropped unsent: a peer's full queue, an unreachable peer, or an injected fault.",
        "cairn_transport_connections_opened_total": "Connections to peers this node opened.",
        "cairn_transport_handshakes_refused_total": "Incoming peer connections refused at the handshake (a wrong certificate or identity).",
        "cairn_transport_connections_refused_at_limit_total": "Incoming peer connections closed at once because as many as allowed were open.",
        "cairn_transport_outgoing_errors_total": "Connections to peers closed on an error.",
        "cairn_router_calls_total": "Operations the router sent to other nodes as calls (writes passed on to their leader, reads served elsewhere).",
        "cairn_rqlite_queue_lost_statements_total": "Queued rqlite writes whose outcome was unknown and which were reported lost.",
        "cairn_shard_load_splits_total": "Shards split because they ran hot.",
        "cairn_shard_requests_total": "Requests routed to each shard, by database, shard and kind.",
        "cairn_shard_splits_total": "Shard splits this node drove.",
        "cairn_snapshot_bytes_sent_total": "Bytes of snapshot files this node streamed to followers.",
        "cairn_snapshot_streams_refused_busy_total": "Snapshot streams this node refused while receiving as many as it takes at once.",
        "cairn_wal_sync_seconds": "Time of one fdatasync of the write-ahead log.",
        "cairn_wal_syncs_total": "fdatasyncs of the write-ahead log.",
        "cairn_write_seconds": "Time from a write's proposal to its result, on the node that proposed it.",
        "process_cpu_seconds_total": "User and system CPU time of the process.",
        "process_resident_memory_bytes": "Resident memory of the process.",
        "process_open_fds": "Open file descriptors.",
        "process_max_fds": "The most file descriptors the process may open.",
        "process_start_time_seconds": "When the process started, in seconds since the epoch.",
    ]

    /// `# HELP` before each `# TYPE` line of the registry's text.
    static func described(_ exposition: String) -> String {
        var out = ""
        for line in exposition.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst("# TYPE ".count).split(separator: " ").first.map(String.init) ?? ""
                out += "# HELP \(name) \(text[name] ?? "CairnDB metric \(name).")\n"
            }
            out += line + "\n"
        }
        while out.hasSuffix("\n\n") { out.removeLast() }
        return out
    }

    /// One family in the text format: its help, its type and its samples (labels, value).
    static func family(_ name: String, _ type: String, _ samples: [(String, Double)]) -> String {
        var out = "# HELP \(name) \(text[name] ?? "CairnDB metric \(name).")\n# TYPE \(name) \(type)\n"
        for (labels, value) in samples { out += "\(name)\(labels) \(value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value))\n" }
        return out
    }
}

/// Prometheus's standard process metrics, read from /proc at scrape time.
enum ProcessMetrics {
    static func render() -> String {
        var out = ""
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
            // After the command name: state is field 3, utime 14, stime 15, starttime 22.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 19, let utime = Double(fields[11]), let stime = Double(fields[12]), let start = Double(fields[19]) {
                out += MetricHelp.family("process_cpu_seconds_total", "counter", [("", (utime + stime) / ticks)])
                if let uptime = (try? String(contentsOfFile: "/proc/uptime", encoding: .utf8))?.split(separator: " ").first.flatMap({ Double($0) }) {
                    let boot = Date().timeIntervalSince1970 - uptime
                    out += MetricHelp.family("process_start_time_seconds", "gauge", [("", (boot + start / ticks).rounded())])
                }
            }
        }
        if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8), let pages = statm.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) {
            out += MetricHelp.family("process_resident_memory_bytes", "gauge", [("", pages * Double(sysconf(Int32(_SC_PAGESIZE))))])
        }
        if let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            out += MetricHelp.family("process_open_fds", "gauge", [("", Double(fds.count))])
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            out += MetricHelp.family("process_max_fds", "gauge", [("", Double(limit.rlim_cur))])
        }
        return out
    }
}

/// Counts and times every request, by endpoint (the matched route) and status.
struct RequestMetrics: RouterMiddleware {
    typealias Context = CairnContext

    private struct Key: Hashable {
        let method: String
        let endpoint: String
        let status: Int
    }

    /// The metric handles per key, made once: looking them up in the metrics factory on every request
    /// costs more than recording.
    private static let handles = NIOLockedValueBox<[Key: (count: Metrics.Counter, duration: Metrics.Timer)]>([:])

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let response = try await next(request, context)
        Self.record(method: request.method.rawValue, endpoint: context.endpointPath ?? "unmatched", status: Int(response.status.code), since: started)
        return response
    }

    /// Counts a request answered, and how long it took (the router's and the fast path's alike).
    static func record(method: String, endpoint: String, status: Int, since started: ContinuousClock.Instant) {
        let key = Key(method: method, endpoint: endpoint, status: status)
        let metrics = handles.withLockedValue { cache in
            if let m = cache[key] { return m }
            let m = (count: Metrics.Counter(label: "cairn_http_requests_total",
                                    dimensions: [("method", key.method), ("endpoint", key.endpoint), ("status", String(key.status))]),
                     duration: Metrics.Timer(label: "cairn_http_request_duration_seconds", dimensions: [("method", key.method), ("endpoint", key.endpoint)]))
            // Methods are whatever clients send: keep the cache bounded.
            if cache.count < 1_000 { cache[key] = m }
            return m
        }
        metrics.count.increment()
        let elapsed = ContinuousClock.now - started
        metrics.duration.recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }
}
