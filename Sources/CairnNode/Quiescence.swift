import CairnRaft
import CairnSQLite
import CairnStorage
import CairnTransport
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Ticking, and the quiescence of idle groups (`tickAll`), with the node-to-node liveness pings.
extension NodeRuntime {
    /// Envelopes to this group id are node-level liveness pings, not Raft messages.
    static let livenessGroup = GroupID.max

    /// Ticks every awake group, and quiesces or wakes groups.
    ///
    /// A node may host hundreds of groups, most of them idle; heartbeating each would cost
    /// groups x peers messages every tick. A leader whose group has been idle for
    /// `quiesceAfterTicks` sends one last heartbeat flagged *quiesce* and stops ticking it; followers
    /// that are fully caught up stop ticking it too. Not ticking never affects safety (Raft does not
    /// depend on time for it); for liveness, any message or client request for the group wakes it,
    /// and a follower wakes its group when the leader's node goes silent: every node pings each peer
    /// once a tick, whatever the number of groups.
    func tickAll() {
        let side = raftState.value
        side.ticks += 1
        let now = DispatchTime.now().uptimeNanoseconds
        let silentNanos = UInt64(config.electionTimeoutTicks) * UInt64(config.tickMillis) * 1_000_000
        var peers = Set<NodeID>()
        // Once a tick every group is a candidate for the next Ready pass (see `RaftSide.touched`).
        side.touched.formUnion(side.groups.keys)
        for id in side.groups.keys.sorted() {
            let g = side.groups[id]!
            peers.formUnion(g.node.status.config.members)
            if side.quiesced.contains(id) {
                let lead = g.node.lead
                let leaderSilent = lead != config.nodeID && (lead == noNode || now &- (side.lastHeard[lead] ?? 0) > silentNanos)
                guard leaderSilent else { continue }
                wake(id)
            }
            g.node.tick()
            guard config.quiesceAfterTicks > 0, g.node.role == .leader else { continue }
            if isIdle(id, g) {
                side.idleTicks[id, default: 0] += 1
                if side.idleTicks[id]! >= config.quiesceAfterTicks { quiesce(id, g) }
            } else {
                side.idleTicks[id] = 0
            }
        }
        peers.remove(config.nodeID)
        // The ping carries how many groups this node leads and, once a second or when it changed,
        // which (for leader balancing, `LeaderBalance`).
        let led = side.groups.filter { $0.value.node.role == .leader }.keys.sorted()
        side.ticksSinceLedGroupsListed += 1
        var list: [Entry] = []
        if (led != side.ledGroupsListed || side.ticksSinceLedGroupsListed >= Self.ledGroupsListEveryTicks) && led.count <= Self.maxLedGroupsListed {
            list = [Entry(term: 0, index: 0, data: Self.encodeLedGroups(led))]
            side.ledGroupsListed = led
            side.ticksSinceLedGroupsListed = 0
        }
        for peer in peers {
            transport.send([Envelope(group: Self.livenessGroup, message: Message(kind: .heartbeat, from: config.nodeID, to: peer,
                                                                                 entries: list, context: UInt64(led.count)))],
                           to: peer)
        }
    }

    /// Everything is replicated to every member, committed and applied, and no read or transfer is pending.
    func isIdle(_ id: GroupID, _ g: Group) -> Bool {
        let s = g.node.status
        guard s.commit == s.lastIndex, s.applied == s.commit, s.configIndex <= s.commit, s.leadTransferee == noNode,
              raftState.value.readsToAsk[id] == nil, raftState.value.writesToPropose[id] == nil,
              !raftState.value.pendingReads.values.contains(where: { $0.group == id }) else { return false }
        return s.config.members.allSatisfy { $0 == config.nodeID || s.progress[$0]?.match == s.lastIndex }
    }

    func quiesce(_ id: GroupID, _ g: Group) {
        let side = raftState.value
        side.idleTicks[id] = 0
        side.quiesced.insert(id)
        // The flag rides on the heartbeats this tick produced (`send`): they carry the commit index
        // followers check against, and nothing sent after them wakes the followers again.
        side.quiescing.insert(id)
    }

    func wake(_ id: GroupID) {
        let side = raftState.value
        side.quiesced.remove(id)
        side.idleTicks[id] = 0
    }
}
