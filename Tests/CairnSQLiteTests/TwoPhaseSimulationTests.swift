import CairnRaft
import Foundation
import Testing
@testable import CairnSQLite

/// The protocol of transactions across shards, simulated in virtual time with the shards' and the
/// coordinator's decisions taken by `TransactionRules` (what the state machine and the server use):
/// shards apply what reaches their log in order (a Raft group is one ordered, reliable state machine),
/// while messages between coordinators, recovery and shards are delayed, lost and repeated, and
/// coordinators die at any step. Each seed is replayable (`CAIRN_2PC_SEED`); `CAIRN_2PC_SEEDS` sets how
/// many run (2,000 by default). Deliberately broken variants must be caught.
struct TwoPhaseSimulation {
    enum Mutant: CaseIterable, Sendable {
        case none
        /// A participant applies its part when it votes, before the decision is durable.
        case commitOnPrepare
        /// The anchor's decide overwrites an outcome instead of compare-and-set from pending.
        case decideOverwrites
        /// The anchor forgets a transaction it never saw prepared (no aborted record), so a late prepare
        /// there can still lock, and a later decide commit it.
        case noTombstone
    }

    struct Op { var account: Int; var delta: Int }
    struct Prepared { var ops: [Op]; var participants: [Int]; var anchor: Int; var deadline: Int64 }

    struct Shard {
        var balances: [Int: Int] = [:]
        var prepared: [UInt64: Prepared] = [:]
        var records: [UInt64: (state: String, deadlineMillis: Int64)] = [:]
        /// Transactions whose effects this shard applied.
        var committed: Set<UInt64> = []
    }

    enum Event {
        case prepare(txid: UInt64, shard: Int, ops: [Op], participants: [Int], anchor: Int, deadline: Int64, sentAt: Int64, coordinator: Int)
        case decide(txid: UInt64, commit: Bool?, anchor: Int, sentAt: Int64, replyTo: Int?, participants: [Int])
        case finish(txid: UInt64, commit: Bool, shard: Int)
        case single(shard: Int, ops: [Op], coordinator: Int, attempt: Int)
        case vote(txid: UInt64, shard: Int, yes: Bool, coordinator: Int)
        case decided(txid: UInt64, state: String, coordinator: Int)
        case coordinatorTimeout(coordinator: Int, phase: Int)
        case startTransfer(coordinator: Int)
        case recoveryPass
    }

    final class Coordinator {
        var txid: UInt64 = 0
        var participants: [Int] = []
        var votes: [Int: Bool] = [:]
        var phase = 0 // 0 idle, 1 preparing, 2 deciding, 3 done
        var dead = false
        var transfersLeft: Int
        init(transfers: Int) { transfersLeft = transfers }
    }

    let seed: UInt64
    let mutant: Mutant
    var rng: SplitMix64
    var now: Int64 = 0
    var queue: [(at: Int64, seq: Int, event: Event)] = []
    var seq = 0
    var shards: [Shard]
    var coordinators: [Coordinator] = []
    var participantsOf: [UInt64: [Int]] = [:]
    let accounts = 8, total = 100, deadlineMillis: Int64 = 500

    init(seed: UInt64, mutant: Mutant = .none, shardCount: Int = 4, coordinatorCount: Int = 3) {
        self.seed = seed
        self.mutant = mutant
        rng = SplitMix64(seed: seed)
        shards = Array(repeating: Shard(), count: shardCount)
        for a in 0..<accounts { shards[a % shardCount].balances[a] = total / accounts + (a < total % accounts ? 1 : 0) }
        for c in 0..<coordinatorCount {
            coordinators.append(Coordinator(transfers: 20))
            schedule(.startTransfer(coordinator: c), after: Int64(c))
        }
        schedule(.recoveryPass, after: 100)
    }

