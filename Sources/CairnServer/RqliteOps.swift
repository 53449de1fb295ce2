import CairnJSON
import CairnAuth
import CairnCluster
import CairnNode
import CairnRaft
import CairnRouter
import CairnSQLite
import CairnTransport
import Foundation
import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers
import Metrics
import NIOCore

/// rqlite's queued writes: acknowledged with a sequence number at once, applied in batches shortly after.
///
/// A batch is applied at most once. A flush that certainly did not apply (no leader, the leader
/// unreachable, the proposal overwritten) is tried again; one whose outcome is unknown (it timed out
/// after it was proposed, or the connection failed after the request was sent) is not, since it may
/// have committed: trying again could apply it twice. Its writes are then reported lost, to the log and
/// to clients waiting on them, as rqlite's queued writes may be lost when a node fails.
final class WriteQueue: Sendable {
    private struct Pending {
        var seq: UInt64
        var statements: [SQLStatement]
        var bytes: Int
    }
    private struct State {
        var pending: [Pending] = []
        var pendingStatements = 0
        var pendingBytes = 0
        var lastSeq: UInt64 = UInt64(Date().timeIntervalSince1970 * 1e9)
        /// Every batch through this one was applied or given up on.
        var resolvedThrough: UInt64 = 0
        /// The newest batches given up on (their outcome unknown), as sequence ranges.
        var unknown: [ClosedRange<UInt64>] = []
    }
    private let state = NIOLockedValueBox(State())
    let flushIntervalMillis: Int64 = 50
    /// Statements waiting at most: past that, clients are told to slow down (503) rather than the node
    /// holding whatever they send.
    static let maxPendingStatements = 50_000
    /// And at most this many bytes of them (encoded), however few the statements.
    static let maxPendingBytes = 64 << 20
    /// Ranges of lost batches remembered for waiting clients.
    static let maxUnknownRanges = 64
    /// One flush proposes at most this much (encoded), a fraction of an entry's limit.
    let maxBatchBytes: Int

    init(maxEntryBytes: Int) {
        maxBatchBytes = maxEntryBytes / 4 * 3
    }

    /// What a flush found.
    enum Flushed {
        case applied
        /// Certainly not applied: try again later.
        case notApplied(String)
    }

    /// The flush's outcome is unknown: it must not be proposed again.
    struct OutcomeUnknown: Error, CustomStringConvertible {
        var description: String
    }

    /// Queues statements (`bytes`: their encoded size, at most an entry's); returns their sequence
    /// number (rqlite's are nanosecond timestamps; these start from one and only grow), or nil when the
    /// queue is full.
    func add(_ statements: [SQLStatement], bytes: Int) -> UInt64? {
        state.withLockedValue { s in
            guard s.pendingStatements + statements.count <= Self.maxPendingStatements,
                  s.pendingBytes == 0 || s.pendingBytes + bytes <= Self.maxPendingBytes else { return nil }
            s.pendingStatements += statements.count
            s.pendingBytes += bytes
            s.lastSeq = max(s.lastSeq + 1, UInt64(Date().timeIntervalSince1970 * 1e9))
            s.pending.append(Pending(seq: s.lastSeq, statements: statements, bytes: bytes))
            return s.lastSeq
        }
    }

    var lastSequenceNumber: UInt64 { state.withLockedValue { $0.resolvedThrough } }

    enum Waited { case applied, lost, timedOut }

