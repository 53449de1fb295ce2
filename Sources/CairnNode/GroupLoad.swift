import CairnRaft
import CairnSQLite

/// What one group served on this node since the last look: entries applied with a client's command,
/// reads answered, and the slots its shard guards judged. Splits by load read it on the group's
/// leader (`LoadSplit`); followers count their applies too, and nobody looks.
struct GroupLoad {
    var ops = 0
    let sample: SlotSample
}

extension NodeRuntime {
    func noteLoad(_ group: GroupID, ops: Int) {
        guard ops > 0 else { return }
        groupLoads.withLockedValue { $0[group]?.ops += ops }
    }

    /// The operations `group` served here since the last call, and a sample of the slots its writes
    /// touched meanwhile; nil when the group is not hosted here.
    public func takeLoad(group: GroupID) -> (ops: Int, slots: [Int])? {
        guard let load = groupLoads.withLockedValue({ loads -> GroupLoad? in
            defer { loads[group]?.ops = 0 }
            return loads[group]
        }) else { return nil }
        return (load.ops, load.sample.take())
    }
}

