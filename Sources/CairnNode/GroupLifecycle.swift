import CairnRaft
import CairnSQLite
import CairnStorage
import CairnTransport
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A group's life on this node: created, opened from disk (its database, its log, its snapshots
/// reconciled), and retired with its files.
extension NodeRuntime {
    /// Creates a group with an initial membership (every initial member calls this with the same voters).
    public func bootstrapGroup(_ id: GroupID, voters: [NodeID]) async throws {
        try await raftLoop.submit {
            let store = self.raftState.value.store
            guard store.group(id) == nil else { return }
            // Files a deleted copy left (a crash between forgetting the group and deleting them) hold
            // entries the new log does not: they would stop the group from opening. (Without a
            // tombstone, such files mean a lost log, and the group refuses to open, saying so.)
            if self.hadCopy(of: id) {
                for file in SQLStateMachine.files(of: self.config.dataDirectory + "/group-\(id).sqlite") { try? FileManager.default.removeItem(atPath: file) }
                self.removeSnapshots(of: id, before: .max)
            }
            _ = try store.createGroup(id, confState: ConfState(voters: voters))
        }.get()
        try await openGroup(id)
    }

    /// `DATA_DIR/snapshots/group-<group>.<index>.sqlite`
    static func snapshotPath(in directory: String, group: GroupID, index: LogIndex) -> String {
        directory + "/group-\(group).\(index).sqlite"
    }

    func snapshotPath(_ group: GroupID, _ index: LogIndex) -> String {
        Self.snapshotPath(in: snapshotDirectory, group: group, index: index)
    }

    func openGroup(_ id: GroupID) async throws {
        let path = config.dataDirectory + "/group-\(id).sqlite"
        let snapshotPath: @Sendable (LogIndex) -> String = { [directory = snapshotDirectory] index in
            Self.snapshotPath(in: directory, group: id, index: index)
        }
        // Where the log starts: the database must hold at least that much.
        let floor: LogIndex = try await raftLoop.submit {
            guard let storage = self.raftState.value.store.group(id) else { throw RuntimeError.unknownGroup(id) }
            // The file itself is streamed by the runtime (`streamSnapshot`); the message carries only metadata.
            storage.snapshotData = { meta in
                guard FileManager.default.fileExists(atPath: snapshotPath(meta.index)) else {
                    throw RuntimeError.raft("snapshot file for entry \(meta.index) is missing")
                }
                return []
            }
            return storage.snapshotMetadata.index
        }.get()
        let applied = try await applyLoop.submit {
            let side = self.applyState.value
            let machine = try side.machines[id] ?? SQLStateMachine(path: path)
            side.machines[id] = machine
            machine.splitHandler = { [weak self] split, file in try self?.keepSplitChild(split, file: file) }
            self.readers.withLockedValue { $0[id] = machine.reads }
            self.consistencyRecords.withLockedValue { $0[id] = machine.consistency }
            self.groupLoads.withLockedValue { $0[id] = GroupLoad(sample: machine.slotSample) }
            let record = machine.consistency, log = self.log, node = self.config.nodeID
            // A divergence outlives restarts: the copy is still wrong until an operator replaces it.
            let marker = self.config.dataDirectory + "/diverged-group-\(id).json"
            if let data = FileManager.default.contents(atPath: marker), let m = try? JSONDecoder().decode(ConsistencyRecord.Mismatch.self, from: data) {
                record.restore(m)
                log("node \(node) group \(id): this replica diverged from its leader at entry \(m.index) (\(marker)); not ready until it is replaced")
            }
            record.onMismatch = { m in
                log("node \(node) group \(id): DIVERGED: this replica's digest at entry \(m.index) is \(String(m.mine, radix: 16)), the leader's \(String(m.leader, radix: 16)); this node is not ready until it is replaced")
                if let data = try? JSONEncoder().encode(m) { FileManager.default.createFile(atPath: marker, contents: data) }
            }
            machine.digestScheduler = { [snapshotPool = self.snapshotPool] pinned in
                snapshotPool.submit { state in
                    guard case .active = state else { return }
                    do {
                        record.recordMine(try pinned.digest())
                    } catch {
                        log("node \(node) group \(id): cannot take the digest at entry \(pinned.index): \(error)")
                    }
                }
            }
            if machine.appliedIndex < floor {
                // Power loss took transactions SQLite had not synced, or a crash interrupted an install:
                // the log no longer has those entries, but the snapshot they went into does.
                let file = snapshotPath(floor)
                guard FileManager.default.fileExists(atPath: file) else {
                    throw RuntimeError.raft("group \(id): the log starts after entry \(floor) but the database holds only \(machine.appliedIndex) and the snapshot \(file) is missing")
                }
                try machine.install(snapshotFile: file)
                self.log("group \(id): reinstalled the snapshot at \(floor) (the database was at an earlier entry)")
            }
            side.lastSnapshotIndex[id] = max(side.lastSnapshotIndex[id] ?? 0, floor)
            return machine.appliedIndex
        }.get()
        let nodeID = config.nodeID, electionTicks = config.electionTimeoutTicks
        try await raftLoop.submit {
            guard self.raftState.value.groups[id] == nil, let storage = self.raftState.value.store.group(id) else { return }
            // Entries are applied only once synced; a log that ends before the database lost synced
            // records (corruption at its very end looks like a torn write). Refuse, rather than
            // run with a history shorter than what this node already acknowledged and applied.
            let last = storage.lastIndex()
            guard applied <= last else {
                throw RuntimeError.raft("group \(id): the database has applied entry \(applied) but the write-ahead log ends at \(last): the log lost entries that were synced (corruption at its end); refusing to start. Replace this node: remove it from the cluster and join one with an empty data directory")
            }
            var c = RaftConfig(id: nodeID, randomSeed: UInt64(UInt(bitPattern: ObjectIdentifier(storage).hashValue)) ^ id)
            c.electionTimeoutTicks = electionTicks
            c.appliedIndex = applied
            // A copy this node deleted earlier: this one goes on in its term, with its vote (restored
            // here, so a crash right after the group was created cannot lose them).
            if let t = try self.tombstone(of: id) {
                if storage.hardState.term < t.term {
                    try self.raftState.value.store.persist([GroupWrite(group: id, hardState: HardState(term: t.term, vote: t.vote, commit: storage.hardState.commit))])
                }
                c.voteFloor = t.lastEntry
            }
            self.raftState.value.groups[id] = Group(node: try RawNode(config: c, storage: storage), storage: storage)
            self.raftState.value.touched.insert(id)
            // A new core numbers its heartbeat rounds from 1 again.
            self.raftState.value.leaseClocks[id] = LeaseClock()
            self.leaderHints.withLockedValue { _ = $0.removeValue(forKey: id) }
            self.hosted.withLockedValue { _ = $0.insert(id) }
        }.get()
    }

