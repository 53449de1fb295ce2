import CairnTestSupport
import Foundation
import Testing

/// rqlite's Python clients from PyPI, unmodified, against a 3-node cluster with auth on: pyrqlite's
/// DB-API and sqlalchemy-rqlite's ORM round trip (create, insert, query, update, delete, the table
/// list without CairnDB's own). They live in a virtual environment under .build, made on first use
/// (.ci/run makes it first, so the download happens before the tests).
extension ProcessTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let clientPackages = ["sqlalchemy>=2.0,<2.2", "sqlalchemy-rqlite==2.0", "pyrqlite==2.2.3", "selenium>=4.20,<5"]

    /// The virtual environment's python, made (and the clients installed) if it is not there.
    static func clientPython() async throws -> String {
        let venv = repository.appendingPathComponent(".build/python-clients").path
        let python = venv + "/bin/python"
        if FileManager.default.isExecutableFile(atPath: python),
           try await runProgram(python, ["-c", "import sqlalchemy_rqlite, pyrqlite, selenium"]) == 0 { return python }
        if !FileManager.default.isExecutableFile(atPath: python) {
            #expect(try await runProgram("/usr/bin/env", ["python3", "-m", "venv", venv]) == 0, "python3 -m venv failed")
        }
        let installed = try await runProgram(venv + "/bin/pip", ["install", "-q"] + clientPackages)
        guard installed == 0 else { throw TestFailure("pip install \(clientPackages) failed (PyPI unreachable?)") }
        return python
    }

    /// Runs one of `Tests/Clients`' scripts with the environment's python; its exit status and output.
    static func runClientScript(_ script: String, _ arguments: [String], seconds: Double) async throws -> (status: Int32?, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try await clientPython())
        p.arguments = [repository.appendingPathComponent("Tests/Clients/" + script).path] + arguments
        let output = Pipe()
        p.standardOutput = output
        p.standardError = output
        try p.run()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (await exitStatus(of: p, seconds: seconds), said)
    }

    static func runProgram(_ path: String, _ arguments: [String]) async throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return await exitStatus(of: p, seconds: 600) ?? -1
    }

    @Test func pythonClientsWorkUnmodified() async throws {
        _ = try await Self.clientPython()
        let c = try await ProcessCluster.founded("python-clients", count: 3)
        defer { c.destroy() }
        // Through a node that leads nothing in particular: any node serves any request.
        let node = c.nodes[1]
        let port = String(node.http.split(separator: ":").last!)
        let (status, said) = try await Self.runClientScript("orm_roundtrip.py", ["127.0.0.1", port, "admin", TestHTTP.adminPassword], seconds: 120)
        #expect(status == 0 && said.contains("OK ['cities', 'plain']"), "\(said.suffix(3000))")
    }
}

/// The web console in headless Chromium (Debian's `chromium` and `chromium-driver`, which .ci/run
/// installs; selenium from PyPI): sign in, every node on the overview, a query with its timing and
/// plan, the shard map, users, live charts. Screenshots are kept in .build/console-screenshots.
extension ProcessTests {
    @Test func consoleInChromium() async throws {
        _ = try await Self.clientPython()
        let c = try await ProcessCluster.founded("console", count: 3)
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "shop", "shards": 4]).status == 201)
        #expect(try await a.execute(["CREATE TABLE orders (customer INTEGER NOT NULL, id INTEGER NOT NULL, item TEXT, PRIMARY KEY (customer, id)) SHARD BY HASH (customer)"], db: "shop").status == 200)
        #expect(try await a.execute((1...30).map { ["INSERT INTO orders VALUES (?, ?, 'tea')", $0, $0] as [Any] }, db: "shop").status == 200)
        let shots = Self.repository.appendingPathComponent(".build/console-screenshots").path
        try FileManager.default.createDirectory(atPath: shots, withIntermediateDirectories: true)
        // And a node without auth: its console opens on the overview, with nothing to sign in to.
        let open = try await ProcessCluster.single("console-open", extraArgs: ["--insecure-dev"])
        defer { open.destroy() }
        let (status, said) = try await Self.runClientScript("console_test.py", [c.nodes[1].url, "admin", TestHTTP.adminPassword, "3", "4", "30", shots,
                                                                                open.nodes[0].url], seconds: 180)
        #expect(status == 0 && said.contains("OK"), "\(said.suffix(4000))")
        for shot in ["1-sign-in", "2-overview", "3-sql", "4-shards", "5-charts", "6-no-auth"] {
            #expect(FileManager.default.fileExists(atPath: shots + "/\(shot).png"), "no screenshot \(shot)")
        }
    }
}
