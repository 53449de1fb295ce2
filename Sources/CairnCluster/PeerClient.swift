import AsyncHTTPClient
import CairnTransport
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// An HTTP reply from another node, kept as bytes so a forwarded request's answer passes through unchanged.
public struct PeerReply: Sendable {
    public var status: Int
    public var contentType: String?
    public var body: [UInt8]
    /// Headers named `X-Cairn-*`: what one node tells another about the reply (never shown to clients
    /// unless the handler passes them on).
    public var cairnHeaders: [(String, String)] = []
}

public enum PeerError: Error, CustomStringConvertible {
    /// Nothing reached the peer: the request can be retried elsewhere without risk of applying twice.
    case unreachable(PeerAddress, String)
    /// The request may have reached the peer; what it did is unknown.
    case failedInFlight(PeerAddress, String)

    public var description: String {
        switch self {
        case .unreachable(let a, let why): return "node at \(a) is unreachable: \(why)"
        case .failedInFlight(let a, let why): return "the request to node at \(a) failed after it was sent (\(why)); its outcome is unknown"
        }
    }
}

/// HTTP between nodes: joining, discovery at bootstrap, and forwarding client requests to a leader.
public final class PeerClient: Sendable {
    private let client: HTTPClient
    /// Header carried by forwarded requests: how many hops the request has made (bounds forwarding loops).
    public static let hopsHeader = "X-Cairn-Hops"
    /// "https" when the cluster serves its HTTP API over TLS (every node alike), else "http".
    public let scheme: String

    /// `tls`: how other nodes' HTTPS certificates are checked, when the cluster serves HTTPS; nil: plain HTTP.
    public init(tls: TLSConfiguration? = nil) {
        scheme = tls == nil ? "http" : "https"
        var config = HTTPClient.Configuration(timeout: .init(connect: .seconds(1), read: .seconds(30)))
        config.tlsConfiguration = tls
        // Well under the servers' idle timeout (30 s by default): a pooled connection must not be reused
        // just as the other node closes it.
        config.connectionPool = .init(idleTimeout: .seconds(10))
        config.decompression = .disabled
        client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: config)
    }

    public func send(_ method: HTTPMethod, to address: PeerAddress, path: String, body: [UInt8] = [],
                     headers: [(String, String)] = [], timeoutMillis: Int64 = 30_000) async throws -> PeerReply {
        let reply = try await stream(method, to: address, path: path, body: body, headers: headers, timeoutMillis: timeoutMillis)
        do {
            return PeerReply(status: reply.status, contentType: reply.contentType,
                             body: Array(buffer: try await reply.body.collect(upTo: Self.maxCollectedBytes)), cairnHeaders: reply.cairnHeaders)
        } catch {
            throw PeerError.failedInFlight(address, "\(error)")
        }
    }

    /// The most of a reply `send` holds in memory; `stream` passes larger ones on as they come.
    public static let maxCollectedBytes = 256 << 20

    /// A reply whose body is still arriving (a backup, say): passed on chunk by chunk, never held whole.
    public struct StreamedReply: Sendable {
        public var status: Int
        public var contentType: String?
        public var cairnHeaders: [(String, String)]
        public var body: HTTPClientResponse.Body
    }

    /// `timeoutMillis` bounds the wait for the reply's head; the body may take as long as it streams
    /// (each read within the client's read timeout).
    public func stream(_ method: HTTPMethod, to address: PeerAddress, path: String, body: [UInt8] = [],
                       headers: [(String, String)] = [], timeoutMillis: Int64 = 30_000) async throws -> StreamedReply {
        var request = HTTPClientRequest(url: "\(scheme)://\(address.host):\(address.port)\(path)")
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if !body.isEmpty || method == .POST || method == .PUT {
            if !request.headers.contains(name: "Content-Type") { request.headers.add(name: "Content-Type", value: "application/json") }
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: .milliseconds(timeoutMillis))
        } catch {
            throw Self.classify(error, address)
        }
        return StreamedReply(status: Int(response.status.code), contentType: response.headers.first(name: "Content-Type"),
                             cairnHeaders: response.headers.filter { $0.name.lowercased().hasPrefix("x-cairn-") }.map { ($0.name, $0.value) },
                             body: response.body)
    }

    /// JSON in, JSON out, for the small messages nodes exchange among themselves.
    public func call<Request: Encodable, Reply: Decodable>(_ method: HTTPMethod, to address: PeerAddress, path: String,
                                                           _ request: Request, as: Reply.Type, headers: [(String, String)] = [],
                                                           timeoutMillis: Int64 = 5_000) async throws -> Reply {
        let body = method == .GET ? [] : Array(try JSONEncoder.cluster.encode(request))
        let reply = try await send(method, to: address, path: path, body: body, headers: headers, timeoutMillis: timeoutMillis)
        guard reply.status == 200 else {
            throw ClusterError.peerRefused(address, status: reply.status, message: String(decoding: reply.body, as: UTF8.self))
        }
        return try JSONDecoder.cluster.decode(Reply.self, from: Data(reply.body))
    }

    private static func classify(_ error: any Error, _ address: PeerAddress) -> PeerError {
        if error is NIOConnectionError { return .unreachable(address, "\(error)") }
        if let e = error as? HTTPClientError, e == .connectTimeout { return .unreachable(address, "connect timed out") }
        if let e = error as? ChannelError, e == .connectTimeout(.seconds(1)) { return .unreachable(address, "connect timed out") }
        if let e = error as? IOError, [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH].contains(e.errnoCode) {
            return .unreachable(address, "\(error)")
        }
        return .failedInFlight(address, "\(error)")
    }

    public func shutdown() async {
        try? await client.shutdown()
    }
}