    /// Waits until the batch holding `seq` was applied or given up on.
    func waitFlushed(_ seq: UInt64, timeoutNanos: Int64) async -> Waited {
        let deadline = ContinuousClock.now + .nanoseconds(timeoutNanos)
        while ContinuousClock.now < deadline {
            let done: Waited? = state.withLockedValue { s in
                guard s.resolvedThrough >= seq else { return nil }
                return s.unknown.contains { $0.contains(seq) } ? .lost : .applied
            }
            if let done { return done }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return .timedOut
    }

    /// Flushes every `flushIntervalMillis` until cancelled.
    func run(flush: @Sendable ([SQLStatement]) async throws -> Flushed, log: @Sendable (String) -> Void) async {
        var retries = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(flushIntervalMillis))
            let batch: [Pending] = state.withLockedValue { s in
                var bytes = 0
                return Array(s.pending.prefix { p in
                    defer { bytes += p.bytes }
                    return bytes == 0 || bytes + p.bytes <= maxBatchBytes
                })
            }
            guard let first = batch.first?.seq, let last = batch.last?.seq else { continue }
            let lost: Bool
            do {
                switch try await flush(batch.flatMap(\.statements)) {
                case .applied:
                    lost = false
                case .notApplied(let why):
                    retries += 1
                    if retries % 20 == 1 { log("queued writes \(first)...\(last) not applied yet (\(why)); trying again") }
                    continue
                }
            } catch {
                lost = true
                log("queued writes \(first)...\(last): the outcome is unknown (\(error)); they are not proposed again, so they are applied once or not at all")
                Counter(label: "cairn_rqlite_queue_lost_statements_total").increment(by: batch.reduce(0) { $0 + $1.statements.count })
            }
            retries = 0
            state.withLockedValue { s in
                s.pending.removeFirst(batch.count)
                s.pendingStatements -= batch.reduce(0) { $0 + $1.statements.count }
                s.pendingBytes -= batch.reduce(0) { $0 + $1.bytes }
                s.resolvedThrough = last
                if lost {
                    s.unknown.append(first...last)
                    if s.unknown.count > Self.maxUnknownRanges { s.unknown.removeFirst() }
                }
            }
        }
    }
}

extension API {
    func enqueue(_ statements: [SQLStatement], _ p: RqliteParams) async throws -> Response {
        let live = statements.filter { !$0.sql.isEmpty }
        let bytes = SQLCommand.now(live, atomic: false).encoded().count
        guard bytes <= runtime.config.maxEntryBytes else { throw RuntimeError.entryTooLarge(bytes: bytes, limit: runtime.config.maxEntryBytes) }
        guard let seq = queue.add(live, bytes: bytes) else {
            throw HTTPFailure.unavailable("the write queue is full (at most \(WriteQueue.maxPendingStatements) statements and \(WriteQueue.maxPendingBytes >> 20) MiB not yet applied); retry shortly")
        }
        if p.has("wait") {
            switch await queue.waitFlushed(seq, timeoutNanos: p.nanos("timeout") ?? 30_000_000_000) {
            case .applied: break
            case .timedOut: return Self.text(408, "queue wait timeout")
            case .lost: throw HTTPFailure.unavailable("the queued writes' outcome is unknown (the flush failed after it was proposed); they were applied once or not at all")
            }
        }
        return Self.rqJSON(RqliteFormat.body(results: [], sequenceNumber: seq, options: p.format))
    }

    /// Applies one queued batch on the default database, through its leader (`propose`: the batch goes
    /// to another node as the encoded entry, not as rqlite JSON, so no request limit of that node's
    /// refuses it and its values arrive as they are). Throws `WriteQueue.OutcomeUnknown` when it may
    /// have been applied.
    ///
    /// Statements on sharded tables go to their shards, one at a time (each on its own, as queued
    /// statements are: one that fails takes no other with it), in order with the rest of the batch.
    func flushQueued(_ statements: [SQLStatement]) async throws -> WriteQueue.Flushed {
        guard let database = cluster.catalog.databases[defaultDatabase] else { return .notApplied("the catalog is not loaded yet") }
        let view = shardView(defaultDatabase, cluster.catalog)
        var runs: [(sharded: Bool, statements: [SQLStatement])] = []
        for statement in statements {
            let sharded = view.map { Self.mentions(statement.sql, $0.tables) } ?? false
            if runs.last?.sharded == sharded { runs[runs.count - 1].statements.append(statement) } else { runs.append((sharded, [statement])) }
        }
        var applied = 0
        for run in runs {
            for part in run.sharded ? run.statements.map({ [$0] }) : [run.statements] {
                let outcome = try await flushPart(part, sharded: run.sharded, group: database.group)
                if case .notApplied(let why) = outcome, applied > 0 {
                    throw WriteQueue.OutcomeUnknown(description: "\(applied) of the queued batch's statements were applied, then: \(why)")
                }
                if case .notApplied = outcome { return outcome }
                applied += part.count
            }
        }
        return .applied
    }

