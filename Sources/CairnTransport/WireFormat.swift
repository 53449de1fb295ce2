import CairnRaft

/// A Raft message addressed to one group on the receiving node.
public struct Envelope: Sendable, Equatable {
    public var group: UInt64
    public var message: Message
    /// Set when this envelope carries a piece of a snapshot file; `message` is then the snapshot message
    /// (metadata only) that the receiver steps once the last piece is on its disk.
    public var chunk: SnapshotChunk?
    /// On a leader's heartbeat: the group is idle, and followers in step with it may stop ticking it.
    public var quiesce: Bool
    /// From a follower, on the snapshot message of a stream it will not take now (it receives as many
    /// as it takes at once): the leader stops sending it and tries again later.
    public var snapshotBusy: Bool

    public init(group: UInt64, message: Message, chunk: SnapshotChunk? = nil, quiesce: Bool = false, snapshotBusy: Bool = false) {
        self.group = group
        self.message = message
        self.chunk = chunk
        self.quiesce = quiesce
        self.snapshotBusy = snapshotBusy
    }
}

/// One piece of a snapshot file streamed to a follower; pieces of one transfer arrive in order.
public struct SnapshotChunk: Sendable, Equatable {
    public var offset: UInt64
    public var totalBytes: UInt64
    public var data: [UInt8]
    /// CRC-32C of the whole file; meaningful in the last piece.
    public var fileChecksum: UInt32

    public init(offset: UInt64, totalBytes: UInt64, data: [UInt8], fileChecksum: UInt32 = 0) {
        self.offset = offset
        self.totalBytes = totalBytes
        self.data = data
        self.fileChecksum = fileChecksum
    }

    public var isLast: Bool { offset + UInt64(data.count) == totalBytes }
}

public enum WireError: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    case versionMismatch(ours: UInt16, theirs: UInt16)
    case notCairn

    public var description: String {
        switch self {
        case .malformed(let what): return "malformed frame: \(what)"
        case .versionMismatch(let ours, let theirs): return "peer speaks wire version \(theirs), this node speaks \(ours)"
        case .notCairn: return "peer is not a CairnDB node (bad handshake magic)"
        }
    }
}

/// A request from one node's router to another's, or the answer to one. Calls travel in the frames
/// that carry Raft messages, over the same authenticated connections: forwarding a client's write to
/// its leader costs no HTTP request, no second authentication and no connection of its own. The
/// transport does not read `body`; the router that sends a call decodes its answer.
public struct PeerCall: Sendable, Equatable {
    /// Chosen by the caller; an answer carries its request's id.
    public var id: UInt64
    public var isReply: Bool
    public var body: [UInt8]

    public init(id: UInt64, isReply: Bool, body: [UInt8]) {
        self.id = id
        self.isReply = isReply
        self.body = body
    }

    /// The largest body a call may have: a request carries at most one entry, and an answer larger
    /// than this is refused by the node that would send it (the caller is told why).
    public static let maxBodyBytes = 24 << 20
}

/// What one frame carries.
public struct Frame: Sendable, Equatable {
    public var envelopes: [Envelope]
    public var calls: [PeerCall]

    public init(envelopes: [Envelope] = [], calls: [PeerCall] = []) {
        self.envelopes = envelopes
        self.calls = calls
    }
}

/// The bytes between nodes. A connection opens with a handshake (magic, wire version, sender's node
/// id); after it, every frame is a length (u32) followed by a batch of envelopes and a batch of calls,
/// so many messages to one peer share a write.
public enum WireFormat {
    /// 2: envelopes may carry snapshot chunks. 3: frames carry calls after the envelopes.
    public static let version: UInt16 = 3
    static let magic: [UInt8] = Array("CAIRN".utf8)
    /// Frames larger than this are refused: a corrupt length must not make the reader allocate gigabytes.
    public static let maxFrameBytes = 64 << 20

    public static func handshake(from node: NodeID) -> [UInt8] {
        var out = magic
        out.append(UInt8(version & 0xff))
        out.append(UInt8(version >> 8))
        ByteCoding.append(node, to: &out)
        return out
    }

