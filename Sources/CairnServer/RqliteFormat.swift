import CairnJSON
import CairnSQLite
import Foundation

/// rqlite's response bytes: field order, omitted empty fields, type names and value encodings as its
/// Go server writes them (see the README's compatibility notes for where CairnDB deliberately differs).
enum RqliteFormat {
    struct Options {
        var pretty = false
        var timings = false
        var associative = false
        var blobArray = false
    }

    /// The top-level object: `results`, then `error`, `time`, `sequence_number`, `raft_index`, each
    /// only when set.
    static func body(results: [JSON], error: String? = nil, time: Double? = nil, sequenceNumber: UInt64? = nil,
                     raftIndex: UInt64? = nil, options: Options) -> [UInt8] {
        var members: [(String, JSON)] = [("results", .array(results))]
        if let error, !error.isEmpty { members.append(("error", .string(error))) }
        if options.timings, let time, time != 0 { members.append(("time", JSON.goNumber(time))) }
        if let sequenceNumber, sequenceNumber != 0 { members.append(("sequence_number", .int(sequenceNumber))) }
        if let raftIndex, raftIndex != 0 { members.append(("raft_index", .int(raftIndex))) }
        return serialize(.object(members), options)
    }

    static func serialize(_ json: JSON, _ options: Options) -> [UInt8] {
        json.serialized(indent: options.pretty ? "    " : nil, goEscaping: true)
    }

    /// A write's result, or (for a statement that returned rows, such as `RETURNING`) a query's.
    static func write(_ r: StatementResult, time: Double?, withRowsKey: Bool, options: Options) -> JSON {
        if r.error == nil && !r.columns.isEmpty { return query(r, time: time, options: options) }
        var m: [(String, JSON)] = []
        if r.lastInsertID != 0 { m.append(("last_insert_id", .int(r.lastInsertID))) }
        if r.rowsAffected != 0 { m.append(("rows_affected", .int(r.rowsAffected))) }
        if let e = r.error { m.append(("error", .string(e))) }
        if options.timings, let time, time != 0 { m.append(("time", JSON.goNumber(time))) }
        // In /db/request's associative form a write says it has no rows, so clients can tell it from a read.
        if withRowsKey && options.associative && r.error == nil { m.append(("rows", .null)) }
        return .object(m)
    }

    static func query(_ r: StatementResult, time: Double?, options: Options) -> JSON {
        if let e = r.error { return .object([("error", .string(e))]) }
        let declared = r.types.map { $0.lowercased() }
        let types = declared.enumerated().map { i, t in t.isEmpty ? inferredType(r.rows.first?[i]) : t }
        var m: [(String, JSON)] = []
        if options.associative {
            m.append(("types", .object(zip(r.columns, types).map { ($0, .string($1)) })))
            m.append(("rows", .array(r.rows.map { row in
                .object(row.enumerated().map { i, v in (r.columns[i], value(v, declared: declared[i], options: options)) })
            })))
        } else {
            if !r.columns.isEmpty { m.append(("columns", .array(r.columns.map { .string($0) }))) }
            if !types.isEmpty { m.append(("types", .array(types.map { .string($0) }))) }
            if !r.rows.isEmpty {
                m.append(("values", .array(r.rows.map { row in
                    .array(row.enumerated().map { i, v in value(v, declared: declared[i], options: options) })
                })))
            }
        }
        if options.timings, let time, time != 0 { m.append(("time", JSON.goNumber(time))) }
        return .object(m)
    }

    /// An expression column has no declared type: rqlite names it after the first row's value.
    static func inferredType(_ v: SQLValue?) -> String {
        switch v {
        case .integer?: return "integer"
        case .real?: return "real"
        case .text?: return "text"
        case .blob?: return "blob"
        default: return ""
        }
    }

    /// Declared types with text affinity: their BLOB values come back as strings in rqlite.
    static func isTextType(_ t: String) -> Bool {
        t.isEmpty || t == "text" || t == "json" || t.hasPrefix("varchar") || t.hasPrefix("nchar") || t.hasPrefix("nvarchar")
            || t.hasPrefix("clob") || t.hasPrefix("varying character") || t.hasPrefix("native character") || t.hasPrefix("character")
    }

