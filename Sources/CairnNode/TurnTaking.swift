import CairnRaft
import Foundation
import CairnSQLite
import NIOCore

/// Writes proposed in turn, at the group's leader, once the group is free of prepared transactions
/// across shards (`TurnLines` says why).
extension NodeRuntime {
    /// Waiters in all lines of a node, at most; past it a write is told to come back later (not
    /// committed, tried again after a pause). A call from another node waits in line holding one of
    /// the router's serving slots (`GroupRouter.maxServing`, asserted to be at least twice this).
    public static let maxTurnWaiters = 1_024

    struct TurnWaiter {
        let id: UInt64
        let command: SQLCommand
        let promise: Answer
        /// When the wait ends, whether or not the group came free.
        let deadline: NIODeadline
    }

    /// Commits `command` to `group`, which this node must lead, once no prepared transaction holds the
    /// group, after the waiting writes whose requests are older. `ageMillis`: how long ago its request
    /// began, by the coordinator's monotonic clock (an age, not a time: clocks of different nodes
    /// need not agree). A write that waited `waitMillis` (at most the request's time) without its turn
    /// is answered as the group answers a write it refuses while held: every statement failed with
    /// `TransactionStep.lockedMessage`, nothing written.
    public func executeInTurn(group: GroupID, _ command: SQLCommand, ageMillis: UInt64, waitMillis: Int64) -> EventLoopFuture<([StatementResult], LogIndex)> {
        if let why = failure { return applyLoop.makeFailedFuture(RuntimeError.failed(why)) }
        // Led elsewhere as far as this node knows: the router asks that node instead of this one waiting
        // for a turn its proposal would lose.
        if let leader = leaderHint(group), leader != noNode, leader != config.nodeID {
            return applyLoop.makeFailedFuture(RuntimeError.notLeader(leader: leader))
        }
        let promise = callerLoop.makePromise(of: ([StatementResult], LogIndex).self)
        let deadline = NIODeadline.now() + .milliseconds(max(0, min(waitMillis, config.requestTimeoutMillis)))
        let since = Self.began(ageMillis: ageMillis, nowMillis: DispatchTime.now().uptimeNanoseconds / 1_000_000,
                               requestTimeoutMillis: config.requestTimeoutMillis)
        applyLoop.execute {
            let side = self.applyState.value
            guard !side.stopping else { return promise.fail(RuntimeError.shutDown) }
            guard side.machines[group] != nil else { return promise.fail(RuntimeError.unknownGroup(group)) }
            side.nextTurnID &+= 1
            let id = side.nextTurnID
            guard side.turns.join(group, id: id, since: since, TurnWaiter(id: id, command: command, promise: promise, deadline: deadline)) else {
                return promise.fail(RuntimeError.raft("node \(self.config.nodeID) has \(Self.maxTurnWaiters) writes waiting for their turn already; nothing was written"))
            }
            side.turnTimers[id] = self.applyLoop.scheduleTask(deadline: deadline) {
                let side = self.applyState.value
                side.turnTimers[id] = nil
                if let w = side.turns.leave(group, id: id) { w.promise.succeed((Self.lockedResults(w.command), 0)) }
            }
            self.takeTurns(group)
        }
        return promise.futureResult
    }

    /// When a waiter's request began, on this node's monotonic clock (`nowMillis`): its age, at most
    /// the request's time (no request is older; a peer claiming more would otherwise go first for ever).
    static func began(ageMillis: UInt64, nowMillis: UInt64, requestTimeoutMillis: Int64) -> UInt64 {
        nowMillis &- min(ageMillis, UInt64(max(0, requestTimeoutMillis)), nowMillis)
    }

    /// What a write refused for a held group answers: each statement (one at least) failed as locked.
    static func lockedResults(_ command: SQLCommand) -> [StatementResult] {
        (0..<max(1, command.statements.count)).map { _ in StatementResult(error: TransactionStep.lockedMessage) }
    }

    /// Proposes the first waiter of `group`'s line if the group is free. On the apply loop: after each
    /// batch applied (the entry that frees a group is applied there) and when a waiter arrives.
    func takeTurns(_ group: GroupID) {
        let side = applyState.value
        guard side.turns.hasLine(group) else { return }
        guard let machine = side.machines[group] else {
            failTurns(group) { _ in RuntimeError.unknownGroup(group) }
            return
        }
        guard let (id, waiter) = side.turns.next(group, groupFree: !machine.heldByTransaction) else { return }
        executeFuture(group: group, waiter.command).hop(to: applyLoop).whenComplete { result in
            self.turnCameBack(group, id: id, result)
        }
    }

    /// Empties `group`'s line, failing each waiter with `error(onItsWay)` (whether its write was
    /// proposed and may commit). On the apply loop.
    func failTurns(_ group: GroupID, _ error: (Bool) -> RuntimeError) {
        let side = applyState.value
        for (w, onItsWay) in side.turns.removeAll(group) {
            side.turnTimers.removeValue(forKey: w.id)?.cancel()
            w.promise.fail(error(onItsWay))
        }
    }

    /// Waiter `id`'s write came back: answered, or (refused by a lock a transaction took without
    /// waiting in line, with time left) first in line again.
    private func turnCameBack(_ group: GroupID, id: UInt64, _ result: Result<([StatementResult], LogIndex), any Error>) {
        let side = applyState.value
        var locked = false
        if case .success(let (results, _)) = result { locked = results.contains { $0.error == TransactionStep.lockedMessage } }
        let timeLeft = side.turns.first(group).map { NIODeadline.now() < $0.deadline } ?? false
        if let done = side.turns.proposed(group, id: id, lockedAgain: locked && timeLeft) {
            side.turnTimers.removeValue(forKey: id)?.cancel()
            done.promise.completeWith(result)
        }
        // Not from here: a write that failed at once (a stopped node) would recurse through the line.
        applyLoop.execute { self.takeTurns(group) }
    }
}
