import CairnPlacement
import CairnSQLite
import Foundation

/// Settings an operator changes while the cluster runs (`PUT /v1/cluster/settings`), kept in the
/// catalog (`setting:<name>`) so every node uses the same; one never set is the value of the flag the
/// node started with (the founding node's, for the replication factor).
public struct ClusterSettings: Sendable, Equatable {
    public var replicationFactor: Int
    public var suspectAfterMillis: Int64
    public var deadAfterMillis: Int64
    public var snapshotMiBPerSecond: Int
    /// 0: shards never split by size.
    public var shardSplitBytes: Int
    /// A hash-sharded database's shards double while shards × RF / nodes is under this (0: never).
    public var minReplicasPerNode: Int
    /// A shard whose leader serves this many operations a second for `shardSplitHotSeconds` splits
    /// where its writes' keys divide (0: never by load).
    public var shardSplitOpsPerSecond: Int
    public var shardSplitHotSeconds: Int

    public init(replicationFactor: Int, suspectAfterMillis: Int64, deadAfterMillis: Int64, snapshotMiBPerSecond: Int, shardSplitBytes: Int,
                minReplicasPerNode: Int, shardSplitOpsPerSecond: Int, shardSplitHotSeconds: Int) {
        self.replicationFactor = replicationFactor
        self.suspectAfterMillis = suspectAfterMillis
        self.deadAfterMillis = deadAfterMillis
        self.snapshotMiBPerSecond = snapshotMiBPerSecond
        self.shardSplitBytes = shardSplitBytes
        self.minReplicasPerNode = minReplicasPerNode
        self.shardSplitOpsPerSecond = shardSplitOpsPerSecond
        self.shardSplitHotSeconds = shardSplitHotSeconds
    }

    public var liveness: LivenessSettings {
        LivenessSettings(suspectAfterNanos: UInt64(suspectAfterMillis) * 1_000_000, deadAfterNanos: UInt64(deadAfterMillis) * 1_000_000)
    }

    /// The names, as the API spells them.
    public static let names = ["replication_factor", "suspect_after_ms", "dead_after_ms", "snapshot_mib_per_second", "shard_split_bytes", "min_replicas_per_node",
                              "shard_split_ops_per_second", "shard_split_hot_seconds"]

    public var values: [(String, Int64)] {
        [("replication_factor", Int64(replicationFactor)), ("suspect_after_ms", suspectAfterMillis), ("dead_after_ms", deadAfterMillis),
         ("snapshot_mib_per_second", Int64(snapshotMiBPerSecond)), ("shard_split_bytes", Int64(shardSplitBytes)),
         ("min_replicas_per_node", Int64(minReplicasPerNode)), ("shard_split_ops_per_second", Int64(shardSplitOpsPerSecond)),
         ("shard_split_hot_seconds", Int64(shardSplitHotSeconds))]
    }

    /// These settings with `overrides` (catalog values by name) in place of the defaults.
    func with(_ overrides: [String: Int64]) -> ClusterSettings {
        var s = self
        for (name, v) in overrides {
            switch name {
            case "replication_factor": s.replicationFactor = Int(v)
            case "suspect_after_ms": s.suspectAfterMillis = v
            case "dead_after_ms": s.deadAfterMillis = v
            case "snapshot_mib_per_second": s.snapshotMiBPerSecond = Int(v)
            case "shard_split_bytes": s.shardSplitBytes = Int(v)
            case "min_replicas_per_node": s.minReplicasPerNode = Int(v)
            case "shard_split_ops_per_second": s.shardSplitOpsPerSecond = Int(v)
            case "shard_split_hot_seconds": s.shardSplitHotSeconds = Int(v)
            default: break
            }
        }
        return s
    }

    /// Why `self` cannot be the cluster's settings, or nil.
    public var problem: String? {
        if replicationFactor < 1 || replicationFactor > 7 { return "replication_factor must be from 1 to 7" }
        if suspectAfterMillis < 100 { return "suspect_after_ms must be at least 100" }
        if deadAfterMillis < suspectAfterMillis { return "dead_after_ms must be at least suspect_after_ms" }
        if snapshotMiBPerSecond < 1 || snapshotMiBPerSecond > 100_000 { return "snapshot_mib_per_second must be from 1 to 100000" }
        if shardSplitBytes != 0 && shardSplitBytes < 65_536 { return "shard_split_bytes must be 0 (never by size) or at least 65536" }
        if minReplicasPerNode < 0 || minReplicasPerNode > 1_000 { return "min_replicas_per_node must be from 0 (shards never double) to 1000" }
        if shardSplitOpsPerSecond < 0 || shardSplitOpsPerSecond > 10_000_000 {
            return "shard_split_ops_per_second must be from 0 (never by load) to 10000000"
        }
        if shardSplitHotSeconds < 1 || shardSplitHotSeconds > 3_600 { return "shard_split_hot_seconds must be from 1 to 3600" }
        return nil
    }

    /// The catalog statements that make `changes` (name → value) the cluster's settings, checked
    /// against `current` as a whole; throws a message naming what is wrong.
    public static func change(_ changes: [String: Int64], current: ClusterSettings) throws -> [SQLStatement] {
        if let unknown = changes.keys.sorted().first(where: { !names.contains($0) }) {
            throw ClusterError.invalid("no setting named \"\(unknown)\"; the settings are \(names.joined(separator: ", "))")
        }
        if let problem = current.with(changes).problem { throw ClusterError.invalid(problem) }
        return changes.sorted { $0.key < $1.key }.map { name, value in
            // The replication factor keeps the key it always had (founding nodes write it).
            let key = name == "replication_factor" ? "replication_factor" : "setting:\(name)"
            return SQLStatement("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)", [.text(key), .integer(value)])
        }
    }
}

extension Catalog {
    /// The cluster's settings: the catalog's where set, else `defaults` (this node's flags).
    public func settings(defaults: ClusterSettings) -> ClusterSettings {
        var s = defaults.with(settingOverrides)
        if let rf = replicationFactor { s.replicationFactor = rf }
        return s
    }
}

extension ClusterNode {
    /// This node's flags, as settings (what applies where the catalog sets none).
    public var settingDefaults: ClusterSettings {
        ClusterSettings(replicationFactor: config.replicationFactor, suspectAfterMillis: Int64(config.liveness.suspectAfterNanos / 1_000_000),
                        deadAfterMillis: Int64(config.liveness.deadAfterNanos / 1_000_000),
                        snapshotMiBPerSecond: config.snapshotBytesPerSecond >> 20, shardSplitBytes: config.shardSplitBytes,
                        minReplicasPerNode: config.minReplicasPerNode, shardSplitOpsPerSecond: config.shardSplitOpsPerSecond,
                        shardSplitHotSeconds: config.shardSplitHotSeconds)
    }

    /// The settings in force, by this node's catalog copy.
    public var settings: ClusterSettings { catalog.settings(defaults: settingDefaults) }
}
