import CairnAuth
import CairnNode
import CairnPlacement
import CairnRaft
import CairnSQLite
import CairnTransport
import Foundation

/// Reading the catalog out of the metadata group's database: every table at one read point, into
/// the `Catalog` value every decision is made from.
extension Catalog {
    /// Reads this node's copy, every table at one read point (no apply runs between them), and returns
    /// the log index it reflects. `.local` costs no consensus round (see the type's comment);
    /// `.linearizable` first waits until the copy holds every change committed before the call.
    public static func load(from runtime: NodeRuntime, consistency: ReadConsistency = .local) async throws -> (catalog: Catalog, index: LogIndex) {
        let names = tableNames.map { "'\($0)'" }.joined(separator: ", ")
        let (results, index) = try await runtime.query(group: metadataGroup, [
            SQLStatement("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (\(names))"),
            SQLStatement("SELECT id, raft_addr, http_addr, voter, removed FROM nodes"),
            SQLStatement("""
                SELECT d.name, d.group_id, r.node_id, r.founder FROM databases d LEFT JOIN replicas r ON r.group_id = d.group_id
                WHERE d.dropped = 0 ORDER BY d.group_id, r.node_id
                """),
            SQLStatement("SELECT COALESCE(MAX(group_id), 0) FROM databases"),
            SQLStatement("SELECT name, password_hash, password_epoch FROM users"),
            SQLStatement("SELECT name, permission, database FROM grants"),
            SQLStatement("SELECT value FROM settings WHERE key = 'token_key'"),
            SQLStatement("SELECT (SELECT value FROM settings WHERE key = 'ca_cert'), (SELECT value FROM settings WHERE key = 'ca_key')"),
            SQLStatement("SELECT substr(key, 10), value FROM settings WHERE key LIKE 'node_key:%'"),
            SQLStatement("SELECT substr(key, 8), value FROM settings WHERE key LIKE 'shards:%'"),
            SQLStatement("SELECT substr(key, 12), value FROM settings WHERE key LIKE 'node_state:%'"),
            SQLStatement("SELECT value FROM settings WHERE key = 'replication_factor'"),
            SQLStatement("SELECT key, value FROM settings WHERE key LIKE 'shard\\_map:%' ESCAPE '\\' OR key LIKE 'split\\_origin:%' ESCAPE '\\' OR key LIKE 'setting:%' OR key LIKE 'doubling:%' OR key LIKE 'split\\_mid:%' ESCAPE '\\' OR key LIKE 'node\\_name:%' ESCAPE '\\' OR key LIKE 'pin:%' OR key LIKE 'split\\_range:%' ESCAPE '\\'"),
            // These fail (no such table) in a catalog that never had a sharded (or range) table: then there are none.
            SQLStatement("SELECT database, name, key_columns, create_sql FROM sharded_tables"),
            SQLStatement("SELECT database, name, points FROM range_splits"),
            SQLStatement("SELECT group_id, node_id, state FROM replica_states"),
            SQLStatement("SELECT database, name, shards FROM range_placements"),
        ], consistency: consistency)
        var catalog = Catalog()
        // Before the metadata leader creates the schema, the later statements fail: an empty catalog.
        guard case .integer(Int64(tableNames.count)) = results[0].rows.first?.first else { return (catalog, index) }
        if let failed = results.dropLast(4).first(where: { $0.error != nil }) { throw ClusterError.invalid("cannot read the catalog: \(failed.error!)") }
        catalog.exists = true
        for row in results[1].rows {
            guard row.count == 5, case .integer(let id) = row[0], case .text(let raft) = row[1], case .text(let http) = row[2],
                  case .integer(let voter) = row[3], case .integer(let removed) = row[4],
                  let raftAddress = PeerAddress(parsing: raft), let httpAddress = PeerAddress(parsing: http) else { continue }
            let node = CatalogNode(id: NodeID(bitPattern: id), raftAddress: raftAddress, httpAddress: httpAddress,
                                   voter: voter != 0, removed: removed != 0)
            catalog.nodes[node.id] = node
        }
        for row in results[2].rows {
            guard row.count == 4, case .text(let name) = row[0], case .integer(let group) = row[1] else { continue }
            var db = catalog.databases[name] ?? CatalogDatabase(name: name, group: GroupID(group), replicas: [], founders: [])
            if case .integer(let node) = row[2] {
                db.replicas.append(NodeID(bitPattern: node))
                if case .integer(1) = row[3] { db.founders.append(NodeID(bitPattern: node)) }
            }
            catalog.databases[name] = db
        }
        if case .integer(let h)? = results[3].rows.first?.first { catalog.highestGroup = GroupID(h) }
        for row in results[4].rows {
            guard row.count == 3, case .text(let name) = row[0], case .text(let hash) = row[1], case .integer(let epoch) = row[2] else { continue }
            catalog.users[name] = CatalogUser(name: name, passwordHash: hash, passwordEpoch: epoch)
        }
        for row in results[5].rows {
            guard row.count == 3, case .text(let name) = row[0], case .text(let p) = row[1], case .text(let db) = row[2],
                  let permission = Permission(rawValue: p) else { continue }
            catalog.grants[name, default: []].insert(Grant(permission, database: db))
        }
        if case .blob(let bytes)? = results[6].rows.first?.first { catalog.tokenKey = bytes }
        if let row = results[7].rows.first, row.count == 2, case .text(let cert) = row[0], case .text(let key) = row[1] {
            catalog.clusterCA = ClusterCA(certificatePEM: cert, privateKeyPEM: key)
        }
        for row in results[8].rows {
            guard row.count == 2, case .text(let id) = row[0], let node = NodeID(id), case .text(let key) = row[1] else { continue }
            catalog.nodeKeys[node] = key
        }
        for row in results[9].rows {
            guard row.count == 2, case .text(let db) = row[0], case .integer(let n) = row[1] else { continue }
            catalog.shardCounts[db] = Int(n)
        }
        for row in results[10].rows {
            guard row.count == 2, case .text(let id) = row[0], let node = NodeID(id), case .text(let v) = row[1],
                  let state = NodeState(rawValue: v) else { continue }
            catalog.nodeStates[node] = state
        }
        if case .integer(let rf)? = results[11].rows.first?.first, (1...100).contains(rf) { catalog.replicationFactor = Int(rf) }
        var mids: [String: Int] = [:]
        var ranges: [String: SplitOrigin.RangeStart] = [:]
        for row in results[12].rows {
            guard row.count == 2, case .text(let key) = row[0] else { continue }
            if key.hasPrefix("setting:"), case .integer(let v) = row[1] {
                catalog.settingOverrides[String(key.dropFirst("setting:".count))] = v
                continue
            }
            if key.hasPrefix("doubling:"), case .integer(let v) = row[1] {
                catalog.doublingTargets[String(key.dropFirst("doubling:".count))] = Int(v)
                continue
            }
            if key.hasPrefix("split_range:"), case .blob(let b) = row[1], let start = SplitOrigin.RangeStart(encoded: b) {
                ranges[String(key.dropFirst("split_range:".count))] = start
                continue
            }
            if key.hasPrefix("split_mid:"), case .integer(let v) = row[1] {
                mids[String(key.dropFirst("split_mid:".count))] = Int(v)
                continue
            }
            guard case .text(let value) = row[1] else { continue }
            if key.hasPrefix("shard_map:"), let map = ShardMap(encoded: value) {
                catalog.shardMaps[String(key.dropFirst("shard_map:".count))] = map
            } else if key.hasPrefix("pin:") {
                catalog.pins[String(key.dropFirst("pin:".count))] = Set(value.split(separator: ",").compactMap { NodeID($0) })
            } else if key.hasPrefix("node_name:"), let node = NodeID(key.dropFirst("node_name:".count)) {
                catalog.nodeNames[node] = value
            } else if key.hasPrefix("split_origin:"), let origin = SplitOrigin(encoded: value) {
                catalog.splitOrigins[String(key.dropFirst("split_origin:".count))] = origin
            }
        }
        for (name, mid) in mids { catalog.splitOrigins[name]?.mid = mid }
        for (name, start) in ranges { catalog.splitOrigins[name]?.rangeFrom = start }
        for row in results[13].rows {
            guard row.count == 4, case .text(let db) = row[0], case .text(let name) = row[1], case .text(let keys) = row[2],
                  case .text(let sql) = row[3] else { continue }
            let table = CatalogShardedTable(name: name, keyColumns: keys.split(separator: ",").map(String.init), createSQL: sql)
            catalog.shardedTables[db, default: [:]][name.lowercased()] = table
        }
        for row in results[14].rows {
            guard row.count == 3, case .text(let db) = row[0], case .text(let name) = row[1], case .blob(let bytes) = row[2],
                  let points = ValueListCoding.decode(bytes) else { continue }
            catalog.shardedTables[db]?[name.lowercased()]?.splitPoints = points
        }
        for row in results[16].rows {
            guard row.count == 3, case .text(let db) = row[0], case .text(let name) = row[1], case .text(let text) = row[2] else { continue }
            let shards = text.split(separator: ",").compactMap { Int($0) }
            catalog.shardedTables[db]?[name.lowercased()]?.rangePlacement = shards
        }
        var byGroup: [GroupID: String] = [:]
        for db in catalog.databases.values { byGroup[db.group] = db.name }
        for row in results[15].rows {
            guard row.count == 3, case .integer(let g) = row[0], case .integer(let n) = row[1], case .text(let v) = row[2],
                  let state = ReplicaState(rawValue: v), let name = byGroup[GroupID(g)] else { continue }
            // A row whose replica is gone (its node removed mid-move) means nothing.
            guard catalog.databases[name]?.replicas.contains(NodeID(bitPattern: n)) == true else { continue }
            catalog.databases[name]?.moving[NodeID(bitPattern: n)] = state
        }
        return (catalog, index)
    }
}
