import CairnRaft
import Foundation
import Testing
@testable import CairnSQLite

/// Every sharded read asks its shard's split version and transaction state (`publishedQueries`) at its
/// read point. The read connections answer them from what the apply connection published instead of
/// running them: the answers must be SQLite's own, and no read may take a published one across a
/// commit that changes it.
@Suite struct PublishedAnswersTests {
    /// The same statement, but not the text the read connections answer themselves.
    static let askSQLite = SQLStatement(SQLStateMachine.splitVersionQuery.sql + " ")
    static let askSQLiteState = SQLStatement(SQLStateMachine.shardStateQuery.sql + " ")

    static func same(_ a: StatementResult, _ b: StatementResult) -> Bool {
        a.error == b.error && a.columns == b.columns && a.types == b.types && a.rows == b.rows
    }

    private func entry(_ sql: [String], guard spec: ShardGuard? = nil) -> SQLCommand {
        var c = SQLCommand(statements: sql.map { SQLStatement($0) }, atomic: spec != nil, timestampMillis: 1_790_000_000_000, randomSeed: 1)
        c.shardGuard = spec
        return c
    }

    private func split(version: UInt32) -> SQLCommand {
        var c = SQLCommand(statements: [], timestampMillis: 1_790_000_000_000, randomSeed: 1)
        c.split = ShardSplit(child: 7, lo: 0, mid: SlotHash.slotCount / 2, hi: SlotHash.slotCount, mapVersion: version,
                             tables: [.init(name: "t", keyColumns: ["k"])], conf: ConfState(voters: [1, 2, 3]))
        return SQLCommand(decoding: c.encoded())!
    }

    @Test("the published split version answers exactly as SQLite does: a shard that never split, the parent and the child of a split, each reopened")
    func publishedAnswerIsSQLites() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        let spec = ShardGuard(table: "t", keyColumns: ["k"], lo: 0, hi: SlotHash.slotCount)
        #expect(try sm.apply(index: 1, command: entry(["CREATE TABLE t (k INTEGER NOT NULL PRIMARY KEY, v TEXT)"], guard: spec))[0].error == nil)
        #expect(try sm.apply(index: 2, command: entry(["INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c'), (40000, 'd')"]))[0].error == nil)
        // Never split: SQLite finds no split state, and says so.
        #expect(sm.reads.knowsAnswers)
        #expect(sm.query(Self.askSQLite).error != nil)
        #expect(Self.same(sm.query(SQLStateMachine.splitVersionQuery), sm.query(Self.askSQLite)))

        var beforeCommit: [StatementResult] = []
        var childFile: String?
        sm.splitHandler = { _, file in
            // The child's file is made before the shard's half commits: reads still see the unsplit shard.
            beforeCommit = [sm.query(SQLStateMachine.splitVersionQuery), sm.query(Self.askSQLite)]
            childFile = tmp.path() + ".child"
            try FileManager.default.moveItem(atPath: file, toPath: childFile!)
        }
        #expect(try sm.apply(index: 3, command: split(version: 4))[0].error == nil)
        #expect(beforeCommit.count == 2 && Self.same(beforeCommit[0], beforeCommit[1]))
        #expect(sm.reads.knowsAnswers)
        #expect(SQLStateMachine.splitVersion(sm.query(Self.askSQLite)) == 4)
        #expect(Self.same(sm.query(SQLStateMachine.splitVersionQuery), sm.query(Self.askSQLite)))
        // Several statements at one read point, the version among them, as a sharded read asks.
        let asked = sm.reads.query([SQLStatement("SELECT count(*) FROM t"), SQLStateMachine.splitVersionQuery, Self.askSQLite], timeoutNanos: 0)
        #expect(Self.same(asked[1], asked[2]))

        let child = try SQLStateMachine(path: tmp.path() + ".group")
        try child.install(snapshotFile: try #require(childFile))
        #expect(child.reads.knowsAnswers)
        #expect(SQLStateMachine.splitVersion(child.query(Self.askSQLite)) == 4)
        #expect(Self.same(child.query(SQLStateMachine.splitVersionQuery), child.query(Self.askSQLite)))

        for path in [tmp.path(), tmp.path() + ".group"] {
            let reopened = try SQLStateMachine(path: path)
            #expect(Self.same(reopened.query(SQLStateMachine.splitVersionQuery), reopened.query(Self.askSQLite)))
            #expect(SQLStateMachine.splitVersion(reopened.query(SQLStateMachine.splitVersionQuery)) == 4)
        }
    }

