import CairnRaft
import Foundation

/// A split, as an entry in the splitting shard's own log (CockroachDB's split trigger is the model):
/// every replica applies it at the same index to the same state, so every replica makes the same two
/// halves. The shard keeps the slots `lo ..< mid` of its arc; a new group, `child`, gets `mid ..< hi`,
/// founded on the same replicas from a copy of the shard as of the entry before the split.
///
/// Only hash-sharded tables divide: a range-sharded table's rows stay where their ranges live (the
/// child holds none), and a reference table is copied whole, as on every shard.
public struct ShardSplit: Sendable, Equatable {
    /// A hash-sharded table the shard holds, with its shard key.
    public struct Table: Sendable, Equatable {
        public var name: String
        public var keyColumns: [String]
        public init(name: String, keyColumns: [String]) {
            self.name = name
            self.keyColumns = keyColumns
        }
    }

    /// A range of a range-sharded table that goes to the child with the split (seed 004's `/add`: a
    /// new Stud_id range gets a Raft group of its own): the table's split points once it moved, the
    /// ranges among them the child holds and those the splitting shard keeps.
    public struct RangeMove: Sendable, Equatable {
        public var table: String
        public var keyColumn: String
        public var points: [SQLValue]
        public var childRanges: [Int]
        public var parentRanges: [Int]
        public init(table: String, keyColumn: String, points: [SQLValue], childRanges: [Int], parentRanges: [Int]) {
            self.table = table
            self.keyColumn = keyColumn
            self.points = points
            self.childRanges = childRanges
            self.parentRanges = parentRanges
        }
    }

    public var child: GroupID
    public var lo: Int
    public var mid: Int
    public var hi: Int
    /// The database's shard map version once the split is in the map; both halves refuse commands
    /// planned with an older one (`SQLCommand.mapVersion`).
    public var mapVersion: UInt32
    /// The hash-sharded tables as the catalog lists them: the split refuses to run unless the shard
    /// holds exactly these (a table created since the split was planned would be left undivided).
    public var tables: [Table]
    /// The shard's membership where it was proposed, filled in by the runtime of the leader that
    /// proposes it: the child's founders when the shard has no membership change applied (its first
    /// voters are in the Raft log, not the database); otherwise it must equal the one applied.
    public var conf: ConfState?
    /// Set when the split moves a range too.
    public var range: RangeMove?

    public init(child: GroupID, lo: Int, mid: Int, hi: Int, mapVersion: UInt32, tables: [Table], conf: ConfState? = nil, range: RangeMove? = nil) {
        self.child = child
        self.lo = lo
        self.mid = mid
        self.hi = hi
        self.mapVersion = mapVersion
        self.tables = tables
        self.conf = conf
        self.range = range
    }

    /// The index and term of the child's first state: a snapshot every founder holds alike, past
    /// index 0, so that a replica created empty (index 0) is sent it rather than entries.
    public static let childSnapshotIndex: LogIndex = 1
    public static let childSnapshotTerm: Term = 1

    /// Where a replica refuses a command planned with a map older than its own.
    /// A split's refusal when the shard already split at this map version, elsewhere: the reserved
    /// child exists (holding the other split's half), so its reservation must stay.
    public static let splitDifferentlyRefusal = "cannot split the shard: the shard split differently since"
    /// Whether a split's refusal shows that no copy of its child was made anywhere (every replica
    /// refuses alike), so the child's reservation may go. Not so when the shard split at this map
    /// version already, at another point (a late entry from a stale driver, or one of an earlier
    /// version): the reserved child exists then.
    public static func refusalLeavesNoChild(_ error: String) -> Bool {
        error.hasPrefix("cannot split the shard") && !error.hasPrefix(splitDifferentlyRefusal)
    }

    public static let staleMapMessage = "\(ShardGuard.wrongShard): this shard split since the router's shard map was read (map version "

    /// The shard's version in a stale-map refusal, for the router to wait for.
    public static func version(inRefusal message: String) -> UInt32? {
        guard let range = message.range(of: staleMapMessage) else { return nil }
        return UInt32(message[range.upperBound...].prefix { $0.isNumber })
    }

