import CairnRaft

/// What the write-ahead log holds. Every record names its Raft group, so one log (and one sync) serves
/// every group on the node.
enum WALRecord: Equatable {
    /// Entries to append; an entry at an index the group already has replaces it and everything after.
    case entries(group: UInt64, [Entry])
    case hardState(group: UInt64, HardState)
    /// The group's log now starts after this snapshot point. `replacesLog`: a snapshot received from the
    /// leader, which discards the whole log; otherwise a local compaction, which keeps what follows.
    case snapshot(group: UInt64, SnapshotMetadata, replacesLog: Bool)
    /// The group was deleted (its database dropped): forget it.
    case dropGroup(group: UInt64)

    private enum Tag: UInt8 { case entries = 1, hardState = 2, compaction = 3, installedSnapshot = 4, dropGroup = 5 }

    /// Frame: length (u32), CRC-32C of the payload (u32), payload. One frame holds one write batch, so
    /// a batch is recovered whole or not at all: never entries without the hard state written with them.
    static let headerBytes = 8

    /// Frames a batch: count (u32), then each record as length (u32) + bytes.
    static func frame(_ records: [WALRecord], into out: inout [UInt8]) {
        var payload: [UInt8] = []
        ByteCoding.append(UInt32(records.count), to: &payload)
        for r in records {
            let body = r.encoded()
            ByteCoding.append(UInt32(body.count), to: &payload)
            payload.append(contentsOf: body)
        }
        ByteCoding.append(UInt32(payload.count), to: &out)
        ByteCoding.append(CRC32C.checksum(payload), to: &out)
        out.append(contentsOf: payload)
    }

    /// The records of a frame whose checksum matched; nil if it is not well formed.
    static func records(inFrame p: [UInt8]) -> [WALRecord]? {
        var c = 0
        guard let n = ByteCoding.readUInt32(p, &c) else { return nil }
        var out: [WALRecord] = []
        for _ in 0..<n {
            guard let len = ByteCoding.readUInt32(p, &c), c + Int(len) <= p.count,
                  let r = WALRecord(payload: Array(p[c..<(c + Int(len))])) else { return nil }
            out.append(r)
            c += Int(len)
        }
        return c == p.count ? out : nil
    }

    func encoded() -> [UInt8] {
        var payload: [UInt8] = []
        switch self {
        case .entries(let g, let entries):
            payload.append(Tag.entries.rawValue)
            ByteCoding.append(g, to: &payload)
            ByteCoding.append(UInt32(entries.count), to: &payload)
            for e in entries {
                ByteCoding.append(e.term, to: &payload)
                ByteCoding.append(e.index, to: &payload)
                payload.append(e.kind.rawValue)
                ByteCoding.append(UInt32(e.data.count), to: &payload)
                payload.append(contentsOf: e.data)
            }
        case .hardState(let g, let hs):
            payload.append(Tag.hardState.rawValue)
            ByteCoding.append(g, to: &payload)
            ByteCoding.append(hs.term, to: &payload)
            ByteCoding.append(hs.vote, to: &payload)
            ByteCoding.append(hs.commit, to: &payload)
        case .snapshot(let g, let meta, let replaces):
            payload.append(replaces ? Tag.installedSnapshot.rawValue : Tag.compaction.rawValue)
            ByteCoding.append(g, to: &payload)
            ByteCoding.append(meta.index, to: &payload)
            ByteCoding.append(meta.term, to: &payload)
            let conf = meta.confState.encoded()
            ByteCoding.append(UInt32(conf.count), to: &payload)
            payload.append(contentsOf: conf)
        case .dropGroup(let g):
            payload.append(Tag.dropGroup.rawValue)
            ByteCoding.append(g, to: &payload)
        }
        return payload
    }

    /// Decodes one record; nil if it is not well formed.
    init?(payload p: [UInt8]) {
        guard let tagByte = p.first, let tag = Tag(rawValue: tagByte) else { return nil }
        var c = 1
        guard let group = ByteCoding.readUInt64(p, &c) else { return nil }
        switch tag {
        case .entries:
            guard let n = ByteCoding.readUInt32(p, &c) else { return nil }
            var entries: [Entry] = []
            entries.reserveCapacity(Int(n))
            for _ in 0..<n {
                guard let term = ByteCoding.readUInt64(p, &c), let index = ByteCoding.readUInt64(p, &c), c < p.count,
                      let kind = EntryKind(rawValue: p[c]) else { return nil }
                c += 1
                guard let len = ByteCoding.readUInt32(p, &c), c + Int(len) <= p.count else { return nil }
                entries.append(Entry(term: term, index: index, kind: kind, data: Array(p[c..<(c + Int(len))])))
                c += Int(len)
            }
            guard c == p.count else { return nil }
            self = .entries(group: group, entries)
        case .hardState:
            guard let t = ByteCoding.readUInt64(p, &c), let v = ByteCoding.readUInt64(p, &c),
                  let commit = ByteCoding.readUInt64(p, &c), c == p.count else { return nil }
            self = .hardState(group: group, HardState(term: t, vote: v, commit: commit))
        case .compaction, .installedSnapshot:
            guard let index = ByteCoding.readUInt64(p, &c), let term = ByteCoding.readUInt64(p, &c),
                  let len = ByteCoding.readUInt32(p, &c), c + Int(len) == p.count,
                  let conf = ConfState(decoding: Array(p[c...])) else { return nil }
            self = .snapshot(group: group, SnapshotMetadata(index: index, term: term, confState: conf),
                             replacesLog: tag == .installedSnapshot)
        case .dropGroup:
            guard c == p.count else { return nil }
            self = .dropGroup(group: group)
        }
    }
}
