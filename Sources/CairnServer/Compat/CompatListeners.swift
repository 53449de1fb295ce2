import CairnAuth
import CairnCompat
import CairnJSON
import CairnTransport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore

/// An older system's API a node can serve on a listener of its own (`--compat API=HOST:PORT`): their
/// clients hard-code root paths, so each gets its own port rather than a prefix of CairnDB's.
public enum CompatAPI: String, CaseIterable, Sendable {
    /// Seed 004: the sharded student database behind a load balancer.
    case shardLB = "shard-lb"
    /// Seed 000: the auth server and consistent-hashing key endpoint (seed 001's objects too).
    case keyEndpoint = "key-endpoint"
    /// Seed 003: the master/slave REST database API.
    case restDB = "rest-db"
    /// Seed 002: the master's HTTP API.
    case masterAPI = "master-api"

    /// Whether the original had credentials of its own (mapped onto CairnDB's users and tokens); one
    /// that had none acts as `--compat-user` when auth is on.
    public var hasOwnTokens: Bool { self == .keyEndpoint || self == .masterAPI }
}

/// One `--compat API=HOST:PORT`.
public struct CompatListener: Sendable, Equatable {
    public var api: CompatAPI
    public var address: PeerAddress

    public init(api: CompatAPI, address: PeerAddress) {
        self.api = api
        self.address = address
    }

    /// `API=HOST:PORT`; nil with what is wrong.
    public static func parse(_ text: String) -> Result<CompatListener, CompatOptionError> {
        guard let eq = text.firstIndex(of: "=") else { return .failure(.init(message: "--compat takes API=HOST:PORT, not \(text)")) }
        let name = String(text[..<eq]), rest = String(text[text.index(after: eq)...])
        guard let api = CompatAPI(rawValue: name) else {
            return .failure(.init(message: "--compat: unknown API \(name); one of \(CompatAPI.allCases.map(\.rawValue).joined(separator: ", "))"))
        }
        guard let address = PeerAddress(parsing: rest) else { return .failure(.init(message: "--compat \(name)=: \(rest) is not HOST:PORT")) }
        return .success(CompatListener(api: api, address: address))
    }
}

public struct CompatOptionError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// A listener's HTTP server, given the API (if any) whose data requests its connections serve on the
/// event loop (`RawFastPath`, `FastDataPath`), with the largest body they take there.
typealias ListenerServer = @Sendable (_ fastPath: (server: any FastDataServer, maxBodyBytes: Int)?) throws -> HTTPServerBuilder

extension API {
    /// The application serving `listener`'s API, on its own port.
    func compatApplication(_ listener: CompatListener, makeServer: ListenerServer, logger: Logger,
                           onRunning: @escaping @Sendable (String) -> Void) throws -> some ApplicationProtocol {
        let router = RecordingRouter()
        router.add(middleware: ClientAddress())
        router.add(middleware: RequestMetrics())
        let server: HTTPServerBuilder
        let unmatched: UnmatchedStyle
        switch listener.api {
        case .shardLB:
            // Seed 004's workload is `/write` and `/read`: served on the event loop, as CairnDB's own data endpoints.
            let lb = ShardLBAPI(api: self)
            lb.register(on: router)
            let maxBodyBytes = fastPathMaxBodyBytes
            server = try makeServer((lb, maxBodyBytes))
            unmatched = .fastAPI
        case .keyEndpoint:
            KeyEndpointAPI(api: self).register(on: router)
            server = try makeServer(nil)
            unmatched = .flask
        case .restDB:
            let restDB = RestDBAPI(api: self, address: listener.address.description)
            restDB.register(on: router)
            server = try makeServer(nil)
            // The original's handlers ran for any method: one not routed (TRACE, a WebDAV verb) is served too.
            unmatched = .goMux(wrongMethod: { request, pattern, _ in await restDB.serveAnyMethod(request, route: pattern) })
        case .masterAPI:
            MasterAPIServer(api: self).register(on: router)
            server = try makeServer(nil)
            unmatched = .goMux(wrongMethod: MasterAPIServer.wrongMethod)
        }
        return Application(router: router.finished(unmatched), server: server,
                           configuration: .init(address: .hostname(listener.address.host, port: listener.address.port), serverName: "cairn"),
                           onServerRunning: { channel in onRunning(channel.localAddress.map { "\($0)" } ?? "?") },
                           logger: logger)
    }

    /// Who a compatibility API's request acts as: everyone with auth off; with auth on, the user
    /// `--compat-user` names (the originals had no credentials of their own), with that user's grants
    /// as the committed catalog has them now.
    func compatPrincipal() throws -> Principal {
        guard auth.enabled else { return Principal(user: nil, grants: Grants([Grant(.all)])) }
        guard let name = options.compatUser else {
            // Refused at start-up: never reached.
            throw AccessDenied.forbidden("no --compat-user is set")
        }
        let catalog = cluster.catalog
        guard catalog.users[name] != nil else {
            throw AccessDenied.forbidden("--compat-user \(name) is not a user of this cluster; create it and grant it the database")
        }
        return Principal(user: name, grants: catalog.grants(of: name))
    }
}
