import ArgumentParser
import CairnCluster
import CairnPlacement
import CairnServer
import CairnTransport
import Foundation

@main
struct Cairn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cairn",
        abstract: "CairnDB: a distributed SQL database on SQLite and Raft.",
        version: cairnVersion,
        subcommands: [ServerCommand.self, DemoCommand.self, ShellCommand.self, SQLCommand.self, ClusterCommand.self, NodeCommand.self, ShardsCommand.self, KVCommand.self,
                       UserCommand.self, DatabaseCommand.self, BackupCommand.self, RestoreCommand.self, BenchCommand.self]
    )

    /// `cairn server` also takes its flags from `CAIRN_*` variables (`ServerEnvironment`).
    static func main() async {
        var arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "server" {
            let options = ServerEnvironment.options(inHelp: ServerCommand.helpMessage(includeHidden: true, columns: 10_000))
            let (added, warnings) = ServerEnvironment.arguments(from: ProcessInfo.processInfo.environment, given: arguments, options: options)
            for line in warnings { FileHandle.standardError.write(Data((line + "\n").utf8)) }
            arguments += added
        }
        await main(arguments)
    }
}

struct AddressArgument: ExpressibleByArgument, CustomStringConvertible {
    var description: String { address.description }
    var address: PeerAddress
    init?(argument: String) {
        guard let a = PeerAddress(parsing: argument) else { return nil }
        address = a
    }
}

/// A duration option (`10s`, `5m`, `500ms`).
struct DurationArgument: ExpressibleByArgument, CustomStringConvertible {
    var nanos: UInt64
    var description: String { DurationText.format(nanos) }
    init?(argument: String) {
        guard let n = DurationText.nanos(argument) else { return nil }
        nanos = n
    }
}

struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run one CairnDB node.",
        discussion: """
            With an empty data directory and no --join, the node founds a one-node cluster. With --join it \
            joins the cluster those members belong to. With --bootstrap-expect N and --join listing the \
            other founders, N nodes started together found a cluster. A restarted node resumes from its \
            data directory and ignores --join.
            """
    )

    @Option(help: "Directory for this node's log, databases and identity (created if missing).")
    var dataDir: String

    @Option(help: "Address for the HTTP API (host:port).")
    var httpAddr: AddressArgument = AddressArgument(argument: "127.0.0.1:4001")!

    @Option(help: "Address for traffic between nodes (host:port).")
    var raftAddr: AddressArgument = AddressArgument(argument: "127.0.0.1:4002")!

    @Option(help: "HTTP address other nodes should use for this one, if not --http-addr.")
    var httpAdv: AddressArgument?

    @Option(help: "Raft address other nodes should use for this one, if not --raft-addr.")
    var raftAdv: AddressArgument?

    @Option(help: "HTTP addresses of cluster members to join, or of fellow founders (comma-separated host:port).")
    var join: String?

    @Option(help: "Found a cluster from this many nodes started together (each lists the others in --join).")
    var bootstrapExpect: Int = 0

    @Flag(help: "Join as a read replica: a non-voting copy of every database.")
    var nonVoter = false

    @Option(help: "What this node is called (letters, digits, - _ . [ ]; default: its id): shown in /v1/cluster, and the server names of the compatibility APIs.")
    var name: String?

    @Option(help: "Serve an older system's API on a listener of its own: API=HOST:PORT, API one of \(CompatAPI.allCases.map(\.rawValue).joined(separator: ", ")) (repeatable).")
    var compat: [String] = []

    @Option(help: ArgumentHelp("Supervised local mode, as cairn demo runs it: the local supervisor (HOST:PORT) that starts servers shard-lb's /add names that have not joined; its secret comes from CAIRN_SUPERVISOR_TOKEN.", visibility: .hidden))
    var supervisor: String?

    @Option(help: "With auth on, the user the compatibility APIs act as where their originals had no credentials of their own; required with --compat shard-lb unless --insecure-dev.")
    var compatUser: String?

    @Option(help: "Voting copies of each database.")
    var replicationFactor: Int = 3

    @Option(help: "The most one snapshot stream sends, in MiB per second (replicas being moved or rebuilt copy at this pace).")
    var snapshotMibPerSecond: Int = 32

    @Option(help: "A shard whose database passes this many bytes splits in two (0: never by size).")
    var shardSplitBytes: Int = 512 << 20

    @Option(help: "A hash-sharded database's shards double (each splits in two) while shards × replication factor / nodes is under this, so replicas stay even as the cluster grows (0: never).")
    var minReplicasPerNode: Int = 10

    @Option(help: "A shard whose leader serves this many operations a second (writes applied, reads answered) for --shard-split-hot-seconds splits where its writes' keys divide, unless they sit on one key (0: never by load).")
    var shardSplitOpsPerSecond: Int = 2_500

    @Option(help: "How long a shard must run hot before it splits by load, in seconds.")
    var shardSplitHotSeconds: Int = 30

    @Option(help: "A node silent this long gets no new replicas (a duration: 500ms, 10s, 5m, 1h).")
    var suspectAfter: DurationArgument = DurationArgument(argument: "10s")!

    @Option(help: "A node silent this long is declared dead and its replicas are rebuilt on live nodes (a duration, at least --suspect-after).")
    var deadAfter: DurationArgument = DurationArgument(argument: "5m")!

    @Option(help: "Raft tick in milliseconds (heartbeats go out every tick).")
    var tickMs: Int64 = 50

    @Option(help: "Election timeout, in ticks (randomized between this and twice this).")
    var electionTicks: Int = 10

    @Option(help: "Applied entries between snapshots of a database (each snapshot lets the log be compacted).")
    var snapshotEntries: UInt64 = 10_000

    @Option(help: "How long a request may wait for a leader, a commit or a read index, in milliseconds.")
    var requestTimeoutMs: Int64 = 10_000

    @Option(help: "Largest accepted request body, in bytes.")
    var maxBodyBytes: Int = 16 << 20

    @Option(help: "Most statements accepted in one request.")
    var maxStatements: Int = 10_000

    @Option(help: "Largest SQLite file a load accepts, in bytes (streamed to disk, then replicated in entries of bounded size).")
    var maxLoadBytes: Int = 1 << 30

    @Option(help: "A query statement running longer is interrupted, in milliseconds (a request's own db_timeout wins).")
    var readTimeoutMs: Int64 = 10_000

    @Option(help: "An HTTP connection whose next request does not arrive within this many seconds (of opening, or of the last response) is closed (keep it above 10 s in a cluster: nodes reuse idle connections to each other for 10 s).")
    var httpIdleTimeoutSeconds: Double = 30

    @Option(help: "An HTTP request body that has not arrived whole this many seconds after its head is cut off.")
    var httpBodyTimeoutSeconds: Double = 300

    @Option(help: "HTTP connections open at once; more wait until one closes.")
    var maxHttpConnections: Int = 4_096

    @Option(help: "How often each group's leader compares its replicas' digests, in seconds (0: only on demand).")
    var consistencyCheckSeconds: Int64 = 600

    @Option(help: "PEM certificate (chain) the HTTP API presents: serve HTTPS (needs --http-tls-key; every node of a cluster alike).")
    var httpTlsCert: String?

    @Option(help: "PEM private key of --http-tls-cert.")
    var httpTlsKey: String?

    @Option(help: "PEM file of the CA other nodes' HTTPS certificates must chain to, when this node calls them (else the system's roots).")
    var httpTlsCa: String?

    @Option(help: "PEM certificate this node presents to other nodes (mutual TLS between nodes; needs --tls-key and --tls-ca).")
    var tlsCert: String?

    @Option(help: "PEM private key of --tls-cert.")
    var tlsKey: String?

    @Option(help: "PEM certificate of the CA that signs every node's certificate; peers without one are refused.")
    var tlsCa: String?

    @Flag(help: "Run WITHOUT authentication or permission checks (development only; says so loudly at start).")
    var insecureDev = false

    @Option(help: "File holding the admin password used when this node founds a cluster (else $CAIRN_ADMIN_PASSWORD, else one is generated and printed once).")
    var adminPasswordFile: String?

    @Option(help: "User (holding the all permission) this node joins as, with its password in $CAIRN_JOIN_PASSWORD or --join-password-file. Or a join token instead.")
    var joinAs: String?

    @Option(help: "File holding the password of --join-as.")
    var joinPasswordFile: String?

    @Option(help: "File holding a single-use join token (from cairn cluster join-token), else $CAIRN_JOIN_TOKEN: how a node joins without an admin's password.")
    var joinTokenFile: String?

    @Option(help: "Lifetime of tokens from POST /v1/auth/token, in seconds.")
    var tokenTtlSeconds: Double = 3600

    @Option(help: "Origins allowed to call the API from browsers (comma-separated, or *); CORS is off without it.")
    var corsOrigins: String?

    @Option(help: "Log lines as text or json.")
    var logFormat: String = "text"

    @Flag(help: "Serve PUT /v1/debug/faults to cut off, drop or delay traffic between nodes (tests only).")
    var enableFaultInjection = false

    func validate() throws {
        if bootstrapExpect < 0 || bootstrapExpect == 1 { throw ValidationError("--bootstrap-expect must be 2 or more (a single node needs no flag)") }
        if bootstrapExpect > 1 && joinAddresses.isEmpty { throw ValidationError("--bootstrap-expect needs --join listing the other founders") }
        if replicationFactor < 1 { throw ValidationError("--replication-factor must be at least 1") }
        if maxBodyBytes < 1 { throw ValidationError("--max-body-bytes must be at least 1") }
        if maxStatements < 1 { throw ValidationError("--max-statements must be at least 1") }
        if let name, let problem = Catalog.nameProblem(name) { throw ValidationError("--name: \(problem)") }
        let withoutTokens = compat.compactMap { try? CompatListener.parse($0).get() }.filter { !$0.api.hasOwnTokens }
        if !withoutTokens.isEmpty && !insecureDev && compatUser == nil {
            throw ValidationError("--compat \(withoutTokens[0].api.rawValue) needs --compat-user NAME when auth is on: its clients send no credentials, so their requests act as that user")
        }
        if snapshotMibPerSecond < 1 || snapshotMibPerSecond > 100_000 { throw ValidationError("--snapshot-mib-per-second must be from 1 to 100000") }
        if shardSplitBytes != 0 && shardSplitBytes < 65_536 { throw ValidationError("--shard-split-bytes must be 0 (never by size) or at least 65536") }
        if minReplicasPerNode < 0 || minReplicasPerNode > 1_000 { throw ValidationError("--min-replicas-per-node must be from 0 (shards never double) to 1000") }
        if suspectAfter.nanos == 0 || deadAfter.nanos < suspectAfter.nanos {
            throw ValidationError("--suspect-after must be positive and --dead-after at least as long")
        }
        if shardSplitOpsPerSecond < 0 || shardSplitOpsPerSecond > 10_000_000 {
            throw ValidationError("--shard-split-ops-per-second must be from 0 (never by load) to 10000000")
        }
        if shardSplitHotSeconds < 1 || shardSplitHotSeconds > 3_600 { throw ValidationError("--shard-split-hot-seconds must be from 1 to 3600") }
        if tickMs < 1 || electionTicks < 2 { throw ValidationError("--tick-ms must be positive and --election-ticks at least 2") }
        let tlsGiven = [tlsCert, tlsKey, tlsCa].filter { $0 != nil }.count
        if tlsGiven != 0 && tlsGiven != 3 { throw ValidationError("mutual TLS needs all three of --tls-cert, --tls-key and --tls-ca") }
        if (httpTlsCert == nil) != (httpTlsKey == nil) { throw ValidationError("HTTPS needs both --http-tls-cert and --http-tls-key") }
        if httpTlsCa != nil && httpTlsCert == nil { throw ValidationError("--http-tls-ca goes with --http-tls-cert and --http-tls-key") }
        if let supervisor {
            guard PeerAddress(parsing: supervisor) != nil else { throw ValidationError("--supervisor must be host:port") }
            guard ProcessInfo.processInfo.environment[LocalSupervisor.tokenVariable]?.isEmpty == false else {
                throw ValidationError("--supervisor needs the supervisor's secret in \(LocalSupervisor.tokenVariable)")
            }
        }
        if join != nil && joinAddresses.count != join!.split(separator: ",").count {
            throw ValidationError("--join must be a comma-separated list of host:port")
        }
    }

    var joinAddresses: [PeerAddress] {
        (join ?? "").split(separator: ",").compactMap { PeerAddress(parsing: String($0)) }
    }

    func run() async throws {
        var options = ServerOptions(dataDirectory: dataDir, httpAddress: httpAddr.address, raftAddress: raftAddr.address)
        options.advertisedHTTPAddress = httpAdv?.address
        options.advertisedRaftAddress = raftAdv?.address
        options.join = joinAddresses
        options.bootstrapExpect = bootstrapExpect
        options.voter = !nonVoter
        options.name = name
        for text in compat {
            switch CompatListener.parse(text) {
            case .success(let listener): options.compat.append(listener)
            case .failure(let e): throw ValidationError(e.message)
            }
        }
        options.compatUser = compatUser
        if let supervisor, let address = PeerAddress(parsing: supervisor), let token = ProcessInfo.processInfo.environment[LocalSupervisor.tokenVariable] {
            options.supervisor = (address, token)
        }
        options.replicationFactor = replicationFactor
        options.snapshotBytesPerSecond = snapshotMibPerSecond << 20
        options.shardSplitBytes = shardSplitBytes
        options.minReplicasPerNode = minReplicasPerNode
        options.shardSplitOpsPerSecond = shardSplitOpsPerSecond
        options.shardSplitHotSeconds = shardSplitHotSeconds
        options.liveness = LivenessSettings(suspectAfterNanos: suspectAfter.nanos, deadAfterNanos: deadAfter.nanos)
        options.tickMillis = tickMs
        options.electionTimeoutTicks = electionTicks
        options.snapshotEveryEntries = snapshotEntries
        options.requestTimeoutMillis = requestTimeoutMs
        options.maxBodyBytes = maxBodyBytes
        options.maxStatementsPerRequest = maxStatements
        options.maxLoadBytes = maxLoadBytes
        guard readTimeoutMs > 0, consistencyCheckSeconds >= 0 else {
            throw ValidationError("--read-timeout-ms must be positive and --consistency-check-seconds not negative")
        }
        options.readTimeoutMillis = readTimeoutMs
        guard httpIdleTimeoutSeconds > 0, httpBodyTimeoutSeconds > 0, maxHttpConnections > 0 else {
            throw ValidationError("--http-idle-timeout-seconds, --http-body-timeout-seconds and --max-http-connections must be positive")
        }
        options.http.idleTimeoutMillis = Int64(httpIdleTimeoutSeconds * 1000)
        options.http.bodyTimeoutMillis = Int64(httpBodyTimeoutSeconds * 1000)
        options.http.maxConnections = maxHttpConnections
        options.consistencyCheckMillis = consistencyCheckSeconds * 1000
        options.enableFaultInjection = enableFaultInjection
        if let tlsCert, let tlsKey, let tlsCa { options.tls = (tlsCert, tlsKey, tlsCa) }
        if let httpTlsCert, let httpTlsKey { options.httpTLS = (httpTlsCert, httpTlsKey, httpTlsCa) }
        options.insecureDev = insecureDev
        guard let format = CairnLogHandler.Format(rawValue: logFormat) else { throw ValidationError("--log-format must be text or json") }
        options.logFormat = format
        options.tokenTTLSeconds = tokenTtlSeconds
        options.corsOrigins = (corsOrigins ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let environment = ProcessInfo.processInfo.environment
        options.adminPassword = try adminPasswordFile.map(Cairn.readSecret) ?? environment["CAIRN_ADMIN_PASSWORD"]
        if let joinAs {
            guard let password = try joinPasswordFile.map(Cairn.readSecret) ?? environment["CAIRN_JOIN_PASSWORD"] else {
                throw ValidationError("--join-as needs the password in $CAIRN_JOIN_PASSWORD or --join-password-file")
            }
            options.joinCredentials = (joinAs, password)
        }
        options.joinToken = try joinTokenFile.map(Cairn.readSecret) ?? environment["CAIRN_JOIN_TOKEN"]
        do {
            try await Server.run(options)
        } catch {
            try? FileHandle.standardError.write(contentsOf: Data("cairn server: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

extension Cairn {
    /// A secret from a file: its first line, without the newline.
    static func readSecret(_ path: String) throws -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read \(path)") }
        let secret = text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard !secret.isEmpty else { throw ValidationError("\(path) is empty") }
        return secret
    }
}
