import CairnNode
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

public struct CatalogDatabase: Sendable, Equatable {
    public var name: String
    public var group: GroupID
    /// Voting nodes meant to hold the database (read replicas hold every database besides these).
    public var replicas: [NodeID]
    /// The replicas that created the group together, with `founders` as its first voters.
    public var founders: [NodeID]
}

/// What this node's copy of the catalog says. Read locally: it may be slightly behind the leader's,
/// which the controller tolerates because every decision it takes is re-checked on the next pass.
public struct Catalog: Sendable {
    public var nodes: [NodeID: CatalogNode] = [:]
    public var databases: [String: CatalogDatabase] = [:]
    public var exists = false

    public var activeNodes: [CatalogNode] { nodes.values.filter { !$0.removed }.sorted { $0.id < $1.id } }
    public var activeVoters: [CatalogNode] { activeNodes.filter(\.voter) }
    public var readReplicas: [CatalogNode] { activeNodes.filter { !$0.voter } }

    public func database(group: GroupID) -> CatalogDatabase? { databases.values.first { $0.group == group } }

    /// Members `group` should have: voters, and learners (read replicas).
    public func desiredMembers(of group: GroupID) -> (voters: Set<NodeID>, learners: Set<NodeID>) {
        let learners = Set(readReplicas.map(\.id))
        if group == metadataGroup { return (Set(activeVoters.map(\.id)), learners) }
        guard let db = database(group: group) else { return ([], []) }
        let active = Set(activeVoters.map(\.id))
        return (Set(db.replicas).intersection(active), learners)
    }

    static let schema: [SQLStatement] = [
        SQLStatement("""
            CREATE TABLE IF NOT EXISTS nodes(id INTEGER PRIMARY KEY, raft_addr TEXT NOT NULL, http_addr TEXT NOT NULL,
                voter INTEGER NOT NULL, removed INTEGER NOT NULL DEFAULT 0, updated_ms INTEGER NOT NULL)
            """),
        SQLStatement("CREATE TABLE IF NOT EXISTS databases(name TEXT PRIMARY KEY, group_id INTEGER NOT NULL UNIQUE, created_ms INTEGER NOT NULL)"),
        SQLStatement("""
            CREATE TABLE IF NOT EXISTS replicas(group_id INTEGER NOT NULL, node_id INTEGER NOT NULL, founder INTEGER NOT NULL,
                PRIMARY KEY(group_id, node_id))
            """),
    ]

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
         SQLStatement("DELETE FROM replicas WHERE node_id = ?", [.integer(Int64(bitPattern: id))])]
    }

    /// A new database in the next free group, founded by `founders`.
    static func createDatabase(_ name: String, founders: [NodeID]) -> [SQLStatement] {
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

    static func addReplica(group: GroupID, node: NodeID) -> [SQLStatement] {
        [SQLStatement("INSERT OR IGNORE INTO replicas(group_id, node_id, founder) VALUES(?, ?, 0)",
                      [.integer(Int64(bitPattern: group)), .integer(Int64(bitPattern: node))])]
    }

    /// Reads this node's copy (no consensus round: see the type's comment).
    public static func load(from runtime: NodeRuntime) async throws -> Catalog {
        var catalog = Catalog()
        let tables = try await runtime.query(group: metadataGroup, SQLStatement("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('nodes', 'databases', 'replicas')"), consistency: .local)
        guard case .integer(3) = tables.rows.first?.first else { return catalog }
        catalog.exists = true
        let nodes = try await runtime.query(group: metadataGroup, SQLStatement("SELECT id, raft_addr, http_addr, voter, removed FROM nodes"), consistency: .local)
        for row in nodes.rows {
            guard row.count == 5, case .integer(let id) = row[0], case .text(let raft) = row[1], case .text(let http) = row[2],
                  case .integer(let voter) = row[3], case .integer(let removed) = row[4],
                  let raftAddress = PeerAddress(parsing: raft), let httpAddress = PeerAddress(parsing: http) else { continue }
            let node = CatalogNode(id: NodeID(bitPattern: id), raftAddress: raftAddress, httpAddress: httpAddress,
                                   voter: voter != 0, removed: removed != 0)
            catalog.nodes[node.id] = node
        }
        let dbs = try await runtime.query(group: metadataGroup, SQLStatement("""
            SELECT d.name, d.group_id, r.node_id, r.founder FROM databases d LEFT JOIN replicas r ON r.group_id = d.group_id
            ORDER BY d.group_id, r.node_id
            """), consistency: .local)
        for row in dbs.rows {
            guard row.count == 4, case .text(let name) = row[0], case .integer(let group) = row[1] else { continue }
            var db = catalog.databases[name] ?? CatalogDatabase(name: name, group: GroupID(group), replicas: [], founders: [])
            if case .integer(let node) = row[2] {
                db.replicas.append(NodeID(bitPattern: node))
                if case .integer(1) = row[3] { db.founders.append(NodeID(bitPattern: node)) }
            }
            catalog.databases[name] = db
        }
        return catalog
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