    static func value(_ v: SQLValue, declared: String, options: Options) -> JSON {
        switch v {
        case .null: return .null
        case .integer(let i):
            switch declared {
            case "boolean": return .bool(i > 0)
            case "timestamp", "datetime", "date":
                // Go's driver reads these as times: 13+ digit values as milliseconds, others as seconds.
                let seconds = (i > 1_000_000_000_000 || i < -1_000_000_000_000) ? Double(i) / 1000 : Double(i)
                return .string(rfc3339(Date(timeIntervalSince1970: seconds), offsetSeconds: 0))
            default: return .int(i)
            }
        case .real(let d): return JSON.goNumber(d)
        case .text(let s):
            switch declared {
            case "timestamp", "datetime", "date": return .string(parseTime(s) ?? "0001-01-01T00:00:00Z")
            default: return .string(s)
            }
        case .blob(let b):
            if isTextType(declared) { return .string(String(decoding: b, as: UTF8.self)) }
            if options.blobArray { return .array(b.map { .int($0) }) }
            return .string(Data(b).base64EncodedString())
        }
    }

    /// go-sqlite3's timestamp layouts, tried in its order; the result as Go's `time.MarshalText` writes it.
    static func parseTime(_ raw: String) -> String? {
        var s = raw
        if s.hasSuffix("Z") { s.removeLast() }
        let pattern = #"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?([+-]\d{2}:\d{2})?$"#
        guard let re = try? NSRegularExpression(pattern: pattern),
              let m = re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) else { return nil }
        func group(_ k: Int) -> String? {
            guard let r = Range(m.range(at: k), in: s) else { return nil }
            return String(s[r])
        }
        // An offset needs seconds, as in the layouts; a bare date takes no time.
        if group(8) != nil && group(6) == nil { return nil }
        var c = DateComponents()
        c.year = Int(group(1)!)
        c.month = Int(group(2)!)
        c.day = Int(group(3)!)
        c.hour = Int(group(4) ?? "0")
        c.minute = Int(group(5) ?? "0")
        c.second = Int(group(6) ?? "0")
        var offset = 0
        if let o = group(8) {
            let sign = o.hasPrefix("-") ? -1 : 1
            let hm = o.dropFirst().split(separator: ":").compactMap { Int($0) }
            offset = sign * (hm[0] * 3600 + hm[1] * 60)
        }
        guard let month = c.month, (1...12).contains(month), let day = c.day, (1...31).contains(day),
              let hour = c.hour, hour < 24, let minute = c.minute, minute < 60, let second = c.second, second < 60 else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: offset)!
        guard let date = calendar.date(from: c) else { return nil }
        var text = rfc3339(date, offsetSeconds: offset)
        if var fraction = group(7) {
            while fraction.hasSuffix("0") { fraction.removeLast() }
            if !fraction.isEmpty {
                let cut = text.index(text.startIndex, offsetBy: 19)
                text = String(text[..<cut]) + "." + fraction + String(text[cut...])
            }
        }
        return text
    }

    /// `2006-01-02T15:04:05Z07:00` (whole seconds; fractions are added by the caller).
    static func rfc3339(_ date: Date, offsetSeconds: Int) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: offsetSeconds)!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        var out = String(format: "%04d-%02d-%02dT%02d:%02d:%02d", c.year!, c.month!, c.day!, c.hour!, c.minute!, c.second!)
        if offsetSeconds == 0 {
            out += "Z"
        } else {
            let a = abs(offsetSeconds)
            out += String(format: "%@%02d:%02d", offsetSeconds < 0 ? "-" : "+", a / 3600, a % 3600 / 60)
        }
        return out
    }

    /// Go's `time.ParseDuration`: "1.5s", "300ms", "2h45m", "1µs". Nanoseconds.
    static func parseDuration(_ text: String) -> Int64? {
        var s = Substring(text)
        var sign: Double = 1
        if s.hasPrefix("-") || s.hasPrefix("+") {
            if s.hasPrefix("-") { sign = -1 }
            s = s.dropFirst()
        }
        if s == "0" { return 0 }
        guard !s.isEmpty else { return nil }
        let units: [(String, Double)] = [("ns", 1), ("us", 1e3), ("µs", 1e3), ("μs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]
        var total: Double = 0
        while !s.isEmpty {
            let number = s.prefix { $0.isNumber || $0 == "." }
            guard !number.isEmpty, number != ".", let value = Double(number) else { return nil }
            s = s.dropFirst(number.count)
            let unitText = s.prefix { !$0.isNumber && $0 != "." }
            guard let unit = units.first(where: { $0.0 == unitText }) else { return nil }
            s = s.dropFirst(unitText.count)
            total += value * unit.1
        }
        return Int64(sign * total)
    }
}
