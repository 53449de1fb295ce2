import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension ProcessTests {
@Suite("The trust boundary on real nodes", .serialized)
struct TrustBoundaryTests {
    /// Every path under `root` whose mode lets the group or others in.
    private static func loose(_ root: String) -> [String] {
        var out: [String] = []
        var st = stat()
        if stat(root, &st) == 0, st.st_mode & 0o077 != 0 { out.append(root) }
        for relative in (FileManager.default.enumerator(atPath: root)?.allObjects as? [String]) ?? [] {
            let full = root + "/" + relative
            if lstat(full, &st) == 0, (st.st_mode & S_IFMT) != S_IFLNK, st.st_mode & 0o077 != 0 { out.append(full) }
        }
        return out
    }

    @Test("the data directory is 0700 and everything in it 0600 (log, databases, snapshots, audit log, identity); looser modes are tightened at start, with a log line")
    func fileModes() async throws {
        let c = try await ProcessCluster.single("modes")
        defer { c.destroy() }
        let n = c.nodes[0]
        _ = try await n.execute(["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"])
        try await Task.sleep(for: .milliseconds(300))  // the audit log is written every 100 ms
        #expect(FileManager.default.fileExists(atPath: n.dataDir + "/audit.log"))
        #expect(Self.loose(n.dataDir).isEmpty, "\(Self.loose(n.dataDir))")
        await n.terminate()
        chmod(n.dataDir, 0o755)
        chmod(n.dataDir + "/node-id", 0o644)
        chmod(n.dataDir + "/audit.log", 0o666)
        #expect(Self.loose(n.dataDir).count == 3)
        try n.start()
        try await c.waitReady()
        #expect(Self.loose(n.dataDir).isEmpty, "\(Self.loose(n.dataDir))")
        #expect(n.log.contains("3 files and directories were readable by other users"), "\(n.log.suffix(1500))")
    }

    @Test("CORS for any origin ('*') never allows the browser's credentials")
    func corsWildcard() async throws {
        let c = try await ProcessCluster.single("corsall", extraArgs: ["--cors-origins", "*"])
        defer { c.destroy() }
        let r = try await HTTPClientRequestBuilder(url: c.nodes[0].url + "/v1/health", origin: "https://evil.example").send()
        #expect(r.header("access-control-allow-origin") == "*")
        #expect(r.header("access-control-allow-credentials") == nil)
    }
}
}
