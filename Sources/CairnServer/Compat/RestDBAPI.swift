import CairnAuth
import CairnCluster
import CairnCompat
import CairnJSON
import CairnQuery
import CairnSQLite
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Seed 003's REST API (`--compat rest-db`): its databases are CairnDB databases (each a Raft group
/// replicated on RF nodes, so "master" and "slaves" are the cluster's nodes, every one able to answer),
/// its statements checked and translated by `CairnCompat.RestDB`. As the original: any method on any
/// path, CORS open to every origin, errors as plain text.
struct RestDBAPI: Sendable {
    let api: API
    /// Where this listener serves, which `/nodes` calls the master.
    let address: String

    static let paths = ["/ping", "/is-master", "/nodes", "/createdb", "/dropdb", "/createtable", "/insert", "/select", "/update", "/delete"]
    static let methods: [HTTPRequest.Method] = [.get, .post, .put, .delete, .options, .patch, .head]

    func register(on router: RecordingRouter) {
        for path in Self.paths {
            for method in Self.methods {
                router.on(RouterPath(path), method: method) { request, _ in await serve(request, path: path) }
            }
        }
    }

    /// A request to one of the API's routes with a method none takes: served as any other method is.
    func serveAnyMethod(_ request: Request, route: String) async -> Response {
        // Every route is a fixed path (no parameters), so the route's pattern is the request's path.
        assert(Self.paths.contains(route), "rest-db route \(route) is not one of its fixed paths")
        return await serve(request, path: route)
    }

    /// Every handler of the original set its CORS headers.
    private func serve(_ request: Request, path: String) async -> Response {
        var response = await respond(request, path: path)
        response.headers[.accessControlAllowOrigin] = "*"
        response.headers[.accessControlAllowMethods] = "GET, POST, PUT, DELETE, OPTIONS"
        response.headers[.accessControlAllowHeaders] = "Content-Type"
        return response
    }

    private func respond(_ request: Request, path: String) async -> Response {
        if request.method == .options { return Response(status: .ok) }
        do {
            return try await handle(request, path: path)
        } catch let f as CompatFailure {
            return Self.text(f.status, f.text ?? "\(f.body)\n")
        } catch {
            let (status, message) = API.classify(error)
            if status >= 500 && status != 503 { api.log("node \(api.cluster.nodeID): rest-db: \(message)") }
            return Self.text(status >= 500 ? 503 : status, message + "\n")
        }
    }

