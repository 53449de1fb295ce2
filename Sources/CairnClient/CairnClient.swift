import AsyncHTTPClient
import CairnJSON
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// An answer other than success, with the server's own message.
public struct ClientError: Error, CustomStringConvertible {
    public var status: Int
    public var message: String
    public var description: String { status == 0 ? message : "\(message) (HTTP \(status))" }

    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }
}

/// Talks to any CairnDB node over its HTTP API.
public final class CairnClient: Sendable {
    public let baseURL: String
    public let authorization: String?
    public let caCertificate: String?
    private let http: HTTPClient

    /// `authorization`: a full header value ("Bearer ..." or "Basic ..."). `caCertificate`: a PEM file
    /// of the CA an `https://` server's certificate must chain to (default: the system's roots).
    public init(baseURL: String, authorization: String? = nil, caCertificate: String? = nil) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.authorization = authorization
        self.caCertificate = caCertificate
        var config = HTTPClient.Configuration(timeout: .init(connect: .seconds(5), read: .seconds(120)))
        config.decompression = .disabled
        if let caCertificate {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(caCertificate)
            config.tlsConfiguration = tls
        }
        http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: config)
    }

    public static func basic(user: String, password: String) -> String {
        "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    public func shutdown() async { try? await http.shutdown() }

    /// One request; the body's bytes and the status.
    public func raw(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, contentType: String = "application/json",
                    authorization: String? = nil) async throws -> (status: Int, body: [UInt8]) {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        // An empty `authorization` sends none (signing in must not carry an old token).
        if let auth = authorization ?? self.authorization, !auth.isEmpty { request.headers.add(name: "Authorization", value: auth) }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(120))
        } catch {
            throw ClientError(status: 0, message: "cannot reach \(baseURL): \(error)")
        }
        let bytes = try await response.body.collect(upTo: 1 << 30)
        return (Int(response.status.code), Array(buffer: bytes))
    }

    /// JSON in, JSON out; a non-2xx answer throws with the server's `error` message.
    @discardableResult
    public func call(_ method: HTTPMethod, _ path: String, _ body: JSON? = nil, authorization: String? = nil) async throws -> JSON {
        let (status, bytes) = try await raw(method, path, body: body?.serialized(), authorization: authorization)
        let json = try? JSON.parse(bytes)
        guard (200..<300).contains(status) else {
            if case .string(let m)? = json?["error"] { throw ClientError(status: status, message: m) }
            let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw ClientError(status: status, message: text.isEmpty ? HTTPResponseStatus(statusCode: status).reasonPhrase : text)
        }
        return json ?? .null
    }

    /// Runs `statements` on database `db` as one write (`atomic`: all or none), through whichever node
    /// this client talks to; one result per statement, each with its own error if it failed.
    public func execute(_ statements: [Statement], db: String = "default", atomic: Bool = false) async throws -> [StatementResult] {
        let body = JSON.object([("statements", .array(statements.map(\.json))), ("atomic", .bool(atomic))])
        return StatementResult.list(try await call(.POST, "/v1/db/\(Self.pathComponent(db))/execute", body))
    }

    /// Runs read-only `statements` on database `db`, linearizable unless told otherwise
    /// (`"stale"`, `"local"`).
    public func query(_ statements: [Statement], db: String = "default", consistency: String = "linearizable") async throws -> [StatementResult] {
        let body = JSON.object([("statements", .array(statements.map(\.json))), ("consistency", .string(consistency))])
        return StatementResult.list(try await call(.POST, "/v1/db/\(Self.pathComponent(db))/query", body))
    }

    static func pathComponent(_ name: String) -> String {
        name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? name
    }

    /// Signs in; the token and when it expires.
    public func token(user: String, password: String) async throws -> (token: String, expires: String) {
        let reply = try await call(.POST, "/v1/auth/token", .object([("username", .string(user)), ("password", .string(password))]),
                                   authorization: "")
        guard case .string(let token)? = reply["token"], case .string(let expires)? = reply["expires_at"] else {
            throw ClientError(status: 0, message: "the server's token reply is malformed")
        }
        return (token, expires)
    }

    /// POSTs the file at `file` as the body, read in pieces as the request goes out (never whole in
    /// memory), reporting (bytes sent so far, total); the answer's status and body.
    public func upload(_ path: String, file: String, contentType: String,
                       progress: @escaping @Sendable (Int64, Int64) -> Void) async throws -> (status: Int, body: [UInt8]) {
        guard let handle = FileHandle(forReadingAtPath: file) else { throw ClientError(status: 0, message: "cannot read \(file)") }
        defer { try? handle.close() }
        let total = Int64((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? NSNumber)??.int64Value ?? 0)
        // Pulled piece by piece as the connection takes them: at most one piece read ahead.
        let sent = ManagedCounter()
        let pieces = AsyncThrowingStream<ByteBuffer, any Error>(unfolding: {
            guard let data = try handle.read(upToCount: Self.uploadPieceBytes), !data.isEmpty else { return nil }
            progress(sent.add(Int64(data.count)), total)
            return ByteBuffer(bytes: data)
        })
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = .POST
        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
        request.headers.add(name: "Content-Type", value: contentType)
        request.body = .stream(pieces, length: .known(total))
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(3600))
        } catch {
            throw ClientError(status: 0, message: "cannot reach \(baseURL): \(error)")
        }
        return (Int(response.status.code), Array(buffer: try await response.body.collect(upTo: 16 << 20)))
    }

    static let uploadPieceBytes = 1 << 20

    /// Streams a GET into `file`, reporting (bytes so far, total if known).
    public func download(_ path: String, to file: String, progress: @Sendable (Int64, Int64?) -> Void) async throws {
        var request = HTTPClientRequest(url: baseURL + path)
        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
        let response = try await http.execute(request, timeout: .seconds(3600))
        guard response.status == .ok else {
            let bytes = try await response.body.collect(upTo: 1 << 20)
            throw ClientError(status: Int(response.status.code), message: String(buffer: bytes).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let total = response.headers.first(name: "Content-Length").flatMap(Int64.init)
        FileManager.default.createFile(atPath: file, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: file) else { throw ClientError(status: 0, message: "cannot write \(file)") }
        defer { try? handle.close() }
        var done: Int64 = 0
        for try await chunk in response.body {
            try handle.write(contentsOf: Data(chunk.readableBytesView))
            done += Int64(chunk.readableBytes)
            progress(done, total)
        }
    }
}

extension CairnClient {
    /// One SQL statement and its parameters (`?` positional, as JSON values; a BLOB as
    /// `.object([("base64", .string(...))])`).
    public struct Statement: Sendable {
        public var sql: String
        public var parameters: [JSON]

        public init(_ sql: String, _ parameters: JSON...) {
            self.sql = sql
            self.parameters = parameters
        }

        var json: JSON { parameters.isEmpty ? .string(sql) : .array([.string(sql)] + parameters) }
    }

    /// What one statement did: rows for a query, counts for a write, or the error it failed with.
    public struct StatementResult: Sendable {
        public var columns: [String] = []
        public var rows: [[JSON]] = []
        public var rowsAffected: Int64?
        public var lastInsertID: Int64?
        public var error: String?

        static func list(_ reply: JSON) -> [StatementResult] {
            guard case .array(let results)? = reply["results"] else { return [] }
            return results.map { r in
                var out = StatementResult()
                if case .array(let columns)? = r["columns"] { out.columns = columns.compactMap { if case .string(let c) = $0 { c } else { nil } } }
                if case .array(let rows)? = r["rows"] { out.rows = rows.map { if case .array(let values) = $0 { values } else { [] } } }
                if case .number(let n)? = r["rows_affected"] { out.rowsAffected = Int64(n) }
                if case .number(let n)? = r["last_insert_id"] { out.lastInsertID = Int64(n) }
                if case .string(let e)? = r["error"] { out.error = e }
                return out
            }
        }
    }
}

/// A running total shared with the upload's body sequence.
final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int64 = 0

    func add(_ n: Int64) -> Int64 {
        lock.lock()
        defer { lock.unlock() }
        value += n
        return value
    }
}
