import CairnAuth
import CairnCluster
import CairnNode
import CairnRaft
import Crypto
import Foundation
import HTTPTypes
import Metrics
import Hummingbird
import NIOConcurrencyHelpers
import NIOPosix

/// Who is asking.
struct Principal: Sendable {
    /// nil: not signed in (only grants to `*` apply).
    var user: String?
    var grants: Grants
    /// Another node of this cluster, acting for itself (its requests carry a node token).
    var isNode = false
    /// The node that forwarded this client's request here, authenticated by its node token; nil when
    /// the client sent the request to this node. The node that received it from the client audited it.
    var forwardedBy: NodeID? = nil
    /// Forwards between nodes so far: 0 unless a node sent the request (a client's count means nothing).
    var hops = 0

    /// What a client's request is audited under: node-authenticated requests were audited where they came in.
    var isClient: Bool { !isNode && forwardedBy == nil }
}

/// The headers by which a node forwards a client's request: its own token stands in for the client's
/// credentials (a password never leaves the node it was sent to), and this names whom it acts for.
enum ForwardedPrincipal {
    static let header = "X-Cairn-Principal"
    static let anonymous = "anonymous"
    static let userPrefix = "user:"

    static func value(for who: Principal) -> String { who.user.map { userPrefix + $0 } ?? anonymous }
}

enum AccessDenied: Error {
    /// No credentials, or wrong ones: 401.
    case unauthenticated(String)
    /// Signed in, but without the permission: 403.
    case forbidden(String)
    case limited(retryAfterSeconds: Int)
}

/// Checks credentials (bearer tokens, HTTP Basic) against the replicated users, and permissions
/// against their grants. Off only with `--insecure-dev` (and in `cairn demo`).
final class AuthService: Sendable {
    let enabled: Bool
    let signer = TokenSigner()
    /// 5 failures a minute for one user from one address; 50 from one address in all.
    let userLimiter = LoginLimiter(maxFailures: 5, windowSeconds: 60)
    let addressLimiter = LoginLimiter(maxFailures: 50, windowSeconds: 60)
    let tokenTTLSeconds: Double
    private let cluster: ClusterNode
    /// Basic credentials verified recently (scrypt is slow on purpose): key → (epoch, until).
    private let verified = NIOLockedValueBox<[[UInt8]: (epoch: Int64, until: Date)]>([:])
    /// This node's own token, and the key it was signed with (a rotated key needs a new one).
    private let nodeToken = NIOLockedValueBox<(token: String, until: Date, key: [UInt8])?>(nil)
    private let checkedTokens = NIOLockedValueBox(CheckedTokens(key: []))

    /// Tokens whose signatures were checked with `key`, and their claims.
    struct CheckedTokens {
        /// Beyond this many, expired entries go, then all of them.
        static let maxCount = 10_000
        var key: [UInt8]
        var claims: [String: TokenClaims] = [:]
    }

    init(enabled: Bool, tokenTTLSeconds: Double, cluster: ClusterNode) {
        self.enabled = enabled
        self.tokenTTLSeconds = tokenTTLSeconds
        self.cluster = cluster
    }

    static let nodePrefix = "node:"
    static let forwardedIn = Counter(label: "cairn_http_forwarded_in_total")

    /// Keeps the signing key in step with the catalog.
    func refreshKey() async {
        await signer.setKey(cluster.catalog.tokenKey)
    }

    /// Who sent `request`. With auth off (`--insecure-dev`) everyone may do everything, but a node's
    /// token still tells a forwarded request from a client's, for the hop bound and the audit log.
    func principal(for request: Request) async throws -> Principal {
        guard enabled else {
            var who = Principal(user: nil, grants: Grants([Grant(.all)]))
            if let header = request.headers[.authorization], let token = Self.credentials(header, scheme: "bearer"),
               let claims = try? await checkedClaims(of: String(token), key: cluster.catalog.tokenKey),
               let node = try? await nodePrincipal(claims, request) {
                who.isNode = node.isNode
                who.forwardedBy = node.forwardedBy
                who.hops = node.hops
            }
            return who
        }
        let catalog = cluster.catalog
        guard let header = request.headers[.authorization] else {
            return Principal(user: nil, grants: catalog.grants(of: nil))
        }
        if let token = Self.credentials(header, scheme: "bearer") {
            let claims = try await checkedClaims(of: String(token), key: catalog.tokenKey)
            if let node = try await nodePrincipal(claims, request) { return node }
            return try await userPrincipal(claims)
        }
        if let encoded = Self.credentials(header, scheme: "basic") {
            guard let (name, password) = Self.basicCredentials(encoded) else {
                throw AccessDenied.unauthenticated("malformed Basic credentials")
            }
            try await check(name: name, password: password, remote: ClientAddress.current)
            return Principal(user: name, grants: cluster.catalog.grants(of: name))
        }
        throw AccessDenied.unauthenticated("unsupported Authorization scheme; use Bearer or Basic")
    }

