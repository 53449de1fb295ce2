import CairnAuth
import Crypto
import CairnNode
import CairnPlacement
import CairnRaft
import CairnSQLite
import CairnTransport
import Foundation

/// The metadata group: group 0, on every node, whose SQLite database is the cluster catalog.
public let metadataGroup: GroupID = 0

/// The database rqlite's endpoints and unnamed requests use.
public let defaultDatabase = "default"

public struct CatalogNode: Sendable, Equatable, Codable {
    public var id: NodeID
    public var raftAddress: PeerAddress
    public var httpAddress: PeerAddress
    /// False for a read replica: it holds every database as a non-voting learner.
    public var voter: Bool
    /// Removed by an operator: no longer a member of any group.
    public var removed: Bool
}

public struct CatalogUser: Sendable, Equatable {
    public var name: String
    public var passwordHash: String
    /// Bumped by every password change; tokens carry the epoch they were issued under.
    public var passwordEpoch: Int64
}

public struct CatalogDatabase: Sendable, Equatable {
    public var name: String
    public var group: GroupID
    /// Voting nodes meant to hold the database (read replicas hold every database besides these).
    public var replicas: [NodeID]
    /// The replicas that created the group together, with `founders` as its first voters.
    public var founders: [NodeID]
    /// Replicas in a move (absent: active): `joining` until a caught-up voter, `leaving` until removed.
    public var moving: [NodeID: ReplicaState] = [:]

    public init(name: String, group: GroupID, replicas: [NodeID], founders: [NodeID], moving: [NodeID: ReplicaState] = [:]) {
        self.name = name
        self.group = group
        self.replicas = replicas
        self.founders = founders
        self.moving = moving
    }

    /// Each replica with where it stands in a move.
    public var replicaStates: [NodeID: ReplicaState] {
        Dictionary(uniqueKeysWithValues: replicas.map { ($0, moving[$0] ?? .active) })
    }
}

/// Where a split's child group comes from: the parent group, and the parent's entry that split it
/// (0 until the split is known to have applied).
public struct SplitOrigin: Sendable, Equatable {
    public var parent: GroupID
    public var index: LogIndex
    /// The slot the split divides the parent's arc at, chosen when the child is reserved (nil: the
    /// middle). Whoever finishes the split divides there, so a split by load finished by another
    /// node, or after a crash, makes the child its entry made. Kept under a key of its own
    /// (`split_mid:<name>`), so the origin's own format stays the one earlier versions read.
    public var mid: Int?
    /// For a range split: the range-sharded table and the key its moving range starts at (a new split
    /// point, or an existing one), chosen when the child is reserved, so whoever finishes the split
    /// moves the same range (`split_range:<name>`).
    public var rangeFrom: RangeStart?

    public struct RangeStart: Sendable, Equatable {
        public var table: String
        public var value: SQLValue
        public init(table: String, value: SQLValue) {
            self.table = table
            self.value = value
        }
        var encoded: [UInt8] { ValueListCoding.encode([.text(table), value]) }
        init?(encoded bytes: [UInt8]) {
            guard let values = ValueListCoding.decode(bytes), values.count == 2, case .text(let t) = values[0] else { return nil }
            self.init(table: t, value: values[1])
        }
    }

    public init(parent: GroupID, index: LogIndex, mid: Int? = nil, rangeFrom: RangeStart? = nil) {
        self.parent = parent
        self.index = index
        self.mid = mid
        self.rangeFrom = rangeFrom
    }

    var encoded: String { "\(parent):\(index)" }

    init?(encoded text: String) {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let p = GroupID(parts[0]), let i = LogIndex(parts[1]) else { return nil }
        self.init(parent: p, index: i)
    }
}

/// A sharded table: its rows are spread over its database's shards by the slot of its key (hash), or
/// by the range its key falls in (range); a reference table is copied whole to every shard.
public struct CatalogShardedTable: Sendable, Equatable {
    public var name: String
    /// Empty for a reference table (a whole copy on every shard).
    public var keyColumns: [String]
    /// Its schema on every shard: the CREATE TABLE (without CairnDB's clause), then its indexes'
    /// CREATE INDEX statements, separated by semicolons.
    public var createSQL: String
    /// A range-sharded table's split points (as its key column stores them); nil for a hash table.
    public var splitPoints: [SQLValue]?
    /// The shard each of its ranges lives on, once a range split moved one (nil: range i on shard i
    /// modulo the count the database was created with; `RangeSplits.placement`).
    public var rangePlacement: [Int]?

    public var isReference: Bool { keyColumns.isEmpty }

    public init(name: String, keyColumns: [String], createSQL: String, splitPoints: [SQLValue]? = nil) {
        self.name = name
        self.keyColumns = keyColumns
        self.createSQL = createSQL
        self.splitPoints = splitPoints
    }
}

