import Foundation

/// One token of SQL text, as SQLite's tokenizer would cut it. The router reads only the shape of a
/// statement (clauses, commas, parentheses, a few keywords); everything else is passed on as written.
public struct Token: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A bare word: a keyword or an unquoted name (SQLite decides which by context, and so do we).
        case word
        /// A quoted name: "x", [x] or `x`. `value` holds the name without quotes.
        case quotedName
        case string
        case number
        case blob
        /// `?`, `?NNN`, `:name`, `@name`, `$name`.
        case parameter
        /// An operator or punctuation: ( ) , ; . = == != <> < <= > >= || + - * / % & | << >> ~ ->  ->>
        case symbol
    }

    public var kind: Kind
    /// The token as written.
    public var text: String
    /// The name of a word or quoted name (quotes removed); the text otherwise.
    public var value: String
    /// Where the token starts in the statement's UTF-8 (0 for tokens the router made).
    public var start: Int = 0

    public init(kind: Kind, text: String, value: String, start: Int = 0) {
        self.kind = kind
        self.text = text
        self.value = value
        self.start = start
    }

    /// True if this is the bare word `keyword` (case-insensitive).
    /// Whether this is the bare word `keyword`, in any case. SQLite folds the case of ASCII letters
    /// only (`sqlite3StrICmp`), and so does this (Foundation's comparison, which folds more, cost a
    /// tenth of a point read's CPU).
    public func isWord(_ keyword: String) -> Bool {
        guard kind == .word else { return false }
        var a = value.utf8.makeIterator(), b = keyword.utf8.makeIterator()
        while true {
            switch (a.next(), b.next()) {
            case (nil, nil):
                return true
            case (let x?, let y?):
                if x == y { continue }
                let lower = x | 0x20
                guard lower == y | 0x20, lower >= UInt8(ascii: "a"), lower <= UInt8(ascii: "z") else { return false }
            default:
                return false
            }
        }
    }

    public func isSymbol(_ s: String) -> Bool { kind == .symbol && text == s }

    /// Tokens are equal when they read alike, wherever they stand.
    public static func == (a: Token, b: Token) -> Bool { a.kind == b.kind && a.text == b.text }

    /// The name a word or quoted name refers to, lowercased (SQLite's names are case-insensitive).
    public var name: String? { kind == .word || kind == .quotedName ? Self.lowercased(value) : nil }

    /// `s.lowercased()`, without building a new string for the usual name (ASCII, already lowercase).
    static func lowercased(_ s: String) -> String {
        var ascii = true, upper = false
        for c in s.utf8 {
            if c >= 0x80 { ascii = false; break }
            if c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") { upper = true }
        }
        guard ascii else { return s.lowercased() }
        guard upper else { return s }
        return String(decoding: s.utf8.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 | 0x20 : $0 }, as: UTF8.self)
    }
}

