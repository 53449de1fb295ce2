import NIOSSL

/// Mutual TLS between nodes: every node presents a certificate signed by the cluster's CA and accepts
/// only peers that do the same. Nodes are addressed by IP and identify themselves in the handshake
/// frame, so the check is CA membership, not the host name.
public struct TransportTLS: Sendable {
    let server: NIOSSLContext
    let client: NIOSSLContext

    /// PEM files: this node's certificate (chain), its private key, and the CA that signs every node's.
    public init(certificatePath: String, keyPath: String, caPath: String) throws {
        let chain = try NIOSSLCertificate.fromPEMFile(certificatePath).map { NIOSSLCertificateSource.certificate($0) }
        let key = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem))
        let roots = NIOSSLTrustRoots.certificates(try NIOSSLCertificate.fromPEMFile(caPath))

        var serverConfig = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: key)
        serverConfig.trustRoots = roots
        // Verifying the peer on a server also requires the peer to present a certificate.
        serverConfig.certificateVerification = .noHostnameVerification
        serverConfig.minimumTLSVersion = .tlsv12

        var clientConfig = TLSConfiguration.makeClientConfiguration()
        clientConfig.certificateChain = chain
        clientConfig.privateKey = key
        clientConfig.trustRoots = roots
        clientConfig.certificateVerification = .noHostnameVerification
        clientConfig.minimumTLSVersion = .tlsv12

        server = try NIOSSLContext(configuration: serverConfig)
        client = try NIOSSLContext(configuration: clientConfig)
    }
}
