import CairnCluster
import CairnNode
import CairnRaft
import CairnSQLite
import CairnTransport
import Metrics
import NIOConcurrencyHelpers
import NIOCore

/// What a routed operation returned.
public struct Routed: Sendable {
    public var results: [StatementResult]
    /// The log index the results reflect (the entry's for a write, the read point's for a read).
    public var index: LogIndex
    /// Whether it went through the log (a `request` judged a write).
    public var wrote: Bool
    /// The node that served it.
    public var node: NodeID
}

/// Where every operation on a group runs: here, when this node holds the group (and leads it, for a
/// write or a linearizable read), otherwise at the node that can, reached with a `GroupCall` over the
/// nodes' own connections. Every API (CairnDB's, rqlite's, the shard paths) goes through it, so the
/// request is authenticated, parsed, planned and audited once, on the node the client chose; the
/// node that serves it only runs it.
///
/// A write is proposed at most once per attempt: a try that certainly did not commit (no leader, a
/// leadership change, a call that never left) is made again until the deadline; one whose outcome is
/// unknown ends with `OutcomeUnknown`. Reads are retried until the deadline.
public final class GroupRouter: Sendable {
    /// Calls sent to other nodes. Made once: making a counter per call went through the metrics
    /// registry's lock and name checks for every write passed on (0.5 µs of it).
    private static let callsSent = Counter(label: "cairn_router_calls_total")

    let runtime: NodeRuntime
    let cluster: ClusterNode
    let requestTimeoutMillis: Int64
    let pending = PendingCalls()
    private let cursor = NIOLockedValueBox(0)
    /// Calls being served for other nodes right now.
    private let serving = NIOLockedValueBox(0)
    /// Calls served for other nodes at once, at most: past it a call is answered "not committed" at
    /// once (the caller retries), so another node cannot pile up unbounded work here.
    public static let maxServing = 4_096
    /// A write call at most this large is proposed on the transport's loop, where it is read; a larger
    /// one (entries go up to 20 MiB) is encoded in a task, so it cannot hold up the Raft traffic that
    /// loop carries.
    static let maxInlineCallBytes = 64 << 10

    public init(runtime: NodeRuntime, cluster: ClusterNode, requestTimeoutMillis: Int64) {
        self.runtime = runtime
        self.cluster = cluster
        self.requestTimeoutMillis = requestTimeoutMillis
        precondition(runtime.config.maxEntryBytes + 4096 <= PeerCall.maxBodyBytes, "a call must carry any entry the log takes")
        // A call waiting for its turn at a held group holds a serving slot meanwhile: waiters (bounded
        // per node) must leave most slots to the calls that do not wait.
        precondition(NodeRuntime.maxTurnWaiters <= Self.maxServing / 2, "writes waiting for their turn must not take most serving slots")
        let pending = self.pending
        runtime.transport.handleCalls(CallHandlers(
            received: { [weak self] from, calls in
                for call in calls {
                    if call.isReply {
                        pending.finish(call.id, .answered(call.body), from: from)
                    } else {
                        self?.serve(call, from: from)
                    }
                }
            },
            dropped: { peer, ids in
                for id in ids { pending.finish(id, .notSent("the call to node \(peer) could not be sent (no connection, or its queue is full)")) }
            },
            lost: { peer in pending.lost(peer, "the connection to node \(peer) closed before it answered") }))
    }

    // MARK: - The typed interface

    /// The group that holds database `name`.
    public func group(of name: String) async throws -> GroupID {
        var catalog = cluster.catalog
        if catalog.databases[name] == nil {
            // Created through another node moments ago, perhaps: "no such" is never merely this node being behind.
            do {
                catalog = try await cluster.refreshCatalog()
            } catch {
                throw RouteError.unavailable("cannot reach the cluster's metadata leader to read the catalog (\(error)); retry shortly")
            }
        }
        guard catalog.exists else { throw RouteError.unavailable("this node has not loaded the cluster catalog yet; retry shortly") }
        guard let database = catalog.databases[name], !Catalog.isInternalName(name) else { throw RouteError.notFound("no database named \"\(name)\"") }
        if !runtime.hosts(database.group) && cluster.holds(database, in: catalog) {
            // Created since this node's last controller pass: host it now rather than send the request
            // to a fellow replica that may not know it yet either.
            try? await cluster.openGroups(of: catalog)
        }
        return database.group
    }

