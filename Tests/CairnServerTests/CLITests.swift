import CairnTestSupport
import Foundation
import NIOHTTP1
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Bytes appended by one thread and read by another.
final class ByteLog: Sendable {
    private let storage = Mutex<[UInt8]>([])
    func append(_ b: some Sequence<UInt8>) { storage.withLock { $0.append(contentsOf: b) } }
    var bytes: [UInt8] { storage.withLock { $0 } }
    var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// A child process on a pseudo-terminal, driven like a person at a keyboard.
final class TerminalSession: Sendable {
    let process: Process
    private let master: Int32
    private let output = ByteLog()
    private let matched = Mutex(0)

    init(_ arguments: [String], environment: [String: String]) throws {
        // posix_openpt and friends are not visible from Swift here; these are the ioctls behind them
        // (Linux: TIOCSPTLCK unlocks the pair, TIOCGPTN names the terminal side).
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        var unlock: Int32 = 0
        var number: UInt32 = 0
        guard master >= 0, ioctl(master, 0x4004_5431, &unlock) == 0, ioctl(master, 0x8004_5430, &number) == 0 else {
            throw TestFailure("cannot open a pseudo-terminal")
        }
        let slave = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
        process = Process()
        process.executableURL = URL(fileURLWithPath: cairnBinary)
        process.arguments = arguments
        process.environment = environment
        let handle = FileHandle(fileDescriptor: slave, closeOnDealloc: true)
        process.standardInput = handle
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let master = self.master
        let output = self.output
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(master, &buffer, buffer.count)
                if n <= 0 { return }
                output.append(buffer[0..<n])
            }
        }
    }

    var text: String { output.text }

    func type(_ s: String) {
        var bytes = Array(s.utf8)
        _ = write(master, &bytes, bytes.count)
    }

    /// Waits until the output not yet matched contains `fragment`, then counts everything up to the
    /// end of the match as matched: each expectation is met by new output, never by what an earlier
    /// step already printed.
    func expect(_ fragment: String, seconds: Double = 15) async throws {
        let end = Date() + seconds
        while true {
            let all = Array(output.bytes)
            let from = matched.withLock { $0 }
            let unseen = String(decoding: all[min(from, all.count)...], as: UTF8.self)
            if let range = unseen.range(of: fragment) {
                let upTo = unseen[..<range.upperBound].utf8.count
                matched.withLock { $0 = from + upTo }
                return
            }
            guard Date() < end else { throw TestFailure("waited for \"\(fragment)\"; the terminal shows:\n\(text)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    func close() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        Glibc.close(master)
    }
}

extension ProcessTests {
@Suite("The cairn command line", .serialized)
struct CLITests {
    @Test("cairn shell through a pseudo-terminal: login, create, insert, a multi-line select, a syntax error, history, quit")
    func shell() async throws {
        let c = try await ProcessCluster.single("shell")
        defer { c.destroy() }
        let home = c.root + "/home"
        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_HOME"] = home
        environment["TERM"] = "xterm"
        for key in ["CAIRN_USER", "CAIRN_PASSWORD", "CAIRN_HOST"] { environment[key] = nil }
        let t = try TerminalSession(["shell", "--host", c.nodes[0].url], environment: environment)
        defer { t.close() }
        try await t.expect("Username: ")
        t.type("admin\r")
        try await t.expect("Password: ")
        t.type(TestHTTP.adminPassword + "\r")
        try await t.expect("cairn:default> ")
        t.type("CREATE TABLE pets(name TEXT, legs INTEGER);\r")
        try await t.expect("OK, 0 rows affected")
        t.type("INSERT INTO pets VALUES ('cat', 4), ('bird', 2);\r")
        try await t.expect("OK, 2 rows affected")
        t.type("SELECT name, legs\r")
        try await t.expect("   ...> ")
        t.type("FROM pets ORDER BY legs;\r")
        try await t.expect("(2 rows, ")
        t.type("SELEC oops;\r")
        try await t.expect("Error: near \"SELEC\": syntax error")
        // Typed ahead while `.tables` runs: the next line waits in the terminal and runs after it
        // (switching the terminal's mode used to throw such keystrokes away).
        t.type(".tables\rSELECT 'typed' || 'ahead' AS early;\r")
        try await t.expect("pets")
        try await t.expect("typedahead")
        try await t.expect("(1 row, ")
        // Arrow-up recalls the last line; Enter runs it again.
        t.type("\u{1B}[A\r")
        try await t.expect("typedahead")
        try await t.expect("cairn:default> ")
        // Tab completes column and table names (read at start and after DDL).
        // (`leg` and `pe` are prefixes of one name each; the result's header shows what ran.)
        t.type("SELECT leg\tFROM pe\t;\r")
        try await t.expect("legs\r\n----\r\n")
        try await t.expect("(2 rows, ")
        // Home (as VT220 terminals send it) moves to the start of the line.
        t.type("1 AS homed;\u{1B}[1~SELECT \r")
        try await t.expect("homed")
        try await t.expect("(1 row, ")
        // Home in application mode (ESC O H), Ctrl-Left (a word back), PgUp (the previous entry).
        t.type("2 AS apphome;\u{1B}OHSELECT \r")
        try await t.expect("apphome")
        t.type("SELECT 7 c;\u{1B}[1;5DAS \r")
        try await t.expect("c\r\n-\r\n7\r\n")
        t.type("\u{1B}[5~\r")
        try await t.expect("c\r\n-\r\n7\r\n")
        // Ctrl-C drops the line being typed; Ctrl-R searches the history.
        t.type("SELECT 'dropped'\u{3}")
        try await t.expect("^C")
        t.type("SELECT 'kept' AS k;\r")
        try await t.expect("(1 row, ")
        t.type("\u{12}typed")
        try await t.expect("typed")
        t.type("\r")
        try await t.expect("typedahead")
        try await t.expect("cairn:default> ")
        t.type(".quit\r")
        try await t.expect("Bye.")
        let exit = await exitStatus(of: t.process, seconds: 20)
        #expect(exit == 0)
        let screen = t.text
        #expect(screen.contains("name | legs"), "\(screen)")
        #expect(screen.contains("bird | 2") && screen.contains("cat  | 4"), "\(screen)")
        #expect(!screen.contains(TestHTTP.adminPassword), "the password must not be echoed")
        #expect(!screen.contains("droppedSELECT") && !screen.contains("'dropped' AS") && !screen.contains("dropped\r\n(1 row"), "\(screen)")
        // The token is kept for next time, readable by the user only; the history too.
        let attributes = try FileManager.default.attributesOfItem(atPath: home + "/profile.json")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(try String(contentsOfFile: home + "/history", encoding: .utf8).contains("SELECT name, legs"))
        // The saved token signs a script in without asking.
        let script = Process()
        script.executableURL = URL(fileURLWithPath: cairnBinary)
        script.arguments = ["sql", "--host", c.nodes[0].url, "--format", "csv", "-e", "SELECT name FROM pets ORDER BY name"]
        script.environment = environment
        let pipe = Pipe()
        script.standardOutput = pipe
        try script.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(await exitStatus(of: script) == 0 && out == "name\nbird\ncat\n", "\(out)")
    }

    @Test("cairn demo in a terminal opens its shell: .demo ls, kill -9 of a node and queries through the others, restart from its data directory, stop; leaving the shell stops the demo and deletes its data")
    func demoShell() async throws {
        var environment = ProcessInfo.processInfo.environment
        environment["TERM"] = "xterm"
        environment["CAIRN_HOME"] = NSTemporaryDirectory() + "cairn-demo-home-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: environment["CAIRN_HOME"]!) }
        let t = try TerminalSession(["demo", "--nodes", "3", "--shards", "2"], environment: environment)
        defer { t.close() }
        try await t.expect("cairn:default> ", seconds: 90)
        let root = try #require(t.text.range(of: #"in (/\S+cairn-demo-\S+)\)"#, options: .regularExpression).map { String(t.text[$0].dropFirst(3).dropLast()) })
        t.type(".demo ls\r")
        try await t.expect("node 3 (Server2)")
        t.type(".demo kill 2\r")
        try await t.expect("Node 2 killed")
        t.type("SELECT count(*) FROM cities;\r")
        try await t.expect("(1 row, ")
        t.type(".demo restart 2\r")
        try await t.expect("Node 2 restarted from its data directory and is ready.", seconds: 60)
        t.type(".demo stop 3\r")
        try await t.expect("Node 3 stopped (SIGTERM")
        t.type(".use shop\r")
        try await t.expect("Using database shop.")
        t.type("SELECT count(*) AS n FROM orders;\r")
        try await t.expect("24")
        t.type(".demo restart 3\r")
        try await t.expect("Node 3 restarted", seconds: 60)
        t.type(".quit\r")
        try await t.expect("Done.", seconds: 60)
        #expect(await exitStatus(of: t.process, seconds: 30) == 0)
        #expect(!FileManager.default.fileExists(atPath: root), "the demo's data must be gone")
        let leftovers = try await runProgramOutput("/usr/bin/pgrep", ["-f", root])
        #expect(leftovers.isEmpty, "server processes left behind: \(leftovers)")
    }

    @Test("cairn sql -f: a file or standard input, statement by statement (triggers and strings with ';' whole); the first failure stops the script with status 1 unless --continue-on-error; a failing statement piped into cairn shell exits 1; cairn --version")
    func sqlScripts() async throws {
        let c = try await ProcessCluster.single("sql-scripts")
        defer { c.destroy() }
        let environment = c.cliEnvironment
        let host = ["--host", c.nodes[0].url]
        let (versionStatus, version) = try await runCairn(["--version"], environment: environment)
        #expect(versionStatus == 0 && version.hasPrefix("cairn-"), "\(version)")

        let script = c.root + "/setup.sql"
        try """
            -- a comment; with a semicolon
            CREATE TABLE t(x TEXT);
            CREATE TRIGGER tr AFTER INSERT ON t BEGIN
                UPDATE t SET x = x || ';' WHERE rowid = NEW.rowid;
            END;
            INSERT INTO t VALUES ('a;b');
            SELECT x FROM t
            """.write(toFile: script, atomically: true, encoding: .utf8)
        let (status, out) = try await runCairn(["sql", "-f", script, "--format", "csv"] + host, environment: environment)
        #expect(status == 0 && out.contains("a;b;"), "\(out)")
        let (stdinStatus, stdinOut) = try await runCairn(["sql", "-f", "-", "--format", "csv"] + host, environment: environment, input: "SELECT count(*) AS n FROM t;\n")
        #expect(stdinStatus == 0 && stdinOut.contains("1"), "\(stdinOut)")

        let failing = "INSERT INTO t VALUES ('ok1');\nSELEC oops;\nINSERT INTO t VALUES ('never');\n"
        let (stopped, stoppedOut) = try await runCairn(["sql", "-f", "-"] + host, environment: environment, input: failing)
        #expect(stopped == 1 && stoppedOut.contains("statement 2 of 3 failed"), "\(stoppedOut)")
        let count = { () async throws -> String in
            try await runCairn(["sql", "-e", "SELECT count(*) FROM t WHERE x LIKE 'never%'", "--format", "csv"] + host, environment: environment).1
        }
        #expect(try await count().hasSuffix("0"), "the statement after the failure ran")
        let (went, _) = try await runCairn(["sql", "-f", "-", "--continue-on-error"] + host, environment: environment, input: failing)
        #expect(went == 1)
        #expect(try await count().hasSuffix("1"), "--continue-on-error did not go on")

        let (shellStatus, shellOut) = try await runCairn(["shell"] + host, environment: environment, input: "SELECT 1;\nSELEC oops;\n")
        #expect(shellStatus == 1, "a failing statement piped into the shell: \(shellOut)")
        let (okShell, _) = try await runCairn(["shell"] + host, environment: environment, input: "SELECT 1;\n")
        #expect(okShell == 0)
    }

    @Test("cairn shell's commands: .mode csv|json|line|table with wide characters aligned, .timer, .indexes and psql's \\di, .read of statements and commands, .import of a CSV file (quoted commas and line breaks) into a new table, .nodes, .status, \\x")
    func shellCommands() async throws {
        let c = try await ProcessCluster.single("shell-commands")
        defer { c.destroy() }
        let environment = c.cliEnvironment
        try "INSERT INTO t VALUES (3, 'c');\n.mode csv\nSELECT count(*) AS n FROM t;\n.mode table\n".write(toFile: c.root + "/script.sql", atomically: true, encoding: .utf8)
        try "name,city\n\"Smith, J\",\"Oslo\"\nAda,\"Lon\ndon\"\n".write(toFile: c.root + "/people.csv", atomically: true, encoding: .utf8)
        let input = """
            .mode csv
            .timer off
            CREATE TABLE t (k INTEGER, name TEXT);
            INSERT INTO t VALUES (1, '東京'), (2, 'ab');
            SELECT * FROM t ORDER BY k;
            .mode json
            SELECT * FROM t ORDER BY k;
            .mode line
            SELECT * FROM t WHERE k = 1;
            .mode table
            SELECT name, k FROM t ORDER BY k;
            CREATE INDEX t_name ON t(name);
            \\di t
            .read \(c.root)/script.sql
            .import \(c.root)/people.csv people
            .mode csv
            SELECT * FROM people ORDER BY rowid;
            .mode table
            .nodes
            .status
            \\x
            SELECT 1 AS one;
            .timer on
            SELECT 2 AS two;

            """
        let (status, out) = try await runCairn(["shell", "--host", c.nodes[0].url], environment: environment, input: input)
        #expect(status == 0, "\(out)")
        for expected in ["k,name\n1,東京\n2,ab\n", #"[{"k":1,"name":"東京"},{"k":2,"name":"ab"}]"#, "-[ RECORD 1 ]-\n   k = 1\nname = 東京\n",
                         "name | k\n-----+--\n東京 | 1\nab   | 2\n(2 rows)\n", "index  | table\n-------+------\nt_name | t\n", "n\n3\n",
                         "Imported 2 rows into people.", "name,city\n\"Smith, J\",Oslo\nAda,\"Lon\ndon\"\n", "| live  |", "group | role",
                         "-[ RECORD 1 ]-\none = 1\n(1 row)\n", "two = 2\n(1 row, "] {
            #expect(out.contains(expected), "missing \(expected) in:\n\(out)")
        }
        // A .read file that fails a statement makes the piped shell fail as a whole.
        try "SELEC broken;\n".write(toFile: c.root + "/bad.sql", atomically: true, encoding: .utf8)
        let (badStatus, _) = try await runCairn(["shell", "--host", c.nodes[0].url], environment: environment, input: ".read \(c.root)/bad.sql\n")
        #expect(badStatus == 1)
    }

    @Test("cairn backup and restore stream files larger than a request with progress: a SQLite file round-trips through another database; a SQL dump over --max-body-bytes is refused with a pointer to --replace, and with it is built here and replaces the database")
    func largeRestores() async throws {
        let c = try await ProcessCluster.single("large-restores", extraArgs: ["--max-body-bytes", "1048576"])
        defer { c.destroy() }
        let environment = c.cliEnvironment
        let host = ["--host", c.nodes[0].url]
        // About 3 MiB of rows, in requests under the 1 MiB limit.
        #expect(try await c.nodes[0].execute(["CREATE TABLE big (k INTEGER PRIMARY KEY, v TEXT)"]).status == 200)
        let value = String(repeating: "v", count: 1000)
        for batch in 0..<6 {
            let rows = (0..<500).map { k in ["INSERT INTO big VALUES (?, ?)", batch * 500 + k, value] as [Any] }
            #expect(try await c.nodes[0].execute(rows).status == 200)
        }
        let binary = c.root + "/big.sqlite", dump = c.root + "/big.sql"
        let (b1, o1) = try await runCairn(["backup", binary] + host, environment: environment)
        let (b2, o2) = try await runCairn(["backup", dump, "--format", "sql"] + host, environment: environment)
        #expect(b1 == 0 && b2 == 0, "\(o1) \(o2)")
        let dumpBytes = (try FileManager.default.attributesOfItem(atPath: dump)[.size] as? Int) ?? 0
        #expect(dumpBytes > 2 << 20, "the dump is \(dumpBytes) bytes")
        #expect(try await c.nodes[0].post("/v1/databases", ["name": "copy"]).status == 201)
        let (r1, out1) = try await runCairn(["restore", binary, "--database", "copy"] + host, environment: environment)
        #expect(r1 == 0 && out1.contains("restore [##############################] 100%") && out1.contains("Restored"), "\(out1)")
        #expect(try await c.nodes[0].query("SELECT count(*), sum(length(v)) FROM big", db: "copy").text.contains("[[3000,3000000]]"))

        #expect(try await c.nodes[0].post("/v1/databases", ["name": "fromsql"]).status == 201)
        let (r2, out2) = try await runCairn(["restore", dump, "--database", "fromsql"] + host, environment: environment)
        #expect(r2 == 1 && out2.contains("--replace"), "\(out2)")
        let (r3, out3) = try await runCairn(["restore", dump, "--database", "fromsql", "--replace"] + host, environment: environment)
        #expect(r3 == 0 && out3.contains("the database was replaced"), "\(out3)")
        #expect(try await c.nodes[0].query("SELECT count(*), sum(length(v)) FROM big", db: "fromsql").text.contains("[[3000,3000000]]"))
    }

    @Test("cairn bench: every workload, on both APIs, loads its table and reports its operations, no errors and ordered percentiles")
    func bench() async throws {
        let c = try await ProcessCluster.single("bench")
        defer { c.destroy() }
        let n = c.nodes[0]
        let environment = c.cliEnvironment
        let common = ["bench", "--host", n.url, "--concurrency", "4", "--ops", "40", "--warmup", "0", "--keys", "200", "--json"]
        let runs: [(options: [String], table: String?)] = [
            (["--workload", "insert"], "bench"),
            (["--workload", "batch-insert", "--batch", "5"], "bench"),
            (["--workload", "select", "--distribution", "zipfian"], nil),
            (["--workload", "select", "--consistency", "stale"], nil),
            (["--workload", "mixed-90-10"], nil),
            (["--workload", "mixed-50-50", "--value-size", "10"], nil),
            (["--workload", "kv-put"], nil),
            (["--workload", "kv-get"], nil),
            (["--workload", "insert", "--rqlite"], "default"),
            (["--workload", "select", "--rqlite"], nil),
        ]
        for (options, table) in runs {
            let (status, out) = try await runCairn(common + options, environment: environment)
            let report = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], "\(options): \(out)")
            #expect(status == 0, "\(options): \(out)")
            #expect((report["operations"] as? Int ?? 0) >= 40 && report["errors"] as? Int == 0, "\(options): \(out)")
            #expect((report["throughput"] as? Double ?? 0) > 0 && report["api"] as? String == (options.contains("--rqlite") ? "rqlite" : "native"))
            let latency = report["latency_us"] as? [String: Int] ?? [:]
            let ordered = ["p50", "p90", "p99", "p99.9", "max"].map { latency[$0] ?? -1 }
            #expect(ordered.first! > 0 && ordered == ordered.sorted(), "\(options): \(latency)")
            // Inserts add rows above the 200 loaded ones: the load happened and the writes landed.
            if let table {
                let count = try await n.raw(.POST, "/v1/db/\(table)/query", #"{"statements":["SELECT count(*), min(k) FROM bench"]}"#)
                let row = ((count.json["results"] as? [[String: Any]])?.first?["rows"] as? [[Any]])?.first ?? []
                #expect((row.first as? Int ?? 0) >= 240 && row.last as? Int == 0, "\(options): \(count.text)")
            }
        }
        let (status, out) = try await runCairn(common + ["--workload", "upsert"], environment: environment)
        #expect(status != 0 && out.contains("--workload must be one of"), "\(out)")
    }

    @Test("cairn demo (no terminal: it only serves): a working 3-node cluster with auth on and the credentials it prints, sample tables sharded too, a background workload, shard-lb's /add starting the servers it names; after SIGINT no process and no temporary directory is left")
    func demo() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cairnBinary)
        p.arguments = ["demo", "--nodes", "3", "--workload", "insert", "--workload-clients", "2"]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        let collected = ByteLog()
        pipe.fileHandleForReading.readabilityHandler = { h in collected.append(h.availableData) }
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        func text() -> String { collected.text }
        let end = Date() + 90
        while !text().contains("Press Ctrl-C") {
            guard Date() < end, p.isRunning else { throw TestFailure("the demo did not come up:\n\(text())") }
            try await Task.sleep(for: .milliseconds(100))
        }
        let out = text()
        #expect(!out.contains("WITHOUT authentication"))
        let password = try #require(out.range(of: #"Credentials:\s+admin / \S+"#, options: .regularExpression)
            .map { String(out[$0]).components(separatedBy: " / ").last! })
        let basic = "Basic " + Data("admin:\(password)".utf8).base64EncodedString()
        let root = try #require(out.range(of: #"in (/\S+cairn-demo-\S+)\)"#, options: .regularExpression).map { String(out[$0].dropFirst(3).dropLast()) })
        let api = try #require(out.range(of: #"http://127\.0\.0\.1:\d+"#, options: .regularExpression).map { String(out[$0]) })
        #expect(out.contains("Credentials:") && out.contains("shell --host \(api)"))
        let anonymous = try await TestHTTP.request(.POST, api + "/v1/db/default/query", ["statements": ["SELECT count(*) FROM cities"]], authorization: nil)
        #expect(anonymous.status == 401, "auth is on: \(anonymous.text)")
        let r = try await TestHTTP.request(.POST, api + "/v1/db/default/query", ["statements": ["SELECT count(*) FROM cities"]], authorization: basic)
        #expect(r.text.contains("[[10]]"), "\(r.text)")
        let orders = try await TestHTTP.request(.POST, api + "/v1/db/shop/query", ["statements": ["SELECT count(*) FROM orders"]], authorization: basic)
        #expect(orders.text.contains("[[24]]"), "\(orders.text)")
        // The workload writes as it runs.
        var written = 0
        for _ in 0..<100 where written == 0 {
            let w = try await TestHTTP.request(.POST, api + "/v1/db/workload/query", ["statements": ["SELECT count(*) FROM bench"]], authorization: basic)
            written = ((w.json["results"] as? [Object])?.first?["rows"] as? [[Int]])?.first?.first ?? 0
            if written == 0 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(written > 0, "the workload wrote nothing")
        let console = try await TestHTTP.request(.GET, api + "/console", authorization: nil)
        #expect(console.status == 200 && console.text.contains("CairnDB console"))
        // Seed 004's API on each node, under the server names its README example uses.
        let lb = try #require(out.range(of: #"Seed 004's API:\s+http://127\.0\.0\.1:\d+"#, options: .regularExpression)
            .map { String(out[$0]).components(separatedBy: " ").last! })
        let home = try await TestHTTP.request(.GET, lb + "/home", authorization: nil)
        #expect(home.text.contains("Hello from server: Server0"), "\(home.text)")
        // Supervised local mode: /add's new servers are started by the demo, a template name given a
        // number, as the seed's load balancer started containers; they join and hold the new shard.
        func lbCall(_ method: HTTPMethod, _ path: String, _ body: Any) async throws -> HTTPResult {
            try await TestHTTP.request(method, lb + path, body, timeout: 300, authorization: nil)
        }
        let configured = try await lbCall(.POST, "/init", ["N": 3, "schema": ["columns": ["Stud_id", "Stud_name", "Stud_marks"], "dtypes": ["Number", "String", "String"]],
                                                           "shards": [["Stud_id_low": 0, "Shard_id": "sh1", "Shard_size": 4096]],
                                                           "servers": ["Server0": ["sh1"], "Server1": ["sh1"], "Server2": ["sh1"]]])
        #expect(configured.status == 200, "\(configured.text)")
        let added = try await lbCall(.POST, "/add", ["n": 2, "new_shards": [["Stud_id_low": 4096, "Shard_id": "sh2", "Shard_size": 4096]],
                                                     "servers": ["Server3": ["sh2"], "Server[5]": ["sh2"]]])
        #expect(added.status == 200 && added.json["N"] as? Int == 5, "\(added.text)")
        let message = added.json["message"] as? String ?? ""
        #expect(message.range(of: #"^Add Server3 and Server\d{5}$"#, options: .regularExpression) != nil || message.range(of: #"^Add Server\d{5} and Server3$"#, options: .regularExpression) != nil, "\(message)")
        let members = (try await TestHTTP.request(.GET, api + "/v1/cluster", authorization: basic)).json["nodes"] as? [Object] ?? []
        #expect(members.count == 5 && members.contains { $0["name"] as? String == "Server3" }, "\(members)")
        #expect((try await lbCall(.POST, "/write", ["data": [["Stud_id": 5000, "Stud_name": "e", "Stud_marks": 5]]])).status == 200)
        let read = try await lbCall(.POST, "/read", ["Stud_id": ["low": 4096, "high": 8191]])
        #expect((read.json["data"] as? [Object])?.compactMap { $0["Stud_id"] as? Int } == [5000], "\(read.text)")
        #expect(text().contains("Started node 4, Server3") || text().contains("Started node 5, Server3"), "\(text())")
        #expect(FileManager.default.fileExists(atPath: root))

        kill(p.processIdentifier, SIGINT)
        let exit = await exitStatus(of: p, seconds: 30)
        #expect(exit == 0, "\(text())")
        #expect(!FileManager.default.fileExists(atPath: root), "the demo's data must be gone")
        let leftovers = try await runProgramOutput("/usr/bin/pgrep", ["-f", root])
        #expect(leftovers.isEmpty, "server processes left behind: \(leftovers)")
    }
}
}

/// Runs `cairn` to its end: exit status, and standard output and error together.
func runCairn(_ arguments: [String], environment: [String: String], input: String? = nil) async throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: cairnBinary)
    p.arguments = arguments
    p.environment = environment
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    let stdin = Pipe()
    if input != nil { p.standardInput = stdin }
    try p.run()
    if let input {
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
    }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    let status = await exitStatus(of: p, seconds: 120)
    return (status ?? -1, String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
}

/// A program's standard output.
func runProgramOutput(_ path: String, _ arguments: [String]) async throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    _ = await exitStatus(of: p)
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}
