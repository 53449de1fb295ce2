import CairnRaft
import NIOCore

/// Writes that wait, at a group's leader, for the group to be free of prepared transactions across
/// shards: oldest request first, whichever node coordinates them.
///
/// A prepared transaction holds its whole shard; before, a transaction that found a shard held polled
/// a replica (1-8 ms apart) and raced every other waiter when the shard came free, so under contention
/// from coordinators on several nodes the unlucky lost race after race (two-shard transactions' p99
/// 5.4 s at 64 clients over three nodes). Here the leader keeps one line per group and proposes the
/// first waiter's write the moment it applies the entry that frees the group: the line decides the
/// order, nobody polls. The shard's lock stays what safety rests on: a write proposed from the line
/// that still meets a lock (a transaction that came in without waiting) is refused by the state
/// machine as any other, and goes back in line by its age.
///
/// Oldest first, not first come: a transaction taking its shards in order waits at its second shard
/// while holding its first, and one whose wait ran out gives its shards back and starts over. Placed
/// by when its request began (`since`, on the leader's clock, from the age the coordinator sends), such
/// a transaction goes before the ones that began after it, at every shard and on every try, so the
/// waits that hold other shards are the shortest and no request loses its place by starting over
/// (wait-die's rule of age, without the dying).
///
/// Pure bookkeeping (no I/O, no clock): the runtime calls it on its apply loop, where the groups'
/// databases tell whether a group is free.
struct TurnLines<Waiter> {
    struct Line {
        var waiting = CircularBuffer<(id: UInt64, since: UInt64, waiter: Waiter)>()
        /// The first waiter's write has been proposed and has not come back yet.
        var proposing = false
    }

    private(set) var lines: [GroupID: Line] = [:]
    /// Waiters over all groups.
    private(set) var count = 0
    let maxWaiters: Int

    init(maxWaiters: Int) {
        precondition(maxWaiters > 0, "a line must take at least one waiter")
        self.maxWaiters = maxWaiters
    }

    /// Whether `group` has anyone in line.
    func hasLine(_ group: GroupID) -> Bool { lines[group] != nil }

    /// The first in `group`'s line.
    func first(_ group: GroupID) -> Waiter? { lines[group]?.waiting.first?.waiter }

    /// The groups with a line.
    var groups: [GroupID] { Array(lines.keys) }

    /// Puts `waiter` in `group`'s line after every waiter whose request began at or before `since`
    /// (and after a write on its way); false when the node's lines are full (the caller says so, and
    /// the write is tried again after a pause).
    mutating func join(_ group: GroupID, id: UInt64, since: UInt64, _ waiter: Waiter) -> Bool {
        guard count < maxWaiters else { return false }
        var line = lines.removeValue(forKey: group) ?? Line()
        Self.place((id, since, waiter), in: &line)
        lines[group] = line
        count += 1
        return true
    }

    /// Puts a waiter after every one whose request began before it, and after a write on its way; after
    /// those of its own age too, unless `aheadOfEqals` (one that was in line before them comes back).
    private static func place(_ entry: (id: UInt64, since: UInt64, waiter: Waiter), in line: inout Line, aheadOfEqals: Bool = false) {
        var at = line.waiting.endIndex
        // From the back: requests mostly arrive in the order they began.
        while at > line.waiting.startIndex {
            let before = line.waiting.index(before: at)
            let older = aheadOfEqals ? line.waiting[before].since < entry.since : line.waiting[before].since <= entry.since
            if older || (before == line.waiting.startIndex && line.proposing) { break }
            at = before
        }
        line.waiting.insert(entry, at: at)
    }

    /// The waiter whose write is to be proposed now, marked as proposing: the first of `group`'s line,
    /// if the group is free and nothing of the line is on its way through the log already.
    mutating func next(_ group: GroupID, groupFree: Bool) -> (id: UInt64, waiter: Waiter)? {
        guard groupFree, let line = lines[group], !line.proposing, let first = line.waiting.first else { return nil }
        lines[group]!.proposing = true
        return (first.id, first.waiter)
    }

    /// Waiter `id`'s write came back. `lockedAgain`: it met a lock and may still wait, so it goes back
    /// in line by its age (nil returned: first again, unless older ones came meanwhile); otherwise it
    /// leaves the line and is returned, for the caller to answer.
    /// nil too when `id` is not the first of the line with its write on its way (the line was emptied
    /// meanwhile, and whoever emptied it answered the waiter).
    mutating func proposed(_ group: GroupID, id: UInt64, lockedAgain: Bool) -> Waiter? {
        guard let line = lines[group], line.proposing, line.waiting.first?.id == id else { return nil }
        lines[group]!.proposing = false
        if lockedAgain {
            var line = lines.removeValue(forKey: group)!
            Self.place(line.waiting.removeFirst(), in: &line, aheadOfEqals: true)
            lines[group] = line
            return nil
        }
        let first = lines[group]!.waiting.removeFirst()
        count -= 1
        if lines[group]!.waiting.isEmpty { lines[group] = nil }
        return first.waiter
    }

    /// Waiter `id` leaves `group`'s line before its turn (its time is up); nil if it is not there, or
    /// its write is on its way (that write's answer ends its wait).
    mutating func leave(_ group: GroupID, id: UInt64) -> Waiter? {
        guard let line = lines[group], let at = line.waiting.firstIndex(where: { $0.id == id }) else { return nil }
        if at == line.waiting.startIndex && line.proposing { return nil }
        let gone = lines[group]!.waiting.remove(at: at)
        count -= 1
        if lines[group]!.waiting.isEmpty { lines[group] = nil }
        return gone.waiter
    }

    /// Empties `group`'s line (the group left this node, or the node stops): every waiter, for the
    /// caller to answer, and whether its write is on its way (it may commit).
    mutating func removeAll(_ group: GroupID) -> [(waiter: Waiter, onItsWay: Bool)] {
        guard let line = lines.removeValue(forKey: group) else { return [] }
        count -= line.waiting.count
        return line.waiting.enumerated().map { k, w in (w.waiter, k == 0 && line.proposing) }
    }
}
