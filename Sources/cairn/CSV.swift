/// RFC 4180 CSV, as `.import` reads it: fields separated by commas, records by CRLF or LF; a field in
/// double quotes may hold commas, line breaks and doubled quotes.
enum CSV {
    struct Malformed: Error, CustomStringConvertible {
        var line: Int
        var why: String
        var description: String { "line \(line): \(why)" }
    }

    static func records(_ text: String) throws -> [[String]] {
        var records: [[String]] = [], record: [String] = [], field = ""
        var quoted = false, wasQuoted = false, line = 1
        var chars = Array(text.unicodeScalars)[...]
        if chars.first == "\u{FEFF}" { chars = chars.dropFirst() }
        var i = chars.startIndex
        func endRecord() {
            record.append(field)
            // A blank line is no record.
            if !(record.count == 1 && record[0].isEmpty && !wasQuoted) { records.append(record) }
            record = []
            field = ""
            wasQuoted = false
        }
        while i < chars.endIndex {
            let c = chars[i]
            if quoted {
                if c == "\"" {
                    if i + 1 < chars.endIndex && chars[i + 1] == "\"" {
                        field.unicodeScalars.append("\"")
                        i += 2
                        continue
                    }
                    quoted = false
                } else {
                    if c == "\n" { line += 1 }
                    field.unicodeScalars.append(c)
                }
                i += 1
                continue
            }
            switch c {
            case "\"":
                guard field.isEmpty && !wasQuoted else { throw Malformed(line: line, why: "a quote inside an unquoted field") }
                quoted = true
                wasQuoted = true
            case ",":
                record.append(field)
                field = ""
                wasQuoted = false
            case "\r" where i + 1 < chars.endIndex && chars[i + 1] == "\n":
                break
            case "\n":
                endRecord()
                line += 1
            default:
                guard !wasQuoted else { throw Malformed(line: line, why: "text after a closing quote") }
                field.unicodeScalars.append(c)
            }
            i += 1
        }
        if quoted { throw Malformed(line: line, why: "a quoted field is not closed") }
        if !field.isEmpty || !record.isEmpty || wasQuoted { endRecord() }
        return records
    }
}
