import CairnCluster
import CairnJSON
import CairnQuery
import CairnNode
import CairnRaft
import CairnRouter
import CairnSQLite
import Foundation
import Hummingbird
import Metrics
import NIOConcurrencyHelpers

/// Reads on sharded tables: a read pinned to one shard goes there; any other is run on every shard it
/// may touch and combined exactly as one SQLite holding every row would answer, never seeing half of a
/// transaction across shards. Planned by `CairnQuery`; a shard's answer is judged by `shardRead`.
extension API {
    // MARK: Reads

    /// Reads for a request that reads sharded tables: one result per statement (those on unsharded
    /// tables from the home group), for any API to answer in its own shape; nil when it reads none.
    func readSharded(_ statements: [SQLStatement], db: String, consistency: ReadConsistency) async throws -> [StatementResult]? {
        let catalog = try await catalog { $0.databases[db] != nil }
        guard let view = shardView(db, catalog), statements.contains(where: { Self.mentions($0.sql, view.tables) }),
              let home = catalog.databases[db]?.group else { return nil }
        var results: [StatementResult] = []
        for statement in statements {
            results.append(try await readOne(statement, db: db, view: view, home: home, consistency: consistency))
        }
        return results
    }

    /// A request that may read or write, on a database with sharded tables (nil without them): all
    /// reads are read where their rows are (the home group's waiting out transactions across shards, as
    /// a shard's do); anything else is written, to the shards and the home group as one transaction.
    /// `beforeWrite` checks the right to write and audits; `wrote` says which it was.
    func requestWithShards(_ statements: [SQLStatement], db: String, group: GroupID, atomic: Bool, consistency: ReadConsistency,
                           statementTimeoutNanos: UInt64 = 0, beforeWrite: () throws -> Void) async throws -> (results: [StatementResult], wrote: Bool)? {
        guard let view = shardView(db, cluster.catalog) else { return nil }
        if try await onlyReads(statements, db: db, homeReads: { try await !self.writes($0, group: group) }) {
            if let results = try await readSharded(statements, db: db, consistency: consistency) { return (results, false) }
            return (try await readHome(statements, group: group, consistency: consistency, statementTimeoutNanos: statementTimeoutNanos).results, false)
        }
        try beforeWrite()
        if statements.contains(where: { Self.mentions($0.sql, view.tables) }), let results = try await writeSharded(statements, db: db, atomic: atomic) {
            return (results, true)
        }
        return (try await executeWaitingOutLocks(SQLCommand.now(statements, atomic: atomic), group: group).results, true)
    }

    /// Whether every statement only reads, each judged where it runs: against the sharded tables'
    /// schema when it names one, else by the home group (`homeReads`).
    func onlyReads(_ statements: [SQLStatement], db: String, homeReads: ([SQLStatement]) async throws -> Bool) async throws -> Bool {
        guard let view = shardView(db, try await catalog { $0.databases[db] != nil }) else { return try await homeReads(statements) }
        var home: [SQLStatement] = []
        for statement in statements {
            guard Self.mentions(statement.sql, view.tables) else { home.append(statement); continue }
            guard let (_, analysis) = try? schemaCopies.analyze(statement.sql, database: db, tables: view.tables), analysis.readOnly else { return false }
        }
        if home.isEmpty { return true }
        return try await homeReads(home)
    }

    private func readOne(_ statement: SQLStatement, db: String, view: ShardView, home: GroupID, consistency: ReadConsistency) async throws -> StatementResult {
        var view = view
        for attempt in 0..<3 {
            do {
                return try await readOnce(statement, db: db, view: view, home: home, consistency: consistency)
            } catch let stale as StaleShardMap where attempt < 2 {
                guard let fresh = shardView(db, try await catalogAfterSplit(db, stale.refusal)) else { break }
                view = fresh
            }
        }
        throw HTTPFailure.unavailable("the shard map kept changing while the read was routed; retry")
    }

