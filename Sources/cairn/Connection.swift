import ArgumentParser
import CairnClient
import CairnJSON
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where a client command connects and as whom.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "Any node's HTTP address (default: $CAIRN_HOST, else http://127.0.0.1:4001).")
    var host: String?

    @Option(help: "User to sign in as (default: $CAIRN_USER, else prompt).")
    var user: String?

    @Option(help: "File holding the password (else $CAIRN_PASSWORD, else a saved token, else prompt).")
    var passwordFile: String?

    @Option(help: "PEM file of the CA that an https:// host's certificate must chain to (else $CAIRN_CA_CERT, else the system's roots).")
    var caCert: String?

    var caCertificate: String? { caCert ?? ProcessInfo.processInfo.environment["CAIRN_CA_CERT"] }

    var hostURL: String {
        var h = host ?? ProcessInfo.processInfo.environment["CAIRN_HOST"] ?? "http://127.0.0.1:4001"
        if !h.hasPrefix("http://") && !h.hasPrefix("https://") { h = "http://" + h }
        return h.hasSuffix("/") ? String(h.dropLast()) : h
    }

    /// A client signed in: with a saved token for this host, or a password (flag, environment or
    /// prompt) exchanged for a token, which is saved in the profile (mode 0600).
    func connect(editor: LineEditor? = nil, forceLogin: Bool = false) async throws -> CairnClient {
        let url = hostURL
        let environment = ProcessInfo.processInfo.environment
        var profile = Profile.load()
        let wantedUser = user ?? environment["CAIRN_USER"]
        if !forceLogin, let saved = profile.hosts[url], wantedUser == nil || wantedUser == saved.user, saved.expires > Date() + 30 {
            return CairnClient(baseURL: url, authorization: "Bearer " + saved.token, caCertificate: caCertificate)
        }
        let anonymous = CairnClient(baseURL: url, caCertificate: caCertificate)
        var password = try passwordFile.map(Cairn.readSecret) ?? environment["CAIRN_PASSWORD"]
        var name = wantedUser
        if password == nil || name == nil {
            // No credentials given: a server without auth (--insecure-dev, cairn demo) answers anyway.
            if name == nil, password == nil, (try? await anonymous.call(.GET, "/v1/status")) != nil { return anonymous }
            let editor = editor ?? LineEditor(historyPath: nil)
            if name == nil {
                if !editor.isTerminal { try? FileHandle.standardOutput.write(contentsOf: Data("Username: ".utf8)) }
                name = editor.readLine(prompt: "Username: ")?.trimmingCharacters(in: .whitespaces)
            }
            if password == nil { password = editor.readSecret(prompt: "Password: ") }
        }
        guard let name, !name.isEmpty, let password else { throw ClientError(status: 0, message: "no credentials given") }
        await anonymous.shutdown()
        let login = CairnClient(baseURL: url, caCertificate: caCertificate)
        defer { Task { await login.shutdown() } }
        let (token, expires) = try await login.token(user: name, password: password)
        profile.hosts[url] = Profile.Entry(user: name, token: token, expires: ISO8601DateFormatter().date(from: expires) ?? Date() + 3000)
        profile.save()
        return CairnClient(baseURL: url, authorization: "Bearer " + token, caCertificate: caCertificate)
    }
}

/// `~/.cairn/profile.json` (mode 0600): a token per host, so commands do not ask for the password each time.
struct Profile: Codable {
    struct Entry: Codable {
        var user: String
        var token: String
        var expires: Date
    }

    var hosts: [String: Entry] = [:]

    static var directory: String {
        (ProcessInfo.processInfo.environment["CAIRN_HOME"] ?? (NSHomeDirectory() + "/.cairn"))
    }
    static var path: String { directory + "/profile.json" }

    static func load() -> Profile {
        guard let data = FileManager.default.contents(atPath: path), let p = try? JSONDecoder().decode(Profile.self, from: data) else { return Profile() }
        return p
    }

    func save() {
        try? FileManager.default.createDirectory(atPath: Self.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard let data = try? JSONEncoder().encode(self) else { return }
        FileManager.default.createFile(atPath: Self.path, contents: data, attributes: [.posixPermissions: 0o600])
        chmod(Self.path, 0o600)
    }
}

/// Printing results for people: aligned tables, or JSON and CSV for scripts.
enum Output {
    static func cell(_ v: JSON) -> String {
        switch v {
        case .null: return "NULL"
        case .bool(let b): return b ? "true" : "false"
        case .number(let n): return n
        case .string(let s): return s
        default: return String(decoding: v.serialized(), as: UTF8.self)
        }
    }