public struct SQLSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Cuts SQL text into tokens, dropping comments and whitespace.
public enum SQLLexer {
    public static func tokens(_ sql: String) throws -> [Token] {
        let s = Array(sql.utf8)
        var out: [Token] = []
        var i = 0
        func text(_ a: Int, _ b: Int) -> String { String(decoding: s[a..<b], as: UTF8.self) }
        while i < s.count {
            let c = s[i]
            switch c {
            case 0x20, 0x09, 0x0A, 0x0D, 0x0C:
                i += 1
            case UInt8(ascii: "-") where i + 1 < s.count && s[i + 1] == UInt8(ascii: "-"):
                while i < s.count && s[i] != 0x0A { i += 1 }
            case UInt8(ascii: "/") where i + 1 < s.count && s[i + 1] == UInt8(ascii: "*"):
                i += 2
                while i < s.count && !(s[i] == UInt8(ascii: "*") && i + 1 < s.count && s[i + 1] == UInt8(ascii: "/")) { i += 1 }
                i = min(s.count, i + 2)
            case UInt8(ascii: "'"):
                let start = i
                let (end, body) = try quoted(s, from: i, close: UInt8(ascii: "'"), what: "string")
                i = end
                out.append(Token(kind: .string, text: text(start, end), value: body, start: start))
            case UInt8(ascii: "\""), UInt8(ascii: "`"):
                let start = i
                let (end, body) = try quoted(s, from: i, close: c, what: "quoted name")
                i = end
                out.append(Token(kind: .quotedName, text: text(start, end), value: body, start: start))
            case UInt8(ascii: "["):
                let start = i
                guard let close = s[i...].firstIndex(of: UInt8(ascii: "]")) else {
                    throw SQLSyntaxError(message: "unterminated [quoted name]")
                }
                i = close + 1
                out.append(Token(kind: .quotedName, text: text(start, i), value: text(start + 1, close), start: start))
            case UInt8(ascii: "x") where i + 1 < s.count && s[i + 1] == UInt8(ascii: "'"),
                 UInt8(ascii: "X") where i + 1 < s.count && s[i + 1] == UInt8(ascii: "'"):
                // As SQLite reads one: hex digits, an even number of them, up to the first quote (a
                // doubled quote ends it, where a string's would not).
                let start = i
                var end = i + 2
                while end < s.count && isHexDigit(s[end]) { end += 1 }
                guard end < s.count && s[end] == UInt8(ascii: "'") && (end - start) % 2 == 0 else {
                    throw SQLSyntaxError(message: "a blob literal is an even number of hex digits in X'...'")
                }
                i = end + 1
                let t = text(start, i)
                out.append(Token(kind: .blob, text: t, value: t, start: start))
            case UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: ".") where i + 1 < s.count && isDigit(s[i + 1]):
                let start = i
                i = number(s, from: i)
                let t = text(start, i)
                out.append(Token(kind: .number, text: t, value: t, start: start))
            case UInt8(ascii: "?"):
                let start = i
                i += 1
                while i < s.count && isDigit(s[i]) { i += 1 }
                let t = text(start, i)
                out.append(Token(kind: .parameter, text: t, value: t, start: start))
            case UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "$"):
                let start = i
                i += 1
                while i < s.count && (isWordByte(s[i]) || s[i] == UInt8(ascii: ":") && c == UInt8(ascii: "$")) { i += 1 }
                guard i > start + 1 else { throw SQLSyntaxError(message: "a parameter name must follow \(text(start, start + 1))") }
                let t = text(start, i)
                out.append(Token(kind: .parameter, text: t, value: t, start: start))
            default:
                if isWordByte(c) && !isDigit(c) {
                    let start = i
                    while i < s.count && isWordByte(s[i]) { i += 1 }
                    let t = text(start, i)
                    out.append(Token(kind: .word, text: t, value: t, start: start))
                } else {
                    let start = i
                    i += symbolLength(s, at: i)
                    out.append(Token(kind: .symbol, text: text(start, i), value: text(start, i), start: start))
                }
            }
        }
        return out
    }

    /// SQL text for tokens, one space apart (comments and layout are not kept).
    public static func text(_ tokens: some Collection<Token>) -> String {
        var out = ""
        for t in tokens {
            if !out.isEmpty { out += " " }
            out += t.text
        }
        return out
    }

    /// A name quoted so SQLite reads it back as exactly `name`.
    public static func quote(_ name: String) -> String {
        // Names rarely hold a quote: Foundation's replacement is most of this function's cost otherwise.
        guard name.utf8.contains(UInt8(ascii: "\"")) else { return "\"" + name + "\"" }
        return "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    private static func quoted(_ s: [UInt8], from start: Int, close: UInt8, what: String) throws -> (Int, String) {
        var i = start + 1
        var body: [UInt8] = []
        while true {
            guard i < s.count else { throw SQLSyntaxError(message: "unterminated \(what)") }
            if s[i] == close {
                if i + 1 < s.count && s[i + 1] == close {
                    body.append(close)
                    i += 2
                    continue
                }
                return (i + 1, String(decoding: body, as: UTF8.self))
            }
            body.append(s[i])
            i += 1
        }
    }

    private static func number(_ s: [UInt8], from start: Int) -> Int {
        var i = start
        if s[i] == UInt8(ascii: "0") && i + 1 < s.count && (s[i + 1] | 0x20) == UInt8(ascii: "x") {
            i += 2
            while i < s.count && (isDigit(s[i]) || (s[i] | 0x20) >= UInt8(ascii: "a") && (s[i] | 0x20) <= UInt8(ascii: "f") || s[i] == UInt8(ascii: "_")) { i += 1 }
            return i
        }
        while i < s.count && (isDigit(s[i]) || s[i] == UInt8(ascii: "_")) { i += 1 }
        if i < s.count && s[i] == UInt8(ascii: ".") {
            i += 1
            while i < s.count && (isDigit(s[i]) || s[i] == UInt8(ascii: "_")) { i += 1 }
        }
        if i < s.count && (s[i] | 0x20) == UInt8(ascii: "e") {
            var j = i + 1
            if j < s.count && (s[j] == UInt8(ascii: "+") || s[j] == UInt8(ascii: "-")) { j += 1 }
            if j < s.count && isDigit(s[j]) {
                i = j
                while i < s.count && isDigit(s[i]) { i += 1 }
            }
        }
        return i
    }

    private static func symbolLength(_ s: [UInt8], at i: Int) -> Int {
        let rest = s.count - i
        if rest >= 3 && s[i] == UInt8(ascii: "-") && s[i + 1] == UInt8(ascii: ">") && s[i + 2] == UInt8(ascii: ">") { return 3 }
        if rest >= 2 {
            let two = String(decoding: s[i..<i + 2], as: UTF8.self)
            if ["==", "!=", "<>", "<=", ">=", "||", "<<", ">>", "->"].contains(two) { return 2 }
        }
        // One byte, or one whole UTF-8 scalar (SQLite would refuse it; so will the statement's prepare).
        var n = 1
        while i + n < s.count && s[i + n] & 0xC0 == 0x80 { n += 1 }
        return n
    }

    static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
    static func isHexDigit(_ c: UInt8) -> Bool { isDigit(c) || (c | 0x20) >= UInt8(ascii: "a") && (c | 0x20) <= UInt8(ascii: "f") }

    /// Letters, digits, `_`, `$` after the first byte, and any non-ASCII byte (SQLite's identifier rule).
    static func isWordByte(_ c: UInt8) -> Bool {
        c >= 0x80 || isDigit(c) || c == UInt8(ascii: "_") || c == UInt8(ascii: "$")
            || (c | 0x20) >= UInt8(ascii: "a") && (c | 0x20) <= UInt8(ascii: "z")
    }
}
