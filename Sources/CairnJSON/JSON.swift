/// A JSON value that keeps what clients and byte-for-byte compatibility need and Foundation loses:
/// object key order, and numbers as written (so `1` stays an integer and `1.0` a real).
///
/// Not `indirect`: arrays and objects hold their elements in buffers of their own already, and boxing
/// every value made a parsed body take about 30 times its size (a box of 48 bytes for a 2-byte `1,`).
/// Each value is now 24 bytes inline, numbers and short strings without a heap allocation.
public enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number's text as written.
    case number(String)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    public static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.number(let x), .number(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)): return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    public subscript(key: String) -> JSON? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }

    public static func int(_ v: some BinaryInteger) -> JSON { .number(String(v)) }

    public static func double(_ v: Double) -> JSON {
        guard v.isFinite else { return .null }
        if v == v.rounded(), abs(v) < 1e15 { return .number(String(Int64(v))) }
        return .number("\(v)")
    }
}

public struct JSONParseError: Error, CustomStringConvertible {
    public var message: String
    public var offset: Int
    /// The document broke the `maxValues` limit (it may be well formed).
    public var tooManyValues = false
    public var description: String { "malformed JSON at byte \(offset): \(message)" }
}

extension JSON {
    /// Parses a complete document; nesting deeper than `maxDepth` is refused rather than overflowing the
    /// stack, and more than `maxValues` values rather than taking memory (24 bytes each, whatever their
    /// size in the text).
    public static func parse(_ bytes: [UInt8], maxDepth: Int = 64, maxValues: Int = .max) throws(JSONParseError) -> JSON {
        var p = Parser(bytes: bytes, maxDepth: maxDepth, maxValues: maxValues)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.i == bytes.count else { throw JSONParseError(message: "unexpected data after the document", offset: p.i) }
        return v
    }

    private struct Parser {
        let bytes: [UInt8]
        let maxDepth: Int
        let maxValues: Int
        var values = 0
        var i = 0

        func fail(_ message: String) -> JSONParseError { JSONParseError(message: message, offset: i) }

        mutating func skipSpace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        }

        mutating func value(depth: Int) throws(JSONParseError) -> JSON {
            guard depth < maxDepth else { throw fail("nested deeper than \(maxDepth) levels") }
            guard i < bytes.count else { throw fail("unexpected end of input") }
            values += 1
            guard values <= maxValues else {
                var e = fail("more than \(maxValues) values in one document; send fewer at a time")
                e.tooManyValues = true
                throw e
            }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var members: [(String, JSON)] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                while true {
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                    let key = try string()
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                    i += 1
                    skipSpace()
                    members.append((key, try value(depth: depth + 1)))
                    skipSpace()
                    guard i < bytes.count else { throw fail("unexpected end of input in an object") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                    throw fail("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [JSON] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    skipSpace()
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard i < bytes.count else { throw fail("unexpected end of input in an array") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    throw fail("expected ',' or ']'")
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            default:
                return .number(try number())
            }
        }

        mutating func literal(_ word: StaticString) throws(JSONParseError) {
            let n = word.utf8CodeUnitCount
            let matches = word.withUTF8Buffer { w in i + n <= bytes.count && bytes[i..<(i + n)].elementsEqual(w) }
            guard matches else { throw fail("unexpected character") }
            i += n
        }

        mutating func number() throws(JSONParseError) -> String {
            let start = i
            func digits(_ p: inout Parser) -> Int {
                let s = p.i
                while p.i < p.bytes.count, (0x30...0x39).contains(p.bytes[p.i]) { p.i += 1 }
                return p.i - s
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
            let intStart = i
            guard digits(&self) > 0 else { throw fail("unexpected character") }
            if bytes[intStart] == UInt8(ascii: "0") && i - intStart > 1 { throw fail("leading zeros are not allowed") }
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                i += 1
                guard digits(&self) > 0 else { throw fail("expected digits after '.'") }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard digits(&self) > 0 else { throw fail("expected digits in the exponent") }
            }
            return String(decoding: bytes[start..<i], as: UTF8.self)
        }

        mutating func string() throws(JSONParseError) -> String {
            i += 1
            // Most strings hold no escapes: made from the text at once, not copied byte by byte first.
            var end = i
            while end < bytes.count, bytes[end] != UInt8(ascii: "\""), bytes[end] != UInt8(ascii: "\\"), bytes[end] >= 0x20 { end += 1 }
            if end < bytes.count, bytes[end] == UInt8(ascii: "\"") {
                guard let s = String(validating: bytes[i..<end], as: UTF8.self) else { throw fail("a string is not valid UTF-8") }
                i = end + 1
                return s
            }
            var out: [UInt8] = []
            out.reserveCapacity(end - i + 16)
            out.append(contentsOf: bytes[i..<end])
            i = end
            while true {
                guard i < bytes.count else { throw fail("unterminated string") }
                let c = bytes[i]
                if c == UInt8(ascii: "\"") { i += 1; break }
                if c < 0x20 { throw fail("control character in a string") }
                if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
                i += 1
                guard i < bytes.count else { throw fail("unterminated escape") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw fail("unpaired surrogate")
                        }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("unpaired surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw fail("unpaired surrogate")
                    }
                    out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
                default: throw fail("unknown escape")
                }
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw fail("a string is not valid UTF-8") }
            return s
        }

        mutating func hex4() throws(JSONParseError) -> UInt32 {
            guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<(i + 4)], as: UTF8.self), radix: 16) else {
                throw fail("bad \\u escape")
            }
            i += 4
            return v
        }
    }
}

