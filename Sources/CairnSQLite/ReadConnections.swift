import CairnRaft
import Foundation

/// The connections that serve one database's queries: read-only, never the connection that applies
/// entries, so nothing a query does can change how a replica applies writes, and a slow query runs
/// beside the applies instead of in front of them (WAL readers and the writer do not block each other).
/// Safe to use from any thread; each query checks a connection out for its duration.
public final class ReadConnections: @unchecked Sendable {
    public let path: String
    private let lock = NSLock()
    private var idle: [SQLiteConnection] = []
    /// Advanced whenever the file is replaced: connections of an older generation are closed on return.
    private var generation = 0
    private var closed = false
    private var published: (applied: LogIndex, dropped: LogIndex?) = (0, nil)
    /// CairnDB's own read-point statements (`SQLStateMachine.publishedQueries`), as the apply
    /// connection answered them on the committed file; empty while unknown. Every sharded read asks
    /// them: answered from here, each is one statement fewer per read (about 4% of a point read's
    /// throughput apiece).
    private var answers: [String: StatementResult] = [:]
    /// Moved on before and after every commit that may change those answers (a split, a step of a
    /// transaction across shards) and around a file replacement (odd in between): a read transaction
    /// that began and ended with the same even count saw the answers published then.
    private var answerChanges: UInt64 = 0
    /// Idle connections kept open; more may be open at once while queries run.
    static let maxIdle = 4

    init(path: String) {
        self.path = path
    }

    /// The last entry whose effects a query sees at least (published after its transaction committed),
    /// and the entry that dropped the database, if any.
    public var state: (applied: LogIndex, dropped: LogIndex?) {
        lock.lock()
        defer { lock.unlock() }
        return published
    }

    /// Also says whether the answers to `SQLStateMachine.publishedQueries` are known (one lock a batch).
    @discardableResult
    func publish(applied: LogIndex, dropped: LogIndex?) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        published = (applied, dropped)
        return !answers.isEmpty
    }

    /// Runs read-only statements at one read point (one read transaction when there are several).
    /// A statement running longer than `timeoutNanos` (0: no limit) is interrupted.
    public func query(_ statements: [SQLStatement], timeoutNanos: UInt64) -> [StatementResult] {
        // Only the statements' own texts without parameters (a client's with values gets SQLite's error).
        let asked = statements.indices.filter {
            statements[$0].positional.isEmpty && statements[$0].named.isEmpty && SQLStateMachine.publishedQueries.contains(statements[$0].sql)
        }
        // Marked before a connection is checked out: one of an older file is checked out only before a
        // replacement, which then moves the count before the second mark.
        let before = asked.isEmpty ? nil : mark()
        do {
            return try withConnection { c in
                // Prepared once per connection: a sharded read is several statements, every time.
                if statements.count > 1 { try c.execPrepared("BEGIN") }
                defer { if !c.isAutocommit { try? c.execPrepared("ROLLBACK") } }
                var results = statements.enumerated().map { n, s in asked.contains(n) ? StatementResult() : c.run(s, timeoutNanos: timeoutNanos) }
                if let before {
                    // The transaction's read point lies between the two marks: with no change between
                    // them, the file held the answers published; else SQLite is asked, at that point.
                    let after = mark()
                    let quiet = before.changes == after.changes && before.changes % 2 == 0
                    for n in asked {
                        if quiet, let known = before.answers[statements[n].sql] {
                            results[n] = known
                        } else {
                            results[n] = c.run(statements[n], timeoutNanos: timeoutNanos)
                        }
                    }
                }
                return results
            }
        } catch {
            return statements.map { _ in StatementResult(error: "cannot read the database: \(error)") }
        }
    }

    private func mark() -> (changes: UInt64, answers: [String: StatementResult]) {
        lock.lock()
        defer { lock.unlock() }
        return (answerChanges, answers)
    }

    /// Before a commit that may change the published answers, or a replacement of the file.
    func beginStateChange() {
        lock.lock()
        defer { lock.unlock() }
        if answerChanges % 2 == 0 { answerChanges += 1 }
        answers = [:]
    }

    /// After it (committed or not): the answers the file gives now, if known.
    func endStateChange(_ answers: [String: StatementResult]?) {
        lock.lock()
        defer { lock.unlock() }
        if answerChanges % 2 == 1 { answerChanges += 1 }
        self.answers = answers ?? [:]
    }

    /// Answers learnt while nothing changes them (after a rollback forgot them, say).
    func learnAnswers(_ answers: [String: StatementResult]) {
        lock.lock()
        defer { lock.unlock() }
        if answerChanges % 2 == 0 && self.answers.isEmpty { self.answers = answers }
    }

    var knowsAnswers: Bool {
        lock.lock()
        defer { lock.unlock() }
        return !answers.isEmpty
    }

    /// Whether every statement in `sql` only reads, judged by SQLite against the current schema.
    public func isReadOnly(_ sql: String) throws -> Bool {
        try withConnection { $0.isReadOnly(sql) }
    }

    /// A read transaction opened now, so that it sees exactly the entries applied so far, to be read
    /// later on another thread (its connection comes back to the pool when it is done).
    func pin() throws -> PinnedRead {
        let (connection, born) = try checkOut()
        do {
            let index = try connection.beginPinnedRead(near: state.applied)
            return PinnedRead(index: index, connection: connection) { [self] c in checkIn(c, born) }
        } catch {
            checkIn(connection, born)
            throw error
        }
    }

    /// Runs `body` with a connection checked out of the pool (queries, and CairnDB's own reads).
    func withConnection<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        let (connection, born) = try checkOut()
        defer { checkIn(connection, born) }
        return try body(connection)
    }

    private func checkOut() throws -> (SQLiteConnection, Int) {
        lock.lock()
        defer { lock.unlock() }
        guard !closed else { throw SQLiteError(message: "the database is closed") }
        if let c = idle.popLast() { return (c, generation) }
        // Opened under the lock, so never while `replacingFile` swaps the file.
        return (try SQLiteConnection(path: path, role: .read), generation)
    }

    private func checkIn(_ connection: SQLiteConnection, _ born: Int) {
        lock.lock()
        defer { lock.unlock() }
        if closed || born != generation || idle.count >= Self.maxIdle {
            connection.close()
        } else {
            idle.append(connection)
        }
    }

    /// Runs `body`, which replaces the database file, while no query can open a connection. Queries
    /// already running finish on the old file (they were admitted at an index it holds); their
    /// connections close when they come back.
    func replacingFile<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        generation += 1
        for c in idle { c.close() }
        idle = []
        return try body()
    }

    /// Closes every idle connection; queries are refused from now on.
    func close() {
        lock.lock()
        defer { lock.unlock() }
        closed = true
        generation += 1
        for c in idle { c.close() }
        idle = []
    }
}
