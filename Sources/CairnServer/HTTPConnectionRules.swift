import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// HTTP/1's rules for a connection that the conversion to HTTP types loses, since those types carry
/// no version and Hummingbird ends a connection only on a `Connection` field that is exactly `close`:
/// - A request that does not keep the connection open (HTTP/1.0 without `Connection: keep-alive`,
///   or any `close` token, in any case, among others) has its answer marked `Connection: close`,
///   and the connection ends once that answer is written (RFC 9112 §9.3, §9.6). A client reading
///   until the end of the connection got its answer, then waited out the idle timeout.
/// - An HTTP/1.0 request is answered as HTTP/1.0: its answer is never chunked (RFC 9112 §6.1), and
///   one without a length ends the connection, which frames it.
/// - A request with `Expect: 100-continue` and a body gets `100 Continue` at once (RFC 9110
///   §10.1.1). Nothing sent it: curl waited a second before each such body, and a client that waits
///   for it without a timeout waited for the body timeout.
///
/// Sits right after the HTTP decoder, so it sees every request the decoder reads (those the raw
/// fast path answers never reach the decoder: it takes only HTTP/1.1 without these fields).
final class HTTP1ConnectionRules: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Requests read and not yet answered, oldest first (a connection may pipeline them): as many as
    /// the decoder reads ahead of the handlers, which the async channel's backpressure bounds.
    private var unanswered = CircularBuffer<(keepAlive: Bool, http10: Bool)>(initialCapacity: 4)
    /// The connection ends after the answer being written now.
    private var endsAfterAnswer = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            unanswered.append((head.isKeepAlive, head.version == .http1_0))
            if Self.waitsForContinue(head) {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where !Self.isInterim(head.status):
            let request = unanswered.first ?? (keepAlive: true, http10: false)
            var keepAlive = request.keepAlive
            if request.http10 {
                head.version = .http1_0
                // Without a length, an HTTP/1.0 answer's end is the connection's.
                if head.headers["content-length"].isEmpty && head.status.mayHaveResponseBody { keepAlive = false }
            }
            endsAfterAnswer = !keepAlive
            if !keepAlive {
                head.headers.replaceOrAdd(name: "connection", value: "close")
            } else if request.http10 {
                head.headers.replaceOrAdd(name: "connection", value: "keep-alive")
            }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end:
            if !unanswered.isEmpty { unanswered.removeFirst() }
            guard endsAfterAnswer else { return context.write(data, promise: promise) }
            endsAfterAnswer = false
            let written = context.eventLoop.makePromise(of: Void.self)
            let channel = context.channel
            written.futureResult.whenComplete { result in
                promise?.completeWith(result)
                channel.close(promise: nil)
            }
            context.write(data, promise: written)
        default:
            context.write(data, promise: promise)
        }
    }

    /// A 1xx other than 101 comes before the answer itself.
    static func isInterim(_ status: HTTPResponseStatus) -> Bool {
        (100..<200).contains(status.code) && status != .switchingProtocols
    }

    /// An HTTP/1.1 (or later) request that says it will send a body once told to continue.
    static func waitsForContinue(_ head: HTTPRequestHead) -> Bool {
        guard head.version != .http1_0,
              head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) else { return false }
        let length = head.headers["content-length"].first.flatMap { Int($0) } ?? 0
        return length > 0 || !head.headers["transfer-encoding"].isEmpty
    }
}

/// A listener's connections with `HTTP1ConnectionRules` right after the HTTP decoder.
struct HTTP1RulesChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(HTTP1ConnectionRules(), position: .after(decoder))
            return value
        }
    }

    func handle(value: Base.Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1 with `configuration` and HTTP/1's connection rules (`HTTP1ConnectionRules`), with
    /// `RawFastPath` serving `fast`'s requests ahead of the decoder when given.
    static func cairnHTTP1(configuration: HTTP1Channel.Configuration, rawFastPath fast: (server: any FastDataServer, maxBodyBytes: Int)?) -> HTTPServerBuilder {
        .init { responder -> any ServerChildChannel in
            let rules = HTTP1RulesChannel(base: HTTP1Channel(responder: responder, configuration: configuration))
            guard let fast else { return rules }
            return RawFastPathChannel(base: rules, server: fast.server, maxBodyBytes: fast.maxBodyBytes)
        }
    }
}
