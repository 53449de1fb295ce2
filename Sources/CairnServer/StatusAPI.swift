import CairnJSON
import CairnAuth
import CairnCluster
import CairnNode
import CairnPlacement
import CairnRaft
import CairnRouter
import CairnSQLite
import CairnTransport
import Foundation
import HTTPTypes
import Hummingbird
import Metrics
import NIOConcurrencyHelpers
import NIOCore

/// What a node says about itself and the cluster: `/v1/status`, `/v1/cluster`, `/v1/ready`.
extension API {
    func groupJSON(_ id: GroupID) async throws -> JSON {
        groupJSON(id, try await runtime.status(group: id))
    }

    func groupJSON(_ id: GroupID, _ s: NodeRuntime.GroupStatus) -> JSON {
        .object([("group", .int(id)), ("role", .string("\(s.role)")), ("term", .int(s.term)), ("leader", .int(s.leader)),
                        ("commit", .int(s.commit)), ("applied", .int(s.applied)), ("first_index", .int(s.firstIndex)),
                        ("last_index", .int(s.lastIndex)), ("voters", .array(s.config.voters.sorted().map { .int($0) })),
                        ("learners", .array(s.config.learners.sorted().map { .int($0) })),
                        ("consistency", Self.consistencyJSON(runtime.consistency(group: id)))])
    }

    static func consistencyJSON(_ c: ConsistencyRecord.Summary?) -> JSON {
        guard let c else { return .null }
        return .object([
            ("checks", .int(c.checks)),
            ("digest_index", c.latest.map { .int($0.index) } ?? .null), ("digest", c.latest.map { .string($0.description) } ?? .null),
            ("verified_index", c.verifiedIndex.map { .int($0) } ?? .null),
            ("mismatch", c.mismatch.map { m in .object([("index", .int(m.index)), ("mine", .string(String(m.mine, radix: 16))),
                                                         ("leader", .string(String(m.leader, radix: 16)))]) } ?? .null),
        ])
    }

    func status() async throws -> JSON {
        var groups: [JSON] = []
        // The most entries any group here has committed and not yet applied.
        var applyLag: LogIndex = 0
        for (g, s) in try await runtime.statuses() {
            applyLag = max(applyLag, s.commit > s.applied ? s.commit - s.applied : 0)
            groups.append(groupJSON(g, s))
        }
        let t = runtime.transport.stats
        let snaps = runtime.snapshotStats
        return .object([
            ("node", .object([("id", .int(cluster.nodeID)), ("raft_addr", .string(cluster.config.raftAddress.description)),
                              ("http_addr", .string(cluster.config.httpAddress.description)), ("voter", .bool(cluster.config.voter)),
                              ("data_dir", .string(options.dataDirectory))])),
            ("groups", .array(groups)),
            ("storage", .object([("data_bytes", .int(Self.bytes(under: options.dataDirectory))),
                                 ("apply_lag", .int(applyLag)),
                                 ("log_syncs", .int(runtime.syncCount)), ("snapshots_taken", .int(snaps.taken)),
                                 ("snapshots_installed", .int(snaps.installed)), ("snapshot_chunks_sent", .int(snaps.chunksSent)),
                                 ("snapshot_chunks_received", .int(snaps.chunksReceived)), ("failure", runtime.failure.map { .string($0) } ?? .null)])),
            ("transport", .object([("frames_sent", .int(t.framesSent)), ("envelopes_sent", .int(t.envelopesSent)),
                                   ("dropped_queue_full", .int(t.envelopesDroppedQueueFull)),
                                   ("dropped_unreachable", .int(t.envelopesDroppedUnreachable)),
                                   ("dropped_fault", .int(t.envelopesDroppedFault)), ("connections_opened", .int(t.connectionsOpened)),
                                   ("tls", .bool(runtime.transport.usesTLS)), ("handshakes_refused", .int(t.handshakesRefused)),
                                   ("connections_refused_at_limit", .int(t.connectionsRefusedAtLimit)),
                                   ("messages_refused", .int(runtime.refusedMessageCount))])),
        ])
    }

    /// Bytes of the files under `directory` (the node's data: its log, databases and snapshots).
    static func bytes(under directory: String) -> Int64 {
        guard let walker = FileManager.default.enumerator(at: URL(fileURLWithPath: directory), includingPropertiesForKeys: [.fileSizeKey, .isRegularFileKey]) else { return 0 }
        var total: Int64 = 0
        for case let url as URL in walker {
            guard let values = try? url.resourceValues(forKeys: [.fileSizeKey, .isRegularFileKey]), values.isRegularFile == true else { continue }
            total += Int64(values.fileSize ?? 0)
        }
        return total
    }

