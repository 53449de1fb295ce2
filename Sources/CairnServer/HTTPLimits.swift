import Foundation
import HTTPTypes
import HummingbirdCore
import NIOCore
import NIOHTTPTypes

/// How long a client may take over each part of an HTTP exchange, and how many connections it may
/// hold: slow or idle clients (slowloris, a crowd of idle connections) cannot hold the API.
public struct HTTPLimits: Sendable {
    /// A request's head must arrive within this of the connection opening or the previous response:
    /// an idle connection, or one dripping its headers, is closed then.
    public var idleTimeoutMillis: Int64 = 30_000
    /// A request's body must arrive whole within this of its head (sized for the largest load at a few
    /// MB/s).
    public var bodyTimeoutMillis: Int64 = 300_000
    /// Connections open at once; past it new ones wait in the listen backlog until one closes.
    public var maxConnections = 4_096

    public init() {}

    /// Raises the process's descriptor limit to its ceiling, and keeps the connection cap below it:
    /// running out of descriptors would stop the node's own files and peers too.
    public mutating func fitDescriptorLimit(reserved: Int, log: (String) -> Void) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        let available = Int(clamping: limit.rlim_cur) - reserved
        if maxConnections > available {
            log("at most \(max(available, 16)) HTTP connections (not \(maxConnections)): the process may open \(limit.rlim_cur) descriptors, \(reserved) kept for files and peers")
            maxConnections = max(available, 16)
        }
    }
}

/// Closes a connection whose next request head does not arrive within the idle timeout, or whose body
/// does not arrive within the body timeout of its head. Sits after HTTP decoding.
final class RequestDeadlines: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let limits: HTTPLimits
    /// When the connection is closed unless the next part arrives (nil: no deadline now).
    private var deadline: NIODeadline?
    /// One timer, firing at `timerAt` or earlier than `deadline` needs: moved deadlines are checked
    /// when it fires instead of a timer being cancelled and armed per request (two heap operations
    /// and allocations in every request's path).
    private var timer: Scheduled<Void>?
    private var timerAt = NIODeadline.distantFuture
    private var reading = false
    /// Requests read whose responses have not ended (a client may pipeline several).
    private var unanswered = 0

    init(limits: HTTPLimits) {
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context, millis: limits.idleTimeoutMillis) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context, millis: limits.idleTimeoutMillis)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            reading = true
            unanswered += 1
            arm(context, millis: limits.bodyTimeoutMillis)
        case .body:
            break
        case .end:
            // Answering takes as long as it takes (the request's own timeouts bound it).
            reading = false
            disarm()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { answered(context) }
        context.write(data, promise: promise)
    }

    private func answered(_ context: ChannelHandlerContext) {
        unanswered = max(0, unanswered - 1)
        // Idle only once every request read has been answered and none is arriving.
        if unanswered == 0 && !reading { arm(context, millis: limits.idleTimeoutMillis) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let raw = event as? RawRequestEvent else { return context.fireUserInboundEventTriggered(event) }
        served(raw, context: context)
    }

    /// The requests `RawFastPath` serves ahead of decoding have the same deadlines as those decoded
    /// (it calls this directly when it finds this handler on its pipeline, else sends an event).
    func served(_ raw: RawRequestEvent, context: ChannelHandlerContext) {
        switch raw {
        case .head:
            reading = true
            unanswered += 1
            arm(context, millis: limits.bodyTimeoutMillis)
        case .end:
            reading = false
            disarm()
        case .answered:
            answered(context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { stop() }

    private func arm(_ context: ChannelHandlerContext, millis: Int64) {
        // The loop's clock (a test's loop keeps its own time).
        let at = context.eventLoop.now + .milliseconds(millis)
        deadline = at
        // A timer due no later than the new deadline is kept: when it fires it looks again.
        if timer == nil || timerAt > at { schedule(context, at: at) }
    }

    private func schedule(_ context: ChannelHandlerContext, at: NIODeadline) {
        timer?.cancel()
        timerAt = at
        let channel = context.channel
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: at) {
            let (handler, context) = loopBound.value
            handler.timer = nil
            handler.timerAt = .distantFuture
            guard let deadline = handler.deadline else { return }
            if context.eventLoop.now >= deadline {
                channel.close(promise: nil)
            } else {
                handler.schedule(context, at: deadline)
            }
        }
    }

    private func disarm() {
        deadline = nil
    }

    private func stop() {
        deadline = nil
        timer?.cancel()
        timer = nil
    }
}
