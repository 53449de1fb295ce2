import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads lines from the terminal with editing and history (arrows, Home/End, Ctrl-A/E/U/K/W, Ctrl-C
/// to drop the line, Ctrl-D to quit). Without a terminal (a pipe, a script) it reads plain lines.
final class LineEditor {
    private(set) var history: [String] = []
    private let historyPath: String?
    let isTerminal = isatty(STDIN_FILENO) != 0 && isatty(STDOUT_FILENO) != 0
    /// What `readLine` returns for Ctrl-C: the caller drops whatever statement it was collecting.
    static let interrupted = "\u{3}"

    init(historyPath: String?) {
        self.historyPath = historyPath
        if let historyPath, let text = try? String(contentsOfFile: historyPath, encoding: .utf8) {
            history = text.split(separator: "\n").suffix(1000).map(String.init)
        }
    }

    func remember(_ line: String) {
        guard !line.trimmingCharacters(in: .whitespaces).isEmpty, history.last != line else { return }
        history.append(line)
        guard let historyPath else { return }
        if !FileManager.default.fileExists(atPath: historyPath) {
            FileManager.default.createFile(atPath: historyPath, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        if let h = FileHandle(forWritingAtPath: historyPath) {
            h.seekToEndOfFile()
            try? h.write(contentsOf: Data((line.replacingOccurrences(of: "\n", with: " ") + "\n").utf8))
            try? h.close()
        }
    }

    func readLine(prompt: String) -> String? {
        guard isTerminal else {
            return Swift.readLine(strippingNewline: true)
        }
        return withRawMode { edit(prompt: prompt) }
    }

    /// A secret typed without echo.
    func readSecret(prompt: String) -> String? {
        write(prompt)
        guard isTerminal else { return Swift.readLine(strippingNewline: true) }
        let line = withRawMode { () -> String? in
            var bytes: [UInt8] = []
            while let b = readByte() {
                switch b {
                case 0x0D, 0x0A: return String(decoding: bytes, as: UTF8.self)
                case 0x03: return nil
                case 0x04 where bytes.isEmpty: return nil
                case 0x7F, 0x08: if !bytes.isEmpty { bytes.removeLast() }
                default: if b >= 0x20 { bytes.append(b) }
                }
            }
            return nil
        }
        write("\r\n")
        return line
    }

    private func withRawMode<T>(_ body: () -> T) -> T {
        var original = termios()
        tcgetattr(STDIN_FILENO, &original)
        var raw = original
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG | IEXTEN)
        raw.c_iflag &= ~tcflag_t(IXON | ICRNL)
        tcsetattr(STDIN_FILENO, TCSADRAIN, &raw)
        defer { tcsetattr(STDIN_FILENO, TCSADRAIN, &original) }
        return body()
    }

    private func readByte() -> UInt8? {
        var b: UInt8 = 0
        while true {
            let n = Glibc.read(STDIN_FILENO, &b, 1)
            if n == 1 { return b }
            if n < 0 && errno == EINTR { continue }
            return nil
        }
    }

    private func write(_ s: String) {
        var bytes = Array(s.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress, $0.count) }
    }

    private func edit(prompt: String) -> String? {
        var line: [Character] = []
        var cursor = 0
        var recall = history.count
        var pending: [UInt8] = []
        func redraw() {
            var s = "\r" + prompt + String(line) + "\u{1B}[K"
            if cursor < line.count { s += "\u{1B}[\(line.count - cursor)D" }
            write(s)
        }
        write(prompt)
        while let b = readByte() {
            switch b {
            case 0x0D, 0x0A:
                write("\r\n")
                return String(line)
            case 0x03:
                write("^C\r\n")
                return Self.interrupted
            case 0x04:
                if line.isEmpty { write("\r\n"); return nil }
                if cursor < line.count { line.remove(at: cursor) }
            case 0x7F, 0x08:
                if cursor > 0 { line.remove(at: cursor - 1); cursor -= 1 }
            case 0x01: cursor = 0
            case 0x05: cursor = line.count
            case 0x15: line.removeFirst(cursor); cursor = 0
            case 0x0B: line.removeLast(line.count - cursor)
            case 0x17:
                var start = cursor
                while start > 0 && line[start - 1] == " " { start -= 1 }
                while start > 0 && line[start - 1] != " " { start -= 1 }
                line.removeSubrange(start..<cursor)
                cursor = start
            case 0x1B:
                guard readByte() == UInt8(ascii: "["), let code = readByte() else { break }
                switch code {
                case UInt8(ascii: "A"):
                    if recall > 0 { recall -= 1; line = Array(history[recall]); cursor = line.count }
                case UInt8(ascii: "B"):
                    if recall < history.count { recall += 1 }
                    line = recall < history.count ? Array(history[recall]) : []
                    cursor = line.count
                case UInt8(ascii: "C"): if cursor < line.count { cursor += 1 }
                case UInt8(ascii: "D"): if cursor > 0 { cursor -= 1 }
                case UInt8(ascii: "H"): cursor = 0
                case UInt8(ascii: "F"): cursor = line.count
                case UInt8(ascii: "3"):
                    if readByte() == UInt8(ascii: "~"), cursor < line.count { line.remove(at: cursor) }
                default: break
                }
            default:
                guard b >= 0x20 else { break }
                // Collect a UTF-8 sequence before inserting it as one character.
                pending.append(b)
                guard let s = String(validating: pending, as: UTF8.self) else {
                    if pending.count >= 4 { pending = [] }
                    continue
                }
                pending = []
                for ch in s { line.insert(ch, at: cursor); cursor += 1 }
            }
            redraw()
        }
        return line.isEmpty ? nil : String(line)
    }
}
