import CairnRaft
import NIOConcurrencyHelpers

/// First come, first served at each shard, among the transactions across shards this node coordinates.
///
/// A prepared transaction holds its whole shard (`TransactionStep`); one that finds a shard held waits
/// until a replica shows it free and asks again. Polling alone is not fair: a transaction that just
/// arrived can take the shard between two looks of one that has waited a second, and under contention
/// the unlucky wait out the request's time (p99 3.1 s for two-row transactions at 64 clients). Here the
/// waiters of one node queue: each takes its turn at a shard before it prepares there, and gives it
/// back once the shard is finished. The shard's own lock stays the only thing safety rests on; turns
/// only decide who of this node asks next, so transactions coordinated by other nodes, or a turn given
/// back late, cost waiting, never correctness. Turns are taken in shard order, as the prepares are, so
/// two transactions never wait on each other's turns in a cycle.
final class ShardTurns: Sendable {
    private struct Waiter {
        var ticket: UInt64
        var continuation: CheckedContinuation<Bool, Never>
    }

    private struct Line {
        var holder: UInt64
        var waiting: [Waiter] = []
    }

    private struct State {
        var lines: [GroupID: Line] = [:]
        var nextTicket: UInt64 = 1
        var waiters = 0
    }

    /// Waiters on all shards together, at most: beyond it a transaction goes on without a turn (as it
    /// did before turns), rather than the node keeping an unbounded line.
    static let maxWaiters = 65_536

    private let state = NIOLockedValueBox(State())

    /// A ticket for one transaction attempt's turns.
    func ticket() -> UInt64 {
        state.withLockedValue { s in
            defer { s.nextTicket &+= 1 }
            return s.nextTicket
        }
    }

    /// Whether a transaction of this node has or waits for its turn at `group`.
    func isBusy(_ group: GroupID) -> Bool {
        state.withLockedValue { $0.lines[group] != nil }
    }

    /// How many wait in line at `group`.
    func waiting(at group: GroupID) -> Int {
        state.withLockedValue { $0.lines[group]?.waiting.count ?? 0 }
    }

    /// Waits for `ticket`'s turn at `group`, in order of asking, until `deadline`; false if the deadline
    /// came first (the caller treats the shard as held). True at once when the line is too long.
    func take(_ group: GroupID, ticket: UInt64, until deadline: ContinuousClock.Instant) async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let granted: Bool? = state.withLockedValue { s in
                guard var line = s.lines[group] else {
                    s.lines[group] = Line(holder: ticket)
                    return true
                }
                guard s.waiters < Self.maxWaiters else { return nil }
                line.waiting.append(Waiter(ticket: ticket, continuation: continuation))
                s.lines[group] = line
                s.waiters += 1
                return false
            }
            switch granted {
            case true?: continuation.resume(returning: true)
            case nil: continuation.resume(returning: true)
            case false?:
                Task {
                    try? await Task.sleep(until: deadline)
                    self.expire(group, ticket: ticket)
                }
            }
        }
    }

    /// Gives `ticket`'s turn at `group` back: the next waiter has it. A ticket that does not hold the
    /// turn (it went on without one) changes nothing.
    func release(_ group: GroupID, ticket: UInt64) {
        let next: Waiter? = state.withLockedValue { s in
            guard var line = s.lines[group], line.holder == ticket else { return nil }
            guard !line.waiting.isEmpty else {
                s.lines[group] = nil
                return nil
            }
            let waiter = line.waiting.removeFirst()
            s.waiters -= 1
            line.holder = waiter.ticket
            s.lines[group] = line
            return waiter
        }
        next?.continuation.resume(returning: true)
    }

    /// The deadline of a waiter still in line: it leaves without the turn.
    private func expire(_ group: GroupID, ticket: UInt64) {
        let gone: Waiter? = state.withLockedValue { s in
            guard var line = s.lines[group], let at = line.waiting.firstIndex(where: { $0.ticket == ticket }) else { return nil }
            let waiter = line.waiting.remove(at: at)
            s.waiters -= 1
            s.lines[group] = line
            return waiter
        }
        gone?.continuation.resume(returning: false)
    }
}
