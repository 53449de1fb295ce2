import CairnRaft
import CairnSQLite
import CairnStorage
import CairnTransport
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix


/// The apply loop: committed entries into each group's database, snapshots and installs, and reads
/// handed to the read pool once their database has applied far enough.
extension NodeRuntime {
    // MARK: - Apply loop

    /// Applies committed entries on the apply loop and answers the writes waiting on them (proposed
    /// here): they travel with the entries, so a write costs no extra trip to the apply loop.
    /// `deferrable`: a follower's entries that no write on this node waits for; they may be held back
    /// to be applied with the next ones (`followerApplyDelayMillis`).
    func dispatchApply(group: GroupID, entries: [Entry], waiters: [LogIndex: PendingWrite], deferrable: Bool = false) {
        applyLoop.execute {
            let side = self.applyState.value
            if deferrable && self.config.followerApplyDelayMillis > 0 && side.machines[group] != nil
                && side.waitingReads[group]?.isEmpty != false && self.failure == nil {
                return self.holdBack(group, entries)
            }
            var entries = entries
            if let held = self.takeHeld(group) { entries = held + entries }
            self.applyNow(group: group, entries: entries, waiters: waiters)
        }
    }

    /// Keeps a follower's committed entries to apply with the ones after them: with many groups a
    /// Raft pass brings each about one entry, and a SQLite transaction's fixed cost (its locks, the
    /// applied-index page, the apply loop's turn) was most of applying it. Applied after
    /// `followerApplyDelayMillis`, at `maxHeldApplyEntries` or `maxHeldApplyBytes`, or as soon as a
    /// read on this node wants them, whichever comes first.
    private func holdBack(_ group: GroupID, _ entries: [Entry]) {
        let side = applyState.value
        let bytes = entries.reduce(0) { $0 + $1.data.count }
        if side.held[group] == nil {
            side.heldGeneration &+= 1
            side.held[group] = HeldEntries(generation: side.heldGeneration)
            holding.withLockedValue { _ = $0.insert(group) }
            let generation = side.heldGeneration
            applyLoop.scheduleTask(in: .milliseconds(config.followerApplyDelayMillis)) {
                // A later hold of the same group has a timer of its own.
                guard self.applyState.value.held[group]?.generation == generation else { return }
                self.applyHeld(group)
            }
        }
        if let last = side.held[group]!.entries.last, let next = entries.first {
            assert(next.index == last.index + 1, "group \(group): held entries end at \(last.index), the next start at \(next.index)")
        }
        side.held[group]!.entries += entries
        side.held[group]!.bytes += bytes
        let held = side.held[group]!
        if held.entries.count >= config.maxHeldApplyEntries || held.bytes >= config.maxHeldApplyBytes { applyHeld(group) }
    }

    /// The entries `group` holds back, no longer held.
    func takeHeld(_ group: GroupID) -> [Entry]? {
        guard let held = applyState.value.held.removeValue(forKey: group) else { return nil }
        holding.withLockedValue { _ = $0.remove(group) }
        return held.entries
    }

    /// Applies what `group` holds back, now. On the apply loop.
    func applyHeld(_ group: GroupID) {
        guard let entries = takeHeld(group) else { return }
        applyNow(group: group, entries: entries, waiters: [:])
    }

    /// Applies what `group` holds back before the caller looks at its database outside a read (whether
    /// SQL only reads, against its schema; a backup's copy; whether a retired copy saw its drop).
    func applyHeldFirst(_ group: GroupID) async {
        guard holding.withLockedValue({ $0.contains(group) }) else { return }
        try? await applyLoop.submit { self.applyHeld(group) }.get()
    }

