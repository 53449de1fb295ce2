import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Testing
@testable import CairnServer

/// The data requests served from a connection's bytes, ahead of HTTP decoding, with a server the test
/// answers by hand (`FastDataPathTests.HandServer`: paths starting `/fast` are taken): answers in the
/// requests' order, the bytes NIO's encoder would write, everything after the first request it does
/// not take handed to the decoder untouched, and reads, shutdowns and half-closes waiting for an
/// answer in flight.
@Suite struct RawFastPathTests {
    typealias HandServer = FastDataPathTests.HandServer
    typealias Recorder = FastDataPathTests.Recorder

    struct Connection {
        let channel: EmbeddedChannel
        let loop: EmbeddedEventLoop
        let server: HandServer
        /// Before the raw path: sees the reads it lets through.
        let socketSide: Recorder
        /// After it: where the decoder would be.
        let decoderSide: Recorder
        let handler: RawFastPath
    }

    static func connection(maxBodyBytes: Int = 1_000, deadlines: HTTPLimits? = nil) throws -> Connection {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let server = HandServer()
        let socketSide = Recorder(), decoderSide = Recorder()
        try channel.pipeline.syncOperations.addHandler(socketSide)
        let handler = RawFastPath(server: server, maxBodyBytes: maxBodyBytes)
        try channel.pipeline.syncOperations.addHandler(handler)
        if let deadlines { try channel.pipeline.syncOperations.addHandler(RequestDeadlines(limits: deadlines)) }
        try channel.pipeline.syncOperations.addHandler(decoderSide)
        return Connection(channel: channel, loop: loop, server: server, socketSide: socketSide, decoderSide: decoderSide, handler: handler)
    }

    static func request(_ path: String, body: String = "", method: String = "POST") -> String {
        "\(method) \(path) HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    static func send(_ c: Connection, _ text: String) throws {
        try c.channel.writeInbound(ByteBuffer(string: text))
    }

    /// The bytes handed on to the decoder, in order.
    static func passedOn(_ c: Connection) throws -> String {
        var text = ""
        while let b = try c.channel.readInbound(as: ByteBuffer.self) { text += String(buffer: b) }
        return text
    }

    /// The response bodies written to the client, in order (each response framed by its length).
    static func written(_ c: Connection) throws -> [String] {
        var bytes: [UInt8] = []
        while let b = try c.channel.readOutbound(as: ByteBuffer.self) { bytes += b.readableBytesView }
        var bodies: [String] = []
        var text = Substring(String(decoding: bytes, as: UTF8.self))
        while let end = text.range(of: "\r\n\r\n") {
            let head = text[..<end.lowerBound]
            let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
            let body = text[end.upperBound...].prefix(length)
            bodies.append(String(body))
            text = text[end.upperBound...].dropFirst(length)
        }
        return bodies
    }

    @Test("a request it takes is served from the bytes, body and all, and answered; the decoder sees none of it")
    func taken() throws {
        let c = try Self.connection()
        try Self.send(c, Self.request("/fast/1", body: "{\"a\":1}"))
        #expect(c.server.count == 1)
        #expect(c.server.taken.withLockedValue { $0[0].body } == "{\"a\":1}")
        #expect(try Self.passedOn(c).isEmpty)
        c.server.answer(0, "one")
        c.loop.run()
        #expect(try Self.written(c) == ["one"])
        #expect(c.decoderSide.events.withLockedValue { $0 } == 3, "head, end and answered are told to the deadlines")
    }