    func append(to out: inout [UInt8]) {
        ByteCoding.append(child, to: &out)
        for v in [lo, mid, hi] { ByteCoding.append(UInt32(v), to: &out) }
        ByteCoding.append(mapVersion, to: &out)
        ByteCoding.append(UInt32(tables.count), to: &out)
        for t in tables {
            SQLCommand.append(string: t.name, to: &out)
            ByteCoding.append(UInt32(t.keyColumns.count), to: &out)
            for k in t.keyColumns { SQLCommand.append(string: k, to: &out) }
        }
        let confBytes = conf?.encoded() ?? []
        ByteCoding.append(UInt32(confBytes.count), to: &out)
        out.append(contentsOf: confBytes)
        if let move = range {
            SQLCommand.append(string: move.table, to: &out)
            SQLCommand.append(string: move.keyColumn, to: &out)
            SQLCommand.append(ranges: move.childRanges, points: move.points, to: &out)
            ByteCoding.append(UInt32(move.parentRanges.count), to: &out)
            for r in move.parentRanges { ByteCoding.append(UInt32(r), to: &out) }
        }
    }

    static func read(_ b: [UInt8], _ c: inout Int, withRange: Bool) -> ShardSplit? {
        guard let child = ByteCoding.readUInt64(b, &c), let lo = ByteCoding.readUInt32(b, &c), let mid = ByteCoding.readUInt32(b, &c),
              let hi = ByteCoding.readUInt32(b, &c), lo < mid, mid < hi, hi <= UInt32(SlotHash.slotCount),
              let version = ByteCoding.readUInt32(b, &c), let n = ByteCoding.readUInt32(b, &c), n <= 10_000 else { return nil }
        var tables: [Table] = []
        for _ in 0..<n {
            guard let name = SQLCommand.readString(b, &c), let k = ByteCoding.readUInt32(b, &c), k >= 1, k <= 32 else { return nil }
            var keys: [String] = []
            for _ in 0..<k {
                guard let key = SQLCommand.readString(b, &c) else { return nil }
                keys.append(key)
            }
            tables.append(Table(name: name, keyColumns: keys))
        }
        guard let n = ByteCoding.readUInt32(b, &c), c + Int(n) <= b.count else { return nil }
        var conf: ConfState?
        if n > 0 {
            guard let decoded = ConfState(decoding: Array(b[c..<(c + Int(n))])) else { return nil }
            conf = decoded
            c += Int(n)
        }
        var range: RangeMove?
        if withRange {
            guard let table = SQLCommand.readString(b, &c), let key = SQLCommand.readString(b, &c),
                  let (childRanges, points) = SQLCommand.readRanges(b, &c), !childRanges.isEmpty,
                  let n = ByteCoding.readUInt32(b, &c), n <= UInt32(points.count + 1) else { return nil }
            var parentRanges: [Int] = []
            for _ in 0..<n {
                guard let r = ByteCoding.readUInt32(b, &c), Int(r) <= points.count else { return nil }
                parentRanges.append(Int(r))
            }
            guard zip(parentRanges, parentRanges.dropFirst()).allSatisfy({ $0 < $1 }), Set(parentRanges).isDisjoint(with: childRanges) else { return nil }
            range = RangeMove(table: table, keyColumn: key, points: points, childRanges: childRanges, parentRanges: parentRanges)
        }
        return ShardSplit(child: child, lo: Int(lo), mid: Int(mid), hi: Int(hi), mapVersion: version, tables: tables, conf: conf, range: range)
    }
}

/// How a shard applies a split, and the map version it checks commands against. Its state lives in
/// `_cairn_split_state` (one row: the map version, the arc, and the entry of its last split), which
/// a shard that never split does not have.
extension SQLStateMachine {
    static let splitStateSchema = "CREATE TABLE IF NOT EXISTS _cairn_split_state(id INTEGER PRIMARY KEY CHECK (id = 0), version INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, split_index INTEGER NOT NULL)"

    /// What a read appends to learn the shard's map version at its read point (an error: never split).
    public static let splitVersionQuery = SQLStatement("SELECT version FROM _cairn_split_state")

    /// The version a read's `splitVersionQuery` found (0: the shard never split).
    public static func splitVersion(_ r: StatementResult) -> UInt32 {
        guard r.error == nil, case .integer(let v)? = r.rows.first?.first, v >= 0, v <= Int64(UInt32.max) else { return 0 }
        return UInt32(v)
    }

    struct SplitState {
        var version: UInt32
        var lo: Int
        var hi: Int
        var splitIndex: LogIndex
    }

