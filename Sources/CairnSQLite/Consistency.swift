import CairnRaft
import Foundation

/// What this replica knows of its agreement with the leader: its own digests at recent consistency
/// checks, the leader's digests as check entries carried them, and the first disagreement found.
/// Digests are computed off the apply thread, so either half of a comparison may arrive first.
/// Safe to use from any thread.
public final class ConsistencyRecord: @unchecked Sendable {
    public struct Mismatch: Sendable, Equatable, Codable {
        public var index: LogIndex
        public var mine: UInt64
        public var leader: UInt64
        public init(index: LogIndex, mine: UInt64, leader: UInt64) {
            self.index = index
            self.mine = mine
            self.leader = leader
        }
    }

    public struct Summary: Sendable {
        /// This replica's newest digest.
        public var latest: ContentDigest?
        /// The newest check whose digest matched the leader's.
        public var verifiedIndex: LogIndex?
        /// The first check whose digest differed from the leader's: this replica diverged.
        public var mismatch: Mismatch?
        public var checks: Int
    }

    private let lock = NSLock()
    private var mine: [LogIndex: ContentDigest] = [:]
    private var leader: [LogIndex: UInt64] = [:]
    private var announced: LogIndex = 0
    private var summary = Summary(checks: 0)
    /// Digests kept for comparison; a check's second entry follows its first within seconds.
    static let kept = 16

    /// Told once, when the first mismatch is found (the runtime logs it).
    public var onMismatch: (@Sendable (Mismatch) -> Void)? {
        get { lock.lock(); defer { lock.unlock() }; return mismatchHandler }
        set { lock.lock(); mismatchHandler = newValue; lock.unlock() }
    }
    private var mismatchHandler: (@Sendable (Mismatch) -> Void)?

    public init() {}

    public var current: Summary {
        lock.lock()
        defer { lock.unlock() }
        return summary
    }

    /// This replica's digest at a check entry.
    public func recordMine(_ digest: ContentDigest) {
        lock.lock()
        mine[digest.index] = digest
        summary.checks += 1
        if digest.index > (summary.latest?.index ?? 0) { summary.latest = digest }
        let found = compare(digest.index)
        Self.trim(&mine)
        let handler = mismatchHandler
        lock.unlock()
        if let found { handler?(found) }
    }

    /// The leader's digest at an earlier check, carried by a later check entry.
    func recordLeader(_ expected: ConsistencyCheck.Expected) {
        lock.lock()
        leader[expected.index] = expected.hash
        let found = compare(expected.index)
        Self.trim(&leader)
        let handler = mismatchHandler
        lock.unlock()
        if let found { handler?(found) }
    }

    /// A mismatch found before this process started (kept on disk by the runtime): the replica is still
    /// diverged until an operator replaces it.
    public func restore(_ m: Mismatch) {
        lock.lock()
        if summary.mismatch == nil { summary.mismatch = m }
        lock.unlock()
    }

    /// On the leader: its newest digest not yet sent to the replicas, marked as sent.
    public func takeUnannounced() -> ContentDigest? {
        lock.lock()
        defer { lock.unlock() }
        guard let latest = summary.latest, latest.index > announced else { return nil }
        announced = latest.index
        return latest
    }

    /// This replica's digest at `index`, once computed.
    public func digest(at index: LogIndex) -> ContentDigest? {
        lock.lock()
        defer { lock.unlock() }
        return mine[index]
    }

    /// Compares the two digests at `index` if both are in; returns a mismatch found for the first time.
    private func compare(_ index: LogIndex) -> Mismatch? {
        guard let m = mine[index], let l = leader[index] else { return nil }
        if m.hash == l {
            summary.verifiedIndex = max(summary.verifiedIndex ?? 0, index)
        } else if summary.mismatch == nil {
            summary.mismatch = Mismatch(index: index, mine: m.hash, leader: l)
            return summary.mismatch
        }
        return nil
    }

    private static func trim<V>(_ map: inout [LogIndex: V]) {
        while map.count > kept, let oldest = map.keys.min() { map[oldest] = nil }
    }
}

/// A read transaction opened at one applied index and read later, on another thread (a digest of a
/// large database takes seconds; the apply thread goes on meanwhile, WAL keeping the old view).
public final class PinnedRead: @unchecked Sendable {
    public let index: LogIndex
    private let connection: SQLiteConnection
    private let release: (SQLiteConnection) -> Void

    init(index: LogIndex, connection: SQLiteConnection, release: @escaping (SQLiteConnection) -> Void) {
        self.index = index
        self.connection = connection
        self.release = release
    }

    /// The digest as of `index`; the read transaction ends with it.
    public func digest() throws -> ContentDigest {
        defer {
            try? connection.exec("ROLLBACK")
            release(connection)
        }
        return try connection.digestOfOpenRead(at: index)
    }
}
