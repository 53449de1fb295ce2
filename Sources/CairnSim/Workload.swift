@_spi(Mutants) import CairnRaft

/// Clients and the nemesis: what happens to the cluster during a run.
extension Simulation {
    // MARK: - Clients


    func clientStep(_ c: Int) {
        guard clients[c].pending == nil, phase != .done else { return }
        let isWrite: Bool
        let key: UInt64
        switch phase {
        case .faults, .healed:
            // The last client only reads (a dashboard): it is never stuck behind a write to a cut-off
            // leader, so it keeps asking an old leader while a new one commits, which is when a read
            // lease that outlives its promise shows.
            isWrite = rng.chance(0.55) && now >= writesQuietUntil
            key = UInt64(rng.int(0...(options.keys - 1)))
        case .finalReads:
            // One client reads every key once the cluster is healthy again: a lost write cannot hide.
            guard c == 0, let k = finalReadKeys.first else { return }
            isWrite = false
            key = k
        case .done:
            return
        }
        let target: NodeID
        if clients[c].leaderHint != noNode && rng.chance(0.75) {
            target = clients[c].leaderHint
        } else if let leader = currentLeader, let members = leader.raw?.status.config.members, !members.isEmpty {
            // Like a client library that refreshes its node list from the cluster.
            target = rng.pick(members)
        } else {
            target = rng.pick(nodes.keys.sorted())
        }
        let opID = nextOpID
        nextOpID += 1
        let invoke = orderSeq
        orderSeq += 1
        guard let node = nodes[target], node.state == .up, let raw = node.raw else {
            clients[c].leaderHint = noNode
            retryLater(c)
            return
        }
        do throws(RaftError) {
            if isWrite {
                let index = try raw.propose(KVCommand(opID: opID, key: key).encoded())
                node.proposals[index] = (opID, c)
                history.append(HistoryOp(opID: opID, client: c, key: key, kind: .write(value: opID), invoke: invoke))
                clients[c].pending = PendingOp(opID: opID, key: key, isWrite: true, node: target, invoke: invoke,
                                               historyIndex: history.count - 1)
                trace("client \(c) write k\(key)=\(opID) via node \(target) at index \(index)")
            } else if rng.chance(0.5), let lease = validLease(node) {
                // Served on the leader's lease: no round of its own, only the wait to apply that far.
                let index = lease.index
                checkLeaseRead(node, lease)
                clients[c].pending = PendingOp(opID: opID, key: key, isWrite: false, node: target, invoke: invoke)
                stats.leaseReads += 1
                trace("client \(c) read k\(key) via node \(target) on its lease at \(index) (op \(opID))")
                node.readsAwaitingApply.append(ReadState(index: index, requestID: opID))
                serveReads(node)
                strikeLease(node)
                if clients[c].pending == nil { return }
            } else {
                try raw.readIndex(requestID: opID)
                clients[c].pending = PendingOp(opID: opID, key: key, isWrite: false, node: target, invoke: invoke)
                trace("client \(c) read k\(key) via node \(target) (op \(opID))")
            }
        } catch {
            if case .notLeader(let l) = error { clients[c].leaderHint = l } else { clients[c].leaderHint = noNode }
            if isWrite { stats.writesRefused += 1 } else { stats.readsFailed += 1 }
            retryLater(c)
            return
        }
        queue.push(.clientTimeout(c, opID: opID), at: now + clientTimeoutMs)
        afterInput(node)
    }

    private func retryLater(_ c: Int) {
        queue.push(.clientStep(c), at: now + UInt64(rng.int(5...30)))
    }