    /// Commits `command` to `group` through its leader.
    public func execute(_ command: SQLCommand, group: GroupID) async throws -> Routed {
        try await run(GroupCall(operation: .execute, group: group, command: command))
    }

    /// Commits `command` to `group` once no transaction across shards holds the group, in turn with
    /// the writes that wait there from any node (the group's leader keeps the line), waiting at most
    /// `waitMillis`. A write whose wait ran out is answered as refused by the lock
    /// (`TransactionStep.lockedMessage` for each statement), nothing written.
    /// The wait is one span over every try (a leader that lost its leadership meanwhile sends the
    /// write to the next one, which it waits at for what is left).
    /// `began`: when the request began, on this node's clock; the line puts older requests first
    /// (`TurnLines`), so give every try of one request the same.
    public func executeInTurn(_ command: SQLCommand, group: GroupID, began: ContinuousClock.Instant, waitMillis: Int64) async throws -> Routed {
        let until = ContinuousClock.now + .milliseconds(max(0, min(waitMillis, requestTimeoutMillis)))
        return try await run(GroupCall(operation: .executeInTurn, group: group, command: command), turnUntil: until, began: began)
    }

    /// Reads `statements` on `group` at `consistency`.
    public func query(_ statements: [SQLStatement], group: GroupID, consistency: ReadConsistency = .linearizable,
                      statementTimeoutNanos: UInt64 = 0) async throws -> Routed {
        try await run(GroupCall(operation: .query, group: group, consistency: consistency, statementTimeoutNanos: statementTimeoutNanos,
                                command: SQLCommand(statements: statements, timestampMillis: 0, randomSeed: 0)))
    }

    /// Reads if every statement only reads, judged where the group is held; otherwise commits them as
    /// one entry (in which reads see the entry's earlier writes). `Routed.wrote` says which.
    /// `mayWrite`: false for a caller without the right to write, whose writes are refused (403).
    public func request(_ command: SQLCommand, group: GroupID, consistency: ReadConsistency = .linearizable, statementTimeoutNanos: UInt64 = 0,
                        mayWrite: Bool) async throws -> Routed {
        try await run(GroupCall(operation: mayWrite ? .request : .readingRequest, group: group, consistency: consistency,
                                statementTimeoutNanos: statementTimeoutNanos, command: command))
    }

    // MARK: - The first try, without a task

    /// What a first try on this node's copy came to: an answer, or nothing that committed (the full
    /// routing of `execute` or `query` then runs, and may forward).
    public enum FirstTry: Sendable {
        case routed(Routed)
        case retry
    }

    /// The first try of `execute` where it is most often decided, as a future (for a caller on an
    /// event loop that starts no task per write): on this node's copy, and when another node leads
    /// the group, once at that leader, as `run` tries it. nil when this node holds no copy. Fails as
    /// `execute` would throw; `.retry` when nothing was committed (no leader known, a call not sent,
    /// a leadership change on the way).
    public func executeHere(_ command: SQLCommand, group: GroupID) -> EventLoopFuture<FirstTry>? {
        guard runtime.hosts(group) else { return nil }
        let node = cluster.nodeID
        // Led elsewhere as far as this node knows: straight there, not first to this node's Raft loop
        // to be told so (a thread hop each way on most writes, with many shards). A stale hint costs
        // what a stale answer from the loop costs: the leader named answers that it is not. A node
        // stopped by a storage failure refuses, as its Raft loop would have (it needs an operator).
        if let leader = runtime.leaderHint(group), leader != node, runtime.failure == nil,
           !runtime.transport.faults.partitioned.contains(leader) {
            return callFirst(GroupCall(operation: .execute, group: group, command: command), at: leader, on: runtime.callerLoop)
        }
        let here = runtime.executeFuture(group: group, command)
        let loop = here.eventLoop
        return here
            .map { results, index in FirstTry.routed(Routed(results: results, index: index, wrote: true, node: node)) }
            .flatMapError { error in
                if case RuntimeError.notLeader(let leader) = error, leader != noNode, leader != node,
                   !self.runtime.transport.faults.partitioned.contains(leader) {
                    return self.callFirst(GroupCall(operation: .execute, group: group, command: command), at: leader, on: loop)
                }
                return loop.makeCompletedFuture(Self.firstTry(GroupAnswer(error, write: true), write: true))
            }
    }

