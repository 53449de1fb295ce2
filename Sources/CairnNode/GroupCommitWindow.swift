/// Group commit under load: how long a Raft pass that will write to the log waits before it starts.
///
/// One sync of the node's log makes a pass's writes durable for every group the node holds
/// (`LogStore.persist`). Under load the passes run back to back, and with leaders spread over the
/// nodes a node's appends come from several leaders out of step, so each arrival became a pass and
/// a sync of its own. A sync costs the disk about the same whatever it carries. So once a sync
/// carried a batch (`minEntries` or more: others are writing at once), the next pass waits until as
/// long as that sync took has passed since it ended (never more than `maxWaitNanos`), and whatever
/// arrives meanwhile, proposals and other leaders' appends, shares one sync. Under a light load (a
/// sync with fewer entries) nothing waits, and a fast disk waits as little as it syncs. This is
/// PostgreSQL's `commit_delay` with `commit_siblings`, with the delay taken from the disk itself.
///
/// The wait never changes what is written or when a message may leave: a pass still writes and syncs
/// before it sends what depends on its writes, only later.
struct GroupCommitWindow: Sendable {
    /// Fewer entries in the last sync: the next pass starts at once.
    let minEntries: Int
    /// The longest a pass waits (0: never).
    let maxWaitNanos: UInt64
    private(set) var lastSyncEndedNanos: UInt64 = 0
    private(set) var lastSyncNanos: UInt64 = 0
    private(set) var lastSyncEntries = 0

    init(minEntries: Int, maxWaitNanos: UInt64) {
        precondition(minEntries >= 1, "a sync carries at least one entry before the next may wait")
        self.minEntries = minEntries
        self.maxWaitNanos = maxWaitNanos
    }

    /// A sync of `entries` entries ran from `startedNanos` to `endedNanos` (monotonic).
    mutating func synced(entries: Int, startedNanos: UInt64, endedNanos: UInt64) {
        lastSyncEndedNanos = endedNanos
        lastSyncNanos = endedNanos >= startedNanos ? endedNanos - startedNanos : 0
        lastSyncEntries = entries
    }

    /// How long a pass with log writes to make waits, from `nowNanos`; 0: it starts now.
    func waitNanos(nowNanos: UInt64) -> UInt64 {
        guard maxWaitNanos > 0, lastSyncEntries >= minEntries else { return 0 }
        let until = lastSyncEndedNanos &+ min(lastSyncNanos, maxWaitNanos)
        return nowNanos < until ? until - nowNanos : 0
    }
}
