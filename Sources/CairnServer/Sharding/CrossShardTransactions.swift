import CairnCluster
import CairnNode
import CairnQuery
import CairnRaft
import CairnRouter
import CairnSQLite
import Foundation
import NIOConcurrencyHelpers

/// The coordinator of transactions across shards (two-phase commit over the shards' Raft groups; the
/// shard's side is `TransactionStep`). Any node coordinates the requests it receives; any node
/// finishes a transaction whose coordinator went away (`recoverTransactions`), so a coordinator killed
/// at any moment leaves no transaction undecided, and no shard locked, past its deadline and one pass.
extension API {
    /// How long a transaction may stay undecided before anyone may abort it (the design note's 5 s).
    static let transactionDeadlineMillis: Int64 = 5_000
    /// How often each node looks for prepared transactions past their deadline on the shards it leads.
    static let recoveryPassMillis: UInt64 = 1_000

    /// A shard's part of a request: the client's statement each of its statements comes from.
    struct ShardPart {
        var statements: [SQLStatement] = []
        var origins: [Int] = []
        /// Per statement: a write to a reference table's copy (answered by one copy, not summed).
        var copies: [Bool] = []
    }

    /// Commits every shard's part or none; the answer has one result per client statement (an INSERT
    /// split over shards adds up its parts).
    func commitAcrossShards(_ parts: [Int: ShardPart], statementCount: Int, view: ShardView) async throws -> [StatementResult] {
        // Shards in order, the home group's part (if any) last: held for the shortest time by a
        // transaction that waits for its shards one by one (its unsharded tables are everyone's).
        let shards = parts.keys.sorted { ($0 == ShardView.homePart ? Int.max : $0) < ($1 == ShardView.homePart ? Int.max : $1) }
        let groups = shards.map { view.group(ofPart: $0) }
        let anchor = groups[0]
        let requestDeadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
        // Its place in the shards' lines, the same on every try: older requests go first.
        let began = ContinuousClock.now
        var attempt = 0
        while true {
            attempt += 1
            let txid = UInt64.random(in: 1...UInt64(Int64.max))
            let seed = UInt64.random(in: 0...UInt64.max)
            // First all at once (one Raft round); after losing to another transaction, in shard order,
            // waiting at each held shard: transactions that take their shards in one order never wait
            // on each other in a cycle, so under contention they queue instead of aborting each other.
            // A group held right now (as a replica here sees it) sends even the first try the ordered way,
            // to wait in line there (`executeInTurn`).
            var contended = attempt > 1
            if !contended {
                for group in groups where await isHeld(group) { contended = true; break }
            }
            var prepared: [Result<[StatementResult], any Error>?]
            if contended {
                prepared = await prepareInOrder(txid: txid, groups: groups, seed: seed, mapVersion: view.map.version, began: began,
                                                until: requestDeadline) { parts[shards[$0]]!.statements }
            } else {
                prepared = await prepareAll(txid: txid, groups: groups, seed: seed, mapVersion: view.map.version) { parts[shards[$0]]!.statements }
            }
            // A shard left unprepared (after an earlier one failed) has no vote: a no.
            var votes: [Int: Result<[StatementResult], any Error>] = [:]
            for (shard, vote) in zip(shards, prepared) { votes[shard] = vote }
            crashIfAsked("after_prepare")
            let yes = TransactionRules.commits(votes: shards.map { shard in
                if case .success(let r)? = votes[shard] { r.allSatisfy { $0.error == nil } } else { nil }
            })
            let locked = votes.values.contains { if case .success(let r) = $0 { r.contains { $0.error == TransactionStep.lockedMessage } } else { false } }
            // The commit point: the anchor's record, compare-and-set.
            let decided: [StatementResult]
            do {
                decided = try await groupRouter.execute(Self.command(.decide(txid: txid, commit: yes)), group: anchor).results
            } catch {
                // Prepared shards stay locked until their deadline; then whoever finds them resolves them.
                throw OutcomeUnknown(description: "the decision of transaction \(txid) across \(shards.count) shards was not confirmed (\(error))")
            }
            let committed = Self.transactionState(decided) == TransactionStep.committed
            crashIfAsked("after_decide")
            // Each shard's leader proposes the next in its line once the finish has freed it.
            finishTransaction(txid, commit: committed, groups: groups)
            if committed {
                var results = [StatementResult](repeating: StatementResult(), count: statementCount)
                var answered: Set<Int> = []
                for shard in shards {
                    guard case .success(let r)? = votes[shard] else { continue }
                    for (k, origin) in parts[shard]!.origins.enumerated() where k < r.count {
                        if shard == ShardView.homePart {
                            // A statement of the home group's is whole there: its rows (a SELECT, RETURNING) too.
                            results[origin] = r[k]
                            continue
                        }
                        if parts[shard]!.copies[k] {
                            // Every copy did the same: the first one answers.
                            if answered.insert(origin).inserted { results[origin] = r[k] }
                            continue
                        }
                        results[origin].rowsAffected += r[k].rowsAffected
                        if r[k].lastInsertID != 0 { results[origin].lastInsertID = r[k].lastInsertID }
                    }
                }
                return results
            }
            if locked && ContinuousClock.now < requestDeadline {
                // Another transaction holds a shard: try again after it, with jitter so two retrying
                // requests do not meet again.
                try await Task.sleep(for: .milliseconds(Int64.random(in: 5...(20 * Int64(min(attempt, 10))))))
                continue
            }
            if let failure = votes.values.compactMap({ if case .failure(let e) = $0 { e } else { nil } }).first {
                throw NotCommitted(description: "transaction across \(shards.count) shards aborted: \(failure)")
            }
            if locked { throw HTTPFailure.unavailable("the shards stayed locked by other transactions across shards; retry") }
            // A statement failed: nothing was applied anywhere; each statement's result says what happened.
            var results = [StatementResult](repeating: StatementResult(), count: statementCount)
            for shard in shards {
                guard case .success(let r)? = votes[shard] else { continue }
                for (k, origin) in parts[shard]!.origins.enumerated() where k < r.count && r[k].error != nil && results[origin].error == nil {
                    results[origin] = r[k]
                }
            }
            if !results.contains(where: { $0.error != nil }) {
                throw HTTPFailure.unavailable("transaction across \(shards.count) shards was aborted (its deadline passed); retry")
            }
            return results
        }
    }