    /// One call of a write to `target`, answered as `run` takes the answer of its first call.
    private func callFirst(_ call: GroupCall, at target: NodeID, on loop: any EventLoop) -> EventLoopFuture<FirstTry> {
        let promise = loop.makePromise(of: FirstTry.self)
        let body = call.encoded()
        // Too large for a call: `run` says why.
        guard body.count <= PeerCall.maxBodyBytes else {
            promise.succeed(.retry)
            return promise.futureResult
        }
        Self.callsSent.increment()
        pending.call(target, timeoutMillis: requestTimeoutMillis, send: { id in
            self.runtime.transport.send(call: PeerCall(id: id, isReply: false, body: body), to: target)
        }, done: { outcome in
            switch outcome {
            case .answered(let bytes):
                switch Self.answer(bytes, from: target) {
                case .done(let results, let index, let wrote):
                    promise.succeed(.routed(Routed(results: results, index: index, wrote: wrote, node: target)))
                case let answer:
                    promise.completeWith(Self.firstTry(answer, write: call.mayWrite))
                }
            case .notSent:
                promise.succeed(.retry)
            case .lost(let why):
                promise.fail(Self.lostWrite(at: target, why))
            }
        })
        return promise.futureResult
    }

    /// The first try of `query` on this node's copy, as `executeHere` is for `execute`.
    public func queryHere(_ statements: [SQLStatement], group: GroupID, consistency: ReadConsistency = .linearizable) -> EventLoopFuture<FirstTry>? {
        guard runtime.hosts(group) else { return nil }
        let node = cluster.nodeID
        let millis = requestTimeoutMillis
        return runtime.queryFuture(group: group, statements, consistency: consistency)
            .map { results, index in FirstTry.routed(Routed(results: results, index: index, wrote: false, node: node)) }
            .flatMapErrorThrowing { error in
                // It waited out the request's whole time already: trying again would wait as long again.
                if case RuntimeError.timedOut = error {
                    throw RouteError.unavailable("cannot serve the request on group \(group) within \(millis) ms: \(error)")
                }
                return try Self.firstTry(GroupAnswer(error, write: false), write: false).get()
            }
    }

    /// What another node answered a call with.
    private static func answer(_ bytes: [UInt8], from target: NodeID) -> GroupAnswer {
        GroupAnswer(decoding: bytes) ?? .outcomeUnknown("node \(target) answered with bytes that are not an answer")
    }

    /// A write sent to `target` whose answer never came: it may have been applied.
    private static func lostWrite(at target: NodeID, _ why: String) -> OutcomeUnknown {
        OutcomeUnknown(description: "the write was sent to node \(target) and then \(why)")
    }

    /// An answer other than `.done`, as `run` takes it: final answers fail, the rest are tried again.
    private static func firstTry(_ answer: GroupAnswer, write: Bool) -> Result<FirstTry, any Error> {
        switch answer {
        case .outcomeUnknown(let why) where write: return .failure(OutcomeUnknown(description: why))
        case .failed(let error): return .failure(error)
        case .refused(let status, let message): return .failure(RouteError.refused(status: status, message: message))
        default: return .success(.retry)
        }
    }

    // MARK: - Routing