    /// Applies `entries` in one transaction and answers `waiters`.
    private func applyNow(group: GroupID, entries: [Entry], waiters: [LogIndex: PendingWrite]) {
        let side = self.applyState.value
        if let why = self.failure {
            for w in waiters.values { w.promise.fail(RuntimeError.failed(why)) }
            return
        }
        guard let machine = side.machines[group] else {
            // Committed, but its group left this node before applying it here.
            for w in waiters.values { w.promise.fail(RuntimeError.timedOut("applying the write: its group left this node; its outcome is unknown")) }
            return
        }
        let fresh = entries.filter { $0.index > machine.appliedIndex }
        // Entries a snapshot already covered: whether a write among them took effect is unknown here.
        for e in entries where e.index <= machine.appliedIndex { waiters[e.index]?.promise.fail(RuntimeError.outcomeUnknown) }
        guard !fresh.isEmpty else { return }
        let batch: [(index: LogIndex, change: SQLStateMachine.Change)] = fresh.map { e in
            if e.kind == .normal, !e.data.isEmpty, let cmd = SQLCommand(decoding: e.data) { return (e.index, .command(cmd)) }
            return (e.index, .empty(e.kind == .confChange ? ConfState(decoding: e.data) : nil))
        }
        side.bytesSinceSnapshot[group, default: 0] += fresh.reduce(0) { $0 + $1.data.count }
        let results: [[StatementResult]]
        let started = DispatchTime.now().uptimeNanoseconds
        do {
            results = try machine.apply(batch: batch)
        } catch {
            // Applying later entries over missing ones would make this replica diverge: stop instead.
            self.fail("group \(group): cannot apply entries \(fresh.first!.index)...\(fresh.last!.index): \(error)")
            for e in fresh { waiters[e.index]?.promise.fail(RuntimeError.failed(self.failure ?? "\(error)")) }
            return
        }
        let applied = DispatchTime.now().uptimeNanoseconds
        RuntimeMetrics.applyBatch.recordNanoseconds(Int64(applied - started))
        self.noteLoad(group, ops: batch.count { if case .command = $0.change { true } else { false } })
        if !waiters.isEmpty {
            for (e, r) in zip(fresh, results) {
                guard let pending = waiters[e.index] else { continue }
                if pending.term != e.term {
                    pending.promise.fail(RuntimeError.proposalLost)
                } else if let dropped = machine.droppedAt, e.index > dropped {
                    pending.promise.fail(RuntimeError.databaseDropped)
                } else {
                    RuntimeMetrics.write.recordNanoseconds(Int64(applied &- pending.proposedNanos))
                    pending.promise.succeed((r, e.index))
                }
            }
        }
        self.serveWaitingReads(group)
        if side.turns.hasLine(group) { self.takeTurns(group) }
        self.maybeSnapshot(group)
    }

    /// Every `snapshotEveryEntries` applied entries (or `snapshotEveryBytes`), copies the database on the snapshot thread, then
    /// compacts the log through the copy's index.
    func maybeSnapshot(_ group: GroupID) {
        let side = applyState.value
        guard config.snapshotEveryEntries > 0, let machine = side.machines[group], !side.snapshotInProgress.contains(group),
              machine.appliedIndex >= (side.lastSnapshotIndex[group] ?? 0) + config.snapshotEveryEntries
                || (side.bytesSinceSnapshot[group] ?? 0) >= config.snapshotEveryBytes else { return }
        side.bytesSinceSnapshot[group] = 0
        side.snapshotInProgress.insert(group)
        let source = machine.path, temporary = snapshotDirectory + "/group-\(group).copying"
        let directory = snapshotDirectory
        snapshotPool.runIfActive(eventLoop: applyLoop) { () throws -> (index: LogIndex, conf: ConfState?) in
            let meta = try SQLStateMachine.writeSnapshot(of: source, to: temporary)
            guard rename(temporary, Self.snapshotPath(in: directory, group: group, index: meta.index)) == 0 else {
                throw RuntimeError.raft("cannot name the snapshot of group \(group)")
            }
            // The log is compacted past this snapshot next: its name must survive power loss first.
            try DurableFile.sync(directory)
            return meta
        }.whenComplete { result in
            let side = self.applyState.value
            side.snapshotInProgress.remove(group)
            switch result {
            case .success(let meta):
                side.lastSnapshotIndex[group] = max(side.lastSnapshotIndex[group] ?? 0, meta.index)
                self.raftLoop.execute { self.compact(group, through: meta.index, conf: meta.conf) }
            case .failure(let error):
                self.log("node \(self.config.nodeID) group \(group): snapshot failed: \(error)")
            }
        }
    }

