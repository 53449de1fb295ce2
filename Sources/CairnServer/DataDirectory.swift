import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The data directory holds the log, the databases, snapshots, the audit log and the cluster's keys:
/// only the node's own user may read it.
enum DataDirectory {
    /// Makes everything this process creates from now on private (directories 0700, files 0600), and
    /// tightens what an earlier version or an operator left looser, saying so.
    static func secure(_ path: String, log: (String) -> Void) throws {
        umask(0o077)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        var tightened: [String] = []
        func tighten(_ p: String, directory: Bool) {
            var st = stat()
            guard lstat(p, &st) == 0, (st.st_mode & S_IFMT) != S_IFLNK, st.st_mode & 0o077 != 0 else { return }
            if chmod(p, directory ? 0o700 : 0o600) == 0 { tightened.append(p) }
        }
        tighten(path, directory: true)
        if let walker = FileManager.default.enumerator(atPath: path) {
            while let relative = walker.nextObject() as? String {
                let full = path + "/" + relative
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory) else { continue }
                tighten(full, directory: isDirectory.boolValue)
            }
        }
        if !tightened.isEmpty {
            log("data directory \(path): \(tightened.count) files and directories were readable by other users; now only by this one (\(tightened.prefix(3).joined(separator: ", "))\(tightened.count > 3 ? ", ..." : ""))")
        }
    }
}
