import CairnCluster
import CairnPlacement
import CairnNode
import CairnRaft
import CairnSQLite
import CairnTransport
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

public struct ServerOptions: Sendable {
    public var dataDirectory: String
    public var httpAddress: PeerAddress
    public var raftAddress: PeerAddress
    /// What other nodes are told to use, when it differs from the listening address (0.0.0.0, NAT).
    public var advertisedHTTPAddress: PeerAddress?
    public var advertisedRaftAddress: PeerAddress?
    public var join: [PeerAddress] = []
    public var bootstrapExpect = 0
    public var voter = true
    /// What the node is called (`--name`; nil: its id).
    public var name: String?
    /// The older systems' APIs this node serves, each on its own listener (`--compat API=HOST:PORT`).
    public var compat: [CompatListener] = []
    /// Whom those APIs act as when auth is on (the originals had no credentials of their own).
    public var compatUser: String?
    /// Supervised local mode (`cairn demo`): where to ask for servers shard-lb's `/add` names that have
    /// not joined, and the supervisor's secret (`LocalSupervisor`).
    public var supervisor: (address: PeerAddress, token: String)?
    public var replicationFactor = 3
    /// When a silent node is suspect (gets no new replicas) and dead (its replicas are rebuilt elsewhere).
    public var liveness = LivenessSettings.default
    /// The most one snapshot stream sends per second.
    public var snapshotBytesPerSecond = 32 << 20
    /// A shard whose database passes this many bytes is split (0: never by size).
    public var shardSplitBytes = 512 << 20
    public var minReplicasPerNode = 10
    /// A shard whose leader serves this many operations a second for `shardSplitHotSeconds` splits (0: never by load).
    public var shardSplitOpsPerSecond = 2_500
    public var shardSplitHotSeconds = 30
    /// Serves `PUT /v1/debug/faults` (partitions, drops, delays between this node and others): for tests.
    public var enableFaultInjection = false
    public var maxBodyBytes = 16 << 20
    public var maxStatementsPerRequest = 10_000
    /// JSON values one request body may hold: parsed, each takes 24 bytes whatever its size in the text
    /// (a 16 MiB body of `1,1,...` is 8 million of them). Beyond it: 413.
    public var maxRequestValues = 1_000_000
    /// Largest SQLite file a load accepts: it is streamed to disk, never held in memory.
    public var maxLoadBytes = 1 << 30
    /// A query statement running longer is interrupted (unless its request gives its own timeout).
    public var readTimeoutMillis: Int64 = 10_000
    /// How often leaders compare their replicas' digests (0: only on demand).
    public var consistencyCheckMillis: Int64 = 600_000
    public var tickMillis: Int64 = 50
    public var electionTimeoutTicks = 10
    public var requestTimeoutMillis: Int64 = 10_000
    public var snapshotEveryEntries: LogIndex = 10_000
    /// PEM files for mutual TLS between nodes: this node's certificate, its key, and the cluster CA.
    public var tls: (certificate: String, key: String, ca: String)?
    /// No authentication or permission checks at all (`--insecure-dev`, `cairn demo`).
    public var insecureDev = false
    /// The `admin` password if this node founds the cluster (nil: generate one and print it once).
    public var adminPassword: String?
    /// Serve the HTTP API over TLS (`--http-tls-cert`, `--http-tls-key`); `ca`: what other nodes'
    /// certificates are checked against when this node calls them (nil: the system's roots). Every node
    /// of a cluster serves HTTPS or none does.
    public var httpTLS: (certificate: String, key: String, ca: String?)?
    /// A user holding `all`, for joining a cluster with auth on (or a join token instead).
    public var joinCredentials: (user: String, password: String)?
    /// A single-use join token an admin minted (`cairn cluster join-token`).
    public var joinToken: String?
    public var tokenTTLSeconds: Double = 3600
    /// Origins allowed to call the API from a browser (CORS); empty: CORS off.
    public var corsOrigins: [String] = []
    public var logFormat: CairnLogHandler.Format = .text
    /// Timeouts and the connection cap of the HTTP API.
    public var http = HTTPLimits()

    public init(dataDirectory: String, httpAddress: PeerAddress, raftAddress: PeerAddress) {
        self.dataDirectory = dataDirectory
        self.httpAddress = httpAddress
        self.raftAddress = raftAddress
    }
}

/// `cairn server`: one node's runtime, cluster layer and HTTP API, until SIGTERM or SIGINT.
/// Why the server cannot start, in words an operator can act on.
public enum ServerError: Error, CustomStringConvertible {
    case badHTTPSFiles(String)

    public var description: String {
        switch self {
        case .badHTTPSFiles(let why): return why
        }
    }
}

public enum Server {
    /// The longest SIGTERM waits for the groups led here to take other leaders before stopping anyway
    /// (a transfer to a caught-up follower takes a round trip or two).
    static let handOverMillis: Int64 = 5_000