extension JSON {
    /// Compact output (or indented with `indent`), keys in their stored order. `goEscaping` writes
    /// strings the way Go's encoding/json does (`<`, `>`, `&`, U+2028 and U+2029 as \u escapes), for
    /// byte-for-byte compatibility with rqlite.
    public func serialized(indent: String? = nil, goEscaping: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(to: &out, indent: indent, level: 0, go: goEscaping)
        return out
    }

    /// A double as Go's encoding/json prints it: shortest digits, plain decimal between 1e-6 and 1e21,
    /// exponent form outside (`1e+21`, `1e-7`), integral values without a fraction.
    public static func goNumber(_ d: Double) -> JSON {
        guard d.isFinite else { return .null }
        if d == 0 { return .number(d.sign == .minus ? "-0" : "0") }
        let text = "\(abs(d))"
        var mantissa = Substring(text)
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = text[..<e]
            exponent = Int(text[text.index(after: e)...]) ?? 0
        }
        let parts = mantissa.split(separator: ".", omittingEmptySubsequences: false)
        var digits = String(parts[0]) + (parts.count > 1 ? String(parts[1]) : "")
        var point = parts[0].count + exponent
        while digits.count > 1 && digits.hasPrefix("0") { digits.removeFirst(); point -= 1 }
        while digits.count > 1 && digits.hasSuffix("0") { digits.removeLast() }
        var out: String
        if abs(d) < 1e-6 || abs(d) >= 1e21 {
            let e = point - 1
            out = String(digits.first!) + (digits.count > 1 ? "." + digits.dropFirst() : "") + "e" + (e < 0 ? "-" : "+")
            out += (e > -10 && e < 0 ? "" : (abs(e) < 10 ? "0" : "")) + String(abs(e))
        } else if point <= 0 {
            out = "0." + String(repeating: "0", count: -point) + digits
        } else if point >= digits.count {
            out = digits + String(repeating: "0", count: point - digits.count)
        } else {
            out = digits.prefix(point) + "." + digits.dropFirst(point)
        }
        return .number((d < 0 ? "-" : "") + out)
    }

    private func write(to out: inout [UInt8], indent: String?, level: Int, go: Bool) {
        func newline(_ level: Int) {
            guard let indent else { return }
            out.append(0x0A)
            for _ in 0..<level { out.append(contentsOf: indent.utf8) }
        }
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let n): out.append(contentsOf: n.utf8)
        case .string(let s): JSON.writeString(s, to: &out, go: go)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (k, item) in items.enumerated() {
                if k > 0 { out.append(UInt8(ascii: ",")) }
                newline(level + 1)
                item.write(to: &out, indent: indent, level: level + 1, go: go)
            }
            if !items.isEmpty { newline(level) }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (k, (key, value)) in members.enumerated() {
                if k > 0 { out.append(UInt8(ascii: ",")) }
                newline(level + 1)
                JSON.writeString(key, to: &out, go: go)
                out.append(UInt8(ascii: ":"))
                if indent != nil { out.append(0x20) }
                value.write(to: &out, indent: indent, level: level + 1, go: go)
            }
            if !members.isEmpty { newline(level) }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Appends `s` as a JSON string. Bytes that need no escape (nearly all of them) are copied in runs,
    /// not one by one: answers and audit lines are mostly statement text and values.
    public static func writeString(_ s: String, to out: inout [UInt8], go: Bool = false) {
        out.append(0x22)
        var s = s
        s.withUTF8 { bytes in
            // Byte by byte: an array literal per escape was an allocation each (a stored JSON
            // document has a quote every few bytes).
            func escaped(_ c: UInt8) {
                out.append(0x5C)
                out.append(c)
            }
            func unicodeEscape(_ v: UInt32) {
                func hex(_ v: UInt32) -> UInt8 { v < 10 ? 0x30 + UInt8(v) : 0x57 + UInt8(v) }
                escaped(UInt8(ascii: "u"))
                out.append(hex(v >> 12 & 0xF))
                out.append(hex(v >> 8 & 0xF))
                out.append(hex(v >> 4 & 0xF))
                out.append(hex(v & 0xF))
            }
            var run = 0
            var i = 0
            while i < bytes.count {
                let b = bytes[i]
                let plain = b >= 0x20 && b != 0x22 && b != 0x5C
                    && !(go && (b == UInt8(ascii: "<") || b == UInt8(ascii: ">") || b == UInt8(ascii: "&")
                        || (b == 0xE2 && i + 2 < bytes.count && bytes[i + 1] == 0x80 && (bytes[i + 2] == 0xA8 || bytes[i + 2] == 0xA9))))
                if plain { i += 1; continue }
                if run < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[run..<i])) }
                i += 1
                switch b {
                case 0x22, 0x5C: escaped(b)
                case 0x0A: escaped(UInt8(ascii: "n"))
                case 0x0D: escaped(UInt8(ascii: "r"))
                case 0x09: escaped(UInt8(ascii: "t"))
                case 0x08 where go: escaped(UInt8(ascii: "b"))
                case 0x0C where go: escaped(UInt8(ascii: "f"))
                case 0xE2:
                    // Go escapes U+2028 and U+2029 (JavaScript line terminators); the condition above checked the bytes.
                    unicodeEscape(bytes[i + 1] == 0xA8 ? 0x2028 : 0x2029)
                    i += 2
                default: unicodeEscape(UInt32(b))
                }
                run = i
            }
            if run < bytes.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[run...])) }
        }
        out.append(0x22)
    }
}
