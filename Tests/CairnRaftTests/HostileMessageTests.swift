import Testing
@testable import CairnRaft

/// Messages a buggy, corrupt or hostile peer could send: the gate in front of `step` refuses what is
/// malformed, impossible or out of place, and nothing a peer sends traps a node or undoes what it
/// committed.
@Suite("Raft: hostile messages")
struct HostileMessageTests {
    /// A three-node cluster with node 1 leading and 20 entries committed everywhere.
    private func settled() -> TestCluster {
        let c = TestCluster(voters: [1, 2, 3])
        c.elect(1)
        for i in 0..<20 { c.propose(1, "w\(i)") }
        c.stabilize()
        return c
    }

    private func entry(_ storage: MemoryStorage, _ index: LogIndex) -> Entry? {
        guard index >= storage.firstIndex(), index <= storage.lastIndex() else { return nil }
        return try? storage.entries(from: index, to: index + 1, maxBytes: .max).first
    }

    private struct Observed: Equatable {
        var term: Term
        var commit: LogIndex
        var lastIndex: LogIndex
        var role: RaftRole
        var lead: NodeID
        var hasReady: Bool
    }

    private func observe(_ n: RawNode) -> Observed {
        let s = n.status
        return Observed(term: s.term, commit: s.commit, lastIndex: s.lastIndex, role: s.role, lead: s.lead, hasReady: n.hasReady)
    }

    @Test("messages that would trip an invariant, overflow, or contradict what a node committed are refused with a reason, and change nothing",
          arguments: [
            ("an append to the leader in its own term", Message(kind: .append, from: 2, to: 1, term: 2, logTerm: 2, index: 21)),
            ("a heartbeat to the leader in its own term", Message(kind: .heartbeat, from: 3, to: 1, term: 2, commit: 21)),
            ("an acknowledgement past the leader's log", Message(kind: .appendResponse, from: 2, to: 1, term: 2, index: 500)),
            ("an append contradicting committed entries", Message(kind: .append, from: 3, to: 2, term: 9, logTerm: 1, index: 1,
                                                                  entries: [Entry(term: 9, index: 2, data: [1])], commit: 2)),
            ("entries that are not consecutive", Message(kind: .append, from: 3, to: 2, term: 9, logTerm: 2, index: 21,
                                                         entries: [Entry(term: 9, index: 23, data: [1])])),
            ("an entry from a later term than the message", Message(kind: .append, from: 3, to: 2, term: 9, logTerm: 2, index: 21,
                                                                    entries: [Entry(term: 10, index: 22, data: [1])])),
            ("an undecodable configuration", Message(kind: .append, from: 3, to: 2, term: 9, logTerm: 2, index: 21,
                                                     entries: [Entry(term: 9, index: 22, kind: .confChange, data: [9, 9, 9])])),
            ("an index at the end of the number range", Message(kind: .append, from: 3, to: 2, term: 9, logTerm: 2, index: .max - 1,
                                                                entries: [Entry(term: 9, index: .max, data: [1])])),
            ("a term at the end of the number range", Message(kind: .vote, from: 3, to: 2, term: .max, logTerm: 1, index: 30)),
            ("a rejection hint past the rejected index", Message(kind: .appendResponse, from: 2, to: 1, term: 2, index: 3, reject: true,
                                                                rejectHint: .max - 5)),
            ("a snapshot without voters", Message(kind: .snapshot, from: 3, to: 2, term: 9,
                                                  snapshot: Snapshot(metadata: SnapshotMetadata(index: 50, term: 9)))),
            ("a snapshot contradicting a committed entry", Message(kind: .snapshot, from: 3, to: 2, term: 9,
                                                                   snapshot: Snapshot(metadata: SnapshotMetadata(index: 10, term: 7, confState: ConfState(voters: [1, 2, 3]))))),
            ("a message from node 0", Message(kind: .heartbeat, from: 0, to: 2, term: 2)),
            ("a message from the node itself", Message(kind: .heartbeat, from: 2, to: 2, term: 2)),
            ("a message for another node", Message(kind: .heartbeat, from: 1, to: 3, term: 2)),
            ("a message without a term", Message(kind: .append, from: 1, to: 2, term: 0, index: 21)),
          ])
    func refused(what: String, message: Message) {
        let c = settled()
        c.processAll()
        let target = c.node(message.to == 3 ? 2 : message.to)
        // Term 2 in the table stands for the node's current term.
        var message = message
        if message.term == 2 { message.term = target.status.term }
        let before = observe(target)
        let why = target.step(message)
        #expect(why != nil, "\(what) was stepped")
        #expect(observe(target) == before, "\(what) changed the node: \(why ?? "")")
    }

