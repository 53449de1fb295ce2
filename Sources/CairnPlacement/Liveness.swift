/// How long a node may be silent before placement stops trusting it, and then gives up on it.
public struct LivenessSettings: Sendable, Equatable {
    /// Silent this long: no new replicas go there (`--suspect-after`, default 10 s).
    public var suspectAfterNanos: UInt64
    /// Silent this long: its replicas are rebuilt elsewhere (`--dead-after`, default 5 min).
    public var deadAfterNanos: UInt64

    public static let `default` = LivenessSettings(suspectAfterNanos: 10_000_000_000, deadAfterNanos: 300_000_000_000)

    public init(suspectAfterNanos: UInt64, deadAfterNanos: UInt64) {
        precondition(suspectAfterNanos > 0 && deadAfterNanos >= suspectAfterNanos, "a node is suspect before it is dead")
        self.suspectAfterNanos = suspectAfterNanos
        self.deadAfterNanos = deadAfterNanos
    }
}

public enum Liveness {
    /// A node's state as the metadata leader judges it.
    ///
    /// - Parameters:
    ///   - silentNanos: since this node last heard from it (nil: not since it began observing).
    ///   - observedNanos: how long this node has been the metadata leader. A new leader has heard from
    ///     no one yet; it declares no one dead before it has watched for a whole `deadAfter`, so a
    ///     leadership change never kills the cluster's nodes.
    ///   - recorded: what the catalog says (`dead` and `draining` are kept there; `live` otherwise).
    public static func state(silentNanos: UInt64?, observedNanos: UInt64, recorded: NodeState, settings: LivenessSettings) -> NodeState {
        let silent = silentNanos ?? observedNanos
        if recorded == .dead {
            // Back: live again, and placement fills it up.
            return silentNanos.map { $0 < settings.suspectAfterNanos } == true ? .live : .dead
        }
        if silent >= settings.deadAfterNanos && observedNanos >= settings.deadAfterNanos { return .dead }
        if recorded == .draining { return .draining }
        return silent >= settings.suspectAfterNanos ? .suspect : .live
    }
}
