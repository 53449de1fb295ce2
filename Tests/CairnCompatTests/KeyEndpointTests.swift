import CairnCompat
import CairnJSON
import CairnSQLite
import Testing

/// Seed 000's key endpoint: values as the original client sent them, answers in its words.
@Suite struct KeyEndpointTests {
    static func json(_ text: String) -> JSON { try! JSON.parse(Array(text.utf8)) }

    @Test func valuesAreKeptAsSent() throws {
        #expect(try KeyEndpoint.value(of: Self.json(#"{"value":"a file's\ntext"}"#)) == .text("a file's\ntext"))
        #expect(try KeyEndpoint.value(of: Self.json(#"{"value":42}"#)) == .integer(42))
        #expect(try KeyEndpoint.value(of: Self.json(#"{"value":2.5}"#)) == .real(2.5))
        for bad in [#"{"value":{"a":1}}"#, #"{"value":[1]}"#, #"{"other":1}"#, #"[1]"#] {
            #expect(throws: CompatFailure.self) { try KeyEndpoint.value(of: Self.json(bad)) }
        }
        #expect(throws: CompatFailure.self) { try KeyEndpoint.checkKey("") }
        #expect(throws: CompatFailure.self) { try KeyEndpoint.checkKey(String(repeating: "k", count: KeyEndpoint.maxKeyBytes + 1)) }
    }

    @Test func answersInTheOriginalsWords() {
        #expect(KeyEndpoint.found(.text("v")) == Self.json(#"[["v"]]"#))
        #expect(KeyEndpoint.replicated(at: ["a", "b"]) == Self.json(#"[{"message":"Replication successful at a"},{"message":"Replication successful at b"}]"#))
        #expect(KeyEndpoint.badToken.body == Self.json(#"{"error":"Invalid or Expired token"}"#))
        #expect(KeyEndpoint.notAdmin.status == 402)
        #expect(KeyEndpoint.tokenRefused(user: "u") == Self.json(#"{"message":"Token not granted","username":"u"}"#))
        #expect(KeyEndpoint.put("k", .text("v"))[0] == SQLStatement("INSERT OR REPLACE INTO kv (key, value, chunks, version) VALUES (?, ?, NULL, NULL)", [.text("k"), .text("v")]))
    }
}
