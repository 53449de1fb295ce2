import Foundation
import NIOConcurrencyHelpers

/// Slows password guessing: after `maxFailures` failed logins for a user (or from an address) within
/// `windowSeconds`, further attempts are refused until the window has passed.
public final class LoginLimiter: Sendable {
    private let failures = NIOLockedValueBox<[String: [Date]]>([:])
    public let maxFailures: Int
    public let windowSeconds: Double

    public init(maxFailures: Int = 5, windowSeconds: Double = 60) {
        self.maxFailures = maxFailures
        self.windowSeconds = windowSeconds
    }

    /// Throws if any of `keys` (user, remote address) is locked out now.
    public func check(_ keys: [String], now: Date = Date()) throws(AuthError) {
        try admit(keys, now: now, counting: false)
    }

    /// `check`, and when admitted, counts the attempt as a failure in the same step (`withdraw` takes it
    /// back if it succeeds): attempts arriving together cannot all pass before any of them is counted.
    public func attempt(_ keys: [String], now: Date = Date()) throws(AuthError) {
        try admit(keys, now: now, counting: true)
    }

    private func admit(_ keys: [String], now: Date, counting: Bool) throws(AuthError) {
        let wait: Int? = failures.withLockedValue { f in
            var longest: Double?
            for key in keys {
                let recent = (f[key] ?? []).filter { now.timeIntervalSince($0) < windowSeconds }
                f[key] = recent.isEmpty ? nil : recent
                if recent.count >= maxFailures, let oldest = recent.first {
                    longest = max(longest ?? 0, windowSeconds - now.timeIntervalSince(oldest))
                }
            }
            if longest == nil && counting { for key in keys { f[key, default: []].append(now) } }
            return longest.map { Int($0.rounded(.up)) }
        }
        if let wait { throw .tooManyAttempts(retryAfterSeconds: max(1, wait)) }
    }

    public func failed(_ keys: [String], now: Date = Date()) {
        failures.withLockedValue { f in for key in keys { f[key, default: []].append(now) } }
    }

    /// Takes back the latest failure recorded for each key (an attempt counted before it was checked).
    public func withdraw(_ keys: [String]) {
        failures.withLockedValue { f in
            for key in keys {
                guard var recent = f[key], !recent.isEmpty else { continue }
                recent.removeLast()
                f[key] = recent.isEmpty ? nil : recent
            }
        }
    }

    public func succeeded(_ keys: [String]) {
        failures.withLockedValue { f in for key in keys { f[key] = nil } }
    }
}
