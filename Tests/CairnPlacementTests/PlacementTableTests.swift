import CairnPlacement
import CairnRaft
import Foundation
import Testing

/// Datadriven placement (etcd's style): `testdata/rebalance.txt` and `testdata/membership.txt` hold
/// cases, each its input lines, `----`, and the decisions expected. `CAIRN_REWRITE=1 swift test
/// --filter PlacementTableTests` writes the actual decisions back, to review as a diff.
///
/// rebalance.txt:  `plan rf=3 [in=1] [out=1] [flight=4]`, `nodes 1 2 3:dead 4:draining 5:suspect`,
///                 then one line per group `g7 1 2+ 3-` (`+` joining, `-` leaving).
/// membership.txt: `membership leader=1 commit=10`, `conf voters=1,2,3 learners=4`, `replicas 1 2 3- 4+`,
///                 `match 1:10 4:9`, and optionally `read 9` (read replicas), `removed 5`, `unknown 6`,
///                 `reachable 1 2` (default: every member); `target=` on the first line (default 3).
/// leaders.txt:    `leaders nodes=1,2,3` (the live nodes), then one line per group: `g4 1 2 3`, its
///                 leader, then the voters its leadership may go to.
/// doubling.txt:   `doubling shards=4 rf=3 nodes=6 min=10 [max=4096]`, then optionally `arcs 8192 4096 ...`
///                 (the shards' widths in slots): the target count, and the order the shards split in.
@Suite struct PlacementTableTests {
    static let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("testdata")

    @Test func rebalancerMatchesTheTable() throws { try run("rebalance.txt", Self.rebalance) }
    @Test func membershipPlanMatchesTheTable() throws { try run("membership.txt", Self.membership) }
    @Test func leaderBalanceMatchesTheTable() throws { try run("leaders.txt", Self.leaders) }
    @Test func shardDoublingMatchesTheTable() throws { try run("doubling.txt", Self.doubling) }

    static func doubling(_ lines: [String]) throws -> String {
        guard let head = lines.first, head.hasPrefix("doubling") else { throw BadCase(description: "expected doubling") }
        let o = options(head)
        guard let shards = o["shards"].flatMap({ Int($0) }), let rf = o["rf"].flatMap({ Int($0) }), let nodes = o["nodes"].flatMap({ Int($0) }),
              let min = o["min"].flatMap({ Int($0) }) else { throw BadCase(description: "doubling needs shards=, rf=, nodes=, min=") }
        guard let target = ShardDoubling.target(shards: shards, replicationFactor: rf, nodes: nodes, minReplicasPerNode: min,
                                                maxShards: Int(o["max"] ?? "4096")!) else { return "(no doubling)" }
        var out = ["target \(target)"]
        // The splits in order, each halving its arc (the new shard is numbered next).
        var arcs = lines.dropFirst().first { $0.hasPrefix("arcs") }.map { $0.split(separator: " ").dropFirst().compactMap { Int($0) } }
            ?? Array(repeating: 65536 / shards, count: shards)
        var order: [Int] = []
        while let next = ShardDoubling.nextSplit(arcSlots: arcs, target: target) {
            order.append(next)
            let half = arcs[next] / 2
            arcs.append(arcs[next] - half)
            arcs[next] = half
        }
        out.append("splits " + order.map(String.init).joined(separator: " "))
        out.append("widths " + Set(arcs).sorted().map(String.init).joined(separator: " "))
        return out.joined(separator: "\n")
    }