    mutating func random(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
    mutating func chance(_ percent: Int) -> Bool { random(100) < percent }

    mutating func schedule(_ e: Event, after delay: Int64) {
        seq += 1
        queue.append((now + delay, seq, e))
    }

    /// A message over the network: delayed, sometimes lost, sometimes delivered twice.
    mutating func send(_ e: Event) {
        if chance(5) { return }
        // Now and then a message is very late: past the transaction's deadline (a paused process, a
        // congested link), which is when recovery and the coordinator meet.
        let late = chance(4) ? Int64(300 + random(1200)) : 0
        schedule(e, after: late + Int64(1 + random(40)))
        if chance(3) { schedule(e, after: Int64(1 + random(80))) }
    }

    /// Runs until nothing is left to do (or a virtual minute); returns the first broken invariant.
    mutating func run() -> String? {
        while !queue.isEmpty && now < 300_000 {
            let i = queue.indices.min { (queue[$0].at, queue[$0].seq) < (queue[$1].at, queue[$1].seq) }!
            let (at, _, event) = queue.remove(at: i)
            now = at
            handle(event)
            if let broken = checkAlways() { return broken }
            let busy = coordinators.contains { !$0.dead && ($0.transfersLeft > 0 || ($0.phase != 0 && $0.phase != 3)) }
            if !busy && shards.allSatisfy({ $0.prepared.isEmpty }) && !queue.contains(where: { if case .recoveryPass = $0.event { false } else { true } }) { break }
        }
        return checkAtEnd()
    }

    mutating func handle(_ event: Event) {
        switch event {
        case .startTransfer(let c):
            let co = coordinators[c]
            guard !co.dead, co.transfersLeft > 0 else { return }
            co.transfersLeft -= 1
            let from = random(accounts), to = (from + 1 + random(accounts - 1)) % accounts, amount = 1 + random(5)
            let ops = [Op(account: from, delta: -amount), Op(account: to, delta: amount)]
            let byShard = Dictionary(grouping: ops) { $0.account % shards.count }
            if byShard.count == 1 {
                send(.single(shard: byShard.keys.first!, ops: ops, coordinator: c, attempt: 0))
                co.phase = 3
                schedule(.startTransfer(coordinator: c), after: Int64(5 + random(20)))
                return
            }
            co.txid = rng.next()
            co.participants = byShard.keys.sorted()
            co.votes = [:]
            co.phase = 1
            participantsOf[co.txid] = co.participants
            for shard in co.participants {
                send(.prepare(txid: co.txid, shard: shard, ops: byShard[shard]!, participants: co.participants, anchor: co.participants[0],
                              deadline: now + deadlineMillis, sentAt: now, coordinator: c))
            }
            schedule(.coordinatorTimeout(coordinator: c, phase: 1), after: 2_000)
            if chance(8) { co.dead = true }  // dies right after sending its prepares
        case .single(let shard, let ops, let c, let attempt):
            if !shards[shard].prepared.isEmpty {
                // Locked: refused alike on every replica; the router sends it again later.
                if attempt < 50 { schedule(.single(shard: shard, ops: ops, coordinator: c, attempt: attempt + 1), after: 20) }
                return
            }
            // One entry, all or nothing, as the CHECK (bal >= 0) of the bank test would have it.
            var next = shards[shard].balances
            for op in ops { next[op.account]! += op.delta }
            if next.values.allSatisfy({ $0 >= 0 }) { shards[shard].balances = next }
        case .prepare(let txid, let shard, let ops, let participants, let anchor, let deadline, _, let c):
            var s = shards[shard]
            let recordsHere = shard == anchor
            let gate = TransactionRules.prepare(recordedState: s.records[txid]?.state, locked: !s.prepared.isEmpty)
            var yes = false
            if gate == .run {
                let valid = ops.allSatisfy { s.balances[$0.account]! + $0.delta >= 0 }
                if valid {
                    yes = true
                    s.prepared[txid] = Prepared(ops: ops, participants: participants, anchor: anchor, deadline: deadline)
                    if recordsHere && s.records[txid] == nil { s.records[txid] = (TransactionStep.pending, deadline) }
                    if mutant == .commitOnPrepare {
                        for op in ops { s.balances[op.account]! += op.delta }
                        s.committed.insert(txid)
                    }
                }
            }
            shards[shard] = s
            send(.vote(txid: txid, shard: shard, yes: yes, coordinator: c))
        case .vote(let txid, let shard, let yes, let c):
            let co = coordinators[c]
            guard !co.dead, co.phase == 1, co.txid == txid else { return }
            co.votes[shard] = yes
            if co.votes.count == co.participants.count { decide(c) }
        case .coordinatorTimeout(let c, let phase):
            let co = coordinators[c]
            guard !co.dead, co.phase == phase else { return }
            if phase == 1 { decide(c) } else { finishCoordinator(c) }  // no answer to the decide: outcome unknown, give up
        case .decide(let txid, let commit, let anchor, let sentAt, let replyTo, let participants):
            var s = shards[anchor]
            var (state, write) = TransactionRules.anchor(recorded: s.records[txid], commit: commit, entryMillis: sentAt)
            if mutant == .decideOverwrites, let commit, s.records[txid] != nil {
                state = commit ? TransactionStep.committed : TransactionStep.aborted
                write = true
            }
            if mutant == .noTombstone && s.records[txid] == nil { write = false }
            if write { s.records[txid] = (state, s.records[txid]?.deadlineMillis ?? 0) }
            shards[anchor] = s
            if let c = replyTo {
                send(.decided(txid: txid, state: state, coordinator: c))
            } else if state != TransactionStep.pending {
                // The recovery pass: it finishes what it resolved.
                for p in participants { send(.finish(txid: txid, commit: state == TransactionStep.committed, shard: p)) }
            }
        case .decided(let txid, let state, let c):
            let co = coordinators[c]
            guard !co.dead, co.phase == 2, co.txid == txid else { return }
            if chance(8) { co.dead = true; return }  // dies between the decision and the finish
            for p in co.participants { send(.finish(txid: txid, commit: state == TransactionStep.committed, shard: p)) }
            finishCoordinator(c)
        case .finish(let txid, let commit, let shard):
            var s = shards[shard]
            guard let p = s.prepared.removeValue(forKey: txid) else { return }
            if s.records[txid] == nil { s.records[txid] = (commit ? TransactionStep.committed : TransactionStep.aborted, 0) }
            if commit && mutant != .commitOnPrepare {
                for op in p.ops { s.balances[op.account]! += op.delta }
                s.committed.insert(txid)
            }
            shards[shard] = s
        case .recoveryPass:
            for shard in shards.indices {
                for (txid, p) in shards[shard].prepared where p.deadline < now {
                    send(.decide(txid: txid, commit: nil, anchor: p.anchor, sentAt: now, replyTo: nil, participants: p.participants))
                }
            }
            schedule(.recoveryPass, after: 100)
        }
    }

    mutating func decide(_ c: Int) {
        let co = coordinators[c]
        co.phase = 2
        let commit = TransactionRules.commits(votes: co.participants.map { co.votes[$0] })
        send(.decide(txid: co.txid, commit: commit, anchor: co.participants[0], sentAt: now, replyTo: c, participants: co.participants))
        schedule(.coordinatorTimeout(coordinator: c, phase: 2), after: 2_000)
    }

    mutating func finishCoordinator(_ c: Int) {
        coordinators[c].phase = 3
        schedule(.startTransfer(coordinator: c), after: Int64(5 + random(20)))
    }

    /// Checked after every step: money is never made or lost by a shard, and no balance goes negative.
    func checkAlways() -> String? {
        for (i, s) in shards.enumerated() {
            if let (a, b) = s.balances.first(where: { $0.value < 0 }) { return "shard \(i): account \(a) went negative (\(b))" }
        }
        return nil
    }

    /// Checked at the end: nothing prepared is left, money adds up, and each transaction applied on
    /// all of its shards or on none.
    func checkAtEnd() -> String? {
        for (i, s) in shards.enumerated() where !s.prepared.isEmpty { return "shard \(i) still holds \(s.prepared.count) prepared transaction(s)" }
        let sum = shards.reduce(0) { $0 + $1.balances.values.reduce(0, +) }
        if sum != total { return "the balances add up to \(sum), not \(total)" }
        for (txid, participants) in participantsOf {
            let applied = participants.filter { shards[$0].committed.contains(txid) }
            if !applied.isEmpty && applied.count != participants.count {
                return "transaction \(txid) applied on shards \(applied) of \(participants)"
            }
        }
        return nil
    }
}

@Suite struct TwoPhaseSimulationTests {
    static var seeds: Int { Int(ProcessInfo.processInfo.environment["CAIRN_2PC_SEEDS"] ?? "") ?? 2_000 }

