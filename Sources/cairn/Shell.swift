import ArgumentParser
import CSQLite3
import CairnClient
import CairnJSON
import Foundation

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

struct Shell {
    let client: CairnClient
    var database: String
    let editor: LineEditor
    var consistency = "linearizable"
    var freshnessMillis: Int?
    /// Statements that failed in this session.
    var failures = 0

    init(client: CairnClient, database: String, editor: LineEditor) {
        self.client = client
        self.database = database
        self.editor = editor
    }

    mutating func loop() async {
        var buffer = ""
        while true {
            let prompt = buffer.isEmpty ? "cairn:\(database)> " : "   ...> "
            guard let line = editor.readLine(prompt: prompt) else { break }
            if line == LineEditor.interrupted {
                buffer = ""
                continue
            }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if buffer.isEmpty && trimmed.hasPrefix(".") {
                editor.remember(trimmed)
                if await !command(trimmed) { break }
                continue
            }
            if buffer.isEmpty && trimmed.isEmpty { continue }
            buffer += (buffer.isEmpty ? "" : "\n") + line
            // SQLite decides when a statement is complete (semicolons inside strings, triggers...).
            guard sqlite3_complete(buffer) != 0 else { continue }
            editor.remember(buffer)
            if await !run(buffer) { failures += 1 }
            buffer = ""
        }
        print("Bye.")
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
                var text = Output.describe(r)
                if text.hasSuffix(")\n") && text.contains(" row") && r["error"] == nil && r["columns"] != nil {
                    text = String(text.dropLast(2)) + ", \(elapsed) s)\n"
                } else if r["error"] == nil {
                    text = String(text.dropLast()) + " (\(elapsed) s)\n"
                }
                print(text, terminator: "")
            }
            return !results.contains { $0["error"] != nil }
        } catch {
            print("Error: \(error)")
            return false
        }
    }

    /// A dot command; false to quit.
    mutating func command(_ line: String) async -> Bool {
        let parts = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        do {
            switch parts[0] {
            case ".quit", ".exit": return false
            case ".help":
                print("""
                    .tables               list tables
                    .schema [TABLE]       show CREATE statements
                    .explain SQL          where SQL would run: the shards, what each runs, how rows are combined
                    .databases            list databases
                    .use DATABASE         switch database
                    .consistency LEVEL [FRESHNESS_MS]
                                          linearizable (default), stale (with a freshness bound) or local
                    .quit                 leave (or Ctrl-D)
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
            case ".consistency":
                guard parts.count >= 2, ["linearizable", "stale", "local"].contains(parts[1]) else {
                    print("Usage: .consistency linearizable|stale|local [FRESHNESS_MS]   (now: \(consistency))")
                    return true
                }
                consistency = parts[1]
                freshnessMillis = parts.count > 2 ? Int(parts[2]) : nil
                print("Reads are \(consistency)" + (freshnessMillis.map { " within \($0) ms" } ?? "") + ".")
            default:
                print("Unknown command \(parts[0]); type .help")
            }
        } catch {
            print("Error: \(error)")
        }
        return true
    }

    func rows(_ result: JSON?) -> [[JSON]] {
        guard case .array(let rows)? = result?["rows"] else { return [] }
        return rows.map { if case .array(let a) = $0 { return a } else { return [] } }
    }
}
