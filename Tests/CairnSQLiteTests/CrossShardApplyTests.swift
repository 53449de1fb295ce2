import CairnRaft
import Testing
@testable import CairnSQLite

@Suite struct CrossShardApplyTests {
    private final class Shard {
        let tmp = TempDB()
        var sm: SQLStateMachine
        var index: LogIndex = 0
        init() throws {
            sm = try SQLStateMachine(path: tmp.path())
            _ = try apply(SQLCommand(statements: [SQLStatement("CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL CHECK (bal >= 0))"),
                                                  SQLStatement("INSERT INTO acct VALUES (1, 50), (2, 50)")], timestampMillis: 1000, randomSeed: 1))
        }
        func apply(_ c: SQLCommand) throws -> [StatementResult] {
            index += 1
            // Through the wire format, as every replica gets it.
            return try sm.apply(index: index, command: SQLCommand(decoding: c.encoded())!)
        }
        func rows(_ sql: String) -> [[SQLValue]] { sm.query(SQLStatement(sql)).rows }
    }

    private func step(_ step: TransactionStep, _ sql: [String] = [], at ms: Int64 = 2000) -> SQLCommand {
        var c = SQLCommand(statements: sql.map { SQLStatement($0) }, timestampMillis: ms, randomSeed: 7)
        c.transaction = step
        return c
    }

    private func state(_ r: [StatementResult]) -> String? { if case .text(let s)? = r.first?.rows.first?.first { s } else { nil } }

    @Test("prepare locks and changes nothing; the anchor's decide is the commit point; finish applies the kept statements exactly once")
    func commitPath() throws {
        let a = try Shard(), b = try Shard()
        let prepareA = TransactionStep.prepare(txid: 9, anchor: 100, participants: [100, 200], deadlineMillis: 7000, recordsHere: true)
        let prepareB = TransactionStep.prepare(txid: 9, anchor: 100, participants: [100, 200], deadlineMillis: 7000, recordsHere: false)
        let votedA = try a.apply(step(prepareA, ["UPDATE acct SET bal = bal - 5 WHERE id = 1"]))
        let votedB = try b.apply(step(prepareB, ["UPDATE acct SET bal = bal + 5 WHERE id = 2", "INSERT INTO acct VALUES (3, abs(random()) % 10)"]))
        #expect(votedA.allSatisfy { $0.error == nil } && votedB.allSatisfy { $0.error == nil })
        #expect(votedA[0].rowsAffected == 1)
        // Nothing visible yet, and the shards are locked for writes and for other transactions.
        #expect(a.rows("SELECT bal FROM acct WHERE id = 1") == [[.integer(50)]])
        #expect(try a.apply(SQLCommand(statements: [SQLStatement("INSERT INTO acct VALUES (4, 1)")], timestampMillis: 2100, randomSeed: 1))[0].error == TransactionStep.lockedMessage)
        let other = TransactionStep.prepare(txid: 10, anchor: 200, participants: [200], deadlineMillis: 9000, recordsHere: true)
        #expect(try b.apply(step(other, ["DELETE FROM acct"]))[0].error == TransactionStep.lockedMessage)
        #expect(b.rows("SELECT prepared, xepoch FROM _cairn_shard_state") == [[.integer(1), .integer(1)]])
        // Decided once: a later abort, or a resolve past the deadline, cannot change it.
        #expect(state(try a.apply(step(.decide(txid: 9, commit: true)))) == TransactionStep.committed)
        #expect(state(try a.apply(step(.decide(txid: 9, commit: false)))) == TransactionStep.committed)
        #expect(state(try a.apply(step(.resolve(txid: 9), at: 99_000))) == TransactionStep.committed)
        #expect(try a.apply(step(.finish(txid: 9, commit: true)))[0].error == nil)
        let finishedB = try b.apply(step(.finish(txid: 9, commit: true)))
        #expect(finishedB.count == 2 && finishedB.allSatisfy { $0.error == nil })
        // A repeated finish does nothing; the same prepare arriving again is refused (it would lock the
        // shard, and a recovery could then apply the transaction twice).
        #expect(try b.apply(step(.finish(txid: 9, commit: true))).isEmpty)
        let again = try b.apply(step(prepareB, ["UPDATE acct SET bal = bal + 5 WHERE id = 2"]))
        #expect(again[0].error?.contains("already decided") == true)
        #expect(a.rows("SELECT bal FROM acct ORDER BY id") == [[.integer(45)], [.integer(50)]])
        let bRows = b.rows("SELECT id, bal FROM acct ORDER BY id")
        #expect(bRows.count == 3 && bRows[1] == [.integer(2), .integer(55)])
        #expect(try a.apply(SQLCommand(statements: [SQLStatement("INSERT INTO acct VALUES (4, 1)")], timestampMillis: 2200, randomSeed: 1))[0].error == nil)
        #expect(b.rows("SELECT prepared, xepoch FROM _cairn_shard_state") == [[.integer(0), .integer(2)]])
    }