    /// Optimistic reads across shards tried before a locking one.
    static let optimisticReadAttempts = 3

    /// A read across shards that cannot lose to writers: the worker query runs as the prepare of a
    /// transaction on every shard at once (each shard answers at its prepare's entry and holds its
    /// writes), which is then aborted. If every prepare succeeded, every shard was held at once, so no
    /// transaction is half seen; a shard another transaction holds makes it try again.
    func lockingRead(_ scatter: ReadPlan.Scatter, view: ShardView) async throws -> (partials: [StatementResult], references: StatementResult?) {
        let groups = scatter.shards.map { view.groups[$0] }
        let deadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
        var attempt = 0
        while true {
            attempt += 1
            let txid = UInt64.random(in: 1...UInt64(Int64.max))
            // The first shard also sends the reference tables a gathered join needs.
            let results = await prepareAll(txid: txid, groups: groups, seed: 0, mapVersion: view.map.version) { n in
                [scatter.worker] + (n == 0 ? scatter.referenceWorker.map { [$0] } ?? [] : [])
            }
            // Released whatever happened: the shards that prepared must not stay locked until recovery.
            _ = try? await groupRouter.execute(Self.command(.decide(txid: txid, commit: false)), group: groups[0]).results
            finishTransaction(txid, commit: false, groups: groups)
            if let failure = results.compactMap({ if case .failure(let e) = $0 { e } else { nil } }).first { throw failure }
            let partials = results.map { if case .success(let r) = $0 { r.first ?? StatementResult(error: "no result") } else { StatementResult(error: "no result") } }
            var references: StatementResult?
            if scatter.referenceWorker != nil {
                references = if case .success(let r)? = results.first, r.count > 1 { r[1] } else { StatementResult(error: "no result") }
            }
            if !partials.contains(where: { $0.error == TransactionStep.lockedMessage }) { return (partials, references) }
            guard ContinuousClock.now < deadline else {
                throw HTTPFailure.unavailable("transactions across shards held the shards for the whole read; retry")
            }
            try await Task.sleep(for: .milliseconds(Int64.random(in: 1...(5 * Int64(min(attempt, 10))))))
        }
    }

    /// The prepare of the `n`th group's part.
    /// `mapVersion`: the shard map the parts were planned with (a database's home group, which never
    /// splits, passes any).
    private static func prepareCommand(txid: UInt64, groups: [GroupID], n: Int, statements: [SQLStatement], seed: UInt64, mapVersion: UInt32,
                                       nowMillis: Int64, deadlineMillis: Int64) -> SQLCommand {
        var command = SQLCommand(statements: statements, atomic: true, timestampMillis: nowMillis, randomSeed: seed)
        command.mapVersion = mapVersion
        command.transaction = .prepare(txid: txid, anchor: groups[0], participants: groups, deadlineMillis: deadlineMillis, recordsHere: n == 0)
        return command
    }

    /// At most this long in all, a transaction taking its shards in order waits for held ones (well
    /// within its deadline, after which recovery would abort it).
    static let orderedWaitMillis: Int64 = 2_000

