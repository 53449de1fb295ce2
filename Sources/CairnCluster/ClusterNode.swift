import CairnAuth
import CairnNode
import CairnPlacement
import CairnRaft
import CairnSQLite
import CairnTransport
import Foundation
import NIOConcurrencyHelpers
import NIOHTTP1

public enum ClusterError: Error, CustomStringConvertible {
    case peerRefused(PeerAddress, status: Int, message: String)
    case noMetadataLeader
    case unknownNode(NodeID)
    case unknownDatabase(String)
    case invalid(String)
    case catalogWrite(String)
    case conflict(String)

    public var description: String {
        switch self {
        case .peerRefused(let a, let status, let message): return "node at \(a) answered \(status): \(message)"
        case .noMetadataLeader: return "the cluster has no metadata leader reachable from this node yet; retry shortly"
        case .unknownNode(let id): return "no node \(id) in this cluster"
        case .unknownDatabase(let name): return "no database named \"\(name)\""
        case .invalid(let why): return why
        case .catalogWrite(let why): return "the catalog refused the change: \(why)"
        case .conflict(let why): return why
        }
    }
}

/// Sent by a node that wants to join (and by every member to keep its own entry current).
public struct JoinRequest: Codable, Sendable {
    public var id: NodeID
    public var raftAddress: PeerAddress
    public var httpAddress: PeerAddress
    public var voter: Bool
    /// The joining node's public key (PEM), for the certificate it will present to other nodes.
    public var publicKey: String?
    /// A single-use join token (`JoinTokens`), when the join's credentials are not a user holding `all`.
    public var joinToken: String?

    public init(id: NodeID, raftAddress: PeerAddress, httpAddress: PeerAddress, voter: Bool, publicKey: String? = nil,
                joinToken: String? = nil) {
        self.id = id
        self.raftAddress = raftAddress
        self.httpAddress = httpAddress
        self.voter = voter
        self.publicKey = publicKey
        self.joinToken = joinToken
    }
}

public struct JoinReply: Codable, Sendable {
    /// Every known node, so the newcomer can reach the leader before its own catalog copy catches up.
    public var nodes: [CatalogNode]
    /// The certificate issued for the joining node's key, and the cluster CA's (PEM).
    public var certificate: String?
    public var ca: String?
}

/// What a node tells others asking during `--bootstrap-expect` discovery.
public struct BootstrapInfo: Codable, Sendable {
    public var id: NodeID
    public var raftAddress: PeerAddress
    public var httpAddress: PeerAddress
    public var voter: Bool
    /// Already part of a formed cluster: the asker should join instead of founding one...
    public var member: Bool
    /// ...unless it is among these voters (a fellow founder that was quicker).
    public var founders: [NodeID]?
    /// The node's public key (PEM), for its certificate.
    public var publicKey: String?
    /// From the founder that made the cluster CA: the CA's certificate, and a certificate for each
    /// fellow founder's key, by node id. Certificates are public; each is good only with its key.
    public var ca: String?
    public var certificates: [String: String]?
}

public struct ClusterConfig: Sendable {
    /// Addresses other nodes use to reach this one.
    public var raftAddress: PeerAddress
    public var httpAddress: PeerAddress
    public var voter = true
    /// What this node is called (`--name`; nil: its id), as the catalog records it.
    public var name: String?
    /// Voting copies of each database.
    public var replicationFactor = 3
    /// HTTP addresses of members (to join) or of fellow founders (with `bootstrapExpect`).
    public var join: [PeerAddress] = []
    /// Found a cluster from this many nodes started together (0: do not).
    public var bootstrapExpect = 0
    public var controllerIntervalMillis: Int64 = 200
    /// When a silent node is suspect (no new replicas), and dead (its replicas rebuilt elsewhere).
    public var liveness = LivenessSettings.default
    /// The flags behind two runtime settings (`ClusterSettings`): the snapshot stream's pace, and
    /// the size at which shards split.
    public var snapshotBytesPerSecond = 32 << 20
    public var shardSplitBytes = 512 << 20
    /// A hash-sharded database's shards double while shards × RF / nodes is under this (0: never).
    public var minReplicasPerNode = 10
    /// Splits by load: a shard whose leader serves this many operations a second (0: never) for this
    /// many seconds in a row.
    public var shardSplitOpsPerSecond = 2_500
    public var shardSplitHotSeconds = 30
    /// Replicas joining one node at a time, and moving away from one at a time.
    public var snapshotsInPerNode = 1
    public var snapshotsOutPerNode = 1
    /// The first account's password, when this node founds the cluster (nil: generate and print one).
    public var adminPassword: String?
    /// Sent with the join request (a user holding `join`), before this node can sign its own requests.
    public var joinCredentials: (user: String, password: String)?
    /// A single-use join token an admin minted (instead of, or besides, `joinCredentials`).
    public var joinToken: String?
    /// Where this node keeps its key and certificate for mutual TLS between nodes, when the cluster
    /// makes them (nil: the operator's own `--tls-*` files, or none in tests of the cluster layer).
    public var nodeCredentials: NodeCredentials?