    private func readOnce(_ statement: SQLStatement, db: String, view: ShardView, home: GroupID, consistency: ReadConsistency) async throws -> StatementResult {
        guard Self.mentions(statement.sql, view.tables) else {
            return try await readHome([statement], group: home, consistency: consistency).results[0]
        }
        let schema: ShardingSchema, analysis: StatementAnalysis
        do {
            (schema, analysis) = try schemaCopies.analyze(statement.sql, database: db, tables: view.tables)
        } catch {
            // A table sharded through another node a moment ago: plan again with the catalog as of
            // every committed change.
            if let fresh = try? await committedCatalog(), let freshView = shardView(db, fresh), freshView.tables != view.tables {
                return try await readOne(statement, db: db, view: freshView, home: home, consistency: consistency)
            }
            // It names a sharded table's name but does not prepare against the sharded tables: it is the
            // home group's (a column of that name, say), or it is wrong, and then what is wrong with it
            // against the sharded tables says more than the home group's "no such table".
            let answer = try await readHome([statement], group: home, consistency: consistency).results[0]
            if answer.error != nil, let message = (error as? SQLiteError)?.message ?? (error as? SQLSyntaxError)?.message {
                return StatementResult(error: message)
            }
            return answer
        }
        switch try Self.refusing({ try ReadPlanner(schema: schema, map: view.map).plan(statement, analysis: analysis) }) {
        case .home:
            return try await readHome([statement], group: home, consistency: consistency).results[0]
        case .single(let shard):
            Self.countShard(db, shard, "read")
            return try await readWaitingOutTransactions(view.groups[shard], statement, mapVersion: view.map.version,
                                                        arcVersion: view.map.arcVersions[shard], consistency: consistency).result
        case .scatter(let scatter):
            for shard in scatter.shards { Self.countShard(db, shard, "read") }
            // Read-atomic across shards: no shard is read while a transaction is prepared there, and
            // the shards' epochs are read again after; if one moved, a transaction ran between the
            // reads (its effects may be half seen), and the read starts over.
            let deadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
            var attempt = 0
            while true {
                attempt += 1
                if attempt > Self.optimisticReadAttempts {
                    // Transactions keep moving the shards under the read: lock them for it instead.
                    let (partials, references) = try await lockingRead(scatter, view: view)
                    let answer = Combiner.combine(scatter, partials: partials, references: references,
                                                  timeoutNanos: UInt64(options.requestTimeoutMillis) * 1_000_000)
                    if let error = answer.error, error.hasPrefix(Combiner.tooMuchPrefix) { throw HTTPFailure(status: 413, message: error) }
                    return answer
                }
                // The first shard also sends the reference tables a gathered join needs.
                let reads = try await withThrowingTaskGroup(of: ShardRead.self) { tasks in
                    for (n, shard) in scatter.shards.enumerated() {
                        tasks.addTask {
                            let also = n == 0 ? scatter.referenceWorker : nil
                            let r = try await self.readWaitingOutTransactions(view.groups[shard], scatter.worker, also: also, mapVersion: view.map.version,
                                                                              arcVersion: view.map.arcVersions[shard], consistency: consistency)
                            return ShardRead(index: n, result: r.result, also: also == nil ? nil : r.also, epoch: r.epoch)
                        }
                    }
                    var out = [ShardRead](repeating: ShardRead(index: 0, result: StatementResult(), epoch: 0), count: scatter.shards.count)
                    var rows = 0, bytes = 0
                    for try await read in tasks {
                        out[read.index] = read
                        for r in [read.result] + (read.also.map { [$0] } ?? []) {
                            let (rs, bs) = Combiner.size(of: r)
                            rows += rs
                            bytes += bs
                        }
                        if let error = Combiner.overLimit(rows: rows, bytes: bytes, shards: scatter.shards.count) {
                            tasks.cancelAll()
                            throw HTTPFailure(status: 413, message: error)
                        }
                    }
                    return out
                }
                let epochs = try await withThrowingTaskGroup(of: (Int, Int64).self) { tasks in
                    for (n, shard) in scatter.shards.enumerated() {
                        tasks.addTask { (n, Self.shardState(try await self.groupRouter.query([Self.shardStateQuery], group: view.groups[shard], consistency: consistency).results[0]).epoch) }
                    }
                    var out = [Int64](repeating: 0, count: scatter.shards.count)
                    for try await (n, e) in tasks { out[n] = e }
                    return out
                }
                guard epochs != reads.map(\.epoch) else {
                    let answer = Combiner.combine(scatter, partials: reads.map(\.result), references: reads.first?.also,
                                                  timeoutNanos: UInt64(options.requestTimeoutMillis) * 1_000_000)
                    if let error = answer.error, error.hasPrefix(Combiner.tooMuchPrefix) { throw HTTPFailure(status: 413, message: error) }
                    return answer
                }
                guard ContinuousClock.now < deadline else {
                    throw HTTPFailure.unavailable("transactions across shards kept changing the shards while they were read; retry")
                }
                try await Task.sleep(for: .milliseconds(min(2 * attempt, 50)))
            }
        }
    }

    static let shardStateQuery = SQLStateMachine.shardStateQuery

