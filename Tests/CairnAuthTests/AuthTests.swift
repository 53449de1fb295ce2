import CairnAuth
import Foundation
import Testing

@Suite("Auth: passwords, tokens, grants, login limits")
struct AuthTests {
    @Test("a password hash verifies the password and nothing else, and never contains it")
    func passwordHash() throws {
        let hash = try PasswordHash.make("correct horse battery staple")
        #expect(hash.hasPrefix("scrypt$32768$8$1$"))
        #expect(!hash.contains("horse"))
        #expect(PasswordHash.verify("correct horse battery staple", against: hash))
        #expect(!PasswordHash.verify("correct horse battery stapl", against: hash))
        #expect(!PasswordHash.verify("", against: hash))
        #expect(!PasswordHash.verify("x", against: "garbage"))
        // Salted: the same password hashes differently each time.
        #expect(try PasswordHash.make("same") != PasswordHash.make("same"))
        #expect(PasswordHash.generate().count == 24)
    }

    @Test("tokens: signed by the cluster key, checked for expiry, refused under another key")
    func tokens() async throws {
        let signer = TokenSigner()
        await #expect(throws: AuthError.notReady) { try await signer.sign(TokenClaims(user: "a", passwordEpoch: 1, expires: Date() + 60)) }
        let key = PasswordHash.randomKey()
        await signer.setKey(key)
        let token = try await signer.sign(TokenClaims(user: "alice", passwordEpoch: 7, expires: Date() + 60))
        let claims = try await signer.verify(token)
        #expect(claims.user == "alice" && claims.pwe == 7)
        let expired = try await signer.sign(TokenClaims(user: "alice", passwordEpoch: 7, expires: Date() - 1))
        await #expect(throws: AuthError.tokenExpired) { try await signer.verify(expired) }
        await #expect(throws: AuthError.badToken) { try await signer.verify(token + "x") }
        await #expect(throws: AuthError.badToken) { try await signer.verify("not a token") }
        let other = TokenSigner()
        await other.setKey(PasswordHash.randomKey())
        await #expect(throws: AuthError.badToken) { try await other.verify(token) }
    }

    @Test("grants: all covers everything; database permissions imply weaker ones; rqlite's query/execute cover every database")
    func grants() {
        let admin = Grants([Grant(.all)])
        #expect(admin.allows(.remove) && admin.allows(.write, database: "x"))
        let reader = Grants([Grant(.read, database: "sales")])
        #expect(reader.allows(.read, database: "sales"))
        #expect(!reader.allows(.read, database: "hr"))
        #expect(!reader.allows(.write, database: "sales"))
        let owner = Grants([Grant(.admin, database: "*")])
        #expect(owner.allows(.write, database: "hr") && owner.allows(.read, database: "sales"))
        #expect(!owner.allows(.remove))
        let rq = Grants([Grant(.query), Grant(.status)])
        #expect(rq.allows(.read, database: "default") && !rq.allows(.write, database: "default"))
        #expect(rq.allows(.status) && !rq.allows(.backup))
        #expect(Grant(.status, database: "ignored").database == "")
    }

    @Test("failed logins lock a user or an address out for the window, and success clears them")
    func limiter() throws {
        let limiter = LoginLimiter(maxFailures: 3, windowSeconds: 60)
        let t0 = Date()
        for _ in 0..<3 { limiter.failed(["user:bob", "ip:1.2.3.4"], now: t0) }
        #expect(throws: AuthError.tooManyAttempts(retryAfterSeconds: 60)) { try limiter.check(["user:bob"], now: t0) }
        #expect(throws: (any Error).self) { try limiter.check(["user:eve", "ip:1.2.3.4"], now: t0 + 10) }
        try limiter.check(["user:bob"], now: t0 + 61)
        limiter.failed(["user:carol"])
        limiter.succeeded(["user:carol"])
        try limiter.check(["user:carol"])
        // Attempts are counted as they are admitted: the fourth is refused before any check has run,
        // and one withdrawn (its password was right) makes room again.
        for _ in 0..<3 { try limiter.attempt(["ip:5.6.7.8"]) }
        #expect(throws: (any Error).self) { try limiter.attempt(["ip:5.6.7.8"]) }
        limiter.withdraw(["ip:5.6.7.8"])
        try limiter.attempt(["ip:5.6.7.8"])
        limiter.withdraw(["ip:9.9.9.9"])
    }
}