    /// Proposes each group's prepare in `groups` order, one after the other, each in turn with the
    /// writes that wait at that group (its leader proposes it once the group is free: `executeInTurn`),
    /// until the wait is over. Stops at the first group that votes no: the groups after it are left
    /// unprepared (nil).
    /// `began`: when the request began, its place in each line.
    private func prepareInOrder(txid: UInt64, groups: [GroupID], seed: UInt64, mapVersion: UInt32, began: ContinuousClock.Instant,
                                until requestDeadline: ContinuousClock.Instant,
                                statements: (Int) -> [SQLStatement]) async -> [Result<[StatementResult], any Error>?] {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let waitDeadline = min(requestDeadline, ContinuousClock.now + .milliseconds(Self.orderedWaitMillis))
        var out = [Result<[StatementResult], any Error>?](repeating: nil, count: groups.count)
        for (n, group) in groups.enumerated() {
            let leftMillis = GroupRouter.millis(waitDeadline - ContinuousClock.now)
            guard leftMillis > 0 else {
                // The wait is over before this shard's turn: held, as a refusal says.
                out[n] = .success(statements(n).map { _ in StatementResult(error: TransactionStep.lockedMessage) })
                break
            }
            // Every try with the transaction's one time and seed: each part sees what the others see.
            let command = Self.prepareCommand(txid: txid, groups: groups, n: n, statements: statements(n), seed: seed,
                                              mapVersion: mapVersion, nowMillis: now, deadlineMillis: now + Self.transactionDeadlineMillis)
            do {
                out[n] = .success(try await groupRouter.executeInTurn(command, group: group, began: began, waitMillis: leftMillis).results)
            } catch {
                out[n] = .failure(error)
            }
            // Not prepared here (refused, failed or still held after the wait): the rest are not asked.
            guard case .success(let r)? = out[n], r.allSatisfy({ $0.error == nil }) else { break }
        }
        return out
    }

    /// Proposes each group's prepare at once (one Raft round); each group's answer, or the error that
    /// stopped it, in `groups` order. The first group is the anchor.
    private func prepareAll(txid: UInt64, groups: [GroupID], seed: UInt64, mapVersion: UInt32,
                            statements: (Int) -> [SQLStatement]) async -> [Result<[StatementResult], any Error>] {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        // A struct, not a tuple: Swift 6.3's optimizer miscompiles a task group whose child result is a
        // tuple holding a `Result<_, any Error>` (the index read back is garbage and the store traps;
        // reproduced in 25 lines, release builds only).
        struct Vote: Sendable {
            var index: Int
            var result: Result<[StatementResult], any Error>
        }
        return await withTaskGroup(of: Vote.self) { tasks in
            for (n, group) in groups.enumerated() {
                let command = Self.prepareCommand(txid: txid, groups: groups, n: n, statements: statements(n), seed: seed,
                                                  mapVersion: mapVersion, nowMillis: now, deadlineMillis: now + Self.transactionDeadlineMillis)
                tasks.addTask {
                    do {
                        return Vote(index: n, result: .success(try await self.groupRouter.execute(command, group: group).results))
                    } catch {
                        return Vote(index: n, result: .failure(error))
                    }
                }
            }
            var out = [Result<[StatementResult], any Error>](repeating: .success([]), count: groups.count)
            for await vote in tasks { out[vote.index] = vote.result }
            return out
        }
    }

    /// A decide, resolve or finish entry, stamped now (their own time is what deadlines are judged by).
    static func command(_ step: TransactionStep) -> SQLCommand {
        var c = SQLCommand(statements: [], timestampMillis: Int64(Date().timeIntervalSince1970 * 1000), randomSeed: 0)
        c.transaction = step
        return c
    }

    static func transactionState(_ results: [StatementResult]) -> String? {
        if case .text(let s)? = results.first?.rows.first?.first { return s }
        return nil
    }

    /// Sends the outcome to every participant, in the background (the client has its answer); what does
    /// not arrive is finished by the recovery pass.
    func finishTransaction(_ txid: UInt64, commit: Bool, groups: [GroupID]) {
        for group in groups {
            Task {
                _ = try? await self.groupRouter.execute(Self.command(.finish(txid: txid, commit: commit)), group: group).results
            }
        }
    }

    /// Runs forever: on every shard this node leads, prepared transactions past their deadline are
    /// resolved at their anchor and finished everywhere.
    func recoverTransactions() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(Self.recoveryPassMillis))
            let catalog = cluster.catalog
            // Shards, and the home groups of databases with shards (a request writing both makes the
            // home group a participant too).
            let shardGroups = catalog.databases.values.filter { Catalog.shardOf($0.name) != nil || !catalog.shards(of: $0.name).isEmpty }.map(\.group)
            for group in shardGroups where runtime.hosts(group) {
                guard let status = try? await runtime.status(group: group), status.role == .leader else { continue }
                await recover(group: group)
            }
        }
    }

    private func recover(group: GroupID) async {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        guard let found = try? await runtime.query(group: group, [SQLStatement("SELECT txid, anchor, participants FROM _cairn_txn WHERE deadline_ms < ?",
                                                                             [.integer(now)])], consistency: .local).results.first,
              found.error == nil else { return }
        for row in found.rows {
            guard row.count == 3, case .integer(let id) = row[0], case .integer(let anchor) = row[1], case .text(let list) = row[2] else { continue }
            let txid = UInt64(bitPattern: id)
            guard let outcome = try? await groupRouter.execute(Self.command(.resolve(txid: txid)), group: GroupID(bitPattern: anchor)).results,
                  let state = Self.transactionState(outcome), state != TransactionStep.pending else { continue }
            let groups = list.split(separator: ",").compactMap { GroupID($0) }
            log("node \(cluster.nodeID): transaction \(txid) past its deadline: \(state) at its anchor; finishing it on \(groups.count) shard(s)")
            finishTransaction(txid, commit: state == TransactionStep.committed, groups: groups)
        }
    }
}
