import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A loopback port nothing listens on right now (the kernel's pick for port 0).
public func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
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
