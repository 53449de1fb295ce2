/// Known-wrong variants of placement. They exist to prove that the placement simulator catches each
/// class of bug, as `RaftMutation` does for the consensus core.
@_spi(Mutants) public enum PlacementMutation: String, Sendable, CaseIterable {
    /// A move removes the old copy as soon as it starts, before the new one has caught up.
    case removeBeforeAdd = "remove-before-add"
    /// Moves start whatever the snapshots already coming into their target.
    case noInboundLimit = "no-inbound-limit"
    /// Rebalancing goes on while a group is below its replication factor.
    case rebalanceWhileUnderReplicated = "rebalance-while-under-replicated"
    /// Re-replication may pick a node that already holds the group.
    case addWhereHeld = "add-where-held"
    /// Leader balancing hands a group only to a fellow voter of it, never along a chain.
    case leadersHandDownOnly = "leaders-hand-down-only"
}