    /// Each node's storage (bytes of its data directory) and apply lag (the most entries any group
    /// there has committed but not applied), asked of every node at once (1 s each at most; a node
    /// that does not answer in time shows null).
    func nodeDetails(_ catalog: Catalog) async -> [NodeID: (bytes: JSON, lag: JSON)] {
        let headers = await auth.nodeHeaders()
        return await withTaskGroup(of: (NodeID, (bytes: JSON, lag: JSON)).self) { tasks in
            for n in catalog.nodes.values where !n.removed {
                tasks.addTask {
                    let status: JSON?
                    if n.id == self.cluster.nodeID {
                        status = try? await self.status()
                    } else if let reply = try? await self.peers.send(.GET, to: n.httpAddress, path: "/v1/status", headers: headers, timeoutMillis: 1_000),
                              reply.status == 200 {
                        status = try? JSON.parse(reply.body)
                    } else {
                        status = nil
                    }
                    return (n.id, (status?["storage"]?["data_bytes"] ?? .null, status?["storage"]?["apply_lag"] ?? .null))
                }
            }
            var out: [NodeID: (bytes: JSON, lag: JSON)] = [:]
            for await (id, detail) in tasks { out[id] = detail }
            return out
        }
    }

    func clusterView(detail: Bool = false) async throws -> JSON {
        let catalog = cluster.catalog
        var leaders: [GroupID: NodeID] = [:]
        var led: [GroupID: NodeRuntime.GroupStatus] = [:]
        for (g, status) in try await runtime.statuses() {
            leaders[g] = status.leader
            if status.role == .leader { led[g] = status }
        }
        // Other nodes' counts as their liveness pings last told them (this node's own, now).
        let leaderCounts = try await runtime.leaderCounts()
        let states = try await cluster.nodeStates(in: catalog, readReplicas: true)
        var held: [NodeID: Int] = [:]
        for db in catalog.databases.values { for r in db.replicas { held[r, default: 0] += 1 } }
        let details = detail ? await nodeDetails(catalog) : [:]
        let nodes = catalog.nodes.values.sorted { $0.id < $1.id }.map { n -> JSON in
            // Read replicas are never placed (they hold every group as learners): their state is
            // this node's view of their liveness.
            let state = n.removed ? "removed" : (states[n.id]?.rawValue ?? "live")
            var fields: [(String, JSON)] = [("id", .int(n.id)), ("name", .string(catalog.name(of: n.id))), ("raft_addr", .string(n.raftAddress.description)), ("http_addr", .string(n.httpAddress.description)),
                                            ("voter", .bool(n.voter)), ("removed", .bool(n.removed)), ("state", .string(state)),
                                            ("replicas", .int(n.voter ? held[n.id] ?? 0 : catalog.databases.count)),
                                            ("leaders", n.removed ? .int(0) : leaderCounts[n.id].map { .int($0) } ?? .null)]
            if detail {
                fields += [("data_bytes", details[n.id]?.bytes ?? .null), ("apply_lag", details[n.id]?.lag ?? .null)]
            }
            return .object(fields)
        }
        var moves: [JSON] = []
        for db in catalog.databases.values.sorted(by: { $0.group < $1.group }) {
            for (node, state) in db.moving.sorted(by: { $0.key < $1.key }) {
                var fields: [(String, JSON)] = [("group", .int(db.group)), ("database", .string(Catalog.shardOf(db.name)?.database ?? db.name)),
                                                ("node", .int(node)), ("state", .string(state.rawValue))]
                if let (_, shard) = Catalog.shardOf(db.name) { fields.insert(("shard", .int(shard)), at: 2) }
                // How far a joining copy has caught up, where this node leads the group and can see it.
                if state == .joining, let status = led[db.group] {
                    fields.append(("progress", .object([("match_index", .int(status.matchIndex[node] ?? 0)), ("last_index", .int(status.lastIndex))])))
                }
                moves.append(.object(fields))
            }
        }
        var dbs: [JSON] = [.object([("name", .string("(metadata)")), ("group", .int(metadataGroup)),
                                    ("leader", leaders[metadataGroup].map { .int($0) } ?? .null)])]
        for db in catalog.databases.values.sorted(by: { $0.group < $1.group }) {
            var fields: [(String, JSON)] = [("name", .string(db.name)), ("group", .int(db.group)), ("replicas", .array(db.replicas.map { .int($0) })),
                                            ("leader", leaders[db.group].map { .int($0) } ?? .null)]
            if let (database, shard) = Catalog.shardOf(db.name) {
                fields[0] = ("name", .string(database))
                fields.insert(("shard", .int(shard)), at: 1)
            }
            dbs.append(.object(fields))
        }
        // Splits reserved in the catalog and not yet recorded as done (each finishes in a moment, or is
        // finished by the next attempt: see `ShardSplits.swift`).
        var splits: [JSON] = []
        for (child, origin) in catalog.splitOrigins.sorted(by: { $0.key < $1.key }) where origin.index == 0 {
            guard let (database, index) = Catalog.shardOf(child), let entry = catalog.databases[child],
                  let parent = catalog.shards(of: database).firstIndex(where: { $0.group == origin.parent }) else { continue }
            splits.append(.object([("database", .string(database)), ("shard", .int(parent)), ("group", .int(origin.parent)),
                                   ("child", .int(index)), ("child_group", .int(entry.group)), ("state", .string("reserved"))]))
        }
        return .object([("node", .int(cluster.nodeID)), ("nodes", .array(nodes)), ("groups", .array(dbs)), ("moves", .array(moves)),
                        ("splits", .array(splits))])
    }

