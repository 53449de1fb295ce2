import CairnJSON
import Testing

/// The string writer copies bytes that need no escape in runs; this checks it against the rules
/// written out one scalar at a time, over strings made mostly of the characters that do need one.
/// (The writer before it escaped `<` and `>` outside Go's mode too: its `where go` bound to `&` alone.)
@Suite struct JSONStringTests {
    static func reference(_ s: String, go: Bool) -> String {
        func u(_ v: UInt32) -> String {
            let digits = Array("0123456789abcdef")
            return "\\u" + String([digits[Int(v >> 12 & 0xF)], digits[Int(v >> 8 & 0xF)], digits[Int(v >> 4 & 0xF)], digits[Int(v & 0xF)]])
        }
        var out = "\""
        for c in s.unicodeScalars {
            switch c.value {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x08 where go: out += "\\b"
            case 0x0C where go: out += "\\f"
            case 0..<0x20: out += u(c.value)
            // A `where` clause binds to the last pattern of a list only: one per pattern.
            case 0x3C where go, 0x3E where go, 0x26 where go, 0x2028 where go, 0x2029 where go: out += u(c.value)
            default: out.unicodeScalars.append(c)
            }
        }
        return out + "\""
    }

    @Test func escapesAsTheRulesSay() throws {
        let pieces: [String] = ["a", "bc", "\"", "\\", "\n", "\r", "\t", "\u{08}", "\u{0C}", "\u{01}", "\u{1F}", "<", ">", "&",
                                "\u{2028}", "\u{2029}", "\u{2027}", "\u{202A}", "é", "€", "😀", "\u{7F}", " ", "x\u{0}y"]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            var s = ""
            for _ in 0..<Int.random(in: 0...12, using: &rng) { s += pieces.randomElement(using: &rng)! }
            for go in [false, true] {
                let written = String(decoding: JSON.string(s).serialized(goEscaping: go), as: UTF8.self)
                #expect(written == Self.reference(s, go: go), "\(Array(s.unicodeScalars)) go: \(go)")
                #expect(try JSON.parse(Array(written.utf8)) == .string(s))
            }
        }
    }
}
