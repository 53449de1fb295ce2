import CairnJSON
import CairnNode
import CairnSQLite
import Foundation

/// A client error: the HTTP status to answer with and a message saying what is wrong.
public struct HTTPFailure: Error, CustomStringConvertible {
    public var status: Int
    public var message: String
    public var description: String { message }

    public static func badRequest(_ m: String) -> HTTPFailure { HTTPFailure(status: 400, message: m) }
    public static func notFound(_ m: String) -> HTTPFailure { HTTPFailure(status: 404, message: m) }
    public static func unavailable(_ m: String) -> HTTPFailure { HTTPFailure(status: 503, message: m) }
}

/// Turns request JSON into statements and results into response JSON.
enum Statements {
    /// `["SELECT 1", ["INSERT ... VALUES(?)", 5], {"sql": "...", "params": [...] or {...}}]`
    static func parse(_ json: JSON?, maxCount: Int) throws(HTTPFailure) -> [SQLStatement] {
        guard case .array(let items)? = json else {
            throw .badRequest("\"statements\" must be an array of statements: an SQL string, [sql, params...], or {\"sql\": ..., \"params\": ...}")
        }
        guard !items.isEmpty else { throw .badRequest("\"statements\" is empty") }
        guard items.count <= maxCount else { throw .badRequest("\(items.count) statements exceed the limit of \(maxCount) per request") }
        var out: [SQLStatement] = []
        for (k, item) in items.enumerated() { out.append(try statement(item, at: k)) }
        return out
    }

    static func statement(_ item: JSON, at k: Int) throws(HTTPFailure) -> SQLStatement {
        switch item {
        case .string(let sql):
            return try checked(SQLStatement(sql), at: k)
        case .array(let parts):
            guard case .string(let sql)? = parts.first else {
                throw .badRequest("statement \(k): a parameterized statement is [sql, params...] with the SQL string first")
            }
            if parts.count == 2, case .object = parts[1] {
                return try checked(SQLStatement(sql, named: try named(parts[1], at: k)), at: k)
            }
            var positional: [SQLValue] = []
            for (p, v) in parts.dropFirst().enumerated() { positional.append(try value(v, statement: k, parameter: "\(p + 1)")) }
            return try checked(SQLStatement(sql, positional), at: k)
        case .object:
            guard case .string(let sql)? = item["sql"] else { throw .badRequest("statement \(k): \"sql\" must be a string") }
            switch item["params"] {
            case nil, .null?: return try checked(SQLStatement(sql), at: k)
            case .array(let values)?:
                var positional: [SQLValue] = []
                for (p, v) in values.enumerated() { positional.append(try value(v, statement: k, parameter: "\(p + 1)")) }
                return try checked(SQLStatement(sql, positional), at: k)
            case .object?:
                return try checked(SQLStatement(sql, named: try named(item["params"]!, at: k)), at: k)
            default:
                throw .badRequest("statement \(k): \"params\" must be an array (positional) or an object (named)")
            }
        default:
            throw .badRequest("statement \(k) must be an SQL string, [sql, params...], or {\"sql\": ..., \"params\": ...}")
        }
    }

    private static func checked(_ s: SQLStatement, at k: Int) throws(HTTPFailure) -> SQLStatement {
        // Foundation's trimming bridges through NSString: far too slow for every statement of every request.
        guard s.sql.unicodeScalars.contains(where: { !$0.properties.isWhitespace }) else { throw .badRequest("statement \(k) is empty") }
        return s
    }

    private static func named(_ json: JSON, at k: Int) throws(HTTPFailure) -> [String: SQLValue] {
        guard case .object(let members) = json else { return [:] }
        var out: [String: SQLValue] = [:]
        for (name, v) in members {
            guard !name.isEmpty else { throw .badRequest("statement \(k): a named parameter has an empty name") }
            let key = [":", "@", "$"].contains(name.first.map(String.init) ?? "") ? name : ":" + name
            out[key] = try value(v, statement: k, parameter: name)
        }
        return out
    }

    static func value(_ v: JSON, statement k: Int, parameter p: String) throws(HTTPFailure) -> SQLValue {
        switch v {
        case .null: return .null
        case .bool(let b): return .integer(b ? 1 : 0)
        case .string(let s): return .text(s)
        case .number(let text):
            if let i = Int64(text) { return .integer(i) }
            if let d = Double(text), d.isFinite { return .real(d) }
            throw .badRequest("statement \(k), parameter \(p): the number \(text) is out of range")
        case .array(let items):
            // A byte array is a BLOB, as rqlite's clients send them.
            var bytes: [UInt8] = []
            for item in items {
                guard case .number(let t) = item, let b = UInt8(t) else {
                    throw .badRequest("statement \(k), parameter \(p): an array parameter must be a BLOB given as bytes (0-255)")
                }
                bytes.append(b)
            }
            return .blob(bytes)
        case .object(let members):
            // A BLOB in a quarter of the bytes of an array: {"base64": "..."}.
            guard members.count == 1, members[0].0 == "base64", case .string(let text) = members[0].1 else {
                throw .badRequest("statement \(k), parameter \(p): an object is not a valid SQL value (a BLOB may be {\"base64\": \"...\"})")
            }
            guard let data = Data(base64Encoded: text) else { throw .badRequest("statement \(k), parameter \(p): \"base64\" is not base64") }
            return .blob(Array(data))
        }
    }

    static func json(_ v: SQLValue) -> JSON {
        switch v {
        case .null: return .null
        case .integer(let i): return .int(i)
        case .real(let d): return .double(d)
        case .text(let s): return .string(s)
        case .blob(let b): return .string(Data(b).base64EncodedString())
        }
    }

    static func json(write r: StatementResult) -> JSON {
        if let e = r.error { return .object([("error", .string(e))]) }
        return .object([("last_insert_id", .int(r.lastInsertID)), ("rows_affected", .int(r.rowsAffected))])
    }

    static func json(query r: StatementResult) -> JSON {
        if let e = r.error { return .object([("error", .string(e))]) }
        return .object([("columns", .array(r.columns.map { .string($0) })), ("types", .array(r.types.map { .string($0) })),
                        ("rows", .array(r.rows.map { .array($0.map(json)) }))])
    }
}
