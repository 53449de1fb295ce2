import ArgumentParser
import CairnClient
import CairnCompat
import CairnJSON
import CairnSQLite
import Foundation

/// `cairn kv`: values and files in the cluster's key/value table (the one `--compat key-endpoint`
/// serves), spread over its shards by key. A large file is streamed in chunks of
/// `KeyEndpoint.chunkBytes`, each its own write, then made the key's value by one last write, so a
/// reader sees the old value or the whole new one.
struct KVCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kv", abstract: "Keys and values (files of any size too), spread over the cluster.",
                                                    subcommands: [Put.self, Get.self, List.self, Delete.self])

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Store a value: --value TEXT, or a file (- for standard input).")
        @OptionGroup var connection: ConnectionOptions
        @Argument var key: String
        @Argument(help: "The file to store (- or none with no --value: standard input).") var file: String?
        @Option(help: "A text value instead of a file.") var value: String?

        func validate() throws {
            do { try KeyEndpoint.checkKey(key) } catch { throw ValidationError("a key has 1 to \(KeyEndpoint.maxKeyBytes) bytes") }
            if value != nil && file != nil { throw ValidationError("give --value or a file, not both") }
        }

        func run() async throws {
            try await withClient(connection) { client in
                try await KVCommand.ensureTables(client)
                if let value {
                    try await KVCommand.execute(client, KeyEndpoint.put(key, .text(value)))
                    return
                }
                let path = file ?? "-"
                guard let input = path == "-" ? FileHandle.standardInput : FileHandle(forReadingAtPath: path) else {
                    throw ClientError(status: 0, message: "cannot read \(path)")
                }
                let total = path == "-" ? nil : (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int64) ?? nil
                let progress = ProgressBar("put \(key)")
                let first = try input.read(upToCount: KeyEndpoint.chunkBytes) ?? Data()
                if first.count < KeyEndpoint.chunkBytes {
                    // One chunk's worth or less: the value itself (text if it is text, as seed 000's client stored files).
                    let value: SQLValue = String(data: first, encoding: .utf8).map { .text($0) } ?? .blob(Array(first))
                    try await KVCommand.execute(client, KeyEndpoint.put(key, value))
                    progress.update(Int64(first.count), total, final: true)
                    return
                }
                let version = Int64.random(in: 1...Int64.max)
                var chunk = first, n = 0, sent: Int64 = 0
                while !chunk.isEmpty {
                    let insert = SQLStatement("INSERT OR REPLACE INTO kv_chunks (key, version, n, data) VALUES (?, ?, ?, ?)",
                                              [.text(key), .integer(version), .integer(Int64(n)), .blob(Array(chunk))])
                    try await KVCommand.execute(client, [insert])
                    n += 1
                    sent += Int64(chunk.count)
                    progress.update(sent, total)
                    chunk = try input.read(upToCount: KeyEndpoint.chunkBytes) ?? Data()
                }
                try await KVCommand.execute(client, KeyEndpoint.commitChunks(key, version: version, chunks: n))
                progress.update(sent, total, final: true)
            }
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a value, or write it to a file (-o).")
        @OptionGroup var connection: ConnectionOptions
        @Argument var key: String
        @Option(name: .shortAndLong, help: "Write the value to this file instead of standard output.") var output: String?

        func run() async throws {
            try await withClient(connection) { client in
                let rows = try await KVCommand.query(client, SQLStatement("SELECT value, chunks, version, typeof(value) FROM kv WHERE key = ?", [.text(key)]))
                guard let row = rows.first, row.count == 4 else { throw ClientError(status: 404, message: "no key \(key)") }
                guard let out = output.map({ path -> FileHandle? in
                    FileManager.default.createFile(atPath: path, contents: nil)
                    return FileHandle(forWritingAtPath: path)
                }) ?? FileHandle.standardOutput else {
                    throw ClientError(status: 0, message: "cannot write \(output!)")
                }
                if case .number(let c) = row[1], let chunks = Int(c), case .number(let v) = row[2], let version = Int64(v) {
                    let progress = ProgressBar("get \(key)")
                    var got: Int64 = 0
                    for n in 0..<chunks {
                        let part = try await KVCommand.query(client, KeyEndpoint.chunk(key, version: version, n: n))
                        guard case .string(let base64)? = part.first?.first, let bytes = Data(base64Encoded: base64) else {
                            throw ClientError(status: 409, message: "\(key) changed while it was read; get it again")
                        }
                        try out.write(contentsOf: bytes)
                        got += Int64(bytes.count)
                        if output != nil { progress.update(got, nil) }
                    }
                    if output != nil { progress.update(got, nil, final: true) }
                    return
                }
                switch row[0] {
                case .string(let s):
                    // A BLOB comes back base64, text as itself: its type says which.
                    if row[3] == .string("blob"), let bytes = Data(base64Encoded: s) {
                        try out.write(contentsOf: bytes)
                    } else {
                        try out.write(contentsOf: Data(s.utf8))
                    }
                case .null: break
                default: try out.write(contentsOf: Data(String(decoding: row[0].serialized(), as: UTF8.self).utf8))
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (with --prefix, those starting with it).")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "Only keys starting with this.") var prefix: String = ""
        @Option(help: "At most this many keys.") var limit: Int = 1_000

        func run() async throws {
            try await withClient(connection) { client in
                let rows = try await KVCommand.query(client, SQLStatement(
                    "SELECT key, coalesce(length(CAST(value AS BLOB)), -1), chunks FROM kv WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key LIMIT ?2",
                    [.text(prefix), .integer(Int64(max(1, limit)))]))
                for row in rows {
                    guard case .string(let key) = row[0] else { continue }
                    var size = ""
                    if case .number(let n) = row[1], n != "-1" { size = n + " bytes" }
                    if case .number(let c) = row[2] { size = "\(c) chunks" }
                    print("\(key)\t\(size)")
                }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a key and its value.")
        @OptionGroup var connection: ConnectionOptions
        @Argument var key: String

        func run() async throws {
            try await withClient(connection) { client in
                try await KVCommand.execute(client, KeyEndpoint.delete(key))
            }
        }
    }

    /// The database and its two tables, made if missing (by anyone allowed to).
    static func ensureTables(_ client: CairnClient) async throws {
        do {
            try await client.call(.POST, "/v1/databases", .object([("name", .string(KeyEndpoint.database))]))
        } catch let e as ClientError where e.status == 409 {
            // There already.
        }
        try await execute(client, [KeyEndpoint.createTable])
        try await execute(client, [KeyEndpoint.createChunksTable])
    }

    /// Runs `statements` as one atomic request; the first statement's error is thrown.
    static func execute(_ client: CairnClient, _ statements: [SQLStatement]) async throws {
        let body = JSON.object([("atomic", .bool(true)), ("statements", .array(statements.map(json)))])
        let reply = try await client.call(.POST, "/v1/db/\(KeyEndpoint.database)/execute", body)
        if case .array(let results)? = reply["results"], let failed = results.first(where: { $0["error"] != nil }), case .string(let e)? = failed["error"] {
            throw ClientError(status: 400, message: e)
        }
    }

    static func query(_ client: CairnClient, _ statement: SQLStatement) async throws -> [[JSON]] {
        let reply = try await client.call(.POST, "/v1/db/\(KeyEndpoint.database)/query", .object([("statements", .array([json(statement)]))]))
        guard case .array(let results)? = reply["results"], let r = results.first else { throw ClientError(status: 0, message: "the server's answer is malformed") }
        if case .string(let e)? = r["error"] {
            if e.hasPrefix("no such table") { return [] }
            throw ClientError(status: 400, message: e)
        }
        var rows: [[JSON]] = []
        if case .array(let list)? = r["rows"] { for case .array(let row) in list { rows.append(row) } }
        return rows
    }

    /// A statement as the native API takes it: SQL and its parameters (BLOBs as base64).
    static func json(_ s: SQLStatement) -> JSON {
        guard !s.positional.isEmpty else { return .string(s.sql) }
        return .array([.string(s.sql)] + s.positional.map { v -> JSON in
            switch v {
            case .null: return .null
            case .integer(let i): return .int(i)
            case .real(let d): return .double(d)
            case .text(let t): return .string(t)
            case .blob(let b): return .object([("base64", .string(Data(b).base64EncodedString()))])
            }
        })
    }
}
