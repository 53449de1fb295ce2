import CairnRaft
import CairnSQLite
import Foundation

/// The groups a split makes. The splitting shard's state machine makes the child's first state as a
/// snapshot file (`ShardSplit`) and hands it here before it commits its own half; the file is kept as
/// `snapshots/split-<child>.sqlite` (durable) and then turned into a group: its log created with that
/// snapshot as its start, the file moved to where the group's snapshots live, the group opened. Every
/// step is safe to repeat, and startup repeats whatever a crash interrupted.
extension NodeRuntime {
    func splitChildPath(_ child: GroupID) -> String { snapshotDirectory + "/split-\(child).sqlite" }

    /// The split handler (on the apply loop).
    func keepSplitChild(_ split: ShardSplit, file: String) throws {
        if hosts(split.child) || hadCopy(of: split.child) {
            // The split applied again after a crash, and the child has lived on since: it stays as it
            // is. Or this node's copy of it was deleted since (moved away): a copy made from the split
            // would come back as a founding voter with none of the deleted one's memory; if the
            // catalog gives this node the child again, it gets an empty copy and a snapshot.
            try? FileManager.default.removeItem(atPath: file)
            return
        }
        let kept = splitChildPath(split.child)
        adoptingSplitChildren.withLockedValue { _ = $0.insert(split.child) }
        guard rename(file, kept) == 0 else { throw RuntimeError.raft("cannot keep the split child's file at \(kept)") }
        try SQLStateMachine.syncDirectory(snapshotDirectory)
        log("node \(config.nodeID): shard split: group \(split.child) takes slots \(split.mid)..<\(split.hi)")
        adoptSplitChildren()
    }

    /// Turns every kept split child's file into a group, after the pass before (if any) is done.
    @discardableResult
    func adoptSplitChildren() -> Task<Void, Never> {
        splitAdoption.withLockedValue { latest in
            let previous = latest
            let pass = Task {
                await previous?.value
                await self.adoptKeptSplitChildren()
            }
            latest = pass
            return pass
        }
    }

    private func adoptKeptSplitChildren() async {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: snapshotDirectory)) ?? []
        for name in names.sorted() where name.hasPrefix("split-") && name.hasSuffix(".sqlite") {
            guard let child = GroupID(name.dropFirst("split-".count).dropLast(".sqlite".count)) else { continue }
            let file = snapshotDirectory + "/" + name
            adoptingSplitChildren.withLockedValue { _ = $0.insert(child) }
            defer { adoptingSplitChildren.withLockedValue { _ = $0.remove(child) } }
            do {
                let meta = try SQLStateMachine.readMeta(ofFile: file)
                guard meta.index == ShardSplit.childSnapshotIndex, let conf = meta.conf else {
                    throw RuntimeError.raft("\(file) is not a split child's first state")
                }
                if !hosts(child) && hadCopy(of: child) {
                    try FileManager.default.removeItem(atPath: file)
                    continue
                }
                let created: Bool = try await raftLoop.submit {
                    let store = self.raftState.value.store
                    guard store.group(child) == nil else { return false }
                    _ = try store.createGroup(child, snapshot: SnapshotMetadata(index: meta.index, term: ShardSplit.childSnapshotTerm, confState: conf))
                    return true
                }.get()
                let final = snapshotPath(child, meta.index)
                if created || !FileManager.default.fileExists(atPath: final) {
                    guard rename(file, final) == 0 else { throw RuntimeError.raft("cannot move \(file) to \(final)") }
                    try SQLStateMachine.syncDirectory(snapshotDirectory)
                } else {
                    try FileManager.default.removeItem(atPath: file)
                }
                try await openGroup(child)
                log("node \(config.nodeID): created group \(child), a split's child, with voters \(conf.voters.sorted())")
            } catch {
                log("node \(config.nodeID): cannot create the split child group \(child) from \(file): \(error)")
            }
        }
    }

    /// Whether this node's own split entry is making `group` here (it must not be created otherwise).
    public func isMakingSplitChild(_ group: GroupID) -> Bool {
        adoptingSplitChildren.withLockedValue { $0.contains(group) }
    }

    /// The entry `group`'s database has applied here, if this node hosts it.
    public func appliedIndex(of group: GroupID) -> LogIndex? {
        readers.withLockedValue { $0[group] }?.state.applied
    }
}