    static func table(columns: [String], rows: [[JSON]]) -> String {
        let cells = rows.map { $0.map(cell) }
        var widths = columns.map(displayWidth)
        for row in cells { for (i, c) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], displayWidth(c)) } }
        func line(_ values: [String]) -> String {
            values.enumerated().map { i, v in i < widths.count ? pad(v, to: widths[i]) : v }.joined(separator: " | ")
                .trimmingCharacters(in: .whitespaces)
        }
        var out = line(columns) + "\n" + widths.map { String(repeating: "-", count: $0) }.joined(separator: "-+-") + "\n"
        for row in cells { out += line(row) + "\n" }
        return out
    }

    /// Columns a terminal gives `text`: two for a wide character (East Asian wide and fullwidth
    /// ranges, emoji shown as pictures), none for a combining mark, a format or control character,
    /// so tables of such text stay aligned. (glibc's `wcwidth` answers by the locale, which a
    /// service's environment often leaves as C.)
    static func displayWidth(_ text: String) -> Int {
        text.unicodeScalars.reduce(0) { $0 + width(of: $1) }
    }

    static func width(of s: Unicode.Scalar) -> Int {
        switch s.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .format, .control: return 0
        default: break
        }
        if s.properties.isEmojiPresentation { return 2 }
        return wideRanges.contains { $0.contains(s.value) } ? 2 : 1
    }

    static let wideRanges: [ClosedRange<UInt32>] = [
        0x1100...0x115F, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF, 0xA000...0xA4CF,
        0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE30...0xFE4F, 0xFF00...0xFF60, 0xFFE0...0xFFE6, 0x20000...0x2FFFD, 0x30000...0x3FFFD,
    ]

    static func pad(_ text: String, to width: Int) -> String {
        text + String(repeating: " ", count: max(0, width - displayWidth(text)))
    }

    /// sqlite3's line mode (psql's expanded display): each row a block of `column = value` lines.
    static func lines(columns: [String], rows: [[JSON]]) -> String {
        let width = columns.map(displayWidth).max() ?? 0
        return rows.enumerated().map { k, row in
            "-[ RECORD \(k + 1) ]-\n" + zip(columns, row).map { String(repeating: " ", count: width - displayWidth($0)) + $0 + " = " + cell($1) }
                .joined(separator: "\n") + "\n"
        }.joined()
    }

    /// sqlite3's json mode: the rows as an array of objects, column names as keys.
    static func json(columns: [String], rows: [[JSON]]) -> String {
        String(decoding: JSON.array(rows.map { row in .object(zip(columns, row).map { ($0, $1) }) }).serialized(), as: UTF8.self) + "\n"
    }

    static func csv(columns: [String], rows: [[JSON]]) -> String {
        func quote(_ s: String) -> String {
            s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
        return ([columns] + rows.map { $0.map(cell) }).map { $0.map(quote).joined(separator: ",") }.joined(separator: "\n") + "\n"
    }

    /// Renders one statement's result as a table (with its row count) or a write summary.
    static func describe(_ result: JSON, format: String = "table") -> String {
        if case .string(let e)? = result["error"] { return "Error: \(e)\n" }
        if case .array(let cols)? = result["columns"] {
            let columns = cols.map(cell)
            guard case .array(let rowsJSON)? = result["rows"] else { return "" }
            let rows = rowsJSON.map { r -> [JSON] in if case .array(let a) = r { return a } else { return [] } }
            switch format {
            case "csv": return csv(columns: columns, rows: rows)
            case "json": return json(columns: columns, rows: rows)
            case "line": return lines(columns: columns, rows: rows) + "(\(rows.count) row\(rows.count == 1 ? "" : "s"))\n"
            default: return table(columns: columns, rows: rows) + "(\(rows.count) row\(rows.count == 1 ? "" : "s"))\n"
            }
        }
        let affected = result["rows_affected"].map(cell) ?? "0"
        let id = result["last_insert_id"].map(cell) ?? "0"
        return "OK, \(affected) row\(affected == "1" ? "" : "s") affected" + (id != "0" ? " (last insert id \(id))" : "") + "\n"
    }
}

func printError(_ error: any Error) {
    try? FileHandle.standardError.write(contentsOf: Data("Error: \(error)\n".utf8))
}
