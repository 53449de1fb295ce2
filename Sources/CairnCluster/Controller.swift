import CairnAuth
import CairnNode
import CairnPlacement
import CairnRaft
import CairnSQLite
import Dispatch
import Metrics

/// The controller: every node runs passes that make the groups it leads follow the catalog, and the
/// metadata leader's passes decide placement (liveness, re-replication, rebalancing, drains).
///
/// Desired state lives in the catalog; actual state is each group's Raft configuration. Each group's
/// leader closes the gap one single-server change at a time (`MembershipPlan`), and the metadata
/// leader writes the rebalancer's steps (`Rebalancer`). Every pass starts from what is committed, so a
/// pass cut short by a crash or a leadership change is simply redone by whoever leads next.
extension ClusterNode {
    /// Runs controller passes until the task is cancelled.
    public func runController() async {
        while !Task.isCancelled {
            do {
                try await controllerPass()
            } catch is CancellationError {
                return
            } catch RuntimeError.shutDown {
                return
            } catch {
                log("node \(nodeID): controller: \(error)")
            }
            try? await Task.sleep(for: .milliseconds(config.controllerIntervalMillis))
        }
    }

    /// Records this node's `--name` in the catalog once the node is a member there.
    private func claimName(_ catalog: Catalog, meta: NodeRuntime.GroupStatus) async throws {
        guard let name = config.name, catalog.nodes[nodeID]?.removed == false, catalog.nodeNames[nodeID] != name, meta.leader != noNode else { return }
        let now = Self.monotonicNanos()
        let due = state.withLockedValue { s in
            guard s.lastNameClaimNanos.map({ now - $0 >= 10_000_000_000 }) ?? true else { return false }
            s.lastNameClaimNanos = now
            return true
        }
        guard due else { return }
        do {
            _ = try await changeCatalog(Catalog.setNodeName(nodeID, name))
            log("node \(nodeID): named \(name)")
        } catch where "\(error)".contains(Catalog.nameTaken) {
            // Refused here, or by the metadata leader this node forwarded to.
            log("node \(nodeID): cannot take the name \(name): \(Catalog.nameTaken); it goes by its id until that node is removed or renamed")
        }
    }

    func controllerPass() async throws {
        let groups = try await runtime.groupIDs()
        guard groups.contains(metadataGroup), !isRemoved else { return }
        let (catalog, index) = try await Catalog.load(from: runtime)
        adopt(catalog, at: index)
        PlacementMetrics.record(catalog, replicationFactor: config.replicationFactor)
        runtime.setSnapshotBytesPerSecond(catalog.settings(defaults: settingDefaults).snapshotMiBPerSecond << 20)
        for n in catalog.nodes.values where n.id != nodeID {
            if n.removed { runtime.transport.exclude(n.id) } else { runtime.transport.setPeer(n.id, address: n.raftAddress) }
        }
        let meta = try await runtime.status(group: metadataGroup)
        if try await noticeRemoval(catalog: catalog, meta: meta) { return }
        if meta.leader != noNode { try await publishCA(catalog) }

        // Keep this node's own entry current (first registration, or new addresses after a restart).
        if catalog.exists, catalog.nodes[nodeID] != selfEntry, meta.leader != noNode {
            _ = try? await handleJoin(JoinRequest(id: nodeID, raftAddress: config.raftAddress, httpAddress: config.httpAddress,
                                                  voter: config.voter), hops: 0)
        }
        do {
            try await claimName(catalog, meta: meta)
        } catch {
            // Asked again in a while; the rest of the pass does not wait on it.
            log("node \(nodeID): cannot record its name yet: \(error)")
        }
        try await openGroups(of: catalog)
        // Each check below may wait on a peer: a few a pass, so a node back with many stale copies
        // does not hold up its own groups.
        var awayChecks = 0
        for g in groups where g != metadataGroup && catalog.exists && g <= catalog.highestGroup {
            // Dropped, or moved elsewhere and already out of the group's membership: delete this copy.
            let db = catalog.database(group: g)
            let wanted = db.map { $0.replicas.contains(nodeID) || !config.voter } ?? false
            if db == nil {
                try await runtime.retireGroup(g)
            } else if !wanted, let s = try? await runtime.status(group: g) {
                if !s.config.isMember(nodeID), s.applied >= s.configIndex, s.configIndex > 0 {
                    try await runtime.retireGroup(g)
                } else if s.role != .leader, awayChecks < 4 {
                    awayChecks += 1
                    guard try await removedWhileAway(group: g, replicas: db!.replicas, localTerm: s.term),
                          let now = try? await runtime.status(group: g), now.role != .leader, now.term <= s.term,
                          self.catalog.databases[db!.name]?.replicas.contains(nodeID) != true else { continue }
                    log("node \(nodeID): group \(g): its leader's committed membership no longer has this node (removed while it was away); deleting this copy")
                    try await runtime.retireGroup(g)
                }
            }
        }
        for g in try await runtime.groupIDs() { try await reconcile(group: g, catalog: catalog) }
        try await balanceLeaders(catalog: catalog)
        let leading = meta.role == .leader
        state.withLockedValue { s in
            if !leading { s.metaLeaderSinceNanos = nil } else if s.metaLeaderSinceNanos == nil { s.metaLeaderSinceNanos = Self.monotonicNanos() }
        }
        if leading { try await place(catalog: catalog, meta: meta) }
    }

