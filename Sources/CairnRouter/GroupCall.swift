import CairnNode
import CairnRaft
import CairnSQLite

/// What one node's router asks of a node that holds a group: run this there, now. The node asked
/// never forwards it again; it answers, and the asking router decides where to try next.
struct GroupCall: Sendable {
    enum Operation: UInt8, Sendable {
        /// Commit the command through the group's log (this node must lead the group).
        case execute = 1
        /// Read at `consistency`.
        case query = 2
        /// Read if every statement only reads (judged against this node's schema), else commit.
        case request = 3
        /// `request` for a caller without the right to write: a write is refused (403), not committed.
        case readingRequest = 4
        /// Commit the command once no prepared transaction holds the group, in turn with the others
        /// that wait there (`NodeRuntime.executeInTurn`), waiting at most `statementTimeoutNanos`.
        case executeInTurn = 5
    }

    var operation: Operation
    var group: GroupID
    var consistency: ReadConsistency = .linearizable
    /// Each read statement is interrupted after this long (0: the node's default); for
    /// `executeInTurn`, how long the write may wait for its turn.
    var statementTimeoutNanos: UInt64 = 0
    /// For `executeInTurn`: how long ago its request began (milliseconds), its place in the line.
    /// Carried where a stale read's freshness goes (a write is read at no level).
    var turnAgeMillis: UInt64 = 0
    /// For a write, the entry exactly as it will be committed (timestamp and seed chosen by the node
    /// the client asked); for a read, the statements.
    var command: SQLCommand

    /// Only to the group's voters (a read may also go to a read replica).
    var isWrite: Bool { operation == .execute || operation == .executeInTurn }
    /// Whether serving it may commit an entry: if so, it is never sent twice once its outcome is unknown.
    var mayWrite: Bool { isWrite || operation == .request }

    func encoded() -> [UInt8] {
        var out: [UInt8] = [operation.rawValue]
        ByteCoding.append(group, to: &out)
        switch consistency {
        case .linearizable: out.append(0); ByteCoding.append(turnAgeMillis, to: &out)
        case .local: out.append(1); ByteCoding.append(UInt64(0), to: &out)
        case .stale(let ms): out.append(2); ByteCoding.append(UInt64(bitPattern: ms), to: &out)
        }
        ByteCoding.append(statementTimeoutNanos, to: &out)
        out += command.encoded()
        return out
    }

    init(operation: Operation, group: GroupID, consistency: ReadConsistency = .linearizable, statementTimeoutNanos: UInt64 = 0,
         command: SQLCommand) {
        self.operation = operation
        self.group = group
        self.consistency = consistency
        self.statementTimeoutNanos = statementTimeoutNanos
        self.command = command
    }

    /// Nil for bytes that are not a call (another node's bug, or a hostile one's): answered as such.
    init?(decoding b: [UInt8]) {
        guard let first = b.first, let operation = Operation(rawValue: first) else { return nil }
        var c = 1
        guard let group = ByteCoding.readUInt64(b, &c), c < b.count else { return nil }
        let kind = b[c]
        c += 1
        // A timeout beyond Int64's range would overflow a deadline computed from it.
        guard let freshness = ByteCoding.readUInt64(b, &c), let timeout = ByteCoding.readUInt64(b, &c), timeout <= UInt64(Int64.max) else { return nil }
        switch kind {
        case 0:
            consistency = .linearizable
            if operation == .executeInTurn { turnAgeMillis = freshness }
        case 1: consistency = .local
        case 2:
            guard Int64(bitPattern: freshness) > 0 else { return nil }
            consistency = .stale(freshnessMillis: Int64(bitPattern: freshness))
        default: return nil
        }
        guard let command = SQLCommand(decoding: Array(b[c...])) else { return nil }
        self.operation = operation
        self.group = group
        self.statementTimeoutNanos = timeout
        self.command = command
    }
}