/// What this node's copy of the catalog says. Read locally: it may be slightly behind the leader's,
/// which the controller tolerates because every decision it takes is re-checked on the next pass;
/// before a client hears "no such" the copy is refreshed linearizably (`ClusterNode.refreshCatalog`).
public struct Catalog: Sendable {
    public var nodes: [NodeID: CatalogNode] = [:]
    public var databases: [String: CatalogDatabase] = [:]
    public var users: [String: CatalogUser] = [:]
    /// Grants by user name (`*`: everyone).
    public var grants: [String: Set<Grant>] = [:]
    /// The key every node signs and checks tokens with.
    public var tokenKey: [UInt8] = []
    /// The CA that signs node certificates (its key included: any member may admit a joining node).
    public var clusterCA: ClusterCA?
    /// The public key each joined node was certified for (PEM): a join under its id must bring the same.
    public var nodeKeys: [NodeID: String] = [:]
    public var exists = false
    /// The highest group id ever given to a database (dropped ones included).
    public var highestGroup: GroupID = 0
    /// Shard counts chosen at creation (`shards:<db>` settings); a database without one has
    /// `defaultShardCount` shards once it gets a sharded table.
    public var shardCounts: [String: Int] = [:]
    /// Shard maps that splits changed (`shard_map:<db>`); others are uniform over `shardCounts`.
    public var shardMaps: [String: ShardMap] = [:]
    /// Shard groups a split makes, by their entry's name: from which group, and once the split entry
    /// applied, at which index (`split_origin:<name>`).
    public var splitOrigins: [String: SplitOrigin] = [:]
    /// Runtime settings an operator set (`setting:<name>`; see `ClusterSettings`).
    public var settingOverrides: [String: Int64] = [:]
    /// Rounds of doubling under way (`doubling:<db>`): the shard count each database is splitting towards.
    public var doublingTargets: [String: Int] = [:]
    /// Each database's sharded tables, by lowercased name.
    public var shardedTables: [String: [String: CatalogShardedTable]] = [:]
    /// Nodes the metadata leader declared dead, or an operator is draining (others are live, or
    /// suspect by the observer's own clock: that is never recorded).
    public var nodeStates: [NodeID: NodeState] = [:]
    /// Names nodes gave themselves (`--name`, `node_name:<id>`); a node without one goes by its id.
    public var nodeNames: [NodeID: String] = [:]
    /// Nodes an operator placed a group's copies on (`pin:<group's name>`; see `PlacementGroup.pinned`).
    public var pins: [String: Set<NodeID>] = [:]
    /// Voting copies of each group, as the founding node's `--replication-factor` set it (nil in a
    /// catalog from before it was kept: the metadata leader records its own).
    public var replicationFactor: Int?

    /// What `user` (nil: not signed in) may do: its own grants and everyone's.
    public func grants(of user: String?) -> Grants {
        Grants((user.flatMap { grants[$0] } ?? []).union(grants[everyone] ?? []))
    }

    public var activeNodes: [CatalogNode] { nodes.values.filter { !$0.removed }.sorted { $0.id < $1.id } }
    public var activeVoters: [CatalogNode] { activeNodes.filter(\.voter) }
    public var readReplicas: [CatalogNode] { activeNodes.filter { !$0.voter } }

    public func database(group: GroupID) -> CatalogDatabase? { databases.values.first { $0.group == group } }

    // MARK: Shards

    /// Shards per sharded database unless its creator chose (`POST /v1/databases {"shards": n}`).
    public static let defaultShardCount = 16
    public static let maxShardCount = 256

    /// A shard's group is kept as an internal database entry, so that placement, the controller and
    /// drops treat it as they treat every group. `#` never appears in a client's database name.
    public static func shardName(_ database: String, _ index: Int) -> String { "\(database)#shard#\(index)" }

    /// The database and shard a shard group's entry belongs to.
    public static func shardOf(_ name: String) -> (database: String, shard: Int)? {
        let parts = name.components(separatedBy: "#shard#")
        guard parts.count == 2, let i = Int(parts[1]) else { return nil }
        return (parts[0], i)
    }

    /// Names clients never see or address: shard groups and dropped databases.
    public static func isInternalName(_ name: String) -> Bool { name.utf8.contains(UInt8(ascii: "#")) }

    /// The databases clients see.
    public var userDatabases: [CatalogDatabase] { databases.values.filter { !Self.isInternalName($0.name) }.sorted { $0.name < $1.name } }

    /// The shard groups of `database`, in shard order (empty until its first sharded table).
    public func shards(of database: String) -> [CatalogDatabase] {
        let count = shardCount(of: database)
        let groups = (0..<count).compactMap { databases[Self.shardName(database, $0)] }
        return groups.count == count ? groups : []
    }

    public func shardCount(of database: String) -> Int { shardCounts[database] ?? Self.defaultShardCount }

