import CairnNode
import CairnRaft
import CairnTransport
import Foundation

/// How a node comes to hold a certificate of the cluster CA, so that mutual TLS between nodes is on
/// without an operator making certificates: the founding node makes the CA (with several founders,
/// the one with the lowest id, which certifies the others' keys, learned from the addresses the
/// operator gave); a joining node sends its public key with the authenticated join and gets its
/// certificate back from whichever member it asked (the CA is in the catalog, which only members
/// read). Until a node holds its certificate its transport carries nothing.
extension ClusterNode {
    /// Whether this node still has to get its certificate before it can speak Raft.
    var needsCertificate: Bool { config.nodeCredentials != nil && !runtime.transport.usesTLS }

    /// This node's public key (made now if it has none), shown to fellow founders and sent with a join.
    func ownPublicKey() throws -> String? {
        guard let credentials = config.nodeCredentials else { return nil }
        // Under the lock: formation and a bootstrap answer may ask at once, and must not each make a key.
        return try state.withLockedValue { s in
            if let key = s.publicKey { return key }
            let key = try credentials.publicKey()
            s.publicKey = key
            return key
        }
    }

    /// Makes the cluster CA here (or reuses the one this node made before), certifies this node, and
    /// starts TLS. Returns the CA.
    @discardableResult
    func becomeCA() throws -> ClusterCA? {
        guard let credentials = config.nodeCredentials, let key = try ownPublicKey() else { return nil }
        let ca: ClusterCA
        if let existing = credentials.localCA() {
            ca = existing
        } else {
            ca = try ClusterCA.create()
            try credentials.storeCA(ca)
            log("node \(nodeID): made the cluster CA (node certificates for mutual TLS between nodes)")
        }
        try adopt(certificate: try ca.issue(nodeID: nodeID, publicKeyPEM: key), ca: ca.certificatePEM)
        return ca
    }

    /// Stores this node's certificate and starts TLS with it.
    func adopt(certificate: String, ca: String) throws {
        guard let credentials = config.nodeCredentials else { return }
        try credentials.store(certificatePEM: certificate, caPEM: ca)
        runtime.transport.useTLS(try credentials.transportTLS())
        log("node \(nodeID): holds its certificate; Raft traffic is mutual TLS")
    }

    /// On the founder that made the CA: certificates for the fellow founders' keys, published in its
    /// bootstrap answer.
    func certifyFounders(_ founders: [BootstrapInfo], ca: ClusterCA) throws {
        var issued: [String: String] = [:]
        for info in founders {
            guard let key = info.publicKey else { continue }
            issued[String(info.id)] = try ca.issue(nodeID: info.id, publicKeyPEM: key)
        }
        state.withLockedValue { s in
            s.issuedCA = ca.certificatePEM
            s.issued.merge(issued) { _, new in new }
        }
    }

    /// The CA a member signs a joining node's key with: the catalog's, or its own before the catalog has it.
    func caForJoining(_ catalog: Catalog) -> ClusterCA? {
        catalog.clusterCA ?? config.nodeCredentials?.localCA()
    }

    /// On the node that made the CA: hands it to the catalog once, so every member can admit nodes.
    func publishCA(_ catalog: Catalog) async throws {
        guard catalog.exists, catalog.clusterCA == nil, let ca = config.nodeCredentials?.localCA() else { return }
        try await changeCatalog(Catalog.setClusterCA(ca))
        log("node \(nodeID): the cluster CA is in the catalog")
    }
}
