import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A loopback port nothing listens on right now, below the kernel's ephemeral range (32768 and up on
/// Linux). A port the kernel picks for port 0 comes from that range, so while a test node is down (a
/// kill -9 and restart) another node's outgoing connection could take it as its local port and the
/// restart would fail with "address in use". Ports are handed out once per test process.
public func freePort() -> Int {
    portLock.lock()
    defer { portLock.unlock() }
    while true {
        let port = 10_000 + nextPortOffset % 22_000
        nextPortOffset += 1
        if portIsFree(port) { return port }
    }
}

private let portLock = NSLock()
// Start somewhere different in each test process, so two test runs on one machine rarely meet.
nonisolated(unsafe) private var nextPortOffset = Int(getpid()) * 97 % 22_000

private func portIsFree(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    let len = socklen_t(MemoryLayout<sockaddr_in>.size)
    return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } } == 0
}

public struct SupportError: Error, CustomStringConvertible {
    public var description: String
}

/// Waits for a child to exit without blocking a thread: `Process.waitUntilExit` from a task can
/// deadlock with Foundation's own child monitor, which runs on the same thread pool.
public func exitStatus(of p: Process, seconds: Double = 60) async -> Int32? {
    let end = Date() + seconds
    while p.isRunning {
        guard Date() < end else { return nil }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return p.terminationStatus
}

/// Runs a program to completion; its exit status.
@discardableResult
public func runProgram(_ path: String, _ arguments: [String]) async throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    try p.run()
    guard let status = await exitStatus(of: p) else { throw SupportError(description: "\(path) did not finish") }
    return status
}

/// Certificates for mutual TLS tests (openssl, through `make-test-certs.sh`): `DIR/CA.pem` and, per
/// node, `DIR/NODE.pem` and `DIR/NODE.key` signed by that CA.
public func makeTestCertificates(in directory: String, ca: String, nodes: [String]) async throws {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("make-test-certs.sh").path
    let status = try await runProgram(script, [directory, ca] + nodes)
    guard status == 0 else { throw SupportError(description: "make-test-certs.sh exited with \(status) (is openssl installed?)") }
}