    /// True once this node learns it is no longer a member; it then stops taking part.
    func noticeRemoval(catalog: Catalog, meta: NodeRuntime.GroupStatus) async throws -> Bool {
        let member = meta.config.isMember(nodeID)
        let removed: Bool = state.withLockedValue { s in
            if member { s.wasMetadataMember = true }
            if s.removed { return false }
            if catalog.nodes[nodeID]?.removed == true || (s.wasMetadataMember && !member && meta.applied >= meta.configIndex) {
                s.removed = true
                return true
            }
            return false
        }
        if removed {
            log("node \(nodeID): this node was removed from the cluster; it stops serving")
            onRemoved()
        }
        return removed || isRemoved
    }


    /// Whether the group's leader confirms that this node is out of the group's committed membership.
    /// A node that was down while its copy was forgotten and removed never receives the entry that
    /// removed it (no one sends to a non-member), so its own copy still lists it. It deletes that copy
    /// only on the word of the current leader (one whose term is at least this copy's, with its
    /// membership committed): deleting the state of a copy that still votes could let it vote twice
    /// in a term. Asked at most every 2 s per group.
    func removedWhileAway(group: GroupID, replicas: [NodeID], localTerm: UInt64) async throws -> Bool {
        let now = Self.monotonicNanos()
        let due = state.withLockedValue { s in
            guard now &- (s.awayChecks[group] ?? 0) >= 2_000_000_000 else { return false }
            s.awayChecks[group] = now
            return true
        }
        guard due else { return false }
        for r in replicas where r != nodeID {
            guard let address = httpAddress(of: r),
                  let m = try? await peers.call(.GET, to: address, path: "/v1/internal/membership/\(group)", Empty(), as: GroupMembership.self,
                                                headers: await credentials(), timeoutMillis: 2_000) else { continue }
            // A leader of a term older than this copy's may have been deposed: not its word.
            if m.leader && m.committed && m.term >= localTerm { return !m.voters.contains(nodeID) && !m.learners.contains(nodeID) }
        }
        return false
    }

    /// What this node's copy of `group` says of its membership (`GET /v1/internal/membership/:group`).
    public func membership(of group: GroupID) async throws -> GroupMembership {
        let s = try await runtime.status(group: group)
        return GroupMembership(leader: s.role == .leader, term: s.term, voters: s.config.voters.sorted(), learners: s.config.learners.sorted(),
                               committed: s.configIndex <= s.commit)
    }

