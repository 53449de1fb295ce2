import CairnRaft
import CairnSQLite
import CairnStorage
import CairnTransport
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix


/// Consistency checks between a group's replicas, as the runtime runs them.
extension NodeRuntime {
    /// Asks every replica of `group` for a digest at one entry, and then hands them the leader's
    /// (this node must lead the group): each replica compares, and one that differs reports itself
    /// diverged (`consistency(group:)`) and stops being ready. Returns the leader's digest.
    public func checkConsistency(group: GroupID) async throws -> ContentDigest {
        guard let record = consistencyRecords.withLockedValue({ $0[group] }) else { throw RuntimeError.unknownGroup(group) }
        let first = try await executeIndexed(group: group, .checkConsistency(expected: record.takeUnannounced().map { .init(index: $0.index, hash: $0.hash) }))
        // The digest is taken off the apply thread: wait for it (bounded), then announce it.
        let deadline = ContinuousClock.now + .milliseconds(config.requestTimeoutMillis)
        var digest = record.digest(at: first.index)
        while digest == nil && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
            digest = record.digest(at: first.index)
        }
        guard let digest else { throw RuntimeError.timedOut("taking the digest at entry \(first.index)") }
        _ = record.takeUnannounced()
        _ = try await executeIndexed(group: group, .checkConsistency(expected: .init(index: digest.index, hash: digest.hash)))
        return digest
    }

    /// How long the apply loop has been busy without a break (one entry, an install): while it is, no
    /// write on this node is applied and no query waiting for one is answered.
    public var applyLoopBusyMillis: Int64 {
        Int64((DispatchTime.now().uptimeNanoseconds &- applyLoopSeen.withLockedValue { $0 }) / 1_000_000)
    }

    /// What this replica knows of its agreement with the leader of `group`.
    public func consistency(group: GroupID) -> ConsistencyRecord.Summary? {
        consistencyRecords.withLockedValue { $0[group] }?.current
    }

    /// Test only: makes this replica of `group` diverge by running `sql` outside the log.
    public func divergeForTesting(group: GroupID, sql: String) async throws {
        try await applyLoop.submit {
            guard let machine = self.applyState.value.machines[group] else { throw RuntimeError.unknownGroup(group) }
            try machine.divergeForTesting(sql)
        }.get()
    }

    /// Leaders ask their groups for digests every `consistencyCheckMillis`.
    func scheduleConsistencyChecks() {
        guard config.consistencyCheckMillis > 0 else { return }
        let every = TimeAmount.milliseconds(config.consistencyCheckMillis)
        raftLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { task in
            let side = self.raftState.value
            guard !side.stopped else { return task.cancel() }
            for (id, g) in side.groups where g.node.role == .leader {
                Task {
                    do {
                        _ = try await self.checkConsistency(group: id)
                    } catch {
                        self.log("node \(self.config.nodeID) group \(id): consistency check failed to run: \(error)")
                    }
                }
            }
        }
    }
}
