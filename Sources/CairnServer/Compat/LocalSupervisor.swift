import CairnCluster
import CairnJSON
import CairnTransport
import Foundation
import Hummingbird
import Logging
import NIOCore

/// Supervised local mode, what `cairn demo` runs: a process on this machine that starts `cairn server`
/// processes on request, as seed 004's load balancer started a container for each server its `/add`
/// named. A node started with `--supervisor HOST:PORT` (and the supervisor's secret in
/// `CAIRN_SUPERVISOR_TOKEN`) asks it for the servers a shard-lb `/add` names that have not joined;
/// elsewhere those names must be nodes already (a 400 says so).
public enum LocalSupervisor {
    public static let tokenVariable = "CAIRN_SUPERVISOR_TOKEN"
    static let spawnPath = "/spawn"

    /// Serves `POST /spawn {"name": NAME}` on loopback: `spawn` starts a server of that name (it joins
    /// the cluster by itself) and returns its HTTP address. Requests without the secret get a 401.
    public static func application(address: PeerAddress, token: String,
                                   spawn: @escaping @Sendable (String) async throws -> String,
                                   onRunning: @escaping @Sendable (String) -> Void) -> some ApplicationProtocol {
        let router = Router()
        router.post(RouterPath(stringLiteral: spawnPath)) { request, _ -> Response in
            guard request.headers[.authorization] == "Bearer " + token else { return reply(401, "the supervisor's token is missing or wrong") }
            let bytes = try await request.body.collect(upTo: 4096)
            guard case .string(let name)? = (try? JSON.parse(Array(buffer: bytes)))?["name"], Catalog.nameProblem(name) == nil else {
                return reply(400, "send {\"name\": a node name}")
            }
            do {
                let http = try await spawn(name)
                return Response(status: .ok, headers: [.contentType: "application/json"],
                                body: .init(byteBuffer: ByteBuffer(bytes: JSON.object([("name", .string(name)), ("http", .string(http))]).serialized())))
            } catch {
                return reply(400, "\(error)")
            }
        }
        return Application(router: router, configuration: .init(address: .hostname(address.host, port: address.port), serverName: "cairn-supervisor"),
                           onServerRunning: { channel in onRunning(channel.localAddress.map { "\($0)" } ?? "?") }, logger: Logger(label: "cairn.supervisor"))
    }

    private static func reply(_ status: Int, _ message: String) -> Response {
        Response(status: .init(code: status), headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(bytes: JSON.object([("error", .string(message))]).serialized())))
    }
}

/// A node's side of supervised local mode: asks the supervisor for a server, by name.
struct SupervisorClient: Sendable {
    let address: PeerAddress
    let token: String
    let peers: PeerClient

    /// Starts a server named `name`; returns once its process runs (it joins by itself).
    func spawn(_ name: String) async throws {
        let body = JSON.object([("name", .string(name))]).serialized()
        let reply = try await peers.send(.POST, to: address, path: LocalSupervisor.spawnPath, body: body,
                                         headers: [("Authorization", "Bearer " + token), ("Content-Type", "application/json")], timeoutMillis: 30_000)
        guard reply.status == 200 else {
            let message = (try? JSON.parse(reply.body))?["error"].flatMap { if case .string(let s) = $0 { s } else { nil } }
            throw HTTPFailure.badRequest("the local supervisor could not start \(name): \(message ?? "status \(reply.status)")")
        }
    }
}