    @Test("an index created and dropped inside a transaction across shards: prepared, finished, and the shard keeps serving")
    func schemaChangeInTransaction() throws {
        let a = try Shard()
        for (txid, sql) in [(UInt64(21), "CREATE UNIQUE INDEX acct_bal ON acct (bal) WHERE id > 2"), (22, "INSERT INTO acct VALUES (4, 7)"), (23, "DROP INDEX acct_bal")] {
            let prepare = TransactionStep.prepare(txid: txid, anchor: 100, participants: [100], deadlineMillis: 7000, recordsHere: true)
            if txid == 22 {
                #expect(try a.apply(SQLCommand(statements: [SQLStatement("INSERT INTO acct VALUES (3, 7)")], timestampMillis: 2500, randomSeed: 1))[0].error == nil)
            }
            let voted = try a.apply(step(prepare, [sql]))
            if txid == 22 {
                // A refused row: a no vote, and the transaction is aborted.
                #expect(voted[0].error?.contains("UNIQUE") == true, "\(voted)")
                #expect(state(try a.apply(step(.decide(txid: txid, commit: false)))) == TransactionStep.aborted)
                _ = try a.apply(step(.finish(txid: txid, commit: false)))
                continue
            }
            #expect(voted.allSatisfy { $0.error == nil }, "\(voted)")
            #expect(state(try a.apply(step(.decide(txid: txid, commit: true)))) == TransactionStep.committed)
            let finished = try a.apply(step(.finish(txid: txid, commit: true)))
            #expect(finished.allSatisfy { $0.error == nil }, "\(finished)")
            #expect(a.rows("SELECT prepared FROM _cairn_shard_state") == [[.integer(0)]])
        }
        #expect(try a.apply(SQLCommand(statements: [SQLStatement("INSERT INTO acct VALUES (5, 1)")], timestampMillis: 3000, randomSeed: 1))[0].error == nil)
    }

