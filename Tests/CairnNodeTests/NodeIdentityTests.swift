import CairnNode
import Foundation
import Testing

@Suite("Node identity")
struct NodeIdentityTests {
    let dir = NSTemporaryDirectory() + "cairn-identity-" + UUID().uuidString

    @Test("a new data directory gets a random identity, and keeps it across restarts")
    func createdOnceThenKept() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try NodeIdentity.loadOrCreate(directory: dir)
        #expect(first.nodeID != 0)
        #expect(try NodeIdentity.loadOrCreate(directory: dir) == first)
        #expect(try NodeIdentity.loadOrCreate(directory: dir, requested: first.nodeID) == first)
    }

    @Test("a data directory of another node is refused")
    func anotherNodesDirectory() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try NodeIdentity.loadOrCreate(directory: dir, requested: 7)
        #expect(throws: NodeIdentity.Failure.belongsToAnotherNode(directory: dir, stored: 7, requested: 8)) {
            _ = try NodeIdentity.loadOrCreate(directory: dir, requested: 8)
        }
    }

    @Test("a damaged identity file is reported, not replaced")
    func damaged() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "not hex".write(toFile: dir + "/node-id", atomically: true, encoding: .utf8)
        #expect(throws: NodeIdentity.Failure.self) { _ = try NodeIdentity.loadOrCreate(directory: dir) }
        #expect(try String(contentsOfFile: dir + "/node-id", encoding: .utf8) == "not hex")
    }
}
