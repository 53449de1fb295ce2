import CairnRaft

/// Who leads which group, as one node sees it, for leader balancing (`LeaderBalance`): the
/// node-to-node pings carry how many groups their sender leads and, once a second or when it
/// changed, which.
public struct LeaderPicture: Sendable {
    public var leaders: [GroupID: NodeID]
    public var known: Set<NodeID>
}

extension NodeRuntime {
    static let maxLedGroupsBelieved = 1 << 20
    /// Pings list the groups their sender leads once every this many ticks, and whenever the list changed.
    static let ledGroupsListEveryTicks = 20
    /// A node leading more groups than this pings its count only (a list would outgrow a ping):
    /// leader balancing then leaves it out of its plan (`leaderPicture`).
    static let maxLedGroupsListed = 16_384

    static func encodeLedGroups(_ groups: [GroupID]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(groups.count * 8)
        for g in groups { withUnsafeBytes(of: g.littleEndian) { out.append(contentsOf: $0) } }
        return out
    }

    /// A list from a peer's ping; nil (ignored) unless whole 8-byte ids, within the limit, ascending.
    static func decodeLedGroups(_ data: [UInt8]) -> [GroupID]? {
        guard data.count % 8 == 0, data.count / 8 <= maxLedGroupsListed else { return nil }
        var out: [GroupID] = []
        out.reserveCapacity(data.count / 8)
        for i in stride(from: 0, to: data.count, by: 8) {
            var v: UInt64 = 0
            for b in 0..<8 { v |= UInt64(data[i + b]) << (8 * b) }
            guard out.last.map({ $0 < v }) ?? true else { return nil }
            out.append(v)
        }
        return out
    }

    /// Each group's leader as this node sees it, for leader balancing: its own groups exactly (those
    /// it leads, and the leader it follows in the others), and the rest as its peers' latest pings
    /// listed them (a list may be a second old; where two claim a group, the lower id is taken, and
    /// the transfer it leads to is checked by the group's real leader before it is made). `known`:
    /// this node and the peers whose latest list matches the count their latest ping gave (a peer
    /// leading too many groups to list, or whose list went stale, is left out of the plan rather
    /// than taken to lead nothing).
    public func leaderPicture() async throws -> LeaderPicture {
        try await raftLoop.submit {
            let side = self.raftState.value, me = self.config.nodeID
            var picture = LeaderPicture(leaders: [:], known: [me])
            for (peer, groups) in side.peerLedGroups.sorted(by: { $0.key > $1.key }) where side.peerLeaderCounts[peer] == groups.count {
                picture.known.insert(peer)
                for g in groups { picture.leaders[g] = peer }
            }
            for (id, g) in side.groups {
                if g.node.role == .leader {
                    picture.leaders[id] = me
                } else if g.node.lead != noNode {
                    picture.leaders[id] = g.node.lead
                } else if picture.leaders[id] == me {
                    picture.leaders[id] = nil
                }
            }
            return picture
        }.get()
    }

    /// How many groups each peer leads, as its latest ping said, and this node's own count.
    public func leaderCounts() async throws -> [NodeID: Int] {
        try await raftLoop.submit {
            var counts = self.raftState.value.peerLeaderCounts
            counts[self.config.nodeID] = self.raftState.value.groups.values.count { $0.node.role == .leader }
            return counts
        }.get()
    }
}
