@_spi(Mutants) import CairnPlacement
@_spi(Mutants) import CairnRaft

/// Clients, the controller that moves and splits shards, and the nemesis.
extension ShardedSimulation {
    // MARK: - Clients

    func clientStep(_ c: Int) {
        guard clients[c].pending == nil else { return }
        let isWrite: Bool
        let key: UInt64
        switch phase {
        case .faults, .healed:
            isWrite = rng.chance(0.55)
            key = UInt64(rng.int(0...(options.keys - 1)))
            // Routers refresh their map now and then, not on every request: some run on an old one.
            if rng.chance(0.1) { clients[c].map = arcs }
        case .finalReads:
            // Once the cluster is healthy again one client reads every key through the current map.
            guard c == 0, let k = finalReadKeys.first else { return }
            isWrite = false
            key = k
            clients[c].map = arcs
        case .settling, .done:
            return
        }
        guard let shard = clients[c].map.keys.sorted().first(where: { clients[c].map[$0]!.contains(key) }) else {
            clients[c].map = arcs
            retryLater(c)
            return
        }
        let target: NodeID
        if let hint = clients[c].leaderHint[shard], hint != noNode, rng.chance(0.75) {
            target = hint
        } else if let leader = leaderCopy(of: shard), let members = leader.replica.raw?.status.config.members, !members.isEmpty {
            target = rng.pick(members)
        } else {
            target = rng.pick(nodes.keys.sorted())
        }
        let opID = nextOpID
        nextOpID += 1
        let invoke = orderSeq
        orderSeq += 1
        guard let node = nodes[target], node.state == .up, let r = node.replicas[shard], let raw = r.raw else {
            clients[c].leaderHint[shard] = nil
            clients[c].map = arcs
            retryLater(c)
            return
        }
        do throws(RaftError) {
            if isWrite {
                let index = try raw.propose(ShardCommand.write(opID: opID, key: key).encoded())
                r.proposals[index] = (opID, c)
                history.append(HistoryOp(opID: opID, client: c, key: key, kind: .write(value: opID), invoke: invoke))
                clients[c].pending = PendingOp(opID: opID, key: key, isWrite: true, node: target, shard: shard, invoke: invoke,
                                               historyIndex: history.count - 1)
                trace("client \(c) write k\(key)=\(opID) to shard \(shard) via node \(target) at \(index)")
            } else {
                try raw.readIndex(requestID: opID)
                clients[c].pending = PendingOp(opID: opID, key: key, isWrite: false, node: target, shard: shard, invoke: invoke)
                trace("client \(c) read k\(key) from shard \(shard) via node \(target) (op \(opID))")
            }
        } catch {
            if case .notLeader(let l) = error { clients[c].leaderHint[shard] = l } else { clients[c].leaderHint[shard] = nil }
            if isWrite { stats.writesRefused += 1 } else { stats.readsFailed += 1 }
            retryLater(c)
            return
        }
        queue.push(.clientTimeout(c, opID: opID), at: now + clientTimeoutMs)
        afterInput(node, r)
    }

    func retryLater(_ c: Int) {
        queue.push(.clientStep(c), at: now + UInt64(rng.int(5...30)))
    }

    func finishOp(_ c: Int) {
        clients[c].pending = nil
        queue.push(.clientStep(c), at: now + UInt64(rng.int(0...8)))
    }

    func completeWrite(_ c: Int, opID: UInt64) {
        guard let p = clients[c].pending, p.opID == opID, let h = p.historyIndex else { return }
        history[h].response = orderSeq
        orderSeq += 1
        stats.writesAcked += 1
        trace("client \(c) write \(opID) acknowledged")
        if phase == .healed {
            phase = .finalReads
            finalReadKeys = (0..<UInt64(options.keys)).map { $0 }
            trace("write committed after healing; final reads")
        }
        finishOp(c)
    }

    /// The write definitely did not take effect.
    func refuseWrite(_ c: Int, opID: UInt64) {
        guard let p = clients[c].pending, p.opID == opID, p.historyIndex != nil else { return }
        refusedOps.insert(opID)
        stats.writesRefused += 1
        finishOp(c)
    }

    func completeRead(_ c: Int, value: UInt64) {
        guard let p = clients[c].pending, !p.isWrite else { return }
        let response = orderSeq
        orderSeq += 1
        history.append(HistoryOp(opID: p.opID, client: c, key: p.key, kind: .read(value: value), invoke: p.invoke, response: response))
        stats.readsServed += 1
        trace("client \(c) read k\(p.key) -> \(value) from shard \(p.shard)")
        if phase == .finalReads && c == 0 && finalReadKeys.first == p.key {
            finalReadKeys.removeFirst()
            if finalReadKeys.isEmpty {
                phase = .settling
                trace("every key read; waiting for moves to finish")
            }
        }
        finishOp(c)
    }

