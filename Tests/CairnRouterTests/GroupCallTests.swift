import CairnNode
import CairnRaft
import CairnSQLite
import Testing
@testable import CairnRouter

/// The bytes one node's router sends another: every call and answer survives the trip, and bytes from
/// a broken or hostile peer decode to nothing rather than to a wrong call.
@Suite struct GroupCallTests {
    static let command: SQLCommand = {
        var c = SQLCommand(statements: [SQLStatement("INSERT INTO t VALUES (?, :v)", [.integer(7)], named: [":v": .text("x")])],
                           atomic: true, timestampMillis: 1_700_000_000_123, randomSeed: 42)
        c.transaction = .decide(txid: 9, commit: true)
        return c
    }()

    @Test("calls round-trip: operation, group, consistency, statement timeout, and the entry exactly")
    func callsRoundTrip() throws {
        let calls = [
            GroupCall(operation: .execute, group: 12, command: Self.command),
            GroupCall(operation: .query, group: .max, consistency: .stale(freshnessMillis: 250), statementTimeoutNanos: 5_000_000, command: Self.command),
            GroupCall(operation: .request, group: 1, consistency: .local, command: Self.command),
            GroupCall(operation: .readingRequest, group: 2, command: Self.command),
            GroupCall(operation: .executeInTurn, group: 3, statementTimeoutNanos: 2_000_000_000, command: Self.command),
        ]
        for call in calls {
            let back = try #require(GroupCall(decoding: call.encoded()))
            #expect(back.operation == call.operation && back.group == call.group && back.consistency == call.consistency)
            #expect(back.statementTimeoutNanos == call.statementTimeoutNanos && back.turnAgeMillis == call.turnAgeMillis)
            #expect(back.command.encoded() == call.command.encoded())
        }
        var aged = GroupCall(operation: .executeInTurn, group: 4, command: Self.command)
        aged.turnAgeMillis = 1_234
        #expect(GroupCall(decoding: aged.encoded())?.turnAgeMillis == aged.turnAgeMillis, "a write in turn keeps its place in the line")
        #expect(GroupCall(operation: .execute, group: 1, command: Self.command).mayWrite)
        #expect(GroupCall(operation: .request, group: 1, command: Self.command).mayWrite)
        let inTurn = GroupCall(operation: .executeInTurn, group: 1, command: Self.command)
        #expect(inTurn.mayWrite && inTurn.isWrite, "a write in turn goes to the leader and is never sent twice")
        #expect(!GroupCall(operation: .readingRequest, group: 1, command: Self.command).mayWrite)
        #expect(!GroupCall(operation: .query, group: 1, command: Self.command).mayWrite)
    }

    @Test("answers round-trip, errors with their fields")
    func answersRoundTrip() throws {
        var rows = StatementResult()
        rows.columns = ["a", "b"]
        rows.types = ["INTEGER", ""]
        rows.rows = [[.integer(1), .null], [.real(2.5), .blob([0, 255])]]
        let answers: [GroupAnswer] = [
            .done(results: [rows, StatementResult(error: "no such table: x")], index: 99, wrote: true),
            .done(results: [], index: 0, wrote: false),
            .notLeader(3), .notLeader(noNode), .notHere,
            .notCommitted("leadership changed"), .outcomeUnknown("timed out"),
            .failed(.databaseDropped), .failed(.entryTooLarge(bytes: 30 << 20, limit: 20 << 20)),
            .failed(.tooStale(lastContactMillis: nil, freshnessMillis: 10)), .failed(.tooStale(lastContactMillis: 70, freshnessMillis: 10)),
            .failed(.failed("disk full")),
            .refused(status: 403, message: "the request writes"),
        ]
        for answer in answers {
            #expect(GroupAnswer(decoding: answer.encoded()) == answer, "\(answer)")
        }
    }

    @Test("runtime errors become answers that say whether retrying is safe")
    func errorsMapToAnswers() {
        #expect(GroupAnswer(RuntimeError.notLeader(leader: 4), write: true) == .notLeader(4))
        #expect(GroupAnswer(RuntimeError.unknownGroup(8), write: true) == .notHere)
        #expect(GroupAnswer(RuntimeError.proposalLost, write: true) == .notCommitted(RuntimeError.proposalLost.description))
        // A write that timed out may have committed; a read that did has no effect to repeat.
        #expect(GroupAnswer(RuntimeError.timedOut("x"), write: true) == .outcomeUnknown(RuntimeError.timedOut("x").description))
        #expect(GroupAnswer(RuntimeError.timedOut("x"), write: false) == .notCommitted(RuntimeError.timedOut("x").description))
        #expect(GroupAnswer(RuntimeError.databaseDropped, write: false) == .failed(.databaseDropped))
        // A shutdown or a storage failure fails writes that may already be on a quorum: never "safe to retry".
        #expect(GroupAnswer(RuntimeError.shutDown, write: true) == .outcomeUnknown(RuntimeError.shutDown.description))
        #expect(GroupAnswer(RuntimeError.failed("disk"), write: true) == .outcomeUnknown(RuntimeError.failed("disk").description))
        #expect(GroupAnswer(RuntimeError.failed("disk"), write: false) == .failed(.failed("disk")))
        // An error the runtime does not name ends a read at once rather than being retried to the deadline.
        struct Odd: Error {}
        #expect(GroupAnswer(Odd(), write: false) == .refused(status: 503, message: "Odd()"))
        #expect(GroupAnswer(Odd(), write: true) == .outcomeUnknown("Odd()"))
    }

    @Test("a statement timeout past Int64's range is refused: it would overflow a deadline")
    func timeoutBound() {
        var call = GroupCall(operation: .query, group: 1, statementTimeoutNanos: UInt64(Int64.max), command: Self.command)
        #expect(GroupCall(decoding: call.encoded()) != nil)
        call.statementTimeoutNanos = UInt64(Int64.max) + 1
        #expect(GroupCall(decoding: call.encoded()) == nil)
    }

    @Test("truncated, extended and random bytes never decode to a call or an answer they are not")
    func hostileBytes() {
        let call = GroupCall(operation: .execute, group: 12, command: Self.command).encoded()
        for cut in 0..<call.count {
            #expect(GroupCall(decoding: Array(call[..<cut])) == nil, "cut at \(cut)")
        }
        var badKind = call
        badKind[0] = 9
        #expect(GroupCall(decoding: badKind) == nil)
        var badConsistency = call
        badConsistency[9] = 7
        #expect(GroupCall(decoding: badConsistency) == nil)
        let answer = GroupAnswer.done(results: [StatementResult(error: "e")], index: 5, wrote: true).encoded()
        for cut in 0..<answer.count {
            #expect(GroupAnswer(decoding: Array(answer[..<cut])) == nil, "cut at \(cut)")
        }
        #expect(GroupAnswer(decoding: GroupAnswer.notLeader(2).encoded() + [0]) == nil)
        #expect(GroupAnswer(decoding: [6, 200, 0, 0, 0, 0, 0, 0, 0]) == nil, "a refusal's status must be an HTTP error status")
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<5_000 {
            let bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = GroupCall(decoding: bytes)
            _ = GroupAnswer(decoding: bytes)
        }
    }
}