    @Test("a request arriving a byte at a time is served once it is whole")
    func byteByByte() throws {
        let c = try Self.connection()
        for byte in Self.request("/fast/1", body: "body").utf8 {
            #expect(c.server.count == 0)
            try c.channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        #expect(c.server.count == 1)
        #expect(c.server.taken.withLockedValue { $0[0].body } == "body")
        #expect(try Self.passedOn(c).isEmpty)
    }

    @Test("pipelined requests are answered in order; from the first it does not take, every byte goes to the decoder, in order")
    func pipelined() throws {
        let c = try Self.connection()
        let slow = Self.request("/slow/3", body: "x"), after = Self.request("/fast/4", body: "y")
        try Self.send(c, Self.request("/fast/1") + Self.request("/fast/2", body: "b") + slow + after)
        #expect(c.server.count == 1, "one at a time")
        c.server.answer(0, "one")
        c.loop.run()
        #expect(c.server.count == 2)
        #expect(try Self.passedOn(c).isEmpty, "nothing passes an answer in flight")
        c.server.answer(1, "two")
        c.loop.run()
        #expect(try Self.written(c) == ["one", "two"])
        #expect(try Self.passedOn(c) == slow + after)
        try Self.send(c, Self.request("/fast/5"))
        #expect(try Self.passedOn(c) == Self.request("/fast/5"), "the connection stays the decoder's")
        #expect(c.server.count == 2)
    }

    @Test("what it does not take goes to the decoder untouched: another method, a body over the limit, bytes that are not HTTP", arguments: [
        request("/fast/1", method: "GET"),
        request("/fast/1", body: String(repeating: "z", count: 9)),
        "POST /fast/1 HTTP/1.1\nContent-Length: 0\n\n",
        "\u{0}\u{1}garbage\r\n\r\n",
    ])
    func notTaken(_ text: String) throws {
        let c = try Self.connection(maxBodyBytes: 8)
        try Self.send(c, text)
        #expect(c.server.count == 0)
        #expect(try Self.passedOn(c) == text)
    }

    @Test("reads from the socket go on behind an answer in flight until 16 KiB wait, and resume once the rest is taken")
    func readsWait() throws {
        let c = try Self.connection()
        let reads = { c.socketSide.reads.withLockedValue { $0 } }
        let before = reads()
        try Self.send(c, Self.request("/fast/0"))
        c.channel.read()
        #expect(reads() == before + 1, "a read behind one answer in flight goes on (stopping costs two epoll_ctl calls)")
        // A pipeline of more than the bound, behind the request in flight.
        let one = Self.request("/fast/n")
        let count = RawFastPath.maxReadAheadBytes / one.utf8.count + 2
        try Self.send(c, String(repeating: one, count: count))
        c.channel.read()
        #expect(reads() == before + 1, "held once the bound waits")
        #expect(c.server.count == 1, "nothing behind is taken while one is served")
        for k in 0..<count {
            c.server.answer(k, "\(k)")
            c.loop.run()
            #expect(c.server.count == k + 2)
            // Reading resumes only once less than the bound waits: each answer lets none of it in before.
            let waiting = (count - k - 1) * one.utf8.count
            #expect(reads() == before + (waiting >= RawFastPath.maxReadAheadBytes ? 1 : 2), "after answer \(k), \(waiting) bytes waiting")
        }
        c.server.answer(count, "last")
        c.loop.run()
        c.channel.read()
        #expect(reads() == before + 3)
        #expect(try Self.written(c).count == count + 1)
    }

    @Test("a shutdown reaches the connection's idle check at once when idle, and after the answer in flight otherwise, dropping what is pipelined")
    func quiesce() throws {
        let idle = try Self.connection()
        idle.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(idle.decoderSide.events.withLockedValue { $0 } == 1)

        let c = try Self.connection()
        try Self.send(c, Self.request("/fast/1") + Self.request("/fast/2"))
        let told = c.decoderSide.events.withLockedValue { $0 }
        c.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(c.decoderSide.events.withLockedValue { $0 } == told)
        c.server.answer(0, "one")
        c.loop.run()
        #expect(try Self.written(c) == ["one"])
        #expect(c.decoderSide.events.withLockedValue { $0 } == told + 2, "answered, then the shutdown")
        #expect(c.server.count == 1, "the request behind the shutdown was not run")
        #expect(try Self.passedOn(c).isEmpty)
    }

    @Test("a half-close behind an answer in flight waits for it and for the whole requests already read")
    func halfClose() throws {
        let c = try Self.connection()
        try Self.send(c, Self.request("/fast/1") + Self.request("/fast/2"))
        c.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        let told = c.decoderSide.events.withLockedValue { $0 }
        c.server.answer(0, "one")
        c.loop.run()
        #expect(c.server.count == 2, "the request read before the half-close is served")
        c.server.answer(1, "two")
        c.loop.run()
        #expect(try Self.written(c) == ["one", "two"])
        // answered (the first), head, end, answered (the second), then the half-close.
        #expect(c.decoderSide.events.withLockedValue { $0 } == told + 5)
    }

    @Test("while answers wait in the socket's buffer (a client that does not read), nothing more is taken or read")
    func waitsForWritable() throws {
        let c = try Self.connection()
        try Self.send(c, Self.request("/fast/1") + Self.request("/fast/2"))
        c.channel.isWritable = false
        c.server.answer(0, "one")
        c.loop.run()
        let reads = c.socketSide.reads.withLockedValue { $0 }
        c.channel.read()
        #expect(c.server.count == 1, "the next request waits for the socket to drain")
        #expect(c.socketSide.reads.withLockedValue { $0 } == reads)
        try Self.send(c, Self.request("/fast/3"))
        #expect(c.server.count == 1, "so does one arriving meanwhile")
        c.channel.isWritable = true
        c.channel.pipeline.fireChannelWritabilityChanged()
        #expect(c.server.count == 2)
        c.server.answer(1, "two")
        c.loop.run()
        #expect(c.server.count == 3)
        c.server.answer(2, "three")
        c.loop.run()
        #expect(try Self.written(c) == ["one", "two", "three"])
        #expect(c.socketSide.reads.withLockedValue { $0 } == reads + 1)
    }

    @Test("an answer for a connection the client closed is dropped")
    func closedBeforeAnswer() throws {
        let c = try Self.connection()
        try Self.send(c, Self.request("/fast/1"))
        c.channel.pipeline.fireChannelInactive()
        c.server.answer(0, "one")
        c.loop.run()
        #expect(try Self.written(c).isEmpty)
    }

    @Test("an error behind an answer in flight (TLS reports a close without close_notify as one) reaches the router after the answer")
    func errorWaits() throws {
        let c = try Self.connection()
        try Self.send(c, Self.request("/fast/1") + "POST /fast/2 HTTP/1.1\r\nContent-Le")
        c.channel.pipeline.fireErrorCaught(ChannelError.inputClosed)
        c.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(c.decoderSide.errors.withLockedValue { $0 } == 0)
        c.server.answer(0, "one")
        c.loop.run()
        #expect(try Self.written(c) == ["one"])
        #expect(c.decoderSide.errors.withLockedValue { $0 } == 1)
        #expect(try Self.passedOn(c) == "POST /fast/2 HTTP/1.1\r\nContent-Le", "the part of a request left goes to the decoder, which answers it")
    }

    @Test("a half-close with part of a request read hands that part to the decoder, as it would have had it")
    func halfCloseMidRequest() throws {
        let c = try Self.connection()
        try Self.send(c, "POST /fast/1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
        let told = c.decoderSide.events.withLockedValue { $0 }
        c.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(try Self.passedOn(c) == "POST /fast/1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
        #expect(c.decoderSide.events.withLockedValue { $0 } == told + 1)
        #expect(c.server.count == 0)
    }

    @Test("however long a pipeline runs, the buffer holds only what is not taken yet")
    func bufferStaysSmall() throws {
        let c = try Self.connection()
        let one = Self.request("/fast/x", body: String(repeating: "b", count: 200))
        // Each read ends part-way through a request, so the buffer never drains.
        var stream = String(repeating: one, count: 2_000).utf8[...]
        var answered = 0
        while !stream.isEmpty {
            let chunk = stream.prefix(333)
            stream = stream.dropFirst(333)
            try c.channel.writeInbound(ByteBuffer(bytes: Array(chunk)))
            while answered < c.server.count {
                c.server.answer(answered, "")
                answered += 1
                c.loop.run()
            }
            #expect(c.handler.bufferedCapacity <= 4_096, "capacity \(c.handler.bufferedCapacity) after \(answered) requests")
        }
        #expect(answered == 2_000)
    }

    @Test("the deadlines hold for requests served here: never cut while answering, closed once idle past the timeout")
    func deadlines() throws {
        var limits = HTTPLimits()
        limits.idleTimeoutMillis = 1_000
        limits.bodyTimeoutMillis = 3_000
        let c = try Self.connection(deadlines: limits)
        c.loop.advanceTime(by: .milliseconds(500))
        try Self.send(c, Self.request("/fast/1"))
        c.loop.advanceTime(by: .milliseconds(5_000))
        #expect(c.channel.isActive, "an answer in flight is not idleness")
        c.server.answer(0, "one")
        c.loop.run()
        c.loop.advanceTime(by: .milliseconds(999))
        #expect(c.channel.isActive)
        c.loop.advanceTime(by: .milliseconds(2))
        #expect(!c.channel.isActive)

        let dripping = try Self.connection(deadlines: limits)
        try Self.send(dripping, "POST /fast/1 HTTP/1.1\r\nContent-Length: 10\r\n\r\n12")
        dripping.loop.advanceTime(by: .milliseconds(2_999))
        #expect(dripping.channel.isActive)
        dripping.loop.advanceTime(by: .milliseconds(2))
        #expect(!dripping.channel.isActive, "a body that drips is closed at the body timeout")
    }

    /// The handlers a listener's connection has (`makeServer`: Hummingbird's HTTP/1 channel with the
    /// deadlines and `FastDataPath`, `RawFastPath` in front), without TLS or the async channel.
    static func listenerPipeline(limits: HTTPLimits) throws -> (EmbeddedChannel, EmbeddedEventLoop, HandServer) {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let server = HandServer()
        try channel.pipeline.syncOperations.addHandler(RawFastPath(server: server, maxBodyBytes: 1_000))
        try channel.pipeline.syncOperations.addHandler(HTTPResponseEncoder())
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        try channel.pipeline.syncOperations.addHandler(RequestDeadlines(limits: limits))
        try channel.pipeline.syncOperations.addHandler(FastDataPath(server: server, maxBodyBytes: 1_000))
        try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: Logger(label: "test")))
        return (channel, loop, server)
    }

    @Test("on a listener's pipeline: served from the bytes, then handed to the decoder whole, the deadlines kept, a shutdown closing after the answer")
    func listener() throws {
        var limits = HTTPLimits()
        limits.idleTimeoutMillis = 1_000
        limits.bodyTimeoutMillis = 3_000
        let (channel, loop, server) = try Self.listenerPipeline(limits: limits)
        try channel.writeInbound(ByteBuffer(string: Self.request("/fast/1", body: "a") + Self.request("/slow/2", body: "b")))
        #expect(server.count == 1)
        #expect(try channel.readInbound(as: HTTPRequestPart.self) == nil, "nothing decoded while the raw answer is due")
        loop.advanceTime(by: .milliseconds(5_000))
        #expect(channel.isActive, "an answer in flight is not idleness")
        server.answer(0, "one")
        loop.run()
        // The request it did not take reaches the router as the decoder read it.
        guard case .head(let head)? = try channel.readInbound(as: HTTPRequestPart.self) else {
            Issue.record("the router got no request")
            return
        }
        #expect(head.path == "/slow/2")
        #expect(try channel.readInbound(as: HTTPRequestPart.self) == .body(ByteBuffer(string: "b")))
        #expect(try channel.readInbound(as: HTTPRequestPart.self) == .end(nil))
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok, headerFields: [.contentLength: "3"])))
        try channel.writeOutbound(HTTPResponsePart.body(ByteBuffer(string: "two")))
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        var written = ""
        while let b = try channel.readOutbound(as: ByteBuffer.self) { written += String(buffer: b) }
        #expect(written.hasPrefix("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"))
        #expect(written.hasSuffix("\r\n\r\ntwo"))
        loop.advanceTime(by: .milliseconds(1_001))
        #expect(!channel.isActive, "idle after both answers: closed at the idle timeout")

        let (shutting, shuttingLoop, shuttingServer) = try Self.listenerPipeline(limits: limits)
        try shutting.writeInbound(ByteBuffer(string: Self.request("/fast/1")))
        shutting.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(shutting.isActive, "the answer in flight is written first")
        shuttingServer.answer(0, "one")
        shuttingLoop.run()
        #expect(!shutting.isActive, "then the connection's idle check closes it")
    }

    /// What NIO's encoder writes for `response`, through the HTTP-types codec (the router's path).
    static func encodedByNIO(_ response: FastResponse) throws -> [UInt8] {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(HTTPResponseEncoder())
        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        try channel.writeOutbound(HTTPResponsePart.head(response.head))
        if response.body.readableBytes > 0 { try channel.writeOutbound(HTTPResponsePart.body(response.body)) }
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        var bytes: [UInt8] = []
        while let part = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let b) = part { bytes += b.readableBytesView }
        }
        _ = try channel.finish()
        return bytes
    }

    @Test("its responses are byte for byte what NIO's encoder writes", arguments: [
        (200, [("Content-Type", "application/json"), ("X-Cairn-Node", "42"), ("Content-Length", "11"), ("Date", "Sun, 06 Dec 2026 04:21:26 GMT"), ("Server", "cairn")], "{\"a\":[1,2]}"),
        (400, [("Content-Type", "application/json"), ("Content-Length", "13")], "{\"error\":\"x\"}"),
        (503, [("Retry-After", "1"), ("Content-Length", "0")], ""),
        (599, [("Content-Length", "2")], "ok"),
        (204, [("Content-Length", "0")], ""),
    ])
    func encoding(_ status: Int, _ fields: [(String, String)], _ body: String) throws {
        var head = HTTPResponse(status: .init(code: status))
        for (name, value) in fields { head.headerFields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        let response = FastResponse(head: head, body: ByteBuffer(string: body))
        var raw = ByteBuffer()
        RawFastPath.encode(response, into: &raw)
        #expect(String(decoding: raw.readableBytesView, as: UTF8.self) == String(decoding: try Self.encodedByNIO(response), as: UTF8.self))
    }

    @Test("a handler's answer, written without building its head, is byte for byte what NIO's encoder writes of that head", arguments: [
        (200, [("Content-Type", "application/json")], "{\"results\":[]}"),
        (200, [("Content-Type", "application/json"), ("X-Cairn-Node", "42")], "{\"a\":[1,2]}"),
        (400, [("Content-Type", "application/json")], "{\"error\":\"x\"}"),
        (503, [("Retry-After", "1")], ""),
        (599, [], "ok"),
        // Fields the head sets itself, and a status without a body: written through the head.
        (200, [("Server", "other"), ("Content-Type", "text/plain")], "hi"),
        (200, [("Content-Length", "2")], "hi"),
        (204, [], ""),
    ])
    func answerEncoding(_ status: Int, _ fields: [(String, String)], _ body: String) throws {
        var headers = HTTPFields()
        for (name, value) in fields { headers.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        let response = Reply(status: status, headers: headers, body: Array(body.utf8)).fastResponse()
        var raw = ByteBuffer()
        RawFastPath.encode(response, into: &raw)
        #expect(String(decoding: raw.readableBytesView, as: UTF8.self) == String(decoding: try Self.encodedByNIO(response), as: UTF8.self))
    }
}
