import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `2026-11-21T15:28:23Z`, without Foundation's date formatters (which load ICU calendars each time:
/// a measurable share of a write's CPU when every write is audited).
enum Timestamp {
    static func iso8601(_ date: Date = Date()) -> String {
        var seconds = time_t(date.timeIntervalSince1970)
        var t = tm()
        gmtime_r(&seconds, &t)
        var out = [UInt8]()
        out.reserveCapacity(20)
        func digits(_ v: Int32, _ n: Int) {
            var v = v
            var buffer = [UInt8](repeating: 0x30, count: n)
            for i in stride(from: n - 1, through: 0, by: -1) {
                buffer[i] = 0x30 + UInt8(v % 10)
                v /= 10
            }
            out.append(contentsOf: buffer)
        }
        digits(t.tm_year + 1900, 4); out.append(0x2D); digits(t.tm_mon + 1, 2); out.append(0x2D); digits(t.tm_mday, 2)
        out.append(0x54); digits(t.tm_hour, 2); out.append(0x3A); digits(t.tm_min, 2); out.append(0x3A); digits(t.tm_sec, 2)
        out.append(0x5A)
        return String(decoding: out, as: UTF8.self)
    }
}