    /// Which shard owns each slot of `database`'s ring.
    public func shardMap(of database: String) -> ShardMap {
        if let map = shardMaps[database], map.count == shardCount(of: database) { return map }
        return .uniform(count: shardCount(of: database))
    }

    /// A split under way in `database` (reserved, its entry not yet known to have applied): the child's
    /// entry name and origin. One at a time per database.
    public func pendingSplit(in database: String) -> (child: String, origin: SplitOrigin)? {
        splitOrigins.first { $0.value.index == 0 && Self.shardOf($0.key)?.database == database && databases[$0.key] != nil }
            .map { ($0.key, $0.value) }
    }

    /// Reserves the group a split of `parent` (shard of `database`) makes: its entry, numbered as the
    /// next shard, on the parent's replicas (none founds it: the split entry creates it on each).
    /// Routers ignore it until `recordSplit`.
    public static func reserveSplitChild(of parent: CatalogDatabase, in database: String, child index: Int, mid: Int? = nil,
                                         rangeFrom: SplitOrigin.RangeStart? = nil) -> [SQLStatement] {
        let name = shardName(database, index)
        var statements = createDatabase(name, founders: [])
        for id in parent.replicas {
            statements.append(SQLStatement("INSERT INTO replicas(group_id, node_id, founder) SELECT group_id, ?, 0 FROM databases WHERE name = ?",
                                           [.integer(Int64(bitPattern: id)), .text(name)]))
        }
        statements.append(SQLStatement("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)",
                                       [.text("split_origin:\(name)"), .text(SplitOrigin(parent: parent.group, index: 0).encoded)]))
        if let mid {
            statements.append(SQLStatement("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)", [.text("split_mid:\(name)"), .integer(Int64(mid))]))
        } else {
            // One an earlier version's drop left behind must not move this split.
            statements.append(SQLStatement("DELETE FROM settings WHERE key = ?", [.text("split_mid:\(name)")]))
        }
        if let rangeFrom {
            statements.append(SQLStatement("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)", [.text("split_range:\(name)"), .blob(rangeFrom.encoded)]))
        } else {
            statements.append(SQLStatement("DELETE FROM settings WHERE key = ?", [.text("split_range:\(name)")]))
        }
        return statements
    }

    /// The split applied at `index` of `parent`: routers now use `map` (the child owns its upper half).
    /// Only over the map it split (the count one less): a second driver finishing the same split late
    /// changes nothing, and a map never goes back.
    /// A range split records the moving table's split points and placement (`range`) in the same change.
    public static func recordSplit(in database: String, map: ShardMap, parent: GroupID, index: LogIndex,
                                   range: (table: String, splits: RangeSplits)? = nil) -> [SQLStatement] {
        let count = SQLValue.text("shards:\(database)"), before = SQLValue.integer(Int64(map.count - 1))
        let guarded = "INSERT OR REPLACE INTO settings(key, value) SELECT ?1, ?2 WHERE (SELECT value FROM settings WHERE key = ?3) = ?4"
        var ranged: [SQLStatement] = []
        if let (table, splits) = range {
            ranged = [
                SQLStatement("UPDATE range_splits SET points = ?1 WHERE database = ?2 AND name = ?3 COLLATE NOCASE AND (SELECT value FROM settings WHERE key = ?4) = ?5",
                             [.blob(ValueListCoding.encode(splits.points)), .text(database), .text(table), count, before]),
                rangePlacementsSchema,
                SQLStatement("""
                    INSERT OR REPLACE INTO range_placements(database, name, shards) SELECT ?1, name, ?3 FROM range_splits
                    WHERE database = ?1 AND name = ?2 COLLATE NOCASE AND (SELECT value FROM settings WHERE key = ?4) = ?5
                    """, [.text(database), .text(table), .text((splits.placement ?? []).map(String.init).joined(separator: ",")), count, before]),
            ]
        }
        return ranged + [
            SQLStatement(guarded, [.text("shard_map:\(database)"), .text(map.encoded), count, before]),
            SQLStatement(guarded, [.text("split_origin:\(shardName(database, map.count - 1))"), .text(SplitOrigin(parent: parent, index: index).encoded), count, before]),
            // Last: the statements above test the count this one changes.
            SQLStatement(guarded, [count, .integer(Int64(map.count)), count, before]),
        ]
    }

    /// Starts a round of doubling towards `target` shards, unless one is under way (every node's split
    /// pass may find the need at once; the first to record it sets the target).
    public static func startDoubling(_ database: String, target: Int) -> [SQLStatement] {
        [SQLStatement("INSERT OR IGNORE INTO settings(key, value) SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM settings WHERE key = ?3)",
                      [.text("doubling:\(database)"), .integer(Int64(target)), .text("shards:\(database)")])]
    }

