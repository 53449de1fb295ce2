import CairnSQLite

/// What `ReadPlanner.prepare` learns from a SELECT's text and the sharding schema alone. Valid with
/// the schema it was prepared against: a router keeps it with that schema's copy, which a change to a
/// sharded table replaces.
public struct PreparedRead: Sendable {
    enum Outcome: Sendable {
        /// Reads no sharded or reference table: the database's home group answers.
        case home
        /// Reads reference tables alone: any shard answers.
        case anyShard
        case query(Text)
    }

    /// The text of a read over sharded tables, ready for its parameters' values.
    /// A class: a router hands the prepared read out of its cache for every request, and a struct's
    /// copy retained each of its arrays and strings.
    final class Text: Sendable {
        let analysis: StatementAnalysis
        let slots: ParameterSlots
        let shape: SelectShape?
        let oneSelect: Bool
        let references: [ShardedTable]
        let tables: [ShardedTable]
        /// With one sharded table: how the statement names it and what pins its key.
        let one: OneTable?

        init(analysis: StatementAnalysis, slots: ParameterSlots, shape: SelectShape?, oneSelect: Bool, references: [ShardedTable],
             tables: [ShardedTable], one: OneTable?) {
            self.analysis = analysis
            self.slots = slots
            self.shape = shape
            self.oneSelect = oneSelect
            self.references = references
            self.tables = tables
            self.one = one
        }
    }

    struct OneTable: Sendable {
        var table: ShardedTable
        /// The name FROM gives the table when it is FROM's only table.
        var qualifier: String?
        /// The name it goes by in FROM, alone or joined with reference tables.
        var joined: String?
        /// WHERE's equalities on the whole key (`ReadPlanner.pinTerms`); nil when it has none.
        var pinTerms: [[ReadPlanner.Term]]?
    }

    let outcome: Outcome

    init(_ outcome: Outcome) { self.outcome = outcome }
}
