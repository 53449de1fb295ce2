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
        for g in (try? await runtime.groupIDs()) ?? [] {
            guard let s = try? await runtime.status(group: g) else { continue }
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
            if let c = runtime.consistency(group: g) {
                Gauge(label: "cairn_consistency_checks", dimensions: d).record(Double(c.checks))
                Gauge(label: "cairn_consistency_mismatch", dimensions: d).record(c.mismatch == nil ? 0 : 1)
            }
        }
        Gauge(label: "cairn_wal_syncs").record(Double(runtime.syncCount))
        Gauge(label: "cairn_apply_loop_busy_seconds").record(Double(runtime.applyLoopBusyMillis) / 1000)
        var out: [UInt8] = []
        registry.emit(into: &out)
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
    private final class Handles: Sendable {
        let byKey = NIOLockedValueBox<[Key: (count: Metrics.Counter, duration: Metrics.Timer)]>([:])
    }

    private let handles = Handles()

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let response = try await next(request, context)
        let key = Key(method: request.method.rawValue, endpoint: context.endpointPath ?? "unmatched", status: Int(response.status.code))
        let metrics = handles.byKey.withLockedValue { cache in
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
        return response
    }
}
