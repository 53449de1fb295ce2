/// What a user may do. Cluster-wide permissions are rqlite's; `read`, `write` and `admin` apply to one
/// database (or to every database, granted on `*`).
public enum Permission: String, Sendable, CaseIterable, Codable {
    case all, execute, query, load, backup, status, ready, join, remove
    case leaderOps = "leader-ops"
    case read, write, admin

    /// Permissions granted per database.
    public var isDatabaseLevel: Bool { self == .read || self == .write || self == .admin }
}

/// One grant: a permission, on a database for the database-level ones ("" otherwise, "*" for all).
public struct Grant: Sendable, Hashable, Codable {
    public var permission: Permission
    public var database: String

    public init(_ permission: Permission, database: String = "") {
        self.permission = permission
        self.database = permission.isDatabaseLevel ? (database.isEmpty ? "*" : database) : ""
    }
}

/// The name that stands for everyone, signed in or not (as in rqlite): grants to it apply to all.
public let everyone = "*"

/// A user's grants, and whether they allow an action.
public struct Grants: Sendable, Equatable {
    public var grants: Set<Grant>

    public init(_ grants: Set<Grant>) { self.grants = grants }

    public func allows(_ permission: Permission, database: String? = nil) -> Bool {
        if grants.contains(Grant(.all)) { return true }
        if !permission.isDatabaseLevel && grants.contains(Grant(permission)) { return true }
        guard let database else { return permission.isDatabaseLevel && grants.contains { $0.permission == permission } }
        // Database-level: admin implies write implies read; rqlite's execute/query stand for write/read.
        let implied: [Permission]
        switch permission {
        case .read: implied = [.read, .write, .admin]
        case .write: implied = [.write, .admin]
        case .admin: implied = [.admin]
        case .query: implied = [.read, .write, .admin]
        case .execute: implied = [.write, .admin]
        default: implied = []
        }
        if permission == .read && grants.contains(Grant(.query)) { return true }
        if permission == .write && grants.contains(Grant(.execute)) { return true }
        return implied.contains { p in grants.contains(Grant(p, database: database)) || grants.contains(Grant(p, database: "*")) }
    }
}