    /// Go's `http.Error`.
    static func text(_ status: Int, _ body: String) -> Response {
        Response(status: .init(code: status), headers: [.contentType: "text/plain; charset=utf-8", .init("X-Content-Type-Options")!: "nosniff"],
                 body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// Go's `json.NewEncoder(w).Encode(v)`: the JSON and a newline.
    static func json(_ body: JSON) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body.serialized() + [0x0A])))
    }

    static func message(_ text: String) -> Response { json(.object([("message", .string(text))])) }

    private func handle(_ request: Request, path: String) async throws -> Response {
        let query = request.uri.queryParameters
        func parameter(_ name: String) -> String? { query[Substring(name)].map(String.init).flatMap { $0.isEmpty ? nil : $0 } }
        switch path {
        case "/ping":
            return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: "pong")))
        case "/is-master":
            return Self.json(.object([("isMaster", .bool(true))]))
        case "/nodes":
            try api.auth.require(try api.compatPrincipal(), .status)
            // Every node can take writes: each lists itself as the master, the others as slaves.
            let catalog = api.cluster.catalog
            let others = catalog.nodes.values.filter { !$0.removed && $0.id != api.cluster.nodeID }.sorted { $0.id < $1.id }
            return Self.json(.object([("isMaster", .bool(true)), ("master", .string("http://\(address)")),
                                      ("slaves", .array(others.map { .string("http://\($0.httpAddress)") }))]))
        case "/createdb":
            guard let name = parameter("name") else { throw RestDB.failure(400, "Database name is required") }
            try RestDB.checkName(name, what: "database")
            let who = try api.compatPrincipal()
            try api.auth.require(who, .admin, database: "*")
            let catalog = try await api.committedCatalog()
            if catalog.databases[name] == nil {
                do {
                    _ = try await api.makeDatabase(name, shards: nil, in: catalog, who)
                } catch ClusterError.catalogWrite(let why) where why.hasPrefix("UNIQUE constraint failed") {
                    // Made through another node at the same moment: it exists, as asked.
                }
            }
            return Self.message("Database created successfully")
        case "/dropdb":
            guard let name = parameter("name") else { throw RestDB.failure(400, "Database name is required") }
            try RestDB.checkName(name, what: "database")
            let who = try api.compatPrincipal()
            try api.auth.require(who, .admin, database: name)
            do {
                _ = try await api.dropDatabase(name, who)
            } catch let f as HTTPFailure where f.status < 500 {
                throw RestDB.failure(f.status, "Failed to drop database: \(f.message)")
            }
            return Self.message("Database dropped successfully")
        case "/createtable":
            guard let db = parameter("dbname"), let table = parameter("table") else { throw RestDB.failure(400, "Database name and table name are required") }
            try names(db, table)
            let bytes = try await api.body(of: request)
            var columns: JSON?
            if !bytes.isEmpty {
                do { columns = try api.parse(bytes) } catch { throw RestDB.failure(400, "Invalid request body: \(error)") }
            }
            let statement = try RestDB.createTable(table, schema: parameter("schema"), columns: columns)
            try await write(statement, db: db, failing: "Failed to create table")
            return Self.message("Table created successfully")
        case "/insert":
            let (db, table, body) = try await target(request)
            let statement: SQLStatement
            if case .string(let values)? = body["values"], !values.isEmpty {
                statement = SQLStatement("INSERT INTO \(SQLLexer.quote(table)) VALUES (\(try RestDB.values(values)))")
            } else if case .object(let records)? = body["records"] {
                statement = try RestDB.insert(table, records: records)
            } else {
                throw RestDB.failure(400, "Either 'values' or 'records' is required")
            }
            try await write(statement, db: db, failing: "Failed to insert record")
            return Self.message("Record inserted successfully")
        case "/select":
            guard let db = parameter("dbname"), let table = parameter("table") else { throw RestDB.failure(400, "Both dbname and table parameters are required") }
            try names(db, table)
            let who = try api.compatPrincipal()
            try api.auth.require(who, .read, database: db)
            let r = try await api.read([SQLStatement("SELECT * FROM \(SQLLexer.quote(table))")], db: db, consistency: .linearizable).results[0]
            if let e = r.error { throw RestDB.failure(400, "Failed to query records: \(e)") }
            return Self.json(RestDB.rows(r))
        case "/update":
            let (db, table, body) = try await target(request)
            guard case .string(let set)? = body["set"], !set.isEmpty, case .string(let condition)? = body["where"], !condition.isEmpty else {
                throw RestDB.failure(400, "All fields (dbname, table, set, where) are required")
            }
            let columns = try await self.columns(of: table, db: db)
            let statement = SQLStatement("UPDATE \(SQLLexer.quote(table)) SET \(try RestDB.assignments(set, columns: columns)) WHERE \(try RestDB.condition(condition, columns: columns))")
            try await write(statement, db: db, failing: "Failed to update record")
            return Self.message("Record updated successfully")
        case "/delete":
            let (db, table, body) = try await target(request)
            guard case .string(let condition)? = body["where"], !condition.isEmpty else { throw RestDB.failure(400, "All fields (dbname, table, where) are required") }
            let columns = try await self.columns(of: table, db: db)
            let statement = SQLStatement("DELETE FROM \(SQLLexer.quote(table)) WHERE \(try RestDB.condition(condition, columns: columns))")
            try await write(statement, db: db, failing: "Failed to delete record")
            return Self.message("Record deleted successfully")
        default:
            throw RestDB.failure(404, "404 page not found")
        }
    }

    private func names(_ db: String, _ table: String) throws {
        try RestDB.checkName(db, what: "database")
        try RestDB.checkName(table, what: "table")
    }

    /// A body's `dbname` and `table`, and the body.
    private func target(_ request: Request) async throws -> (String, String, JSON) {
        let body: JSON
        do { body = try api.parse(try await api.body(of: request)) } catch { throw RestDB.failure(400, "Invalid request body: \(error)") }
        guard case .string(let db)? = body["dbname"], case .string(let table)? = body["table"], !db.isEmpty, !table.isEmpty else {
            throw RestDB.failure(400, "Database name and table name are required")
        }
        try names(db, table)
        return (db, table, body)
    }

    /// The table's columns, lowercased (what its `set` and `where` may name).
    private func columns(of table: String, db: String) async throws -> Set<String> {
        let who = try api.compatPrincipal()
        // Only a writer's request reads them (for its set or where).
        try api.auth.require(who, .write, database: db)
        let r = try await api.read([SQLStatement("SELECT name FROM pragma_table_info(?)", [.text(table)])], db: db, consistency: .linearizable).results[0]
        if let e = r.error { throw RestDB.failure(400, "Failed to read the table: \(e)") }
        let names = r.rows.compactMap { row -> String? in if case .text(let n)? = row.first { n.lowercased() } else { nil } }
        guard !names.isEmpty else { throw RestDB.failure(400, "Failed to read the table: no table \(table) in database \(db)") }
        return Set(names)
    }

    private func write(_ statement: SQLStatement, db: String, failing: String) async throws {
        let who = try api.compatPrincipal()
        try api.auth.require(who, .write, database: db)
        api.audit.record(who, statements: [statement], database: db)
        let r = try await api.write([statement], db: db, atomic: false).results[0]
        if let e = r.error { throw RestDB.failure(400, "\(failing): \(e)") }
    }
}
