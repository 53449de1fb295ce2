import CairnRaft

/// The entries of a transaction across shards (two-phase commit over the shards' Raft groups), each
/// applied alike on every replica of its group:
/// - `prepare` on each participant: its statements run and are rolled back (their results are the
///   vote and the client's answer); if all succeed the shard keeps them, locked, until the outcome.
///   The anchor (the first participant) also records the transaction as pending.
/// - `decide` on the anchor: pending becomes committed or aborted (compare-and-set; an unknown
///   transaction is recorded aborted, so a late prepare there fails). The commit point.
/// - `resolve` on the anchor, by anyone who finds a prepared transaction past its deadline: as
///   `decide(abort)`, but only once the entry's own time is past the deadline.
/// - `finish` on each participant: on commit the kept statements run again with their own time and
///   seed on the unchanged (locked) state, so they do exactly what the prepare saw; then the lock goes.
public enum TransactionStep: Sendable, Equatable {
    /// `anchor` and `participants` are group ids; `recordsHere` is set on the anchor's own prepare.
    case prepare(txid: UInt64, anchor: UInt64, participants: [UInt64], deadlineMillis: Int64, recordsHere: Bool)
    case decide(txid: UInt64, commit: Bool)
    case resolve(txid: UInt64)
    case finish(txid: UInt64, commit: Bool)

    public var txid: UInt64 {
        switch self {
        case .prepare(let t, _, _, _, _), .decide(let t, _), .resolve(let t), .finish(let t, _): return t
        }
    }

    /// What a prepare that met another transaction's lock says (the coordinator retries later).
    public static let lockedMessage = "cairn: shard locked by a transaction across shards"
    /// A decide or resolve answers one row, one column: the transaction's state.
    public static let committed = "committed", aborted = "aborted", pending = "pending"

    func append(to out: inout [UInt8]) {
        switch self {
        case .prepare(let txid, let anchor, let participants, let deadline, let recordsHere):
            out.append(1)
            ByteCoding.append(txid, to: &out)
            out.append(recordsHere ? 1 : 0)
            ByteCoding.append(anchor, to: &out)
            ByteCoding.append(UInt64(bitPattern: deadline), to: &out)
            ByteCoding.append(UInt32(participants.count), to: &out)
            for p in participants { ByteCoding.append(p, to: &out) }
        case .decide(let txid, let commit):
            out.append(2)
            ByteCoding.append(txid, to: &out)
            out.append(commit ? 1 : 0)
        case .resolve(let txid):
            out.append(3)
            ByteCoding.append(txid, to: &out)
        case .finish(let txid, let commit):
            out.append(4)
            ByteCoding.append(txid, to: &out)
            out.append(commit ? 1 : 0)
        }
    }

    static func read(_ b: [UInt8], _ c: inout Int) -> TransactionStep? {
        guard c < b.count else { return nil }
        let kind = b[c]
        c += 1
        guard let txid = ByteCoding.readUInt64(b, &c) else { return nil }
        switch kind {
        case 1:
            guard c < b.count, b[c] <= 1 else { return nil }
            let recordsHere = b[c] == 1
            c += 1
            guard let anchor = ByteCoding.readUInt64(b, &c), let deadline = ByteCoding.readUInt64(b, &c),
                  let n = ByteCoding.readUInt32(b, &c), n >= 1, n <= 4096 else { return nil }
            var participants: [UInt64] = []
            for _ in 0..<n {
                guard let p = ByteCoding.readUInt64(b, &c) else { return nil }
                participants.append(p)
            }
            guard participants.contains(anchor) else { return nil }
            return .prepare(txid: txid, anchor: anchor, participants: participants, deadlineMillis: Int64(bitPattern: deadline),
                            recordsHere: recordsHere)
        case 2, 4:
            guard c < b.count, b[c] <= 1 else { return nil }
            let commit = b[c] == 1
            c += 1
            return kind == 2 ? .decide(txid: txid, commit: commit) : .finish(txid: txid, commit: commit)
        case 3:
            return .resolve(txid: txid)
        default:
            return nil
        }
    }
}
