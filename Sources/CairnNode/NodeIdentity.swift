import CairnRaft
import CairnStorage
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Who this node is, kept in `DATA_DIR/node-id` so a restarted node resumes as itself.
public struct NodeIdentity: Sendable, Equatable {
    public var nodeID: NodeID

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case belongsToAnotherNode(directory: String, stored: NodeID, requested: NodeID)
        case unreadable(path: String, reason: String)

        public var description: String {
            switch self {
            case .belongsToAnotherNode(let dir, let stored, let requested):
                return "data directory \(dir) belongs to node \(stored), not node \(requested); use another directory"
            case .unreadable(let path, let reason):
                return "cannot use the node identity in \(path): \(reason)"
            }
        }
    }

    /// Reads the identity stored in `directory`, or creates one: `requested` if given, otherwise a random
    /// non-zero id, written atomically.
    public static func loadOrCreate(directory: String, requested: NodeID? = nil) throws -> NodeIdentity {
        let path = directory + "/node-id"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if FileManager.default.fileExists(atPath: path) {
            let text = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            guard let stored = UInt64(text, radix: 16), stored != noNode else {
                throw Failure.unreadable(path: path, reason: "expected a hexadecimal node id, found \"\(text.prefix(40))\"")
            }
            if let r = requested, r != stored {
                throw Failure.belongsToAnotherNode(directory: directory, stored: stored, requested: r)
            }
            return NodeIdentity(nodeID: stored)
        }
        // Below 2^53, so every JSON client reads it exactly.
        var id = requested ?? UInt64.random(in: 1...(1 << 53 - 1))
        if id == noNode { id = 1 }
        try DurableFile.write(Array((String(id, radix: 16) + "\n").utf8), to: path)
        return NodeIdentity(nodeID: id)
    }
}
