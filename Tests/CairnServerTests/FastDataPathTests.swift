import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Testing
@testable import CairnAuth
@testable import CairnServer

/// The fast path's HTTP order on one connection, with a server the test answers by hand: a request it
/// takes is answered before any later one is looked at; behind a request the router has, everything
/// goes to the router until it answered; reads and a shutdown wait for an answer in flight.
@Suite struct FastDataPathTests {
    /// Takes requests to paths starting `/fast`; the test answers them.
    final class HandServer: FastDataServer, Sendable {
        let taken = NIOLockedValueBox<[(path: String, body: String, reply: @Sendable (FastResponse) -> Void)]>([])

        func fastRequest(_ head: FastHead, remote: String) -> FastRequest? {
            guard let path = head.path, path.hasPrefix("/fast") else { return nil }
            return FastRequest(endpoint: .write, database: path, principal: Principal(user: nil, grants: Grants([])))
        }

        func serveFast(_ request: FastRequest, body: ByteBuffer, reply: @escaping @Sendable (FastResponse) -> Void) {
            taken.withLockedValue { $0.append((request.database, String(buffer: body), reply)) }
        }

        var count: Int { taken.withLockedValue { $0.count } }

        func answer(_ i: Int, _ text: String) {
            let reply = taken.withLockedValue { $0[i].reply }
            reply(FastResponse(head: HTTPResponse(status: .ok), body: ByteBuffer(string: text)))
        }
    }

    /// Records the outbound reads and inbound events that pass it.
    final class Recorder: ChannelDuplexHandler, Sendable {
        typealias InboundIn = HTTPRequestPart
        typealias OutboundIn = HTTPResponsePart
        let reads = NIOLockedValueBox(0)
        let events = NIOLockedValueBox(0)
        let errors = NIOLockedValueBox(0)

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            errors.withLockedValue { $0 += 1 }
            context.fireErrorCaught(error)
        }