    @Test("the published transaction state answers as SQLite does through a transaction across shards: before any (no state), prepared (held), finished; and after a rollback forgot it")
    func transactionStateIsSQLites() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        var index: LogIndex = 0
        func apply(_ sql: [String], _ step: TransactionStep? = nil) throws -> [StatementResult] {
            var c = SQLCommand(statements: sql.map { SQLStatement($0) }, timestampMillis: 2000, randomSeed: 7)
            c.transaction = step
            index += 1
            return try sm.apply(index: index, command: SQLCommand(decoding: c.encoded())!)
        }
        func agrees() -> Bool {
            // Alone, and at one read point with a query and the split version, as a shard read asks.
            let together = sm.reads.query([SQLStatement("SELECT count(*) FROM acct"), SQLStateMachine.shardStateQuery, SQLStateMachine.splitVersionQuery,
                                           Self.askSQLiteState, Self.askSQLite], timeoutNanos: 0)
            return Self.same(sm.query(SQLStateMachine.shardStateQuery), sm.query(Self.askSQLiteState))
                && Self.same(together[1], together[3]) && Self.same(together[2], together[4]) && together[0].error == nil
        }
        _ = try apply(["CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)", "INSERT INTO acct VALUES (1, 50)"])
        #expect(sm.reads.knowsAnswers && agrees())
        #expect(sm.query(Self.askSQLiteState).error != nil)
        let prepare = TransactionStep.prepare(txid: 9, anchor: 100, participants: [100], deadlineMillis: 7000, recordsHere: true)
        #expect(try apply(["UPDATE acct SET bal = bal - 5 WHERE id = 1"], prepare)[0].error == nil)
        #expect(sm.reads.knowsAnswers && agrees())
        #expect(sm.query(SQLStateMachine.shardStateQuery).rows == [[.integer(1), .integer(1)]])
        #expect(try apply([], .decide(txid: 9, commit: true)).first?.error == nil)
        #expect(try apply([], .finish(txid: 9, commit: true)).allSatisfy { $0.error == nil })
        #expect(sm.reads.knowsAnswers && agrees())
        #expect(sm.query(SQLStateMachine.shardStateQuery).rows == [[.integer(2), .integer(0)]])
        // Forgotten (as a rollback would), learnt again by the next batch that changes nothing of it.
        sm.reads.beginStateChange()
        sm.reads.endStateChange(nil)
        #expect(!sm.reads.knowsAnswers && agrees())
        _ = try apply(["INSERT INTO acct VALUES (2, 1)"])
        #expect(sm.reads.knowsAnswers && agrees())
    }

    @Test("a read takes the published version only when no change began or ended around it; otherwise SQLite answers")
    func changesAroundAReadAreSeen() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        let reads = sm.reads
        func version(_ v: Int64) -> [String: StatementResult] {
            var r = StatementResult()
            r.rows = [[.integer(v)]]
            return [SQLStateMachine.splitVersionQuery.sql: r]
        }
        // A version the file does not hold shows which answer a read took.
        reads.endStateChange(version(99))
        #expect(SQLStateMachine.splitVersion(sm.query(SQLStateMachine.splitVersionQuery)) == 99)
        // The same text with a value for a parameter it lacks is a client's statement: SQLite's error.
        let given = sm.query(SQLStatement(SQLStateMachine.splitVersionQuery.sql, [.integer(1)]))
        #expect(given.error != nil && Self.same(given, sm.query(SQLStatement(Self.askSQLite.sql, [.integer(1)]))))
        reads.beginStateChange()
        #expect(!reads.knowsAnswers)
        #expect(Self.same(sm.query(SQLStateMachine.splitVersionQuery), sm.query(Self.askSQLite)))
        // Learning is for quiet times only: during a change it is ignored.
        reads.learnAnswers(version(98))
        #expect(Self.same(sm.query(SQLStateMachine.splitVersionQuery), sm.query(Self.askSQLite)))
        reads.endStateChange(nil)
        #expect(Self.same(sm.query(SQLStateMachine.splitVersionQuery), sm.query(Self.askSQLite)))
        reads.learnAnswers(version(97))
        #expect(SQLStateMachine.splitVersion(sm.query(SQLStateMachine.splitVersionQuery)) == 97)
    }
}
