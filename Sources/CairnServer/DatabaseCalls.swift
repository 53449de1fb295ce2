import CairnNode
import CairnRaft
import CairnRouter
import CairnSQLite

/// Statements on a database, wherever its rows are: the typed calls every API (CairnDB's own, rqlite's,
/// the older systems') answers from in its own shape. A write or read touching sharded tables goes to
/// their shards (across shards atomically); the rest to the database's home group.
extension API {
    /// One result per statement; the node that served them and the log index they reflect (nil:
    /// several shards did).
    struct Answer: Sendable {
        var results: [StatementResult]
        var node: NodeID?
        var index: LogIndex?
    }

    func write(_ statements: [SQLStatement], db: String, atomic: Bool) async throws -> Answer {
        if let sharded = try await writeSharded(statements, db: db, atomic: atomic) { return Answer(results: sharded) }
        let routed = try await executeWaitingOutLocks(SQLCommand.now(statements, atomic: atomic), group: try await groupRouter.group(of: db))
        return try await writtenHome(routed, statements, db: db, atomic: atomic)
    }

    /// The answer to a write the home group committed (`routed`).
    func writtenHome(_ routed: Routed, _ statements: [SQLStatement], db: String, atomic: Bool) async throws -> Answer {
        // A table sharded moments ago, through another node: this node's catalog copy sent its
        // statements to the home group, where nothing was applied. Send them to the shards.
        if Self.missedShardedTable(routed.results, allFailed: true), try await committedCatalog().shardedTables[db] != nil,
           let sharded = try await writeSharded(statements, db: db, atomic: atomic) {
            return Answer(results: sharded)
        }
        return Answer(results: routed.results, node: routed.node, index: routed.index)
    }

    /// `statementTimeoutNanos`: a statement of the home group's running longer is interrupted (0: the node's default).
    func read(_ statements: [SQLStatement], db: String, consistency: ReadConsistency, statementTimeoutNanos: UInt64 = 0) async throws -> Answer {
        if let sharded = try await readSharded(statements, db: db, consistency: consistency) { return Answer(results: sharded) }
        let routed = try await readHome(statements, group: try await groupRouter.group(of: db), consistency: consistency,
                                        statementTimeoutNanos: statementTimeoutNanos)
        return try await readHome(routed, statements, db: db, consistency: consistency)
    }

    /// The answer to a read the home group served (`routed`).
    func readHome(_ routed: Routed, _ statements: [SQLStatement], db: String, consistency: ReadConsistency) async throws -> Answer {
        if Self.missedShardedTable(routed.results, allFailed: false), try await committedCatalog().shardedTables[db] != nil,
           let sharded = try await readSharded(statements, db: db, consistency: consistency) {
            return Answer(results: sharded)
        }
        return Answer(results: routed.results, node: routed.node, index: routed.index)
    }

    /// Whether the home group's answer says a table it was asked about is missing (it may have been
    /// sharded since this node's catalog copy). For a write, only when no statement took effect.
    static func missedShardedTable(_ results: [StatementResult], allFailed: Bool) -> Bool {
        guard results.contains(where: { $0.error?.hasPrefix("no such table: ") == true }) else { return false }
        return !allFailed || results.allSatisfy { $0.error != nil }
    }
}
