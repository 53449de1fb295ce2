import ArgumentParser
import CSQLite3
import CairnClient
import CairnJSON
import Foundation
import Synchronization

struct ShellCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shell",
        abstract: "Interactive SQL shell.",
        discussion: "End statements with ';' (they may span lines). Commands start with '.': type .help for them."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Database to start in.")
    var database: String = "default"

    func run() async throws {
        try? FileManager.default.createDirectory(atPath: Profile.directory, withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o700])
        let editor = LineEditor(historyPath: Profile.directory + "/history")
        let client: CairnClient
        do {
            client = try await connection.connect(editor: editor)
        } catch {
            printError(error)
            throw ExitCode(1)
        }
        var shell = Shell(client: client, database: database, editor: editor)
        print("Connected to \(connection.hostURL), database \(database). End statements with ';'. Type .help for commands.")
        await shell.loop()
        await client.shutdown()
        // A script piped in fails as a whole if a statement did (a person at a terminal saw each error).
        if shell.failures > 0 && isatty(STDIN_FILENO) == 0 { throw ExitCode(1) }
    }
}

/// What `cairn demo`'s shell can do to the demo's nodes (`.demo`).
protocol DemoControl: Sendable {
    func describe() -> String
    func kill(_ number: Int) async -> String
    func stop(_ number: Int) async -> String
    func restart(_ number: Int) async -> String
}

struct Shell {
    let client: CairnClient
    /// Set in `cairn demo`: `.demo` acts on its nodes.
    var demo: (any DemoControl)?
    var database: String
    let editor: LineEditor
    var consistency = "linearizable"
    var freshnessMillis: Int?
    /// How results print: table, csv, json or line (`.mode`; `\\x` toggles table and line).
    var mode = "table"
    /// Whether each statement's time is shown (`.timer`).
    var timer = true
    /// `.read` files being read, so a file that reads itself is refused.
    var reading: [String] = []
    /// Statements that failed in this session.
    var failures = 0

    init(client: CairnClient, database: String, editor: LineEditor) {
        self.client = client
        self.database = database
        self.editor = editor
        let names = self.names
        editor.completions = { names.value + Self.keywords + Self.commands }
    }

    /// Table and column names of the current database, for Tab (read at start, after DDL, on `.use`).
    let names = NameList()

    static let commands = [".tables", ".schema", ".indexes", ".explain", ".databases", ".use", ".consistency", ".mode", ".expanded",
                           ".timer", ".read", ".import", ".nodes", ".status", ".demo", ".help", ".quit", ".exit"]
    static let keywords = ["SELECT", "FROM", "WHERE", "INSERT", "INTO", "VALUES", "UPDATE", "SET", "DELETE", "CREATE", "TABLE", "INDEX",
                           "DROP", "ALTER", "JOIN", "LEFT", "INNER", "ORDER", "GROUP", "BY", "HAVING", "LIMIT", "OFFSET", "DISTINCT",
                           "PRIMARY", "KEY", "NOT", "NULL", "DEFAULT", "UNIQUE", "SHARD", "HASH", "RANGE", "REFERENCE", "INTEGER", "TEXT",
                           "REAL", "BLOB", "BETWEEN", "LIKE", "COUNT", "RETURNING", "EXPLAIN", "BEGIN", "COMMIT", "TRANSACTION"]

    /// Reads the names Tab completes.
    func refreshNames() async {
        var found: [String] = []
        if let r = try? await request("SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND m.name NOT LIKE '\\_cairn%' ESCAPE '\\'") {
            for row in rows(r.first) { found += row.map(Output.cell) }
        }
        if case .array(let sharded)? = (try? await client.call(.GET, "/v1/db/\(database)/shards"))?["tables"] {
            found += sharded.map(Output.cell)
        }
        names.value = Array(Set(found)).sorted()
    }

    mutating func loop() async {
        if editor.isTerminal { await refreshNames() }
        var buffer = ""
        while true {
            let prompt = buffer.isEmpty ? "cairn:\(database)> " : "   ...> "
            guard let line = editor.readLine(prompt: prompt) else { break }
            if line == LineEditor.interrupted {
                buffer = ""
                continue
            }
            if await !feed(line, into: &buffer, remember: true) { break }
        }
        print("Bye.")
    }