    func ready() async throws -> Response {
        guard !cluster.isRemoved else { return Self.json(503, .object([("error", .string("this node was removed from the cluster"))])) }
        let problems = await readinessProblems()
        if problems.isEmpty { return Self.json(200, .object([("ready", .bool(true)), ("node", .int(cluster.nodeID))])) }
        return Self.json(503, .object([("ready", .bool(false)), ("error", .string(problems.joined(separator: "; ")))]))
    }

    /// The longest the apply loop may stay busy before the node says it is not ready: well over what
    /// client SQL can make one entry take (its step budget: about 2 s), so clients cannot toggle it.
    static let applyStallMillis: Int64 = 10_000

    /// Why this node cannot serve at once (empty: it can). Ready means the next write to the default
    /// database through this node succeeds: the catalog is committed here, every group held here has a
    /// leader and includes this node, the default database's group and the catalog's answer a
    /// linearizable read (so their leaders have committed in their terms), the apply loop is not
    /// stalled, and no replica here has diverged from its leader.
    func readinessProblems() async -> [String] {
        var problems: [String] = []
        if cluster.isRemoved { problems.append("this node was removed from the cluster") }
        if let why = runtime.failure { problems.append("this node stopped after a storage failure: \(why)") }
        let busy = runtime.applyLoopBusyMillis
        if busy > Self.applyStallMillis { problems.append("the apply thread has been busy for \(busy) ms") }
        let catalog: Catalog
        do {
            catalog = try await Self.within(milliseconds: 1_000) { try await self.cluster.refreshCatalog() }
        } catch {
            return problems + ["the catalog cannot be read linearizably yet (\(error))"]
        }
        guard catalog.exists, let db = catalog.databases[defaultDatabase] else { return problems + ["the catalog is not loaded yet"] }
        let statuses = (try? await runtime.statuses()) ?? []
        let hosted = statuses.map(\.group)
        for (g, s) in statuses {
            if s.leader == noNode { problems.append("group \(g) has no leader") }
            if !s.config.isMember(cluster.nodeID) { problems.append("group \(g) has not added this node yet") }
            if let m = runtime.consistency(group: g)?.mismatch {
                problems.append("group \(g) diverged from its leader at entry \(m.index) (consistency check)")
            }
        }
        if db.replicas.contains(cluster.nodeID) {
            if !hosted.contains(db.group) {
                problems.append("group \(db.group) is not created here yet")
            } else if problems.isEmpty {
                do {
                    _ = try await Self.within(milliseconds: 1_000) {
                        try await self.runtime.query(group: db.group, [], consistency: .linearizable)
                    }
                } catch {
                    problems.append("the default database cannot serve a linearizable read yet (\(error))")
                }
            }
        }
        return problems
    }

    struct Deadline: Error, CustomStringConvertible {
        let millis: Int
        var description: String { "no answer within \(millis) ms" }
    }

    /// `body`'s result, or `Deadline` after `milliseconds`.
    static func within<T: Sendable>(milliseconds: Int, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: .milliseconds(milliseconds))
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else { throw Deadline(millis: milliseconds) }
            return value
        }
    }
}
