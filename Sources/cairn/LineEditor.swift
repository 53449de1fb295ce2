import CEditLine
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads lines from the terminal through libedit (BSD editline): emacs keys, Home/End and Ctrl-arrows
/// in the sequences terminals send, history with Ctrl-R search (multi-line statements recalled whole),
/// completion of table, column and command names with Tab, Ctrl-C to drop the line, Ctrl-D to quit,
/// wide characters. Without a terminal (a pipe, a script) it reads plain lines.
final class LineEditor {
    private(set) var history: [String] = []
    private let historyPath: String?
    let isTerminal = isatty(STDIN_FILENO) != 0 && isatty(STDOUT_FILENO) != 0
    /// What `readLine` returns for Ctrl-C: the caller drops whatever statement it was collecting.
    static let interrupted = "\u{3}"
    /// Words Tab completes (table, column and command names, keywords), asked for at each Tab.
    var completions: (@Sendable () -> [String])? {
        didSet { EditLineState.completions = completions }
    }
    private var editLine: OpaquePointer?
    private var editHistory: OpaquePointer?

    init(historyPath: String?) {
        self.historyPath = historyPath
        if let historyPath, let text = try? String(contentsOfFile: historyPath, encoding: .utf8) {
            history = text.split(separator: "\n").suffix(1000).map { Self.decode(String($0)) }
        }
    }

    deinit {
        if let editLine { el_end(editLine) }
        if let editHistory { history_end(editHistory) }
    }

    func remember(_ line: String) {
        guard !line.trimmingCharacters(in: .whitespaces).isEmpty, history.last != line else { return }
        history.append(line)
        if let editHistory {
            var event = HistEvent()
            _ = cairn_history_enter(editHistory, &event, line)
        }
        guard let historyPath else { return }
        if !FileManager.default.fileExists(atPath: historyPath) {
            FileManager.default.createFile(atPath: historyPath, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        if let h = FileHandle(forWritingAtPath: historyPath) {
            h.seekToEndOfFile()
            try? h.write(contentsOf: Data((Self.encode(line) + "\n").utf8))
            try? h.close()
        }
    }

    /// One history entry a line of the file: a statement's line breaks as `\n`, its backslashes doubled.
    static func encode(_ line: String) -> String {
        line.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func decode(_ text: String) -> String {
        var out = "", escaped = false
        for ch in text {
            if escaped {
                out.append(ch == "n" ? "\n" : ch)
                escaped = false
            } else if ch == "\\" {
                escaped = true
            } else {
                out.append(ch)
            }
        }
        return out + (escaped ? "\\" : "")
    }

    func readLine(prompt: String) -> String? {
        guard isTerminal else { return Swift.readLine(strippingNewline: true) }
        let el = editor()
        EditLineState.setPrompt(prompt)
        EditLineState.interrupted = false
        var count: Int32 = 0
        guard let line = el_gets(el, &count), count > 0 else {
            if EditLineState.interrupted {
                write("^C\n")
                return Self.interrupted
            }
            write("\n")
            return nil
        }
        var text = String(cString: line)
        if text.hasSuffix("\n") { text.removeLast() }
        return text
    }

    /// libedit, set up on first use (only at a terminal).
    private func editor() -> OpaquePointer {
        if let editLine { return editLine }
        // Wide characters need a UTF-8 locale; a service's environment is often plain C.
        if setlocale(LC_CTYPE, "") == nil || String(cString: nl_langinfo(nl_item(CODESET))) != "UTF-8" { setlocale(LC_CTYPE, "C.UTF-8") }
        let el = el_init("cairn", fdopen(STDIN_FILENO, "r"), fdopen(STDOUT_FILENO, "w"), fdopen(STDERR_FILENO, "w"))!
        let h = history_init()!
        var event = HistEvent()
        _ = cairn_history_size(h, &event, 1000)
        _ = cairn_history_unique(h, &event)
        for line in history { _ = cairn_history_enter(h, &event, line) }
        _ = cairn_el_history(el, h)
        _ = cairn_el_editor(el, "emacs")
        _ = cairn_el_prompt(el, EditLineState.prompt)
        _ = cairn_el_no_isig(el)
        _ = cairn_el_addfn(el, "cairn-interrupt", "drop the line", EditLineState.interrupt)
        _ = cairn_el_addfn(el, "cairn-complete", "complete a name", EditLineState.complete)
        for (key, function) in Self.bindings { _ = cairn_el_bind(el, key, function) }
        editLine = el
        editHistory = h
        return el
    }

    /// Keys as terminals send them (xterm, VT220, rxvt and the application-mode variants), beyond
    /// libedit's emacs defaults.
    static let bindings: [(String, String)] = [
        ("^C", "cairn-interrupt"), ("^I", "cairn-complete"), ("^R", "em-inc-search-prev"), ("^S", "em-inc-search-next"),
        ("\\e[1~", "ed-move-to-beg"), ("\\e[7~", "ed-move-to-beg"), ("\\e[H", "ed-move-to-beg"), ("\\eOH", "ed-move-to-beg"),
        ("\\e[4~", "ed-move-to-end"), ("\\e[8~", "ed-move-to-end"), ("\\e[F", "ed-move-to-end"), ("\\eOF", "ed-move-to-end"),
        ("\\e[1;5D", "ed-prev-word"), ("\\e[5D", "ed-prev-word"), ("\\eOd", "ed-prev-word"), ("\\e[1;3D", "ed-prev-word"),
        ("\\e[1;5C", "em-next-word"), ("\\e[5C", "em-next-word"), ("\\eOc", "em-next-word"), ("\\e[1;3C", "em-next-word"),
        ("\\e[3~", "ed-delete-next-char"), ("\\e[5~", "ed-prev-history"), ("\\e[6~", "ed-next-history"),
    ]

    /// A secret typed without echo.
    func readSecret(prompt: String) -> String? {
        write(prompt)
        guard isTerminal else { return Swift.readLine(strippingNewline: true) }
        var original = termios()
        tcgetattr(STDIN_FILENO, &original)
        var raw = original
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG | IEXTEN)
        raw.c_iflag &= ~tcflag_t(IXON | ICRNL)
        tcsetattr(STDIN_FILENO, TCSADRAIN, &raw)
        defer { tcsetattr(STDIN_FILENO, TCSADRAIN, &original) }
        var bytes: [UInt8] = []
        var line: String?
        reading: while true {
            var b: UInt8 = 0
            let n = Glibc.read(STDIN_FILENO, &b, 1)
            if n < 0 && errno == EINTR { continue }
            guard n == 1 else { break }
            switch b {
            case 0x0D, 0x0A:
                line = String(decoding: bytes, as: UTF8.self)
                break reading
            case 0x03: break reading
            case 0x04 where bytes.isEmpty: break reading
            case 0x7F, 0x08: if !bytes.isEmpty { bytes.removeLast() }
            default: if b >= 0x20 { bytes.append(b) }
            }
        }
        write("\r\n")
        return line
    }

    private func write(_ s: String) {
        var bytes = Array(s.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress, $0.count) }
    }
}

/// What libedit's C callbacks reach (they take no context of their own). One editor per process, used
/// from one thread at a time.
enum EditLineState {
    nonisolated(unsafe) static var promptText: UnsafeMutablePointer<CChar> = strdup("")!
    nonisolated(unsafe) static var interrupted = false
    nonisolated(unsafe) static var completions: (@Sendable () -> [String])?

