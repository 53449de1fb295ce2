/// Identifies a Raft peer. `0` means "nobody" (no leader, no vote).
public typealias NodeID = UInt64
public typealias Term = UInt64
public typealias LogIndex = UInt64
/// Identifies a Raft group: a database, or one shard of one. Group 0 is the cluster's catalog.
public typealias GroupID = UInt64

public let noNode: NodeID = 0

public enum EntryKind: UInt8, Sendable, Equatable {
    /// Application data (an empty normal entry is the leader's no-op).
    case normal = 0
    /// `data` holds the complete `ConfState` that takes effect when the entry is appended.
    case confChange = 1
}

public struct Entry: Sendable, Equatable {
    public var term: Term
    public var index: LogIndex
    public var kind: EntryKind
    public var data: [UInt8]

    public init(term: Term, index: LogIndex, kind: EntryKind = .normal, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }

    /// The size counted against byte limits: payload plus a fixed header estimate.
    public var sizeBytes: Int { data.count + 24 }
}

/// State that must be on stable storage before any message that depends on it is sent.
public struct HardState: Sendable, Equatable {
    public var term: Term
    public var vote: NodeID
    public var commit: LogIndex

    public init(term: Term = 0, vote: NodeID = noNode, commit: LogIndex = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }

    public var isEmpty: Bool { term == 0 && vote == noNode && commit == 0 }
}

/// A cluster membership: voters decide elections and commits; learners only receive the log.
public struct ConfState: Sendable, Equatable, Hashable {
    public var voters: [NodeID]
    public var learners: [NodeID]

    public init(voters: [NodeID] = [], learners: [NodeID] = []) {
        self.voters = voters.sorted()
        self.learners = learners.sorted()
        precondition(Set(self.voters).isDisjoint(with: self.learners), "a node is either voter or learner")
        precondition(!self.voters.contains(noNode) && !self.learners.contains(noNode), "node id 0 is reserved")
    }

    public func isVoter(_ id: NodeID) -> Bool { voters.contains(id) }
    public func isLearner(_ id: NodeID) -> Bool { learners.contains(id) }
    public func isMember(_ id: NodeID) -> Bool { isVoter(id) || isLearner(id) }
    public var members: [NodeID] { (voters + learners).sorted() }

    /// Binary form used as the payload of `.confChange` entries and inside snapshots.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(8 + 8 * (voters.count + learners.count))
        ByteCoding.append(UInt32(voters.count), to: &out)
        ByteCoding.append(UInt32(learners.count), to: &out)
        for v in voters { ByteCoding.append(v, to: &out) }
        for l in learners { ByteCoding.append(l, to: &out) }
        return out
    }

    public init?(decoding bytes: [UInt8]) {
        var cursor = 0
        guard let nv = ByteCoding.readUInt32(bytes, &cursor), let nl = ByteCoding.readUInt32(bytes, &cursor),
              bytes.count == 8 + 8 * (Int(nv) + Int(nl)) else { return nil }
        var voters: [NodeID] = []
        var learners: [NodeID] = []
        for _ in 0..<nv { voters.append(ByteCoding.readUInt64(bytes, &cursor)!) }
        for _ in 0..<nl { learners.append(ByteCoding.readUInt64(bytes, &cursor)!) }
        guard Set(voters).isDisjoint(with: learners), !voters.contains(noNode), !learners.contains(noNode) else { return nil }
        self.init(voters: voters, learners: learners)
    }
}

/// A single-server membership change. Each changes the voter set by at most one node,
/// which keeps any two consecutive configurations' majorities overlapping.
public enum ConfChange: Sendable, Equatable {
    /// Adds a non-voting member, or demotes a voter to learner.
    case addLearner(NodeID)
    /// Promotes a learner that has caught up with the leader's commit index.
    case promoteLearner(NodeID)
    /// Removes a voter or learner (the leader may remove itself; it steps down once the change commits).
    case removeNode(NodeID)
}

public struct SnapshotMetadata: Sendable, Equatable {
    public var index: LogIndex
    public var term: Term
    /// The membership in force at `index`.
    public var confState: ConfState

    public init(index: LogIndex = 0, term: Term = 0, confState: ConfState = ConfState()) {
        self.index = index
        self.term = term
        self.confState = confState
    }
}

