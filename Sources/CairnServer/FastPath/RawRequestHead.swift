import HTTPTypes

/// A request head read straight from a connection's bytes, for `RawFastPath`. Only the plainest form
/// of HTTP/1.1 is taken: a request line `METHOD /target HTTP/1.1`, fields as `name: value` with
/// token names and visible ASCII values, every line ended by CRLF, one `Content-Length` and no
/// `Transfer-Encoding`. Anything else is `unsupported`, and the connection goes to NIO's HTTP decoder,
/// which reads (or refuses) it as before. So a head this parser takes is one the decoder would read
/// the same way, field for field: there is no request two readers could frame differently. Only POST
/// is taken (the fast paths serve nothing else).
enum RawRequestHead {
    enum Outcome: Equatable {
        /// Nothing wrong so far; the head has not ended yet.
        case incomplete
        /// Not in the plain form (or longer than `maxHeadBytes`): the decoder's to read.
        case unsupported
        /// A whole head: the request, how many bytes the head took, and the body's length.
        case head(RawHead, headBytes: Int, contentLength: Int)
    }

    /// A head longer than this is left to the decoder and its limits.
    static let maxHeadBytes = 8 * 1024
    /// Fields in one head, at most (more: the decoder's).
    static let maxFields = 64
    private static let version: [UInt8] = Array("HTTP/1.1".utf8)
    /// A body length this long (in digits) is beyond any limit the fast paths take.
    static let maxLengthDigits = 12

    /// Where the head in `bytes` ends, looking only from `scannedTo` on (what an earlier call found
    /// incomplete is not scanned again: a head dripping in a byte at a time costs linear work). Line
    /// ends are checked here: every LF follows a CR and every CR precedes an LF.
    static func headEnd(_ bytes: UnsafeRawBufferPointer, scannedTo: Int = 0) -> (outcome: Outcome?, end: Int) {
        let limit = min(bytes.count, maxHeadBytes)
        // The last three bytes seen may begin the blank line; a lone CR at the end is only unfinished.
        var i = max(0, min(scannedTo, limit) - 3)
        while i < limit {
            switch bytes[i] {
            case 0x0A:
                guard i > 0, bytes[i - 1] == 0x0D else { return (.unsupported, 0) }
                if i >= 3, bytes[i - 2] == 0x0A, bytes[i - 3] == 0x0D { return (nil, i + 1) }
            case 0x0D:
                if i + 1 < limit, bytes[i + 1] != 0x0A { return (.unsupported, 0) }
            default:
                break
            }
            i += 1
        }
        return (bytes.count >= maxHeadBytes ? .unsupported : .incomplete, limit)
    }

    /// The head at the start of `bytes`; `scannedTo`: how far an earlier call found it incomplete.
    static func parse(_ bytes: UnsafeRawBufferPointer, scannedTo: Int = 0) -> Outcome {
        let (early, headBytes) = headEnd(bytes, scannedTo: scannedTo)
        if let early { return early }
        var lineStart = 0
        var method: HTTPRequest.Method?
        var path = ""
        var authority: String?
        var fields: [RawHead.Field] = []
        var fieldCount = 0
        var contentLength: Int?
        while lineStart < headBytes {
            // `headEnd` checked that every CR is followed by an LF.
            var i = lineStart
            while bytes[i] != 0x0D { i += 1 }
            let line = lineStart..<i
            lineStart = i + 2
            if method == nil {
                guard let (m, target) = requestLine(bytes, line) else { return .unsupported }
                method = m
                path = target
                continue
            }
            if line.isEmpty { break }
            guard let (name, valueRange, padded) = field(bytes, line) else { return .unsupported }
            fieldCount += 1
            guard fieldCount <= maxFields else { return .unsupported }
            switch known(bytes, name) {
            case .transferEncoding, .upgrade, .proxyConnection:
                // Fields that change how NIO's decoder frames what follows (chunks; no more requests
                // after an upgrade or a proxy's close): the decoder's to read.
                return .unsupported
            case .connection:
                // Only the default: `close` and `upgrade` end the requests NIO's decoder reads.
                guard text(bytes, valueRange).lowercased() == "keep-alive" else { return .unsupported }
            case .contentLength:
                // NIO's decoder refuses a length followed by a tab: only the bare digits are taken.
                guard contentLength == nil, !padded, let n = length(text(bytes, valueRange)) else { return .unsupported }
                contentLength = n
            case .host where authority == nil:
                // As NIO's conversion to HTTP types: the first Host is the authority, not a field.
                authority = text(bytes, valueRange)
                continue
            default:
                break
            }
            fields.append(RawHead.Field(name: name, value: valueRange))
        }
        guard method == .post, let contentLength, lineStart == headBytes else { return .unsupported }
        let head = RawHead(bytes: Array(UnsafeRawBufferPointer(rebasing: bytes[0..<headBytes])), path: path, authority: authority, fields: fields)
        return .head(head, headBytes: headBytes, contentLength: contentLength)
    }

    /// The fields `parse` looks at.
    private enum KnownField { case other, host, upgrade, connection, contentLength, proxyConnection, transferEncoding }