    /// `turnUntil`: for `executeInTurn`, when its wait ends, over all tries; `began`, when its request did.
    private func run(_ call: GroupCall, turnUntil: ContinuousClock.Instant? = nil, began: ContinuousClock.Instant = .now) async throws -> Routed {
        let start = ContinuousClock.now
        let deadline = start + .milliseconds(requestTimeoutMillis)
        var call = call
        var body = call.encoded()
        if call.mayWrite && body.count > PeerCall.maxBodyBytes {
            throw RuntimeError.entryTooLarge(bytes: call.command.encoded().count, limit: runtime.config.maxEntryBytes)
        }
        // A write sent with less time than this left would likely end "outcome unknown" when it could
        // have ended "not committed": it is not sent.
        let minimumMillis = min(1_000, requestTimeoutMillis / 4)
        var lastProblem = "no leader is known yet"
        var attempt = 0
        var next: NodeID?
        var hints = 0
        while ContinuousClock.now < deadline {
            attempt += 1
            if let turnUntil {
                // What is left of the wait, less the time an answer needs to come back within the
                // request's: a write whose answer came too late would end "outcome unknown".
                let waitEnds = min(turnUntil, deadline - .milliseconds(minimumMillis))
                call.statementTimeoutNanos = UInt64(max(0, Self.millis(waitEnds - ContinuousClock.now))) * 1_000_000
                call.turnAgeMillis = UInt64(max(0, Self.millis(ContinuousClock.now - began)))
                body = call.encoded()
            }
            var target = next
            next = nil
            var answer: GroupAnswer?
            if target == nil && runtime.hosts(call.group) {
                answer = await serveHere(call)
            } else if target == nil {
                let holders = self.holders(of: call.group, forWrite: call.isWrite)
                if holders.isEmpty {
                    lastProblem = "no node is known to hold group \(call.group)"
                    // Dropped, perhaps: the committed catalog tells.
                    if let fresh = try? await cluster.refreshCatalog(), fresh.exists, fresh.database(group: call.group) == nil {
                        throw RuntimeError.databaseDropped
                    }
                } else {
                    target = holders[cursor.withLockedValue { c in c &+= 1; return c } % holders.count]
                }
            }
            if let target {
                if runtime.transport.faults.partitioned.contains(target) {
                    lastProblem = "node \(target) is cut off from this node"
                } else if call.mayWrite && Self.millis(deadline - ContinuousClock.now) < minimumMillis {
                    lastProblem += " (too little time was left to send the write again)"
                    break
                } else {
                    Self.callsSent.increment()
                    let leftMillis = max(1, Self.millis(deadline - ContinuousClock.now))
                    switch await pending.call(target, timeoutMillis: leftMillis, send: { id in
                        self.runtime.transport.send(call: PeerCall(id: id, isReply: false, body: body), to: target)
                    }) {
                    case .answered(let bytes):
                        answer = Self.answer(bytes, from: target)
                    case .notSent(let why):
                        lastProblem = why
                    case .lost(let why):
                        if call.mayWrite { throw Self.lostWrite(at: target, why) }
                        lastProblem = why
                    }
                }
            }
            switch answer {
            case .done(let results, let index, let wrote)?:
                return Routed(results: results, index: index, wrote: wrote, node: target ?? cluster.nodeID)
            case .notLeader(let leader)?:
                if leader != noNode && leader != cluster.nodeID && leader != target {
                    next = leader
                    hints += 1
                    // Two nodes naming each other (a leadership change in flight) are not asked at network speed.
                    if hints <= 2 { continue }
                    lastProblem = "node \(target ?? cluster.nodeID) names node \(leader) as the leader, which does not lead either"
                } else {
                    lastProblem = "no leader is known yet"
                }
            case .notHere?:
                lastProblem = "group \(call.group) is not on node \(target ?? cluster.nodeID) (just created, or moved)"
                // Just dropped, perhaps: the committed catalog tells.
                if attempt > 1, let fresh = try? await cluster.refreshCatalog(), fresh.exists, fresh.database(group: call.group) == nil {
                    throw RuntimeError.databaseDropped
                }
            case .notCommitted(let why)?:
                lastProblem = why
            case .outcomeUnknown(let why)?:
                if call.mayWrite { throw OutcomeUnknown(description: why) }
                lastProblem = why
            case .failed(let error)?:
                throw error
            case .refused(let status, let message)?:
                throw RouteError.refused(status: status, message: message)
            case nil:
                break
            }
            try await Task.sleep(for: .milliseconds(min(20 * attempt, 200)))
        }
        let millis = requestTimeoutMillis
        if call.mayWrite { throw NotCommitted(description: "cannot commit to group \(call.group) within \(millis) ms: \(lastProblem)") }
        throw RouteError.unavailable("cannot serve the request on group \(call.group) within \(millis) ms: \(lastProblem)")
    }

    /// Whole milliseconds of `d`.
    public static func millis(_ d: Duration) -> Int64 {
        d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    }

    /// Nodes other than this one that hold `group` (for a read, read replicas too).
    private func holders(of group: GroupID, forWrite: Bool) -> [NodeID] {
        let catalog = cluster.catalog
        guard let database = catalog.database(group: group) else { return [] }
        return (database.replicas + (forWrite ? [] : catalog.readReplicas.map(\.id))).filter { $0 != cluster.nodeID }
    }

    // MARK: - Serving

