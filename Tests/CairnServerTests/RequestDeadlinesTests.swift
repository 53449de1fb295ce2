import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Testing
@testable import CairnServer

/// The HTTP deadlines on one connection, on a loop whose clock the test moves: an idle connection and a
/// body that drips are closed at their deadline; a connection answering is never cut; a timer due
/// earlier than the current deadline looks again instead of closing.
@Suite struct RequestDeadlinesTests {
    static let limits: HTTPLimits = {
        var l = HTTPLimits()
        l.idleTimeoutMillis = 1_000
        l.bodyTimeoutMillis = 3_000
        return l
    }()

    static func connection() throws -> (EmbeddedChannel, EmbeddedEventLoop) {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.addHandler(RequestDeadlines(limits: limits))
        return (channel, loop)
    }

    static let head = HTTPRequestPart.head(HTTPRequest(method: .post, scheme: nil, authority: "x", path: "/v1/db/default/query"))

    static func advance(_ loop: EmbeddedEventLoop, _ millis: Int64) {
        loop.advanceTime(by: .milliseconds(millis))
    }

    @Test("an idle connection closes at the idle timeout, not before")
    func idleCloses() throws {
        let (channel, loop) = try Self.connection()
        Self.advance(loop, 999)
        #expect(channel.isActive)
        Self.advance(loop, 2)
        #expect(!channel.isActive)
    }

    @Test("each answer moves the idle deadline: the first timer, due earlier, re-arms instead of closing")
    func answeredConnectionStays() throws {
        let (channel, loop) = try Self.connection()
        Self.advance(loop, 500)
        try channel.writeInbound(Self.head)
        try channel.writeInbound(HTTPRequestPart.end(nil))
        Self.advance(loop, 400)
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        // Idle since 900 ms: the timer armed for 1,000 ms fires, finds 1,900 ms, and waits for it.
        Self.advance(loop, 600)
        #expect(channel.isActive)
        Self.advance(loop, 399)
        #expect(channel.isActive)
        Self.advance(loop, 2)
        #expect(!channel.isActive)
    }

    @Test("a body that does not arrive within the body timeout of its head closes the connection")
    func drippingBodyCloses() throws {
        let (channel, loop) = try Self.connection()
        try channel.writeInbound(Self.head)
        var buffer = channel.allocator.buffer(capacity: 1)
        buffer.writeString("[")
        for _ in 0..<29 {
            Self.advance(loop, 100)
            try channel.writeInbound(HTTPRequestPart.body(buffer))
        }
        // 2.9 s after the head, past the idle timeout but within the body's: open.
        #expect(channel.isActive)
        Self.advance(loop, 102)
        #expect(!channel.isActive)
    }

    @Test("pipelined requests: no deadline while any is unanswered, however long; idle after the last answer")
    func pipelinedWaitsForAnswers() throws {
        let (channel, loop) = try Self.connection()
        for _ in 0..<2 {
            try channel.writeInbound(Self.head)
            try channel.writeInbound(HTTPRequestPart.end(nil))
        }
        Self.advance(loop, 10_000)
        #expect(channel.isActive)
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        Self.advance(loop, 10_000)
        #expect(channel.isActive)
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        Self.advance(loop, 999)
        #expect(channel.isActive)
        Self.advance(loop, 2)
        #expect(!channel.isActive)
    }

    @Test("a removed handler's timer no longer closes the connection")
    func removedHandlerStops() throws {
        let (channel, loop) = try Self.connection()
        let handler = try channel.pipeline.syncOperations.handler(type: RequestDeadlines.self)
        try channel.pipeline.syncOperations.removeHandler(handler).wait()
        Self.advance(loop, 60_000)
        #expect(channel.isActive)
    }
}