    @Test("200,000 mutated messages, stepped into a live cluster between its own traffic: no trap, no committed entry undone, and every refused message left its node as it was")
    func fuzz() {
        var rng = SplitMix64(seed: 20_261_202)
        func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
        func chance(_ percent: UInt64) -> Bool { rng.next() % 100 < percent }
        let c = settled()
        let committed: [NodeID: [Entry]] = Dictionary(uniqueKeysWithValues: [1, 2, 3].map { id in
            (NodeID(id), (1...20 + 1).compactMap { i in entry(c.storages[NodeID(id)]!, LogIndex(i)) })
        })
        let honest = c.sent
        var refused = 0, stepped = 0
        for round in 0..<200_000 {
            var m = pick(honest)
            // Mutate a few fields, from nudges to values no honest node sends.
            for _ in 0..<(1 + rng.next() % 3) {
                switch rng.next() % 12 {
                case 0: m.kind = pick(MessageKind.allCases)
                case 1: m.from = pick([0, 1, 2, 3, 4, 99, .max])
                case 2: m.term = pick([0, 1, m.term &+ 1, m.term &+ 50, m.term &- 1, .max, 1 << 62])
                case 3: m.logTerm = pick([0, m.logTerm &+ 1, m.term, m.term &+ 1, .max])
                case 4: m.index = pick([0, m.index &+ 1, m.index &- 1, 5, 21, 1_000, .max, .max - 1])
                case 5: m.commit = pick([0, m.commit &+ 1, 21, 1_000, .max])
                case 6:
                    let start = m.index &+ (chance(80) ? 1 : rng.next() % 5)
                    m.entries = (0..<Int(rng.next() % 4)).map { k in
                        Entry(term: pick([m.term, m.logTerm, m.term &+ 1, 1]), index: start &+ UInt64(k) &+ (chance(90) ? 0 : 2),
                              kind: chance(85) ? .normal : .confChange, data: chance(50) ? [UInt8(k)] : ConfState(voters: [1, 2]).encoded())
                    }
                case 7: m.reject.toggle()
                case 8: m.rejectHint = pick([0, m.index, m.index &+ 1, .max])
                case 9:
                    m.snapshot = Snapshot(metadata: SnapshotMetadata(index: pick([0, 5, 21, 30, .max]), term: pick([0, 1, m.term, m.term &+ 1]),
                                                                     confState: ConfState(voters: chance(80) ? [1, 2, 3] : [])))
                case 10: m.context = pick([0, 1, 7, .max])
                default: m.to = pick([1, 2, 3])
                }
            }
            if m.to == 0 || m.to > 3 { m.to = 2 }
            let target = c.node(m.to)
            c.processAll()
            let before = observe(target)
            if let why = target.step(m) {
                refused += 1
                #expect(observe(target) == before, "round \(round): a refused \(m.kind) changed node \(m.to): \(why)")
            } else {
                stepped += 1
            }
            c.process(m.to)
            // The cluster's own traffic goes on in between, and now and then it writes.
            if round % 50 == 0 {
                c.inFlight.removeAll { $0.term > 1 << 40 }
                c.deliver { _ in true }
                if let leader = c.leaders.first, round % 500 == 0 { _ = try? c.node(leader).propose(Array("f\(round)".utf8)) }
            }
            if round % 5_000 == 0 {
                for id in [NodeID(1), 2, 3] { c.tick(id) }
                c.deliver { _ in true }
            }
        }
        // What each node committed before the storm is still what it holds.
        for id in [NodeID(1), 2, 3] {
            for e in committed[id]! {
                if let now = entry(c.storages[id]!, e.index) { #expect(now == e, "node \(id) entry \(e.index) changed") }
            }
        }
        #expect(refused > 10_000 && stepped > 10_000, "refused \(refused), stepped \(stepped)")
        print("hostile messages: \(refused) refused, \(stepped) stepped, no trap")
    }
}
