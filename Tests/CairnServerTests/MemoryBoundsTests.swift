import AsyncHTTPClient
import CSQLite3
import Foundation
import NIOCore
import Testing

extension ProcessTests {
@Suite("Memory on real nodes", .serialized)
struct MemoryBoundsTests {
    /// The backed-up database's size in the normal run; `CAIRN_BACKUP_MIB` makes a larger one (1024 for the long run).
    static var backupMiB: Int { ProcessInfo.processInfo.environment["CAIRN_BACKUP_MIB"].flatMap(Int.init) ?? 256 }

    /// Downloads `url` into `path` chunk by chunk (never whole in memory); the status and the byte count.
    static func download(_ url: String, to path: String) async throws -> (status: Int, bytes: Int) {
        var r = HTTPClientRequest(url: url)
        r.headers.add(name: "Authorization", value: TestHTTP.admin)
        let response = try await TestHTTP.patientClient.execute(r, timeout: .seconds(900))
        FileManager.default.createFile(atPath: path, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? out.close() }
        var bytes = 0
        for try await chunk in response.body {
            bytes += chunk.readableBytes
            try out.write(contentsOf: Data(buffer: chunk))
        }
        return (Int(response.status.code), bytes)
    }

    @Test("peak memory stays bounded, and is reported: 16 MiB bodies (one value, many statements, millions of tiny values), a flooded rqlite queue, and backups and dumps of a database larger than the node's memory use, through a follower and on the leader")
    func boundedMemory() async throws {
        // Patient: the entry that fills the database takes seconds to apply on two shared cores, and in a
        // debug build a node's loop can spend longer than the default election timeout on a 16 MiB entry
        // (checksums and encoding unoptimized), which would turn this test into one of elections.
        let c = try await ProcessCluster.founded("memory", count: 3, extraArgs: ["--request-timeout-ms", "600000", "--election-ticks", "60"])
        defer { c.destroy() }
        let leader = try await c.leader()
        let follower = c.nodes.first { $0 !== leader }!
        _ = try await c.write(["CREATE TABLE t(x)", "CREATE TABLE big(id INTEGER PRIMARY KEY, payload BLOB)"])
        let started = c.nodes.map { $0.peakRSSMiB ?? 0 }

        /// A write sent again when the cluster said it was not committed and is safe to retry (a 16 MiB
        /// entry on two busy cores can outlast an election timeout).
        func write(_ path: String, _ body: String) async throws -> HTTPResult {
            // Patient: beside the rest of the suite, two cores take a while over 16 MiB.
            func send() async throws -> HTTPResult {
                try await TestHTTP.request(.POST, follower.url + path, timeout: 300, rawBody: Array(body.utf8), contentType: "application/json")
            }
            var r = try await send()
            for _ in 0..<3 where r.status == 503 && r.text.contains("safe to retry") { r = try await send() }
            return r
        }
        // 16 MiB bodies through the follower (forwarded to the leader).
        let oneValue = #"[["INSERT INTO t VALUES(?)", ""# + String(repeating: "v", count: (16 << 20) - 100) + #""]]"#
        let r1 = try await write("/db/execute", oneValue)
        #expect(r1.status == 200 && !r1.text.contains("error"), "\(r1.status) \(r1.text.prefix(300))")
        let row = #""INSERT INTO t VALUES('"# + String(repeating: "s", count: 1_600) + #"')""#
        let manyStatements = "[" + Array(repeating: row, count: 10_000).joined(separator: ",") + "]"
        let r2 = try await write("/db/execute", manyStatements)
        #expect(r2.status == 200 && !r2.text.contains("error"), "\(r2.status) \(r2.text.prefix(300))")
        let tinyValues = #"{"statements":[["INSERT INTO t VALUES(?)""# + String(repeating: ",1", count: (8 << 20) - 100) + "]]}"
        let r3 = try await follower.raw(.POST, "/v1/db/default/execute", tinyValues, contentType: "application/json")
        #expect(r3.status == 413 && r3.text.contains("JSON values"), "\(r3.status) \(r3.text.prefix(300))")
        let afterBodies = c.nodes.map { $0.peakRSSMiB ?? 0 }

        // A database of backupMiB, made by one small entry.
        let fill = """
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < \(Self.backupMiB))
            INSERT INTO big(id, payload) SELECT i, randomblob(1048576) FROM n
            """
        let filled = try await TestHTTP.request(.POST, leader.url + "/v1/db/default/execute", ["statements": [fill]], timeout: 900)
        #expect(filled.status == 200 && !filled.text.contains("error"), "\(filled.text)")
        for n in c.nodes {
            let deadline = Date().addingTimeInterval(120)
            while Date() < deadline, (try? await n.rows("SELECT count(*) FROM big", consistency: "local").first?.first as? Int) != Self.backupMiB {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        let beforeBackups = c.nodes.map { $0.peakRSSMiB ?? 0 }
        for (via, format) in [(follower, "binary"), (leader, "binary"), (follower, "sql")] {
            let file = c.root + "/download-\(via.name).\(format)"
            let got = try await Self.download(via.url + "/db/backup?fmt=\(format)", to: file)
            #expect(got.status == 200, "backup through \(via.name): \(got.status) \((try? String(contentsOfFile: file, encoding: .utf8))?.prefix(300) ?? "")")
            if format == "binary" {
                #expect(got.bytes > Self.backupMiB << 20, "\(got.bytes) bytes")
                var db: OpaquePointer?
                #expect(sqlite3_open_v2(file, &db, SQLITE_OPEN_READONLY, nil) == SQLITE_OK)
                var stmt: OpaquePointer?
                sqlite3_prepare_v2(db, "SELECT count(*), sum(length(payload)) FROM big", -1, &stmt, nil)
                #expect(sqlite3_step(stmt) == SQLITE_ROW)
                #expect(Int(sqlite3_column_int64(stmt, 0)) == Self.backupMiB && Int(sqlite3_column_int64(stmt, 1)) == Self.backupMiB << 20)
                sqlite3_finalize(stmt)
                sqlite3_close(db)
            } else {
                // Hex doubles the BLOBs; the dump is whole.
                #expect(got.bytes > 2 * (Self.backupMiB << 20), "\(got.bytes) bytes")
                let tail = try FileHandle(forReadingFrom: URL(fileURLWithPath: file))
                try tail.seek(toOffset: UInt64(got.bytes - 8))
                #expect(String(decoding: try tail.readToEnd() ?? Data(), as: UTF8.self) == "COMMIT;\n")
                try? tail.close()
            }
            try? FileManager.default.removeItem(atPath: file)
        }
        let end = c.nodes.map { $0.peakRSSMiB ?? 0 }
        // A flooded queue on a node alone (the others stopped): it holds what its limits allow, then 503.
        for n in c.nodes where n !== follower { await n.kill9() }
        let queued = #"[["INSERT INTO t VALUES(?)", ""# + String(repeating: "q", count: 4 << 20) + #""]]"#
        var statuses: [Int] = []
        for _ in 0..<30 {
            statuses.append(try await TestHTTP.request(.POST, follower.url + "/db/execute?queue", timeout: 300, rawBody: Array(queued.utf8),
                                                       contentType: "application/json").status)
        }
        // 64 MiB of 4 MiB requests: 15 fit (each is a little over 4 MiB encoded), then none.
        let accepted = statuses.prefix { $0 == 200 }.count
        #expect(accepted == 15 && statuses.dropFirst(accepted).allSatisfy { $0 == 503 }, "\(statuses)")
        let afterQueue = follower.peakRSSMiB ?? 0
        func show(_ v: [Int]) -> String { zip(c.nodes, v).map { "\($0.0.name)\($0.0 === leader ? " (leader)" : "") \($0.1)" }.joined(separator: ", ") }
        print("""
            memory: peak RSS MiB at start: \(show(started)); after 16 MiB bodies: \(show(afterBodies)); \
            after filling \(Self.backupMiB) MiB: \(show(beforeBackups)); after 2 binary backups and a dump of it: \(show(end)); \
            \(follower.name) alone with a flooded queue: \(afterQueue)
            """)
        // Bounded: what the bodies and the queue's limit (64 MiB) account for; backups add what their
        // buffers and SQLite's caches take, the same however large the database (it is never held whole:
        // 256 MiB and 1 GiB add alike, see bench/NOTES.md).
        for (i, n) in c.nodes.enumerated() {
            #expect(end[i] < 400, "\(n.name) peaked at \(end[i]) MiB")
            #expect(n !== follower || afterQueue < 400, "\(n.name) peaked at \(afterQueue) MiB with a flooded queue")
            #expect(end[i] - beforeBackups[i] < 128, "\(n.name): backups of \(Self.backupMiB) MiB took \(end[i] - beforeBackups[i]) MiB more")
        }
        // Nothing is left behind in the data directories.
        for n in c.nodes {
            let left = try FileManager.default.contentsOfDirectory(atPath: n.dataDir).filter { $0.hasPrefix("backup-") }
            #expect(left.isEmpty, "\(n.name): \(left)")
        }
    }
}
}
