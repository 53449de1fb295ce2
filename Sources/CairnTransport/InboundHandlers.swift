import CairnRaft
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// Reads the handshake, then length-prefixed frames, refusing oversized ones.
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = DecodedFrame

    enum DecodedFrame {
        case handshake([UInt8])
        case frame([UInt8])
    }

    private var handshakeDone = false

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if !handshakeDone {
            guard let bytes = buffer.readBytes(length: WireFormat.handshakeBytes) else { return .needMoreData }
            handshakeDone = true
            context.fireChannelRead(wrapInboundOut(.handshake(bytes)))
            return .continue
        }
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt32.self) else { return .needMoreData }
        guard Int(length) <= WireFormat.maxFrameBytes else {
            throw WireError.malformed("frame of \(length) bytes exceeds the \(WireFormat.maxFrameBytes)-byte limit")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(.frame(buffer.readBytes(length: Int(length))!)))
        return .continue
    }
}

/// Checks the peer's handshake, then decodes frames and hands their envelopes over.
final class InboundHandler: ChannelInboundHandler {
    typealias InboundIn = FrameDecoder.DecodedFrame

    private let selfID: NodeID
    private let shared: RaftTransport.SharedState
    private let log: @Sendable (String) -> Void
    private let receive: @Sendable (NodeID, [Envelope]) -> Void
    private let handshakeTimeoutMillis: Int64
    private let identified: @Sendable () -> Void
    private var peer: NodeID?
    private var handshakeDeadline: Scheduled<Void>?

    init(selfID: NodeID, shared: RaftTransport.SharedState, log: @escaping @Sendable (String) -> Void,
         receive: @escaping @Sendable (NodeID, [Envelope]) -> Void, handshakeTimeoutMillis: Int64,
         identified: @escaping @Sendable () -> Void = {}) {
        self.selfID = selfID
        self.shared = shared
        self.log = log
        self.receive = receive
        self.handshakeTimeoutMillis = handshakeTimeoutMillis
        self.identified = identified
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // A connection that never identifies itself would hold a descriptor and a slot forever.
        let channel = context.channel, shared = self.shared, log = self.log
        handshakeDeadline = context.eventLoop.scheduleTask(in: .milliseconds(handshakeTimeoutMillis)) {
            shared.stats.withLockedValue { $0.handshakesRefused += 1 }
            log("closing a connection from \(channel.remoteAddress.map { "\($0)" } ?? "?"): no handshake within the timeout")
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        handshakeDeadline?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .handshake(let bytes):
            do {
                let claimed = try WireFormat.parseHandshake(bytes)
                // Under TLS the certificate says who the peer is: it may not claim another node's id.
                if let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
                   let der = try? handler.peerCertificate?.toDERBytes(), let certified = ClusterCA.nodeID(inCertificateDER: der),
                   certified != claimed {
                    throw WireError.malformed("the handshake claims node \(claimed), its certificate names node \(certified)")
                }
                if shared.excluded.withLockedValue({ $0.contains(claimed) }) {
                    throw WireError.malformed("node \(claimed) was removed from the cluster")
                }
                peer = claimed
                handshakeDeadline?.cancel()
                handshakeDeadline = nil
                identified()
            } catch {
                log("refusing a connection from \(context.remoteAddress.map { "\($0)" } ?? "?"): \(error)")
                shared.stats.withLockedValue { $0.handshakesRefused += 1 }
                context.close(promise: nil)
            }
        case .frame(let body):
            guard let from = peer else { return }
            if shared.excluded.withLockedValue({ $0.contains(from) }) {
                log("closing the connection from node \(from): it was removed from the cluster")
                context.close(promise: nil)
                return
            }
            let frame: Frame
            do {
                frame = try WireFormat.decode(frameBody: body)
            } catch {
                log("closing the connection from node \(from): \(error)")
                context.close(promise: nil)
                return
            }
            let faults = shared.faults.withLockedValue { $0 }
            if faults.partitioned.contains(from) {
                shared.stats.withLockedValue { $0.envelopesDroppedFault += frame.envelopes.count + frame.calls.count }
                return
            }
            let deliver = frame.envelopes.filter { $0.message.to == selfID && $0.message.from == from }
            let calls = frame.calls, handlers = frame.calls.isEmpty ? nil : shared.calls.withLockedValue({ $0 })
            let receive = self.receive
            let hand = {
                if !deliver.isEmpty || calls.isEmpty { receive(from, deliver) }
                if !calls.isEmpty { handlers?.received(from, calls) }
            }
            if faults.delayMillis > 0 {
                context.eventLoop.scheduleTask(in: .milliseconds(faults.delayMillis)) { hand() }
            } else {
                hand()
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if peer == nil { shared.stats.withLockedValue { $0.handshakesRefused += 1 } }
        log("closing the connection from \(peer.map { "node \($0)" } ?? context.remoteAddress.map { "\($0)" } ?? "?"): \(error)")
        context.close(promise: nil)
    }
}

/// Ends an outgoing connection on any error (a refused TLS handshake, a reset); the link reconnects.
final class OutboundErrorHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let peer: NodeID
    private let shared: RaftTransport.SharedState
    private let log: @Sendable (String) -> Void

    init(peer: NodeID, shared: RaftTransport.SharedState, log: @escaping @Sendable (String) -> Void) {
        self.peer = peer
        self.shared = shared
        self.log = log
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The node at the peer's address must be that peer: its certificate says which node it is.
        if case TLSUserEvent.handshakeCompleted = event,
           let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self),
           let der = try? handler.peerCertificate?.toDERBytes(), let certified = ClusterCA.nodeID(inCertificateDER: der),
           certified != peer {
            shared.stats.withLockedValue { $0.outgoingErrors += 1 }
            log("closing the connection to node \(peer): the node there presents the certificate of node \(certified)")
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        shared.stats.withLockedValue { $0.outgoingErrors += 1 }
        log("closing the connection to node \(peer): \(error)")
        context.close(promise: nil)
    }
}