    /// Ends the round towards `target` (a later round's record stays).
    public static func finishDoubling(_ database: String, target: Int) -> [SQLStatement] {
        [SQLStatement("DELETE FROM settings WHERE key = ? AND value = ?", [.text("doubling:\(database)"), .integer(Int64(target))])]
    }

    /// The shard groups of `database`, each founded by its `founders` (one list per shard), and its count.
    public static func createShards(of database: String, founders: [[NodeID]]) -> [SQLStatement] {
        setShardCount(database, founders.count)
            + founders.enumerated().flatMap { createDatabase(shardName(database, $0.offset), founders: $0.element) }
    }

    public static func setShardCount(_ database: String, _ count: Int) -> [SQLStatement] {
        [SQLStatement("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)", [.text("shards:\(database)"), .integer(Int64(count))])]
    }

    /// Made when first needed: catalogs founded before sharding have no such table.
    static let shardedTablesSchema = SQLStatement("""
        CREATE TABLE IF NOT EXISTS sharded_tables(database TEXT NOT NULL, name TEXT NOT NULL, key_columns TEXT NOT NULL,
            create_sql TEXT NOT NULL, PRIMARY KEY(database, name))
        """)

    /// Records a sharded table: from this change on, routers send its statements to the shards.
    /// A sharded table's schema as its shards now hold it (after an index changed on all of them).
    public static func updateShardedTable(_ table: CatalogShardedTable, in database: String) -> [SQLStatement] {
        [SQLStatement("UPDATE sharded_tables SET create_sql = ?3 WHERE database = ?1 AND name = ?2",
                      [.text(database), .text(table.name), .text(table.createSQL)])]
    }

    public static func addShardedTable(_ table: CatalogShardedTable, in database: String) -> [SQLStatement] {
        var statements = [shardedTablesSchema,
                          SQLStatement("INSERT INTO sharded_tables(database, name, key_columns, create_sql) VALUES(?, ?, ?, ?)",
                                       [.text(database), .text(table.name), .text(table.keyColumns.joined(separator: ",")), .text(table.createSQL)])]
        if let points = table.splitPoints {
            statements += [rangeSplitsSchema,
                           SQLStatement("INSERT OR REPLACE INTO range_splits(database, name, points) VALUES(?, ?, ?)",
                                        [.text(database), .text(table.name), .blob(ValueListCoding.encode(points))])]
        }
        return statements
    }

    /// Forgets a sharded or reference table: routers stop sending it statements.
    public static func removeShardedTable(_ name: String, in database: String) -> [SQLStatement] {
        [shardedTablesSchema,
         SQLStatement("DELETE FROM sharded_tables WHERE database = ?1 AND name = ?2 COLLATE NOCASE", [.text(database), .text(name)]),
         rangeSplitsSchema,
         SQLStatement("DELETE FROM range_splits WHERE database = ?1 AND name = ?2 COLLATE NOCASE", [.text(database), .text(name)]),
         rangePlacementsSchema,
         SQLStatement("DELETE FROM range_placements WHERE database = ?1 AND name = ?2 COLLATE NOCASE", [.text(database), .text(name)])]
    }

    /// A range-sharded table's split points (`ValueListCoding`), beside its `sharded_tables` row.
    static let rangeSplitsSchema = SQLStatement("""
        CREATE TABLE IF NOT EXISTS range_splits(database TEXT NOT NULL, name TEXT NOT NULL, points BLOB NOT NULL, PRIMARY KEY(database, name))
        """)

    /// A range-sharded table's placement once a range split moved one of its ranges (shard numbers,
    /// comma-separated, one per range), beside its `range_splits` row.
    static let rangePlacementsSchema = SQLStatement("""
        CREATE TABLE IF NOT EXISTS range_placements(database TEXT NOT NULL, name TEXT NOT NULL, shards TEXT NOT NULL, PRIMARY KEY(database, name))
        """)

    static let schema: [SQLStatement] = [
        SQLStatement("""
            CREATE TABLE IF NOT EXISTS nodes(id INTEGER PRIMARY KEY, raft_addr TEXT NOT NULL, http_addr TEXT NOT NULL,
                voter INTEGER NOT NULL, removed INTEGER NOT NULL DEFAULT 0, updated_ms INTEGER NOT NULL)
            """),
        SQLStatement("""
            CREATE TABLE IF NOT EXISTS databases(name TEXT PRIMARY KEY, group_id INTEGER NOT NULL UNIQUE, created_ms INTEGER NOT NULL,
                dropped INTEGER NOT NULL DEFAULT 0)
            """),
        SQLStatement("""
            CREATE TABLE IF NOT EXISTS replicas(group_id INTEGER NOT NULL, node_id INTEGER NOT NULL, founder INTEGER NOT NULL,
                PRIMARY KEY(group_id, node_id))
            """),
        SQLStatement("""
            CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, password_epoch INTEGER NOT NULL,
                created_ms INTEGER NOT NULL)
            """),
        SQLStatement("""
            CREATE TABLE IF NOT EXISTS grants(name TEXT NOT NULL, permission TEXT NOT NULL, database TEXT NOT NULL,
                PRIMARY KEY(name, permission, database))
            """),
        SQLStatement("CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value)"),
    ]
    static let tableNames = ["nodes", "databases", "replicas", "users", "grants", "settings"]

