import CairnSQLite

/// What `WritePlanner.prepare` learns from a write's text and the sharding schema alone: every refusal
/// the text earns, and where its shard keys are. Valid with the schema it was prepared against: a
/// router keeps it with that schema's copy, which a change to a sharded table replaces. What is left
/// for each request is binding its parameters and hashing its keys.
public struct PreparedWrite: Sendable {
    enum Outcome: Sendable {
        /// Names no sharded or reference table: the database's home group.
        case home
        case dropTable(String)
        /// The statement unchanged on every shard of the map it is planned with (`isCopy`: each shard
        /// keeps its own copy of a reference table, and one shard's result is the answer).
        case everyShard(isCopy: Bool)
        case insert(Insert)
        case change(Change)
    }

    /// `INSERT ... VALUES (...), (...) [upsert]` into one sharded table.
    struct Insert: Sendable {
        var table: ShardedTable
        var slots: ParameterSlots
        /// The renamed tokens through VALUES, each row's tuple (parentheses included), and what follows
        /// the rows (an upsert clause): what a split into one INSERT per shard is built from.
        var head: [Token]
        var rows: [[Token]]
        var tail: [Token]
        /// Each row's shard key, column by column, as literals and parameters; or why the row cannot be
        /// placed by its text (refused when planned, in row order, as planning afresh refuses it).
        var keys: [Result<[ReadPlanner.Term], PlanRefusal>]
    }

    /// `UPDATE` or `DELETE` of one sharded table.
    struct Change: Sendable {
        var table: ShardedTable
        var slots: ParameterSlots
        /// The name the statement gives the table (its alias, if any).
        var qualifier: String
        /// The renamed tokens after WHERE; nil without WHERE (every shard).
        var whereClause: [Token]?
        /// WHERE's equalities on the whole key (`ReadPlanner.pinTerms`); nil when it has none.
        var pinTerms: [[ReadPlanner.Term]]?
    }

    let outcome: Outcome

    init(_ outcome: Outcome) { self.outcome = outcome }
}
