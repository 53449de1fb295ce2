import CairnRaft
import CairnStorage
import Foundation

/// What this node keeps of a group copy it deleted (moved elsewhere, or its node drained): the copy's
/// term and vote, and its last entry. Raft counts on a voter never forgetting the entries it
/// acknowledged; a copy made here again starts empty, so without this it could vote for a member two
/// configurations behind that still counts this node as a voter, and two leaders could commit
/// different entries at one index (found by the sharded simulator, `cairn-sim --sharded`). The new
/// copy goes on in the old term with the old vote (restored whenever the group opens), votes only
/// for candidates at least as up to date as the old copy was, and stands for election only once its
/// own log is (`RaftConfig.voteFloor`); a split never makes a child here again once a copy of it was
/// deleted (`SplitChildren`). One small file a group ever deleted here, kept
/// for good: group ids are never reused, and a copy may come back at any time.
struct Tombstone: Codable, Equatable {
    var term: UInt64
    var vote: UInt64
    var lastTerm: UInt64
    var lastIndex: UInt64

    var lastEntry: LastEntry { LastEntry(term: lastTerm, index: lastIndex) }

    /// This tombstone and a later copy's own: the newer term and vote, the more up-to-date last entry.
    func merged(with later: Tombstone) -> Tombstone {
        let hard = later.term >= term ? (later.term, later.vote) : (term, vote)
        let last = lastEntry.isCovered(byTerm: later.lastTerm, index: later.lastIndex) ? (later.lastTerm, later.lastIndex) : (lastTerm, lastIndex)
        return Tombstone(term: hard.0, vote: hard.1, lastTerm: last.0, lastIndex: last.1)
    }
}

extension NodeRuntime {
    var tombstoneDirectory: String { config.dataDirectory + "/tombstones" }

    func tombstonePath(_ group: GroupID) -> String { tombstoneDirectory + "/group-\(group).json" }

    /// The tombstone of an earlier copy of `group` here. One that cannot be read stops the group from
    /// opening: voting without it could elect a second leader.
    func tombstone(of group: GroupID) throws -> Tombstone? {
        let path = tombstonePath(group)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path), let t = try? JSONDecoder().decode(Tombstone.self, from: data) else {
            throw RuntimeError.raft("group \(group): the tombstone \(path) of an earlier copy cannot be read; restore it, or replace this node")
        }
        return t
    }

    /// Whether this node deleted a copy of `group` before (an unreadable tombstone counts).
    func hadCopy(of group: GroupID) -> Bool {
        FileManager.default.fileExists(atPath: tombstonePath(group))
    }

    /// Durably records what `storage`'s copy leaves, before the log forgets the group.
    func writeTombstone(of group: GroupID, storage: GroupLog) throws {
        let last = storage.lastIndex()
        var t = Tombstone(term: storage.hardState.term, vote: storage.hardState.vote, lastTerm: (try? storage.term(at: last)) ?? 0, lastIndex: last)
        if let earlier = try tombstone(of: group) { t = earlier.merged(with: t) }
        try FileManager.default.createDirectory(atPath: tombstoneDirectory, withIntermediateDirectories: true)
        // Every time, not only when created: a crash right after creating it would leave it undurable.
        try DurableFile.sync(config.dataDirectory)
        try DurableFile.write(Array(try JSONEncoder().encode(t)), to: tombstonePath(group))
    }
}
