import Foundation
import Testing
@testable import CairnRouter

/// Calls to other nodes end exactly once: by their answer, or by their deadline when none comes.
@Suite struct PendingCallsTests {
    @Test("a call nobody answers ends as lost once its deadline passes (by the sweep, not a timer of its own), and a late answer changes nothing")
    func unansweredCallEndsAtItsDeadline() async {
        let pending = PendingCalls()
        var sentID: UInt64 = 0
        let started = Date()
        let outcome = await pending.call(7, timeoutMillis: 150) { id in
            sentID = id
            return true
        }
        let waited = Date().timeIntervalSince(started) * 1000
        guard case .lost(let why) = outcome else {
            Issue.record("expected lost, got \(outcome)")
            return
        }
        #expect(why.contains("no answer from node 7 within 150 ms"))
        // Not before its deadline. (How long after depends on how soon this test's task runs again in
        // a process full of other tests: not a bound worth asserting.)
        #expect(waited >= 150)
        #expect(pending.count == 0)
        pending.finish(sentID, .answered([1]), from: 7)
        #expect(pending.count == 0)
    }

    @Test("an answer ends its call at once, only from the node it was sent to")
    func answerEndsTheCall() async {
        let pending = PendingCalls()
        let started = Date()
        let outcome = await pending.call(3, timeoutMillis: 60_000) { id in
            // From another node: ignored. From the node called: the answer.
            pending.finish(id, .answered([9]), from: 4)
            pending.finish(id, .answered([1, 2]), from: 3)
            return true
        }
        guard case .answered(let bytes) = outcome else {
            Issue.record("expected an answer, got \(outcome)")
            return
        }
        #expect(bytes == [1, 2])
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(pending.count == 0)
    }
}
