import NIOConcurrencyHelpers
import Testing
@testable import CairnServer

/// Transactions across shards coordinated by one node take their turns at a shard in the order they
/// asked; one whose wait runs out leaves the line without the turn, and the line goes on.
@Suite(.timeLimit(.minutes(1))) struct ShardTurnsTests {
    /// Spins until `done`, for at most 10 s (a loaded machine may be slow; a bug must fail, not hang).
    func until(_ done: () -> Bool) async {
        let giveUp = ContinuousClock.now + .seconds(10)
        while !done() && ContinuousClock.now < giveUp { await Task.yield() }
    }

    @Test("turns at a shard go in the order asked; a free shard's turn is given at once; other shards are not held up")
    func firstComeFirstServed() async throws {
        let turns = ShardTurns()
        let far = ContinuousClock.now + .seconds(30)
        let first = turns.ticket()
        #expect(await turns.take(7, ticket: first, until: far))
        #expect(turns.isBusy(7) && !turns.isBusy(8))
        let order = NIOLockedValueBox<[UInt64]>([])
        var waiting: [Task<Void, Never>] = []
        var tickets: [UInt64] = []
        for _ in 0..<5 {
            let t = turns.ticket()
            tickets.append(t)
            waiting.append(Task {
                if await turns.take(7, ticket: t, until: far) { order.withLockedValue { $0.append(t) } }
            })
            // Each in line before the next asks.
            await until { turns.waiting(at: 7) >= tickets.count }
        }
        let other = turns.ticket()
        #expect(await turns.take(8, ticket: other, until: far))
        turns.release(8, ticket: other)
        var holder = first
        for expected in tickets {
            turns.release(7, ticket: holder)
            await until { order.withLockedValue({ $0.last }) == expected }
            holder = expected
        }
        turns.release(7, ticket: holder)
        for task in waiting { await task.value }
        #expect(order.withLockedValue { $0 } == tickets)
        #expect(!turns.isBusy(7))
    }

    @Test("a waiter whose deadline passes gets no turn and leaves the line; the one behind it gets the next turn; giving back a turn not held changes nothing")
    func deadlinesLeaveTheLine() async throws {
        let turns = ShardTurns()
        let holder = turns.ticket(), late = turns.ticket(), patient = turns.ticket()
        #expect(await turns.take(3, ticket: holder, until: ContinuousClock.now + .seconds(30)))
        // Long enough for both to be in line on a slow machine, short enough for the test.
        let lateDeadline = ContinuousClock.now + .milliseconds(500)
        let lateTurn = Task { await turns.take(3, ticket: late, until: lateDeadline) }
        await until { turns.waiting(at: 3) >= 1 }
        let patientTurn = Task { await turns.take(3, ticket: patient, until: ContinuousClock.now + .seconds(30)) }
        await until { turns.waiting(at: 3) >= 2 }
        #expect(await lateTurn.value == false)
        turns.release(3, ticket: late)
        #expect(turns.waiting(at: 3) == 1)
        turns.release(3, ticket: holder)
        #expect(await patientTurn.value)
        turns.release(3, ticket: patient)
        #expect(!turns.isBusy(3))
    }
}