    /// A new cluster's keys and first account: `admin` with every permission, and readiness checks open
    /// to everyone (as load balancers probe without credentials).
    static func foundAuth(adminPasswordHash: String, tokenKey: [UInt8]) -> [SQLStatement] {
        [SQLStatement("INSERT OR IGNORE INTO settings(key, value) VALUES('token_key', ?)", [.blob(tokenKey)])]
            + createUser("admin", passwordHash: adminPasswordHash)
            + grant(Grant(.all), to: "admin") + grant(Grant(.ready), to: everyone)
    }

    /// A new token-signing key: every token signed before (users' and nodes') stops working at once.
    public static func rotateTokenKey(_ key: [UInt8]) -> [SQLStatement] {
        [SQLStatement("INSERT OR REPLACE INTO settings(key, value) VALUES('token_key', ?)", [.blob(key)])]
    }

    /// The key a joining node was certified for.
    static func setNodeKey(_ id: NodeID, publicKey: String) -> [SQLStatement] {
        [SQLStatement("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)", [.text("node_key:\(id)"), .text(publicKey)])]
    }

    /// The CA its creator (the founding node) hands to the catalog, once.
    static func setClusterCA(_ ca: ClusterCA) -> [SQLStatement] {
        [SQLStatement("INSERT OR IGNORE INTO settings(key, value) VALUES('ca_cert', ?)", [.text(ca.certificatePEM)]),
         SQLStatement("INSERT OR IGNORE INTO settings(key, value) VALUES('ca_key', ?)", [.text(ca.privateKeyPEM)])]
    }

    static let nowMillis = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

    public static func createUser(_ name: String, passwordHash: String) -> [SQLStatement] {
        [SQLStatement("INSERT INTO users(name, password_hash, password_epoch, created_ms) VALUES(?, ?, \(nowMillis), \(nowMillis))",
                      [.text(name), .text(passwordHash)])]
    }

    /// A new password, and a new epoch: tokens issued before stop working.
    public static func setPassword(_ name: String, passwordHash: String) -> [SQLStatement] {
        [SQLStatement("UPDATE users SET password_hash = ?, password_epoch = max(password_epoch + 1, \(nowMillis)) WHERE name = ?",
                      [.text(passwordHash), .text(name)])]
    }

    public static func deleteUser(_ name: String) -> [SQLStatement] {
        [SQLStatement("DELETE FROM users WHERE name = ?", [.text(name)]), SQLStatement("DELETE FROM grants WHERE name = ?", [.text(name)])]
    }

    public static func grant(_ g: Grant, to name: String) -> [SQLStatement] {
        [SQLStatement("INSERT OR IGNORE INTO grants(name, permission, database) VALUES(?, ?, ?)",
                      [.text(name), .text(g.permission.rawValue), .text(g.database)])]
    }

    public static func revoke(_ g: Grant, from name: String) -> [SQLStatement] {
        [SQLStatement("DELETE FROM grants WHERE name = ? AND permission = ? AND database = ?",
                      [.text(name), .text(g.permission.rawValue), .text(g.database)])]
    }

    /// The row stays (renamed, marked dropped) so its group id is never given to another database.
    public static func dropDatabase(_ name: String) -> [SQLStatement] {
        [replicaStatesSchema,
         SQLStatement("DELETE FROM replica_states WHERE group_id = (SELECT group_id FROM databases WHERE name = ? AND dropped = 0)", [.text(name)]),
         SQLStatement("DELETE FROM replicas WHERE group_id = (SELECT group_id FROM databases WHERE name = ? AND dropped = 0)", [.text(name)]),
         SQLStatement("UPDATE databases SET dropped = 1, name = name || '#dropped#' || group_id WHERE name = ? AND dropped = 0", [.text(name)]),
         SQLStatement("DELETE FROM grants WHERE database = ?", [.text(name)]),
         SQLStatement("DELETE FROM settings WHERE key IN (?, ?, ?, ?, ?, ?, ?)",
                      [.text("shards:\(name)"), .text("shard_map:\(name)"), .text("split_origin:\(name)"), .text("split_mid:\(name)"),
                       .text("split_range:\(name)"), .text("doubling:\(name)"), .text("pin:\(name)")]),
         shardedTablesSchema,
         SQLStatement("DELETE FROM sharded_tables WHERE database = ?", [.text(name)]),
         rangeSplitsSchema,
         SQLStatement("DELETE FROM range_splits WHERE database = ?", [.text(name)]),
         rangePlacementsSchema,
         SQLStatement("DELETE FROM range_placements WHERE database = ?", [.text(name)])]
    }


