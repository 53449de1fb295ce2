import CairnRaft
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// How a call to another node ended, as far as this node can tell.
enum CallOutcome: Sendable {
    case answered([UInt8])
    /// It never left this node: the other node cannot have acted on it.
    case notSent(String)
    /// It was sent and no answer came (the connection closed, the deadline passed): the other node
    /// may have acted on it.
    case lost(String)
}

/// Calls sent and not yet answered, each with its deadline. Answers, drops and lost connections are
/// reported by the transport on its event loop; each call is finished exactly once, by whichever
/// comes first.
final class PendingCalls: Sendable {
    private struct Waiting {
        var peer: NodeID
        var done: @Sendable (CallOutcome) -> Void
        var deadline: NIODeadline
        var timeoutMillis: Int64
    }

    /// Ids start at random: an answer a peer sends late, to this process's previous run, must not
    /// match a call of this run.
    private struct State {
        var next = UInt64.random(in: 1...(UInt64.max >> 1))
        var waiting: [UInt64: Waiting] = [:]
        var sweeping = false
        /// No waiting call's deadline is before this: a sweep before it has nothing to scan.
        var earliest = NIODeadline.distantFuture
    }

    private let state = NIOLockedValueBox(State())
    /// How often calls past their deadline are ended: one sweep for all of them, instead of a timer
    /// armed and cancelled per call (each of those a wake-up of the timer's thread in a forwarded
    /// request's path). A call may outlive its deadline by up to this much. Sweeps run only while
    /// calls wait: an idle node is not woken for them.
    static let sweepMillis: Int64 = 20
    private let sweepLoop = MultiThreadedEventLoopGroup.singleton.next()
    /// Calls waiting at once, at most: past it a new call is refused rather than queued without bound.
    static let maxWaiting = 16_384

    var count: Int { state.withLockedValue { $0.waiting.count } }

    /// Registers a call to `peer`, hands its id to `send` (which returns false if it could not queue
    /// it), and waits for its outcome.
    func call(_ peer: NodeID, timeoutMillis: Int64, send: (UInt64) -> Bool) async -> CallOutcome {
        await withCheckedContinuation { continuation in
            call(peer, timeoutMillis: timeoutMillis, send: send) { continuation.resume(returning: $0) }
        }
    }

    /// `call` for a caller that must not wait (one on an event loop): `done` gets the outcome, once,
    /// on whichever thread ends the call.
    func call(_ peer: NodeID, timeoutMillis: Int64, send: (UInt64) -> Bool, done: @escaping @Sendable (CallOutcome) -> Void) {
        let deadline = NIODeadline.now() + .milliseconds(max(1, timeoutMillis))
        let (id, startSweep): (UInt64?, Bool) = state.withLockedValue { s in
            guard s.waiting.count < Self.maxWaiting else { return (nil, false) }
            defer { s.next += 1 }
            s.waiting[s.next] = Waiting(peer: peer, done: done, deadline: deadline, timeoutMillis: timeoutMillis)
            s.earliest = min(s.earliest, deadline)
            let start = !s.sweeping
            s.sweeping = true
            return (s.next, start)
        }
        if startSweep { scheduleSweep() }
        guard let id else {
            done(.notSent("this node has \(Self.maxWaiting) calls to other nodes waiting already"))
            return
        }
        if !send(id) { finish(id, .notSent("node \(peer) is not a known peer of this node yet")) }
    }

    private func scheduleSweep() {
        sweepLoop.scheduleTask(in: .milliseconds(Self.sweepMillis)) { [weak self] in
            guard let self, self.endOverdue(now: .now()) else { return }
            self.scheduleSweep()
        }
    }

    /// Ends every call whose deadline has passed; whether calls still wait (and sweeping goes on).
    @discardableResult
    func endOverdue(now: NIODeadline) -> Bool {
        let (overdue, more) = state.withLockedValue { s -> ([Waiting], Bool) in
            var overdue: [Waiting] = []
            if s.earliest <= now {
                // Calls answered since keep `earliest` low: a scan then finds nothing, and moves it up.
                let ids = s.waiting.filter { $0.value.deadline <= now }.map(\.key)
                overdue = ids.compactMap { s.waiting.removeValue(forKey: $0) }
                s.earliest = s.waiting.values.lazy.map(\.deadline).min() ?? .distantFuture
            }
            s.sweeping = !s.waiting.isEmpty
            if !s.sweeping { s.earliest = .distantFuture }
            return (overdue, s.sweeping)
        }
        for w in overdue {
            w.done(.lost("no answer from node \(w.peer) within \(w.timeoutMillis) ms"))
        }
        return more
    }

    /// Ends one call; a second ending (a late answer after the deadline) does nothing.
    func finish(_ id: UInt64, _ outcome: CallOutcome, from peer: NodeID? = nil) {
        let waiting = state.withLockedValue { s -> Waiting? in
            guard let w = s.waiting[id], peer == nil || w.peer == peer else { return nil }
            return s.waiting.removeValue(forKey: id)
        }
        guard let waiting else { return }
        waiting.done(outcome)
    }

    /// Ends every call to `peer` (its connection closed).
    func lost(_ peer: NodeID, _ why: String) {
        let ended = state.withLockedValue { s -> [Waiting] in
            let ids = s.waiting.filter { $0.value.peer == peer }.map(\.key)
            return ids.compactMap { s.waiting.removeValue(forKey: $0) }
        }
        for w in ended {
            w.done(.lost(why))
        }
    }
}
