/// Durations as operators write them: a whole number and a unit, `500ms`, `10s`, `5m`, `2h`.
public enum DurationText {
    static let units: [(suffix: String, nanos: UInt64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)]

    /// Nanoseconds, or nil for anything else (no unit, a fraction, a sign, or past a week).
    public static func nanos(_ text: String) -> UInt64? {
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            guard !number.isEmpty, number.allSatisfy(\.isASCII), number.allSatisfy(\.isNumber), number.count <= 9,
                  let n = UInt64(number) else { return nil }
            let (total, overflow) = n.multipliedReportingOverflow(by: scale)
            guard !overflow, total <= 7 * 86_400 * 1_000_000_000 else { return nil }
            return total
        }
        return nil
    }

    /// The largest unit that divides `nanos` evenly.
    public static func format(_ nanos: UInt64) -> String {
        for (suffix, scale) in units.reversed() where nanos >= scale && nanos % scale == 0 { return "\(nanos / scale)\(suffix)" }
        return "\(nanos / 1_000_000)ms"
    }
}