    static func setPrompt(_ text: String) {
        free(promptText)
        promptText = strdup(text)!
    }

    static let prompt: @convention(c) (OpaquePointer?) -> UnsafeMutablePointer<CChar>? = { _ in EditLineState.promptText }

    static let interrupt: @convention(c) (OpaquePointer?, Int32) -> UInt8 = { _, _ in
        EditLineState.interrupted = true
        return UInt8(CC_EOF)
    }

    /// Tab: the word before the cursor completed from `completions` (case-insensitive; the longest
    /// common prefix when several match, and the list of them when that adds nothing).
    static let complete: @convention(c) (OpaquePointer?, Int32) -> UInt8 = { el, _ in
        guard let el, let info = el_line(el)?.pointee, let words = EditLineState.completions?() else { return UInt8(CC_REFRESH_BEEP) }
        let before = String(decoding: UnsafeRawBufferPointer(start: info.buffer, count: info.cursor - info.buffer).bindMemory(to: UInt8.self), as: UTF8.self)
        let word = String(before.reversed().prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." }.reversed())
        guard !word.isEmpty else { return UInt8(CC_REFRESH_BEEP) }
        let matches = Array(Set(words.filter { $0.lowercased().hasPrefix(word.lowercased()) && $0.count > word.count })).sorted()
        guard let first = matches.first else { return UInt8(CC_REFRESH_BEEP) }
        var common = first
        for m in matches.dropFirst() {
            while !m.lowercased().hasPrefix(common.lowercased()) { common.removeLast() }
        }
        if common.count > word.count {
            _ = el_insertstr(el, String(common.dropFirst(word.count)) + (matches.count == 1 ? " " : ""))
            return UInt8(CC_REFRESH)
        }
        let list = "\n" + matches.prefix(100).joined(separator: "  ") + "\n"
        _ = list.withCString { Glibc.write(STDOUT_FILENO, $0, strlen($0)) }
        return UInt8(CC_REDISPLAY)
    }
}
