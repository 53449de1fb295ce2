import CairnJSON
import Foundation
import NIOHTTP1
import Testing

/// Checks JSON against the subset of OpenAPI 3.0 schemas docs/openapi.json uses.
struct SchemaChecker {
    let document: JSON

    func resolve(_ schema: JSON) -> JSON {
        guard case .string(let ref)? = schema["$ref"] else { return schema }
        var node = document
        for part in ref.dropFirst(2).split(separator: "/") { node = node[String(part)] ?? .null }
        return node
    }

    /// Problems found (empty: the value conforms).
    func check(_ value: JSON, _ rawSchema: JSON, at path: String = "$") -> [String] {
        let schema = resolve(rawSchema)
        if value == .null { return schema["nullable"] == .bool(true) || schema == .object([]) ? [] : ["\(path): null is not allowed"] }
        if case .array(let options)? = schema["anyOf"] {
            return options.contains { check(value, $0, at: path).isEmpty } ? [] : ["\(path): matches none of the anyOf schemas"]
        }
        if case .array(let options)? = schema["oneOf"] {
            let matches = options.filter { check(value, $0, at: path).isEmpty }.count
            return matches == 1 ? [] : ["\(path): matches \(matches) of the oneOf schemas"]
        }
        var problems: [String] = []
        if case .string(let type)? = schema["type"] {
            let ok: Bool
            switch (type, value) {
            case ("object", .object), ("array", .array), ("string", .string), ("boolean", .bool): ok = true
            case ("integer", .number(let t)): ok = !t.contains(".") && !t.lowercased().contains("e")
            case ("number", .number): ok = true
            default: ok = false
            }
            if !ok { return ["\(path): expected \(type), found \(String(decoding: value.serialized(), as: UTF8.self).prefix(60))"] }
        }
        if case .array(let allowed)? = schema["enum"], !allowed.contains(value) { problems.append("\(path): \(value) is not one of \(allowed)") }
        if case .object(let members) = value {
            if case .array(let required)? = schema["required"] {
                for case .string(let key) in required where !members.contains(where: { $0.0 == key }) { problems.append("\(path): missing \"\(key)\"") }
            }
            let properties = schema["properties"]
            for (key, v) in members {
                if let p = properties?[key] {
                    problems += check(v, p, at: "\(path).\(key)")
                } else if schema["additionalProperties"] == .bool(false) {
                    problems.append("\(path): unexpected \"\(key)\"")
                } else if let extra = schema["additionalProperties"], case .object = extra {
                    problems += check(v, extra, at: "\(path).\(key)")
                }
            }
        }
        if case .array(let items) = value {
            if case .number(let min)? = schema["minItems"], let m = Int(min), items.count < m { problems.append("\(path): fewer than \(m) items") }
            if let itemSchema = schema["items"] {
                for (i, item) in items.enumerated() { problems += check(item, itemSchema, at: "\(path)[\(i)]") }
            }
        }
        return problems
    }

    /// The documented operation a request hit: its path template.
    func template(for path: String) -> String? {
        guard case .object(let paths)? = document["paths"] else { return nil }
        let parts = path.split(separator: "?")[0].split(separator: "/")
        return paths.map(\.0).first { t in
            let tparts = t.split(separator: "/")
            return tparts.count == parts.count && zip(tparts, parts).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
        }
    }
}