    /// One line typed or read (`.read`): a command if it starts one (`.` or psql's `\\`) and no
    /// statement is under way, else part of the statement in `buffer`, run once SQLite says it is
    /// complete (semicolons inside strings, triggers...). False to quit.
    mutating func feed(_ line: String, into buffer: inout String, remember: Bool) async -> Bool {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        if buffer.isEmpty && (trimmed.hasPrefix(".") || trimmed.hasPrefix("\\")) {
            if remember { editor.remember(trimmed) }
            return await command(trimmed)
        }
        if buffer.isEmpty && trimmed.isEmpty { return true }
        buffer += (buffer.isEmpty ? "" : "\n") + line
        guard sqlite3_complete(buffer) != 0 else { return true }
        if remember { editor.remember(buffer) }
        if await !run(buffer) { failures += 1 }
        if editor.isTerminal, let first = buffer.split(whereSeparator: \.isWhitespace).first?.uppercased(), ["CREATE", "DROP", "ALTER"].contains(first) {
            await refreshNames()
        }
        buffer = ""
        return true
    }

    func request(_ sql: String) async throws -> [JSON] {
        var body: [(String, JSON)] = [("statements", .array([.string(sql)])), ("consistency", .string(consistency))]
        if let freshnessMillis { body.append(("freshness_ms", .int(freshnessMillis))) }
        let reply = try await client.call(.POST, "/v1/db/\(database)/request", .object(body))
        guard case .array(let results)? = reply["results"] else { return [] }
        return results
    }

    /// Runs `sql` and prints its results; false if it failed.
    @discardableResult
    func run(_ sql: String) async -> Bool {
        let started = Date()
        do {
            let results = try await request(sql)
            let elapsed = String(format: "%.3f", Date().timeIntervalSince(started))
            for r in results {
                var text = Output.describe(r, format: mode)
                if !timer || mode == "csv" || mode == "json" {
                    // As they are: scripts read these.
                } else if text.hasSuffix(")\n") && text.contains(" row") && r["error"] == nil && r["columns"] != nil {
                    text = String(text.dropLast(2)) + ", \(elapsed) s)\n"
                } else if r["error"] == nil {
                    text = String(text.dropLast()) + " (\(elapsed) s)\n"
                }
                print(text, terminator: "")
            }
            if timer && (mode == "csv" || mode == "json") { print("Run Time: \(elapsed) s") }
            return !results.contains { $0["error"] != nil }
        } catch {
            print("Error: \(error)")
            return false
        }
    }

    /// psql's backslash commands, as the dot commands they mean.
    static let psqlAliases = ["\\q": ".quit", "\\d": ".schema", "\\dt": ".tables", "\\di": ".indexes", "\\l": ".databases",
                              "\\c": ".use", "\\i": ".read", "\\timing": ".timer", "\\x": ".expanded", "\\?": ".help"]

