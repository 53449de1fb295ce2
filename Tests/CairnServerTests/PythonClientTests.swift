import CairnTestSupport
import Foundation
import Testing

/// rqlite's Python clients from PyPI, unmodified, against a 3-node cluster with auth on: pyrqlite's
/// DB-API and sqlalchemy-rqlite's ORM round trip (create, insert, query, update, delete, the table
/// list without CairnDB's own). They live in a virtual environment under .build, made on first use
/// (.ci/run makes it first, so the download happens before the tests).
extension ProcessTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let clientPackages = ["sqlalchemy>=2.0,<2.2", "sqlalchemy-rqlite==2.0", "pyrqlite==2.2.3"]

    /// The virtual environment's python, made (and the clients installed) if it is not there.
    static func clientPython() async throws -> String {
        let venv = repository.appendingPathComponent(".build/python-clients").path
        let python = venv + "/bin/python"
        if FileManager.default.isExecutableFile(atPath: python),
           try await runProgram(python, ["-c", "import sqlalchemy_rqlite, pyrqlite"]) == 0 { return python }
        #expect(try await runProgram("/usr/bin/env", ["python3", "-m", "venv", venv]) == 0, "python3 -m venv failed")
        let installed = try await runProgram(venv + "/bin/pip", ["install", "-q"] + clientPackages)
        guard installed == 0 else { throw TestFailure("pip install \(clientPackages) failed (PyPI unreachable?)") }
        return python
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
        let python = try await Self.clientPython()
        let c = try await ProcessCluster.founded("python-clients", count: 3)
        defer { c.destroy() }
        // Through a node that leads nothing in particular: any node serves any request.
        let node = c.nodes[1]
        let port = String(node.http.split(separator: ":").last!)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [Self.repository.appendingPathComponent("Tests/Clients/orm_roundtrip.py").path, "127.0.0.1", port, "admin", TestHTTP.adminPassword]
        let output = Pipe()
        p.standardOutput = output
        p.standardError = output
        try p.run()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let status = await exitStatus(of: p, seconds: 120)
        #expect(status == 0 && said.contains("OK ['cities', 'plain']"), "\(said.suffix(3000))")
    }
}