    private func finishOp(_ c: Int) {
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
            // Liveness shown: a write committed after healing. Now read every key.
            phase = .finalReads
            finalReadKeys = (0..<UInt64(options.keys)).map { $0 }
            trace("write committed after healing; final reads")
        }
        finishOp(c)
    }

    /// The write definitely did not take effect.
    func refuseWrite(_ c: Int, opID: UInt64) {
        guard let p = clients[c].pending, p.opID == opID, let h = p.historyIndex else { return }
        refusedOps.insert(history[h].opID)
        stats.writesRefused += 1
        finishOp(c)
    }

    func completeRead(_ c: Int, value: UInt64) {
        guard let p = clients[c].pending, !p.isWrite else { return }
        let response = orderSeq
        orderSeq += 1
        history.append(HistoryOp(opID: p.opID, client: c, key: p.key, kind: .read(value: value), invoke: p.invoke,
                                 response: response))
        stats.readsServed += 1
        trace("client \(c) read k\(p.key) -> \(value)")
        if phase == .finalReads && c == 0 && finalReadKeys.first == p.key {
            finalReadKeys.removeFirst()
            if finalReadKeys.isEmpty { phase = .done }
        }
        finishOp(c)
    }

    /// Timeout or crash: a write's outcome is unknown (it stays in the history, open-ended); a read is dropped.
    func completeUnknown(_ c: Int) {
        guard let p = clients[c].pending else { return }
        if p.isWrite { stats.writesUnknown += 1 } else { stats.readsFailed += 1 }
        trace("client \(c) op \(p.opID) timed out")
        clients[c].leaderHint = noNode
        finishOp(c)
    }

    // MARK: - Nemesis

    var currentLeader: Node? {
        var best: Node?
        for id in nodes.keys.sorted() {
            guard let n = nodes[id], n.state == .up, let raw = n.raw, raw.role == .leader else { continue }
            if best == nil || raw.term > best!.raw!.term { best = n }
        }
        return best
    }

    func nemesis() {
        let ids = nodes.keys.sorted()
        switch rng.int(0...99) {
        case 0..<14: // symmetric partition into two sides
            blocked.removeAll()
            let shuffled = rng.shuffled(ids)
            let cut = rng.int(1...(ids.count - 1))
            let a = Array(shuffled[..<cut]), b = Array(shuffled[cut...])
            for x in a { for y in b { blocked.insert(x << 32 | y); blocked.insert(y << 32 | x) } }
            stats.partitions += 1
            trace("partition \(a) | \(b)")
        case 14..<19: // one-way: some links lose messages in one direction only
            blocked.removeAll()
            for _ in 0..<rng.int(1...3) {
                let x = rng.pick(ids), y = rng.pick(ids)
                if x != y { blocked.insert(x << 32 | y) }
            }
            stats.partitions += 1
            trace("one-way partition \(blocked.sorted().map { "\($0 >> 32)->\($0 & 0xffff_ffff)" })")
        case 19..<24: // bridge: two sides that only one node can talk to
            blocked.removeAll()
            let shuffled = rng.shuffled(ids)
            guard shuffled.count >= 3 else { break }
            let bridge = shuffled[0]
            let rest = Array(shuffled[1...])
            let cut = rng.int(1...(rest.count - 1))
            let a = Array(rest[..<cut]), b = Array(rest[cut...])
            for x in a { for y in b { blocked.insert(x << 32 | y); blocked.insert(y << 32 | x) } }
            stats.partitions += 1
            trace("bridge via \(bridge): \(a) | \(b)")
        case 24..<38: // heal the network
            blocked.removeAll()
            dropRate = 0
            duplicateRate = 0
            delaySpikes = false
            trace("network healed")
        case 38..<48: // crash a node: often the leader, or one caught in the middle of a sync
            let up = ids.filter { nodes[$0]!.state == .up }
            guard !up.isEmpty else { break }
            let syncing = up.filter { nodes[$0]!.inFlight != nil }
            let roll = rng.int(0...9)
            if roll < 4, let leader = currentLeader {
                crash(leader)
            } else if roll < 7, !syncing.isEmpty {
                crash(nodes[rng.pick(syncing)]!)
            } else {
                crash(nodes[rng.pick(up)]!)
            }
        case 48..<62: // restart a crashed node
            let down = ids.filter { nodes[$0]!.state == .crashed }
            guard !down.isEmpty else { break }
            restart(nodes[rng.pick(down)]!)
        case 62..<68: // pause (a stop-the-world stall or SIGSTOP), or a disk whose syncs stall
            let up = ids.filter { nodes[$0]!.state == .up }
            guard !up.isEmpty else { break }
            let node = rng.chance(0.5) ? (currentLeader ?? nodes[rng.pick(up)]!) : nodes[rng.pick(up)]!
            if rng.chance(0.5) {
                let until = now + UInt64(rng.int(100...800))
                // Sometimes the whole storage array stalls, not just one disk.
                let stalled = rng.chance(0.3) ? up.map { nodes[$0]! } : [node]
                for n in stalled { n.slowDiskUntil = until }
                stats.slowDisks += 1
                trace("slow disk on \(stalled.map(\.id)) until \(until)")
                break
            }
            let until = now + UInt64(rng.int(50...600))
            node.state = .paused(until: until)
            queue.push(.resume(node.id, epoch: node.epoch), at: until)
            stats.pauses += 1
            trace("pause node \(node.id) until \(until)")
        case 68..<74: // lossy, duplicating, slow network
            dropRate = [0.02, 0.1, 0.3][rng.int(0...2)]
            duplicateRate = [0, 0.05, 0.2][rng.int(0...2)]
            delaySpikes = rng.chance(0.6)
            stats.lossyPeriods += 1
            trace("network: drop \(dropRate) duplicate \(duplicateRate) spikes \(delaySpikes)")
        case 74..<86:
            changeMembership()
        case 86..<92:
            guard let leader = currentLeader, let raw = leader.raw else { break }
            let others = raw.status.config.voters.filter { $0 != leader.id }
            guard !others.isEmpty else { break }
            let target = rng.pick(others)
            if (try? raw.transferLeadership(to: target)) != nil {
                stats.transfers += 1
                trace("leader \(leader.id) transfers leadership to \(target)")
                if profile == .leaderHunting && rng.chance(0.3) {
                    // The target's election is forced past leases; if its vote request never reaches
                    // the old leader, that leader learns of its successor late, from someone else.
                    blocked.insert(target << 32 | leader.id)
                    trace("one-way partition \(target)->\(leader.id)")
                }
                afterInput(leader)
            }
        default:
            let up = ids.filter { nodes[$0]!.state == .up }
            guard !up.isEmpty else { break }
            compact(nodes[rng.pick(up)]!)
        }
    }

    /// Jepsen's "partition the leader" and FoundationDB-style fault injection: strike a leader at the
    /// moment it was elected or committed, before its next messages leave. Random faults alone almost never
    /// line up the interleavings of the paper's Figure 8.
    func targetedFault(_ node: Node, chance: Double, moment: String) {
        guard phase == .faults, rng.chance(chance) else { return }
        if rng.chance(profile == .leaderHunting ? 0.8 : 0.5) {
            blocked.removeAll()
            for other in nodes.keys.sorted() where other != node.id {
                blocked.insert(node.id << 32 | other)
                blocked.insert(other << 32 | node.id)
            }
            stats.partitions += 1
            trace("isolate node \(node.id): it \(moment)")
        } else {
            trace("node \(node.id) \(moment): crash it")
            crash(node)
        }
    }

    /// The attack a read lease must survive: a follower that acknowledged the leader restarts, forgets
    /// it did, and at once helps elect a node that has not heard from the leader for a while.
    /// 0: writes go quiet, so that the candidate-to-be will not fall behind; 1: it is cut off from the
    /// leader; 2: about an election timeout later, the follower crashes, restarts at once, and is cut
    /// off from the leader too. A restarted node that votes at once elects the candidate while the
    /// leader's lease, which counted on the follower, still runs.
    func strikeLease(_ leader: Node) {
        guard profile == .leaderHunting, phase == .faults, let raw = leader.raw, rng.chance(0.005) else { return }
        let others = raw.status.config.voters.filter { $0 != leader.id && nodes[$0]?.state == .up }
        guard others.count >= 2 else { return }
        let follower = rng.pick(others)
        let candidate = rng.pick(others.filter { $0 != follower })
        writesQuietUntil = now + 500
        trace("strike the lease of node \(leader.id): writes go quiet, node \(candidate) will be cut off from it, then node \(follower) restarted")
        queue.push(.strikeLease(step: 1, leader: leader.id, follower: follower, candidate: candidate), at: now + 20)
    }

    func strikeLease(step: Int, leader: NodeID, follower: NodeID, candidate: NodeID) {
        guard phase == .faults else { return }
        if step == 1 {
            blocked.removeAll()
            blocked.insert(leader << 32 | candidate)
            blocked.insert(candidate << 32 | leader)
            stats.partitions += 1
            trace("strike: cut node \(candidate) off from node \(leader)")
            queue.push(.strikeLease(step: 2, leader: leader, follower: follower, candidate: candidate), at: now + UInt64(rng.int(60...160)))
            return
        }
        guard let f = nodes[follower], f.state == .up else { return }
        blocked.insert(leader << 32 | follower)
        blocked.insert(follower << 32 | leader)
        trace("strike: restart node \(follower), cut off from node \(leader)")
        crash(f)
        if f.state == .crashed { restart(f) }
    }

    func changeMembership() {
        guard let leader = currentLeader, let raw = leader.raw else { return }
        let conf = raw.status.config
        var choices: [ConfChange] = []
        if conf.members.count < Self.maxMembers, let fresh = (1...Self.maxNodeID).first(where: { nodes[$0] == nil }) {
            choices.append(.addLearner(fresh))
        }
        for l in conf.learners { choices.append(.promoteLearner(l)) }
        if conf.voters.count > 3 || (conf.voters.count > 2 && rng.chance(0.3)) { choices.append(.removeNode(rng.pick(conf.voters))) }
        if !conf.learners.isEmpty { choices.append(.removeNode(rng.pick(conf.learners))) }
        if conf.voters.count > 3 { choices.append(.addLearner(rng.pick(conf.voters))) }
        guard !choices.isEmpty else { return }
        let change = rng.pick(choices)
        do {
            let index = try raw.proposeConfChange(change)
            stats.confChangesProposed += 1
            trace("leader \(leader.id) proposes \(change) at \(index)")
            if case .addLearner(let id) = change, nodes[id] == nil {
                // A brand-new, empty node: it learns the membership from the leader's log or a snapshot.
                let node = Node(id: id, storage: MemoryStorage())
                nodes[id] = node
                start(node)
                queue.push(.tick(id), at: now + UInt64(rng.int(1...Int(Self.tickMs))))
            }
            afterInput(leader)
        } catch {
            trace("leader \(leader.id) refused \(change): \(error)")
        }
    }

    func crash(_ node: Node) {
        node.state = .crashed
        node.epoch += 1
        // Everything written but not synced is gone, and so is all volatile state.
        node.inFlight = nil
        node.raw = nil
        node.readsAwaitingApply = []
        node.proposals = [:]
        for c in clients.indices where clients[c].pending?.node == node.id { completeUnknown(c) }
        stats.crashes += 1
        trace("crash node \(node.id)")
        if rng.chance(0.5) {
            // A supervisor restarts the process almost at once: the quickest way to meet a node's old self.
            queue.push(.restart(node.id, epoch: node.epoch), at: now + UInt64(rng.int(1...30)))
        }
    }

    func restart(_ node: Node) {
        node.state = .up
        start(node)
        stats.restarts += 1
        trace("restart node \(node.id) (durable log \(node.storage.firstIndex())...\(node.storage.lastIndex()), term \(node.storage.hardState.term))")
        afterInput(node)
    }

    /// The application snapshots its state machine at the applied index and drops the log before it.
    func compact(_ node: Node) {
        let snapIndex = node.applied
        guard snapIndex > node.storage.snapshotValue.metadata.index, snapIndex <= node.storage.lastIndex(),
              snapIndex >= node.storage.firstIndex() else { return }
        node.storage.createSnapshot(at: snapIndex, confState: node.appliedConf, data: KVSnapshot.encode(node.kv))
        let keep = LogIndex(rng.int(0...3))
        node.storage.compact(upTo: snapIndex > keep ? snapIndex - keep : snapIndex)
        stats.compactions += 1
        trace("node \(node.id) compacts through \(snapIndex)")
    }

    func heal() {
        phase = .healed
        healedAt = now
        blocked.removeAll()
        dropRate = 0
        duplicateRate = 0
        delaySpikes = false
        trace("HEAL: network healed, all nodes restarted")
        for id in nodes.keys.sorted() {
            let node = nodes[id]!
            node.slowDiskUntil = 0
            switch node.state {
            case .crashed: restart(node)
            case .paused:
                node.state = .up
                afterInput(node)
            case .up: break
            }
        }
        queue.push(.deadline, at: now + options.livenessBoundMs)
    }
}