    static func register(_ node: CatalogNode) -> [SQLStatement] {
        [SQLStatement("""
            INSERT INTO nodes(id, raft_addr, http_addr, voter, removed, updated_ms) VALUES(?, ?, ?, ?, 0, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
            ON CONFLICT(id) DO UPDATE SET raft_addr = excluded.raft_addr, http_addr = excluded.http_addr, voter = excluded.voter,
                updated_ms = excluded.updated_ms WHERE removed = 0
            """, [.integer(Int64(bitPattern: node.id)), .text(node.raftAddress.description), .text(node.httpAddress.description),
                  .integer(node.voter ? 1 : 0)])]
    }

    static func remove(_ id: NodeID) -> [SQLStatement] {
        [SQLStatement("UPDATE nodes SET removed = 1, updated_ms = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) WHERE id = ?",
                      [.integer(Int64(bitPattern: id))]),
         SQLStatement("DELETE FROM replicas WHERE node_id = ?", [.integer(Int64(bitPattern: id))]),
         replicaStatesSchema,
         SQLStatement("DELETE FROM replica_states WHERE node_id = ?", [.integer(Int64(bitPattern: id))])]
            + setNodeState(id, nil)
    }

    /// A new database in the next free group, founded by `founders`.
    public static func createDatabase(_ name: String, founders: [NodeID]) -> [SQLStatement] {
        var statements = [SQLStatement("""
            INSERT INTO databases(name, group_id, created_ms)
            SELECT ?, COALESCE(MAX(group_id), 0) + 1, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) FROM databases
            """, [.text(name)])]
        for id in founders {
            statements.append(SQLStatement("INSERT INTO replicas(group_id, node_id, founder) SELECT group_id, ?, 1 FROM databases WHERE name = ?",
                                           [.integer(Int64(bitPattern: id)), .text(name)]))
        }
        return statements
    }

    // MARK: Placement

    /// Where replicas stand in a move; made when first needed (catalogs from before moves have none).
    static let replicaStatesSchema = SQLStatement("""
        CREATE TABLE IF NOT EXISTS replica_states(group_id INTEGER NOT NULL, node_id INTEGER NOT NULL, state TEXT NOT NULL,
            PRIMARY KEY(group_id, node_id))
        """)

    static func ids(_ group: GroupID, _ node: NodeID) -> [SQLValue] { [.integer(Int64(bitPattern: group)), .integer(Int64(bitPattern: node))] }

    /// The rebalancer's steps, as one batch.
    public static func apply(_ steps: [PlacementStep]) -> [SQLStatement] {
        guard !steps.isEmpty else { return [] }
        var out = [replicaStatesSchema]
        for step in steps {
            switch step {
            case .forget(let g, let n):
                out += [SQLStatement("DELETE FROM replicas WHERE group_id = ? AND node_id = ?", ids(g, n)),
                        SQLStatement("DELETE FROM replica_states WHERE group_id = ? AND node_id = ?", ids(g, n))]
            case .add(let g, let n):
                out += join(g, n)
            case .move(let g, let from, let to):
                out += join(g, to) + [SQLStatement("INSERT OR REPLACE INTO replica_states(group_id, node_id, state) VALUES(?, ?, 'leaving')",
                                                   ids(g, from))]
            case .trim(let g, let n):
                out += [SQLStatement("INSERT OR REPLACE INTO replica_states(group_id, node_id, state) VALUES(?, ?, 'leaving')", ids(g, n))]
            }
        }
        return out
    }

    static func join(_ g: GroupID, _ n: NodeID) -> [SQLStatement] {
        [SQLStatement("INSERT OR IGNORE INTO replicas(group_id, node_id, founder) VALUES(?, ?, 0)", ids(g, n)),
         SQLStatement("INSERT OR REPLACE INTO replica_states(group_id, node_id, state) VALUES(?, ?, 'joining')", ids(g, n))]
    }

    /// A joining replica is a caught-up voter now.
    public static func replicaCaughtUp(group: GroupID, node: NodeID) -> [SQLStatement] {
        [replicaStatesSchema, SQLStatement("DELETE FROM replica_states WHERE group_id = ? AND node_id = ? AND state = 'joining'", ids(group, node))]
    }

    /// A leaving replica is out of its group's membership: the catalog forgets it.
    public static func replicaLeft(group: GroupID, node: NodeID) -> [SQLStatement] {
        [replicaStatesSchema,
         SQLStatement("""
            DELETE FROM replicas WHERE group_id = ?1 AND node_id = ?2
                AND EXISTS (SELECT 1 FROM replica_states WHERE group_id = ?1 AND node_id = ?2 AND state = 'leaving')
            """, ids(group, node)),
         SQLStatement("DELETE FROM replica_states WHERE group_id = ? AND node_id = ? AND state = 'leaving'", ids(group, node))]
    }

