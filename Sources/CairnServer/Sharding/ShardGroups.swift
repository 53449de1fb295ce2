import CairnCluster
import CairnNode
import CairnRaft
import CairnSQLite
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Reads on one group wherever it is served: here when this node holds it (and, for a linearizable
/// read, leads it), otherwise at the node that can, reached with the encoded statements (not a
/// client's request) on `/v1/internal/query`. The read-side twin of `propose`.
extension API {
    static let consistencyHeader = "X-Cairn-Consistency"
    static let leaderHeader = HTTPField.Name("X-Cairn-Leader")!

    func queryGroup(_ group: GroupID, _ statements: [SQLStatement], consistency: ReadConsistency, hops: Int) async throws -> [StatementResult] {
        let deadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
        var lastProblem = "no leader is known yet"
        var attempt = 0
        var target: NodeID?
        while ContinuousClock.now < deadline {
            attempt += 1
            if target == nil && runtime.hosts(group) {
                do {
                    return try await runtime.query(group: group, statements, consistency: consistency).results
                } catch RuntimeError.notLeader(let leader) where leader != noNode && leader != cluster.nodeID {
                    target = leader
                } catch RuntimeError.notLeader {
                    lastProblem = "no leader is known yet"
                }
            } else if target == nil, let holders = cluster.catalog.database(group: group)?.replicas.filter({ $0 != cluster.nodeID }), !holders.isEmpty {
                target = holders[attempt % holders.count]
            }
            if let node = target {
                target = nil
                guard hops < 3 else { throw HTTPFailure.unavailable("the read was forwarded too many times; the cluster is changing leaders, retry shortly") }
                guard let address = cluster.httpAddress(of: node) else {
                    lastProblem = "the address of node \(node) is not known here yet"
                    try await Task.sleep(for: .milliseconds(min(20 * attempt, 200)))
                    continue
                }
                let command = SQLCommand(statements: statements, timestampMillis: 0, randomSeed: 0)
                do {
                    let reply = try await peers.send(.POST, to: address, path: "/v1/internal/query/\(group)", body: command.encoded(),
                                                     headers: await auth.nodeHeaders() + [(PeerClient.hopsHeader, "\(hops + 1)"),
                                                                                          (Self.consistencyHeader, Self.consistencyText(consistency))],
                                                     timeoutMillis: options.requestTimeoutMillis)
                    if reply.status == 200, let results = ResultCoding.decode(reply.body) { return results }
                    if let leader = reply.cairnHeaders.first(where: { $0.0.lowercased() == Self.leaderHeader.canonicalName }).flatMap({ NodeID($0.1) }),
                       leader != cluster.nodeID {
                        target = leader
                        continue
                    }
                    let said = String(decoding: reply.body.prefix(500), as: UTF8.self)
                    if (400..<500).contains(reply.status) { throw HTTPFailure(status: reply.status, message: "node \(node) refused the read: \(said)") }
                    lastProblem = "node \(node) answered \(reply.status): \(said)"
                } catch let e as PeerError {
                    lastProblem = "\(e)"
                }
            }
            try await Task.sleep(for: .milliseconds(min(20 * attempt, 200)))
        }
        throw HTTPFailure.unavailable("cannot read group \(group) within \(options.requestTimeoutMillis) ms: \(lastProblem)")
    }

    static func consistencyText(_ c: ReadConsistency) -> String {
        switch c {
        case .linearizable: return "linearizable"
        case .local: return "local"
        case .stale(let ms): return "stale:\(ms)"
        }
    }

    static func consistency(text: String?) -> ReadConsistency? {
        switch text {
        case nil, "linearizable": return .linearizable
        case "local": return .local
        case let t? where t.hasPrefix("stale:"): return Int64(t.dropFirst(6)).map { .stale(freshnessMillis: $0) }
        default: return nil
        }
    }

    /// The receiving end of `queryGroup`: nodes only; answers here or names the leader.
    func addInternalQueryRoute(to router: Router<CairnContext>) {
        router.post("/v1/internal/query/:group") { request, context in
            await self.respond(request, .all) { who in
                guard who.isNode || !self.auth.enabled else { throw AccessDenied.forbidden("only cluster nodes send encoded reads") }
                guard let group = GroupID(try context.parameters.require("group")) else { throw HTTPFailure.badRequest("the group must be a number") }
                guard let consistency = Self.consistency(text: request.headers[HTTPField.Name(Self.consistencyHeader)!]) else {
                    throw HTTPFailure.badRequest("unknown \(Self.consistencyHeader)")
                }
                let bytes = Array(buffer: try await request.body.collect(upTo: self.options.maxBodyBytes))
                guard let command = SQLCommand(decoding: bytes), !command.statements.isEmpty else { throw HTTPFailure.badRequest("the body is not encoded statements") }
                do {
                    let results = try await self.runtime.query(group: group, command.statements, consistency: consistency).results
                    return Response(status: .ok, headers: [.contentType: "application/octet-stream"],
                                    body: .init(byteBuffer: ByteBuffer(bytes: ResultCoding.encode(results))))
                } catch RuntimeError.notLeader(let leader) {
                    var reply = Self.json(503, .object([("error", .string("node \(self.cluster.nodeID) does not lead group \(group)"))]))
                    if leader != noNode { reply.headers[Self.leaderHeader] = "\(leader)" }
                    return reply
                }
            }
        }
    }
}