public struct Snapshot: Sendable, Equatable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]

    public init(metadata: SnapshotMetadata = SnapshotMetadata(), data: [UInt8] = []) {
        self.metadata = metadata
        self.data = data
    }

    public var isEmpty: Bool { metadata.index == 0 }
}

public enum MessageKind: UInt8, Sendable, Equatable, CaseIterable {
    case append
    case appendResponse
    case vote
    case voteResponse
    case preVote
    case preVoteResponse
    case heartbeat
    case heartbeatResponse
    case snapshot
    case readIndex
    case readIndexResponse
    case timeoutNow
}

/// A message between peers. Field meaning depends on `kind`; unused fields stay zero.
public struct Message: Sendable, Equatable {
    public var kind: MessageKind
    public var from: NodeID
    public var to: NodeID
    public var term: Term
    /// append: term of the entry at `index`; vote: candidate's last term; appendResponse reject: hint term.
    public var logTerm: Term
    /// append: index preceding `entries`; vote: candidate's last index; appendResponse: last matched index
    /// (or the rejected index); readIndexResponse: the read index.
    public var index: LogIndex
    public var entries: [Entry]
    public var commit: LogIndex
    public var reject: Bool
    /// appendResponse reject: the follower's suggested index to probe next.
    public var rejectHint: LogIndex
    public var snapshot: Snapshot?
    /// heartbeat(Response): the read round being confirmed; readIndex(Response): the caller's request id;
    /// vote/preVote: 1 when the election was started by a leader transfer; a node-to-node liveness
    /// ping (the runtime's, outside any group): how many groups the sender leads.
    public var context: UInt64

    public init(kind: MessageKind, from: NodeID = noNode, to: NodeID = noNode, term: Term = 0, logTerm: Term = 0,
                index: LogIndex = 0, entries: [Entry] = [], commit: LogIndex = 0, reject: Bool = false,
                rejectHint: LogIndex = 0, snapshot: Snapshot? = nil, context: UInt64 = 0) {
        self.kind = kind
        self.from = from
        self.to = to
        self.term = term
        self.logTerm = logTerm
        self.index = index
        self.entries = entries
        self.commit = commit
        self.reject = reject
        self.rejectHint = rejectHint
        self.snapshot = snapshot
        self.context = context
    }
}

public enum RaftRole: String, Sendable, Equatable {
    case follower, preCandidate, candidate, leader
}

/// A read that became safe: once the state machine has applied `index`, serving `requestID` is linearizable.
public struct ReadState: Sendable, Equatable {
    public var index: LogIndex
    public var requestID: UInt64

    public init(index: LogIndex, requestID: UInt64) {
        self.index = index
        self.requestID = requestID
    }
}

public enum RaftError: Error, Sendable, Equatable, CustomStringConvertible {
    case notLeader(leader: NodeID)
    case proposalDropped(reason: String)
    case confChangeRejected(reason: String)
    case transferRejected(reason: String)
    case storage(String)

    public var description: String {
        switch self {
        case .notLeader(let leader): return leader == noNode ? "not the leader; no leader known" : "not the leader; leader is \(leader)"
        case .proposalDropped(let reason): return "proposal dropped: \(reason)"
        case .confChangeRejected(let reason): return "configuration change rejected: \(reason)"
        case .transferRejected(let reason): return "leader transfer rejected: \(reason)"
        case .storage(let reason): return "storage: \(reason)"
        }
    }
}

/// Little-endian fixed-width integers; shared by the membership and snapshot encodings.
public enum ByteCoding {
    public static func append(_ v: UInt64, to out: inout [UInt8]) {
        var x = v.littleEndian
        withUnsafeBytes(of: &x) { out.append(contentsOf: $0) }
    }

    public static func append(_ v: UInt32, to out: inout [UInt8]) {
        var x = v.littleEndian
        withUnsafeBytes(of: &x) { out.append(contentsOf: $0) }
    }

    public static func readUInt64(_ bytes: [UInt8], _ cursor: inout Int) -> UInt64? {
        guard cursor + 8 <= bytes.count else { return nil }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(bytes[cursor + i]) << (8 * UInt64(i)) }
        cursor += 8
        return v
    }

    public static func readUInt32(_ bytes: [UInt8], _ cursor: inout Int) -> UInt32? {
        guard cursor + 4 <= bytes.count else { return nil }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[cursor + i]) << (8 * UInt32(i)) }
        cursor += 4
        return v
    }
}
