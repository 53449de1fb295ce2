import CairnAuth
import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// What the fast path needs from an API: which requests it can serve, and serving them.
protocol FastDataServer: Sendable {
    /// The request, if the fast path can serve it from its head alone (nil: the router serves it);
    /// `remote`: the client's address.
    func fastRequest(_ head: FastHead, remote: String) -> FastRequest?
    /// Serves `request`; `reply` gets the response, once, on any thread.
    func serveFast(_ request: FastRequest, body: ByteBuffer, reply: @escaping @Sendable (FastResponse) -> Void)
}

/// A request head as a fast path's server reads it: decoded by NIO (`FastDataPath`), or read from the
/// connection's bytes (`RawFastPath`). Not generic, for the reason `FastRequest` is not.
enum FastHead: Sendable {
    case decoded(HTTPRequest)
    case raw(RawHead)

    var method: HTTPRequest.Method {
        switch self {
        case .decoded(let head): head.method
        case .raw: .post
        }
    }

    var path: String? {
        switch self {
        case .decoded(let head): head.path
        case .raw(let head): head.path
        }
    }

    /// The values of the fields named `name`, as `HTTPFields` gives them.
    func field(_ name: HTTPField.Name) -> String? {
        switch self {
        case .decoded(let head): head.headerFields[name]
        case .raw(let head): head.field(name)
        }
    }
}

/// A data request the fast path took from its head: whether it writes or reads, on which database,
/// for whom. One concrete type for every API, so that the handler is not generic: a generic channel
/// handler runs unspecialized (NIO calls it through its protocol), and looking up its generic state's
/// type metadata on every request cost about 2% of a node's CPU serving point reads.
struct FastRequest: Sendable {
    enum Endpoint: Sendable { case write, read }

    let endpoint: Endpoint
    let database: String
    let principal: Principal
}

/// A complete response: what the router would have written, as parts.
struct FastResponse: Sendable {
    var status: Int
    /// The handler's fields; with `date` set, `head` adds the body's length, the date and the
    /// server's name after them, as the router writes a response.
    var fields: HTTPFields
    var body: ByteBuffer
    /// The `Date` field's value, or nil when `fields` are the whole head.
    var date: String?

    /// A response whose fields are all given.
    init(head: HTTPResponse, body: ByteBuffer) {
        self.status = head.status.code
        self.fields = head.headerFields
        self.body = body
        self.date = nil
    }

    /// A handler's answer, as the router writes it (the raw path writes it without building `head`).
    init(status: Int, fields: HTTPFields, body: ByteBuffer, date: String) {
        self.status = status
        self.fields = fields
        self.body = body
        self.date = date
    }

    var head: HTTPResponse {
        var all = fields
        if let date {
            all[.contentLength] = String(body.readableBytes)
            all[.date] = date
            all[.server] = Self.serverName
        }
        return HTTPResponse(status: .init(code: status), headerFields: all)
    }

    static let serverName = "cairn"
}