    /// On a group's leader: one membership change towards what the catalog wants, or a note to the
    /// catalog that a move advanced.
    private func reconcile(group: GroupID, catalog local: Catalog) async throws {
        // Read now, not with the other groups': the changes before this one took time. A group gone
        // since the pass listed it (dropped, moved away) has nothing to reconcile.
        let status: NodeRuntime.GroupStatus
        do {
            status = try await runtime.status(group: group)
        } catch RuntimeError.unknownGroup {
            return
        }
        guard status.role == .leader, status.configIndex <= status.commit, local.exists else { return }
        guard var action = plan(group: group, status: status, catalog: local) else { return }
        if case .propose(.removeNode(let v)) = action, status.config.isVoter(v) {
            // This node's copy of the catalog may trail (it may have just become the group's
            // leader): a voter is removed only if the committed catalog agrees, or a move that
            // finished could be undone by an old copy that still lists the copy it replaced.
            let (committed, _) = try await Catalog.load(from: runtime, consistency: .linearizable)
            guard let again = plan(group: group, status: status, catalog: committed) else { return }
            action = again
        }
        do {
            switch action {
            case .propose(let change): try await runtime.proposeConfChange(group: group, change)
            case .transferLeadership(let to): try await runtime.transferLeadership(group: group, to: to)
            case .caughtUp(let n): try await changeCatalog(Catalog.replicaCaughtUp(group: group, node: n))
            case .left(let n): try await changeCatalog(Catalog.replicaLeft(group: group, node: n))
            }
            log("node \(nodeID): group \(group): \(action)")
        } catch {
            log("node \(nodeID): group \(group): could not \(action): \(error)")
        }
    }

    private func plan(group: GroupID, status: NodeRuntime.GroupStatus, catalog: Catalog) -> MembershipAction? {
        let active = Set(catalog.activeVoters.map(\.id))
        let replicas: [NodeID: ReplicaState]
        if group == metadataGroup {
            replicas = Dictionary(uniqueKeysWithValues: active.map { ($0, .active) })
        } else {
            guard let db = catalog.database(group: group) else { return nil }
            replicas = db.replicaStates.filter { active.contains($0.key) }
        }
        return MembershipPlan.next(
            leader: nodeID, voters: Set(status.config.voters), learners: Set(status.config.learners), replicas: replicas,
            readReplicas: Set(catalog.readReplicas.map(\.id)), known: Set(catalog.activeNodes.map(\.id)),
            removed: Set(catalog.nodes.values.filter(\.removed).map(\.id)), match: status.matchIndex, commit: status.commit,
            reachable: status.recentlyActive.union([nodeID]),
            target: min(replicationFactor(catalog), active.count { catalog.nodeStates[$0] != .dead }))
    }

    /// The cluster's replication factor: the founder's, kept in the catalog, so that every node plans
    /// with the same one whatever its own flag says.
    func replicationFactor(_ catalog: Catalog) -> Int { catalog.replicationFactor ?? config.replicationFactor }

    static func monotonicNanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// How long this node must have led a group before it hands the group on.
    static let leaderSettleNanos: UInt64 = 10_000_000_000

    /// Carries out this node's part of the leader plan (`LeaderBalance.links`), at most one
    /// transfer every 2 s so that the leaders the pings list catch up between rounds. Every node
    /// plans from the same picture: each group's leader as the pings list them (nodes whose list is
    /// not known are left out) and each group's active copies on live nodes. The link this node is
    /// given is checked against its own view as the group's leader: leadership held here for
    /// `leaderSettleNanos` in this term, no membership change pending, the heir heard from and
    /// nearly caught up (Raft's transfer brings it the rest before it hands over). Where the planned
    /// group fails that, another group this node leads that the same heir may take makes the same
    /// link (the counts change alike). Never the catalog's group (its leader's observation clock
    /// decides who is dead).
    func balanceLeaders(catalog: Catalog) async throws {
        guard catalog.exists else { return }
        let now = Self.monotonicNanos()
        guard state.withLockedValue({ now &- $0.lastLeaderHandoffNanos >= 2_000_000_000 }) else { return }
        let states = try await nodeStates(in: catalog)
        let live = Set(states.filter { $0.value == .live }.keys)
        guard live.contains(nodeID) else { return }
        let picture = try await runtime.leaderPicture()
        var heirs: [GroupID: Set<NodeID>] = [:]
        for db in catalog.databases.values where db.moving.isEmpty && db.group != metadataGroup {
            heirs[db.group] = Set(db.replicas.filter(live.contains))
        }
        let links = LeaderBalance.links(leaders: picture.leaders, heirs: heirs, nodes: live.intersection(picture.known))
        let mine = links.first { $0.from == nodeID }
        // When this node began leading each group it leads, in which term (as first seen by a round).
        let ledHere = picture.leaders.filter { $0.value == nodeID }.keys.sorted()
        var since = state.withLockedValue { $0.leadingSince }.filter { picture.leaders[$0.key] == nodeID }
        var made: (group: GroupID, to: NodeID)?
        for g in ledHere {
            guard let s = try? await runtime.status(group: g), s.role == .leader else { continue }
            if since[g]?.term != s.term { since[g] = (s.term, now) }
            guard made == nil, let link = mine, g == link.group || heirs[g]?.contains(link.to) == true else { continue }
            let ready = now &- since[g]!.nanos >= Self.leaderSettleNanos && s.configIndex <= s.commit && s.config.voters.contains(link.to)
                && s.recentlyActive.contains(link.to) && (s.matchIndex[link.to] ?? 0) + Self.transferLagEntries >= s.commit
            if ready { made = (g, link.to) }
        }
        state.withLockedValue { $0.leadingSince = since }
        guard let made else { return }
        state.withLockedValue { $0.lastLeaderHandoffNanos = now }
        do {
            try await runtime.transferLeadership(group: made.group, to: made.to)
            log("node \(nodeID): group \(made.group): leadership handed to node \(made.to) (a link of the leader plan, one of \(links.count) this round)")
        } catch {
            log("node \(nodeID): group \(made.group): could not hand leadership to node \(made.to): \(error)")
        }
    }