    public static func run(_ options: ServerOptions) async throws {
        MemoryReturn.configure()
        let format = options.logFormat
        LoggingSystem.bootstrap { label in CairnLogHandler(label: label, format: format) }
        let logger = Logger(label: "cairn")
        let log: @Sendable (String) -> Void = { line in logger.info("\(line)") }
        _ = MetricsExporter.shared
        try DataDirectory.secure(options.dataDirectory, log: log)
        let identity = try NodeIdentity.loadOrCreate(directory: options.dataDirectory)
        var runtimeConfig = RuntimeConfig(nodeID: identity.nodeID, dataDirectory: options.dataDirectory, raftAddress: options.raftAddress)
        runtimeConfig.tickMillis = options.tickMillis
        runtimeConfig.electionTimeoutTicks = options.electionTimeoutTicks
        runtimeConfig.requestTimeoutMillis = options.requestTimeoutMillis
        runtimeConfig.readTimeoutMillis = options.readTimeoutMillis
        runtimeConfig.consistencyCheckMillis = options.consistencyCheckMillis
        runtimeConfig.snapshotEveryEntries = options.snapshotEveryEntries
        runtimeConfig.snapshotBytesPerSecond = options.snapshotBytesPerSecond
        // Raft traffic is always mutual TLS: with the operator's files, or with a certificate of the
        // cluster's own CA, which the node gets when it founds or joins (until then it carries nothing).
        var nodeCredentials: NodeCredentials?
        if let tls = options.tls {
            runtimeConfig.transportTLS = try TransportTLS(certificatePath: tls.certificate, keyPath: tls.key, caPath: tls.ca)
        } else {
            let credentials = NodeCredentials(dataDirectory: options.dataDirectory)
            runtimeConfig.requireTransportTLS = true
            if credentials.isComplete { runtimeConfig.transportTLS = try credentials.transportTLS() }
            nodeCredentials = credentials
        }
        let runtime = try NodeRuntime(config: runtimeConfig, log: log)
        try await runtime.start(peers: [:])

        var clusterConfig = ClusterConfig(raftAddress: options.advertisedRaftAddress ?? options.raftAddress,
                                          httpAddress: options.advertisedHTTPAddress ?? options.httpAddress)
        clusterConfig.voter = options.voter
        clusterConfig.name = options.name
        clusterConfig.replicationFactor = options.replicationFactor
        clusterConfig.liveness = options.liveness
        clusterConfig.snapshotBytesPerSecond = options.snapshotBytesPerSecond
        clusterConfig.shardSplitBytes = options.shardSplitBytes
        clusterConfig.minReplicasPerNode = options.minReplicasPerNode
        clusterConfig.shardSplitOpsPerSecond = options.shardSplitOpsPerSecond
        clusterConfig.shardSplitHotSeconds = options.shardSplitHotSeconds
        clusterConfig.join = options.join
        clusterConfig.bootstrapExpect = options.bootstrapExpect
        clusterConfig.adminPassword = options.adminPassword
        clusterConfig.joinCredentials = options.joinCredentials
        clusterConfig.joinToken = options.joinToken
        clusterConfig.nodeCredentials = nodeCredentials
        let peers = PeerClient(tls: try options.httpTLS.map { tls in
            var client = TLSConfiguration.makeClientConfiguration()
            client.minimumTLSVersion = .tlsv12
            if let ca = tls.ca {
                // Read now: a wrong path would otherwise show only as failing joins and forwards.
                do {
                    client.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
                } catch {
                    throw ServerError.badHTTPSFiles("cannot read the CA certificates in \(ca) (--http-tls-ca): \(error)")
                }
            }
            return client
        })
        let authBox = NIOLockedValueBox<AuthService?>(nil)
        let cluster = ClusterNode(runtime: runtime, config: clusterConfig, peers: peers, log: log,
                                  credentials: { await authBox.withLockedValue { $0 }?.nodeHeaders() ?? [] }) {
            // A removed node has nothing left to serve: shut down the way an operator would.
            kill(getpid(), SIGTERM)
        }
        let auth = AuthService(enabled: !options.insecureDev, tokenTTLSeconds: options.tokenTTLSeconds, cluster: cluster)
        authBox.withLockedValue { $0 = auth }
        if options.insecureDev {
            log("node \(identity.nodeID): WARNING: --insecure-dev: authentication is OFF; anyone who can reach \(options.httpAddress) can read, write and administer this cluster")
        }
        API.removeLeftoverTransfers(in: options.dataDirectory)
        let audit = AuditLog(path: options.dataDirectory + "/audit.log", node: identity.nodeID)
        let api = API(options: options, runtime: runtime, cluster: cluster, peers: peers, auth: auth, audit: audit, log: log)
        var httpLogger = Logger(label: "cairn.http")
        httpLogger.logLevel = .warning
        var limits = options.http
        limits.fitDescriptorLimit(reserved: RaftTransport.maxIncomingConnections + 1_024, log: log)
        let httpLimits = limits
        var tlsConfiguration: TLSConfiguration?
        if let tls = options.httpTLS {
            let chain: [NIOSSLCertificateSource], key: NIOSSLPrivateKey
            do {
                chain = try NIOSSLCertificate.fromPEMFile(tls.certificate).map { .certificate($0) }
                key = try NIOSSLPrivateKey(file: tls.key, format: .pem)
            } catch {
                throw ServerError.badHTTPSFiles("cannot load the HTTPS certificate \(tls.certificate) or key \(tls.key): \(error)")
            }
            var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            configuration.minimumTLSVersion = .tlsv12
            tlsConfiguration = configuration
        }
        let https = tlsConfiguration
        // A listener's server: HTTP/1 with the request deadlines, over TLS when configured. One with a
        // fast path (the API's data endpoints, shard-lb's) has no Hummingbird idle timer: it would not
        // see the requests the fast path answers; `RequestDeadlines` (before the fast path, so it sees
        // them all) closes idle connections instead.
        let makeServer: ListenerServer = { fast in
            let http1 = HTTP1Channel.Configuration(
                additionalChannelHandlers: [RequestDeadlines(limits: httpLimits)]
                    + (fast.map { [FastDataPath(server: $0.server, maxBodyBytes: $0.maxBodyBytes)] } ?? []),
                idleTimeout: fast == nil ? .milliseconds(httpLimits.idleTimeoutMillis) : nil)
            let server = HTTPServerBuilder.cairnHTTP1(configuration: http1, rawFastPath: fast)
            guard let https else { return server }
            return try .tls(server, tlsConfiguration: https)
        }
        let apiServer = try makeServer((api, api.fastPathMaxBodyBytes))
        let app = Application(
            router: api.router(),
            server: apiServer,
            configuration: .init(address: .hostname(options.httpAddress.host, port: options.httpAddress.port), serverName: "cairn",
                                 availableConnectionsDelegate: MaximumAvailableConnections(httpLimits.maxConnections)),
            onServerRunning: { channel in
                log("node \(identity.nodeID): \(options.httpTLS == nil ? "HTTP" : "HTTPS") on \(channel.localAddress.map { "\($0)" } ?? "?"), Raft on \(options.raftAddress), data in \(options.dataDirectory)")
            },
            logger: httpLogger
        )
        // SIGTERM: every group led here gets another leader first, then the node stops as on SIGINT
        // (the listeners finish their requests in flight).
        signal(SIGTERM, SIG_IGN)
        let terminate = DispatchSource.makeSignalSource(signal: SIGTERM)
        let stopping = NIOLockedValueBox(false)
        terminate.setEventHandler {
            guard !stopping.withLockedValue({ let was = $0; $0 = true; return was }) else { return }
            Task {
                log("node \(identity.nodeID): SIGTERM: handing leadership over before stopping")
                let (asked, kept) = await runtime.handOverLeadership(timeoutMillis: Self.handOverMillis)
                log("node \(identity.nodeID): asked \(asked) groups to change leader; leads \(kept) still; stopping")
                kill(getpid(), SIGINT)
            }
        }
        terminate.resume()
        defer { terminate.cancel() }
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Returns after SIGTERM (leadership handed over) or SIGINT, once in-flight requests have finished.
                group.addTask { try await app.runService(gracefulShutdownSignals: [.sigint]) }
                for listener in options.compat {
                    let compatApp = try api.compatApplication(listener, makeServer: makeServer, logger: httpLogger) { address in
                        log("node \(identity.nodeID): \(listener.api.rawValue) API on \(address)")
                    }
                    group.addTask { try await compatApp.runService(gracefulShutdownSignals: [.sigint]) }
                }
                group.addTask {
                    try await cluster.form()
                    await cluster.runController()
                }
                group.addTask {
                    await api.queue.run(flush: { try await api.flushQueued($0) }, log: log)
                }
                group.addTask { await audit.run() }
                group.addTask { await api.recoverTransactions() }
                group.addTask { await api.splitLargeShards() }
                try await group.next()
                group.cancelAll()
            }
        } catch {
            audit.flush()
            log("node \(identity.nodeID): \(error)")
            await runtime.shutdown()
            await peers.shutdown()
            throw error
        }
        audit.flush()
        log("node \(identity.nodeID): shutting down")
        await runtime.shutdown()
        await peers.shutdown()
    }
}

/// glibc's malloc serves a large block from its heaps once a block that large was freed (its mmap
/// threshold rises up to 32 MiB), and keeps what such blocks leave behind: after a few 16 MiB requests
/// the node's memory stayed at their sum. A fixed threshold gives every block of 256 KiB and more
/// back to the system when it is freed, so the node's memory follows what it holds.
enum MemoryReturn {
    static let mmapThresholdBytes: Int32 = 256 << 10

    /// glibc's `M_TRIM_THRESHOLD` and `M_MMAP_THRESHOLD` (malloc.h, which Swift's Glibc module leaves out).
    private static let trimThreshold: Int32 = -1, mmapThreshold: Int32 = -3

    static func configure() {
        #if canImport(Glibc)
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
        let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
        _ = mallopt(mmapThreshold, mmapThresholdBytes)
        _ = mallopt(trimThreshold, 2 * mmapThresholdBytes)
        #endif
    }
}
