import CairnJSON
import Foundation
import Logging

/// Log lines on standard error: `2026-11-21T14:23:00Z info node 123: message`, or one JSON object per
/// line (`--log-format json`) with time, level, label, metadata and message.
public struct CairnLogHandler: LogHandler {
    public enum Format: String, Sendable { case text, json }

    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    let label: String
    let format: Format

    public init(label: String, format: Format) {
        self.label = label
        self.format = format
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        write(level: event.level, message: event.message, metadata: event.metadata)
    }

    private func write(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?) {
        let time = Timestamp.iso8601()
        let all = metadata.merging(extra ?? [:]) { $1 }
        var text: String
        switch format {
        case .text:
            text = "\(time) \(level) \(message)"
            if !all.isEmpty { text += " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }
        case .json:
            var fields: [(String, JSON)] = [("time", .string(time)), ("level", .string(level.rawValue)), ("label", .string(label))]
            for (k, v) in all.sorted(by: { $0.key < $1.key }) { fields.append((k, .string("\(v)"))) }
            fields.append(("message", .string(message.description)))
            text = String(decoding: JSON.object(fields).serialized(), as: UTF8.self)
        }
        try? FileHandle.standardError.write(contentsOf: Data((text + "\n").utf8))
    }
}
