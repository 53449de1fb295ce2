import Foundation
import JWTKit

/// What a token says: who, until when, and which password it was issued under (changing the password
/// revokes every token issued before).
public struct TokenClaims: JWTPayload, Equatable {
    public var sub: SubjectClaim
    public var exp: ExpirationClaim
    public var iat: IssuedAtClaim
    /// The user's password epoch when the token was issued.
    public var pwe: Int64

    public init(user: String, passwordEpoch: Int64, expires: Date, issued: Date = Date()) {
        sub = SubjectClaim(value: user)
        exp = ExpirationClaim(value: expires)
        iat = IssuedAtClaim(value: issued)
        pwe = passwordEpoch
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }

    public var user: String { sub.value }
}

/// Signs and checks tokens with the cluster's HMAC-SHA256 key (generated when the cluster is founded,
/// kept in the replicated catalog, so any node can check any node's tokens).
public actor TokenSigner {
    private var keys = JWTKeyCollection()
    private var keyBytes: [UInt8] = []

    public init() {}

    /// Installs the cluster key (again, if it changed).
    public func setKey(_ bytes: [UInt8]) async {
        guard bytes != keyBytes, !bytes.isEmpty else { return }
        keyBytes = bytes
        keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: bytes), digestAlgorithm: .sha256)
    }

    public var hasKey: Bool { !keyBytes.isEmpty }

    public func sign(_ claims: TokenClaims) async throws -> String {
        guard hasKey else { throw AuthError.notReady }
        return try await keys.sign(claims)
    }

    public func verify(_ token: String) async throws -> TokenClaims {
        guard hasKey else { throw AuthError.notReady }
        do {
            return try await keys.verify(token, as: TokenClaims.self)
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            throw AuthError.tokenExpired
        } catch {
            throw AuthError.badToken
        }
    }
}

public enum AuthError: Error, Equatable, CustomStringConvertible {
    case notReady
    case badToken
    case tokenExpired
    case tokenRevoked
    case badCredentials
    case tooManyAttempts(retryAfterSeconds: Int)

    public var description: String {
        switch self {
        case .notReady: return "this node has not loaded the cluster's keys yet; retry shortly"
        case .badToken: return "the bearer token is not valid"
        case .tokenExpired: return "the bearer token has expired; get a new one from POST /v1/auth/token"
        case .tokenRevoked: return "the bearer token was revoked (the password changed); get a new one"
        case .badCredentials: return "wrong username or password"
        case .tooManyAttempts(let s): return "too many failed logins; retry in \(s) s"
        }
    }
}
