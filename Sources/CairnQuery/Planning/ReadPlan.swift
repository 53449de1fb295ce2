import CairnSQLite

/// Where a read goes and how its answer is put together. Built by `ReadPlanner` (pure); run by
/// `ScatterGather` (and, in a cluster, by the router that owns the shards' groups).
public enum ReadPlan: Sendable {
    /// No sharded table: the database's home group answers, as for any unsharded database.
    case home
    /// Every sharded table is pinned to one shard: it runs the statement unchanged.
    case single(shard: Int)
    /// Several shards each run `worker`; their rows are combined into the one answer.
    case scatter(Scatter)

    public struct Scatter: Sendable {
        /// The shards that may hold matching rows (all, or those an IN list on the key names).
        public var shards: [Int]
        /// What each shard runs.
        public var worker: SQLStatement
        /// Run on the first of `shards` only, beside `worker`: the reference tables a gathered join
        /// needs (every shard holds the same copy, so one sends it).
        public var referenceWorker: SQLStatement? = nil
        public var combine: Combine
        /// The answer's columns and declared types, as one SQLite would report them.
        public var columns: [String]
        public var types: [String]
    }

    public enum Combine: Sendable {
        /// Two-stage: partial results go into a table `partial` (columns `c0`, `c1`, ... typed as the
        /// worker's), and this query over it gives the answer (Citus's two-stage plan).
        case partial(SQLStatement)
        /// The rows of the tables the statement reads (the sharded tables' matching rows from every
        /// shard, the reference tables' from one) are gathered into copies of the tables, and the
        /// client's statement runs over them unchanged: exact for any shape, at the price of moving the
        /// rows. Each gathered row starts with its table's position in `tables`, then its stored columns.
        case rows(tables: [ShardedTable], statement: SQLStatement)
    }

    /// A short description for `route` and `.explain`.
    public var summary: String {
        switch self {
        case .home: return "home group"
        case .single(let shard): return "shard \(shard)"
        case .scatter(let s):
            switch s.combine {
            case .partial: return "\(s.shards.count) shard(s), combined from partial results"
            case .rows(let tables, _):
                return "\(s.shards.count) shard(s), \(tables.map(\.name).joined(separator: ", "))'s \(tables.count == 1 ? "matching " : "")rows gathered and queried"
            }
        }
    }
}

/// Why a statement cannot be planned: the client's error (a 400), naming the reason.
public struct PlanRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