    func completeUnknown(_ c: Int) {
        guard let p = clients[c].pending else { return }
        if p.isWrite { stats.writesUnknown += 1 } else { stats.readsFailed += 1 }
        clients[c].leaderHint[p.shard] = nil
        finishOp(c)
    }

    // MARK: - The controller

    /// The copy leading `shard` in the highest term, if any.
    func leaderCopy(of shard: ShardID) -> (node: SimNode, replica: Replica)? {
        var best: (node: SimNode, replica: Replica)?
        for id in nodes.keys.sorted() {
            guard let n = nodes[id], n.state == .up, let r = n.replicas[shard], let raw = r.raw, raw.role == .leader else { continue }
            if best == nil || raw.term > best!.replica.raw!.term { best = (n, r) }
        }
        return best
    }

    /// On every shard's leader, the next membership step towards the catalog's placement, decided by
    /// the production planner (`MembershipPlan`, as `Controller.reconcile` calls it); and copies the
    /// catalog and the shard no longer count are deleted, as the real controller does.
    func controller() {
        for shard in arcs.keys.sorted() { reconcile(shard) }
        for id in nodes.keys.sorted() {
            guard let node = nodes[id], node.state == .up else { continue }
            for shard in node.replicas.keys.sorted() {
                guard placement[shard]?[id] == nil, let (_, leader) = leaderCopy(of: shard), leader.appliedConf.voters.count > 0,
                      !leader.appliedConf.members.contains(id), let st = leader.raw?.status, !st.config.members.contains(id) else { continue }
                let storage = node.replicas[shard]!.storage
                let lastIndex = storage.lastIndex()
                let last = LastEntry(term: (try? storage.term(at: lastIndex)) ?? 0, index: lastIndex)
                if let earlier = node.tombstones[shard] {
                    // As in production, merged: the newer term and vote, the more up-to-date last entry.
                    node.tombstones[shard] = (storage.hardState.term >= earlier.hardState.term ? storage.hardState : earlier.hardState,
                                              earlier.last.isCovered(byTerm: last.term, index: last.index) ? last : earlier.last)
                } else {
                    node.tombstones[shard] = (storage.hardState, last)
                }
                node.replicas[shard] = nil
                node.retired.insert(shard)
                stats.replicasRetired += 1
                for c in clients.indices where clients[c].pending?.node == id && clients[c].pending?.shard == shard { completeUnknown(c) }
                trace("node \(id) deletes its copy of shard \(shard)")
            }
        }
        if phase == .settling && movingShards.isEmpty {
            phase = .done
            trace("every move finished")
        }
    }

    /// Shards with a copy joining or leaving.
    var movingShards: [ShardID] {
        placement.keys.sorted().filter { placement[$0]!.values.contains { $0 != .active } }
    }

    func reconcile(_ shard: ShardID) {
        guard let (leaderNode, leader) = leaderCopy(of: shard), let raw = leader.raw, let replicas = placement[shard] else { return }
        let st = raw.status
        guard st.configIndex <= st.commit else { return }
        let reachable = Set(st.progress.filter { $0.value.recentActive }.keys).union([leaderNode.id])
        guard let action = MembershipPlan.next(
            leader: leaderNode.id, voters: Set(st.config.voters), learners: Set(st.config.learners), replicas: replicas,
            readReplicas: [], known: Set(nodes.keys), removed: [], match: st.progress.mapValues(\.match), commit: st.commit,
            reachable: reachable, target: Self.replicationFactor,
            mutation: options.mutation == .removeBeforeAdd ? .removeBeforeAdd : nil) else { return }
        switch action {
        case .propose(let change):
            if case .addLearner(let id) = change, let node = nodes[id], node.replicas[shard] == nil { emptyCopy(shard, on: node) }
            do {
                let index = try raw.proposeConfChange(change)
                trace("shard \(shard): leader \(leaderNode.id) proposes \(change) at \(index)")
                afterInput(leaderNode, leader)
            } catch {
                trace("shard \(shard): leader \(leaderNode.id) refused \(change): \(error)")
            }
        case .transferLeadership(let to):
            guard st.leadTransferee == noNode, (try? raw.transferLeadership(to: to)) != nil else { return }
            stats.transfers += 1
            trace("shard \(shard): leader \(leaderNode.id) hands leadership to node \(to)")
            afterInput(leaderNode, leader)
        case .caughtUp(let id):
            placement[shard]![id] = .active
            trace("shard \(shard): node \(id) caught up")
        case .left(let id):
            placement[shard]![id] = nil
            trace("shard \(shard): node \(id) left")
            if !placement[shard]!.values.contains(where: { $0 != .active }) {
                stats.movesFinished += 1
                trace("shard \(shard): move finished")
            }
        }
    }

