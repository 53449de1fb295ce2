import CairnJSON
import CairnNode
import CairnRaft
import CairnTransport
import Foundation
import Hummingbird
import NIOConcurrencyHelpers

/// Test hooks, served only with `--enable-fault-injection`: make a replica diverge, die (as kill -9
/// would) or pause at a named point of a cross-shard transaction or a split, and drop, delay or cut
/// the node's peer traffic. Each is a way for a process test to reach a state that real failures reach
/// only by chance.
extension API {
    /// Where a test may ask a node to die: in a transaction across shards, and in a split.
    static let crashPoints = ["after_prepare", "after_decide", "split_after_reserve", "split_after_entry"]
    /// Where a test may ask a node to stop for a while: a split pass, between choosing a split (by its
    /// own catalog copy) and making it.
    static let pausePoints = ["split_pass_before_split"]

    func addFaultInjectionRoutes(to router: RecordingRouter) {
            router.put("/v1/debug/diverge") { request, _ in
                await self.respond(request, .all) { who in
                    self.audit.record(who, action: "make a replica diverge (test)", database: nil)
                    let json = try self.parse(try await self.body(of: request))
                    guard case .string(let db)? = json["database"], case .string(let sql)? = json["sql"] else {
                        throw HTTPFailure.badRequest("send {\"database\": ..., \"sql\": ...}")
                    }
                    guard let group = self.cluster.catalog.databases[db]?.group else { throw HTTPFailure.notFound("no database named \"\(db)\"") }
                    try await self.runtime.divergeForTesting(group: group, sql: sql)
                    self.log("node \(self.cluster.nodeID): made its copy of \(db) diverge on purpose (fault injection)")
                    return Self.json(200, .object([("diverged", .bool(true))]))
                }
            }
            router.put("/v1/debug/crash-point") { request, _ in
                await self.respond(request, .all) { who in
                    self.audit.record(who, action: "set a crash point (test)", database: nil)
                    let json = try self.parse(try await self.body(of: request))
                    switch json["point"] {
                    case .string(let p)? where Self.crashPoints.contains(p): self.crashPoint.withLockedValue { $0 = p }
                    case nil, .null?: self.crashPoint.withLockedValue { $0 = nil }
                    default: throw HTTPFailure.badRequest("\"point\" must be one of \(Self.crashPoints.joined(separator: ", ")), or null")
                    }
                    return Self.json(200, .object([("point", json["point"] ?? .null)]))
                }
            }
            router.put("/v1/debug/pause-point") { request, _ in
                await self.respond(request, .all) { who in
                    self.audit.record(who, action: "set a pause point (test)", database: nil)
                    let json = try self.parse(try await self.body(of: request))
                    switch (json["point"], json["millis"]) {
                    case (.string(let p)?, .number(let t)?) where Self.pausePoints.contains(p):
                        guard let millis = Int(t), (1...60_000).contains(millis) else {
                            throw HTTPFailure.badRequest("\"millis\" must be a whole number from 1 to 60000")
                        }
                        self.pausePoint.withLockedValue { $0 = (p, millis) }
                    case (nil, _), (.null?, _): self.pausePoint.withLockedValue { $0 = nil }
                    default: throw HTTPFailure.badRequest("send {\"point\": one of \(Self.pausePoints.joined(separator: ", ")), \"millis\": N}, or {\"point\": null}")
                    }
                    return Self.json(200, .object([("point", json["point"] ?? .null)]))
                }
            }
            router.put("/v1/debug/faults") { request, _ in
                await self.respond(request, .all) { who in
                    self.audit.record(who, action: "set transport faults", database: nil)
                    return Self.json(200, try await self.setFaults(request))
                }
            }
    }

    /// Dies as kill -9 would, if a test named `point` (`PUT /v1/debug/crash-point`).
    func crashIfAsked(_ point: String) {
        guard crashPoint.withLockedValue({ $0 }) == point else { return }
        log("node \(cluster.nodeID): dying at \(point) (fault injection)")
        kill(getpid(), SIGKILL)
    }

    /// Sleeps, once, if a test named `point` (`PUT /v1/debug/pause-point`).
    func pauseIfAsked(_ point: String) async {
        let millis: Int? = pausePoint.withLockedValue { asked in
            guard let p = asked, p.point == point else { return nil }
            asked = nil
            return p.millis
        }
        guard let millis else { return }
        log("node \(cluster.nodeID): pausing \(millis) ms at \(point) (fault injection)")
        try? await Task.sleep(for: .milliseconds(millis))
        log("node \(cluster.nodeID): resuming after \(point) (fault injection)")
    }

    private func setFaults(_ request: Request) async throws -> JSON {
        let json = try parse(try await body(of: request))
        var faults = TransportFaults()
        if case .array(let ids)? = json["partitioned"] {
            for id in ids {
                guard case .number(let t) = id, let n = NodeID(t) else { throw HTTPFailure.badRequest("\"partitioned\" must list node ids") }
                faults.partitioned.insert(n)
            }
        }
        if case .number(let t)? = json["drop_rate"] {
            guard let d = Double(t), (0...1).contains(d) else { throw HTTPFailure.badRequest("\"drop_rate\" must be between 0 and 1") }
            faults.dropRate = d
        }
        if case .number(let t)? = json["delay_ms"] {
            guard let d = Int64(t), d >= 0 else { throw HTTPFailure.badRequest("\"delay_ms\" must be a whole number of milliseconds") }
            faults.delayMillis = d
        }
        runtime.transport.faults = faults
        log("node \(cluster.nodeID): transport faults set: \(faults)")
        return .object([("partitioned", .array(faults.partitioned.sorted().map { .int($0) })), ("drop_rate", .double(faults.dropRate)),
                        ("delay_ms", .int(faults.delayMillis))])
    }
}
