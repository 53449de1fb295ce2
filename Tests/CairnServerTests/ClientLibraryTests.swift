import CairnClient
import CairnJSON
import CairnTestSupport
import Foundation
import Testing

/// `CairnClient`, the library product other Swift packages depend on: typed statements in, typed
/// results out, errors per statement, against a real node with auth on.
extension ProcessTests {
    @Test func clientLibraryRunsStatements() async throws {
        let c = try await ProcessCluster.single("client-library")
        defer { c.destroy() }
        let client = CairnClient(baseURL: c.nodes[0].url, authorization: CairnClient.basic(user: "admin", password: TestHTTP.adminPassword))
        let wrote = try await client.execute([.init("CREATE TABLE t (x INTEGER, y TEXT)"), .init("INSERT INTO t VALUES (?, ?)", .int(1), .string("a")),
                                              .init("INSERT INTO nosuch VALUES (1)")])
        #expect(wrote.count == 3 && wrote[1].rowsAffected == 1 && wrote[1].lastInsertID == 1 && wrote[0].error == nil)
        #expect(wrote[2].error?.contains("no such table") == true, "\(wrote)")
        let read = try await client.query([.init("SELECT x, y FROM t WHERE x = ?", .int(1))])
        #expect(read.first?.columns == ["x", "y"] && read.first?.rows == [[.int(1), .string("a")]], "\(read)")
        // A statement the server refuses whole (an atomic write with a failure) throws with its message.
        let atomic = try await client.execute([.init("INSERT INTO t VALUES (2, 'b')"), .init("INSERT INTO nosuch VALUES (1)")], atomic: true)
        #expect(atomic.contains { $0.error != nil })
        #expect(try await client.query([.init("SELECT count(*) FROM t")]).first?.rows == [[.int(1)]], "the atomic write left a row")
        let anonymous = CairnClient(baseURL: c.nodes[0].url)
        await #expect(throws: ClientError.self) { _ = try await anonymous.query([.init("SELECT 1")]) }
        await anonymous.shutdown()
        await client.shutdown()
    }
}