    func transfer(_ leader: Replica, on node: SimNode, avoiding: NodeID) {
        guard let raw = leader.raw, raw.status.leadTransferee == noNode else { return }
        let others = raw.status.config.voters.filter { $0 != avoiding && nodes[$0]?.state == .up }
        guard !others.isEmpty else { return }
        let target = rng.pick(others)
        if (try? raw.transferLeadership(to: target)) != nil {
            stats.transfers += 1
            trace("shard \(leader.shard): leader \(node.id) hands leadership to node \(target)")
            afterInput(node, leader)
        }
    }

    func startMove() {
        guard movingShards.count < Self.maxConcurrentMoves else { return }
        let candidates = arcs.keys.sorted().filter { s in placement[s]!.values.allSatisfy { $0 == .active } && leaderCopy(of: s) != nil }
        guard !candidates.isEmpty else { return }
        let shard = rng.pick(candidates)
        let held = placement[shard]!.keys.sorted()
        let targets = nodes.keys.sorted().filter { placement[shard]![$0] == nil && nodes[$0]!.replicas[shard] == nil }
        guard !targets.isEmpty else { return }
        // Often back to a node that held the shard before (balancing undone, a drained node refilled):
        // its new copy must not vote as the old one's erased self.
        let former = targets.filter { nodes[$0]!.tombstones[shard] != nil }
        let from = rng.pick(held), to = !former.isEmpty && rng.chance(0.6) ? rng.pick(former) : rng.pick(targets)
        placement[shard]![from] = .leaving
        placement[shard]![to] = .joining
        stats.movesStarted += 1
        trace("move shard \(shard) from node \(from) to node \(to)")
    }

    func proposeSplit() {
        let candidates = arcs.keys.sorted().filter { s in arcs[s]!.hi - arcs[s]!.lo >= 2 && pendingSplits[s].map { now > $0 + 500 } ?? true }
        guard !candidates.isEmpty else { return }
        let shard = rng.pick(candidates)
        guard let (node, leader) = leaderCopy(of: shard), let raw = leader.raw else { return }
        let arc = arcs[shard]!
        let at = arc.lo + (arc.hi - arc.lo) / 2
        let child = nextShard
        do {
            let index = try raw.propose(ShardCommand.split(at: at, child: child).encoded())
            nextShard += 1
            pendingSplits[shard] = now
            stats.splitsProposed += 1
            trace("shard \(shard): leader \(node.id) proposes a split at key \(at) into child \(child) at \(index)")
            afterInput(node, leader)
        } catch {
            trace("shard \(shard): leader \(node.id) refused the split: \(error)")
        }
    }

    // MARK: - Nemesis

    func nemesis() {
        let ids = nodes.keys.sorted()
        switch rng.int(0...99) {
        case 0..<12:
            blocked.removeAll()
            let shuffled = rng.shuffled(ids)
            let cut = rng.int(1...(ids.count - 1))
            let a = Array(shuffled[..<cut]), b = Array(shuffled[cut...])
            for x in a { for y in b { blocked.insert(x << 32 | y); blocked.insert(y << 32 | x) } }
            stats.partitions += 1
            trace("partition \(a.sorted()) | \(b.sorted())")
        case 12..<24:
            blocked.removeAll()
            dropRate = 0
            trace("network healed")
        case 24..<32:
            let up = ids.filter { nodes[$0]!.state == .up }
            // Keep a majority of nodes up: with three copies per shard on four nodes, two down can
            // stop a shard for the whole fault phase, which says nothing about moves or splits.
            guard up.count > options.nodes / 2 + 1 else { break }
            crash(nodes[rng.pick(up)]!)
        case 32..<44:
            let down = ids.filter { nodes[$0]!.state == .crashed }
            guard !down.isEmpty else { break }
            restart(nodes[rng.pick(down)]!)
        case 44..<50:
            let up = ids.filter { nodes[$0]!.state == .up }
            guard !up.isEmpty else { break }
            let node = nodes[rng.pick(up)]!
            if rng.chance(0.5) {
                node.slowDiskUntil = now + UInt64(rng.int(100...600))
                trace("slow disk on node \(node.id)")
            } else {
                let until = now + UInt64(rng.int(50...500))
                node.state = .paused(until: until)
                queue.push(.resume(node.id, epoch: node.epoch), at: until)
                stats.pauses += 1
                trace("pause node \(node.id) until \(until)")
            }
        case 50..<55:
            dropRate = [0.02, 0.1, 0.3][rng.int(0...2)]
            trace("network drops \(dropRate)")
        case 55..<72:
            startMove()
        case 72..<84:
            proposeSplit()
        case 84..<90:
            let shard = rng.pick(arcs.keys.sorted())
            if let (node, leader) = leaderCopy(of: shard) { transfer(leader, on: node, avoiding: node.id) }
        default:
            let up = ids.filter { nodes[$0]!.state == .up }
            guard !up.isEmpty else { break }
            let node = nodes[rng.pick(up)]!
            guard !node.replicas.isEmpty else { break }
            compact(node.replicas[rng.pick(node.replicas.keys.sorted())]!)
        }
    }