    public static let handshakeBytes = 5 + 2 + 8

    /// The sender's node id, if the handshake is ours and of our version.
    public static func parseHandshake(_ bytes: [UInt8]) throws(WireError) -> NodeID {
        guard bytes.count == handshakeBytes else { throw .malformed("handshake of \(bytes.count) bytes") }
        guard Array(bytes[0..<5]) == magic else { throw .notCairn }
        let theirs = UInt16(bytes[5]) | UInt16(bytes[6]) << 8
        guard theirs == version else { throw .versionMismatch(ours: version, theirs: theirs) }
        var c = 7
        return ByteCoding.readUInt64(bytes, &c)!
    }

    /// One frame: length, then the envelopes, then the calls.
    public static func frame(_ envelopes: [Envelope], calls: [PeerCall] = []) -> [UInt8] {
        var body: [UInt8] = []
        ByteCoding.append(UInt32(envelopes.count), to: &body)
        for e in envelopes { encode(e, into: &body) }
        ByteCoding.append(UInt32(calls.count), to: &body)
        for call in calls {
            ByteCoding.append(call.id, to: &body)
            body.append(call.isReply ? 1 : 0)
            appendBytes(call.body, to: &body)
        }
        var out: [UInt8] = []
        out.reserveCapacity(body.count + 4)
        ByteCoding.append(UInt32(body.count), to: &out)
        out.append(contentsOf: body)
        return out
    }

    /// Decodes a frame body (without its length prefix).
    public static func decode(frameBody b: [UInt8]) throws(WireError) -> Frame {
        var c = 0
        guard let n = ByteCoding.readUInt32(b, &c) else { throw .malformed("missing envelope count") }
        var frame = Frame()
        for _ in 0..<n { frame.envelopes.append(try decodeEnvelope(b, &c)) }
        guard let calls = ByteCoding.readUInt32(b, &c) else { throw .malformed("missing call count") }
        // Each call takes at least 13 bytes: a count beyond what is left is a lie.
        guard Int(calls) <= (b.count - c) / 13 else { throw .malformed("call count \(calls) exceeds the frame") }
        for _ in 0..<calls {
            let id = try u64(b, &c)
            let kind = try u8(b, &c)
            guard kind <= 1 else { throw .malformed("call kind \(kind)") }
            let body = try readBytes(b, &c)
            guard body.count <= PeerCall.maxBodyBytes else { throw .malformed("a call of \(body.count) bytes") }
            frame.calls.append(PeerCall(id: id, isReply: kind == 1, body: body))
        }
        guard c == b.count else { throw .malformed("\(b.count - c) trailing bytes") }
        return frame
    }

    /// The envelopes of a frame body (without its length prefix).
    public static func envelopes(inFrameBody b: [UInt8]) throws(WireError) -> [Envelope] {
        try decode(frameBody: b).envelopes
    }

    static func encode(_ e: Envelope, into out: inout [UInt8]) {
        let m = e.message
        ByteCoding.append(e.group, to: &out)
        out.append(m.kind.rawValue)
        for v in [m.from, m.to, m.term, m.logTerm, m.index, m.commit, m.rejectHint, m.context] { ByteCoding.append(v, to: &out) }
        out.append(m.reject ? 1 : 0)
        ByteCoding.append(UInt32(m.entries.count), to: &out)
        for entry in m.entries {
            ByteCoding.append(entry.term, to: &out)
            ByteCoding.append(entry.index, to: &out)
            out.append(entry.kind.rawValue)
            appendBytes(entry.data, to: &out)
        }
        if let s = m.snapshot {
            out.append(1)
            ByteCoding.append(s.metadata.index, to: &out)
            ByteCoding.append(s.metadata.term, to: &out)
            appendBytes(s.metadata.confState.encoded(), to: &out)
            appendBytes(s.data, to: &out)
        } else {
            out.append(0)
        }
        if e.quiesce {
            out.append(2)
        } else if e.snapshotBusy {
            out.append(3)
        } else if let chunk = e.chunk {
            out.append(1)
            ByteCoding.append(chunk.offset, to: &out)
            ByteCoding.append(chunk.totalBytes, to: &out)
            ByteCoding.append(chunk.fileChecksum, to: &out)
            appendBytes(chunk.data, to: &out)
        } else {
            out.append(0)
        }
    }