    /// A dot command; false to quit.
    mutating func command(_ line: String) async -> Bool {
        var parts = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        if let dot = Self.psqlAliases[parts[0]] { parts[0] = dot }
        do {
            switch parts[0] {
            case ".quit", ".exit": return false
            case ".help":
                print("""
                    .tables               list tables                      (\\dt)
                    .schema [TABLE]       show CREATE statements           (\\d)
                    .indexes [TABLE]      list indexes                     (\\di)
                    .mode MODE            table (default), csv, json or line
                    .expanded [on|off]    one "column = value" line each   (\\x)
                    .timer on|off         show each statement's time       (\\timing)
                    .read FILE            run the statements (and commands) in FILE   (\\i)
                    .import FILE TABLE    load a CSV file into TABLE (made from the header row if new)
                    .nodes                the cluster's nodes: state, replicas, leaders
                    .status               this node's groups: role, term, leader, commit, applied
                    .demo ls|kill N|stop N|restart N
                                          (in cairn demo) the demo's nodes: kill -9, SIGTERM, start again
                    .explain SQL          where SQL would run: the shards, what each runs, how rows are combined
                    .databases            list databases
                    .use DATABASE         switch database
                    .consistency LEVEL [FRESHNESS_MS]
                                          linearizable (default), stale (with a freshness bound) or local
                    .quit                 leave (or Ctrl-D)                (\\q)
                    SQL statements end with ';' and may span lines; Ctrl-C drops the current one.
                    """)
            case ".tables":
                let r = try await request("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_cairn%' ESCAPE '\\' ORDER BY name")
                var names = rows(r.first).map { $0.map(Output.cell).joined() }
                if case .array(let sharded)? = try await client.call(.GET, "/v1/db/\(database)/shards")["tables"] {
                    names += sharded.map { Output.cell($0) + " (sharded)" }
                }
                for name in names.sorted() { print(name) }
            case ".explain":
                let sql = line.dropFirst(".explain".count).trimmingCharacters(in: .whitespaces)
                guard !sql.isEmpty else { print("Usage: .explain SQL"); return true }
                let r = try await client.call(.POST, "/v1/db/\(database)/route", .object([("statements", .array([.string(sql)]))]))
                guard case .array(let plans)? = r["plans"], let plan = plans.first else { return true }
                for key in ["plan", "shards", "worker", "reference_worker", "combine", "sqlite"] {
                    guard let value = plan[key] else { continue }
                    if case .array(let items) = value, items.contains(where: { if case .object = $0 { true } else { false } }) {
                        for item in items { print("  shard \(Output.cell(item["shard"] ?? .null)): \(Output.cell(item["sql"] ?? .null))") }
                    } else if case .array = value {
                        print("\(key): " + String(decoding: value.serialized(), as: UTF8.self))
                    } else {
                        print("\(key): \(Output.cell(value))")
                    }
                }
            case ".schema":
                let filter = parts.count > 1 ? " AND tbl_name = '\(parts[1].replacingOccurrences(of: "'", with: "''"))'" : ""
                let r = try await request("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name NOT LIKE 'sqlite\\_cairn%' ESCAPE '\\' AND name NOT LIKE '\\_cairn%' ESCAPE '\\'\(filter) ORDER BY rowid")
                for row in rows(r.first) { print(row.map(Output.cell).joined() + ";") }
            case ".databases":
                let r = try await client.call(.GET, "/v1/databases")
                if case .array(let dbs)? = r["databases"] {
                    for db in dbs { let name = Output.cell(db["name"] ?? .null); print((name == database ? "* " : "  ") + name) }
                }
            case ".use":
                guard parts.count == 2 else { print("Usage: .use DATABASE"); return true }
                let r = try await client.call(.GET, "/v1/databases")
                guard case .array(let dbs)? = r["databases"], dbs.contains(where: { $0["name"] == .string(parts[1]) }) else {
                    print("Error: no database named \"\(parts[1])\" (see .databases)")
                    return true
                }
                database = parts[1]
                print("Using database \(database).")
                if editor.isTerminal { await refreshNames() }
            case ".consistency":
                guard parts.count >= 2, ["linearizable", "stale", "local"].contains(parts[1]) else {
                    print("Usage: .consistency linearizable|stale|local [FRESHNESS_MS]   (now: \(consistency))")
                    return true
                }
                consistency = parts[1]
                freshnessMillis = parts.count > 2 ? Int(parts[2]) : nil
                print("Reads are \(consistency)" + (freshnessMillis.map { " within \($0) ms" } ?? "") + ".")
            case ".mode":
                guard parts.count == 2, ["table", "csv", "json", "line"].contains(parts[1]) else {
                    print("Usage: .mode table|csv|json|line   (now: \(mode))")
                    return true
                }
                mode = parts[1]
            case ".expanded":
                let on = parts.count > 1 ? parts[1] == "on" : mode != "line"
                mode = on ? "line" : "table"
                print("Expanded display is \(on ? "on" : "off").")
            case ".timer":
                guard parts.count <= 2, parts.count == 1 || ["on", "off"].contains(parts[1]) else { print("Usage: .timer on|off"); return true }
                timer = parts.count == 2 ? parts[1] == "on" : !timer
                print("Timing is \(timer ? "on" : "off").")
            case ".indexes":
                let filter = parts.count > 1 ? " AND tbl_name = '\(parts[1].replacingOccurrences(of: "'", with: "''"))' COLLATE NOCASE" : ""
                let r = try await request("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND name NOT LIKE '\\_cairn%' ESCAPE '\\'\(filter) ORDER BY tbl_name, name")
                print(Output.table(columns: ["index", "table"], rows: rows(r.first)), terminator: "")
            case ".read":
                guard parts.count == 2 else { print("Usage: .read FILE"); return true }
                guard reading.count < 16, !reading.contains(parts[1]) else { print("Error: \(parts[1]) is being read already"); return true }
                guard let data = FileManager.default.contents(atPath: parts[1]) else { print("Error: cannot read \(parts[1])"); return true }
                reading.append(parts[1])
                defer { reading.removeLast() }
                var buffer = ""
                // Any line ending (a CRLF file's "\r\n" is one Character, which splitting on "\n" would miss).
                for fileLine in String(decoding: data, as: UTF8.self).split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
                    if await !feed(String(fileLine), into: &buffer, remember: false) { return false }
                }
                // A last statement without its ';'.
                if !buffer.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, await !run(buffer) { failures += 1 }
            case ".import":
                guard parts.count == 3 else { print("Usage: .import FILE TABLE"); return true }
                try await importCSV(parts[1], into: parts[2])
            case ".nodes":
                let c = try await client.call(.GET, "/v1/cluster")
                guard case .array(let nodes)? = c["nodes"] else { return true }
                print(Output.table(columns: ["id", "name", "http", "state", "voter", "replicas", "leaders"], rows: nodes.map { n in
                    ["id", "name", "http_addr", "state", "voter", "replicas", "leaders"].map { n[$0] ?? .null }
                }), terminator: "")
            case ".status":
                let s = try await client.call(.GET, "/v1/status")
                if let node = s["node"] { print("node \(Output.cell(node["id"] ?? .null)) at \(Output.cell(node["http_addr"] ?? .null))") }
                guard case .array(let groups)? = s["groups"] else { return true }
                print(Output.table(columns: ["group", "role", "term", "leader", "commit", "applied"], rows: groups.map { g in
                    ["group", "role", "term", "leader", "commit", "applied"].map { g[$0] ?? .null }
                }), terminator: "")
            case ".demo":
                guard let demo else { print("Error: .demo works in the shell cairn demo opens"); return true }
                switch (parts.count > 1 ? parts[1] : "", parts.count > 2 ? Int(parts[2]) : nil) {
                case ("ls", _): print(demo.describe())
                case ("kill", let n?): print(await demo.kill(n))
                case ("stop", let n?): print(await demo.stop(n))
                case ("restart", let n?): print(await demo.restart(n))
                default: print("Usage: .demo ls | kill N | stop N | restart N")
                }
            default:
                print("Unknown command \(parts[0]); type .help")
            }
        } catch {
            print("Error: \(error)")
        }
        return true
    }

    /// `.import`: a CSV file into `table`, in atomic batches of `importBatchRows`. A table that does
    /// not exist is created from the header row (TEXT columns, as sqlite3 does); into an existing one
    /// every record is a row.
    mutating func importCSV(_ path: String, into table: String) async throws {
        guard let data = FileManager.default.contents(atPath: path) else { print("Error: cannot read \(path)"); return }
        var records = try CSV.records(String(decoding: data, as: UTF8.self))
        let quoted = "\"" + table.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        let exists = try await request("SELECT count(*) FROM pragma_table_info('\(table.replacingOccurrences(of: "'", with: "''"))')")
        var columns = Int(Output.cell(rows(exists.first).first?.first ?? .null)) ?? 0
        if columns == 0 {
            // A sharded table lives on its shards, not in the home group's schema.
            let sharded = try await client.call(.GET, "/v1/db/\(database)/shards")
            if case .array(let names)? = sharded["tables"], names.contains(.string(table)) {
                print("Error: .import into a sharded table needs its column count: send INSERTs instead")
                failures += 1
                return
            }
            guard let header = records.first, !header.isEmpty else { print("Error: \(path) is empty"); return }
            let create = "CREATE TABLE \(quoted) (" + header.map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\" TEXT" }.joined(separator: ", ") + ")"
            guard await run(create) else { failures += 1; return }
            records.removeFirst()
            columns = header.count
        }
        let insert = "INSERT INTO \(quoted) VALUES (" + Array(repeating: "?", count: columns).joined(separator: ", ") + ")"
        var done = 0
        for start in stride(from: 0, to: records.count, by: Self.importBatchRows) {
            let batch = records[start..<min(records.count, start + Self.importBatchRows)]
            if let bad = batch.firstIndex(where: { $0.count != columns }) {
                print("Error: record \(bad + 1) has \(batch[bad].count) fields, the table \(columns) columns; \(done) rows imported")
                failures += 1
                return
            }
            let statements = JSON.array(batch.map { .array([.string(insert)] + $0.map { .string($0) }) })
            let reply = try await client.call(.POST, "/v1/db/\(database)/execute", .object([("statements", statements), ("atomic", .bool(true))]))
            if case .array(let results)? = reply["results"], let failed = results.first(where: { $0["error"] != nil }) {
                print("Error: \(Output.cell(failed["error"] ?? .null)); \(done) rows imported")
                failures += 1
                return
            }
            done += batch.count
        }
        print("Imported \(done) row\(done == 1 ? "" : "s") into \(table).")
    }

    static let importBatchRows = 500

    func rows(_ result: JSON?) -> [[JSON]] {
        guard case .array(let rows)? = result?["rows"] else { return [] }
        return rows.map { if case .array(let a) = $0 { return a } else { return [] } }
    }
}

/// The names Tab completes, shared with the editor's callback.
final class NameList: Sendable {
    private let names = Mutex<[String]>([])
    var value: [String] {
        get { names.withLock { $0 } }
        set { names.withLock { $0 = newValue } }
    }
}