/// A node's answer to a `GroupCall`.
enum GroupAnswer: Sendable, Equatable {
    /// Served: the results, the log index they reflect, and whether the call wrote.
    case done(results: [StatementResult], index: LogIndex, wrote: Bool)
    /// This node does not lead the group; `leader` does, if known (`noNode` otherwise).
    case notLeader(NodeID)
    /// This node holds no copy of the group (not yet, or no longer).
    case notHere
    /// Nothing was committed and nothing will be: trying again cannot apply it twice.
    case notCommitted(String)
    /// The write was proposed and then lost track of: it may or may not have been applied.
    case outcomeUnknown(String)
    /// A final answer to give the client: the database was dropped, the entry is too large, a stale
    /// read is too stale, the node failed.
    case failed(RuntimeError)
    /// A final refusal with an HTTP status (a malformed call, an answer too large to send).
    case refused(status: Int, message: String)

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        switch self {
        case .done(let results, let index, let wrote):
            out.append(wrote ? 1 : 0)
            ByteCoding.append(index, to: &out)
            out += ResultCoding.encode(results)
        case .notLeader(let leader):
            out.append(2)
            ByteCoding.append(leader, to: &out)
        case .notHere:
            out.append(3)
        case .notCommitted(let why):
            out.append(4)
            Self.append(why, to: &out)
        case .outcomeUnknown(let why):
            out.append(5)
            Self.append(why, to: &out)
        case .refused(let status, let message):
            out.append(6)
            ByteCoding.append(UInt32(clamping: status), to: &out)
            Self.append(message, to: &out)
        case .failed(let error):
            out.append(7)
            switch error {
            case .databaseDropped: out.append(0)
            case .entryTooLarge(let bytes, let limit):
                out.append(1)
                ByteCoding.append(UInt64(bytes), to: &out)
                ByteCoding.append(UInt64(limit), to: &out)
            case .tooStale(let last, let freshness):
                out.append(2)
                ByteCoding.append(UInt64(bitPattern: last ?? -1), to: &out)
                ByteCoding.append(UInt64(bitPattern: freshness), to: &out)
            case .failed(let why):
                out.append(3)
                Self.append(why, to: &out)
            default:
                // Not sent as `failed` (see `init(_:write:)`); said in words if it ever is.
                out.append(3)
                Self.append(error.description, to: &out)
            }
        }
        return out
    }

    init?(decoding b: [UInt8]) {
        guard let kind = b.first else { return nil }
        var c = 1
        switch kind {
        case 0, 1:
            guard let index = ByteCoding.readUInt64(b, &c), let results = ResultCoding.decode(Array(b[c...])) else { return nil }
            self = .done(results: results, index: index, wrote: kind == 1)
        case 2:
            guard let leader = ByteCoding.readUInt64(b, &c), c == b.count else { return nil }
            self = .notLeader(leader)
        case 3:
            guard b.count == 1 else { return nil }
            self = .notHere
        case 4:
            guard let why = Self.string(b, &c) else { return nil }
            self = .notCommitted(why)
        case 5:
            guard let why = Self.string(b, &c) else { return nil }
            self = .outcomeUnknown(why)
        case 6:
            guard let status = ByteCoding.readUInt32(b, &c), (400..<600).contains(status), let message = Self.string(b, &c) else { return nil }
            self = .refused(status: Int(status), message: message)
        case 7:
            guard c < b.count else { return nil }
            let which = b[c]
            c += 1
            switch which {
            case 0:
                guard c == b.count else { return nil }
                self = .failed(.databaseDropped)
            case 1:
                guard let bytes = ByteCoding.readUInt64(b, &c), let limit = ByteCoding.readUInt64(b, &c), c == b.count,
                      let bytes = Int(exactly: bytes), let limit = Int(exactly: limit) else { return nil }
                self = .failed(.entryTooLarge(bytes: bytes, limit: limit))
            case 2:
                guard let last = ByteCoding.readUInt64(b, &c), let freshness = ByteCoding.readUInt64(b, &c), c == b.count else { return nil }
                let lastMillis = Int64(bitPattern: last)
                self = .failed(.tooStale(lastContactMillis: lastMillis < 0 ? nil : lastMillis, freshnessMillis: Int64(bitPattern: freshness)))
            case 3:
                guard let why = Self.string(b, &c) else { return nil }
                self = .failed(.failed(why))
            default: return nil
            }
        default: return nil
        }
    }

    /// The answer for an error the runtime threw while serving a call.
    init(_ error: any Error, write: Bool) {
        guard let e = error as? RuntimeError else {
            // Not one the runtime names (a pool shut down, a cancelled task): said once, not retried
            // until the deadline.
            self = write ? .outcomeUnknown("\(error)") : .refused(status: 503, message: "\(error)")
            return
        }
        switch e {
        // Thrown before anything was proposed (a write proposed and then lost says timedOut).
        case .notLeader(let leader): self = .notLeader(leader)
        case .unknownGroup: self = .notHere
        case .proposalLost, .raft: self = .notCommitted(e.description)
        // A shutdown or a storage failure fails writes that may already be on a quorum.
        case .shutDown, .timedOut, .outcomeUnknown: self = write ? .outcomeUnknown(e.description) : .notCommitted(e.description)
        case .failed: self = write ? .outcomeUnknown(e.description) : .failed(e)
        case .databaseDropped, .entryTooLarge, .tooStale: self = .failed(e)
        }
    }

    private static func append(_ s: String, to out: inout [UInt8]) {
        let bytes = Array(s.utf8.prefix(4096))
        ByteCoding.append(UInt32(bytes.count), to: &out)
        out += bytes
    }

    private static func string(_ b: [UInt8], _ c: inout Int) -> String? {
        guard let n = ByteCoding.readUInt32(b, &c), c + Int(n) == b.count else { return nil }
        defer { c += Int(n) }
        return String(decoding: b[c..<(c + Int(n))], as: UTF8.self)
    }
}