    @Test("transactions across shards stay atomic over many seeds of lost, late and repeated messages and dying coordinators")
    func protocolHolds() {
        if let one = ProcessInfo.processInfo.environment["CAIRN_2PC_SEED"].flatMap(UInt64.init) {
            var sim = TwoPhaseSimulation(seed: one)
            #expect(sim.run() == nil, "seed \(one)")
            return
        }
        var failures: [String] = []
        for seed in 1...UInt64(Self.seeds) {
            var sim = TwoPhaseSimulation(seed: seed)
            if let broken = sim.run() { failures.append("seed \(seed): \(broken)") }
            if failures.count >= 3 { break }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n")) (replay with CAIRN_2PC_SEED)")
    }

    @Test("each deliberately broken variant is caught", arguments: TwoPhaseSimulation.Mutant.allCases.filter { $0 != .none })
    func mutantsAreCaught(_ mutant: TwoPhaseSimulation.Mutant) {
        var caughtAt: UInt64?
        for seed in 1...UInt64(2_000) {
            var sim = TwoPhaseSimulation(seed: seed, mutant: mutant)
            if sim.run() != nil { caughtAt = seed; break }
        }
        #expect(caughtAt != nil, "\(mutant) survived 2,000 seeds")
        print("two-phase mutant \(mutant): caught at seed \(caughtAt.map(String.init) ?? "never")")
    }
}
