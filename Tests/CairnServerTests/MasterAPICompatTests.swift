import CairnTestSupport
import Foundation
import NIOHTTP1
import Testing

/// Seed 002's master HTTP API (`--compat master-api`) on 3 processes with auth on: queries on
/// CairnDB databases, its token on CairnDB's, its slaves the cluster's nodes, its logs the audit log.
extension ProcessTests {
    @Test func masterAPISpeaksSeed002() async throws {
        let ports = (0..<3).map { _ in freePort() }
        let c = try await ProcessCluster.founded("master-api", count: 3) { i in
            ["--compat", "master-api=127.0.0.1:\(ports[i])"] + (i == 0 ? ["--compat-user", "admin"] : [])
        }
        defer { c.destroy() }
        let m = "http://127.0.0.1:\(ports[0])", other = "http://127.0.0.1:\(ports[1])"
        func post(_ url: String, _ body: Any) async throws -> HTTPResult { try await TestHTTP.request(.POST, url, body, authorization: nil) }
        func expectOK(_ r: HTTPResult, _ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(r.status == 200 && r.json["status"] as? String == "ok" && r.json["message"] as? String == message, "\(r.status) \(r.text)",
                    sourceLocation: sourceLocation)
        }

        // The first node acts as --compat-user for requests without a token, as the original's HTTP API
        // put its own token in; the second has none, so a request there needs a CairnDB token.
        expectOK(try await post(m + "/api/database/create", ["db_name": "shop"]), "Database shop created successfully")
        expectOK(try await post(m + "/api/table/create", ["db_name": "shop", "table_name": "items",
                                                         "columns": [["name": "id", "type": "INT", "nullable": false], ["name": "name", "type": "VARCHAR(50)", "default": "?"]]]),
                 "Table items created successfully")
        expectOK(try await post(m + "/api/query", ["query": #"INSERT INTO shop.items (id, name) VALUES (1, "pen"), (2, "ink")"#]),
                 "Query executed successfully. Rows affected: 2")
        let selected = try await post(m + "/query", ["query": "SELECT id, name FROM shop.items ORDER BY id"])
        #expect(selected.json["message"] as? String == "Select executed successfully", "\(selected.text)")
        #expect(selected.json["header"] as? [String] == ["id", "name"] && (selected.json["rows"] as? [[String]]) == [["1", "pen"], ["2", "ink"]], "\(selected.text)")

        let noToken = try await post(other + "/api/query", ["query": "SELECT 1"])
        #expect(noToken.status == 401 && noToken.json["status"] as? String == "error" && noToken.json["message"] as? String == "Invalid token", "\(noToken.text)")
        #expect(try await post(other + "/api/query", ["query": "SELECT 1", "token": "secret-token"]).status == 401)
        let token = try #require(try await TestHTTP.request(.POST, c.nodes[0].url + "/v1/auth/token",
                                                             ["username": "admin", "password": TestHTTP.adminPassword], authorization: nil).json["token"] as? String)
        let withToken = try await post(other + "/api/query", ["query": "UPDATE shop.items SET name = 'quill' WHERE id = 1", "token": token])
        #expect(withToken.json["message"] as? String == "Query executed successfully. Rows affected: 1", "\(withToken.text)")

        // One statement, on one database; errors in the original's shape, never a 500.
        for bad in ["SELECT 1; DROP TABLE shop.items", "USE shop", "SELECT * FROM nothing_here", "SELEC 1"] {
            let r = try await post(m + "/api/query", ["query": bad])
            #expect(r.status == 400 && r.json["status"] as? String == "error", "\(bad): \(r.status) \(r.text)")
        }
        #expect(try await post(m + "/api/query", ["query": "SELECT count(*) FROM shop.items"]).json["rows"] as? [[String]] == [["2"]])
        expectOK(try await post(m + "/api/query", ["query": "CREATE DATABASE IF NOT EXISTS scratch"]), "Query executed successfully. Rows affected: 1")
        expectOK(try await post(m + "/api/query", ["query": "DROP DATABASE scratch"]), "Query executed successfully. Rows affected: 0")

        let slaves = try await TestHTTP.request(.GET, m + "/api/slaves", authorization: nil)
        #expect(slaves.status == 200 && slaves.text.contains(c.nodes[1].http) && slaves.text.contains(c.nodes[2].http), "\(slaves.text)")
        #expect(try await TestHTTP.request(.GET, m + "/api/slaves", authorization: nil).header("Access-Control-Allow-Origin") == "*")
        let logs = try await TestHTTP.request(.GET, m + "/api/logs", authorization: nil)
        #expect(logs.status == 200 && (logs.json["logs"] as? [String])?.contains { $0.contains("INSERT INTO items") } == true, "\(logs.text.prefix(2000))")
    }
}