    /// Which of them the name in `r` is, compared without regard to case and without building a string.
    private static func known(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> KnownField {
        func named(_ name: StaticString) -> Bool {
            name.withUTF8Buffer { n in
                n.count == r.count && (0..<n.count).allSatisfy { RawHead.lower(b[r.lowerBound + $0]) == n[$0] }
            }
        }
        switch r.count {
        case 4: return named("host") ? .host : .other
        case 7: return named("upgrade") ? .upgrade : .other
        case 10: return named("connection") ? .connection : .other
        case 14: return named("content-length") ? .contentLength : .other
        case 16: return named("proxy-connection") ? .proxyConnection : .other
        case 17: return named("transfer-encoding") ? .transferEncoding : .other
        default: return .other
        }
    }

    /// `METHOD SP origin-form-target SP HTTP/1.1`.
    private static func requestLine(_ b: UnsafeRawBufferPointer, _ line: Range<Int>) -> (HTTPRequest.Method, String)? {
        var i = line.lowerBound
        while i < line.upperBound, isTokenByte(b[i]) { i += 1 }
        let methodBytes = line.lowerBound..<i
        guard !methodBytes.isEmpty, i < line.upperBound, b[i] == 0x20 else { return nil }
        i += 1
        let targetStart = i
        // Origin form only: an absolute URI, `*` or an authority are the decoder's.
        guard i < line.upperBound, b[i] == UInt8(ascii: "/") else { return nil }
        while i < line.upperBound, b[i] > 0x20, b[i] < 0x7F { i += 1 }
        let target = targetStart..<i
        guard i < line.upperBound, b[i] == 0x20 else { return nil }
        i += 1
        guard line.upperBound - i == version.count, (0..<version.count).allSatisfy({ b[i + $0] == version[$0] }) else { return nil }
        // The fast paths serve POST only; other methods, whatever NIO's decoder makes of them, are its own.
        guard methodBytes.count == 4, b[methodBytes.lowerBound] == UInt8(ascii: "P"), b[methodBytes.lowerBound + 1] == UInt8(ascii: "O"),
              b[methodBytes.lowerBound + 2] == UInt8(ascii: "S"), b[methodBytes.lowerBound + 3] == UInt8(ascii: "T") else { return nil }
        return (.post, text(b, target))
    }

    /// `name: value`, the value without the spaces around it; `padded`: spaces or tabs followed it.
    private static func field(_ b: UnsafeRawBufferPointer, _ line: Range<Int>) -> (name: Range<Int>, value: Range<Int>, padded: Bool)? {
        var i = line.lowerBound
        while i < line.upperBound, isTokenByte(b[i]) { i += 1 }
        // No space before the colon, and no line folded onto the one before (it would start with one).
        guard i > line.lowerBound, i < line.upperBound, b[i] == UInt8(ascii: ":") else { return nil }
        let nameBytes = line.lowerBound..<i
        var start = i + 1, end = line.upperBound
        while start < end, b[start] == 0x20 || b[start] == 0x09 { start += 1 }
        while end > start, b[end - 1] == 0x20 || b[end - 1] == 0x09 { end -= 1 }
        for j in start..<end where !(b[j] == 0x09 || (b[j] >= 0x20 && b[j] < 0x7F)) { return nil }
        return (nameBytes, start..<end, end < line.upperBound)
    }

    private static func length(_ value: String) -> Int? {
        let digits = value.utf8
        guard !digits.isEmpty, digits.count <= maxLengthDigits, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int(value)
    }

    private static func text(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: b[r]), as: UTF8.self)
    }

    /// RFC 9110's tchar.
    static func isTokenByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }
}

/// A head `RawRequestHead` read: its bytes, and where each field's name and value are in them. The
/// fast paths' servers ask it for a handful of fields (`field`); nothing is built for the others.
/// (Building HTTP types' fields for every request, names validated and lowercased, values checked and
/// stored, was about a twentieth of a point read's CPU.)
struct RawHead: Sendable, Equatable {
    struct Field: Sendable, Equatable {
        var name: Range<Int>
        var value: Range<Int>
    }

    let bytes: [UInt8]
    /// The request's target (the method is always POST).
    let path: String
    /// The first Host field's value, which is not among `fields` (as NIO's conversion to HTTP types).
    let authority: String?
    let fields: [Field]

    /// The values of the fields named `name`, joined by ", " as `HTTPFields` joins them; nil if none.
    func field(_ name: HTTPField.Name) -> String? {
        let wanted = name.canonicalName.utf8
        var found: String?
        for f in fields where f.name.count == wanted.count && zip(bytes[f.name], wanted).allSatisfy({ Self.lower($0) == $1 }) {
            let value = String(decoding: bytes[f.value], as: UTF8.self)
            found = found.map { $0 + (name == .cookie ? "; " : ", ") + value } ?? value
        }
        return found
    }

    /// Every field as (name as sent, value), in order.
    var allFields: [(name: String, value: String)] {
        fields.map { (String(decoding: bytes[$0.name], as: UTF8.self), String(decoding: bytes[$0.value], as: UTF8.self)) }
    }

    static func lower(_ c: UInt8) -> UInt8 { c >= 0x41 && c <= 0x5A ? c + 0x20 : c }
}