    /// How far behind the commit index an heir may be when a leader hands it leadership: Raft sends
    /// it the rest first, and refuses writes meanwhile, so only a heir this close keeps that short.
    static let transferLagEntries: LogIndex = 256

    /// The limits placement works within, from this node's settings.
    public var placementLimits: PlacementLimits {
        PlacementLimits(replicationFactor: config.replicationFactor, snapshotsInPerNode: config.snapshotsInPerNode,
                        snapshotsOutPerNode: config.snapshotsOutPerNode)
    }

    /// Each voting node's state as this node sees it: the catalog's record (dead, draining), and this
    /// node's own silence clock. With `declaring` (the metadata leader) a node silent past
    /// `deadAfter` is dead, once this node has led for as long; otherwise it shows as suspect until
    /// the metadata leader records it. A node that is not yet a voter of the catalog group gets no
    /// new replicas.
    public func nodeStates(in catalog: Catalog, metaVoters: Set<NodeID>? = nil, declaring: Bool = false,
                           readReplicas: Bool = false) async throws -> [NodeID: NodeState] {
        let silence = try await runtime.silenceNanos()
        let now = Self.monotonicNanos()
        let since = state.withLockedValue { declaring ? $0.metaLeaderSinceNanos : $0.startedNanos } ?? now
        var out: [NodeID: NodeState] = [:]
        for n in readReplicas ? catalog.activeNodes : catalog.activeVoters {
            let recorded = catalog.nodeStates[n.id] ?? .live
            var s = Liveness.state(silentNanos: n.id == nodeID ? 0 : silence[n.id], observedNanos: now &- since, recorded: recorded,
                                   settings: catalog.settings(defaults: settingDefaults).liveness)
            if s == .dead && recorded != .dead && !declaring { s = .suspect }
            if s == .live, let metaVoters, !metaVoters.contains(n.id) { s = .suspect }
            out[n.id] = s
        }
        return out
    }

    /// Founders for `groups` new groups: the least-loaded live voters.
    public func founders(groups: Int, in catalog: Catalog) async throws -> [[NodeID]] {
        let states = try await nodeStates(in: catalog)
        var load: [NodeID: Int] = [:]
        for (id, s) in states where s == .live { load[id] = 0 }
        for db in catalog.databases.values { for r in db.replicas where load[r] != nil { load[r]! += 1 } }
        return Placement.founders(groups: groups, replicationFactor: replicationFactor(catalog), load: load)
    }