/// The data endpoints served on the connection's event loop (`POST /v1/db/{db}/execute` and
/// `/query`): the request is collected here and proposed or read from here, and the answer written
/// from the loop that completes it. The router's path costs every request a task, two thread
/// hand-offs, the async channel's buffers, a route lookup and the middleware chain; at 64 clients
/// that was about a third of the leader's CPU (`bench/NOTES.md`, round eleven).
///
/// Behaviour stays in one place: what a request means (authentication, parsing, auditing, routing,
/// errors, metrics) is the API's, the same functions the router's handlers call. This handler only
/// keeps HTTP's order: a request it takes is answered before any later one on the connection is
/// looked at, and one passed to the router is followed by every request after it until the router
/// has answered them all.
final class FastDataPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum State {
        /// Between requests, or passing a request's parts to the router.
        case ready
        /// A request the fast path took, its body arriving.
        case collecting(HTTPRequest, FastRequest, ByteBuffer)
        /// A request the fast path took, not answered yet.
        case serving
    }

    /// What arrived behind a request being served, in order.
    private enum Held {
        case part(HTTPRequestPart)
        /// The client closed its side (a half-close): the router would end the connection.
        case event(Any)
        /// Bytes that are not HTTP: the router answers 400 and closes.
        case error(any Error)
    }

    private let server: any FastDataServer
    /// Bodies larger than this go to the router (which applies the API's own limit).
    private let maxBodyBytes: Int
    private var state = State.ready
    /// Requests passed to the router whose responses have not ended.
    private var routed = 0
    /// True while `serveFast` runs (an answer given then is written on the loop's next turn).
    private var insideServeFast = false
    /// The router was given a request that closes the connection: nothing after it is taken.
    private var closing = false
    /// What arrived while a request was being served (a pipelining client): replayed after its
    /// answer. Reads stop meanwhile, so at most what one read decoded waits here.
    private var held: [Held] = []
    private var readHeld = false
    /// A shutdown asked to close idle connections while a request was under way here.
    private var quiesceHeld = false
    /// Answers wait in the socket's buffer: nothing more is taken or read until they drain (a client
    /// that sends and never reads must not fill this node's memory).
    private var waitingForWritable = false
    private var active = true
    private var remoteAddress: String?

    init(server: any FastDataServer, maxBodyBytes: Int) {
        self.server = server
        self.maxBodyBytes = max(0, maxBodyBytes)
    }

    private var serving: Bool {
        if case .serving = state { return true }
        return false
    }

    /// Whether what arrives now must wait: behind an answer not written yet, behind what already
    /// waits, or until the socket drains. (A body being collected is not held: it is what completes
    /// the request.)
    private var mustHold: Bool { serving || !held.isEmpty || waitingForWritable }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if mustHold { return held.append(.part(part)) }
        take(part, context: context)
    }

    private func take(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.ready, .head(let head)):
            if routed == 0, !closing, !quiesceHeld, let request = server.fastRequest(.decoded(head), remote: remote(context)) {
                state = .collecting(head, request, context.channel.allocator.buffer(capacity: 0))
            } else {
                if head.headerFields[.connection].map({ $0.lowercased().contains("close") }) == true { closing = true }
                routed += 1
                context.fireChannelRead(wrapInboundOut(part))
            }
        case (.ready, _):
            context.fireChannelRead(wrapInboundOut(part))
        case (.collecting(let head, let request, var body), .body(let chunk)):
            guard body.readableBytes + chunk.readableBytes <= maxBodyBytes else {
                // Larger than the fast path takes: the router answers it, limits and all.
                state = .ready
                routeBack(head, body: body, context: context)
                context.fireChannelRead(wrapInboundOut(.body(chunk)))
                return
            }
            state = .serving  // the enum lets go of the buffer, so appending does not copy it
            body.writeImmutableBuffer(chunk)
            state = .collecting(head, request, body)
        case (.collecting(_, let request, let body), .end):
            state = .serving
            serve(request, body: body, context: context)
        case (.collecting, .head), (.serving, _):
            // The decoder gives a request's parts in order; anything else cannot be answered in order.
            context.close(promise: nil)
        }
    }

    /// The client's address, as the router's `ClientAddress` gives it.
    private func remote(_ context: ChannelHandlerContext) -> String {
        if let known = remoteAddress { return known }
        let address = context.channel.remoteAddress?.ipAddress ?? ""
        remoteAddress = address
        return address
    }

    /// Passes a request the fast path was collecting to the router, as it arrived.
    private func routeBack(_ head: HTTPRequest, body: ByteBuffer, context: ChannelHandlerContext) {
        routed += 1
        context.fireChannelRead(wrapInboundOut(.head(head)))
        if body.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(.body(body))) }
    }

    private func serve(_ request: FastRequest, body: ByteBuffer, context: ChannelHandlerContext) {
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        insideServeFast = true
        server.serveFast(request, body: body) { response in
            // An answer completed on this loop after `serveFast` returned (the runtime completes on the
            // caller's loop) is written at once; one given while `serveFast` still runs, or from another
            // thread, waits for the loop's next turn, so `channelRead` never re-enters itself.
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
        guard active else { return }
        context.write(wrapOutboundOut(.head(response.head)), promise: nil)
        if response.body.readableBytes > 0 { context.write(wrapOutboundOut(.body(response.body)), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        state = .ready
        resume(context: context)
    }

    /// After an answer, or once the socket drains: a shutdown first (what was pipelined behind it is
    /// never run), then what waited, in order, then reads.
    private func resume(context: ChannelHandlerContext) {
        guard active, !serving else { return }
        if quiesceHeld {
            quiesceHeld = false
            held.removeAll()
            context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            return
        }
        if !context.channel.isWritable {
            waitingForWritable = true
            return
        }
        waitingForWritable = false
        var replayed = false
        while !held.isEmpty && !serving {
            switch held.removeFirst() {
            case .part(let part): take(part, context: context)
            case .event(let event): context.fireUserInboundEventTriggered(event)
            case .error(let error): context.fireErrorCaught(error)
            }
            replayed = true
        }
        if replayed { context.fireChannelReadComplete() }
        guard !serving, held.isEmpty else { return }
        if readHeld {
            readHeld = false
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if waitingForWritable && context.channel.isWritable { resume(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // The router's responses: once all it was given are answered, the fast path may take the next.
        if case .end = unwrapOutboundIn(data) { routed = max(0, routed - 1) }
        context.write(data, promise: promise)
    }

    func read(context: ChannelHandlerContext) {
        if mustHold {
            readHeld = true
            return
        }
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // A shutdown closes idle connections at once: one with a request under way here is not
            // idle yet. It is passed on right after that request's answer.
            if case .ready = state, held.isEmpty { return context.fireUserInboundEventTriggered(event) }
            quiesceHeld = true
            return
        }
        if mustHold, case ChannelEvent.inputClosed = event { return held.append(.event(event)) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if mustHold { return held.append(.error(error)) }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        active = false
    }
}