    /// Who sent a request, when that is known without waiting: auth off and no credentials, or a user's
    /// bearer token already checked and still valid under this node's catalog copy. nil when only
    /// `principal(for:)` can tell (a new token, a node's token, Basic credentials, a user or password
    /// newer than this copy): the caller then takes the path that can wait.
    /// `remote`: the client's address, which failed logins are limited by.
    func knownPrincipal(authorization header: String?, remote: String) -> Principal? {
        guard enabled else { return header == nil ? Principal(user: nil, grants: Grants([Grant(.all)])) : nil }
        let catalog = cluster.catalog
        guard let header else { return Principal(user: nil, grants: catalog.grants(of: nil)) }
        if let encoded = Self.credentials(header, scheme: "basic") {
            // Verified with scrypt recently, for this password epoch, and not locked out now.
            guard let (name, password) = Self.basicCredentials(encoded), catalog.exists, let user = catalog.users[name], (try? userLimiter.check([name + "@" + remote])) != nil,
                  (try? addressLimiter.check([remote])) != nil,
                  let hit = verified.withLockedValue({ $0[Self.verifiedKey(name: name, password: password)] }),
                  hit.epoch == user.passwordEpoch, hit.until > Date() else { return nil }
            return Principal(user: name, grants: catalog.grants(of: name))
        }
        guard let token = Self.credentials(header, scheme: "bearer") else { return nil }
        let key = catalog.tokenKey
        guard let claims = checkedTokens.withLockedValue({ $0.key == key ? $0.claims[String(token)] : nil }), claims.exp.value > Date(),
              !claims.user.hasPrefix(Self.nodePrefix), let user = catalog.users[claims.user], user.passwordEpoch == claims.pwe else { return nil }
        return Principal(user: user.name, grants: catalog.grants(of: user.name))
    }

    /// The user a token was issued to, for an API that carries tokens its own way (a node's token is
    /// refused: nodes sign their requests in `Authorization`).
    func principal(forToken token: String) async throws -> Principal {
        let claims = try await checkedClaims(of: token, key: cluster.catalog.tokenKey)
        guard !claims.user.hasPrefix(Self.nodePrefix) else { throw AccessDenied.unauthenticated("a node's token is not a user's") }
        return try await userPrincipal(claims)
    }

    private func userPrincipal(_ claims: TokenClaims) async throws -> Principal {
        var current = cluster.catalog
        if (current.users[claims.user]?.passwordEpoch ?? .min) < claims.pwe, let fresh = try? await cluster.refreshCatalog() {
            // Issued by a node that already knew of a user or password this node's copy lacks.
            current = fresh
        }
        guard let user = current.users[claims.user] else { throw AccessDenied.unauthenticated("the token's user no longer exists") }
        guard user.passwordEpoch == claims.pwe else { throw AccessDenied.unauthenticated(AuthError.tokenRevoked.description) }
        return Principal(user: user.name, grants: current.grants(of: user.name))
    }

