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
    /// A class, as `Change` is: a router hands the prepared write out of its cache for every request,
    /// and a struct's copy retained each of its arrays and strings (a microsecond a write).
    final class Insert: Sendable {
        let table: ShardedTable
        let slots: ParameterSlots
        /// The renamed tokens through VALUES, each row's tuple (parentheses included), and what follows
        /// the rows (an upsert clause): what a split into one INSERT per shard is built from.
        let head: [Token]
        let rows: [[Token]]
        let tail: [Token]
        /// Each row's shard key, column by column, as literals and parameters; or why the row cannot be
        /// placed by its text (refused when planned, in row order, as planning afresh refuses it).
        let keys: [Result<[ReadPlanner.Term], PlanRefusal>]

        init(table: ShardedTable, slots: ParameterSlots, head: [Token], rows: [[Token]], tail: [Token], keys: [Result<[ReadPlanner.Term], PlanRefusal>]) {
            self.table = table
            self.slots = slots
            self.head = head
            self.rows = rows
            self.tail = tail
            self.keys = keys
        }
    }

    /// `UPDATE` or `DELETE` of one sharded table.
    final class Change: Sendable {
        let table: ShardedTable
        let slots: ParameterSlots
        /// The name the statement gives the table (its alias, if any).
        let qualifier: String
        /// The renamed tokens after WHERE; nil without WHERE (every shard).
        let whereClause: [Token]?
        /// WHERE's equalities on the whole key (`ReadPlanner.pinTerms`); nil when it has none.
        let pinTerms: [[ReadPlanner.Term]]?

        init(table: ShardedTable, slots: ParameterSlots, qualifier: String, whereClause: [Token]?, pinTerms: [[ReadPlanner.Term]]?) {
            self.table = table
            self.slots = slots
            self.qualifier = qualifier
            self.whereClause = whereClause
            self.pinTerms = pinTerms
        }
    }

    let outcome: Outcome

    init(_ outcome: Outcome) { self.outcome = outcome }
}