    private func flushPart(_ statements: [SQLStatement], sharded: Bool, group: GroupID) async throws -> WriteQueue.Flushed {
        do {
            if sharded {
                do {
                    _ = try await writeSharded(statements, db: defaultDatabase, atomic: false)
                } catch let refused as HTTPFailure where (400..<500).contains(refused.status) {
                    // The statement is wrong (a plan refused): dropped as a failing queued statement is.
                    log("node \(cluster.nodeID): a queued statement was refused: \(refused.message)")
                }
                return .applied
            }
            _ = try await executeWaitingOutLocks(SQLCommand.now(statements, atomic: false), group: group).results
            return .applied
        } catch let e as NotCommitted {
            return .notApplied(e.description)
        } catch let held as HTTPFailure where held.status == 503 {
            // Held by a transaction across shards until the deadline, or refused by one: nothing applied.
            return .notApplied(held.message)
        } catch RouteError.refused(let status, let message) where (400..<500).contains(status) {
            return .notApplied(message)
        } catch let e as RuntimeError where { if case .entryTooLarge = e { return true } else { return false } }() {
            return .notApplied(e.description)
        } catch {
            throw WriteQueue.OutcomeUnknown(description: "\(error)")
        }
    }

    // MARK: - Operations

    /// The node rqlite clients see: id, addresses, voter, reachability and leadership.
    func rqNode(_ n: CatalogNode, leader: NodeID, check: Bool, timeoutNanos: Int64) async -> JSON {
        var m: [(String, JSON)] = [("id", .string(String(n.id))), ("api_addr", .string("\(peers.scheme)://\(n.httpAddress)")),
                                   ("addr", .string(n.raftAddress.description)), ("version", .string(cairnVersion)),
                                   ("voter", .bool(n.voter))]
        var reachable = n.id == cluster.nodeID
        var time: Double = 0
        var problem: String?
        if check && n.id != cluster.nodeID {
            let started = ContinuousClock.now
            do {
                let reply = try await peers.send(.GET, to: n.httpAddress, path: "/v1/health", timeoutMillis: max(1, timeoutNanos / 1_000_000))
                reachable = reply.status == 200
                if !reachable { problem = "status \(reply.status)" }
            } catch {
                problem = "\(error)"
            }
            time = Self.seconds(ContinuousClock.now - started)
        }
        m += [("reachable", .bool(reachable)), ("leader", .bool(n.id == leader))]
        if time > 0 { m += [("time", JSON.goNumber(time)), ("time_s", .string(Self.goDuration(nanos: Int64(time * 1e9))))] }
        if let problem { m.append(("error", .string(problem))) }
        return .object(m)
    }

    /// Leader of the default database, as far as this node knows.
    func defaultLeader() async -> NodeID {
        guard let group = cluster.catalog.databases[defaultDatabase]?.group,
              let s = try? await runtime.status(group: group) else {
            return (try? await runtime.status(group: metadataGroup))?.leader ?? noNode
        }
        return s.leader
    }

    func rqNodes(_ p: RqliteParams) async throws -> Response {
        let leader = await defaultLeader()
        let nodes = cluster.catalog.activeNodes.filter { $0.voter || p.has("nonvoters") }
        let timeout = p.nanos("timeout") ?? 30_000_000_000
        var entries: [(NodeID, JSON)] = []
        await withTaskGroup(of: (NodeID, JSON).self) { group in
            for n in nodes { group.addTask { (n.id, await self.rqNode(n, leader: leader, check: true, timeoutNanos: min(timeout, 5_000_000_000))) } }
            for await e in group { entries.append(e) }
        }
        entries.sort { $0.0 < $1.0 }
        let json: JSON = p.value("ver") == "2"
            ? .object([("nodes", .array(entries.map(\.1)))])
            // Go marshals the map with sorted (string) keys.
            : .object(entries.map { (String($0.0), $0.1) }.sorted { $0.0 < $1.0 })
        return Self.rqJSON(RqliteFormat.serialize(json, p.format))
    }

    func rqLeader(_ p: RqliteParams) async throws -> Response {
        let leader = await defaultLeader()
        guard leader != noNode, let node = cluster.catalog.nodes[leader] else { return Self.text(503, "leader not found") }
        return Self.rqJSON(RqliteFormat.serialize(await rqNode(node, leader: leader, check: true, timeoutNanos: 5_000_000_000), p.format))
    }