        func read(context: ChannelHandlerContext) {
            reads.withLockedValue { $0 += 1 }
            context.read()
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            events.withLockedValue { $0 += 1 }
            context.fireUserInboundEventTriggered(event)
        }
    }

    struct Connection {
        let channel: EmbeddedChannel
        let loop: EmbeddedEventLoop
        let server: HandServer
        /// Before the fast path: sees the reads it lets through.
        let socketSide: Recorder
        /// After it: sees what reaches the router.
        let routerSide: Recorder
    }

    static func connection(maxBodyBytes: Int = 1_000) throws -> Connection {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let server = HandServer()
        let socketSide = Recorder(), routerSide = Recorder()
        try channel.pipeline.syncOperations.addHandler(socketSide)
        try channel.pipeline.syncOperations.addHandler(FastDataPath(server: server, maxBodyBytes: maxBodyBytes))
        try channel.pipeline.syncOperations.addHandler(routerSide)
        return Connection(channel: channel, loop: loop, server: server, socketSide: socketSide, routerSide: routerSide)
    }

    static func send(_ c: Connection, _ path: String, body: String = "", closing: Bool = false) throws {
        var head = HTTPRequest(method: .post, scheme: nil, authority: "x", path: path)
        if closing { head.headerFields[.connection] = "close" }
        try c.channel.writeInbound(HTTPRequestPart.head(head))
        if !body.isEmpty { try c.channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: body))) }
        try c.channel.writeInbound(HTTPRequestPart.end(nil))
    }

    /// The paths of the request heads that reached the router, in order.
    static func routed(_ c: Connection) throws -> [String] {
        var paths: [String] = []
        while let part = try c.channel.readInbound(as: HTTPRequestPart.self) {
            if case .head(let h) = part { paths.append(h.path ?? "") }
        }
        return paths
    }

    /// The response bodies written to the client, in order.
    static func written(_ c: Connection) throws -> [String] {
        var bodies: [String] = []
        while let part = try c.channel.readOutbound(as: HTTPResponsePart.self) {
            if case .body(let b) = part { bodies.append(String(buffer: b)) }
        }
        return bodies
    }

    /// The router answering one request.
    static func routerAnswers(_ c: Connection, _ text: String) throws {
        try c.channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try c.channel.writeOutbound(HTTPResponsePart.body(ByteBuffer(string: text)))
        try c.channel.writeOutbound(HTTPResponsePart.end(nil))
    }

    @Test("a request the fast path takes is answered by it, body and all; the router never sees it")
    func taken() throws {
        let c = try Self.connection()
        try Self.send(c, "/fast/1", body: "{\"a\":1}")
        #expect(c.server.count == 1)
        #expect(c.server.taken.withLockedValue { $0[0].body } == "{\"a\":1}")
        #expect(try Self.routed(c).isEmpty)
        c.server.answer(0, "one")
        c.loop.run()
        #expect(try Self.written(c) == ["one"])
    }

    @Test("a request pipelined behind one in flight waits for its answer, then goes where it belongs")
    func pipelinedBehindFast() throws {
        let c = try Self.connection()
        try Self.send(c, "/fast/1")
        try Self.send(c, "/slow/2")
        try Self.send(c, "/fast/3")
        #expect(try Self.routed(c).isEmpty, "nothing passes an answer in flight")
        #expect(c.server.count == 1)
        c.server.answer(0, "one")
        c.loop.run()
        #expect(try Self.written(c) == ["one"])
        // Behind the router's request, the next fast one goes to the router too: it answers in order.
        #expect(try Self.routed(c) == ["/slow/2", "/fast/3"])
        #expect(c.server.count == 1)
    }

    @Test("once the router has answered every request it was given, the fast path takes the next one")
    func backToFastAfterRouter() throws {
        let c = try Self.connection()
        try Self.send(c, "/slow/1")
        try Self.send(c, "/fast/2")
        #expect(try Self.routed(c) == ["/slow/1", "/fast/2"])
        try Self.routerAnswers(c, "one")
        #expect(c.server.count == 0, "the router still owes an answer")
        try Self.routerAnswers(c, "two")
        try Self.send(c, "/fast/3")
        #expect(c.server.count == 1)
        #expect(try Self.routed(c).isEmpty)
    }

    @Test("a body larger than the fast path takes goes to the router whole, in order")
    func largeBodyRoutedBack() throws {
        let c = try Self.connection(maxBodyBytes: 8)
        try c.channel.writeInbound(HTTPRequestPart.head(HTTPRequest(method: .post, scheme: nil, authority: "x", path: "/fast/1")))
        try c.channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "12345")))
        try c.channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "67890")))
        try c.channel.writeInbound(HTTPRequestPart.end(nil))
        var parts: [String] = []
        while let part = try c.channel.readInbound(as: HTTPRequestPart.self) {
            switch part {
            case .head(let h): parts.append("head \(h.path ?? "")")
            case .body(let b): parts.append("body \(String(buffer: b))")
            case .end: parts.append("end")
            }
        }
        #expect(parts == ["head /fast/1", "body 12345", "body 67890", "end"])
        #expect(c.server.count == 0)
    }

    @Test("reads from the socket stop while an answer is in flight, and resume after it")
    func readsWait() throws {
        let c = try Self.connection()
        let before = c.socketSide.reads.withLockedValue { $0 }
        try Self.send(c, "/fast/1")
        c.channel.read()
        #expect(c.socketSide.reads.withLockedValue { $0 } == before, "held while serving")
        c.server.answer(0, "one")
        c.loop.run()
        #expect(c.socketSide.reads.withLockedValue { $0 } == before + 1)
        c.channel.read()
        #expect(c.socketSide.reads.withLockedValue { $0 } == before + 2)
    }

    @Test("a shutdown reaches the connection's idle check only after the answer in flight is written")
    func quiesceWaits() throws {
        let c = try Self.connection()
        try Self.send(c, "/fast/1")
        c.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(c.routerSide.events.withLockedValue { $0 } == 0)
        c.server.answer(0, "one")
        c.loop.run()
        #expect(try Self.written(c) == ["one"])
        #expect(c.routerSide.events.withLockedValue { $0 } == 1)
    }

    @Test("a shutdown during an answer ends the connection after it: requests pipelined behind it never run")
    func quiesceDropsPipelined() throws {
        let c = try Self.connection()
        try Self.send(c, "/fast/1")
        try Self.send(c, "/fast/2")
        c.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        c.server.answer(0, "one")
        c.loop.run()
        #expect(try Self.written(c) == ["one"])
        #expect(c.routerSide.events.withLockedValue { $0 } == 1)
        #expect(c.server.count == 1, "the request behind the shutdown was not run")
        #expect(try Self.routed(c).isEmpty)
    }

    @Test("a half-close or bytes that are not HTTP behind an answer in flight reach the router only after the answer")
    func endOfInputWaits() throws {
        let c = try Self.connection()
        try Self.send(c, "/fast/1")
        c.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        c.channel.pipeline.fireErrorCaught(ChannelError.inputClosed)
        #expect(c.routerSide.events.withLockedValue { $0 } == 0)
        #expect(c.routerSide.errors.withLockedValue { $0 } == 0)
        c.server.answer(0, "one")
        c.loop.run()
        #expect(try Self.written(c) == ["one"])
        #expect(c.routerSide.events.withLockedValue { $0 } == 1)
        #expect(c.routerSide.errors.withLockedValue { $0 } == 1)
    }

    @Test("after a request that closes the connection, nothing more is taken")
    func nothingAfterClose() throws {
        let c = try Self.connection()
        try Self.send(c, "/slow/1", closing: true)
        try Self.routerAnswers(c, "one")
        try Self.send(c, "/fast/2")
        #expect(c.server.count == 0)
        #expect(try Self.routed(c) == ["/slow/1", "/fast/2"])
    }

    @Test("while answers wait in the socket's buffer (a client that does not read), nothing more is taken or read")
    func waitsForWritable() throws {
        let c = try Self.connection()
        try Self.send(c, "/fast/1")
        try Self.send(c, "/fast/2")
        c.channel.isWritable = false
        c.server.answer(0, "one")
        c.loop.run()
        let reads = c.socketSide.reads.withLockedValue { $0 }
        c.channel.read()
        #expect(c.server.count == 1, "the next request waits for the socket to drain")
        #expect(c.socketSide.reads.withLockedValue { $0 } == reads)
        c.channel.isWritable = true
        c.channel.pipeline.fireChannelWritabilityChanged()
        #expect(c.server.count == 2)
        c.server.answer(1, "two")
        c.loop.run()
        #expect(try Self.written(c) == ["one", "two"])
        #expect(c.socketSide.reads.withLockedValue { $0 } == reads + 1)
    }

    @Test("an answer for a connection the client closed is dropped")
    func closedBeforeAnswer() throws {
        let c = try Self.connection()
        try Self.send(c, "/fast/1")
        _ = try? c.channel.finish()
        c.server.answer(0, "one")
        c.loop.run()
        #expect(!c.channel.isActive)
    }
}
