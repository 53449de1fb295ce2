import CairnRaft
import Crypto
import Foundation
import SwiftASN1
import X509

/// The cluster's own certificate authority, and the node certificates it signs: what lets mutual TLS
/// between nodes be on by default, without an operator making certificates. The founding node creates
/// the CA; a node gets its certificate when it founds or joins the cluster, for a key it made itself
/// (the private key never leaves its node). A node certificate names its node (`cairn-node-<id>`), so a
/// peer cannot claim another member's id.
public struct ClusterCA: Sendable, Equatable {
    public let certificatePEM: String
    public let privateKeyPEM: String

    static let validityYears = 20.0
    static let nodePrefix = "cairn-node-"

    public init(certificatePEM: String, privateKeyPEM: String) {
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
    }

    /// A new CA (P-256), valid for twenty years.
    public static func create() throws -> ClusterCA {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName("cairn cluster CA \(UUID().uuidString.prefix(8).lowercased())") }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3_600), notValidAfter: now.addingTimeInterval(validityYears * 365 * 86_400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key))
        return ClusterCA(certificatePEM: try certificate.serializeAsPEM().pemString, privateKeyPEM: key.pemRepresentation)
    }

    /// A certificate for node `id` on `publicKeyPEM` (the node's own key), signed by this CA.
    public func issue(nodeID: NodeID, publicKeyPEM: String) throws -> String {
        let caKey = try P256.Signing.PrivateKey(pemRepresentation: privateKeyPEM)
        let ca = try Certificate(pemEncoded: certificatePEM)
        let publicKey = try P256.Signing.PublicKey(pemRepresentation: publicKeyPEM)
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(publicKey),
            notValidBefore: now.addingTimeInterval(-3_600), notValidAfter: ca.notValidAfter,
            issuer: ca.subject, subject: try DistinguishedName { CommonName(Self.nodePrefix + String(nodeID)) },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
            },
            issuerPrivateKey: .init(caKey))
        return try certificate.serializeAsPEM().pemString
    }

    /// The node a certificate names (`cairn-node-<id>`), if it names one.
    public static func nodeID(inCertificateDER der: [UInt8]) -> NodeID? {
        guard let certificate = try? Certificate(derEncoded: der) else { return nil }
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                let text = String(describing: attribute.value)
                if text.hasPrefix(nodePrefix), let id = NodeID(text.dropFirst(nodePrefix.count)) { return id }
            }
        }
        return nil
    }
}

/// A node's key and certificate, and the cluster CA's certificate, in the data directory (`tls/`).
public struct NodeCredentials: Sendable {
    public let directory: String
    public var keyPath: String { directory + "/node.key" }
    public var certificatePath: String { directory + "/node.pem" }
    public var caPath: String { directory + "/ca.pem" }
    /// Only on the node that created the CA, until the catalog holds it.
    public var caKeyPath: String { directory + "/ca.key" }

    public init(dataDirectory: String) {
        directory = dataDirectory + "/tls"
    }

    public var isComplete: Bool {
        [keyPath, certificatePath, caPath].allSatisfy { FileManager.default.fileExists(atPath: $0) }
    }

    /// This node's public key (PEM), making the key pair first if there is none.
    public func publicKey() throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        if let existing = FileManager.default.contents(atPath: keyPath) {
            return try P256.Signing.PrivateKey(pemRepresentation: String(decoding: existing, as: UTF8.self)).publicKey.pemRepresentation
        }
        let key = P256.Signing.PrivateKey()
        try Self.writeSecret(key.pemRepresentation, to: keyPath)
        return key.publicKey.pemRepresentation
    }

    /// Stores the certificate the cluster issued for this node, and the CA's.
    public func store(certificatePEM: String, caPEM: String) throws {
        try Self.writeSecret(caPEM, to: caPath)
        try Self.writeSecret(certificatePEM, to: certificatePath)
    }

    public func storeCA(_ ca: ClusterCA) throws {
        try Self.writeSecret(ca.privateKeyPEM, to: caKeyPath)
        try Self.writeSecret(ca.certificatePEM, to: caPath)
    }

    /// The CA this node created, if it did.
    public func localCA() -> ClusterCA? {
        guard let key = FileManager.default.contents(atPath: caKeyPath), let cert = FileManager.default.contents(atPath: caPath) else { return nil }
        return ClusterCA(certificatePEM: String(decoding: cert, as: UTF8.self), privateKeyPEM: String(decoding: key, as: UTF8.self))
    }

    public func transportTLS() throws -> TransportTLS {
        try TransportTLS(certificatePath: certificatePath, keyPath: keyPath, caPath: caPath)
    }

    /// Written whole, synced and renamed into place, readable by this user only.
    static func writeSecret(_ text: String, to path: String) throws {
        let temporary = path + ".\(UInt32.random(in: 0...UInt32.max)).tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw TransportCredentialError("cannot write \(temporary)")
        }
        // The file, then its name: a power loss must not lose a certificate the cluster already issued.
        try sync(temporary, flags: O_RDONLY)
        guard rename(temporary, path) == 0 else { throw TransportCredentialError("cannot write \(path)") }
        try sync((path as NSString).deletingLastPathComponent, flags: O_RDONLY | O_DIRECTORY)
    }

    private static func sync(_ file: String, flags: Int32) throws {
        let fd = open(file, flags | O_CLOEXEC)
        guard fd >= 0 else { throw TransportCredentialError("cannot open \(file) to sync it") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw TransportCredentialError("cannot sync \(file)") }
    }
}

public struct TransportCredentialError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