    /// POST /leader: the leader of the default database hands over (to `{"id": ...}` if given).
    func rqStepdown(_ request: Request, _ p: RqliteParams, _ who: Principal) async throws -> Response {
        let bytes = try await body(of: request)
        var target: NodeID?
        if !bytes.isEmpty {
            guard case .object(let members) = try JSON.parse(bytes) else { throw HTTPFailure.badRequest("invalid request") }
            if let id = members.first(where: { $0.0 == "id" })?.1 {
                switch id {
                case .string(let s): target = NodeID(s)
                case .number(let t): target = NodeID(t)
                default: break
                }
                guard target != nil else { throw HTTPFailure.badRequest("id must be a node id") }
            }
        }
        let before = await defaultLeader()
        let response = try await serveOrForward(request, who, db: defaultDatabase, body: bytes, isWrite: true) { group in
            let s = try await self.runtime.status(group: group)
            guard s.role == .leader else { throw RuntimeError.notLeader(leader: s.leader) }
            let to = target ?? s.config.voters.filter { $0 != self.cluster.nodeID }.max { (s.matchIndex[$0] ?? 0) < (s.matchIndex[$1] ?? 0) }
            guard let to, s.config.isVoter(to) else { throw HTTPFailure.badRequest("no voter to hand leadership to") }
            try await self.runtime.transferLeadership(group: group, to: to)
            return Response(status: .ok)
        }
        if p.has("wait") && response.status == .ok {
            let deadline = ContinuousClock.now + .nanoseconds(p.nanos("timeout") ?? 30_000_000_000)
            while ContinuousClock.now < deadline {
                let now = await defaultLeader()
                if now != noNode && now != before { return response }
                try await Task.sleep(for: .milliseconds(20))
            }
            return Self.text(408, "timed out waiting for the leader to change")
        }
        return response
    }

    func rqRemove(_ request: Request, _ p: RqliteParams, _ who: Principal) async throws -> Response {
        let bytes = try await body(of: request)
        guard case .object(let members)? = try? JSON.parse(bytes), members.count == 1, members[0].0 == "id" else {
            throw HTTPFailure.badRequest("the body must be {\"id\": \"<node id>\"}")
        }
        let id: NodeID?
        switch members[0].1 {
        case .string(let s): id = NodeID(s)
        case .number(let t): id = NodeID(t)
        default: id = nil
        }
        guard let id else { throw HTTPFailure.badRequest("id must be a node id") }
        try await cluster.handleRemove(id, hops: who.hops)
        return Response(status: .ok)
    }

    func rqReadyz(_ p: RqliteParams) async throws -> Response {
        if p.has("noleader") { return Self.text(200, "[+]node ok") }
        let leader = await defaultLeader()
        guard leader != noNode, runtime.failure == nil else { return Self.text(503, "[+]node ok\n[+]leader does not exist") }
        // rqlite's lines, on CairnDB's readiness: a 200 means the next write through this node succeeds.
        let problems = await readinessProblems()
        guard problems.isEmpty else { return Self.text(503, "[+]node ok\n[+]leader ok\n[-]store not ready: " + problems.joined(separator: "; ")) }
        var lines = ["[+]node ok", "[+]leader ok", "[+]store ok"]
        if p.has("sync"), let group = cluster.catalog.databases[defaultDatabase]?.group {
            do {
                _ = try await runtime.query(group: group, [SQLStatement("SELECT 1")], consistency: .linearizable)
                lines.append("[+]sync ok")
            } catch {
                return Self.text(503, (lines + ["[+]sync failed"]).joined(separator: "\n"))
            }
        }
        lines.append("[+]db ok")
        return Self.text(200, lines.joined(separator: "\n"))
    }