extension ProcessTests {
@Suite("The OpenAPI document against real responses")
struct OpenAPITests {
    @Test("every documented operation is exercised, and every JSON response it gives matches its documented schema")
    func conformance() async throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/openapi.json")
        let document = try JSON.parse(Array(try Data(contentsOf: file)))
        let checker = SchemaChecker(document: document)
        let c = try await ProcessCluster.single("openapi")
        defer { c.destroy() }
        let n = c.nodes[0]
        let anonymous: String? = nil
        let calls: [(HTTPMethod, String, String?, String?)] = [
            (.POST, "/v1/db/default/execute", #"{"statements":["CREATE TABLE o(id INTEGER PRIMARY KEY, v TEXT, b BLOB)", ["INSERT INTO o(v, b) VALUES(?, ?)", "x", [1,2]], "INSERT INTO nosuch VALUES(1)"]}"#, TestHTTP.admin),
            (.POST, "/v1/db/default/execute", "{", TestHTTP.admin),
            (.POST, "/v1/db/default/query", #"{"statements":["SELECT * FROM o", {"sql":"SELECT ?", "params":[1.5]}, "SELECT * FROM nosuch"], "consistency":"local"}"#, TestHTTP.admin),
            (.POST, "/v1/db/default/query", #"{"statements":["SELECT 1"]}"#, anonymous),
            (.POST, "/v1/db/default/request", #"{"statements":["INSERT INTO o(v) VALUES('y')", "SELECT count(*) FROM o"]}"#, TestHTTP.admin),
            (.POST, "/v1/db/nosuch/request", #"{"statements":["SELECT 1"]}"#, TestHTTP.admin),
            (.GET, "/v1/db/default/backup?fmt=sql", nil, TestHTTP.admin),
            (.POST, "/v1/db/default/check", nil, TestHTTP.admin),
            (.POST, "/v1/db/nosuch/check", nil, TestHTTP.admin),
            (.POST, "/v1/databases", #"{"name":"sharded","shards":2}"#, TestHTTP.admin),
            (.POST, "/v1/db/sharded/execute", #"{"statements":["CREATE TABLE s(k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"]}"#, TestHTTP.admin),
            (.POST, "/v1/db/sharded/execute", #"{"statements":["INSERT INTO s VALUES (1, 'a'), (2, 'b')"]}"#, TestHTTP.admin),
            (.POST, "/v1/db/sharded/query", #"{"statements":["SELECT count(*) FROM s", "SELECT v FROM s WHERE k = 2"]}"#, TestHTTP.admin),
            (.GET, "/v1/db/sharded/shards", nil, TestHTTP.admin),
            (.POST, "/v1/db/sharded/shards/1/split", "{}", TestHTTP.admin),
            (.POST, "/v1/db/sharded/execute", #"{"statements":["CREATE TABLE r(k INTEGER NOT NULL PRIMARY KEY) SHARD BY RANGE (k) SPLIT AT (100)"]}"#, TestHTTP.admin),
            (.POST, "/v1/db/sharded/tables/r/split", #"{"at": 50}"#, TestHTTP.admin),
            (.POST, "/v1/db/sharded/tables/r/split", #"{"at": null}"#, TestHTTP.admin),
            (.POST, "/v1/db/sharded/tables/s/split", #"{"at": 1}"#, TestHTTP.admin),
            (.POST, "/v1/db/nosuch/tables/r/split", #"{"at": 1}"#, TestHTTP.admin),
            (.GET, "/v1/cluster/settings", nil, TestHTTP.admin),
            (.PUT, "/v1/cluster/settings", #"{"snapshot_mib_per_second": 64}"#, TestHTTP.admin),
            (.PUT, "/v1/cluster/settings", #"{"dead_after_ms": 1}"#, TestHTTP.admin),
            (.POST, "/v1/db/sharded/shards/9/split", "{}", TestHTTP.admin),
            (.POST, "/v1/db/sharded/shards/x/split", "{}", TestHTTP.admin),
            (.GET, "/v1/db/nosuch/shards", nil, TestHTTP.admin),
            (.POST, "/v1/db/sharded/route", #"{"statements":["SELECT count(*) FROM s", "SELECT * FROM s WHERE k = 1", "INSERT INTO s VALUES (3, 'c')", "SELECT 1"]}"#, TestHTTP.admin),
            (.POST, "/v1/db/sharded/route", #"{"statements":["SELECT * FROM s JOIN s AS t USING (k) WHERE nosuch = 1"]}"#, TestHTTP.admin),
            (.POST, "/v1/db/default/load", "INSERT INTO o(v) VALUES('z');", TestHTTP.admin),
            (.GET, "/v1/databases", nil, TestHTTP.admin),
            (.POST, "/v1/databases", #"{"name":"extra"}"#, TestHTTP.admin),
            (.DELETE, "/v1/databases/extra", nil, TestHTTP.admin),
            (.GET, "/v1/status", nil, TestHTTP.admin),
            (.GET, "/v1/cluster", nil, TestHTTP.admin),
            (.GET, "/v1/cluster?detail=true", nil, TestHTTP.admin),
            (.GET, "/v1/health", nil, anonymous),
            (.GET, "/v1/openapi.json", nil, anonymous),
            (.GET, "/v1/ready", nil, anonymous),
            (.POST, "/v1/auth/token", #"{"username":"admin","password":"\#(TestHTTP.adminPassword)"}"#, anonymous),
            (.POST, "/v1/users", #"{"username":"olga","password":"olga-password","grants":[{"permission":"read","database":"default"}]}"#, TestHTTP.admin),
            (.GET, "/v1/users", nil, TestHTTP.admin),
            (.POST, "/v1/users/olga/grants", #"{"permission":"status"}"#, TestHTTP.admin),
            (.DELETE, "/v1/users/olga/grants", #"{"permission":"status"}"#, TestHTTP.admin),
            (.PUT, "/v1/users/olga/password", #"{"password":"olga-password-2"}"#, TestHTTP.admin),
            (.DELETE, "/v1/users/olga", nil, TestHTTP.admin),
            (.POST, "/v1/cluster/join", #"{"id":77,"raft_address":"127.0.0.1:1","http_address":"127.0.0.1:2","voter":false}"#, TestHTTP.admin),
            (.POST, "/v1/cluster/drain", #"{"id":77}"#, TestHTTP.admin),
            (.POST, "/v1/cluster/remove", #"{"id":77}"#, TestHTTP.admin),
            (.POST, "/v1/cluster/join-tokens", #"{"ttl_seconds":60}"#, TestHTTP.admin),
            (.POST, "/v1/cluster/join-tokens", #"{"ttl_seconds":0}"#, TestHTTP.admin),
            (.POST, "/v1/cluster/join", #"{"id":78,"raft_address":"127.0.0.1:3","http_address":"127.0.0.1:4","voter":false,"join_token":"cairn-join-x"}"#, anonymous),
            (.GET, "/v1/cluster/bootstrap", nil, anonymous),
            (.GET, "/metrics", nil, TestHTTP.admin),
            // Last: it revokes every token.
            (.POST, "/v1/cluster/rotate-keys", nil, TestHTTP.admin),
        ]
        var exercised = Set<String>()
        for (method, path, body, auth) in calls {
            let r = try await n.raw(method, path, body, contentType: path.hasSuffix("/load") ? "text/plain" : "application/json", authorization: auth)
            let template = try #require(checker.template(for: path), "\(path) is not documented")
            let operation = try #require(document["paths"]?[template]?[method.rawValue.lowercased()], "\(method) \(template) is not documented")
            exercised.insert("\(method.rawValue.lowercased()) \(template)")
            let response = try #require(operation["responses"]?[String(r.status)], "\(method) \(path) answered \(r.status), which is not documented: \(r.text)")
            let type = (r.header("content-type") ?? "").split(separator: ";")[0].trimmingCharacters(in: .whitespaces)
            guard let schema = response["content"]?[type]?["schema"] else {
                Issue.record("\(method) \(path) answered \(r.status) with \(type), which is not documented")
                continue
            }
            if type == "application/json" {
                let problems = checker.check(try JSON.parse(Array(r.text.utf8)), schema)
                #expect(problems.isEmpty, "\(method) \(path) → \(r.status): \(problems)\n\(r.text.prefix(400))")
            }
        }
        guard case .object(let paths)? = document["paths"] else { return }
        let documented = Set(paths.flatMap { template, ops -> [String] in
            guard case .object(let methods) = ops else { return [] }
            return methods.map { "\($0.0) \(template)" }
        })
        #expect(documented.subtracting(exercised).isEmpty, "documented but not exercised: \(documented.subtracting(exercised).sorted())")
        // Every operation has an operationId, each its own; the node serves this very document.
        var ids: [String] = []
        for case .object(let methods) in paths.map(\.1) {
            for (method, operation) in methods {
                guard case .string(let id)? = operation["operationId"] else { Issue.record("\(method) has no operationId"); continue }
                ids.append(id)
            }
        }
        #expect(ids.count == documented.count && Set(ids).count == ids.count, "operationIds: \(ids.sorted())")
        let served = try await n.raw(.GET, "/v1/openapi.json", authorization: anonymous)
        #expect(served.status == 200 && (try? JSON.parse(Array(served.text.utf8))) == document, "the node serves another document than docs/openapi.json")
    }
}
}
