import CairnRaft
import CairnSQLite
import CairnStorage
import CairnTransport
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix


public enum RuntimeError: Error, Equatable, CustomStringConvertible {
    case notLeader(leader: NodeID)
    case unknownGroup(GroupID)
    case timedOut(String)
    /// The entry at the proposal's index is a different one: leadership changed and it was lost.
    case proposalLost
    /// A snapshot replaced the log before this node could tell whether the write took effect.
    case outcomeUnknown
    /// A stale read was refused because this node has not heard from a leader recently enough.
    case tooStale(lastContactMillis: Int64?, freshnessMillis: Int64)
    case raft(String)
    case shutDown
    /// This node stopped taking part after a storage failure (a full disk, an I/O error); it needs an operator.
    case failed(String)
    /// The group's database was dropped by an entry ordered before this request.
    case databaseDropped
    /// The write's encoded entry is larger than any entry the log takes.
    case entryTooLarge(bytes: Int, limit: Int)

    public var description: String {
        switch self {
        case .notLeader(let l): return l == noNode ? "no leader is known yet; retry shortly" : "not the leader; node \(l) is"
        case .unknownGroup(let g): return "no such group \(g) on this node"
        case .timedOut(let what): return "timed out \(what)"
        case .proposalLost: return "the write was not committed (leadership changed); it is safe to retry"
        case .outcomeUnknown: return "the outcome of the write is unknown (this node installed a snapshot meanwhile); read before retrying"
        case .tooStale(let last, let bound):
            let heard = last.map { "last heard from the leader \($0) ms ago" } ?? "no leader heard from yet"
            return "this node's data may be older than the requested freshness of \(bound) ms (\(heard)); read at the linearizable level or from the leader"
        case .raft(let m): return m
        case .shutDown: return "the node is shutting down"
        case .failed(let why): return "this node stopped serving after a storage failure: \(why)"
        case .databaseDropped: return "the database was dropped"
        case .entryTooLarge(let bytes, let limit):
            return "the write is \(bytes) bytes once encoded, over the limit of \(limit) bytes for one entry; send it in smaller requests"
        }
    }
}

public enum ReadConsistency: Sendable, Equatable {
    /// ReadIndex: confirmed with a quorum, then served once this node has applied that far.
    case linearizable
    /// This node's applied state, if it heard from the leader within `freshnessMillis`: possibly behind,
    /// by about that much.
    case stale(freshnessMillis: Int64)
    /// This node's applied state, whatever it is.
    case local
}

public struct RuntimeConfig: Sendable {
    public var nodeID: NodeID
    public var dataDirectory: String
    public var raftAddress: PeerAddress
    public var tickMillis: Int64 = 50
    public var electionTimeoutTicks = 10
    public var requestTimeoutMillis: Int64 = 10_000
    /// Entries applied between snapshots of a group's database; each snapshot lets the log be compacted.
    public var snapshotEveryEntries: LogIndex = 10_000
    /// Bytes of entries applied between snapshots, whatever their count: the log keeps its entries in
    /// memory until compacted, so this bounds that memory when entries are large (a load).
    public var snapshotEveryBytes = 64 << 20
    /// Mutual TLS between nodes, when set.
    public var transportTLS: TransportTLS?
    /// Without `transportTLS`: carry no Raft traffic until `transport.useTLS` (never plaintext).
    public var requireTransportTLS = false
    /// Size of the pieces a snapshot file is streamed in.
    public var snapshotChunkBytes = 1 << 20
    /// The most one snapshot stream sends per second: a replica being moved or rebuilt copies its
    /// group at this pace, leaving the disk and the network to the foreground load.
    public var snapshotBytesPerSecond = 32 << 20
    /// Snapshot streams this node sends at once, to all peers together; more wait their turn, in
    /// the order Raft asked for them. Placement keeps moves to one a node; this bounds the rest
    /// (followers Raft catches up by snapshot, such as a node back from a long absence).
    public var maxSnapshotStreamsOut = 1
    /// Snapshot streams this node receives at once, from all leaders together: a node back from a long
    /// absence needs one for many groups, led from many nodes. A stream beyond it is refused at its
    /// first piece and its leader tries again after `snapshotBusyRetryMillis`.
    public var maxSnapshotStreamsIn = 1
    public var snapshotBusyRetryMillis: Int64 = 500
    /// Ticks a leader's group must be idle (everything replicated, applied, nothing pending) before it
    /// stops ticking and heartbeating; 0 never quiesces.
    public var quiesceAfterTicks = 20
    /// The largest entry a write may become: every node must be able to carry it to every other in one
    /// message (see `checkLimits`).
    public var maxEntryBytes = 20 << 20
    /// Threads that run queries, beside the apply loop: one slow query never delays writes, and only
    /// as many slow queries as there are threads delay other queries.
    public var readThreads = 4
    /// A query statement running longer than this is interrupted, unless its request says otherwise.
    public var readTimeoutMillis: Int64 = 10_000
    /// How often the leader of each group asks its replicas for digests and compares them (0: only on
    /// demand, through `checkConsistency`).
    public var consistencyCheckMillis: Int64 = 600_000

