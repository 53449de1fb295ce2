import CairnJSON
import CairnAuth
import CairnCluster
import CairnNode
import CairnRaft
import CairnSQLite
import CairnTransport
import Foundation
import HTTPTypes
import Hummingbird
import Metrics
import NIOConcurrencyHelpers
import NIOCore

/// Requests that stay HTTP between nodes: a backup (a file streamed from the node that holds the
/// database), a consistency check and rqlite's leader stepdown (run on the group's leader). Every other operation on a group
/// goes through the group router as an encoded command.
extension API {
    /// The catalog as of every change committed so far (one ReadIndex round on group 0).
    /// While the metadata group elects a leader (its last one died, say), the read waits for it, up to
    /// the request timeout, rather than fail a request that a second later would succeed.
    func committedCatalog() async throws -> Catalog {
        let deadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
        var pauseMillis: Int64 = 10
        while true {
            do {
                return try await cluster.refreshCatalog()
            } catch RuntimeError.notLeader where ContinuousClock.now + .milliseconds(pauseMillis) < deadline {
                try await Task.sleep(for: .milliseconds(pauseMillis))
                pauseMillis = min(pauseMillis * 2, 200)
            } catch {
                throw HTTPFailure.unavailable("cannot reach the cluster's metadata leader to read the catalog (\(error)); retry shortly")
            }
        }
    }

    /// Runs `local` on this node if it holds the database's group, otherwise (or when a write finds
    /// another leader) forwards the request to a node that can serve it: the same method, path and
    /// body, sent under this node's token on behalf of `who`.
    /// `replyWithinMillis`: how long a forward may wait for the answer to begin (default: what is left of
    /// the request's timeout).
    func serveOrForward(_ request: Request, _ who: Principal, db: String, body: [UInt8] = [], isWrite: Bool, replyWithinMillis: Int64? = nil,
                        local: @escaping (GroupID) async throws -> Response) async throws -> Response {
        let group = try await groupRouter.group(of: db)
        let hops = who.hops
        let deadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
        var lastProblem = "no leader is known yet"
        var attempt = 0
        while ContinuousClock.now < deadline {
            attempt += 1
            var target: NodeID?
            if runtime.hosts(group) {
                do {
                    return try await local(group)
                } catch RuntimeError.notLeader(let leader) {
                    if leader != noNode && leader != cluster.nodeID { target = leader } else { lastProblem = "no leader is known yet" }
                } catch RuntimeError.databaseDropped {
                    throw HTTPFailure.notFound("no database named \"\(db)\" (it was dropped)")
                } catch RuntimeError.unknownGroup {
                    // Just created here, or just dropped and deleted: the committed catalog tells which.
                    if (try? await cluster.refreshCatalog())?.databases[db].map({ $0.group == group }) == false {
                        throw HTTPFailure.notFound("no database named \"\(db)\"")
                    }
                    lastProblem = "the database's group is being created on this node"
                }
            } else {
                let catalog = cluster.catalog
                let replicas = catalog.database(group: group)?.replicas ?? []
                let holders = (replicas + (isWrite ? [] : catalog.readReplicas.map(\.id))).filter { $0 != cluster.nodeID }
                if !holders.isEmpty { target = holders[(forwardCursor.withLockedValue { c in c += 1; return c }) % holders.count] }
            }
            if let target {
                guard hops < 3 else { throw HTTPFailure.unavailable("the request was forwarded too many times; the cluster is changing leaders, retry shortly") }
                if runtime.transport.faults.partitioned.contains(target) {
                    lastProblem = "node \(target) is cut off from this node"
                } else if let address = cluster.httpAddress(of: target) {
                    do {
                        var path = request.uri.path
                        if let q = request.uri.query { path += "?" + q }
                        let left = deadline - ContinuousClock.now
                        let leftMillis = left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000
                        var headers = await auth.nodeHeaders() + [(PeerClient.hopsHeader, "\(hops + 1)")]
                        if !who.isNode { headers.append((ForwardedPrincipal.header, ForwardedPrincipal.value(for: who))) }
                        if let type = request.headers[.contentType] { headers.append((HTTPField.Name.contentType.rawName, type)) }
                        Counter(label: "cairn_http_forwarded_out_total").increment()
                        // Streamed: a forwarded backup may be larger than memory.
                        let reply = try await peers.stream(.init(rawValue: request.method.rawValue), to: address, path: path, body: body, headers: headers,
                                                           timeoutMillis: max(100, replyWithinMillis ?? leftMillis))
                        var replyHeaders: HTTPFields = [.contentType: reply.contentType ?? "application/json"]
                        replyHeaders[Self.servedBy] = "\(target)"
                        return Response(status: .init(code: reply.status), headers: replyHeaders, body: .init(asyncSequence: reply.body))
                    } catch PeerError.unreachable(_, let why) {
                        lastProblem = "node \(target) is unreachable (\(why))"
                    } catch PeerError.failedInFlight(_, let why) where !isWrite {
                        lastProblem = "node \(target) failed (\(why))"
                    }
                } else {
                    lastProblem = "the address of node \(target) is not known here yet"
                }
            }
            try await Task.sleep(for: .milliseconds(min(20 * attempt, 200)))
        }
        throw HTTPFailure.unavailable("cannot serve the request on database \"\(db)\" within \(options.requestTimeoutMillis) ms: \(lastProblem)")
    }
}
