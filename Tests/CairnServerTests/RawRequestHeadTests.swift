import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Testing
@testable import CairnServer

/// The request heads `RawFastPath` reads from a connection's bytes: the plain form is taken, anything
/// else is left to NIO's decoder, and whatever it takes, the decoder reads the same way.
@Suite struct RawRequestHeadTests {
    static func parse(_ text: String) -> RawRequestHead.Outcome {
        Array(text.utf8).withUnsafeBytes { RawRequestHead.parse($0) }
    }

    static let plain = "POST /v1/db/shop/execute HTTP/1.1\r\nHost: n1:4001\r\nContent-Type: application/json\r\nAuthorization: Bearer abc.def\r\nContent-Length: 27\r\n\r\n"

    @Test("a plain head: method, target, the first Host as the authority, the other fields in order, the body's length")
    func plainHead() throws {
        guard case .head(let head, let headBytes, let length) = Self.parse(Self.plain + "{\"statements\":[\"SELECT 1\"]}") else {
            Issue.record("not taken")
            return
        }
        #expect(head.path == "/v1/db/shop/execute")
        #expect(head.authority == "n1:4001")
        #expect(head.allFields.map { "\($0.name)=\($0.value)" } == ["Content-Type=application/json", "Authorization=Bearer abc.def", "Content-Length=27"])
        // Looked up as HTTP types look fields up: by name whatever its case; none for one not there.
        #expect(head.field(.authorization) == "Bearer abc.def")
        #expect(head.field(.contentType) == "application/json")
        #expect(head.field(.origin) == nil)
        #expect(head.field(HTTPField.Name("Host")!) == nil, "the first Host is the authority")
        #expect(headBytes == Self.plain.utf8.count)
        #expect(length == 27)
    }

    @Test("every cut of a plain head before its end is incomplete, not refused")
    func cutsAreIncomplete() {
        let bytes = Array(Self.plain.utf8)
        for cut in 0..<(bytes.count - 1) {
            let outcome = Array(bytes[..<cut]).withUnsafeBytes { RawRequestHead.parse($0) }
            #expect(outcome == .incomplete, "cut at \(cut)")
        }
    }

