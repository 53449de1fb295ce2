import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing
@testable import CairnServer

/// HTTP/1's connection rules on one connection (`HTTP1ConnectionRules`): which answers end it, how an
/// HTTP/1.0 request is answered, and `100 Continue`.
@Suite struct HTTPConnectionRulesTests {
    static func connection() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.addHandler(HTTP1ConnectionRules())
        return channel
    }

    static func request(_ version: HTTPVersion, _ fields: [(String, String)] = []) -> HTTPServerRequestPart {
        .head(HTTPRequestHead(version: version, method: .POST, uri: "/v1/db/default/query", headers: HTTPHeaders(fields)))
    }

    /// Answers the oldest request with `fields`; returns the head as written and whether the
    /// connection is still open after the answer's end.
    static func answer(_ channel: EmbeddedChannel, _ fields: [(String, String)] = [("content-length", "2")]) throws -> (HTTPResponseHead, Bool) {
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders(fields))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        guard case .head(let head)? = try channel.readOutbound(as: HTTPServerResponsePart.self) else {
            Issue.record("no answer head")
            return (HTTPResponseHead(version: .http1_1, status: .ok), channel.isActive)
        }
        while try channel.readOutbound(as: HTTPServerResponsePart.self) != nil {}
        return (head, channel.isActive)
    }

    @Test("an HTTP/1.1 request keeps the connection: its answer is left as it is")
    func http11KeepsConnection() throws {
        let channel = try Self.connection()
        try channel.writeInbound(Self.request(.http1_1))
        let (head, open) = try Self.answer(channel)
        #expect(open)
        #expect(head.version == .http1_1 && head.headers["connection"].isEmpty)
    }

    @Test("a close token in any case, among others, ends the connection after the answer, which says so")
    func closeTokenEndsConnection() throws {
        for value in ["close", "Close", "keep-alive, CLOSE", "TE, close"] {
            let channel = try Self.connection()
            try channel.writeInbound(Self.request(.http1_1, [("Connection", value)]))
            let (head, open) = try Self.answer(channel)
            #expect(!open, "Connection: \(value)")
            #expect(head.headers["connection"] == ["close"], "Connection: \(value)")
        }
    }

    @Test("an HTTP/1.0 request without keep-alive is answered as HTTP/1.0, then the connection ends")
    func http10Closes() throws {
        let channel = try Self.connection()
        try channel.writeInbound(Self.request(.http1_0))
        let (head, open) = try Self.answer(channel)
        #expect(!open)
        #expect(head.version == .http1_0 && head.headers["connection"] == ["close"])
    }

    @Test("an HTTP/1.0 request with keep-alive keeps the connection when its answer has a length, not when it has none")
    func http10KeepAlive() throws {
        let channel = try Self.connection()
        try channel.writeInbound(Self.request(.http1_0, [("Connection", "keep-alive")]))
        let (head, open) = try Self.answer(channel)
        #expect(open)
        #expect(head.version == .http1_0 && head.headers["connection"] == ["keep-alive"])
        try channel.writeInbound(Self.request(.http1_0, [("Connection", "keep-alive")]))
        let (second, stillOpen) = try Self.answer(channel, [])
        #expect(!stillOpen, "an HTTP/1.0 answer without a length ends where the connection does")
        #expect(second.headers["connection"] == ["close"])
    }

    @Test("pipelined requests: each answer follows its own request's rule")
    func pipelined() throws {
        let channel = try Self.connection()
        try channel.writeInbound(Self.request(.http1_1))
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
        try channel.writeInbound(Self.request(.http1_1, [("Connection", "close")]))
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
        let (first, openAfterFirst) = try Self.answer(channel)
        #expect(openAfterFirst && first.headers["connection"].isEmpty)
        let (_, openAfterSecond) = try Self.answer(channel)
        #expect(!openAfterSecond)
    }

    @Test("Expect: 100-continue with a body gets 100 Continue at once; without a body, or from HTTP/1.0, it does not")
    func continueSent() throws {
        let channel = try Self.connection()
        try channel.writeInbound(Self.request(.http1_1, [("Expect", "100-Continue"), ("Content-Length", "5")]))
        guard case .head(let interim)? = try channel.readOutbound(as: HTTPServerResponsePart.self) else {
            Issue.record("no 100 Continue")
            return
        }
        #expect(interim.status == .continue)
        #expect(try channel.readOutbound(as: HTTPServerResponsePart.self) == nil)
        // The answer after it is still the request's own, and keeps the connection.
        let (head, open) = try Self.answer(channel)
        #expect(head.status == .ok && open)
        for fields in [[("Expect", "100-continue")], [("Expect", "100-continue"), ("Content-Length", "0")]] {
            let other = try Self.connection()
            try other.writeInbound(Self.request(.http1_1, fields))
            #expect(try other.readOutbound(as: HTTPServerResponsePart.self) == nil, "\(fields)")
        }
        let old = try Self.connection()
        try old.writeInbound(Self.request(.http1_0, [("Expect", "100-continue"), ("Content-Length", "5")]))
        #expect(try old.readOutbound(as: HTTPServerResponsePart.self) == nil)
    }
}