    /// Runs a call on this node's copy of its group.
    func serveHere(_ call: GroupCall) async -> GroupAnswer {
        do {
            switch call.operation {
            case .execute:
                let (results, index) = try await runtime.executeIndexed(group: call.group, call.command)
                return .done(results: results, index: index, wrote: true)
            case .executeInTurn:
                let (results, index) = try await runtime.executeInTurn(group: call.group, call.command, ageMillis: call.turnAgeMillis,
                                                                       waitMillis: Int64(call.statementTimeoutNanos / 1_000_000)).get()
                return .done(results: results, index: index, wrote: true)
            case .query:
                let (results, index) = try await runtime.query(group: call.group, call.command.statements, consistency: call.consistency,
                                                               statementTimeoutNanos: call.statementTimeoutNanos)
                return .done(results: results, index: index, wrote: false)
            case .request, .readingRequest:
                for s in call.command.statements where !(try await runtime.isReadOnly(group: call.group, s.sql)) {
                    guard call.operation == .request else {
                        return .refused(status: 403, message: "the request writes (\(s.sql.prefix(80))), and its user may only read this database")
                    }
                    do {
                        let (results, index) = try await runtime.executeIndexed(group: call.group, call.command)
                        return .done(results: results, index: index, wrote: true)
                    } catch {
                        return GroupAnswer(error, write: true)
                    }
                }
                let (results, index) = try await runtime.query(group: call.group, call.command.statements, consistency: call.consistency,
                                                               statementTimeoutNanos: call.statementTimeoutNanos)
                return .done(results: results, index: index, wrote: false)
            }
        } catch {
            return GroupAnswer(error, write: call.isWrite)
        }
    }

    /// A call from another node, as the transport's loop reads it; answered over this node's own
    /// connection to that node.
    private func serve(_ call: PeerCall, from peer: NodeID) {
        let admitted = serving.withLockedValue { n -> Bool in
            guard n < Self.maxServing else { return false }
            n += 1
            return true
        }
        guard admitted else {
            answer(call.id, .notCommitted("node \(cluster.nodeID) is serving \(Self.maxServing) calls already"), to: peer)
            return
        }
        guard let request = GroupCall(decoding: call.body) else {
            serving.withLockedValue { $0 -= 1 }
            answer(call.id, .refused(status: 400, message: "the call is not one this node understands"), to: peer)
            return
        }
        if request.operation == .execute && call.body.count <= Self.maxInlineCallBytes {
            // The common call (a client's write sent to a follower) is proposed from here and answered
            // from the apply loop, without a task: a task would add two thread hand-offs to every
            // write passed on (measured: about a fifth more CPU for a write through a follower).
            runtime.executeFuture(group: request.group, request.command).whenComplete { result in
                self.serving.withLockedValue { $0 -= 1 }
                switch result {
                case .success(let (results, index)): self.reply(.done(results: results, index: index, wrote: true), to: call.id, peer: peer)
                case .failure(let error): self.reply(GroupAnswer(error, write: true), to: call.id, peer: peer)
                }
            }
            return
        }
        Task {
            defer { serving.withLockedValue { $0 -= 1 } }
            reply(await serveHere(request), to: call.id, peer: peer)
        }
    }

    /// Sends `reply` to call `id`; one too large for a call is cut down to what it can say.
    private func reply(_ reply: GroupAnswer, to id: UInt64, peer: NodeID) {
        var bytes = reply.encoded()
        if bytes.count > PeerCall.maxBodyBytes {
            let why = "larger than nodes send one another (\(PeerCall.maxBodyBytes) bytes)"
            if case .done(let results, let index, true) = reply {
                // It took effect: the answer says so, statement by statement, without the rows.
                bytes = GroupAnswer.done(results: results.map { r in
                    var kept = StatementResult(error: r.error ?? "the statement took effect; its results are \(why): return fewer rows, or send it to node \(cluster.nodeID)")
                    kept.rowsAffected = r.rowsAffected
                    kept.lastInsertID = r.lastInsertID
                    return kept
                }, index: index, wrote: true).encoded()
            } else {
                bytes = GroupAnswer.refused(status: 413, message: "the results are \(why): select fewer rows or columns, or read from node \(cluster.nodeID)").encoded()
            }
        }
        runtime.transport.send(call: PeerCall(id: id, isReply: true, body: bytes), to: peer)
    }

    private func answer(_ id: UInt64, _ answer: GroupAnswer, to peer: NodeID) {
        runtime.transport.send(call: PeerCall(id: id, isReply: true, body: answer.encoded()), to: peer)
    }
}