    /// How long a follower may hold committed entries back, to apply several Raft passes' entries
    /// in one SQLite transaction (`NodeRuntime.holdBack`); 0 applies each pass's at once. A read on
    /// the follower, at any level, has them applied first, so it sees what it saw without the delay.
    public var followerApplyDelayMillis: Int64 = 20
    /// A follower applies what it holds back once it holds this many entries, or bytes, whatever the delay.
    public var maxHeldApplyEntries = 256
    public var maxHeldApplyBytes = 4 << 20

    /// Group commit under load (`GroupCommitWindow`): once a sync of the log carried at least
    /// `groupCommitMinEntries` entries, the next pass that writes waits until as long as that sync took
    /// has passed since it ended, at most `groupCommitMaxWaitMicros` (0: passes never wait).
    public var groupCommitMaxWaitMicros: Int64 = 1_000
    public var groupCommitMinEntries = 4

    /// The longest a pass waits, as used: a pass held for its window holds heartbeats and votes too,
    /// so it never waits more than a tenth of a tick, and no election timer notices it (a short
    /// `--tick-ms` shortens the window rather than refusing to start).
    var groupCommitMaxWaitNanos: UInt64 { UInt64(max(0, min(groupCommitMaxWaitMicros, tickMillis * 100))) * 1_000 }

    public init(nodeID: NodeID, dataDirectory: String, raftAddress: PeerAddress) {
        self.nodeID = nodeID
        self.dataDirectory = dataDirectory
        self.raftAddress = raftAddress
    }

    /// How much a Raft message adds to the entries it carries, at most (header, one entry's framing).
    static let messageOverheadBytes = 4096

    /// The relationships between limits that replication relies on: an entry the log accepts must fit
    /// one message, a peer's send queue and one frame, or no follower would ever receive it while the
    /// leader kept leading and every later write timed out.
    func checkLimits(transport: TransportConfig) {
        precondition(maxEntryBytes > 0 && readThreads > 0 && readTimeoutMillis > 0, "limits must be positive")
        precondition(followerApplyDelayMillis >= 0 && followerApplyDelayMillis <= 60_000, "a follower holds entries back for at most a minute")
        precondition(maxHeldApplyEntries > 0 && maxHeldApplyBytes > 0, "held-back entries must be bounded")
        precondition(groupCommitMinEntries >= 1, "a sync must carry an entry before the next pass waits")
        precondition(groupCommitMaxWaitMicros >= 0, "a pass cannot wait less than not at all")
        precondition(snapshotBytesPerSecond >= snapshotChunkBytes, "a snapshot stream must be allowed at least one chunk a second")
        precondition(maxSnapshotStreamsOut >= 1, "a node must be able to send a snapshot")
        precondition(maxSnapshotStreamsIn >= 1 && snapshotBusyRetryMillis > 0, "a node must be able to receive a snapshot")
        precondition(maxEntryBytes + Self.messageOverheadBytes <= transport.maxQueuedBytesPerPeer,
                     "an entry of maxEntryBytes must fit a peer's send queue")
        precondition(transport.maxQueuedBytesPerPeer + Self.messageOverheadBytes <= WireFormat.maxFrameBytes,
                     "a peer's whole send queue must fit one frame")
        precondition(snapshotChunkBytes + Self.messageOverheadBytes <= transport.maxQueuedBytesPerPeer,
                     "a snapshot chunk must fit a peer's send queue")
    }
}