    /// Removes a group's snapshot files older than `index`.
    func removeSnapshots(of group: GroupID, before index: LogIndex) {
        let prefix = "group-\(group)."
        for name in (try? FileManager.default.contentsOfDirectory(atPath: snapshotDirectory)) ?? [] where name.hasPrefix(prefix) {
            let middle = name.dropFirst(prefix.count).split(separator: ".").first.map(String.init) ?? ""
            if let i = LogIndex(middle), i < index { try? FileManager.default.removeItem(atPath: snapshotDirectory + "/" + name) }
        }
    }

    /// Deletes this node's copy of a group (its database was dropped, or moved to other nodes): the
    /// log forgets it durably, then its database and snapshot files go. Requests waiting on it fail.
    public func retireGroup(_ id: GroupID) async throws {
        guard id != 0 else { throw RuntimeError.raft("the metadata group cannot be retired") }
        // Read before the apply loop forgets it: once the drop entry applied here, every entry after it
        // is refused by every replica, so a write proposed after it is known never to take effect.
        // (A drop entry this node committed but held back is applied first.)
        await applyHeldFirst(id)
        let droppedAt = readers.withLockedValue { $0[id] }?.state.dropped
        try await raftLoop.submit {
            let side = self.raftState.value
            guard side.groups[id] != nil, let storage = side.store.group(id) else { return }
            // A dropped database's group never comes back: nothing to keep.
            if droppedAt == nil { try self.writeTombstone(of: id, storage: storage) }
            try side.store.dropGroup(id)
            side.groups[id] = nil
            self.hosted.withLockedValue { _ = $0.remove(id) }
            self.leaderHints.withLockedValue { _ = $0.removeValue(forKey: id) }
            side.quiesced.remove(id)
            side.idleTicks[id] = nil
            side.lastLeaderContact[id] = nil
            side.leaseClocks[id] = nil
            for read in side.readsToAsk.removeValue(forKey: id) ?? [] { read.promise.fail(RuntimeError.unknownGroup(id)) }
            for (rid, batch) in side.pendingReads where batch.group == id {
                side.pendingReads[rid] = nil
                for r in batch.reads { r.promise.fail(RuntimeError.unknownGroup(id)) }
            }
            // Proposed here and possibly committed by the group's other replicas: not "no such group",
            // which would tell a router the write never ran and may be sent again; unless it sits after
            // the entry that dropped the database.
            for (index, w) in side.pendingWrites.removeValue(forKey: id) ?? [:] {
                if let droppedAt, index > droppedAt {
                    w.promise.fail(RuntimeError.databaseDropped)
                } else {
                    w.promise.fail(RuntimeError.timedOut("waiting for the write: its group left this node; its outcome is unknown"))
                }
            }
        }.get()
        let path = config.dataDirectory + "/group-\(id).sqlite"
        try await applyLoop.submit {
            let side = self.applyState.value
            self.readers.withLockedValue { _ = $0.removeValue(forKey: id) }
            self.consistencyRecords.withLockedValue { _ = $0.removeValue(forKey: id) }
            self.groupLoads.withLockedValue { _ = $0.removeValue(forKey: id) }
            side.machines.removeValue(forKey: id)?.close()
            _ = self.takeHeld(id)
            for r in side.waitingReads.removeValue(forKey: id) ?? [] { r.request.promise.fail(RuntimeError.unknownGroup(id)) }
            // A write on its way may commit: its outcome is unknown, as for the writes failed above.
            self.failTurns(id) { onItsWay in
                onItsWay ? RuntimeError.timedOut("waiting for the write: its group left this node; its outcome is unknown") : RuntimeError.unknownGroup(id)
            }
            side.lastSnapshotIndex[id] = nil
            side.bytesSinceSnapshot[id] = nil
            for file in SQLStateMachine.files(of: path) { try? FileManager.default.removeItem(atPath: file) }
            self.removeSnapshots(of: id, before: .max)
        }.get()
        log("node \(config.nodeID): deleted its copy of group \(id)")
    }
}
