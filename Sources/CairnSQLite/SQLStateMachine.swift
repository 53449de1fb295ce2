import CairnRaft

/// The replicated state of one Raft group: a SQLite database to which committed entries are applied.
/// The index of the last applied entry is stored in the same transaction as the entry's effects, so a
/// restart never applies an entry twice or skips one. One owner at a time (the group's apply loop).
public final class SQLStateMachine {
    public let path: String
    private let connection: SQLiteConnection
    public private(set) var appliedIndex: LogIndex = 0

    public init(path: String) throws {
        self.path = path
        connection = try SQLiteConnection(path: path)
        try connection.exec("CREATE TABLE IF NOT EXISTS _cairn_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        try connection.exec("INSERT OR IGNORE INTO _cairn_meta(key, value) VALUES ('applied_index', 0)")
        connection.context.internalAccess = true
        let r = connection.run(SQLStatement("SELECT value FROM _cairn_meta WHERE key = 'applied_index'"), readOnly: true)
        connection.context.internalAccess = false
        guard r.error == nil, case .integer(let applied)? = r.rows.first?.first else {
            throw SQLiteError(message: "cannot read the applied index of \(path): \(r.error ?? "missing")")
        }
        appliedIndex = LogIndex(applied)
    }

    /// Applies the committed entry at `index` carrying `command`, in one transaction with the applied
    /// index. Non-atomic batches run each statement in a savepoint, so a failed statement leaves no
    /// trace while the others take effect; atomic batches stop and roll back at the first failure.
    public func apply(index: LogIndex, command: SQLCommand) throws -> [StatementResult] {
        precondition(index == appliedIndex + 1, "applying entry \(index) after \(appliedIndex)")
        connection.clock.fixedMillis = command.timestampMillis == 0 ? 1 : command.timestampMillis
        connection.context.random = SplitMix64(seed: command.randomSeed)
        defer {
            connection.clock.fixedMillis = 0
            connection.context.random = nil
        }
        try connection.exec("BEGIN IMMEDIATE")
        var results: [StatementResult] = []
        for statement in command.statements {
            if !command.atomic { try connection.exec("SAVEPOINT cairn_statement") }
            let r = connection.run(statement, readOnly: false)
            results.append(r)
            if r.error != nil {
                if command.atomic {
                    try connection.exec("ROLLBACK")
                    try connection.exec("BEGIN IMMEDIATE")
                    break
                }
                try connection.exec("ROLLBACK TO cairn_statement")
            }
            if !command.atomic { try connection.exec("RELEASE cairn_statement") }
        }
        try recordApplied(index)
        try connection.exec("COMMIT")
        appliedIndex = index
        return results
    }

    /// Applies an entry that changes no data (a leader's no-op, a membership change).
    public func applyEmpty(index: LogIndex) throws {
        precondition(index == appliedIndex + 1, "applying entry \(index) after \(appliedIndex)")
        try connection.exec("BEGIN IMMEDIATE")
        try recordApplied(index)
        try connection.exec("COMMIT")
        appliedIndex = index
    }

    private func recordApplied(_ index: LogIndex) throws {
        try connection.exec("UPDATE _cairn_meta SET value = \(index) WHERE key = 'applied_index'")
    }

    /// Runs a read-only statement against the applied state; a statement that would write is refused.
    public func query(_ statement: SQLStatement) -> StatementResult {
        connection.run(statement, readOnly: true)
    }
}