    /// The principal of a request carrying a node's token: the node itself, or the client it forwards
    /// for (named by `ForwardedPrincipal.header`, with that user's grants); nil for a user's token.
    private func nodePrincipal(_ claims: TokenClaims, _ request: Request) async throws -> Principal? {
        var catalog = cluster.catalog
        guard claims.user.hasPrefix(Self.nodePrefix) else { return nil }
        // A founder signs its first registration before the catalog lists it; the metadata group does.
        guard let id = UInt64(claims.user.dropFirst(Self.nodePrefix.count)), catalog.nodes[id]?.removed != true else {
            throw AccessDenied.unauthenticated("the token names a node that is not a member")
        }
        if catalog.nodes[id] == nil {
            let members = (try? await cluster.runtime.status(group: metadataGroup))?.config
            guard members?.isMember(id) == true else { throw AccessDenied.unauthenticated("the token names a node that is not a member") }
        }
        let hops = API.hopCount(request)
        // Counted here, where the count is believed: a client's header is not a forward.
        if hops > 0 { Self.forwardedIn.increment() }
        guard let onBehalf = request.headers[API.forwardedPrincipal] else {
            return Principal(user: claims.user, grants: Grants([Grant(.all)]), isNode: true, hops: hops)
        }
        if onBehalf == ForwardedPrincipal.anonymous {
            return Principal(user: nil, grants: enabled ? catalog.grants(of: nil) : Grants([Grant(.all)]), forwardedBy: id, hops: hops)
        }
        guard onBehalf.hasPrefix(ForwardedPrincipal.userPrefix) else {
            throw HTTPFailure.badRequest("\(ForwardedPrincipal.header) must be \"\(ForwardedPrincipal.anonymous)\" or \"\(ForwardedPrincipal.userPrefix)<name>\"")
        }
        let name = String(onBehalf.dropFirst(ForwardedPrincipal.userPrefix.count))
        if enabled && catalog.users[name] == nil, let fresh = try? await cluster.refreshCatalog() { catalog = fresh }
        guard !enabled || catalog.users[name] != nil else { throw AccessDenied.unauthenticated("the forwarded request's user no longer exists") }
        return Principal(user: name, grants: enabled ? catalog.grants(of: name) : Grants([Grant(.all)]), forwardedBy: id, hops: hops)
    }

    /// What `token` says, once its signature and expiry are checked. A token's signature is checked
    /// once and its claims kept (decoding a JWT used to be a third of a request's CPU); its expiry is
    /// checked every time, and the caller checks its user and password epoch against the catalog.
    private func checkedClaims(of token: String, key: [UInt8]) async throws -> TokenClaims {
        let now = Date()
        if let hit = checkedTokens.withLockedValue({ $0.key == key ? $0.claims[token] : nil }), hit.exp.value > now { return hit }
        await refreshKey()
        let claims: TokenClaims
        do {
            claims = try await signer.verify(token)
        } catch let e as AuthError {
            throw AccessDenied.unauthenticated(e.description)
        }
        checkedTokens.withLockedValue { cache in
            if cache.key != key { cache = CheckedTokens(key: key) }
            if cache.claims.count >= CheckedTokens.maxCount { cache.claims = cache.claims.filter { $0.value.exp.value > now } }
            if cache.claims.count >= CheckedTokens.maxCount { cache.claims.removeAll(keepingCapacity: true) }
            cache.claims[token] = claims
        }
        return claims
    }

    /// The credentials after `scheme` (matched regardless of case, as HTTP schemes are) with the
    /// spaces around them trimmed; nil for another scheme.
    static func credentials(_ header: String, scheme: String) -> Substring? {
        let bytes = header.utf8, name = scheme.utf8
        guard bytes.count > name.count, bytes[bytes.index(bytes.startIndex, offsetBy: name.count)] == UInt8(ascii: " "),
              zip(bytes, name).allSatisfy({ b, n in (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b) ? b + 32 == n : b == n }) else { return nil }
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        var rest = header.dropFirst(name.count + 1)
        while rest.first.map(isSpace) == true { rest = rest.dropFirst() }
        while rest.last.map(isSpace) == true { rest = rest.dropLast() }
        return rest
    }

    /// A Basic credential's name and password (base64 of `name:password`); nil when malformed.
    static func basicCredentials(_ encoded: Substring) -> (name: String, password: String)? {
        guard let decoded = Data(base64Encoded: String(encoded)), let text = String(data: decoded, encoding: .utf8),
              let colon = text.firstIndex(of: ":") else { return nil }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }

    /// Where a verified password is remembered: the name and a digest of the password, never the
    /// password itself.
    static func verifiedKey(name: String, password: String) -> [UInt8] {
        Array(name.utf8) + [0] + Array(SHA256.hash(data: Array(password.utf8)))
    }

