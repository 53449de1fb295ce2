@testable import CairnNode
import CairnRaft
import CairnSQLite
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// Writes that meet a shard held by a transaction across shards wait in line at the shard's leader,
/// which proposes them, oldest request first, the moment the shard is free (`TurnLines`,
/// `NodeRuntime.executeInTurn`). What a user must see: oldest first, whichever node coordinates; a
/// wait that ends with the shard still held answers "locked" and writes nothing.
@Suite("Turns at a held shard")
struct TurnLinesTests {
    @Test("requests of one age are first come, first served; the first waiter is first again when its write meets a lock")
    func order() {
        var lines = TurnLines<String>(maxWaiters: 10)
        let joined = [lines.join(1, id: 1, since: 1, "a"), lines.join(1, id: 2, since: 2, "b"), lines.join(2, id: 3, since: 3, "c")]
        #expect(joined == [true, true, true])
        // Held: nobody is proposed.
        let whileHeld = lines.next(1, groupFree: false)
        #expect(whileHeld == nil)
        let first = lines.next(1, groupFree: true)?.waiter
        #expect(first == "a")
        // One proposal at a time per group; other groups go on.
        let second = lines.next(1, groupFree: true)
        #expect(second == nil)
        let otherGroup = lines.next(2, groupFree: true)?.waiter
        #expect(otherGroup == "c")
        // "a" met a lock taken around the line: first again, proposed again once free.
        let lockedAgain = lines.proposed(1, id: 1, lockedAgain: true)
        #expect(lockedAgain == nil && lines.first(1) == "a")
        let again = lines.next(1, groupFree: true)?.waiter
        #expect(again == "a")
        let answeredA = lines.proposed(1, id: 1, lockedAgain: false)
        #expect(answeredA == "a")
        let thenB = lines.next(1, groupFree: true)?.waiter
        #expect(thenB == "b")
        let wrongID = lines.proposed(1, id: 1, lockedAgain: false)
        #expect(wrongID == nil, "an answer for a waiter already answered goes to nobody else")
        let answeredB = lines.proposed(1, id: 2, lockedAgain: false)
        #expect(answeredB == "b")
        #expect(!lines.hasLine(1) && lines.count == 1)
        let answeredC = lines.proposed(2, id: 3, lockedAgain: false)
        #expect(answeredC == "c")
        #expect(lines.count == 0 && lines.groups.isEmpty)
        // A proposal that came back after its line was emptied answers nobody.
        let late = lines.proposed(2, id: 3, lockedAgain: false)
        #expect(late == nil)
    }

    @Test("a waiter leaves when its time is up, unless its write is on its way; lines are bounded; a group's line empties whole")
    func leavingAndBounds() {
        var lines = TurnLines<Int>(maxWaiters: 3)
        let joined = [lines.join(5, id: 1, since: 1, 1), lines.join(5, id: 2, since: 2, 2), lines.join(6, id: 3, since: 3, 3), lines.join(6, id: 4, since: 4, 4)]
        #expect(joined == [true, true, true, false], "a fourth waiter is past the bound")
        _ = lines.next(5, groupFree: true)
        let proposing = lines.leave(5, id: 1)
        #expect(proposing == nil, "the first's write is on its way: its answer ends the wait")
        let left = [lines.leave(5, id: 2), lines.leave(5, id: 2)]
        #expect(left == [2, nil])
        let room = lines.join(6, id: 5, since: 5, 5)
        #expect(room)
        let six = lines.removeAll(6), five = lines.removeAll(5)
        #expect(six.map(\.waiter) == [3, 5] && six.map(\.onItsWay) == [false, false])
        #expect(five.map(\.waiter) == [1] && five.map(\.onItsWay) == [true], "the first's write may commit: its outcome is unknown")
        // A new line of the same group: the old write's answer does not reach its first waiter.
        _ = lines.join(5, id: 9, since: 9, 9)
        _ = lines.next(5, groupFree: true)
        let late = lines.proposed(5, id: 1, lockedAgain: false)
        #expect(late == nil && lines.first(5) == 9)
    }

    @Test("older requests go first, at every place in the line but before a write already on its way, and a write locked again goes back by its age")
    func oldestFirst() {
        var lines = TurnLines<String>(maxWaiters: 10)
        _ = lines.join(1, id: 1, since: 500, "young")
        _ = lines.join(1, id: 2, since: 300, "older")
        _ = lines.join(1, id: 3, since: 300, "older, later")
        let first = lines.next(1, groupFree: true)?.waiter
        #expect(first == "older")
        // The oldest of all arrives while "older" is on its way: it goes next, not before it.
        _ = lines.join(1, id: 4, since: 100, "oldest")
        #expect(lines.first(1) == "older")
        // "older" met a lock again: back in line by its age, behind the one older still.
        let back = lines.proposed(1, id: 2, lockedAgain: true)
        #expect(back == nil)
        var order: [String] = []
        while let (id, w) = lines.next(1, groupFree: true) {
            order.append(w)
            _ = lines.proposed(1, id: id, lockedAgain: false)
        }
        #expect(order == ["oldest", "older", "older, later", "young"])
    }