    static func setReplicationFactor(_ rf: Int) -> [SQLStatement] {
        [SQLStatement("INSERT OR IGNORE INTO settings(key, value) VALUES('replication_factor', ?)", [.integer(Int64(rf))])]
    }

    /// A node's name: the one it gave itself, or its id.
    public func name(of node: NodeID) -> String { nodeNames[node] ?? "\(node)" }

    /// The node going by `name` (its own, or its id), removed ones aside.
    public func node(named name: String) -> NodeID? {
        let live = nodes.values.filter { !$0.removed }.map(\.id).sorted()
        return live.first { nodeNames[$0] == name } ?? live.first { nodeNames[$0] == nil && "\($0)" == name }
    }

    /// Why a node may not take `name`: the rule names follow (nil: it may), before uniqueness, which
    /// `setNodeName` leaves to the catalog's own order of changes.
    public static func nameProblem(_ name: String) -> String? {
        guard (1...64).contains(name.utf8.count) else { return "a node name has 1 to 64 bytes" }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.[]")
        guard name.allSatisfy({ allowed.contains($0) }) else { return "a node name has letters, digits and - _ . [ ] only" }
        return nil
    }

    /// What a refused name change says.
    public static let nameTaken = "another node goes by that name"

    /// Names node `id` `name`, unless another node that is not removed has it: checked by a trigger in
    /// the catalog's order of changes, so of two nodes asking for one name at once exactly one gets it.
    public static func setNodeName(_ id: NodeID, _ name: String) -> [SQLStatement] {
        [SQLStatement("CREATE TABLE IF NOT EXISTS name_checks(node INTEGER NOT NULL, name TEXT NOT NULL)"),
         SQLStatement("""
            CREATE TRIGGER IF NOT EXISTS name_check BEFORE INSERT ON name_checks BEGIN
                SELECT RAISE(ABORT, '\(sqlText(nameTaken))') WHERE EXISTS (SELECT 1 FROM settings s JOIN nodes n ON s.key = 'node_name:' || n.id
                    WHERE s.value = NEW.name AND n.id != NEW.node AND n.removed = 0);
                SELECT RAISE(IGNORE);
            END
            """),
         SQLStatement("INSERT INTO name_checks(node, name) VALUES(?, ?)", [.integer(Int64(bitPattern: id)), .text(name)]),
         SQLStatement("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)", [.text("node_name:\(id)"), .text(name)])]
    }

    /// Places the copies of the group named `name` (a database, or a shard's `db#shard#i`) on `nodes`
    /// from now on (empty: anywhere again).
    public static func setPins(_ name: String, _ nodes: Set<NodeID>) -> [SQLStatement] {
        let key = SQLValue.text("pin:\(name)")
        guard !nodes.isEmpty else { return [SQLStatement("DELETE FROM settings WHERE key = ?", [key])] }
        return [SQLStatement("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)", [key, .text(nodes.sorted().map(String.init).joined(separator: ","))])]
    }

    /// Records a node as dead or draining (nil: live again).
    public static func setNodeState(_ id: NodeID, _ state: NodeState?) -> [SQLStatement] {
        let key = SQLValue.text("node_state:\(id)")
        guard let state, state == .dead || state == .draining else { return [SQLStatement("DELETE FROM settings WHERE key = ?", [key])] }
        return [SQLStatement("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)", [key, .text(state.rawValue)])]
    }
}

extension PeerAddress {
    /// `host:port` (an IPv6 host in brackets: `[::1]:4001`).
    public init?(parsing text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let colon = trimmed.lastIndex(of: ":"), let port = Int(trimmed[trimmed.index(after: colon)...]),
              (0...65535).contains(port) else { return nil }
        var host = String(trimmed[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }
}

extension PeerAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let address = PeerAddress(parsing: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "expected host:port, found \"\(text)\""))
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// Single-use join tokens: an admin mints one (`POST /v1/cluster/join-tokens`) and a new node presents it
/// with its join. Only the token's SHA-256 is kept; spending it is part of the same catalog batch as
/// the node's registration, so a token admits one node (the same node may retry a join it began), and
/// two nodes racing with one token cannot both get in, whichever nodes they ask. The tables are made
/// when first needed: clusters founded before join tokens have none.
public enum JoinTokens {
    public static let prefix = "cairn-join-"
    public static let refusal = "the join token is unknown, has expired, or admitted another node"
    public static let maxTTLSeconds = 7 * 86_400
    public static let defaultTTLSeconds = 3_600