    /// On the metadata leader: the catalog's schema, the default database, then liveness and the
    /// rebalancer's next steps, as one catalog batch.
    private func place(catalog stale: Catalog, meta: NodeRuntime.GroupStatus) async throws {
        if !stale.exists {
            let password = config.adminPassword ?? PasswordHash.generate()
            let statements = Catalog.schema + Catalog.register(selfEntry)
                + Catalog.foundAuth(adminPasswordHash: try PasswordHash.make(password), tokenKey: PasswordHash.randomKey())
                + Catalog.setReplicationFactor(config.replicationFactor)
            if config.adminPassword == nil {
                // Printed once, by the node that founds the cluster; it is stored only as a hash.
                log("node \(nodeID): created user admin with the generated password \(password) (shown only now; change it with cairn user passwd admin)")
            }
            try await changeCatalog(statements)
            return
        }
        if stale.databases[defaultDatabase] == nil {
            // Wait until the founding voters have registered, so the default database starts fully replicated.
            let voters = stale.activeVoters.filter { meta.config.isVoter($0.id) }.map(\.id)
            let target = min(config.replicationFactor, voters.count)
            if target > 0 && target >= min(config.replicationFactor, meta.config.voters.count) {
                let founders = Array(([nodeID].filter(voters.contains) + voters.filter { $0 != nodeID }).prefix(target)).sorted()
                try await changeCatalog(Catalog.createDatabase(defaultDatabase, founders: founders))
            }
            return
        }
        // Planned on the committed catalog (a lease read here, on its leader): a step planned on a
        // copy that missed the last batch could start a second move of one group.
        let (catalog, _) = try await Catalog.load(from: runtime, consistency: .linearizable)
        let states = try await nodeStates(in: catalog, metaVoters: Set(meta.config.voters), declaring: true)
        var statements: [SQLStatement] = []
        for (id, s) in states.sorted(by: { $0.key < $1.key }) {
            let recorded = catalog.nodeStates[id]
            if s == .dead && recorded != .dead && recorded != .draining {
                // (A draining node stays recorded as draining: placement treats it as dead while
                // it is silent, and the drain goes on when it is back.)
                log("node \(nodeID): node \(id) has been silent past --dead-after: declared dead; its replicas are rebuilt elsewhere")
                statements += Catalog.setNodeState(id, .dead)
            } else if s != .dead && recorded == .dead {
                log("node \(nodeID): node \(id), declared dead, is heard from again: live")
                statements += Catalog.setNodeState(id, nil)
            }
        }
        // A split's reserved child has no copies yet (the split entry makes them where its parent is):
        // nothing to place until the split is recorded.
        let groups = catalog.databases.values.filter { catalog.splitOrigins[$0.name]?.index != 0 }
            .map { PlacementGroup(id: $0.group, replicas: $0.replicaStates, pinned: catalog.pins[$0.name] ?? []) }
        if catalog.replicationFactor == nil { statements += Catalog.setReplicationFactor(config.replicationFactor) }
        var limits = placementLimits
        limits.replicationFactor = replicationFactor(catalog)
        let steps = Rebalancer.plan(nodes: states, groups: groups, limits: limits)
        for step in steps { log("node \(nodeID): placement: \(step)") }
        statements += Catalog.apply(steps)
        guard !statements.isEmpty else { return }
        try await changeCatalog(statements)
    }
}

/// Placement as this node's catalog copy shows it.
enum PlacementMetrics {
    static let movesInFlight = Gauge(label: "cairn_placement_moves_in_flight")
    static let underReplicated = Gauge(label: "cairn_placement_under_replicated_groups")
    static let deadNodes = Gauge(label: "cairn_placement_dead_nodes")

    static func record(_ catalog: Catalog, replicationFactor fallback: Int) {
        let replicationFactor = catalog.replicationFactor ?? fallback
        let holders = Set(catalog.activeVoters.map(\.id)).filter { catalog.nodeStates[$0] != .dead }
        let target = min(replicationFactor, holders.count)
        movesInFlight.record(catalog.databases.values.count { $0.moving.values.contains(.leaving) })
        underReplicated.record(catalog.databases.values.count { db in
            db.replicaStates.count { holders.contains($0.key) && $0.value != .joining } < target
        })
        deadNodes.record(catalog.nodeStates.values.count { $0 == .dead })
    }
}

/// A copy's view of its group's membership; from the group's leader, with `committed`, the truth.
public struct GroupMembership: Codable, Sendable {
    public var leader: Bool
    public var term: UInt64
    public var voters: [NodeID]
    public var learners: [NodeID]
    /// The newest membership entry is committed.
    public var committed: Bool
}
