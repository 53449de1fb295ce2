import CairnCluster
import CairnJSON
import CairnNode
import CairnRaft
import CairnSQLite
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The entry was not committed, and will not be: sending it again cannot apply it twice.
struct NotCommitted: Error, CustomStringConvertible {
    var description: String
}

/// The entry may have been committed (it was proposed, or sent to a node that may have proposed it, and
/// then the answer was lost): sending it again could apply it twice.
struct OutcomeUnknown: Error, CustomStringConvertible {
    var description: String
}

/// Entries a node builds itself (a load's pieces, rqlite's queued batches), committed through the
/// group's leader wherever it is. Each is proposed at most once: a try that certainly did not commit is
/// made again until the deadline; one whose outcome is unknown ends the attempt.
extension API {
    /// Marks a reply to `/v1/internal/propose` whose entry was never committed.
    static let notCommittedHeader = HTTPField.Name("X-Cairn-Not-Committed")!

    /// Commits `command` to `group` through its leader: here, or at a node reached with the encoded
    /// command (not the client's request) on `/v1/internal/propose`. Throws `NotCommitted` when nothing
    /// was committed by the deadline, `OutcomeUnknown` when something may have been.
    func propose(_ command: SQLCommand, group: GroupID, hops: Int) async throws -> [StatementResult] {
        let deadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
        var lastProblem = "no leader is known yet"
        var attempt = 0
        while ContinuousClock.now < deadline {
            attempt += 1
            var target: NodeID?
            if runtime.hosts(group) {
                do {
                    return try await runtime.execute(group: group, command)
                } catch RuntimeError.notLeader(let leader) where leader != noNode && leader != cluster.nodeID {
                    target = leader
                } catch RuntimeError.notLeader {
                    lastProblem = "no leader is known yet"
                } catch RuntimeError.proposalLost {
                    lastProblem = "leadership changed"
                } catch RuntimeError.raft(let why) {
                    // Refused by the core before it was appended (a leadership transfer under way, say).
                    lastProblem = why
                } catch RuntimeError.timedOut(let why) {
                    throw OutcomeUnknown(description: "the entry was proposed and then \(why)")
                }
            } else if let holders = cluster.catalog.database(group: group)?.replicas.filter({ $0 != cluster.nodeID }),
                      !holders.isEmpty {
                target = holders[attempt % holders.count]
            }
            if let target {
                guard hops < 3 else { throw NotCommitted(description: "the entry was forwarded too many times; the cluster is changing leaders, retry shortly") }
                guard let address = cluster.httpAddress(of: target) else {
                    lastProblem = "the address of node \(target) is not known here yet"
                    try await Task.sleep(for: .milliseconds(min(20 * attempt, 200)))
                    continue
                }
                let reply: PeerReply
                do {
                    reply = try await peers.send(.POST, to: address, path: "/v1/internal/propose/\(group)", body: command.encoded(),
                                                 headers: await auth.nodeHeaders() + [(PeerClient.hopsHeader, "\(hops + 1)")],
                                                 timeoutMillis: options.requestTimeoutMillis)
                } catch PeerError.unreachable(_, let why) {
                    lastProblem = "node \(target) is unreachable (\(why))"
                    try await Task.sleep(for: .milliseconds(min(20 * attempt, 200)))
                    continue
                } catch {
                    throw OutcomeUnknown(description: "\(error)")
                }
                if reply.status == 200 {
                    guard let results = ResultCoding.decode(reply.body) else {
                        throw OutcomeUnknown(description: "node \(target) committed the entry but its answer could not be read")
                    }
                    return results
                }
                let said = String(decoding: reply.body.prefix(500), as: UTF8.self)
                if (400..<500).contains(reply.status) {
                    throw HTTPFailure(status: reply.status, message: "node \(target) refused the entry: \(said)")
                }
                guard reply.cairnHeaders.contains(where: { $0.0.lowercased() == Self.notCommittedHeader.canonicalName }) else {
                    throw OutcomeUnknown(description: "node \(target) answered \(reply.status): \(said)")
                }
                lastProblem = "node \(target) could not commit it (\(said))"
            }
            try await Task.sleep(for: .milliseconds(min(20 * attempt, 200)))
        }
        throw NotCommitted(description: "cannot commit to group \(group) within \(options.requestTimeoutMillis) ms: \(lastProblem)")
    }

    /// The receiving end of `propose`: only nodes may send entries they built themselves.
    func addProposeRoute(to router: Router<CairnContext>) {
        router.post("/v1/internal/propose/:group") { request, context in
            await self.respond(request, .all) { who in
                guard who.isNode || !self.auth.enabled else { throw AccessDenied.forbidden("only cluster nodes propose entries directly") }
                guard let group = GroupID(try context.parameters.require("group")) else { throw HTTPFailure.badRequest("the group must be a number") }
                let bytes = Array(buffer: try await request.body.collect(upTo: max(self.options.maxBodyBytes, self.runtime.config.maxEntryBytes)))
                guard let command = SQLCommand(decoding: bytes) else { throw HTTPFailure.badRequest("the body is not an encoded entry") }
                do {
                    let results = try await self.propose(command, group: group, hops: who.hops)
                    return Response(status: .ok, headers: [.contentType: "application/octet-stream"],
                                    body: .init(byteBuffer: ByteBuffer(bytes: ResultCoding.encode(results))))
                } catch let e as NotCommitted {
                    var reply = Self.json(503, .object([("error", .string(e.description))]))
                    reply.headers[Self.notCommittedHeader] = "1"
                    return reply
                }
            }
        }
    }
}
