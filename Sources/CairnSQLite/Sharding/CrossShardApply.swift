import Foundation

/// How a shard applies the steps of a transaction across shards (see `TransactionStep`). Its state
/// lives in the shard's own SQLite, in reserved tables every replica writes alike:
/// `_cairn_txn` (prepared transactions: the lock), `_cairn_txn_record` (on the anchor: the outcome),
/// `_cairn_shard_state` (how many are prepared, and `xepoch`, which every prepare and finish moves on,
/// so a read across shards can tell that one ran in the middle of it).
extension SQLStateMachine {
    static let transactionSchema = [
        "CREATE TABLE IF NOT EXISTS _cairn_txn(txid INTEGER PRIMARY KEY, command BLOB NOT NULL, anchor INTEGER NOT NULL, deadline_ms INTEGER NOT NULL, participants TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS _cairn_txn_record(txid INTEGER PRIMARY KEY, state TEXT NOT NULL, deadline_ms INTEGER NOT NULL, decided_ms INTEGER)",
        "CREATE TABLE IF NOT EXISTS _cairn_shard_state(id INTEGER PRIMARY KEY CHECK (id = 0), xepoch INTEGER NOT NULL, prepared INTEGER NOT NULL)",
        "INSERT OR IGNORE INTO _cairn_shard_state VALUES (0, 0, 0)",
    ]

    /// Decided outcomes are kept this long after the decision (a late prepare of the anchor must
    /// still find its transaction decided), then forgotten.
    static let outcomeRetentionMillis: Int64 = 86_400_000

    /// Whether a prepared transaction holds this shard.
    func isLocked() throws -> Bool {
        if preparedCount == nil {
            let r = connection.internalRun("SELECT prepared FROM _cairn_shard_state WHERE id = 0")
            if case .integer(let n)? = r.rows.first?.first { preparedCount = Int(n) } else { preparedCount = 0 }
        }
        return preparedCount! > 0
    }

    /// Whether a prepared transaction holds this database now, as its last applied entry left it (a
    /// write waiting in line at the leader waits while it does). A database that never had one is free.
    public var heldByTransaction: Bool { (try? isLocked()) ?? true }

