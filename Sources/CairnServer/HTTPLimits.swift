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
    private var deadline: Scheduled<Void>?
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
        if case .end = unwrapOutboundIn(data) {
            unanswered = max(0, unanswered - 1)
            // Idle only once every request read has been answered and none is arriving.
            if unanswered == 0 && !reading { arm(context, millis: limits.idleTimeoutMillis) }
        }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { disarm() }

    private func arm(_ context: ChannelHandlerContext, millis: Int64) {
        disarm()
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: .milliseconds(millis)) { channel.close(promise: nil) }
    }

    private func disarm() {
        deadline?.cancel()
        deadline = nil
    }
}