    /// The shard's split state as the apply connection sees it (nil: it never split).
    func splitState() throws -> SplitState? {
        let exists = connection.internalRun("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_cairn_split_state'")
        if let e = exists.error { throw SQLiteError(message: "reading the shard's split state: \(e)") }
        guard !exists.rows.isEmpty else { return nil }
        let r = connection.internalRun("SELECT version, lo, hi, split_index FROM _cairn_split_state WHERE id = 0")
        guard r.error == nil, let row = r.rows.first, row.count == 4, case .integer(let v) = row[0], case .integer(let lo) = row[1],
              case .integer(let hi) = row[2], case .integer(let at) = row[3] else { return nil }
        return SplitState(version: UInt32(truncatingIfNeeded: v), lo: Int(lo), hi: Int(hi), splitIndex: LogIndex(bitPattern: at))
    }

    /// The refusal of every statement of a command planned with an older map than this shard's.
    func staleMapRefusal(_ command: SQLCommand) throws -> [StatementResult]? {
        guard let planned = command.mapVersion else { return nil }
        if splitVersionCache == nil { splitVersionCache = try splitState()?.version ?? 0 }
        guard splitVersionCache! > planned else { return nil }
        let message = ShardSplit.staleMapMessage + "\(splitVersionCache!), the router's \(planned)); refresh the map and retry"
        return command.statements.map { _ in StatementResult(error: message) }
    }

    /// Applies a split entry alone (the entries before it are committed): makes the child's first
    /// state as a snapshot file (handed to `splitHandler` before this shard commits, so a crash at any
    /// point leaves either no split, or the child's file and the shard's half), then keeps this half.
    /// Refusals are results, the same on every replica; only this machine's failures throw.
    func applySplit(_ split: ShardSplit, index: LogIndex) throws -> [StatementResult] {
        func refuse(_ why: String) -> [StatementResult] { [StatementResult(error: "cannot split the shard: " + why)] }
        func done(_ at: LogIndex) -> [StatementResult] {
            var r = StatementResult()
            r.columns = ["split_index"]
            r.types = [""]
            r.rows = [[.integer(Int64(bitPattern: at))]]
            return [r]
        }
        if droppedAt != nil { return try commitAlone(index: index) { refuse("its database was dropped") } }
        let state = try splitState()
        if let state, state.version >= split.mapVersion {
            // The same split proposed again (its proposer did not hear the answer): it happened.
            return try commitAlone(index: index) { state.lo == split.lo && state.hi == split.mid ? done(state.splitIndex) : [StatementResult(error: ShardSplit.splitDifferentlyRefusal)] }
        }
        if let state, state.lo != split.lo || state.hi != split.hi {
            return try commitAlone(index: index) { refuse("the shard owns slots \(state.lo)..<\(state.hi), not \(split.lo)..<\(split.hi)") }
        }
        if try isLocked() { return try commitAlone(index: index) { refuse("a transaction across shards is prepared here") } }
        if let applied = confState, let proposed = split.conf, applied != proposed {
            return try commitAlone(index: index) { refuse("its membership changed since the split was proposed") }
        }
        guard let childConf = confState ?? split.conf, !childConf.voters.isEmpty else {
            return try commitAlone(index: index) { refuse("its membership is not known here") }
        }
        let guarded = try guardedTables()
        let planned = Set(split.tables.map { $0.name.lowercased() })
        guard guarded.hashed == planned else {
            return try commitAlone(index: index) { refuse("its sharded tables changed since the split was planned") }
        }
        let moving = split.range.map { $0.table.lowercased() }
        if let moving, !guarded.ranged.contains(moving) {
            return try commitAlone(index: index) { refuse("it holds no range-sharded table \(split.range!.table)") }
        }
        // The child: a copy of this shard as of the entry before (committed), cut to the upper half.
        let work = path + ".splitting"
        for suffix in ["", "-journal", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: work + suffix) }
        try RawDatabase(path: path, readOnly: true).exec("VACUUM INTO '\(work.replacingOccurrences(of: "'", with: "''"))'")
        do {
            let child = try RawDatabase(path: work)
            ShardFunctions.install(on: child.handle!)
            var sql = "BEGIN IMMEDIATE;"
            for t in split.tables {
                sql += Self.keepOnly(t, lo: split.mid, hi: split.hi)
                guard let guards = ShardGuard(table: t.name, keyColumns: t.keyColumns, lo: split.mid, hi: split.hi).statements else {
                    throw SQLiteError(message: "no guard for \(t.name)")
                }
                sql += guards.joined(separator: ";") + ";"
            }
            // Range tables' rows stay with this shard, but for a range that moves.
            for t in guarded.ranged.sorted() where t != moving { sql += "DELETE FROM \(Self.quoted(t));" }
            if let move = split.range {
                let keep = ShardGuard(table: move.table, keyColumns: [move.keyColumn], owned: .ranges(splitPoints: move.points, owned: move.childRanges))
                guard let delete = Self.keepOnly(move, move.childRanges), let guards = keep.statements else {
                    throw SQLiteError(message: "no guard for \(move.table)")
                }
                sql += delete + guards.joined(separator: ";") + ";"
            }
            // The outcomes this shard recorded as a transaction's anchor stay with it.
            if try child.tableExists("_cairn_txn_record") { sql += "DELETE FROM _cairn_txn_record;" }
            sql += Self.splitStateSchema + ";"
            sql += "INSERT OR REPLACE INTO _cairn_split_state VALUES (0, \(split.mapVersion), \(split.mid), \(split.hi), \(Int64(bitPattern: index)));"
            try child.exec(sql + "COMMIT")
            try Bookkeeping.embed(Bookkeeping.Embedded(index: ShardSplit.childSnapshotIndex, conf: childConf), in: child)
        }
        try Self.syncPath(work)
        guard let splitHandler else { throw SQLiteError(message: "a split entry reached a shard with no split handler") }
        try splitHandler(split, work)
        return try commitAlone(index: index) {
            for t in split.tables { try connection.exec(Self.keepOnly(t, lo: split.lo, hi: split.mid)) }
            for t in split.tables {
                if let failure = connection.installShardGuard(ShardGuard(table: t.name, keyColumns: t.keyColumns, lo: split.lo, hi: split.mid)) {
                    throw SQLiteError(message: failure)
                }
            }
            if let move = split.range {
                guard let delete = Self.keepOnly(move, move.parentRanges) else { throw SQLiteError(message: "no guard for \(move.table)") }
                try connection.exec(delete)
                let keep = ShardGuard(table: move.table, keyColumns: [move.keyColumn], owned: .ranges(splitPoints: move.points, owned: move.parentRanges))
                if let failure = connection.installShardGuard(keep) { throw SQLiteError(message: failure) }
            }
            try connection.exec(Self.splitStateSchema)
            try connection.internalExec("INSERT OR REPLACE INTO _cairn_split_state VALUES (0, ?, ?, ?, ?)",
                                        [.integer(Int64(split.mapVersion)), .integer(Int64(split.lo)), .integer(Int64(split.mid)), .integer(Int64(bitPattern: index))])
            splitVersionCache = split.mapVersion
            return done(index)
        }
    }