    func crash(_ node: SimNode) {
        node.state = .crashed
        node.epoch += 1
        for r in node.replicas.values {
            r.inFlight = nil
            r.raw = nil
            r.readsAwaitingApply = []
            r.proposals = [:]
        }
        for c in clients.indices where clients[c].pending?.node == node.id { completeUnknown(c) }
        stats.crashes += 1
        trace("crash node \(node.id)")
        if rng.chance(0.5) { queue.push(.restart(node.id, epoch: node.epoch), at: now + UInt64(rng.int(1...30))) }
    }

    func restart(_ node: SimNode) {
        node.state = .up
        for shard in node.replicas.keys.sorted() { start(node.replicas[shard]!, on: node) }
        trace("restart node \(node.id)")
        for shard in node.replicas.keys.sorted() { if let r = node.replicas[shard] { afterInput(node, r) } }
    }

    func heal() {
        phase = .healed
        blocked.removeAll()
        dropRate = 0
        trace("HEAL: network healed, every node up")
        for id in nodes.keys.sorted() {
            let node = nodes[id]!
            node.slowDiskUntil = 0
            switch node.state {
            case .crashed: restart(node)
            case .paused:
                node.state = .up
                for shard in node.replicas.keys.sorted() { if let r = node.replicas[shard] { afterInput(node, r) } }
            case .up: break
            }
        }
        queue.push(.deadline, at: now + options.livenessBoundMs)
    }
}

/// Runs many seeds of the sharded simulation and, for a failure, replays it with tracing on.
@_spi(Mutants) public enum ShardedSimRunner {
    public struct Summary: Sendable {
        public var seeds = 0
        public var failures: [ShardedSimResult] = []
        public var stats = ShardedSimStats()

        public init() {}
    }

    public static func options(seed: UInt64, mutation: ShardMutation?) -> ShardedSimOptions {
        var o = ShardedSimOptions()
        o.nodes = 4 + Int(seed % 4)
        o.mutation = mutation
        return o
    }

    public static func run(seed: UInt64, mutation: ShardMutation? = nil, trace: Bool = false) -> ShardedSimResult {
        var o = options(seed: seed, mutation: mutation)
        o.trace = trace
        return ShardedSimulation(seed: seed, options: o).run()
    }

    public static func runSeeds(start: UInt64, count: Int, mutation: ShardMutation? = nil, maxFailures: Int = .max) -> Summary {
        var summary = Summary()
        for i in 0..<count {
            let r = run(seed: start + UInt64(i), mutation: mutation)
            summary.seeds += 1
            summary.stats.add(r.stats)
            if r.violation != nil {
                summary.failures.append(r)
                if summary.failures.count >= maxFailures { break }
            }
        }
        return summary
    }

    public static func report(_ failure: ShardedSimResult, mutation: ShardMutation?, traceLines: Int = 60) -> String {
        let replay = run(seed: failure.seed, mutation: mutation, trace: true)
        var out = "seed \(failure.seed) FAILED: \(failure.violation ?? "?")\n"
        if replay.violation != failure.violation { out += "  (replay differs: \(replay.violation ?? "no violation") - nondeterminism bug)\n" }
        out += "  last events:\n"
        for line in replay.trace.suffix(traceLines) { out += "    \(line)\n" }
        out += "  replay: cairn-sim --sharded --seeds 1 --start \(failure.seed)" + (mutation.map { " --shard-mutant \($0.rawValue)" } ?? "") + " --full-trace\n"
        return out
    }
}