    public init(raftAddress: PeerAddress, httpAddress: PeerAddress) {
        self.raftAddress = raftAddress
        self.httpAddress = httpAddress
    }
}

/// The cluster layer of one node: forms or joins a cluster, keeps the catalog (group 0), and runs the
/// controller that makes every group's actual membership follow the catalog.
///
/// Desired state lives in the catalog; actual state is each group's Raft configuration. The controller
/// on each group's leader closes the gap one single-server change at a time, and the metadata leader
/// decides placement. Every pass starts from what is committed, so a pass cut short by a crash or a
/// leadership change is simply redone by whoever leads next.
public final class ClusterNode: Sendable {
    public let runtime: NodeRuntime
    public let config: ClusterConfig
    public let peers: PeerClient
    let log: @Sendable (String) -> Void
    let state = NIOLockedValueBox(State())
    /// Called once when this node finds it has been removed from the cluster.
    let onRemoved: @Sendable () -> Void
    /// Headers that authenticate this node's own requests to other nodes (empty without auth).
    let credentials: @Sendable () async -> [(String, String)]

    struct State {
        var catalog = Catalog()
        /// The metadata group's log index `catalog` reflects: a slower, older read never replaces it.
        var catalogIndex: LogIndex = 0
        /// Bumped whenever `catalog` is replaced (two reads at one index may still differ).
        var catalogGeneration: UInt64 = 0
        var wasMetadataMember = false
        var removed = false
        /// Addresses learned before this node's catalog copy had them (join reply, discovery).
        var bootstrapPeers: [NodeID: CatalogNode] = [:]
        /// This node's public key, shown to fellow founders.
        var publicKey: String?
        /// On the founder that made the CA: what it issued to fellow founders.
        var issuedCA: String?
        var issued: [String: String] = [:]
        /// When this node started (monotonic): how long it has been able to hear its peers.
        var startedNanos: UInt64? = ClusterNode.monotonicNanos()
        /// Since when this node has been the metadata leader (nil: it is not): it declares no one dead
        /// before it has watched for a whole `deadAfter`.
        var metaLeaderSinceNanos: UInt64?
        /// When this node last asked whether it was removed from a group while away (`removedWhileAway`).
        var awayChecks: [GroupID: UInt64] = [:]
        /// When this node last handed a group's leadership to a less busy node (`balanceLeaders`).
        var lastLeaderHandoffNanos: UInt64 = 0
        /// Since when this node has led each group it leads, in which term, as its leader balancing
        /// first saw (monotonic nanoseconds).
        var leadingSince: [GroupID: (term: UInt64, nanos: UInt64)] = [:]
        /// When this node last asked the catalog for its `--name` (a name another node has is asked
        /// for again now and then: that node may be removed since).
        var lastNameClaimNanos: UInt64?
    }

    public init(runtime: NodeRuntime, config: ClusterConfig, peers: PeerClient,
                log: @escaping @Sendable (String) -> Void,
                credentials: @escaping @Sendable () async -> [(String, String)] = { [] },
                onRemoved: @escaping @Sendable () -> Void) {
        self.runtime = runtime
        self.config = config
        self.peers = peers
        self.log = log
        self.credentials = credentials
        self.onRemoved = onRemoved
    }

