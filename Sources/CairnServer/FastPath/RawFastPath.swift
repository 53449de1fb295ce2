import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// The data endpoints served from the connection's bytes, ahead of HTTP decoding: a request in the
/// plainest HTTP/1.1 form (`RawRequestHead`) that `FastDataServer.fastRequest` takes is read here,
/// served by the same `serveFast` that `FastDataPath` calls, and answered with the bytes NIO's encoder
/// would write for that response. NIO's HTTP decoder and encoder, the conversion to HTTP types and
/// four handlers' worth of request and response parts cost a point read about a sixth of its CPU
/// (`bench/NOTES.md`, round sixteen).
///
/// The first request it does not take ends it for the connection: that request's bytes and everything
/// after go to the decoder, and the rest of the pipeline (`FastDataPath`, the router) works on them as
/// if this handler were not there. It never gives a request to the decoder while one of its own is
/// unanswered, so answers keep the requests' order. `RequestDeadlines` learns of the requests served
/// here (`RawRequestEvent`, called on it directly); a shutdown and a half-close wait for the answer in flight.
final class RawFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let server: any FastDataServer
    private let maxBodyBytes: Int
    /// Set once: every byte from now on is the decoder's.
    private var passingOn = false
    /// Bytes read and not yet taken: the rest of a request, or requests pipelined behind one served.
    private var buffer: ByteBuffer?
    /// A request whose head was taken, its body arriving.
    private var pending: (request: FastRequest, headBytes: Int, contentLength: Int)?
    /// How far the buffered head was found incomplete (not scanned again).
    private var scannedTo = 0
    /// A request taken and not answered yet.
    private var serving = false
    /// True while `serveFast` runs (an answer given then is written on the loop's next turn).
    private var insideServeFast = false
    private var insideChannelRead = false
    private var readHeld = false
    private var waitingForWritable = false
    /// A shutdown that arrived while a request was under way.
    private var quiesceHeld = false
    /// A half-close and errors (TLS reports a close without close_notify as one) that arrived while
    /// an answer was due: passed on, in order, after it.
    private var held: [Held] = []
    private enum Held {
        case event(Any)
        case error(any Error)
    }
    private var active = true
    private var remoteAddress: String?
    /// The connection's `RequestDeadlines`, told of each request directly: as a pipeline event, each
    /// of the three per request passed (and was cast by) every handler in between, 2 µs a request.
    private var deadlines: (handler: RequestDeadlines, context: ChannelHandlerContext)?
    private var deadlinesLooked = false

    init(server: any FastDataServer, maxBodyBytes: Int) {
        self.server = server
        self.maxBodyBytes = max(0, maxBodyBytes)
    }

    /// An answer not written yet, or a socket that has not drained: requests read meanwhile wait, and
    /// so do the events behind them.
    private var busy: Bool { !passingOn && (serving || waitingForWritable) }

    /// Whether reading must wait: a socket that has not drained (a client that sends and never reads
    /// must not fill this node's memory), or `maxReadAheadBytes` waiting behind an answer in flight.
    /// Reads go on while one request is served: stopping them and starting them again cost two
    /// `epoll_ctl` calls per request (NIO drops its interest in reads when none is asked for).
    private var mustHold: Bool {
        !passingOn && (waitingForWritable || (serving && (buffer?.readableBytes ?? 0) >= Self.maxReadAheadBytes))
    }

    /// What a connection may send ahead of the answer it waits for before reads stop (pipelined
    /// requests, a client sending as it likes): one socket read can bring more, then nothing.
    static let maxReadAheadBytes = 16 << 10

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if passingOn { return context.fireChannelRead(data) }
        var bytes = unwrapInboundIn(data)
        if buffer == nil {
            buffer = bytes
        } else {
            // What was taken goes first: growing would keep every byte the connection ever sent.
            if buffer!.readerIndex > 0 { buffer!.discardReadBytes() }
            buffer!.writeBuffer(&bytes)
        }
        insideChannelRead = true
        defer { insideChannelRead = false }
        if !busy { takeRequests(context: context) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
    }

    /// Takes what the buffer holds, request by request, until one is being served, one is incomplete,
    /// or one is not this handler's.
    private func takeRequests(context: ChannelHandlerContext) {
        while active, !passingOn, !serving {
            guard var bytes = buffer, bytes.readableBytes > 0 else { return }
            if pending == nil {
                let scanned = scannedTo
                switch bytes.withUnsafeReadableBytes({ RawRequestHead.parse($0, scannedTo: scanned) }) {
                case .incomplete:
                    scannedTo = bytes.readableBytes
                    return
                case .unsupported:
                    return passOn(context: context)
                case .head(let head, let headBytes, let contentLength):
                    scannedTo = 0
                    guard contentLength <= maxBodyBytes,
                          let request = server.fastRequest(.raw(head), remote: remote(context)) else { return passOn(context: context) }
                    pending = (request, headBytes, contentLength)
                    tell(.head, context: context)
                }
            }
            guard let taken = pending, bytes.readableBytes >= taken.headBytes + taken.contentLength else { return }
            bytes.moveReaderIndex(forwardBy: taken.headBytes)
            let body = bytes.readSlice(length: taken.contentLength)!
            buffer = bytes.readableBytes > 0 ? bytes : nil
            pending = nil
            tell(.end, context: context)
            serve(taken.request, body: body, context: context)
        }
    }

    /// From now on the connection is the decoder's: what is buffered goes to it first, then what was
    /// held behind it.
    private func passOn(context: ChannelHandlerContext) {
        passingOn = true
        pending = nil
        scannedTo = 0
        if let bytes = buffer {
            buffer = nil
            context.fireChannelRead(wrapInboundOut(bytes))
            // Inside a read NIO ends the burst itself; after an answer the decoder is told here.
            if !insideChannelRead { context.fireChannelReadComplete() }
        }
        let replay = held
        held = []
        for h in replay {
            switch h {
            case .event(let event): context.fireUserInboundEventTriggered(event)
            case .error(let error): context.fireErrorCaught(error)
            }
        }
        if readHeld {
            readHeld = false
            context.read()
        }
    }

    private func tell(_ event: RawRequestEvent, context: ChannelHandlerContext) {
        if !deadlinesLooked {
            deadlinesLooked = true
            let pipeline = context.pipeline.syncOperations
            if let handler = try? pipeline.handler(type: RequestDeadlines.self),
               let theirs = try? pipeline.context(handlerType: RequestDeadlines.self) {
                deadlines = (handler, theirs)
            }
        }
        if let (handler, theirs) = deadlines {
            handler.served(event, context: theirs)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// The client's address, as the router's `ClientAddress` gives it.
    private func remote(_ context: ChannelHandlerContext) -> String {
        if let known = remoteAddress { return known }
        let address = context.channel.remoteAddress?.ipAddress ?? ""
        remoteAddress = address
        return address
    }

    private func serve(_ request: FastRequest, body: ByteBuffer, context: ChannelHandlerContext) {
        serving = true
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        insideServeFast = true
        server.serveFast(request, body: body) { response in
            // As in `FastDataPath.serve`: written at once when completed on this loop after `serveFast`
            // returned, otherwise on the loop's next turn, so `channelRead` never re-enters itself.
            if loop.inEventLoop, !bound.value.0.insideServeFast {
                let (handler, context) = bound.value
                handler.answer(response, context: context)
                return
            }
            loop.execute {
                let (handler, context) = bound.value
                handler.answer(response, context: context)
            }
        }
        insideServeFast = false
    }

    private func answer(_ response: FastResponse, context: ChannelHandlerContext) {
        guard active, serving else { return }
        var out = context.channel.allocator.buffer(capacity: 192 + response.body.readableBytes)
        Self.encode(response, into: &out)
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(out)), promise: nil)
        serving = false
        tell(.answered, context: context)
        resume(context: context)
    }

    /// After an answer, or once the socket drains: a shutdown first (what was pipelined behind it is
    /// never run), then what waited, in order, then a half-close, then reads.
    private func resume(context: ChannelHandlerContext) {
        guard active, !passingOn, !serving else { return }
        if quiesceHeld {
            quiesceHeld = false
            buffer = nil
            pending = nil
            context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            return
        }
        if !context.channel.isWritable {
            waitingForWritable = true
            return
        }
        waitingForWritable = false
        takeRequests(context: context)
        guard !passingOn else { return }
        if !serving && !held.isEmpty {
            // The requests read before a half-close or an error are answered; what is left (part of a
            // request) and the events go to the decoder, which answers them as it would have.
            return passOn(context: context)
        }
        // Unless what waits behind the request now served is still at the bound.
        if readHeld && !mustHold {
            readHeld = false
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if waitingForWritable && context.channel.isWritable { resume(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if mustHold {
            readHeld = true
            return
        }
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard !passingOn else { return context.fireUserInboundEventTriggered(event) }
        if event is ChannelShouldQuiesceEvent {
            // As Hummingbird's connection handler: a connection with no request under way is closed at
            // once; one with a request whose head arrived is closed after its answer.
            if serving || pending != nil || waitingForWritable {
                quiesceHeld = true
                return
            }
            return context.fireUserInboundEventTriggered(event)
        }
        if case ChannelEvent.inputClosed = event {
            if serving || waitingForWritable { return held.append(.event(event)) }
            // Part of a request can never be completed now: the decoder answers it as it would have.
            if buffer.map({ $0.readableBytes > 0 }) == true {
                held.append(.event(event))
                return passOn(context: context)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if busy { return held.append(.error(error)) }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        buffer = nil
        deadlines = nil
        context.fireChannelInactive()
    }

    /// The buffer's storage, for tests: bounded however long a pipeline runs.
    var bufferedCapacity: Int { buffer?.capacity ?? 0 }

    func handlerRemoved(context: ChannelHandlerContext) {
        active = false
        buffer = nil
        deadlines = nil
    }

    /// The bytes NIO's HTTP/1.1 response encoder writes for `response` (through the HTTP-types codec):
    /// a status line with NIO's reason phrase, the fields in order, then the body.
    static func encode(_ response: FastResponse, into out: inout ByteBuffer) {
        guard let date = response.date, !bodiless(response.status),
              !response.fields.contains(where: { $0.name == .contentLength || $0.name == .date || $0.name == .server || $0.name == .transferEncoding }) else {
            return encode(response.head, body: response.body, into: &out)
        }
        // A handler's answer (the common case): what `head` would hold, written without building it.
        if response.status == 200 {
            out.writeStaticString("HTTP/1.1 200 OK\r\n")
        } else {
            statusLine(response.status, reason: HTTPResponse.Status(code: response.status).reasonPhrase, into: &out)
        }
        for field in response.fields {
            out.writeString(field.name.rawName)
            out.writeStaticString(": ")
            out.writeString(field.value)
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("Content-Length: ")
        out.writeString(String(response.body.readableBytes))
        out.writeStaticString("\r\nDate: ")
        out.writeString(date)
        out.writeStaticString("\r\nServer: ")
        out.writeString(FastResponse.serverName)
        out.writeStaticString("\r\n\r\n")
        out.writeImmutableBuffer(response.body)
    }

    /// Statuses whose responses NIO's encoder frames without a body.
    private static func bodiless(_ code: Int) -> Bool { (100..<200).contains(code) || code == 204 || code == 304 }

    /// `HTTP/1.1 code reason`, as NIO's encoder writes the status `code` with `reason`.
    private static func statusLine(_ code: Int, reason: String, into out: inout ByteBuffer) {
        let status = HTTPResponseStatus(statusCode: code, reasonPhrase: reason)
        out.writeStaticString("HTTP/1.1 ")
        out.writeString(String(status.code))
        out.writeStaticString(" ")
        out.writeString(status.reasonPhrase)
        out.writeStaticString("\r\n")
    }

    /// Any head, field by field.
    private static func encode(_ head: HTTPResponse, body: ByteBuffer, into out: inout ByteBuffer) {
        statusLine(head.status.code, reason: head.status.reasonPhrase, into: &out)
        // Responses that carry no body are framed without a length, as the encoder frames them; a
        // length makes the encoder drop a transfer coding. (Every fast response has a length: one
        // without would be sent chunked by the encoder, and gets its length here.)
        let bodiless = bodiless(head.status.code)
        let hasLength = head.headerFields[.contentLength] != nil
        for field in head.headerFields {
            if field.name == .transferEncoding && (bodiless || hasLength) { continue }
            if bodiless && field.name == .contentLength { continue }
            out.writeString(field.name.rawName)
            out.writeStaticString(": ")
            out.writeString(field.value)
            out.writeStaticString("\r\n")
        }
        if !bodiless && !hasLength {
            out.writeStaticString("Content-Length: ")
            out.writeString(String(body.readableBytes))
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("\r\n")
        if !bodiless { out.writeImmutableBuffer(body) }
    }
}

/// What `RawFastPath` tells the handlers after HTTP decoding about a request it serves, in place of
/// the request's parts (which they never see): its head arrived, its body is whole, it was answered.
enum RawRequestEvent: Sendable {
    case head, end, answered
}

/// A listener's connections with `RawFastPath` in front of the HTTP decoder (after TLS, when the
/// listener has it).
struct RawFastPathChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base
    let server: any FastDataServer
    let maxBodyBytes: Int

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(RawFastPath(server: server, maxBodyBytes: maxBodyBytes))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Base.Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