    /// The tables whose guard triggers check slots (hash-sharded) and ranges (range-sharded), lowercased.
    private func guardedTables() throws -> (hashed: Set<String>, ranged: Set<String>) {
        let r = connection.internalRun("SELECT lower(tbl_name), sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE '\\_cairn\\_guard\\_insert\\_%' ESCAPE '\\'")
        if let e = r.error { throw SQLiteError(message: "reading the shard's guards: \(e)") }
        var hashed: Set<String> = [], ranged: Set<String> = []
        for row in r.rows {
            guard row.count == 2, case .text(let table) = row[0], case .text(let sql) = row[1] else { continue }
            if sql.contains("cairn_slot(") { hashed.insert(table) } else if sql.contains("cairn_range(") { ranged.insert(table) }
        }
        return (hashed, ranged)
    }

    private static func keepOnly(_ t: ShardSplit.Table, lo: Int, hi: Int) -> String {
        "DELETE FROM \(quoted(t.name)) WHERE cairn_slot(\(t.keyColumns.map(quoted).joined(separator: ", "))) NOT BETWEEN \(lo) AND \(hi - 1);"
    }

    /// Deletes the moving table's rows outside `ranges` (nil: a split point has no literal).
    private static func keepOnly(_ move: ShardSplit.RangeMove, _ ranges: [Int]) -> String? {
        guard let range = ShardGuard.rangeSQL(quoted(move.keyColumn), move.points) else { return nil }
        return "DELETE FROM \(quoted(move.table)) WHERE \(range) NOT IN (\(ranges.map(String.init).joined(separator: ", ")));"
    }

    private static func quoted(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
}