    static let schema: [SQLStatement] = [
        SQLStatement("""
            CREATE TABLE IF NOT EXISTS join_tokens(hash BLOB PRIMARY KEY, expires_ms INTEGER NOT NULL, created_by TEXT,
                used_by INTEGER)
            """),
        SQLStatement("CREATE TABLE IF NOT EXISTS join_token_spends(hash BLOB NOT NULL, node INTEGER NOT NULL, at_ms INTEGER NOT NULL)"),
        // A spend is an insert the trigger turns into a check and a mark; the row itself is never kept.
        SQLStatement("""
            CREATE TRIGGER IF NOT EXISTS join_token_spend BEFORE INSERT ON join_token_spends BEGIN
                SELECT RAISE(ABORT, '\(sqlText(refusal))') WHERE NOT EXISTS (SELECT 1 FROM join_tokens WHERE hash = NEW.hash
                    AND expires_ms > NEW.at_ms AND (used_by IS NULL OR used_by = NEW.node));
                UPDATE join_tokens SET used_by = NEW.node WHERE hash = NEW.hash;
                SELECT RAISE(IGNORE);
            END
            """),
    ]

    /// A new token (what the admin is shown once) and the catalog change that makes it valid.
    public static func mint(ttlSeconds: Int, by user: String?, nowMillis: Int64) -> (token: String, statements: [SQLStatement]) {
        let token = prefix + Data(PasswordHash.randomKey()).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let expires = nowMillis + Int64(ttlSeconds) * 1000
        return (token, schema + [
            // Tokens that expired a day ago are of no more use, even to read who used them.
            SQLStatement("DELETE FROM join_tokens WHERE expires_ms < ?", [.integer(nowMillis - 86_400_000)]),
            SQLStatement("INSERT INTO join_tokens(hash, expires_ms, created_by) VALUES(?, ?, ?)",
                         [.blob(hash(token)), .integer(expires), user.map { .text($0) } ?? .null]),
        ])
    }

    /// Spends `token` for `node` (fails the batch it is in unless the token is valid).
    static func spend(_ token: String, node: NodeID, nowMillis: Int64) -> [SQLStatement] {
        schema + [SQLStatement("INSERT INTO join_token_spends(hash, node, at_ms) VALUES(?, ?, ?)",
                               [.blob(hash(token)), .integer(Int64(bitPattern: node)), .integer(nowMillis)])]
    }

    static func hash(_ token: String) -> [UInt8] { Array(SHA256.hash(data: Array(token.utf8))) }

    /// Shaped like a minted token (the prefix, then 43 characters of unpadded base64url).
    public static func isWellFormed(_ token: String) -> Bool {
        token.hasPrefix(prefix) && token.utf8.count == prefix.utf8.count + 43
            && token.utf8.dropFirst(prefix.utf8.count).allSatisfy { c in
                (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c) || c == 0x2D || c == 0x5F
            }
    }
}

/// Every join's batch begins with this check, so that a join never takes over a member, whatever the
/// catalog copy of the node that admitted it said: the id's addresses and certified key, where the
/// catalog has them, must be the join's own (the same node retrying gives the same).
public enum JoinGuard {
    public static let conflict = "the node id is taken by a member (at other addresses, certified for another key, or removed); a node cannot join under the id of another"

    static let schema: [SQLStatement] = [
        SQLStatement("CREATE TABLE IF NOT EXISTS join_checks(node INTEGER NOT NULL, raft_addr TEXT NOT NULL, http_addr TEXT NOT NULL, key TEXT)"),
        SQLStatement("""
            CREATE TRIGGER IF NOT EXISTS join_check BEFORE INSERT ON join_checks BEGIN
                SELECT RAISE(ABORT, '\(sqlText(conflict))') WHERE EXISTS (SELECT 1 FROM nodes WHERE id = NEW.node
                    AND (raft_addr != NEW.raft_addr OR http_addr != NEW.http_addr OR removed != 0));
                SELECT RAISE(ABORT, '\(sqlText(conflict))') WHERE NEW.key IS NOT NULL AND EXISTS (SELECT 1 FROM nodes WHERE id = NEW.node)
                    AND NOT EXISTS (SELECT 1 FROM settings WHERE key = 'node_key:' || NEW.node AND value = NEW.key);
                SELECT RAISE(IGNORE);
            END
            """),
    ]

    static func check(_ node: CatalogNode, publicKey: String?) -> [SQLStatement] {
        schema + [SQLStatement("INSERT INTO join_checks(node, raft_addr, http_addr, key) VALUES(?, ?, ?, ?)",
                               [.integer(Int64(bitPattern: node.id)), .text(node.raftAddress.description),
                                .text(node.httpAddress.description), publicKey.map { .text($0) } ?? .null])]
    }
}

/// `text` inside an SQL string literal.
func sqlText(_ text: String) -> String { text.replacingOccurrences(of: "'", with: "''") }
