import Foundation

/// SQLite's column affinity (https://sqlite.org/datatype3.html, section 3): what a column does to a value
/// stored in it. The router applies it to a shard key's value before hashing, because the shard's
/// guard hashes the value as stored: `'5'` written to an INTEGER column is stored (and must route) as 5.
public enum Affinity: Sendable, Equatable {
    case integer, text, blob, real, numeric

    /// A declared type that gives this affinity (and nothing else of the original text).
    public var typeName: String {
        switch self {
        case .integer: return "INTEGER"
        case .text: return "TEXT"
        case .blob: return "BLOB"
        case .real: return "REAL"
        case .numeric: return "NUMERIC"
        }
    }

    /// The affinity of a declared type, by SQLite's rules, in their order.
    public init(declaredType: String) {
        let t = declaredType.uppercased()
        if t.contains("INT") { self = .integer }
        else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") { self = .text }
        else if t.contains("BLOB") || t.trimmingCharacters(in: .whitespaces).isEmpty { self = .blob }
        else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") { self = .real }
        else { self = .numeric }
    }

    /// The value as a column of this affinity stores it. `renderReal` turns a REAL into text as SQLite
    /// does (the only conversion whose exact digits are SQLite's own); nil means it is not available, and
    /// then a REAL bound for a TEXT column is returned unchanged (the guard then refuses the row clearly).
    public func apply(_ value: SQLValue, renderReal: ((Double) -> String?)? = nil) -> SQLValue {
        switch (self, value) {
        case (.text, .integer(let i)): return .text(String(i))
        case (.text, .real(let d)): return renderReal?(d).map(SQLValue.text) ?? value
        case (.integer, .text(let s)), (.numeric, .text(let s)):
            return Self.numericValue(of: s).map(Self.preferInteger) ?? value
        case (.integer, .real(let d)), (.numeric, .real(let d)):
            return Self.preferInteger(.real(d))
        case (.real, .text(let s)):
            guard let n = Self.numericValue(of: s) else { return value }
            if case .integer(let i) = n { return .real(Double(i)) }
            return n
        case (.real, .integer(let i)):
            return .real(Double(i))
        default:
            return value
        }
    }

    /// A REAL with an integral value that fits becomes an INTEGER (NUMERIC and INTEGER affinity do this).
    private static func preferInteger(_ v: SQLValue) -> SQLValue {
        if case .real(let d) = v, d.rounded(.towardZero) == d, d >= -9_223_372_036_854_775_808.0, d < 9_223_372_036_854_775_808.0 {
            return .integer(Int64(d))
        }
        return v
    }

    /// The number a text spells if it is a well-formed integer or real literal (leading and trailing
    /// spaces allowed, no hexadecimal), as SQLite's affinity reads it; nil otherwise.
    static func numericValue(of text: String) -> SQLValue? {
        // SQLite's own idea of space, vertical tab included.
        let s = text.trimmingCharacters(in: CharacterSet(charactersIn: " \t\n\r\u{0B}\u{0C}"))
        guard !s.isEmpty else { return nil }
        let bytes = Array(s.utf8)
        var i = 0
        if bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
        var digits = 0, fraction = 0
        while i < bytes.count && bytes[i] >= 48 && bytes[i] <= 57 { i += 1; digits += 1 }
        var isReal = false
        if i < bytes.count && bytes[i] == UInt8(ascii: ".") {
            isReal = true
            i += 1
            while i < bytes.count && bytes[i] >= 48 && bytes[i] <= 57 { i += 1; fraction += 1 }
        }
        guard digits + fraction > 0 else { return nil }
        if i < bytes.count && (bytes[i] | 0x20) == UInt8(ascii: "e") {
            isReal = true
            i += 1
            if i < bytes.count && (bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-")) { i += 1 }
            var exponent = 0
            while i < bytes.count && bytes[i] >= 48 && bytes[i] <= 57 { i += 1; exponent += 1 }
            guard exponent > 0 else { return nil }
        }
        guard i == bytes.count else { return nil }
        if !isReal, let n = Int64(s.hasPrefix("+") ? String(s.dropFirst()) : s) { return .integer(n) }
        guard let d = Double(s) else { return nil }
        return .real(d)
    }
}

/// SQLite's own text for a REAL (what a TEXT column stores for it), from a private in-memory connection.
public enum RealText {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var scratch: ScratchDatabase?

    public static func render(_ d: Double) -> String? {
        lock.lock()
        defer { lock.unlock() }
        if scratch == nil { scratch = try? ScratchDatabase() }
        guard let r = scratch?.query(SQLStatement("SELECT CAST(?1 AS TEXT)", [.real(d)])), r.error == nil,
              case .text(let s)? = r.rows.first?.first else { return nil }
        return s
    }
}