    @Test("heads not in the plain form are left to the decoder", arguments: [
        ("a lone LF ends a line", "POST / HTTP/1.1\nContent-Length: 0\n\n"),
        ("a CR not followed by LF", "POST / HTTP/1.1\rContent-Length: 0\r\n\r\n"),
        ("HTTP/1.0", "POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n"),
        ("an absolute target", "POST http://x/v1/db/a/query HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ("an asterisk target", "OPTIONS * HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ("two spaces in the request line", "POST  / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ("a blank line before the request", "\r\nPOST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ("a space before a field's colon", "POST / HTTP/1.1\r\nContent-Length : 0\r\n\r\n"),
        ("a folded line", "POST / HTTP/1.1\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n"),
        ("a field without a colon", "POST / HTTP/1.1\r\nX-A\r\nContent-Length: 0\r\n\r\n"),
        ("two lengths", "POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"),
        ("a length and chunks", "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("chunks alone", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("no length", "POST / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("a signed length", "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"),
        ("a negative length", "POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n"),
        ("a list of lengths", "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n"),
        ("a length followed by a tab", "POST / HTTP/1.1\r\nContent-Length: 0\t\r\n\r\n"),
        ("a length followed by a space", "POST / HTTP/1.1\r\nContent-Length: 0 \r\n\r\n"),
        ("an empty length", "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n"),
        ("a length too long for any body", "POST / HTTP/1.1\r\nContent-Length: 1000000000000000\r\n\r\n"),
        ("a NUL in a value", "POST / HTTP/1.1\r\nX-A: a\u{0}b\r\nContent-Length: 0\r\n\r\n"),
        ("a DEL in a value", "POST / HTTP/1.1\r\nX-A: a\u{7F}b\r\nContent-Length: 0\r\n\r\n"),
        ("a byte past ASCII in a value", "POST / HTTP/1.1\r\nX-A: caf\u{E9}\r\nContent-Length: 0\r\n\r\n"),
        ("a non-token byte in a name", "POST / HTTP/1.1\r\nX(A): 1\r\nContent-Length: 0\r\n\r\n"),
        ("a method other than POST", "PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ("an upgrade", "POST / HTTP/1.1\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n"),
        ("a proxy's connection field", "POST / HTTP/1.1\r\nProxy-Connection: keep-alive\r\nContent-Length: 0\r\n\r\n"),
        ("a closing connection", "POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
        ("a connection listing more than keep-alive", "POST / HTTP/1.1\r\nConnection: keep-alive, upgrade\r\nContent-Length: 0\r\n\r\n"),
        ("a method in lower case", "post / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
    ])
    func leftToDecoder(_ why: String, _ text: String) {
        #expect(Self.parse(text) == .unsupported, "\(why)")
    }

    @Test("a head past the size limit, or with too many fields, is left to the decoder")
    func limits() {
        let long = "POST / HTTP/1.1\r\nX-A: " + String(repeating: "a", count: RawRequestHead.maxHeadBytes) + "\r\nContent-Length: 0\r\n\r\n"
        #expect(Self.parse(long) == .unsupported)
        let endless = "POST / HTTP/1.1\r\n" + String(repeating: "X-A: 1\r\n", count: RawRequestHead.maxHeadBytes / 8 + 1)
        #expect(Self.parse(endless) == .unsupported, "no end in sight within the limit")
        let many = "POST / HTTP/1.1\r\n" + String(repeating: "X-A: 1\r\n", count: RawRequestHead.maxFields) + "Content-Length: 0\r\n\r\n"
        #expect(Self.parse(many) == .unsupported)
    }

    /// What NIO's HTTP/1 decoder, then the conversion to HTTP types (the pipeline the router's requests
    /// take), reads from `bytes`: each whole request's head and body, in order, until it stops (an
    /// error, an upgrade, a close).
    static func decoded(_ bytes: [UInt8]) -> [(HTTPRequest, [UInt8])] {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        do {
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
            try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        } catch {
            return []
        }
        // An error stops the decoder; what it read before stays readable.
        _ = try? channel.writeInbound(ByteBuffer(bytes: bytes))
        var requests: [(HTTPRequest, [UInt8])] = []
        var head: HTTPRequest?
        var body: [UInt8] = []
        while let part = try? channel.readInbound(as: HTTPRequestPart.self) {
            switch part {
            case .head(let h): head = h; body = []
            case .body(let b): body += b.readableBytesView
            case .end: if let head { requests.append((head, body)) }; head = nil
            }
        }
        return requests
    }

    /// The same request: method, target, authority, every field in order, and each name looked up
    /// alike (repeated fields joined as HTTP types join them).
    static func same(_ a: HTTPRequest, _ b: RawHead) -> Bool {
        a.method == .post && a.path == b.path && a.authority == b.authority
            && a.headerFields.map { "\($0.name.canonicalName)=\($0.value)" } == b.allFields.map { "\($0.name.lowercased())=\($0.value)" }
            && a.headerFields.allSatisfy { a.headerFields[$0.name] == b.field($0.name) }
    }

    @Test("a field sent twice is looked up as HTTP types give it: the values joined")
    func repeatedFields() throws {
        let text = "POST /x HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n"
        guard case .head(let head, _, _) = Self.parse(text) else {
            Issue.record("not taken")
            return
        }
        #expect(head.field(HTTPField.Name("x-a")!) == "1, 2")
        #expect(head.field(.contentLength) == "0")
    }

    @Test("whatever the plain-form reader takes, NIO's decoder reads alike, and the request after it too: 20,000 mutated heads")
    func agreesWithDecoder() {
        let bases = [
            Self.plain + "{\"statements\":[\"SELECT 1\"]}",
            "POST /v1/db/a/query HTTP/1.1\r\nHost: h\r\nHost: second\r\nX-Empty:\r\nX-Tab:\tv \t\r\nContent-Length: 3\r\n\r\nabc",
            "POST /v1/db/a/execute HTTP/1.1\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
            // Fields that stop NIO's decoder after this request: the reader must not take it either.
            "POST /v1/db/a/query HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n{}",
            "POST /v1/db/a/query HTTP/1.1\r\nProxy-Connection: close\r\nContent-Length: 2\r\n\r\n{}",
            "POST /v1/db/a/query HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        ]
        let next = Array("POST /v1/db/b/query HTTP/1.1\r\nHost: n\r\nContent-Length: 1\r\n\r\nz".utf8)
        // Bytes a mutation puts in: the ones framing and field parsing turn on, some that are never
        // allowed, and letters that turn one field's name or value into another's.
        let alphabet: [UInt8] = Array("\r\n :\t,;/-+0123456789aZ\"(ekpcglo".utf8) + [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0B, 0x0C]
        var rng = SplitMix(seed: 0x5eed_0f_ba5e)
        var taken = 0
        for round in 0..<20_000 {
            var bytes = Array(bases[round % bases.count].utf8)
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let at = Int(rng.next() % UInt64(bytes.count))
                let b = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                switch rng.next() % 3 {
                case 0: bytes[at] = b
                case 1: bytes.insert(b, at: at)
                default: bytes.remove(at: at)
                }
            }
            guard case .head(let head, let headBytes, let length) = bytes.withUnsafeBytes({ RawRequestHead.parse($0) }),
                  bytes.count >= headBytes + length else { continue }
            taken += 1
            // The request as the reader framed it, then a plain one after it: the decoder must find
            // both, at the same places.
            bytes = Array(bytes[..<(headBytes + length)]) + next
            let shown = String(decoding: bytes, as: UTF8.self).debugDescription
            let nio = Self.decoded(bytes)
            guard nio.count == 2 else {
                Issue.record("taken, but NIO's decoder reads \(nio.count) of the 2 requests in \(shown)")
                continue
            }
            #expect(Self.same(nio[0].0, head), "\(shown)")
            #expect(nio[0].1 == Array(bytes[headBytes..<(headBytes + length)]), "\(shown)")
            guard case .head(let second, _, _) = Array(bytes[(headBytes + length)...]).withUnsafeBytes({ RawRequestHead.parse($0) }) else {
                Issue.record("the request after \(shown) is not taken")
                continue
            }
            #expect(Self.same(nio[1].0, second) && nio[1].1 == Array("z".utf8), "\(shown)")
        }
        #expect(taken > 2_000, "the mutations leave enough heads in the plain form to compare (\(taken))")
    }

    @Test("a head dripping in is scanned once: a call told how far an earlier one got finds the same end")
    func resumedScan() {
        let bytes = Array((Self.plain + "{\"statements\":[\"SELECT 1\"]}").utf8)
        var scanned = 0
        for cut in 1...bytes.count {
            let outcome = Array(bytes[..<cut]).withUnsafeBytes { RawRequestHead.parse($0, scannedTo: scanned) }
            if cut < Self.plain.utf8.count {
                #expect(outcome == .incomplete, "cut at \(cut)")
                scanned = cut
            } else {
                guard case .head(_, let headBytes, _) = outcome else { Issue.record("not taken at \(cut)"); return }
                #expect(headBytes == Self.plain.utf8.count)
            }
        }
    }

    /// A small seeded generator: the test's cases are the same on every run.
    struct SplitMix {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }
}
