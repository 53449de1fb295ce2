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
        var continuation: CheckedContinuation<CallOutcome, Never>
        var deadline: Scheduled<Void>?
    }

    /// Ids start at random: an answer a peer sends late, to this process's previous run, must not
    /// match a call of this run.
    private let state = NIOLockedValueBox<(next: UInt64, waiting: [UInt64: Waiting])>((UInt64.random(in: 1...(UInt64.max >> 1)), [:]))
    private let timers = MultiThreadedEventLoopGroup.singleton
    /// Calls waiting at once, at most: past it a new call is refused rather than queued without bound.
    static let maxWaiting = 16_384

    var count: Int { state.withLockedValue { $0.waiting.count } }

    /// Registers a call to `peer`, hands its id to `send` (which returns false if it could not queue
    /// it), and waits for its outcome.
    func call(_ peer: NodeID, timeoutMillis: Int64, send: (UInt64) -> Bool) async -> CallOutcome {
        await withCheckedContinuation { continuation in
            let id: UInt64? = state.withLockedValue { s in
                guard s.waiting.count < Self.maxWaiting else { return nil }
                defer { s.next += 1 }
                s.waiting[s.next] = Waiting(peer: peer, continuation: continuation)
                return s.next
            }
            guard let id else {
                continuation.resume(returning: .notSent("this node has \(Self.maxWaiting) calls to other nodes waiting already"))
                return
            }
            let timer = timers.next().scheduleTask(in: .milliseconds(max(1, timeoutMillis))) { [self] in
                finish(id, .lost("no answer from node \(peer) within \(timeoutMillis) ms"))
            }
            // The answer may already have come; then the timer has nothing left to end.
            let stillWaiting = state.withLockedValue { s -> Bool in
                guard s.waiting[id] != nil else { return false }
                s.waiting[id]!.deadline = timer
                return true
            }
            if !stillWaiting { timer.cancel() }
            if !send(id) { finish(id, .notSent("node \(peer) is not a known peer of this node yet")) }
        }
    }

    /// Ends one call; a second ending (a late answer after the deadline) does nothing.
    func finish(_ id: UInt64, _ outcome: CallOutcome, from peer: NodeID? = nil) {
        let waiting = state.withLockedValue { s -> Waiting? in
            guard let w = s.waiting[id], peer == nil || w.peer == peer else { return nil }
            return s.waiting.removeValue(forKey: id)
        }
        guard let waiting else { return }
        waiting.deadline?.cancel()
        waiting.continuation.resume(returning: outcome)
    }

    /// Ends every call to `peer` (its connection closed).
    func lost(_ peer: NodeID, _ why: String) {
        let ended = state.withLockedValue { s -> [Waiting] in
            let ids = s.waiting.filter { $0.value.peer == peer }.map(\.key)
            return ids.compactMap { s.waiting.removeValue(forKey: $0) }
        }
        for w in ended {
            w.deadline?.cancel()
            w.continuation.resume(returning: .lost(why))
        }
    }
}