    func compact(_ group: GroupID, through index: LogIndex, conf: ConfState?) {
        let side = raftState.value
        guard let g = side.groups[group], index > g.storage.snapshotMetadata.index else { return }
        do {
            // No membership recorded in the database means none was applied since the last compaction point.
            try side.store.compact(group: group, through: index, confState: conf ?? g.storage.snapshotMetadata.confState)
            snapshotCounts.withLockedValue { $0.taken += 1 }
            removeSnapshots(of: group, before: index)
        } catch {
            log("node \(config.nodeID) group \(group): cannot compact the log through \(index): \(error)")
        }
    }

    /// Replaces the group's database with a snapshot received from the leader (already on disk).
    func dispatchInstall(group: GroupID, index: LogIndex) {
        let file = snapshotPath(group, index)
        applyLoop.execute {
            let side = self.applyState.value
            // The snapshot covers every entry held back: Raft installs one only past its commit index.
            if let held = self.takeHeld(group), let last = held.last {
                assert(last.index <= index, "group \(group): entry \(last.index) was held back past the snapshot at \(index)")
            }
            guard let machine = side.machines[group], machine.appliedIndex < index else { return }
            do {
                try machine.install(snapshotFile: file)
            } catch {
                self.fail("group \(group): cannot install the snapshot at \(index): \(error)")
                return
            }
            side.lastSnapshotIndex[group] = index
            self.snapshotCounts.withLockedValue { $0.installed += 1 }
            self.removeSnapshots(of: group, before: index)
            self.serveWaitingReads(group)
            if side.turns.hasLine(group) { self.takeTurns(group) }
        }
    }

    func serveWaitingReads(_ group: GroupID) {
        let side = applyState.value
        guard let machine = side.machines[group], var waiting = side.waitingReads[group] else { return }
        let ready = waiting.filter { $0.index <= machine.appliedIndex }
        waiting.removeAll { $0.index <= machine.appliedIndex }
        side.waitingReads[group] = waiting
        for r in ready { run(r.request, on: machine.reads) }
    }

    /// Serves a read once the database has applied through `index`: at once if it has (from any
    /// thread), otherwise when the apply loop gets there. `everything`: the read is to see every entry
    /// its node committed (the local and stale levels), including those held back (`holdBack`), as it
    /// would without the delay (a watcher polling a replica, such as a transaction waiting for a shard,
    /// would otherwise wait it out). A linearizable read needs nothing past its read index.
    func serve(_ read: ReadRequest, at index: LogIndex, everything: Bool = false) {
        noteLoad(read.group, ops: 1)
        guard let reader = readers.withLockedValue({ $0[read.group] }) else {
            return read.promise.fail(RuntimeError.unknownGroup(read.group))
        }
        if reader.state.applied >= index && !(everything && holding.withLockedValue({ $0.contains(read.group) })) {
            return run(read, on: reader)
        }
        applyLoop.execute {
            let side = self.applyState.value
            guard let machine = side.machines[read.group] else { return read.promise.fail(RuntimeError.unknownGroup(read.group)) }
            self.applyHeld(read.group)
            if machine.appliedIndex >= index {
                self.run(read, on: machine.reads)
            } else {
                side.waitingReads[read.group, default: []].append(WaitingRead(index: index, request: read))
            }
        }
    }

    /// Runs a read on the read pool, on a read connection of its own.
    func run(_ read: ReadRequest, on reader: ReadConnections) {
        readPool.submit { state in
            guard case .active = state else { return read.promise.fail(RuntimeError.shutDown) }
            let at = reader.state
            if at.dropped != nil { return read.promise.fail(RuntimeError.databaseDropped) }
            read.promise.succeed((reader.query(read.statements, timeoutNanos: read.timeoutNanos), at.applied))
        }
    }
}
