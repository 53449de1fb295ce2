import CairnTestSupport
import Foundation
import NIOHTTP1
import Testing

/// Seed 003's REST API (`--compat rest-db`) on 3 processes: its README's examples replayed in order,
/// answers compared, and its raw SQL fields refused when they try to be more than they claim.
extension ProcessTests {
    @Test func restDBSpeaksSeed003() async throws {
        let ports = (0..<3).map { _ in freePort() }
        let c = try await ProcessCluster.founded("rest-db", count: 3) { i in
            ["--compat", "rest-db=127.0.0.1:\(ports[i])", "--compat-user", "admin"]
        }
        defer { c.destroy() }
        let m = "http://127.0.0.1:\(ports[0])", other = "http://127.0.0.1:\(ports[1])"
        func call(_ method: HTTPMethod, _ url: String, _ body: Any? = nil) async throws -> HTTPResult {
            try await TestHTTP.request(method, url, body, authorization: nil)
        }
        func expectMessage(_ r: HTTPResult, _ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(r.status == 200 && r.text == "{\"message\":\"\(message)\"}\n", "\(r.status) \(r.text)", sourceLocation: sourceLocation)
            #expect(r.header("Access-Control-Allow-Origin") == "*", sourceLocation: sourceLocation)
        }

        let ping = try await call(.GET, m + "/ping")
        #expect(ping.status == 200 && ping.text == "pong")
        #expect(try await call(.GET, m + "/is-master").text == "{\"isMaster\":true}\n")
        let nodes = try await call(.GET, m + "/nodes")
        #expect(nodes.json["master"] as? String == m && (nodes.json["slaves"] as? [String])?.count == 2, "\(nodes.text)")
        #expect(try await call(.OPTIONS, m + "/insert").status == 200)

        expectMessage(try await call(.GET, m + "/createdb?name=testdb"), "Database created successfully")
        let noName = try await call(.GET, m + "/createdb")
        #expect(noName.status == 400 && noName.text == "Database name is required\n" && noName.header("Content-Type") == "text/plain; charset=utf-8")
        expectMessage(try await call(.POST, m + "/createtable?dbname=testdb&table=users&schema=id%20INT%20AUTO_INCREMENT%20PRIMARY%20KEY,%20name%20VARCHAR(50),%20email%20VARCHAR(100)"),
                      "Table created successfully")
        expectMessage(try await call(.POST, other + "/createtable?dbname=testdb&table=people",
                                     ["columns": [["Name": "name", "DataType": "VARCHAR(50)"], ["Name": "email", "DataType": "VARCHAR(100)"]]]),
                      "Table created successfully")
        expectMessage(try await call(.POST, m + "/insert", ["dbname": "testdb", "table": "users", "values": #"NULL, "John Doe", "john@example.com""#]),
                      "Record inserted successfully")
        expectMessage(try await call(.POST, other + "/insert", ["dbname": "testdb", "table": "users", "records": ["name": "Jane Doe", "email": "jane@example.com"]]),
                      "Record inserted successfully")
        let selected = try await call(.GET, other + "/select?dbname=testdb&table=users")
        #expect(selected.text == #"[{"email":"john@example.com","id":1,"name":"John Doe"},{"email":"jane@example.com","id":2,"name":"Jane Doe"}]"# + "\n", "\(selected.text)")
        // Methods are not checked, as the original's.
        expectMessage(try await call(.PUT, m + "/update", ["dbname": "testdb", "table": "users", "set": #"name = "John Smith""#, "where": "Id = 1"]),
                      "Record updated successfully")
        expectMessage(try await call(.POST, m + "/delete", ["dbname": "testdb", "table": "users", "where": "Id = 2"]), "Record deleted successfully")
        #expect(try await call(.GET, m + "/select?dbname=testdb&table=users").text == #"[{"email":"john@example.com","id":1,"name":"John Smith"}]"# + "\n")
        #expect(try await call(.GET, m + "/select?dbname=testdb&table=people").text == "null\n")

        // The raw fields are checked: nothing but the one table, nothing but an expression.
        _ = try await call(.POST, m + "/createtable?dbname=testdb&table=secrets&schema=k%20TEXT")
        _ = try await call(.POST, m + "/insert", ["dbname": "testdb", "table": "secrets", "values": "'s3cret'"])
        for (path, body) in [("/update", ["dbname": "testdb", "table": "users", "set": "name = (SELECT k FROM secrets)", "where": "Id = 1"]),
                             ("/update", ["dbname": "testdb", "table": "users", "set": "name = 'x'", "where": "1=1; DROP TABLE secrets"]),
                             ("/delete", ["dbname": "testdb", "table": "users", "where": "Id IN (SELECT rowid FROM secrets)"]),
                             ("/insert", ["dbname": "testdb", "table": "users", "values": "1, 'a', 'b'); DROP TABLE secrets; --"]),
                             ("/insert", ["dbname": "testdb", "table": "users; DROP TABLE secrets", "values": "1"]),
                             ("/delete", ["dbname": "testdb", "table": "users", "where": "secrets.k = 's3cret'"])] {
            let r = try await call(.POST, m + path, body)
            #expect(r.status == 400 && r.text.hasSuffix("\n"), "\(path) \(body): \(r.status) \(r.text)")
        }
        #expect(try await call(.GET, m + "/select?dbname=testdb&table=secrets").text == #"[{"k":"s3cret"}]"# + "\n")
        #expect(try await call(.GET, m + "/select?dbname=testdb&table=users").text.contains("John Smith"))
        let garbage = try await TestHTTP.request(.POST, m + "/insert", authorization: nil, rawBody: Array("{not json".utf8), contentType: "application/json")
        #expect(garbage.status == 400 && garbage.text.hasPrefix("Invalid request body"), "\(garbage.text)")
        let missingTable = try await call(.GET, m + "/select?dbname=testdb&table=nothing")
        #expect(missingTable.status == 400 && missingTable.text.hasPrefix("Failed to query records"), "\(missingTable.text)")

        expectMessage(try await call(.GET, m + "/dropdb?name=testdb"), "Database dropped successfully")
        #expect(try await call(.GET, other + "/select?dbname=testdb&table=users").status == 404)
    }
}