    func applyTransaction(_ step: TransactionStep, _ command: SQLCommand, entry: Int,
                          rolledBack: [StatementPosition: StatementResult]) throws -> [StatementResult] {
        for sql in Self.transactionSchema { try connection.internalExec(sql) }
        let txid = SQLValue.integer(Int64(bitPattern: step.txid))
        switch step {
        case .prepare(_, let anchor, let participants, let deadline, let recordsHere):
            var recorded: String?
            if case .text(let state)? = connection.internalRun("SELECT state FROM _cairn_txn_record WHERE txid = ?", [txid]).rows.first?.first {
                recorded = state
            }
            switch TransactionRules.prepare(recordedState: recorded, locked: try isLocked()) {
            case .alreadyDecided(let state):
                return command.statements.map { _ in StatementResult(error: "cairn: transaction \(step.txid) was already decided (\(state))") }
            case .locked:
                return command.statements.map { _ in StatementResult(error: TransactionStep.lockedMessage) }
            case .run:
                break
            }
            var inner = command
            inner.transaction = nil
            inner.atomic = true
            try connection.execPrepared("SAVEPOINT cairn_prepare")
            let results = try run(inner, entry: entry, rolledBack: rolledBack)
            // Only the vote and the answer are kept now; the rows are written at the finish.
            try connection.execPrepared("ROLLBACK TO cairn_prepare")
            try connection.execPrepared("RELEASE cairn_prepare")
            connection.noteRollback()
            guard results.allSatisfy({ $0.error == nil }) else { return results }
            try connection.internalExec("INSERT INTO _cairn_txn(txid, command, anchor, deadline_ms, participants) VALUES (?, ?, ?, ?, ?)",
                                        [txid, .blob(inner.encoded()), .integer(Int64(bitPattern: anchor)), .integer(deadline),
                                         .text(participants.map(String.init).joined(separator: ","))])
            try connection.internalExec("UPDATE _cairn_shard_state SET xepoch = xepoch + 1, prepared = prepared + 1 WHERE id = 0")
            preparedCount = (preparedCount ?? 0) + 1
            if recordsHere {
                try connection.internalExec("INSERT INTO _cairn_txn_record(txid, state, deadline_ms) VALUES (?, 'pending', ?)", [txid, .integer(deadline)])
            }
            return results
        case .decide, .resolve:
            var commit: Bool?
            if case .decide(_, let c) = step { commit = c }
            let now = command.timestampMillis
            try connection.internalExec("DELETE FROM _cairn_txn_record WHERE state != 'pending' AND decided_ms < ?",
                                        [.integer(now - Self.outcomeRetentionMillis)])
            var recorded: (state: String, deadlineMillis: Int64)?
            if let row = connection.internalRun("SELECT state, deadline_ms FROM _cairn_txn_record WHERE txid = ?", [txid]).rows.first,
               case .text(let s) = row[0], case .integer(let deadline) = row[1] {
                recorded = (s, deadline)
            }
            let (state, write) = TransactionRules.anchor(recorded: recorded, commit: commit, entryMillis: now)
            if write && recorded != nil {
                try connection.internalExec("UPDATE _cairn_txn_record SET state = ?, decided_ms = ? WHERE txid = ?", [.text(state), .integer(now), txid])
            } else if write {
                // Never prepared here (or forgotten): aborted, and a late prepare now fails.
                try connection.internalExec("INSERT INTO _cairn_txn_record(txid, state, deadline_ms, decided_ms) VALUES (?, ?, 0, ?)",
                                            [txid, .text(state), .integer(now)])
            }
            var r = StatementResult()
            r.columns = ["state"]
            r.types = [""]
            r.rows = [[.text(state)]]
            return [r]
        case .finish(_, let commit):
            // Remembered (as long as outcomes are), so the same prepare arriving again, or late (after an
            // abort that came first), is refused rather than lock the shard.
            try connection.internalExec("DELETE FROM _cairn_txn_record WHERE state != 'pending' AND decided_ms < ?",
                                        [.integer(command.timestampMillis - Self.outcomeRetentionMillis)])
            try connection.internalExec("INSERT OR IGNORE INTO _cairn_txn_record(txid, state, deadline_ms, decided_ms) VALUES (?, ?, 0, ?)",
                                        [txid, .text(commit ? TransactionStep.committed : TransactionStep.aborted), .integer(command.timestampMillis)])
            guard case .blob(let bytes)? = connection.internalRun("SELECT command FROM _cairn_txn WHERE txid = ?", [txid]).rows.first?.first,
                  let kept = SQLCommand(decoding: bytes) else { return [] }
            try connection.internalExec("DELETE FROM _cairn_txn WHERE txid = ?", [txid])
            try connection.internalExec("UPDATE _cairn_shard_state SET xepoch = xepoch + 1, prepared = prepared - 1 WHERE id = 0")
            preparedCount = max(0, (preparedCount ?? 1) - 1)
            guard commit else { return [] }
            // The same statements, time and seed, on the state the prepare saw (nothing wrote since).
            return try run(kept, entry: entry, rolledBack: rolledBack)
        }
    }
}

extension SQLiteConnection {
    /// One of CairnDB's own statements with parameters, past the authorizer; its error is thrown.
    func internalExec(_ sql: String, _ params: [SQLValue] = []) throws {
        let r = internalRun(sql, params)
        if let e = r.error { throw SQLiteError(message: "\(sql): \(e)") }
    }

    /// One of CairnDB's own statements with parameters, past the authorizer.
    func internalRun(_ sql: String, _ params: [SQLValue] = []) -> StatementResult {
        // Restored, not cleared: these nest (a statement of CairnDB's own may load the schema, which runs more).
        let wasInternal = context.internalAccess
        context.internalAccess = true
        defer { context.internalAccess = wasInternal }
        return keepingLastInsertRowID { run(SQLStatement(sql, params)) }
    }
}