    @Test("the same, with the steps of each transaction applied in one batch, as a busy leader applies them")
    func schemaChangeInBatches() throws {
        let a = try Shard()
        var results: [[StatementResult]] = []
        func batch(_ commands: [SQLCommand]) throws {
            let changes = commands.enumerated().map { (a.index + LogIndex($0.offset) + 1, SQLStateMachine.Change.command(SQLCommand(decoding: $0.element.encoded())!)) }
            a.index += LogIndex(commands.count)
            results = try a.sm.apply(batch: changes)
        }
        func transaction(_ txid: UInt64, _ sql: String, commit: Bool) throws {
            try batch([step(.prepare(txid: txid, anchor: 100, participants: [100], deadlineMillis: 7000, recordsHere: true), [sql]),
                       step(.decide(txid: txid, commit: commit)), step(.finish(txid: txid, commit: commit))])
        }
        try transaction(31, "CREATE UNIQUE INDEX acct_bal ON acct (bal) WHERE id > 2", commit: true)
        #expect(results[0].allSatisfy { $0.error == nil } && results[2].allSatisfy { $0.error == nil }, "\(results)")
        #expect(try a.apply(SQLCommand(statements: [SQLStatement("INSERT INTO acct VALUES (3, 7)")], timestampMillis: 2500, randomSeed: 1))[0].error == nil)
        try transaction(32, "INSERT INTO acct VALUES (4, 7)", commit: false)
        #expect(results[0].first?.error?.contains("UNIQUE") == true, "\(results)")
        // Prepared, then aborted (another shard was locked, say), then tried again under a new id.
        try transaction(33, "DROP INDEX acct_bal", commit: false)
        #expect(results[0].allSatisfy { $0.error == nil }, "\(results)")
        try transaction(34, "DROP INDEX acct_bal", commit: true)
        #expect(results[0].allSatisfy { $0.error == nil } && results[2].allSatisfy { $0.error == nil }, "\(results)")
        #expect(try a.apply(SQLCommand(statements: [SQLStatement("INSERT INTO acct VALUES (4, 7)")], timestampMillis: 3000, randomSeed: 1))[0].error == nil)
        // CairnDB's own rows (a transaction's id in _cairn_txn) never show as the client's last insert.
        try transaction(900_001, "UPDATE acct SET bal = bal WHERE id = 1", commit: true)
        try transaction(900_002, "UPDATE acct SET bal = bal WHERE id = 1", commit: true)
        #expect(results[0][0].lastInsertID == 4, "\(results)")
    }

    @Test("a failing statement votes no and takes no lock; an undecided transaction is aborted by resolve only past its deadline; an anchor that never prepared records the abort, so a late prepare fails")
    func abortPaths() throws {
        let a = try Shard(), b = try Shard()
        let no = try b.apply(step(.prepare(txid: 1, anchor: 100, participants: [100, 200], deadlineMillis: 5000, recordsHere: false),
                                  ["UPDATE acct SET bal = bal - 500 WHERE id = 1"]))
        #expect(no[0].error?.contains("CHECK") == true)
        #expect(b.rows("SELECT prepared FROM _cairn_shard_state") == [[.integer(0)]])

        #expect(try a.apply(step(.prepare(txid: 2, anchor: 100, participants: [100], deadlineMillis: 5000, recordsHere: true),
                                 ["DELETE FROM acct"]))[0].error == nil)
        #expect(state(try a.apply(step(.resolve(txid: 2), at: 4000))) == TransactionStep.pending)
        #expect(state(try a.apply(step(.resolve(txid: 2), at: 5001))) == TransactionStep.aborted)
        #expect(state(try a.apply(step(.decide(txid: 2, commit: true)))) == TransactionStep.aborted)
        #expect(try a.apply(step(.finish(txid: 2, commit: false))).isEmpty)
        #expect(a.rows("SELECT count(*) FROM acct") == [[.integer(2)]])

        #expect(state(try a.apply(step(.resolve(txid: 3)))) == TransactionStep.aborted)
        let late = try a.apply(step(.prepare(txid: 3, anchor: 100, participants: [100, 200], deadlineMillis: 9000, recordsHere: true), ["DELETE FROM acct"]))
        #expect(late[0].error?.contains("already decided") == true)
        #expect(a.rows("SELECT prepared FROM _cairn_shard_state") == [[.integer(0)]])
    }

    @Test("a restarted replica keeps its lock and finishes as the others do")
    func lockSurvivesRestart() throws {
        let a = try Shard()
        _ = try a.apply(step(.prepare(txid: 5, anchor: 100, participants: [100], deadlineMillis: 5000, recordsHere: true), ["UPDATE acct SET bal = 0"]))
        a.sm.close()
        a.sm = try SQLStateMachine(path: a.tmp.path())
        #expect(try a.apply(SQLCommand(statements: [SQLStatement("DELETE FROM acct")], timestampMillis: 2100, randomSeed: 1))[0].error == TransactionStep.lockedMessage)
        _ = try a.apply(step(.decide(txid: 5, commit: true)))
        _ = try a.apply(step(.finish(txid: 5, commit: true)))
        #expect(a.rows("SELECT sum(bal) FROM acct") == [[.integer(0)]])
    }
}