    private static func appendBytes(_ bytes: [UInt8], to out: inout [UInt8]) {
        ByteCoding.append(UInt32(bytes.count), to: &out)
        out.append(contentsOf: bytes)
    }

    private static func readBytes(_ b: [UInt8], _ c: inout Int) throws(WireError) -> [UInt8] {
        guard let n = ByteCoding.readUInt32(b, &c), c + Int(n) <= b.count else { throw .malformed("byte string past the end") }
        defer { c += Int(n) }
        return Array(b[c..<(c + Int(n))])
    }

    private static func u64(_ b: [UInt8], _ c: inout Int) throws(WireError) -> UInt64 {
        guard let v = ByteCoding.readUInt64(b, &c) else { throw .malformed("integer past the end") }
        return v
    }

    private static func u8(_ b: [UInt8], _ c: inout Int) throws(WireError) -> UInt8 {
        guard c < b.count else { throw .malformed("byte past the end") }
        defer { c += 1 }
        return b[c]
    }

    static func decodeEnvelope(_ b: [UInt8], _ c: inout Int) throws(WireError) -> Envelope {
        let group = try u64(b, &c)
        guard let kind = MessageKind(rawValue: try u8(b, &c)) else { throw .malformed("unknown message kind") }
        var m = Message(kind: kind)
        m.from = try u64(b, &c)
        m.to = try u64(b, &c)
        m.term = try u64(b, &c)
        m.logTerm = try u64(b, &c)
        m.index = try u64(b, &c)
        m.commit = try u64(b, &c)
        m.rejectHint = try u64(b, &c)
        m.context = try u64(b, &c)
        let reject = try u8(b, &c)
        guard reject <= 1 else { throw .malformed("reject flag \(reject)") }
        m.reject = reject == 1
        guard let count = ByteCoding.readUInt32(b, &c) else { throw .malformed("missing entry count") }
        // Each entry takes at least 21 bytes: a count beyond what is left is a lie.
        guard Int(count) <= (b.count - c) / 21 else { throw .malformed("entry count \(count) exceeds the frame") }
        m.entries.reserveCapacity(Int(count))
        for _ in 0..<count {
            let term = try u64(b, &c)
            let index = try u64(b, &c)
            guard let ek = EntryKind(rawValue: try u8(b, &c)) else { throw .malformed("unknown entry kind") }
            m.entries.append(Entry(term: term, index: index, kind: ek, data: try readBytes(b, &c)))
        }
        switch try u8(b, &c) {
        case 0: break
        case 1:
            let index = try u64(b, &c)
            let term = try u64(b, &c)
            guard let conf = ConfState(decoding: try readBytes(b, &c)) else { throw .malformed("snapshot membership") }
            m.snapshot = Snapshot(metadata: SnapshotMetadata(index: index, term: term, confState: conf), data: try readBytes(b, &c))
        default: throw .malformed("snapshot flag")
        }
        switch try u8(b, &c) {
        case 0: return Envelope(group: group, message: m)
        case 1:
            let offset = try u64(b, &c), total = try u64(b, &c)
            guard let checksum = ByteCoding.readUInt32(b, &c) else { throw .malformed("chunk checksum past the end") }
            let data = try readBytes(b, &c)
            guard m.kind == .snapshot, m.snapshot != nil, offset + UInt64(data.count) <= total else { throw .malformed("snapshot chunk") }
            return Envelope(group: group, message: m, chunk: SnapshotChunk(offset: offset, totalBytes: total, data: data, fileChecksum: checksum))
        case 2:
            guard m.kind == .heartbeat else { throw .malformed("quiesce flag on a \(m.kind) message") }
            return Envelope(group: group, message: m, quiesce: true)
        case 3:
            guard m.kind == .snapshot, m.snapshot != nil else { throw .malformed("snapshot-busy flag on a \(m.kind) message") }
            return Envelope(group: group, message: m, snapshotBusy: true)
        default: throw .malformed("envelope extension")
        }
    }
}