    func run(_ name: String, _ decide: ([String]) throws -> String) throws {
        let file = Self.dir.appendingPathComponent(name)
        let text = try String(contentsOf: file, encoding: .utf8)
        var output: [String] = []
        var failures: [String] = []
        for block in text.components(separatedBy: "\n\n") where !block.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            let parts = block.components(separatedBy: "\n----\n")
            let input = parts[0].trimmingCharacters(in: .newlines)
            let expected = parts.count > 1 ? parts[1].trimmingCharacters(in: .newlines) : ""
            let lines = input.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }
            let actual: String
            do { actual = try decide(lines) } catch { actual = "error: \(error)" }
            if actual != expected { failures.append("\(input)\nexpected:\n\(expected)\nactual:\n\(actual)") }
            output.append(input + "\n----\n" + actual)
        }
        if ProcessInfo.processInfo.environment["CAIRN_REWRITE"] == "1" {
            try (output.joined(separator: "\n\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        } else {
            #expect(failures.isEmpty, "\(failures.joined(separator: "\n\n"))")
        }
    }

    struct BadCase: Error, CustomStringConvertible { let description: String }

    /// `key=value` words after the command word.
    static func options(_ line: String) -> [String: String] {
        Dictionary(line.split(separator: " ").dropFirst().compactMap { w -> (String, String)? in
            let kv = w.split(separator: "=", maxSplits: 1)
            return kv.count == 2 ? (String(kv[0]), String(kv[1])) : nil
        }, uniquingKeysWith: { $1 })
    }

    /// `1 2+ 3-`: replicas by state.
    static func replicas(_ words: some Sequence<Substring>) throws -> [NodeID: ReplicaState] {
        var out: [NodeID: ReplicaState] = [:]
        for w in words {
            let state: ReplicaState = w.hasSuffix("+") ? .joining : w.hasSuffix("-") ? .leaving : .active
            guard let n = NodeID(w.trimmingCharacters(in: CharacterSet(charactersIn: "+-"))) else { throw BadCase(description: "bad replica \(w)") }
            out[n] = state
        }
        return out
    }

    static func rebalance(_ lines: [String]) throws -> String {
        guard let head = lines.first, head.hasPrefix("plan") else { throw BadCase(description: "expected plan") }
        let o = options(head)
        let limits = PlacementLimits(replicationFactor: Int(o["rf"] ?? "3")!, snapshotsInPerNode: Int(o["in"] ?? "1")!,
                                     snapshotsOutPerNode: Int(o["out"] ?? "1")!, movesInFlight: o["flight"].flatMap { Int($0) })
        var nodes: [NodeID: NodeState] = [:]
        var groups: [PlacementGroup] = []
        for line in lines.dropFirst() {
            let words = line.split(separator: " ")
            if words.first == "nodes" {
                for w in words.dropFirst() {
                    let p = w.split(separator: ":")
                    guard let id = NodeID(p[0]), let state = p.count > 1 ? NodeState(rawValue: String(p[1])) : .live else {
                        throw BadCase(description: "bad node \(w)")
                    }
                    nodes[id] = state
                }
            } else if let g = words.first, g.hasPrefix("g"), let id = GroupID(g.dropFirst()) {
                // `pin=4,5`: the nodes an operator placed the group on.
                let pins = words.first { $0.hasPrefix("pin=") }.map { Set($0.dropFirst(4).split(separator: ",").compactMap { NodeID($0) }) } ?? []
                groups.append(PlacementGroup(id: id, replicas: try replicas(words.dropFirst().filter { !$0.hasPrefix("pin=") }), pinned: pins))
            } else {
                throw BadCase(description: "unknown line \(line)")
            }
        }
        let steps = Rebalancer.plan(nodes: nodes, groups: groups, limits: limits)
        return steps.isEmpty ? "(nothing)" : steps.map(\.description).joined(separator: "\n")
    }

    static func leaders(_ lines: [String]) throws -> String {
        guard let head = lines.first, head.hasPrefix("leaders"), let nodes = options(head)["nodes"] else {
            throw BadCase(description: "expected leaders nodes=1,2,3")
        }
        var leaders: [GroupID: NodeID] = [:], heirs: [GroupID: Set<NodeID>] = [:]
        for line in lines.dropFirst() {
            let words = line.split(separator: " ")
            guard let g = words.first, g.hasPrefix("g"), let id = GroupID(g.dropFirst()), words.count >= 2,
                  let leader = NodeID(words[1]) else { throw BadCase(description: "expected g<id> <leader> [heirs...]: \(line)") }
            leaders[id] = leader
            heirs[id] = Set(words.dropFirst(2).compactMap { NodeID($0) })
        }
        let plan = LeaderBalance.plan(leaders: leaders, heirs: heirs, nodes: Set(nodes.split(separator: ",").compactMap { NodeID($0) }))
        // One chain a line, its links from the top down; the last is the one made this round.
        return plan.isEmpty ? "(nothing)" : plan.map { $0.map(\.description).joined(separator: ", ") }.joined(separator: "\n")
    }

    static func membership(_ lines: [String]) throws -> String {
        guard let head = lines.first, head.hasPrefix("membership") else { throw BadCase(description: "expected membership") }
        let o = options(head)
        var voters = Set<NodeID>(), learners = Set<NodeID>(), read = Set<NodeID>(), removed = Set<NodeID>(), unknown = Set<NodeID>()
        var replicas: [NodeID: ReplicaState] = [:]
        var match: [NodeID: LogIndex] = [:]
        var reachable: Set<NodeID>?
        func ids(_ s: String?) -> Set<NodeID> { Set((s ?? "").split(separator: ",").compactMap { NodeID($0) }) }
        for line in lines.dropFirst() {
            let words = line.split(separator: " ")
            switch words.first {
            case "conf":
                let c = options(line)
                voters = ids(c["voters"])
                learners = ids(c["learners"])
            case "replicas": replicas = try Self.replicas(words.dropFirst())
            case "match":
                for w in words.dropFirst() {
                    let p = w.split(separator: ":")
                    match[NodeID(p[0])!] = LogIndex(p[1])!
                }
            case "read": read = Set(words.dropFirst().compactMap { NodeID($0) })
            case "removed": removed = Set(words.dropFirst().compactMap { NodeID($0) })
            case "unknown": unknown = Set(words.dropFirst().compactMap { NodeID($0) })
            case "reachable": reachable = Set(words.dropFirst().compactMap { NodeID($0) })
            default: throw BadCase(description: "unknown line \(line)")
            }
        }
        let known = voters.union(learners).union(replicas.keys).union(read).subtracting(removed).subtracting(unknown)
        let action = MembershipPlan.next(leader: NodeID(o["leader"]!)!, voters: voters, learners: learners, replicas: replicas,
                                         readReplicas: read, known: known, removed: removed, match: match,
                                         commit: LogIndex(o["commit"] ?? "10")!, reachable: reachable ?? voters.union(learners),
                                         target: Int(o["target"] ?? "3")!)
        return action.map(\.description) ?? "(nothing)"
    }
}
