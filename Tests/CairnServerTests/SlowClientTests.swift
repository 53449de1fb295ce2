import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A TCP connection from a test that plays a slow, idle or silent client.
struct RawConnection {
    let fd: Int32

    init?(port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(fd)
            return nil
        }
        self.fd = fd
    }

    @discardableResult
    func write(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// Whether the other side closed the connection (reads what is waiting, without blocking).
    var closedByPeer: Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET || errno == EPIPE }
        }
    }

    func close() { Glibc.close(fd) }

    /// What arrives until the other side closes the connection or `seconds` pass.
    func read(seconds: Double) async -> String {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n > 0 { out += buffer[0..<n]; continue }
            if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The test process opens many sockets: raise its own descriptor limit to the ceiling.
    static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}

extension ProcessTests {
@Suite("Slow and idle clients", .serialized)
struct SlowClientTests {
    @Test("1,000 idle HTTP connections, clients dripping their headers or their bodies, and 300 silent connections on the Raft port do not stop service; each is closed within its stated timeout")
    func slowAndIdleClients() async throws {
        RawConnection.raiseDescriptorLimit()
        let c = try await ProcessCluster.single("slow-clients", extraArgs: ["--http-idle-timeout-seconds", "2", "--http-body-timeout-seconds", "3"])
        defer { c.destroy() }
        let n = c.nodes[0]
        _ = try await n.execute(["CREATE TABLE t(x)"])
        let idle = (0..<1_000).compactMap { _ in RawConnection(port: n.httpPort) }
        let silentRaft = (0..<300).compactMap { _ in RawConnection(port: n.raftPort) }
        let headerDrip = (0..<5).compactMap { _ in RawConnection(port: n.httpPort) }
        let bodyDrip = (0..<5).compactMap { _ in RawConnection(port: n.httpPort) }
        defer { for s in idle + silentRaft + headerDrip + bodyDrip { s.close() } }
        #expect(idle.count == 1_000 && silentRaft.count == 300)
        for s in headerDrip { s.write("POST /db/execute HTTP/1.1\r\nHost: x\r\n") }
        for s in bodyDrip { s.write("POST /db/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[") }
        // Service goes on meanwhile, for every kind of request, at its usual pace.
        let started = Date()
        for i in 0..<10 {
            for s in headerDrip { s.write("X-Slow-\(i): y\r\n") }
            for s in bodyDrip { s.write("\"x\",") }
            let w = try await n.execute(["INSERT INTO t VALUES (\(i))"])
            #expect(w.status == 200, "\(w.text)")
            #expect(try await n.rows("SELECT count(*) FROM t").map { "\($0)" } == ["[\(i + 1)]"])
            try await Task.sleep(for: .milliseconds(400))
        }
        print("slow clients: 10 writes and reads with 1,000 idle and 10 dripping HTTP connections open took \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        // 4 s in: idle connections (2 s) and header drips (their head never came within 2 s) are gone,
        // and so are body drips (3 s after their head). The Raft port's silent connections go at 5 s.
        #expect(idle.filter { !$0.closedByPeer }.isEmpty, "idle connections still open")
        #expect(headerDrip.filter { !$0.closedByPeer }.isEmpty, "header drips still open")
        #expect(bodyDrip.filter { !$0.closedByPeer }.isEmpty, "body drips still open")
        try await Task.sleep(for: .seconds(2))
        #expect(silentRaft.filter { !$0.closedByPeer }.isEmpty, "silent Raft connections still open")
        let after = try await n.execute(["INSERT INTO t VALUES (99)"])
        #expect(after.status == 200)
    }

    @Test("a connection kept busy for several idle timeouts stays open (each answer moves its deadline), then idles out")
    func busyConnectionOutlivesIdleTimeouts() async throws {
        let c = try await ProcessCluster.single("busy-conn", extraArgs: ["--http-idle-timeout-seconds", "1"])
        defer { c.destroy() }
        let n = c.nodes[0]
        let s = try #require(RawConnection(port: n.httpPort))
        defer { s.close() }
        // 12 requests 300 ms apart: 3.6 s on one connection, past the deadline its first arm set.
        for i in 0..<12 {
            s.write("GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            let text = await s.read(seconds: 0.3)
            #expect(text.hasPrefix("HTTP/1.1 200"), "request \(i): \(text.prefix(200))")
        }
        #expect(!s.closedByPeer, "a busy connection was closed")
        let started = Date()
        let rest = await s.read(seconds: 5)
        #expect(rest.isEmpty && s.closedByPeer, "the connection did not idle out")
        #expect(Date().timeIntervalSince(started) < 3)
    }

    @Test("HTTP/1's connection rules: an HTTP/1.0 request, or one saying Connection: Close, has its connection ended right after its answer (not at the idle timeout); Expect: 100-continue gets 100 Continue before the body is sent")
    func http1ConnectionRules() async throws {
        let c = try await ProcessCluster.single("http1-rules", extraArgs: ["--http-idle-timeout-seconds", "20"])
        defer { c.destroy() }
        let n = c.nodes[0]
        _ = try await n.execute(["CREATE TABLE t(x)"])
        let body = #"{"statements":["SELECT count(*) FROM t"]}"#
        func head(_ version: String, _ extra: String) -> String {
            "POST /v1/db/default/query \(version)\r\nHost: x\r\nAuthorization: \(TestHTTP.admin)\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(body.utf8.count)\r\n\(extra)\r\n"
        }
        for (version, extra) in [("HTTP/1.0", ""), ("HTTP/1.1", "Connection: Close\r\n")] {
            let s = try #require(RawConnection(port: n.httpPort))
            defer { s.close() }
            s.write(head(version, extra) + body)
            let started = Date()
            let text = await s.read(seconds: 5)
            #expect(text.hasPrefix("\(version) 200") && text.lowercased().contains("connection: close"), "\(version) \(extra): \(text.prefix(300))")
            #expect(s.closedByPeer && Date().timeIntervalSince(started) < 4, "\(version) \(extra): the connection was not ended after the answer")
        }
        let s = try #require(RawConnection(port: n.httpPort))
        defer { s.close() }
        s.write(head("HTTP/1.1", "Expect: 100-continue\r\n"))
        let interim = await s.read(seconds: 1.5)
        #expect(interim == "HTTP/1.1 100 Continue\r\n\r\n", "\(interim.prefix(300))")
        s.write(body)
        let answer = await s.read(seconds: 1.5)
        #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer.prefix(300))")
        #expect(!s.closedByPeer)
    }

    @Test("pipelined requests, some answered on the fast path and some by the router, are answered in the order sent, each seeing the writes before it")
    func pipelinedMixedOrder() async throws {
        let c = try await ProcessCluster.single("pipelined-mixed")
        defer { c.destroy() }
        let n = c.nodes[0]
        // Also verifies the admin's password: the requests below are then served without the router.
        _ = try await n.execute(["CREATE TABLE t(x)"])
        func post(_ path: String, _ body: String) -> String {
            "POST \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: \(TestHTTP.admin)\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
        }
        let count = #"{"statements":["SELECT count(*) FROM t"]}"#
        let s = try #require(RawConnection(port: n.httpPort))
        defer { s.close() }
        #expect(s.write(post("/v1/db/default/execute", #"{"statements":[["INSERT INTO t(x) VALUES(?)", 1]]}"#)
                        + "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
                        + post("/v1/db/default/query", count)
                        + post("/v1/db/default/execute", #"{"statements":[["INSERT INTO t(x) VALUES(?)", 2], ["INSERT INTO t(x) VALUES(?)", 3]]}"#)
                        + post("/v1/db/default/query", count)
                        + post("/v1/db/default/query", #"{"statements":["#)
                        + post("/v1/db/default/execute", #"{"statements":[["INSERT INTO t(x) VALUES(?)", 4]]}"#)
                        + post("/v1/db/default/query", count)))
        var text = ""
        for _ in 0..<50 where text.components(separatedBy: "HTTP/1.1 ").count < 9 { text += await s.read(seconds: 0.2) }
        let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }
        #expect(statuses == ["200", "200", "200", "200", "200", "400", "200", "200"], "\(text.prefix(3000))")
        let markers = [#""last_insert_id":1"#, #""status":"ok""#, "[[1]]", #""last_insert_id":3"#, "[[3]]", "malformed JSON", #""last_insert_id":4"#, "[[4]]"]
        let positions = markers.map { m in text.range(of: m).map { text.distance(from: text.startIndex, to: $0.lowerBound) } ?? -1 }
        #expect(!positions.contains(-1) && positions == positions.sorted(), "\(markers) at \(positions) in \(text.prefix(3000))")
    }

    @Test("pipelined requests: the idle timeout does not cut a connection while a request it carries is still being answered (a read waiting for a quorum outlasts it); both answers arrive, then the connection idles out")
    func pipelinedOutlastsIdleTimeout() async throws {
        let c = try await ProcessCluster.founded("pipelined", count: 3, extraArgs: ["--http-idle-timeout-seconds", "1", "--read-timeout-ms", "2500", "--request-timeout-ms", "2500"])
        defer { c.destroy() }
        _ = try await c.write(["CREATE TABLE t(x)"])
        let n = c.nodes[0]
        for other in c.nodes.dropFirst() { await other.kill9() }
        // Past any read lease node 0 held (400 ms), a linearizable read there waits for a quorum.
        try await Task.sleep(for: .seconds(1))
        let query = #"{"statements":["SELECT count(*) FROM t"]}"#
        let s = try #require(RawConnection(port: n.httpPort))
        defer { s.close() }
        s.write("POST /v1/db/default/query HTTP/1.1\r\nHost: x\r\nAuthorization: \(TestHTTP.admin)\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(query.utf8.count)\r\n\r\n\(query)"
                + "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        let started = Date()
        let text = await s.read(seconds: 10)
        let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0.prefix(3) }
        #expect(statuses == ["503", "200"], "\(text.prefix(600))")
        // Answered after the read's 2.5 s, longer than the idle timeout; closed about a second after.
        #expect(Date().timeIntervalSince(started) < 8, "the connection was not closed once idle")
    }
}
}
