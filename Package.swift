// swift-tools-version: 6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

/// Test code itself is not optimized, even in `swift test -c release` (what CI runs): the code under
/// test is, and optimizing the test targets' large files would add minutes to every build for
/// nothing the tests check.
let testCode: [SwiftSetting] = strict + [.unsafeFlags(["-Onone"], .when(configuration: .release))]

let package = Package(
    name: "CairnDB",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "CairnRaft", targets: ["CairnRaft"]),
        .library(name: "CairnStorage", targets: ["CairnStorage"]),
        .library(name: "CairnSQLite", targets: ["CairnSQLite"]),
        .executable(name: "cairn-sim", targets: ["cairn-sim"]),
        .executable(name: "cairn", targets: ["cairn"]),
        // A Swift client of the HTTP API, for other packages (README: "CairnClient").
        .library(name: "CairnClient", targets: ["CairnClient", "CairnJSON"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // Hummingbird's own HTTP part types; named here for the tests that drive channel handlers.
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        // The consensus core: a pure state machine. No I/O, clocks, threads or randomness of its own.
        .target(name: "CairnRaft", swiftSettings: strict),
        // SQLite's C API from Debian's libsqlite3-dev (not sqlite-nio: 20-30x the per-statement cost here).
        .systemLibrary(name: "CSQLite3", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // libedit (BSD licence, not GNU readline's GPL) for cairn shell's line editing.
        .systemLibrary(name: "CEditLine", pkgConfig: "libedit", providers: [.apt(["libedit-dev"])]),
        // The replicated state machine: applies committed SQL batches to one SQLite database per group.
        .target(name: "CairnSQLite", dependencies: ["CSQLite3", "CairnRaft"], swiftSettings: strict),
        // Plans statements over a database's shards (pure: statement and shard map in, plan out) and
        // combines the shards' partial results into the answer one SQLite would give.
        .target(name: "CairnQuery", dependencies: ["CairnSQLite"], swiftSettings: strict),
        // The older systems' APIs (`--compat`): their requests checked and turned into statements, their
        // answers shaped as the originals', with no I/O (the server wires them to listeners).
        .target(name: "CairnCompat", dependencies: ["CairnSQLite", "CairnQuery", "CairnJSON"], swiftSettings: strict),
        // Node-to-node messages: the wire format (and, next, the SwiftNIO connections).
        .target(
            name: "CairnTransport",
            dependencies: [
                "CairnRaft", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"), .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // Durable Raft log: one CRC-framed, group-committed write-ahead log per node for all groups.
        .target(name: "CairnStorage", dependencies: ["CairnRaft"], swiftSettings: strict),
        // One node: hosts Raft groups over the log, the state machines and the transport.
        .target(
            name: "CairnNode",
            dependencies: ["CairnRaft", "CairnStorage", "CairnSQLite", "CairnTransport", .product(name: "Metrics", package: "swift-metrics"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: strict
        ),
        // Which nodes hold which groups: founders, the rebalancer, liveness, the order of a move's
        // membership changes. Pure (values in, decisions out), so the simulators drive it as the cluster does.
        .target(name: "CairnPlacement", dependencies: ["CairnRaft"], swiftSettings: strict),
        // The cluster layer: the catalog (metadata group 0), membership and placement, talking to peers.
        .target(
            name: "CairnCluster",
            dependencies: ["CairnNode", "CairnPlacement", "CairnSQLite", "CairnRaft", "CairnTransport", "CairnAuth",
                           .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "Logging", package: "swift-log"),
                           .product(name: "Metrics", package: "swift-metrics")],
            swiftSettings: strict
        ),
        // Where an operation on a group runs: here, or at the node that can, reached with the encoded
        // operation over the nodes' own connections (not the client's HTTP request).
        .target(
            name: "CairnRouter",
            dependencies: ["CairnCluster", "CairnNode", "CairnSQLite", "CairnRaft", "CairnTransport",
                           .product(name: "Metrics", package: "swift-metrics"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: strict
        ),
        // Users, password hashes (scrypt), permissions, signed tokens (JWT) and failed-login limits.
        .target(
            name: "CairnAuth",
            dependencies: [.product(name: "Crypto", package: "swift-crypto"), .product(name: "CryptoExtras", package: "swift-crypto"),
                           .product(name: "JWTKit", package: "jwt-kit"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: strict
        ),
        // JSON that keeps key order and numbers as written (byte-exact rqlite output, typed values).
        .target(name: "CairnJSON", swiftSettings: strict),
        // The client library the CLI uses: HTTP to any node, credentials, downloads and uploads.
        .target(
            name: "CairnClient",
            dependencies: ["CairnJSON", .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl")],
            swiftSettings: strict
        ),
        // What `cairn server` runs: the HTTP API (Hummingbird) over the runtime and the cluster layer.
        .target(
            name: "CairnServer",
            dependencies: ["CairnCluster", "CairnPlacement", "CairnRouter", "CairnNode", "CairnSQLite", "CairnQuery", "CairnCompat", "CairnRaft", "CairnTransport", "CairnAuth", "CairnJSON",
                           .product(name: "Hummingbird", package: "hummingbird"), .product(name: "HummingbirdTLS", package: "hummingbird"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl"),
                           .product(name: "Metrics", package: "swift-metrics"), .product(name: "Prometheus", package: "swift-prometheus"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOConcurrencyHelpers", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict,
            plugins: ["EmbedFiles"]
        ),
        // Files built into the binary (`EmbeddedFiles`): the OpenAPI document.
        .executableTarget(name: "embed-files", swiftSettings: strict),
        .plugin(name: "EmbedFiles", capability: .buildTool(), dependencies: ["embed-files"]),
        .executableTarget(
            name: "cairn",
            dependencies: ["CairnServer", "CairnCluster", "CairnPlacement", "CairnTransport", "CairnClient", "CairnCompat", "CairnSQLite", "CairnJSON", "CSQLite3", "CEditLine",
                           .product(name: "Histogram", package: "hdrhistogram-swift"),
                           .product(name: "AsyncHTTPClient", package: "async-http-client"), .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),
        // Deterministic cluster simulator: drives many CairnRaft nodes in virtual time and checks invariants.
        .target(name: "CairnSim", dependencies: ["CairnRaft", "CairnPlacement"], swiftSettings: strict),
        .executableTarget(
            name: "cairn-sim",
            dependencies: ["CairnSim", "CairnPlacement", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),
        // Helpers several test targets share: free ports, child programs, test certificates.
        .target(name: "CairnTestSupport", path: "Tests/Support", exclude: ["make-test-certs.sh"], swiftSettings: strict),
        .testTarget(name: "CairnRaftTests", dependencies: ["CairnRaft"], swiftSettings: testCode),
        .testTarget(name: "CairnSQLiteTests", dependencies: ["CairnSQLite", "CairnRaft", "CSQLite3"], swiftSettings: testCode),
        .testTarget(
            name: "CairnTransportTests",
            dependencies: ["CairnTransport", "CairnRaft", "CairnTestSupport", .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: testCode
        ),
        .testTarget(name: "CairnNodeTests", dependencies: ["CairnNode", "CairnSQLite", "CairnRaft", "CairnTransport", "CairnTestSupport"],
                    swiftSettings: testCode),
        .testTarget(name: "CairnQueryTests", dependencies: ["CairnQuery", "CairnSQLite", "CairnRaft"], swiftSettings: testCode),
        .testTarget(name: "CairnCompatTests", dependencies: ["CairnCompat", "CairnSQLite", "CairnJSON"], swiftSettings: testCode),
        .testTarget(name: "CairnPlacementTests", dependencies: ["CairnPlacement", "CairnSim", "CairnRaft"], swiftSettings: testCode),
        .testTarget(name: "CairnRouterTests", dependencies: ["CairnRouter", "CairnNode", "CairnSQLite", "CairnRaft"], swiftSettings: testCode),
        .testTarget(name: "CairnStorageTests", dependencies: ["CairnStorage", "CairnRaft"], swiftSettings: testCode),
        .testTarget(name: "CairnSimTests", dependencies: ["CairnSim", "CairnRaft"], swiftSettings: testCode),
        .testTarget(name: "CairnAuthTests", dependencies: ["CairnAuth"], swiftSettings: testCode),
        // Real `cairn server` processes on loopback: kill -9, restarts, partitions, torn logs, full disks.
        .testTarget(
            name: "CairnServerTests",
            dependencies: ["cairn", "CairnServer", "CairnClient", "CairnTestSupport", "CairnJSON", "CSQLite3", "CairnRaft", "CairnSQLite", "CairnTransport",
                           .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOFoundationCompat", package: "swift-nio"),
                           .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "NIOEmbedded", package: "swift-nio"),
                           .product(name: "NIOHTTPTypes", package: "swift-nio-extras"), .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                           .product(name: "HTTPTypes", package: "swift-http-types")],
            swiftSettings: testCode
        ),
    ],
    swiftLanguageModes: [.v6]
)