    @Test("a request's age places it on the leader's clock, at most the request's time back")
    func ageIsBounded() {
        let now: UInt64 = 90_000_000
        #expect(NodeRuntime.began(ageMillis: 300, nowMillis: now, requestTimeoutMillis: 10_000) == now - 300)
        #expect(NodeRuntime.began(ageMillis: 0, nowMillis: now, requestTimeoutMillis: 10_000) == now)
        // A peer claiming an age past any request's: as old as a request can be, no older.
        #expect(NodeRuntime.began(ageMillis: .max, nowMillis: now, requestTimeoutMillis: 10_000) == now - 10_000)
        #expect(NodeRuntime.began(ageMillis: 5_000, nowMillis: 3, requestTimeoutMillis: 10_000) == 0)
    }

    private func step(_ step: TransactionStep, _ sql: String...) -> SQLCommand {
        var c = SQLCommand(statements: sql.map { SQLStatement($0) }, timestampMillis: Int64(Date().timeIntervalSince1970 * 1000), randomSeed: 3)
        c.transaction = step
        return c
    }

    @Test("writes that wait at a held group are proposed oldest request first once it is free; one whose wait ends first writes nothing")
    func inTurnAtTheLeader() async throws {
        let c = try LocalCluster(size: 3)
        try await c.startAll()
        let leaderID = try await c.leader()
        let leader = c.nodes[leaderID]!
        _ = try await leader.executeIndexed(group: 1, c.sql("CREATE TABLE t(v INTEGER)"))
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let prepared = try await leader.executeIndexed(group: 1, step(.prepare(txid: 7, anchor: 1, participants: [1], deadlineMillis: now + 60_000,
                                                                                recordsHere: true), "INSERT INTO t VALUES (0)")).results
        #expect(prepared.allSatisfy { $0.error == nil })
        // Held: a write sent the ordinary way is refused.
        #expect(try await leader.executeIndexed(group: 1, c.sql("INSERT INTO t VALUES (99)")).results.first?.error == TransactionStep.lockedMessage)

        let answered = NIOLockedValueBox<[Int]>([])
        var waits: [Int: EventLoopFuture<([StatementResult], LogIndex)>] = [:]
        // The fourth asks last but its request is the oldest: it goes first.
        for (v, age) in [(1, 300), (2, 200), (3, 100), (4, 900)] {
            let f = leader.executeInTurn(group: 1, c.sql("INSERT INTO t VALUES (\(v))"), ageMillis: UInt64(age), waitMillis: 30_000)
            f.whenSuccess { _ in answered.withLockedValue { $0.append(v) } }
            waits[v] = f
        }
        // A short wait ends while the group is still held: locked, nothing written.
        let short = try await leader.executeInTurn(group: 1, c.sql("INSERT INTO t VALUES (50)"), ageMillis: 0, waitMillis: 200).get()
        #expect(short.0.map(\.error) == [TransactionStep.lockedMessage])
        let earlyAnswers = answered.withLockedValue { $0 }
        #expect(earlyAnswers.isEmpty, "nobody's turn came while the group was held")
        // A follower sends the caller to the leader rather than keeping a line of its own.
        let follower = c.nodes.first { $0.key != leaderID }!.value
        await #expect(throws: RuntimeError.self) { _ = try await follower.executeInTurn(group: 1, c.sql("INSERT INTO t VALUES (60)"), ageMillis: 0, waitMillis: 1_000).get() }

        // The finish frees the group: each waiter's write goes in, oldest request first.
        _ = try await leader.executeIndexed(group: 1, step(.finish(txid: 7, commit: true)))
        var indexes: [LogIndex] = []
        for v in [4, 1, 2, 3] {
            let (results, index) = try await waits[v]!.get()
            #expect(results.allSatisfy { $0.error == nil })
            indexes.append(index)
        }
        #expect(indexes == indexes.sorted() && Set(indexes).count == 4)
        let order = answered.withLockedValue { $0 }
        #expect(order == [4, 1, 2, 3])
        let rows = try await leader.query(group: 1, SQLStatement("SELECT v FROM t ORDER BY rowid")).rows
        #expect(rows == [[.integer(0)], [.integer(4)], [.integer(1)], [.integer(2)], [.integer(3)]])
        // Free now: a write in turn goes in at once.
        #expect(try await leader.executeInTurn(group: 1, c.sql("INSERT INTO t VALUES (4)"), ageMillis: 0, waitMillis: 5_000).get().0.first?.error == nil)
        await c.stopAll()
    }
}