    /// Verifies a password, rate-limited per client address and per user at that address (a guesser
    /// cannot lock a user out for everyone else).
    func check(name: String, password: String, remote: String) async throws {
        let userKey = [name + "@" + remote], addressKey = [remote]
        do {
            try userLimiter.check(userKey)
            try addressLimiter.check(addressKey)
        } catch let AuthError.tooManyAttempts(seconds) {
            throw AccessDenied.limited(retryAfterSeconds: seconds)
        }
        func failed() -> AccessDenied {
            userLimiter.failed(userKey)
            addressLimiter.failed(addressKey)
            return AccessDenied.unauthenticated(AuthError.badCredentials.description)
        }
        guard cluster.catalog.exists else { throw HTTPFailure.unavailable(AuthError.notReady.description) }
        // A user created, or a password changed, through another node moments ago: look at the
        // committed catalog before refusing.
        var user = cluster.catalog.users[name]
        if user == nil { user = (try? await cluster.refreshCatalog())?.users[name] }
        guard var user else {
            // As slow as a wrong password, so the time taken does not tell whether the user exists.
            _ = try? await Self.offLoop { PasswordHash.verify(password, against: Self.decoyHash) }
            throw failed()
        }
        let cacheKey = Self.verifiedKey(name: name, password: password)
        if let hit = verified.withLockedValue({ $0[cacheKey] }), hit.epoch == user.passwordEpoch, hit.until > Date() { return }
        // Counted as a failure until it proves otherwise, in the same step as the limit is checked:
        // guesses sent all at once cannot slip past the limit while their slow checks run.
        do {
            try userLimiter.attempt(userKey)
            do { try addressLimiter.attempt(addressKey) } catch { userLimiter.withdraw(userKey); throw error }
        } catch let AuthError.tooManyAttempts(seconds) {
            throw AccessDenied.limited(retryAfterSeconds: seconds)
        }
        var matches = try await Self.offLoop { [hash = user.passwordHash] in PasswordHash.verify(password, against: hash) }
        if !matches, let fresh = (try? await cluster.refreshCatalog())?.users[name], fresh.passwordEpoch != user.passwordEpoch {
            user = fresh
            matches = try await Self.offLoop { [hash = user.passwordHash] in PasswordHash.verify(password, against: hash) }
        }
        guard matches else { throw AccessDenied.unauthenticated(AuthError.badCredentials.description) }
        userLimiter.succeeded(userKey)
        addressLimiter.withdraw(addressKey)
        verified.withLockedValue { $0[cacheKey] = (user.passwordEpoch, Date() + 300) }
    }

    /// Throws unless `principal` may do `permission` (on `database`, for database-level ones).
    func require(_ principal: Principal, _ permission: Permission, database: String? = nil) throws {
        guard enabled else { return }
        if principal.grants.allows(permission, database: database) { return }
        let what = permission.rawValue + (database.map { " on database \"\($0)\"" } ?? "")
        guard let user = principal.user else { throw AccessDenied.unauthenticated("sign in: this needs the \(what) permission") }
        throw AccessDenied.forbidden("user \(user) lacks the \(what) permission")
    }

    /// A signed token for `user`.
    func issueToken(user: CatalogUser) async throws -> (token: String, expires: Date) {
        await refreshKey()
        let expires = Date() + tokenTTLSeconds
        return (try await signer.sign(TokenClaims(user: user.name, passwordEpoch: user.passwordEpoch, expires: expires)), expires)
    }

    /// Headers this node sends with its own requests to other nodes: a short-lived node token.
    func nodeHeaders() async -> [(String, String)] {
        // Signed with auth off too: the receiving node tells forwarded requests from clients' by it.
        let key = cluster.catalog.tokenKey
        guard !key.isEmpty else { return [] }
        if let cached = nodeToken.withLockedValue({ $0 }), cached.until > Date() + 60, cached.key == key {
            return [("Authorization", "Bearer " + cached.token)]
        }
        await refreshKey()
        let expires = Date() + 600
        guard let token = try? await signer.sign(TokenClaims(user: Self.nodePrefix + String(cluster.nodeID), passwordEpoch: 0, expires: expires)) else {
            return []
        }
        nodeToken.withLockedValue { $0 = (token, expires, key) }
        return [("Authorization", "Bearer " + token)]
    }

    /// A hash no password is checked against in earnest: failing logins for unknown users verify against it.
    static let decoyHash = (try? PasswordHash.make(UUID().uuidString)) ?? PasswordHash.generate()

    /// Runs a password derivation (scrypt: tens of milliseconds and 32 MiB, on purpose) on a thread pool,
    /// not on the thread of the request's task, which may be an event loop serving other connections.
    static func offLoop<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(work)
    }
}
