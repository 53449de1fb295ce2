import ArgumentParser
import CSQLite3
import CairnClient
import CairnJSON
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` with a signed-in client; errors print readably and exit with status 1.
func withClient(_ connection: ConnectionOptions, _ body: (CairnClient) async throws -> Void) async throws {
    let client: CairnClient
    do {
        client = try await connection.connect()
    } catch {
        printError(error)
        throw ExitCode(1)
    }
    do {
        try await body(client)
    } catch let e as ExitCode {
        await client.shutdown()
        throw e
    } catch {
        await client.shutdown()
        printError(error)
        throw ExitCode(1)
    }
    await client.shutdown()
}

struct SQLCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sql", abstract: "Run SQL from the command line, a file or standard input.",
        discussion: "Statements run in order, each on its own; the first that fails stops the script (exit status 1) unless --continue-on-error.")

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .shortAndLong, help: "SQL to run (repeat for several; each may hold several statements).")
    var execute: [String] = []

    @Option(name: .shortAndLong, help: "A file of SQL statements to run, one after another (- for standard input).")
    var file: String?

    @Flag(help: "Go on after a statement fails (the exit status is still 1).")
    var continueOnError = false

    @Option(help: "table, json or csv.")
    var format: String = "table"

    @Option(help: "Database.")
    var database: String = "default"

    @Option(help: "linearizable, stale or local.")
    var consistency: String = "linearizable"

    func validate() throws {
        guard ["table", "json", "csv"].contains(format) else { throw ValidationError("--format must be table, json or csv") }
        guard !execute.isEmpty || file != nil else { throw ValidationError("give SQL with -e, or a file with -f (- for standard input)") }
    }

    func run() async throws {
        var statements = execute
        if let file {
            guard let data = file == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: file) else {
                printError(ClientError(status: 0, message: "cannot read \(file)"))
                throw ExitCode(1)
            }
            statements += SQLScript.statements(String(decoding: data, as: UTF8.self))
        }
        try await withClient(connection) { client in
            var failed = false
            for (k, sql) in statements.enumerated() {
                let reply = try await client.call(.POST, "/v1/db/\(database)/request",
                                                  .object([("statements", .array([.string(sql)])), ("consistency", .string(consistency))]))
                var thisFailed = false
                if case .array(let results)? = reply["results"] {
                    for r in results where r["error"] != nil { thisFailed = true }
                    if format != "json" { for r in results { print(Output.describe(r, format: format), terminator: "") } }
                }
                if format == "json" { print(String(decoding: reply.serialized(), as: UTF8.self)) }
                guard thisFailed else { continue }
                failed = true
                if !continueOnError {
                    if statements.count > 1 {
                        try? FileHandle.standardError.write(contentsOf: Data("cairn sql: statement \(k + 1) of \(statements.count) failed; the rest did not run\n".utf8))
                    }
                    throw ExitCode(1)
                }
            }
            if failed { throw ExitCode(1) }
        }
    }
}

/// A script cut into statements where SQLite says one is complete (semicolons in strings, comments
/// and trigger bodies do not end one).
enum SQLScript {
    static func statements(_ text: String) -> [String] {
        var out: [String] = []
        var buffer = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            buffer += (buffer.isEmpty ? "" : "\n") + line
            if sqlite3_complete(buffer) != 0 {
                let statement = buffer.trimmingCharacters(in: .whitespacesAndNewlines)
                if !statement.isEmpty && statement != ";" { out.append(statement) }
                buffer = ""
            }
        }
        let rest = buffer.trimmingCharacters(in: .whitespacesAndNewlines)
        if !rest.isEmpty { out.append(rest) }
        return out
    }
}

struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cluster", abstract: "The cluster.", subcommands: [Status.self, JoinToken.self, Settings.self])

    struct Settings: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the cluster's runtime settings, or change some: cairn cluster settings dead_after_ms=600000 shard_split_bytes=0")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "NAME=VALUE pairs to change (none: show them).") var changes: [String] = []

        func run() async throws {
            var body: [(String, JSON)] = []
            for change in changes {
                let parts = change.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, let value = Int64(parts[1]) else { throw ValidationError("expected NAME=VALUE with a whole number, not \"\(change)\"") }
                body.append((parts[0], .number(String(value))))
            }
            try await withClient(connection) { client in
                let r = body.isEmpty ? try await client.call(.GET, "/v1/cluster/settings") : try await client.call(.PUT, "/v1/cluster/settings", .object(body))
                guard case .object(let members) = r else { return }
                print(Output.table(columns: ["setting", "value"], rows: members.map { [.string($0.0), $0.1] }), terminator: "")
            }
        }
    }

    struct JoinToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "join-token",
            abstract: "Mint a single-use join token (needs all): a new node started with it in $CAIRN_JOIN_TOKEN or --join-token-file joins once.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "How long the token stays valid, in seconds (at most 7 days).") var ttlSeconds: Int = 3600

        func run() async throws {
            try await withClient(connection) { client in
                let r = try await client.call(.POST, "/v1/cluster/join-tokens", .object([("ttl_seconds", .int(Int64(ttlSeconds)))]))
                guard case .string(let token)? = r["token"] else { throw ValidationError("the server sent no token") }
                print(token)
                if case .string(let until)? = r["expires_at"] {
                    try? FileHandle.standardError.write(contentsOf: Data("valid once, until \(until)\n".utf8))
                }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Nodes, and where each database lives and who leads it.")
        @OptionGroup var connection: ConnectionOptions

        /// "entry 120 of 130": how far a joining copy has caught up (blank where unknown).
        static func progress(_ p: JSON?) -> String {
            guard let p, case .number(let match)? = p["match_index"], case .number(let last)? = p["last_index"] else { return "" }
            return "entry \(match) of \(last)"
        }

        func run() async throws {
            try await withClient(connection) { client in
                let c = try await client.call(.GET, "/v1/cluster")
                guard case .array(let nodes)? = c["nodes"], case .array(let groups)? = c["groups"] else { return }
                print(Output.table(columns: ["node", "http", "raft", "voter", "state", "replicas", "leaders"], rows: nodes.map { n in
                    [n["id"] ?? .null, n["http_addr"] ?? .null, n["raft_addr"] ?? .null, n["voter"] ?? .null, n["state"] ?? .null, n["replicas"] ?? .null,
                     n["leaders"] ?? .null]
                }))
                print(Output.table(columns: ["database", "shard", "group", "leader", "replicas"], rows: groups.map { g in
                    [g["name"] ?? .null, g["shard"] ?? .string(""), g["group"] ?? .null, g["leader"] ?? .null,
                     .string(g["replicas"].map { String(decoding: $0.serialized(), as: UTF8.self) } ?? "all voters")]
                }), terminator: "")
                if case .array(let moves)? = c["moves"], !moves.isEmpty {
                    print("moves in progress:")
                    let rows: [[JSON]] = moves.map { m in
                        [m["database"] ?? .null, m["shard"] ?? .string(""), m["group"] ?? .null, m["node"] ?? .null, m["state"] ?? .null,
                         .string(Self.progress(m["progress"]))]
                    }
                    print(Output.table(columns: ["database", "shard", "group", "node", "state", "caught up"], rows: rows), terminator: "")
                }
                if case .array(let splits)? = c["splits"], !splits.isEmpty {
                    print("splits in progress:")
                    print(Output.table(columns: ["database", "shard", "group", "new shard", "new group", "state"], rows: splits.map { s in
                        [s["database"] ?? .null, s["shard"] ?? .null, s["group"] ?? .null, s["child"] ?? .null, s["child_group"] ?? .null, s["state"] ?? .null]
                    }), terminator: "")
                }
            }
        }
    }
}

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "node", abstract: "Nodes.", subcommands: [Drain.self, Remove.self])

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move a node's replicas to other nodes (new copy first), before removing it.")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The node's id (see cairn cluster status).") var id: UInt64

        func run() async throws {
            try await withClient(connection) { client in
                try await client.call(.POST, "/v1/cluster/drain", .object([("id", .int(id))]))
                print("Draining node \(id): its replicas move away one at a time (cairn cluster status shows how many it holds).")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a node from the cluster (it shuts itself down).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The node's id (see cairn cluster status).") var id: UInt64

        func run() async throws {
            try await withClient(connection) { client in
                try await client.call(.POST, "/v1/cluster/remove", .object([("id", .int(id))]))
                print("Removed node \(id).")
            }
        }
    }
}

/// A new password: from a file, or typed twice.
func newPassword(file: String?, for user: String) throws -> String {
    if let file { return try Cairn.readSecret(file) }
    let editor = LineEditor(historyPath: nil)
    guard let first = editor.readSecret(prompt: "New password for \(user): "),
          let second = editor.readSecret(prompt: "Again: ") else { throw ExitCode(1) }
    guard first == second else { throw ValidationError("the passwords differ") }
    return first
}

/// `PERMISSION` or `PERMISSION:DATABASE`.
func grantJSON(_ text: String) -> JSON {
    let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
    var members: [(String, JSON)] = [("permission", .string(parts[0]))]
    if parts.count > 1 { members.append(("database", .string(parts[1]))) }
    return .object(members)
}

struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "user", abstract: "Users and their permissions.",
                                                    subcommands: [Add.self, Grant.self, Revoke.self, Passwd.self, List.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a user.")
        @OptionGroup var connection: ConnectionOptions
        @Argument var name: String
        @Option(name: .customLong("grant"), help: "PERMISSION or PERMISSION:DATABASE (repeatable), e.g. read:sales, write:*, status.")
        var grants: [String] = []
        @Option(help: "File holding the new user's password (else typed twice).") var newPasswordFile: String?

        func run() async throws {
            let password = try newPassword(file: newPasswordFile, for: name)
            try await withClient(connection) { client in
                try await client.call(.POST, "/v1/users", .object([("username", .string(name)), ("password", .string(password)),
                                                                    ("grants", .array(grants.map(grantJSON)))]))
                print("Created user \(name).")
            }
        }
    }

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Grant a permission (PERMISSION or PERMISSION:DATABASE).")
        @OptionGroup var connection: ConnectionOptions
        @Argument var name: String
        @Argument var permission: String

        func run() async throws {
            try await withClient(connection) { client in
                try await client.call(.POST, "/v1/users/\(name)/grants", grantJSON(permission))
                print("Granted \(permission) to \(name).")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a permission.")
        @OptionGroup var connection: ConnectionOptions
        @Argument var name: String
        @Argument var permission: String

        func run() async throws {
            try await withClient(connection) { client in
                try await client.call(.DELETE, "/v1/users/\(name)/grants", grantJSON(permission))
                print("Revoked \(permission) from \(name).")
            }
        }
    }

    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a password (revokes the user's tokens).")
        @OptionGroup var connection: ConnectionOptions
        @Argument var name: String
        @Option(help: "File holding the new password (else typed twice).") var newPasswordFile: String?

        func run() async throws {
            let password = try newPassword(file: newPasswordFile, for: name)
            try await withClient(connection) { client in
                try await client.call(.PUT, "/v1/users/\(name)/password", .object([("password", .string(password))]))
                print("Changed the password of \(name); its earlier tokens no longer work.")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users and their grants.")
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            try await withClient(connection) { client in
                let r = try await client.call(.GET, "/v1/users")
                guard case .array(let users)? = r["users"] else { return }
                print(Output.table(columns: ["user", "grants"], rows: users.map { u in
                    var grants: [String] = []
                    if case .array(let gs)? = u["grants"] {
                        grants = gs.map { g in Output.cell(g["permission"] ?? .null) + (g["database"].map { ":" + Output.cell($0) } ?? "") }
                    }
                    return [u["username"] ?? .null, .string(grants.joined(separator: ", "))]
                }), terminator: "")
            }
        }
    }
}

struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "db", abstract: "Databases.", subcommands: [Create.self, Drop.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a database (its sharded tables are spread over --shards shards).")
        @OptionGroup var connection: ConnectionOptions
        @Argument var name: String
        @Option(help: "How many shards the database's sharded tables are spread over (default 16).") var shards: Int?
        func run() async throws {
            try await withClient(connection) { client in
                var body: [(String, JSON)] = [("name", .string(name))]
                if let shards { body.append(("shards", .int(shards))) }
                let r = try await client.call(.POST, "/v1/databases", .object(body))
                print("Created database \(name) (group \(Output.cell(r["group"] ?? .null)), \(Output.cell(r["shards"] ?? .null)) shards).")
            }
        }
    }

    struct Drop: AsyncParsableCommand {
        @OptionGroup var connection: ConnectionOptions
        @Argument var name: String
        func run() async throws {
            try await withClient(connection) { client in
                try await client.call(.DELETE, "/v1/databases/\(name)")
                print("Dropped database \(name).")
            }
        }
    }

    struct List: AsyncParsableCommand {
        @OptionGroup var connection: ConnectionOptions
        func run() async throws {
            try await withClient(connection) { client in
                let r = try await client.call(.GET, "/v1/databases")
                guard case .array(let dbs)? = r["databases"] else { return }
                print(Output.table(columns: ["database", "group", "replicas"], rows: dbs.map { d in
                    [d["name"] ?? .null, d["group"] ?? .null, .string(d["replicas"].map { String(decoding: $0.serialized(), as: UTF8.self) } ?? "")]
                }), terminator: "")
            }
        }
    }
}

/// A progress bar on standard error (a final line only when it is not a terminal).
final class ProgressBar: Sendable {
    private let label: String
    private let tty = isatty(STDERR_FILENO) != 0
    private let last = Mutex(Date.distantPast)

    init(_ label: String) { self.label = label }

    static let building = ProgressBar("building")

    func update(_ done: Int64, _ total: Int64?, final: Bool = false) {
        guard tty || final else { return }
        let due = last.withLock { last in
            guard final || Date().timeIntervalSince(last) > 0.1 else { return false }
            last = Date()
            return true
        }
        guard due else { return }
        let mib = String(format: "%.1f MiB", Double(done) / 1_048_576)
        var line = "\r\(label) "
        if let total, total > 0 {
            let fraction = min(1, Double(done) / Double(total))
            let filled = Int(fraction * 30)
            line += "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled) + "] "
            line += String(format: "%3.0f%% ", fraction * 100) + mib + String(format: " / %.1f MiB", Double(total) / 1_048_576)
        } else {
            line += mib
        }
        try? FileHandle.standardError.write(contentsOf: Data(((tty ? line : String(line.dropFirst())) + (final ? "\n" : "")).utf8))
    }
}

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "backup", abstract: "Download a consistent copy of a database.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "File to write.") var file: String
    @Option(help: "Database.") var database: String = "default"
    @Option(help: "binary (a SQLite file) or sql (a text dump).") var format: String = "binary"

    func run() async throws {
        try await withClient(connection) { client in
            let bar = ProgressBar("backup")
            try await client.download("/v1/db/\(database)/backup?fmt=\(format)", to: file) { done, total in bar.update(done, total) }
            let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int64) ?? 0
            bar.update(size, size, final: true)
            print("Wrote \(file).")
        }
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Load a backup: a SQLite file replaces the database; SQL text runs on it.",
        discussion: """
            The file is streamed, with progress, whatever its size. SQL text runs on the database as one \
            transaction, so it must fit in one request (the server's --max-body-bytes, 16 MiB by default); \
            a larger dump is loaded with --replace: it is built into a SQLite file here, which then \
            replaces the database.
            """)
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "A SQLite file or a SQL dump.") var file: String
    @Option(help: "Database.") var database: String = "default"
    @Flag(help: "Build a SQL dump into a SQLite file here and replace the database with it (for dumps larger than a request).")
    var replace = false

    func run() async throws {
        guard let handle = FileHandle(forReadingAtPath: file) else {
            printError(ClientError(status: 0, message: "cannot read \(file)"))
            throw ExitCode(1)
        }
        let head = (try? handle.read(upToCount: 16)) ?? Data()
        try? handle.close()
        var upload = file
        var isSQLite = head == Data("SQLite format 3\u{0}".utf8)
        var scratch: String?
        defer { if let scratch { try? FileManager.default.removeItem(atPath: scratch) } }
        if !isSQLite && replace {
            scratch = NSTemporaryDirectory() + "cairn-restore-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sqlite"
            do {
                let statements = try SQLDumpBuilder.build(dump: file, into: scratch!) { done, total in ProgressBar.building.update(done, total) }
                ProgressBar.building.update(1, 1, final: true)
                print("Built \(statements) statements of \(file) into a SQLite file.")
            } catch {
                printError(error)
                throw ExitCode(1)
            }
            upload = scratch!
            isSQLite = true
        }
        try await withClient(connection) { client in
            let bar = ProgressBar("restore")
            let (status, body) = try await client.upload("/v1/db/\(database)/load", file: upload,
                                                         contentType: isSQLite ? "application/octet-stream" : "text/plain") { done, total in
                bar.update(done, total)
            }
            let size = (try? FileManager.default.attributesOfItem(atPath: upload)[.size] as? NSNumber)??.int64Value ?? 0
            bar.update(size, size, final: true)
            let json = try? JSON.parse(body)
            guard status == 200 else {
                var message = json?["error"].map(Output.cell) ?? String(decoding: body, as: UTF8.self)
                if status == 413 && !isSQLite { message += "; load a dump this large with --replace (it then replaces the database)" }
                throw ClientError(status: status, message: message)
            }
            if case .array(let results)? = json?["results"], let e = results.first(where: { $0["error"] != nil }) {
                throw ClientError(status: 0, message: "the restore was rolled back: " + Output.cell(e["error"]!))
            }
            print("Restored \(file) into \(database)" + (replace && scratch != nil ? " (the database was replaced)." : "."))
        }
    }
}

/// A SQL dump built into a fresh SQLite file, read line by line (never whole in memory), each
/// statement run once SQLite says it is complete.
enum SQLDumpBuilder {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func build(dump: String, into path: String, progress: (Int64, Int64) -> Void) throws -> Int {
        guard let handle = FileHandle(forReadingAtPath: dump) else { throw Failure(description: "cannot read \(dump)") }
        defer { try? handle.close() }
        let total = (try? FileManager.default.attributesOfItem(atPath: dump)[.size] as? NSNumber)??.int64Value ?? 0
        var db: OpaquePointer?
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil) == SQLITE_OK, let db else {
            throw Failure(description: "cannot create \(path)")
        }
        defer { sqlite3_close(db) }
        func exec(_ sql: String) throws {
            var error: UnsafeMutablePointer<CChar>?
            guard sqlite3_exec(db, sql, nil, nil, &error) == SQLITE_OK else {
                let message = error.map { String(cString: $0) } ?? "error"
                sqlite3_free(error)
                throw Failure(description: "\(message) in: \(sql.prefix(200))")
            }
        }
        // A scratch file: nothing to recover if this process dies.
        try exec("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF")
        // Nor may a trigger or a view of the dump reach another file.
        sqlite3_set_authorizer(db, { _, action, _, _, _, _ in action == SQLITE_ATTACH || action == SQLITE_DETACH ? SQLITE_DENY : SQLITE_OK }, nil)
        var statement = "", pending = Data(), read: Int64 = 0, count = 0
        func take(_ line: Substring) throws {
            statement += statement.isEmpty ? String(line) : "\n" + line
            guard sqlite3_complete(statement) != 0 else { return }
            let text = statement.trimmingCharacters(in: .whitespacesAndNewlines)
            statement = ""
            // The dump's own transaction is kept; its journal is off anyway.
            guard !text.isEmpty, text != ";" else { return }
            // A dump builds one database: nothing in it may reach another file on this machine.
            let first = text.prefix { !$0.isWhitespace && $0 != ";" }.uppercased()
            guard !["ATTACH", "DETACH", "VACUUM"].contains(first) else { throw Failure(description: "a dump may not \(first): \(text.prefix(200))") }
            try exec(text)
            count += 1
        }
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            read += Int64(chunk.count)
            pending.append(chunk)
            // Whole lines only: a UTF-8 sequence never spans a newline byte.
            guard let last = pending.lastIndex(of: UInt8(ascii: "\n")) else { continue }
            let text = String(decoding: pending[..<last], as: UTF8.self)
            pending = Data(pending[(last + 1)...])
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) { try take(line) }
            progress(read, total)
        }
        if !pending.isEmpty { try take(Substring(String(decoding: pending, as: UTF8.self))) }
        if !statement.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { try exec(statement) ; count += 1 }
        return count
    }
}

struct ShardsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "shards", abstract: "A database's shards: slots, group, replicas, leader, rows, bytes.")
    @OptionGroup var connection: ConnectionOptions
    @Argument var database: String
    @Option(help: "Split this shard in two first (it keeps the lower half of its slots; a new shard takes the upper half).")
    var split: Int?

    func run() async throws {
        try await withClient(connection) { client in
            if let split {
                let done = try await client.call(.POST, "/v1/db/\(database)/shards/\(split)/split", .object([]))
                print("Shard \(split) split at slot \(Output.cell(done["split_slot"] ?? .null)): shard \(Output.cell(done["child"] ?? .null)) (group \(Output.cell(done["child_group"] ?? .null))) has the upper half.")
            }
            let r = try await client.call(.GET, "/v1/db/\(database)/shards")
            guard case .array(let shards)? = r["shards"] else { return }
            let tables: [JSON] = if case .array(let t)? = r["tables"] { t } else { [] }
            let references: [JSON] = if case .array(let t)? = r["reference_tables"] { t } else { [] }
            if tables.isEmpty && references.isEmpty {
                print("No sharded tables yet (\(Output.cell(r["shard_count"] ?? .null)) shards when the first is created).")
            }
            if !tables.isEmpty { print("Sharded tables: " + tables.map { Output.cell($0) }.joined(separator: ", ")) }
            if !references.isEmpty { print("Reference tables (a copy on every shard): " + references.map { Output.cell($0) }.joined(separator: ", ")) }
            if case .array(let ranged)? = r["range_tables"] {
                for t in ranged {
                    // students by stud_id: [..4096) on 0, [4096..8192) on 1, [8192..) on 2
                    let ranges: [JSON] = if case .array(let list)? = t["ranges"] { list } else { [] }
                    let parts = ranges.map { range -> String in
                        func bound(_ v: JSON?) -> String { if case .null? = v { "" } else { Output.cell(v ?? .null) } }
                        return "[\(bound(range["from"]))..\(bound(range["to"])))" + " on \(Output.cell(range["shard"] ?? .null))"
                    }
                    print("Ranges of \(Output.cell(t["table"] ?? .null)) by \(Output.cell(t["column"] ?? .null)): " + parts.joined(separator: ", "))
                }
            }
            if case .bool(false)? = r["schemas_match"] {
                print("Warning: the shards' schemas differ (see the schema column); CairnDB keeps them identical, so this needs an operator.")
            }
            print(Output.table(columns: ["shard", "slots", "group", "leader", "replicas", "rows", "bytes", "prepared", "schema"], rows: shards.map { s in
                [s["shard"] ?? .null, .string(s["slots"].map { String(decoding: $0.serialized(), as: UTF8.self) } ?? ""), s["group"] ?? .null,
                 s["leader"] ?? .null, .string(s["replicas"].map { String(decoding: $0.serialized(), as: UTF8.self) } ?? ""),
                 s["rows"] ?? .null, s["bytes"] ?? .null, s["prepared_transactions"] ?? .null, s["schema"] ?? .null]
            }), terminator: "")
        }
    }
}