    public var nodeID: NodeID { runtime.config.nodeID }
    public var catalog: Catalog { state.withLockedValue { $0.catalog } }
    /// The catalog copy and its generation (which changes whenever the copy is replaced): what is
    /// derived from a copy can be kept while the generation stays.
    public var catalogAndGeneration: (catalog: Catalog, generation: UInt64) { state.withLockedValue { ($0.catalog, $0.catalogGeneration) } }
    public var isRemoved: Bool { state.withLockedValue { $0.removed } }

    var selfEntry: CatalogNode {
        CatalogNode(id: nodeID, raftAddress: config.raftAddress, httpAddress: config.httpAddress, voter: config.voter, removed: false)
    }

    /// Where another node serves HTTP, from the catalog or from what joining taught us.
    public func httpAddress(of node: NodeID) -> PeerAddress? {
        state.withLockedValue { $0.catalog.nodes[node]?.httpAddress ?? $0.bootstrapPeers[node]?.httpAddress }
    }

    // MARK: - Formation

    /// Makes this node a cluster member: resumes (a data directory with the metadata group), founds a
    /// cluster (alone, or with `bootstrapExpect` peers), or joins one through `join`. Returns when the
    /// metadata group exists here; the controller does the rest.
    public func form() async throws {
        _ = try ownPublicKey()
        if try await runtime.groupIDs().contains(metadataGroup) {
            log("node \(nodeID): resuming from the data directory")
            if needsCertificate {
                // A data directory from before the cluster made certificates. A node that is the whole
                // cluster certifies itself with a CA of its own; one with peers cannot: they would not
                // trust it, so it stops, saying so.
                let voters = try await runtime.status(group: metadataGroup).config.voters
                guard voters == [nodeID] else {
                    throw ClusterError.invalid("this node has no certificate in \(config.nodeCredentials!.directory) and its cluster has other nodes (\(voters.sorted())); restore the directory, or give it --tls-cert/--tls-key/--tls-ca, or remove the node and join it again with an empty data directory")
                }
                log("node \(nodeID): no node certificate in the data directory; this node is the whole cluster, so it makes its own CA")
                try becomeCA()
            }
            return
        }
        if config.bootstrapExpect > 1 {
            try await discoverAndFound()
        } else if !config.join.isEmpty {
            try await joinCluster()
        } else {
            log("node \(nodeID): founding a new one-node cluster")
            if needsCertificate { try becomeCA() }
            try await runtime.bootstrapGroup(metadataGroup, voters: [nodeID])
        }
    }