    func rqStatus(_ p: RqliteParams) async throws -> Response {
        let catalog = cluster.catalog
        let leader = await defaultLeader()
        var store: [(String, JSON)] = [
            ("addr", .string(cluster.config.raftAddress.description)), ("dir", .string(options.dataDirectory)),
            ("node_id", .string(String(cluster.nodeID))), ("open", .bool(true)), ("ready", .bool(leader != noNode)),
            ("leader", .object([("addr", .string(catalog.nodes[leader]?.raftAddress.description ?? "")),
                                ("node_id", .string(leader == noNode ? "" : String(leader)))])),
            ("nodes", .array(catalog.activeNodes.map { n in
                .object([("addr", .string(n.raftAddress.description)), ("id", .string(String(n.id))),
                         ("suffrage", .string(n.voter ? "Voter" : "Nonvoter"))])
            })),
        ]
        if let group = catalog.databases[defaultDatabase]?.group, let s = try? await runtime.status(group: group) {
            let state = s.role == .leader ? "Leader" : (s.role == .candidate || s.role == .preCandidate ? "Candidate" : "Follower")
            store.append(("raft", .object([("applied_index", .int(s.applied)), ("commit_index", .int(s.commit)),
                                           ("last_log_index", .int(s.lastIndex)), ("last_snapshot_index", .int(s.firstIndex > 0 ? s.firstIndex - 1 : 0)),
                                           ("state", .string(state)), ("term", .int(s.term)), ("voter", .bool(s.config.isVoter(cluster.nodeID)))])))
            store.append(("db_applied_index", .int(s.applied)))
            store.append(("fsm_index", .int(s.applied)))
            store.append(("sqlite3", .object([("path", .string(options.dataDirectory + "/group-\(group).sqlite"))])))
        }
        let status: JSON = .object([
            ("build", .object([("version", .string(cairnVersion)), ("compiler", .string("swift"))])),
            ("http", .object([("addr", .string(cluster.config.httpAddress.description)), ("auth", .string(auth.enabled ? "enabled" : "disabled")),
                              ("queue", .object([("_default", .object([("sequence_number", .int(queue.lastSequenceNumber))]))]))])),
            ("node", .object([("start_time", .string(ISO8601DateFormatter().string(from: startedAt))),
                              ("uptime", .string(Self.goDuration(nanos: Int64(Date().timeIntervalSince(startedAt) * 1e9))))])),
            ("os", .object([("pid", .int(Int(getpid()))), ("hostname", .string(ProcessInfo.processInfo.hostName))])),
            ("runtime", .object([("GOOS", .string("linux")), ("num_cpu", .int(ProcessInfo.processInfo.activeProcessorCount))])),
            ("store", .object(store)),
        ])
        var selected = Self.sortedKeys(status)
        if let key = p.value("key") {
            for part in key.split(separator: ".") {
                guard let next = selected[String(part)] else { throw HTTPFailure.notFound("no status key \(key)") }
                selected = next
            }
        }
        return Self.rqJSON(RqliteFormat.serialize(selected, p.format))
    }

    /// Go marshals maps with their keys sorted; rqlite's status is maps all the way down.
    static func sortedKeys(_ j: JSON) -> JSON {
        switch j {
        case .object(let m): return .object(m.map { ($0.0, sortedKeys($0.1)) }.sorted { $0.0 < $1.0 })
        case .array(let a): return .array(a.map(sortedKeys))
        default: return j
        }
    }

    /// Go's `time.Duration.String()`: "402ns", "1.5µs", "12.034ms", "2.5s", "1m30s".
    static func goDuration(nanos: Int64) -> String {
        if nanos == 0 { return "0s" }
        let sign = nanos < 0 ? "-" : ""
        let n = abs(nanos)
        func trimmed(_ value: Int64, _ scale: Int64) -> String {
            let whole = value / scale, fraction = value % scale
            guard fraction != 0 else { return String(whole) }
            var digits = String(fraction)
            digits = String(repeating: "0", count: String(scale).count - 1 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            return "\(whole).\(digits)"
        }
        if n < 1_000 { return "\(sign)\(n)ns" }
        if n < 1_000_000 { return sign + trimmed(n, 1_000) + "µs" }
        if n < 1_000_000_000 { return sign + trimmed(n, 1_000_000) + "ms" }
        let hours = n / 3_600_000_000_000, minutes = n / 60_000_000_000 % 60
        let seconds = trimmed(n % 60_000_000_000, 1_000_000_000) + "s"
        if hours > 0 { return "\(sign)\(hours)h\(minutes)m\(seconds)" }
        if minutes > 0 { return "\(sign)\(minutes)m\(seconds)" }
        return sign + seconds
    }
}

/// The version every node reports.
/// This build's version, as `cairn --version` and rqlite's `/status` say it.
public let cairnVersion = "cairn-0.1.0"
