import CairnRaft
import Foundation
import NIOSSL
import Testing
@testable import CairnTransport

@Suite("Node certificates")
struct NodeCertificatesTests {
    @Test("the cluster CA certifies a node's own key; the certificate names the node, and only that node")
    func issueAndName() throws {
        let ca = try ClusterCA.create()
        let dir = NSTemporaryDirectory() + "cairn-certs-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let credentials = NodeCredentials(dataDirectory: dir)
        let key = try credentials.publicKey()
        #expect(try credentials.publicKey() == key, "the key pair is made once")
        let pem = try ca.issue(nodeID: 42, publicKeyPEM: key)
        let der = try NIOSSLCertificate(bytes: Array(pem.utf8), format: .pem).toDERBytes()
        #expect(ClusterCA.nodeID(inCertificateDER: der) == 42)
        let caDER = try NIOSSLCertificate(bytes: Array(ca.certificatePEM.utf8), format: .pem).toDERBytes()
        #expect(ClusterCA.nodeID(inCertificateDER: caDER) == nil, "the CA names no node")
        #expect(ClusterCA.nodeID(inCertificateDER: [1, 2, 3]) == nil)
        try credentials.store(certificatePEM: pem, caPEM: ca.certificatePEM)
        #expect(credentials.isComplete)
        _ = try credentials.transportTLS()
        // Secrets are this user's alone.
        for file in [credentials.keyPath, credentials.certificatePath, credentials.caPath] {
            let mode = (try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? NSNumber)?.intValue ?? 0
            #expect(mode & 0o077 == 0, "\(file): \(String(mode, radix: 8))")
        }
        // A certificate for another node's key does not fit this node's key.
        let other = try ClusterCA.create()
        #expect(throws: (any Error).self) { try other.issue(nodeID: 1, publicKeyPEM: "not a key") }
    }
}
