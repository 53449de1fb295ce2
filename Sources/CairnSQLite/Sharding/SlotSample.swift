import Synchronization

/// The slots of shard keys a shard's writes touched since the last look, for splits by load
/// (`LoadSplit`): every `every`-th one, at most `maxSlots` between looks. Filled on the apply loop,
/// taken by whoever watches the shard's load; it never affects what an entry does.
public final class SlotSample: Sendable {
    public static let maxSlots = 4_096
    /// One slot kept in this many: a shard applying a hundred thousand rows a second keeps a few
    /// thousand between looks.
    static let every = 8

    private struct State {
        var slots: [Int] = []
        var seen = 0
    }
    private let state = Mutex(State())

    init() {}

    func record(_ slot: Int) {
        state.withLock { s in
            defer { s.seen += 1 }
            guard s.seen % Self.every == 0, s.slots.count < Self.maxSlots else { return }
            s.slots.append(slot)
        }
    }

    /// The slots kept since the last call.
    public func take() -> [Int] {
        state.withLock { s in
            defer { s = State() }
            return s.slots
        }
    }
}
