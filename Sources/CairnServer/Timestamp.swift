import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `2026-11-21T15:28:23Z`, without Foundation's date formatters (which load ICU calendars each time:
/// a measurable share of a write's CPU when every write is audited).
enum Timestamp {
    static func iso8601(_ date: Date = Date()) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(20)
        append(seconds: time_t(date.timeIntervalSince1970), to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the UTC time `seconds` after the epoch, formatted as `iso8601` formats it.
    static func append(seconds: time_t, to out: inout [UInt8]) {
        var seconds = seconds
        var t = tm()
        gmtime_r(&seconds, &t)
        func two(_ v: Int32) {
            out.append(0x30 + UInt8(truncatingIfNeeded: v / 10 % 10))
            out.append(0x30 + UInt8(truncatingIfNeeded: v % 10))
        }
        let year = t.tm_year + 1900
        two(year / 100); two(year % 100); out.append(0x2D); two(t.tm_mon + 1); out.append(0x2D); two(t.tm_mday)
        out.append(0x54); two(t.tm_hour); out.append(0x3A); two(t.tm_min); out.append(0x3A); two(t.tm_sec)
        out.append(0x5A)
    }
}
