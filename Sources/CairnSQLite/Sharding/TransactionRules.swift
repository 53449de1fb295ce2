/// The decisions of two-phase commit across shards, pure: the shard's state machine (`CrossShardApply`)
/// and the coordinator (`CairnServer`) act on them, and the protocol simulation
/// (`TwoPhaseSimulationTests`) drives them through crashes, lost messages and late deliveries.
public enum TransactionRules {
    /// What a participant does with a prepare.
    public enum PrepareGate: Sendable, Equatable {
        /// Run the statements: their success is the vote.
        case run
        /// The anchor already decided this transaction (a decide or resolve arrived first): vote no.
        case alreadyDecided(String)
        /// Another transaction holds the shard: vote no; the coordinator may try again.
        case locked
    }

    /// `recordedState`: what this shard recorded of the transaction: the anchor its pending record or
    /// outcome, any participant the outcome it finished. A prepare that finds one came late (after an
    /// abort by recovery) or twice; running it would lock the shard, or apply the transaction again.
    public static func prepare(recordedState: String?, locked: Bool) -> PrepareGate {
        if let state = recordedState { return .alreadyDecided(state) }
        if locked { return .locked }
        return .run
    }

    /// The anchor's record after a decide (`commit` says which) or a resolve (`commit` nil), at the
    /// entry's own time. Returns the state to answer and whether it must be written.
    /// - pending + decide → the decision (compare-and-set: only from pending);
    /// - pending + resolve → aborted once the entry's time is past the deadline, else still pending;
    /// - decided → unchanged, whatever comes;
    /// - unknown → aborted, recorded (so a late prepare of the anchor fails).
    public static func anchor(recorded: (state: String, deadlineMillis: Int64)?, commit: Bool?, entryMillis: Int64) -> (state: String, write: Bool) {
        guard let recorded else { return (TransactionStep.aborted, true) }
        guard recorded.state == TransactionStep.pending else { return (recorded.state, false) }
        if let commit { return (commit ? TransactionStep.committed : TransactionStep.aborted, true) }
        return entryMillis > recorded.deadlineMillis ? (TransactionStep.aborted, true) : (TransactionStep.pending, false)
    }

    /// The coordinator's decision: commit only when every participant voted yes (a lost vote is a no).
    public static func commits(votes: [Bool?]) -> Bool {
        !votes.isEmpty && votes.allSatisfy { $0 == true }
    }
}