    /// A read of a database's home group. Once the database has shards, the home group may hold a
    /// transaction across shards (one that wrote unsharded tables too), whose outcome is waited for as
    /// on a shard: its client may have been answered, and a read after must see it.
    func readHome(_ statements: [SQLStatement], group: GroupID, consistency: ReadConsistency, statementTimeoutNanos: UInt64 = 0) async throws -> Routed {
        // Asked whether or not this node's catalog copy shows shards yet: another node may have made
        // them, and committed a transaction here, a moment ago (without a state table, the answer is
        // "never took part").
        let deadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
        var attempt = 0
        while true {
            attempt += 1
            var routed = try await groupRouter.query(statements + [Self.shardStateQuery], group: group, consistency: consistency,
                                                     statementTimeoutNanos: statementTimeoutNanos)
            // No state table yet: the group never took part in a transaction.
            let state = Self.shardState(routed.results.count == statements.count + 1 ? routed.results[statements.count] : StatementResult())
            if state.prepared == 0 {
                routed.results = Array(routed.results.prefix(statements.count))
                return routed
            }
            guard ContinuousClock.now < deadline else {
                throw HTTPFailure.unavailable("a transaction across shards held the database's home group for the whole request; retry")
            }
            try await Task.sleep(for: .milliseconds(min(2 * attempt, 50)))
        }
    }

    /// One shard's part of a read across shards.
    struct ShardRead: Sendable {
        var index: Int
        var result: StatementResult
        /// The reference tables' rows, from the first shard of a gathered join.
        var also: StatementResult?
        var epoch: Int64
    }

    /// A shard's transaction epoch and how many transactions are prepared there (none before its first).
    static func shardState(_ r: StatementResult) -> (epoch: Int64, prepared: Int64) {
        guard r.error == nil, let row = r.rows.first, row.count == 2, case .integer(let e) = row[0], case .integer(let p) = row[1] else { return (0, 0) }
        return (e, p)
    }

    /// One read on a shard, at one read point with the shard's transaction state; while a transaction
    /// is prepared there, its outcome is waited for (it may already be committed: the client that sent
    /// it may have its answer, and a read after must see it).
    /// `mapVersion`: the shard map the read was planned with; a shard that split since throws
    /// `StaleShardMap` (its rows may have moved to the split's other half). `arcVersion`: the map
    /// version at which this shard's arc last changed; a replica that has not applied that split yet
    /// (a read that need not be linearizable may land on one) still holds the rows that moved, and the
    /// shard is read again at its leader's read index.
    func readWaitingOutTransactions(_ group: GroupID, _ statement: SQLStatement, also: SQLStatement? = nil, mapVersion: UInt32? = nil,
                                    arcVersion: UInt32 = 0, consistency: ReadConsistency) async throws -> (result: StatementResult, also: StatementResult, epoch: Int64) {
        let deadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
        var attempt = 0
        var consistency = consistency
        let statements = Self.shardReadStatements(statement, also: also)
        while true {
            attempt += 1
            let r = try await groupRouter.query(statements, group: group, consistency: consistency).results
            switch try Self.shardRead(r, asked: statements.count, also: also != nil, mapVersion: mapVersion, arcVersion: arcVersion, consistency: consistency) {
            case .answered(let result, let alsoResult, let epoch):
                return (result, alsoResult, epoch)
            case .splitNotApplied:
                consistency = .linearizable
                continue
            case .held:
                break
            }
            guard ContinuousClock.now < deadline else {
                throw HTTPFailure.unavailable("a transaction across shards held the shard for the whole request; retry")
            }
            try await Task.sleep(for: .milliseconds(min(2 * attempt, 50)))
        }
    }

    /// A statement read on one shard, with what says whether the answer may be used: the shard's
    /// transaction state and the split version its replica applied.
    static func shardReadStatements(_ statement: SQLStatement, also: SQLStatement? = nil) -> [SQLStatement] {
        [statement] + (also.map { [$0] } ?? []) + [shardStateQuery, SQLStateMachine.splitVersionQuery]
    }

    /// What a shard's answer to `shardReadStatements` means (`readWaitingOutTransactions`, and the fast path).
    enum ShardReadOutcome {
        case answered(StatementResult, also: StatementResult, epoch: Int64)
        /// The replica has not applied a split the catalog records: read again, linearizably.
        case splitNotApplied
        /// A transaction across shards is prepared there: wait, and read again.
        case held
    }

    /// Throws `StaleShardMap` when the shard split after the router's map was made.
    static func shardRead(_ r: [StatementResult], asked: Int, also: Bool, mapVersion: UInt32?, arcVersion: UInt32,
                          consistency: ReadConsistency) throws -> ShardReadOutcome {
        if let mapVersion, r.count == asked {
            let version = SQLStateMachine.splitVersion(r[r.count - 1])
            if version > mapVersion { throw StaleShardMap(refusal: ShardSplit.staleMapMessage + "\(version), the router's \(mapVersion))") }
            if version < arcVersion {
                guard consistency != .linearizable else {
                    throw HTTPFailure.unavailable("a shard's replica has not applied a split the catalog records; retry")
                }
                return .splitNotApplied
            }
        }
        let state = shardState(r.count == asked ? r[r.count - 2] : StatementResult())
        guard state.prepared == 0 else { return .held }
        return .answered(r[0], also: also ? r[1] : StatementResult(), epoch: state.epoch)
    }
}
