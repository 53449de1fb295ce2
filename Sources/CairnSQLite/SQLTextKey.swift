#if canImport(Glibc)
import Glibc
#endif

/// Statement text as a dictionary key, compared byte for byte. Swift's `String` compares by Unicode
/// canonical equivalence (`'café'` with a precomposed é equals it with e and a combining accent), but
/// SQLite, the shard hash and the replicas all see bytes: a cache keyed by `String` would answer one
/// text with what was made from another (a prepared statement, a plan), and two replicas with different
/// cache contents would apply different statements.
public struct SQLTextKey: Hashable, Sendable {
    public let text: String

    public init(_ text: String) { self.text = text }

    public static func == (a: SQLTextKey, b: SQLTextKey) -> Bool {
        var x = a.text, y = b.text
        return x.withUTF8 { p in
            y.withUTF8 { q in p.count == q.count && (p.count == 0 || memcmp(p.baseAddress!, q.baseAddress!, p.count) == 0) }
        }
    }

    public func hash(into hasher: inout Hasher) {
        var text = text
        text.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// Whether `text` holds a NUL byte, where SQLite would take the statement to end.
    public static func hasNUL(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { $0.count > 0 && memchr($0.baseAddress!, 0, $0.count) != nil }
    }
}