    private func discoverAndFound() async throws {
        log("node \(nodeID): waiting for \(config.bootstrapExpect) nodes to found a cluster (asking \(config.join.map(\.description).joined(separator: ", ")))")
        var attempt = 0
        while true {
            try Task.checkCancellation()
            var found: [NodeID: BootstrapInfo] = [:]
            var founders: [NodeID]?
            var memberSeen = false
            for address in config.join where address != config.httpAddress {
                guard let info = try? await peers.call(.GET, to: address, path: "/v1/cluster/bootstrap", Empty(), as: BootstrapInfo.self,
                                                       timeoutMillis: 2_000) else { continue }
                if info.member {
                    memberSeen = true
                    // A fellow founder was quicker: found with exactly its voters if they include this node.
                    if let v = info.founders, v.contains(nodeID) { founders = v }
                }
                if info.id != nodeID { found[info.id] = info }
            }
            if memberSeen && founders == nil {
                log("node \(nodeID): a cluster already exists without this node; joining it")
                return try await joinCluster()
            }
            let voters = founders ?? (found.values.filter(\.voter).map(\.id) + (config.voter ? [nodeID] : []))
            if founders != nil || (found.count + 1 >= config.bootstrapExpect && voters.count >= 1) {
                if needsCertificate {
                    // The founder with the lowest id makes the CA and certifies the others' keys.
                    let holder = (Array(found.keys) + [nodeID]).min()!
                    if holder == nodeID {
                        if let ca = try becomeCA() { try certifyFounders(Array(found.values), ca: ca) }
                    } else if let info = found.values.first(where: { $0.ca != nil && $0.certificates?[String(nodeID)] != nil }) {
                        // From whichever founder made the CA (another may have, if the founders saw
                        // different sets of each other).
                        try adopt(certificate: info.certificates![String(nodeID)]!, ca: info.ca!)
                    } else if attempt >= 75 && memberSeen {
                        // The cluster formed without certifying this node (it was not seen in time):
                        // it joins like any other node, and gets its certificate that way.
                        log("node \(nodeID): not certified by the founders; joining instead")
                        return try await joinCluster()
                    } else {
                        attempt += 1
                        if attempt % 25 == 1 { log("node \(nodeID): waiting for node \(holder) to certify this node") }
                        try await Task.sleep(for: .milliseconds(200))
                        continue
                    }
                }
                for info in found.values { runtime.transport.setPeer(info.id, address: info.raftAddress) }
                state.withLockedValue { s in
                    for info in found.values {
                        s.bootstrapPeers[info.id] = CatalogNode(id: info.id, raftAddress: info.raftAddress, httpAddress: info.httpAddress,
                                                                voter: info.voter, removed: false)
                    }
                }
                log("node \(nodeID): founding a cluster with voters \(voters.sorted())")
                try await runtime.bootstrapGroup(metadataGroup, voters: voters.sorted())
                return
            }
            attempt += 1
            if attempt % 25 == 1 { log("node \(nodeID): \(found.count + 1) of \(config.bootstrapExpect) nodes found so far") }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    private func joinCluster() async throws {
        log("node \(nodeID): joining through \(config.join.map(\.description).joined(separator: ", "))")
        let request = JoinRequest(id: nodeID, raftAddress: config.raftAddress, httpAddress: config.httpAddress, voter: config.voter,
                                  publicKey: needsCertificate ? try ownPublicKey() : nil, joinToken: config.joinToken)
        var attempt = 0
        while true {
            try Task.checkCancellation()
            for address in config.join where address != config.httpAddress {
                do {
                    var headers: [(String, String)] = []
                    if let c = config.joinCredentials {
                        headers.append(("Authorization", "Basic " + Data("\(c.user):\(c.password)".utf8).base64EncodedString()))
                    }
                    let reply = try await peers.call(.POST, to: address, path: "/v1/cluster/join", request, as: JoinReply.self, headers: headers)
                    if needsCertificate {
                        guard let certificate = reply.certificate, let ca = reply.ca else {
                            throw ClusterError.invalid("the node at \(address) sent no certificate for this node")
                        }
                        try adopt(certificate: certificate, ca: ca)
                    }
                    state.withLockedValue { s in for n in reply.nodes { s.bootstrapPeers[n.id] = n } }
                    for n in reply.nodes where n.id != nodeID && !n.removed { runtime.transport.setPeer(n.id, address: n.raftAddress) }
                    // Empty membership: this node waits to be added by the metadata leader, never campaigns before.
                    try await runtime.bootstrapGroup(metadataGroup, voters: [])
                    log("node \(nodeID): joined; \(reply.nodes.count) nodes known")
                    return
                } catch {
                    attempt += 1
                    if attempt % 10 == 1 { log("node \(nodeID): join through \(address) failed: \(error); retrying") }
                }
            }
            try await Task.sleep(for: .milliseconds(300))
        }
    }

    public func bootstrapInfo() async -> BootstrapInfo {
        let meta = try? await runtime.status(group: metadataGroup)
        // The key may be asked for before formation starts.
        if needsCertificate, state.withLockedValue({ $0.publicKey }) == nil { _ = try? ownPublicKey() }
        let (key, ca, issued) = state.withLockedValue { ($0.publicKey, $0.issuedCA, $0.issued) }
        return BootstrapInfo(id: nodeID, raftAddress: config.raftAddress, httpAddress: config.httpAddress, voter: config.voter,
                             member: meta != nil, founders: meta.map { $0.config.voters.sorted() }, publicKey: key,
                             ca: ca, certificates: issued.isEmpty ? nil : issued)
    }

    // MARK: - Catalog changes (run on the metadata leader; followers forward)

    /// Commits `statements` to the catalog, atomically, through the metadata leader wherever it is
    /// (followers send the statements, never the request that produced them: passwords are already
    /// hashed here). Returns each statement's result.
    @discardableResult
    public func changeCatalog(_ statements: [SQLStatement], hops: Int = 0) async throws -> [StatementResult] {
        do {
            let results = try await runtime.execute(group: metadataGroup, SQLCommand.now(statements, atomic: true))
            if let failed = results.first(where: { $0.error != nil }) { throw ClusterError.catalogWrite(failed.error!) }
            return results
        } catch RuntimeError.notLeader(let leader) where leader != noNode && leader != nodeID {
            guard hops < 3, let address = httpAddress(of: leader) else { throw ClusterError.noMetadataLeader }
            let body = try JSONEncoder.cluster.encode(CatalogChange(statements: statements.map(CatalogChange.Statement.init)))
            let reply = try await peers.send(.POST, to: address, path: "/v1/internal/catalog", body: Array(body),
                                             headers: [(PeerClient.hopsHeader, "\(hops + 1)")] + (await credentials()))
            guard reply.status == 200 else {
                throw ClusterError.peerRefused(address, status: reply.status, message: String(decoding: reply.body, as: UTF8.self))
            }
            return []
        } catch RuntimeError.notLeader {
            throw ClusterError.noMetadataLeader
        }
    }

    /// Registers a joining node. `spendToken`: the join's credentials were a join token, which the same
    /// catalog batch spends (the batch fails, nothing registered, if the token cannot be).
    public func handleJoin(_ request: JoinRequest, hops: Int, spendToken: Bool = false) async throws -> JoinReply {
        guard request.id != noNode else { throw ClusterError.invalid("node id 0 is reserved") }
        if let existing = catalog.nodes[request.id], existing.removed {
            throw ClusterError.invalid("node \(request.id) was removed from this cluster; start it with an empty data directory to join again")
        }
        // A join never takes over a node that is here: its addresses (where forwarded requests go) and
        // its certificate stay its own. The batch's first statement checks it against the committed
        // catalog (JoinGuard), not this node's copy, which may be behind; the same node asking again (a
        // retry after a crash) gives the same addresses and key.
        let entry = CatalogNode(id: request.id, raftAddress: request.raftAddress, httpAddress: request.httpAddress,
                                voter: request.voter, removed: false)
        var certificate: String?, caPEM: String?
        var statements = JoinGuard.check(entry, publicKey: request.publicKey)
        if spendToken {
            guard let token = request.joinToken else { throw ClusterError.invalid("the join carries no join token") }
            statements += JoinTokens.spend(token, node: request.id, nowMillis: Int64(Date().timeIntervalSince1970 * 1000))
        }
        statements += Catalog.register(entry)
        if let key = request.publicKey {
            // A certificate names a node: it is issued once per node and key (again only to the same
            // key, a join retried after a crash), never to another key under a member's id. It is
            // returned only once the batch, and its JoinGuard check, committed.
            guard let ca = caForJoining(catalog) else { throw ClusterError.noMetadataLeader }
            do {
                certificate = try ca.issue(nodeID: request.id, publicKeyPEM: key)
            } catch {
                throw ClusterError.invalid("public_key must be the joining node's P-256 public key in PEM (\(error))")
            }
            caPEM = ca.certificatePEM
            statements += Catalog.setNodeKey(request.id, publicKey: key)
        }
        try await changeCatalog(statements, hops: hops)
        var nodes = catalog.nodes
        nodes[entry.id] = entry
        nodes[nodeID] = nodes[nodeID] ?? selfEntry
        return JoinReply(nodes: nodes.values.sorted { $0.id < $1.id }, certificate: certificate, ca: caPEM)
    }

    public struct RemoveRequest: Codable, Sendable {
        public var id: NodeID
    }

    /// Starts emptying a node: placement moves its replicas to live nodes, one at a time, new copy
    /// first. `cairn node remove` once it holds none.
    public func handleDrain(_ id: NodeID, hops: Int) async throws {
        guard let node = catalog.nodes[id], !node.removed else { throw ClusterError.unknownNode(id) }
        guard node.voter else { throw ClusterError.invalid("node \(id) is a read replica: it holds no placed replicas to drain") }
        try await changeCatalog(Catalog.setNodeState(id, .draining), hops: hops)
    }

    public func handleRemove(_ id: NodeID, hops: Int) async throws {
        guard let node = catalog.nodes[id] else { throw ClusterError.unknownNode(id) }
        if node.removed { return }
        if node.voter && catalog.activeVoters.count <= 1 {
            throw ClusterError.invalid("node \(id) is the last voting node; the cluster cannot remove it")
        }
        try await changeCatalog(Catalog.remove(id), hops: hops)
    }

    // MARK: - The catalog copy

    /// The catalog as of every change committed before this call (one ReadIndex round on the metadata
    /// group), with the groups it gives this node opened. A node looks here before it tells a client
    /// that a database or user does not exist, or refuses a password, token or permission: what a
    /// client changed through one node is then seen at once through every other, not a pass later.
    @discardableResult
    public func refreshCatalog() async throws -> Catalog {
        let (loaded, index) = try await Catalog.load(from: runtime, consistency: .linearizable)
        let catalog = adopt(loaded, at: index)
        if !isRemoved { try await openGroups(of: catalog) }
        return catalog
    }

    /// Keeps the newest copy read so far (a controller pass's read can finish after a refresh's).
    @discardableResult
    func adopt(_ catalog: Catalog, at index: LogIndex) -> Catalog {
        state.withLockedValue { s in
            if index >= s.catalogIndex {
                s.catalog = catalog
                s.catalogIndex = index
                s.catalogGeneration &+= 1
            }
            return s.catalog
        }
    }

    /// Whether `catalog` gives this node a copy of `db` (read replicas hold every database).
    public func holds(_ db: CatalogDatabase, in catalog: Catalog) -> Bool {
        db.replicas.contains(nodeID) || (!config.voter && catalog.nodes[nodeID].map { !$0.removed } == true)
    }

    /// Creates the groups `catalog` gives this node that it does not host yet (creating one twice is harmless).
    public func openGroups(of catalog: Catalog) async throws {
        for db in catalog.databases.values.sorted(by: { $0.group < $1.group }) where !runtime.hosts(db.group) && holds(db, in: catalog) {
            // A newer copy may have dropped it meanwhile (the controller would only retire it again).
            guard self.catalog.databases[db.name]?.group == db.group else { continue }
            // A split's child is made here by the split entry itself while this node holds the parent
            // and has not applied past it; created empty before then, it would wait for a snapshot.
            if runtime.isMakingSplitChild(db.group) { continue }
            if let origin = catalog.splitOrigins[db.name], runtime.hosts(origin.parent),
               origin.index == 0 || (runtime.appliedIndex(of: origin.parent) ?? 0) < origin.index { continue }
            let founders = db.founders.contains(nodeID) ? db.founders : []
            log("node \(nodeID): creating group \(db.group) (database \"\(db.name)\")" + (founders.isEmpty ? ", waiting to be added" : " with founders \(founders)"))
            try await runtime.bootstrapGroup(db.group, voters: founders)
        }
    }
}

struct Empty: Codable, Sendable {}

/// Catalog statements one node sends the metadata leader to commit.
public struct CatalogChange: Codable, Sendable {
    public struct Statement: Codable, Sendable {
        public var sql: String
        public var params: [Value]

        init(_ s: SQLStatement) {
            sql = s.sql
            params = s.positional.map(Value.init)
        }

        public var statement: SQLStatement { SQLStatement(sql, params.map(\.value)) }
    }

    /// An SQL value, tagged (a BLOB survives JSON as base64).
    public struct Value: Codable, Sendable {
        public var integer: Int64?
        public var real: Double?
        public var text: String?
        public var blob: Data?

        init(_ v: SQLValue) {
            switch v {
            case .null: break
            case .integer(let i): integer = i
            case .real(let d): real = d
            case .text(let t): text = t
            case .blob(let b): blob = Data(b)
            }
        }

        var value: SQLValue {
            if let integer { return .integer(integer) }
            if let real { return .real(real) }
            if let text { return .text(text) }
            if let blob { return .blob(Array(blob)) }
            return .null
        }
    }

    public var statements: [Statement]
}

extension JSONEncoder {
    /// snake_case keys, as everywhere in the HTTP API.
    public static var cluster: JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys]
        return e
    }
}

extension JSONDecoder {
    public static var cluster: JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }
}
