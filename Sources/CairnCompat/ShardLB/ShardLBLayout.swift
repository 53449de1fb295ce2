import CairnJSON
import CairnQuery
import CairnSQLite

/// Seed 004's sharded student database (`--compat shard-lb`): what `/init` declares, kept in the
/// `shard_lb` database: the students in `StudT`, range-sharded by `Stud_id` so that each of the
/// seed's shards (`Stud_id_low` .. `Stud_id_low + Shard_size`) is one CairnDB shard, and the seed's own
/// metadata tables beside it (`ShardT`, `MapT`, and `SchemaT` for the declared columns).
public enum ShardLB {
    public static let database = "shard_lb"
    public static let table = "StudT"
    public static let key = "Stud_id"
    /// At most this many shards (each a Raft group on RF nodes).
    public static let maxShards = 256
    /// A request's records, ids or columns beyond this are refused (the body limit bounds them too).
    public static let maxColumns = 64
    /// Rows in one INSERT statement of a `/write` (SQLite's limit on parameters is 32,766).
    static let rowsPerStatement = 500

    /// `{"message": ..., "status": "failure"}`, the seed's error shape.
    public static func failure(_ status: Int, _ message: String) -> CompatFailure {
        CompatFailure(status: status, body: .object([("message", .string(message)), ("status", .string("failure"))]))
    }

    /// FastAPI's answer to a body its pydantic model refuses: 422 with `detail`.
    static func invalid(_ location: [JSON], _ message: String, type: String) -> CompatFailure {
        CompatFailure(status: 422, body: .object([("detail", .array([.object([
            ("type", .string(type)), ("loc", .array([.string("body")] + location)), ("msg", .string(message)),
        ])]))]))
    }
}

/// The declared columns and their seed types (`Number`, `String`, `Float`).
public struct LBSchema: Sendable, Equatable {
    public var columns: [String]
    public var dtypes: [String]

    /// The seed's types as SQLite affinities: Number was MySQL's INT, Float its FLOAT. String was
    /// VARCHAR(255), yet the seed's own examples put numbers there (`"Stud_marks": 23` under
    /// `"String"`) and its model took them: such a column keeps what it is sent (no affinity), and
    /// answers it back as sent.
    static let affinities = ["number": "INTEGER", "string": "ANY", "float": "REAL", "int": "INTEGER", "integer": "INTEGER", "str": "ANY"]

    public init(columns: [String], dtypes: [String]) {
        self.columns = columns
        self.dtypes = dtypes
    }

    /// The seed's default (what its `/status` always showed).
    public static let students = LBSchema(columns: ["Stud_id", "Stud_name", "Stud_marks"], dtypes: ["Number", "String", "String"])

    init(json: JSON?) throws(CompatFailure) {
        guard case .object? = json else { throw ShardLB.invalid([.string("schema")], "Field required", type: "missing") }
        guard case .array(let cs)? = json?["columns"], case .array(let ts)? = json?["dtypes"] else {
            throw ShardLB.failure(400, "<Error> schema needs \"columns\" and \"dtypes\", lists of the same length")
        }
        var columns: [String] = [], dtypes: [String] = []
        for case .string(let c) in cs { columns.append(c) }
        for case .string(let t) in ts { dtypes.append(t) }
        guard columns.count == cs.count, dtypes.count == ts.count, columns.count == dtypes.count, !columns.isEmpty,
              columns.count <= ShardLB.maxColumns else {
            throw ShardLB.failure(400, "<Error> schema needs \"columns\" and \"dtypes\", lists of 1 to \(ShardLB.maxColumns) strings of the same length")
        }
        for c in columns where !Self.isIdentifier(c) {
            throw ShardLB.failure(400, "<Error> column name \(c) is not a name: letters, digits and _, not starting with a digit")
        }
        var seen: Set<String> = []
        for c in columns where !seen.insert(c.lowercased()).inserted {
            throw ShardLB.failure(400, "<Error> column \(c) is declared twice")
        }
        for t in dtypes where Self.affinities[t.lowercased()] == nil {
            throw ShardLB.failure(400, "<Error> dtype \(t) is not one of Number, String, Float")
        }
        guard let k = columns.firstIndex(of: ShardLB.key), Self.affinities[dtypes[k].lowercased()] == "INTEGER" else {
            throw ShardLB.failure(400, "<Error> the schema needs a Stud_id column of dtype Number: the shards are ranges of it")
        }
        self.columns = columns
        self.dtypes = dtypes
    }

    static func isIdentifier(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, s.utf8.count <= 64, first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return s.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    var json: JSON {
        .object([("columns", .array(columns.map { .string($0) })), ("dtypes", .array(dtypes.map { .string($0) }))])
    }

    func affinity(_ k: Int) -> String { Self.affinities[dtypes[k].lowercased()] ?? "ANY" }
}

/// One of the seed's shards: `Stud_id` from `low` up to, not including, `low + size`.
public struct LBShard: Sendable, Equatable {
    public var id: String
    public var low: Int64
    public var size: Int64
    public var high: Int64 { low + size }

    public init(id: String, low: Int64, size: Int64) {
        self.id = id
        self.low = low
        self.size = size
    }

    public func holds(_ studID: Int64) -> Bool { studID >= low && studID < high }

    var json: JSON { .object([("Stud_id_low", .int(low)), ("Shard_id", .string(id)), ("Shard_size", .int(size))]) }
}

/// What `/init` configured: the schema, the shards in `Stud_id` order, and the servers the request
/// named for each shard's copies.
public struct LBLayout: Sendable, Equatable {
    public var schema: LBSchema {
        didSet {
            quotedColumns = Self.quoted(schema)
            oneRowInsert = Self.insertText(quotedColumns, columns: schema.columns.count, rows: 1)
        }
    }
    /// The schema's columns, quoted, in order (in every read and insert: kept, not made each time).
    private(set) var quotedColumns: String
    /// The INSERT of one row, what nearly every `/write` sends (kept, not made each time).
    private(set) var oneRowInsert: String
    public var shards: [LBShard]
    /// Server name → the shards it holds, as `/init` asked (empty: placed by the cluster).
    public var servers: [String: [String]]

    public init(schema: LBSchema, shards: [LBShard], servers: [String: [String]]) {
        self.schema = schema
        self.quotedColumns = Self.quoted(schema)
        self.oneRowInsert = Self.insertText(quotedColumns, columns: schema.columns.count, rows: 1)
        self.shards = shards.sorted { $0.low < $1.low }
        self.servers = servers
    }

    /// Reads and checks an `/init` body (the specified shape and the original's: `N` is accepted and
    /// ignored, the servers map may be left out).
    public static func initRequest(_ json: JSON) throws(CompatFailure) -> LBLayout {
        guard case .object = json else { throw ShardLB.invalid([], "Input should be a valid dictionary", type: "dict_type") }
        let schema = try LBSchema(json: json["schema"])
        guard case .array(let list)? = json["shards"] else { throw ShardLB.invalid([.string("shards")], "Field required", type: "missing") }
        let shards = try Self.shards(list, field: "shards")
        guard !shards.isEmpty else { throw ShardLB.failure(400, "<Error> no shards were given") }
        let servers = try serversMap(json["servers"])
        if json["servers"] != nil && json["servers"] != .null {
            guard Set(servers.values.joined()) == Set(shards.map(\.id)) else { throw ShardLB.failure(400, "<Error> Mismatch between shards in 'shards' and 'servers'") }
        }
        let layout = LBLayout(schema: schema, shards: shards, servers: servers)
        try layout.checkRanges()
        return layout
    }

    /// A `servers` field: server name → the shard ids it holds (absent or null: none named).
    static func serversMap(_ json: JSON?) throws(CompatFailure) -> [String: [String]] {
        var servers: [String: [String]] = [:]
        switch json {
        case nil, .null?: break
        case .object(let members)?:
            for (name, value) in members {
                guard case .array(let ids) = value else { throw ShardLB.invalid([.string("servers"), .string(name)], "Input should be a valid list", type: "list_type") }
                var held: [String] = []
                for case .string(let id) in ids { held.append(id) }
                guard held.count == ids.count else { throw ShardLB.invalid([.string("servers"), .string(name)], "Input should be a list of strings", type: "string_type") }
                servers[name] = held
            }
        default:
            throw ShardLB.invalid([.string("servers")], "Input should be a valid dictionary", type: "dict_type")
        }
        return servers
    }

    /// Shard objects (`Stud_id_low`, `Shard_id`, `Shard_size`), each id once.
    static func shards(_ list: [JSON], field: String) throws(CompatFailure) -> [LBShard] {
        guard list.count <= ShardLB.maxShards else { throw ShardLB.failure(400, "<Error> at most \(ShardLB.maxShards) shards") }
        var out: [LBShard] = []
        var ids: Set<String> = []
        for (k, item) in list.enumerated() {
            guard case .string(let id)? = item["Shard_id"] else { throw ShardLB.invalid([.string(field), .int(k), .string("Shard_id")], "Field required", type: "missing") }
            guard let low = Lax.integer(item["Stud_id_low"]) else {
                throw ShardLB.invalid([.string(field), .int(k), .string("Stud_id_low")], "Input should be a valid integer", type: "int_type")
            }
            guard let size = Lax.integer(item["Shard_size"]) else {
                throw ShardLB.invalid([.string(field), .int(k), .string("Shard_size")], "Input should be a valid integer", type: "int_type")
            }
            guard !id.isEmpty, id.utf8.count <= 64 else { throw ShardLB.failure(400, "<Error> a Shard_id has 1 to 64 bytes") }
            guard size > 0, low >= -(1 << 53), low <= (1 << 53), size <= (1 << 53) else {
                throw ShardLB.failure(400, "<Error> shard \(id): Shard_size must be positive and Stud_id_low and Shard_size within ±2^53")
            }
            guard ids.insert(id).inserted else { throw ShardLB.failure(400, "<Error> Duplicate shard id \(id) found in request") }
            out.append(LBShard(id: id, low: low, size: size))
        }
        return out
    }

    /// Ranges may leave gaps (a `Stud_id` in none is skipped, as the seed did) but never overlap.
    func checkRanges() throws(CompatFailure) {
        for (a, b) in zip(shards, shards.dropFirst()) where b.low < a.high {
            throw ShardLB.failure(400, "<Error> shards \(a.id) and \(b.id) overlap: \(a.id) ends at \(a.high), \(b.id) starts at \(b.low)")
        }
    }

    public func shard(of studID: Int64) -> LBShard? {
        // Shards are few (at most 256) and sorted: a binary search of their lows.
        var lo = 0, hi = shards.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if shards[mid].low <= studID { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0, shards[lo - 1].holds(studID) else { return nil }
        return shards[lo - 1]
    }

    public func shard(named id: String) -> LBShard? { shards.first { $0.id == id } }

    /// Shards a `Stud_id` range (both ends included, as the seed's `BETWEEN`) reaches.
    public func shards(from low: Int64, to high: Int64) -> [LBShard] {
        shards.filter { $0.low <= high && $0.high > low }
    }

    // MARK: Statements

    /// The students' table: one CairnDB range shard per seed shard (split at every shard's low but the
    /// first; a gap between two shards belongs to the lower one, which never gets its ids).
    public var createTable: SQLStatement {
        let columns = schema.columns.enumerated().map { k, c in
            SQLLexer.quote(c) + (schema.affinity(k) == "ANY" ? "" : " " + schema.affinity(k)) + (c == ShardLB.key ? " NOT NULL PRIMARY KEY" : "")
        }
        let points = shards.dropFirst().map { String($0.low) }
        return SQLStatement("CREATE TABLE IF NOT EXISTS \(ShardLB.table) (\(columns.joined(separator: ", "))) SHARD BY RANGE (\(ShardLB.key))"
                            + (points.isEmpty ? "" : " SPLIT AT (\(points.joined(separator: ", ")))"))
    }

    /// The seed's metadata tables (in the database's home group), and the row that says the system is
    /// configured: its primary key admits one `/init`.
    public var metadata: [SQLStatement] {
        var out = Self.metadataSchema + [SQLStatement("INSERT INTO LBConfig(id, configured_at) VALUES (0, datetime('now'))")]
        for (k, (c, t)) in zip(schema.columns, schema.dtypes).enumerated() {
            out.append(SQLStatement("INSERT INTO SchemaT(position, column_name, dtype) VALUES (?, ?, ?)", [.integer(Int64(k)), .text(c), .text(t)]))
        }
        for s in shards {
            out.append(SQLStatement("INSERT INTO ShardT(Stud_id_low, Shard_id, Shard_size) VALUES (?, ?, ?)", [.integer(s.low), .text(s.id), .integer(s.size)]))
        }
        for (server, held) in servers.sorted(by: { $0.key < $1.key }) {
            for id in held {
                out.append(SQLStatement("INSERT INTO MapT(Shard_id, Server_id) VALUES (?, ?)", [.text(id), .text(server)]))
            }
        }
        return out
    }

    static let metadataSchema = [
        SQLStatement("CREATE TABLE IF NOT EXISTS LBConfig(id INTEGER PRIMARY KEY CHECK (id = 0), configured_at TEXT NOT NULL)"),
        SQLStatement("CREATE TABLE IF NOT EXISTS SchemaT(position INTEGER PRIMARY KEY, column_name TEXT NOT NULL, dtype TEXT NOT NULL)"),
        SQLStatement("CREATE TABLE IF NOT EXISTS ShardT(Stud_id_low INTEGER NOT NULL, Shard_id TEXT PRIMARY KEY, Shard_size INTEGER NOT NULL)"),
        SQLStatement("CREATE TABLE IF NOT EXISTS MapT(Shard_id TEXT NOT NULL, Server_id TEXT NOT NULL, PRIMARY KEY (Shard_id, Server_id))"),
    ]

    /// What reads the layout back: run as one read, answered to `init(loading:)`.
    public static let loadQueries = [
        SQLStatement("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('LBConfig', 'SchemaT', 'ShardT', 'MapT')"),
        SQLStatement("SELECT column_name, dtype FROM SchemaT ORDER BY position"),
        SQLStatement("SELECT Stud_id_low, Shard_id, Shard_size FROM ShardT ORDER BY Stud_id_low"),
        SQLStatement("SELECT Server_id, Shard_id FROM MapT ORDER BY Server_id, Shard_id"),
        SQLStatement("SELECT count(*) FROM LBConfig"),
    ]

    /// The layout the `loadQueries` found; nil when the system is not configured.
    public init?(loading results: [StatementResult]) {
        guard results.count == Self.loadQueries.count, case .integer(4)? = results[0].rows.first?.first,
              results.dropFirst().allSatisfy({ $0.error == nil }), case .integer(1)? = results[4].rows.first?.first else { return nil }
        var columns: [String] = [], dtypes: [String] = []
        for row in results[1].rows {
            guard row.count == 2, case .text(let c) = row[0], case .text(let t) = row[1] else { return nil }
            columns.append(c)
            dtypes.append(t)
        }
        var shards: [LBShard] = []
        for row in results[2].rows {
            guard row.count == 3, case .integer(let low) = row[0], case .text(let id) = row[1], case .integer(let size) = row[2] else { return nil }
            shards.append(LBShard(id: id, low: low, size: size))
        }
        var servers: [String: [String]] = [:]
        for row in results[3].rows {
            guard row.count == 2, case .text(let server) = row[0], case .text(let id) = row[1] else { return nil }
            servers[server, default: []].append(id)
        }
        self.init(schema: LBSchema(columns: columns, dtypes: dtypes), shards: shards, servers: servers)
    }

    /// A layout read back from the database, checked as `/init` checked it: the metadata tables are
    /// the database's like any other, and a user allowed to write them may have changed them.
    public static func loaded(_ results: [StatementResult]) throws(CompatFailure) -> LBLayout? {
        guard let layout = LBLayout(loading: results) else { return nil }
        let corrupt = "<Error> the layout recorded in ShardT and SchemaT is not one /init would accept"
        do throws(CompatFailure) {
            _ = try LBSchema(json: layout.schema.json)
            _ = try shards(layout.shards.map(\.json), field: "shards")
            try layout.checkRanges()
        } catch {
            throw ShardLB.failure(503, corrupt + ": " + (Self.messageOf(error) ?? "?"))
        }
        guard !layout.shards.isEmpty else { throw ShardLB.failure(503, corrupt) }
        return layout
    }

    static func messageOf(_ f: CompatFailure) -> String? {
        if case .string(let m)? = f.body["message"] { return m }
        return nil
    }

    // MARK: Records

    /// A record of the request (an object with every declared column) as the row's values, in the
    /// schema's order. `location` is where it sits in the body, for the 422's `loc`.
    public func values(of record: JSON?, at location: [JSON]) throws(CompatFailure) -> [SQLValue] {
        guard case .object? = record else { throw ShardLB.invalid(location, "Input should be a valid dictionary", type: "model_type") }
        var out: [SQLValue] = []
        for (k, column) in schema.columns.enumerated() {
            let value = record?[column]
            guard let value, value != .null else { throw ShardLB.invalid(location + [.string(column)], "Field required", type: "missing") }
            switch schema.affinity(k) {
            case "INTEGER":
                guard let v = Lax.integer(value) else { throw ShardLB.invalid(location + [.string(column)], "Input should be a valid integer", type: "int_parsing") }
                out.append(.integer(v))
            case "REAL":
                guard let v = Lax.number(value) else { throw ShardLB.invalid(location + [.string(column)], "Input should be a valid number", type: "float_parsing") }
                out.append(.real(v))
            default:
                switch value {
                case .string(let s): out.append(.text(s))
                case .number(let text):
                    if let v = Int64(text) { out.append(.integer(v)) } else if let v = Double(text), v.isFinite { out.append(.real(v)) } else { fallthrough }
                default: throw ShardLB.invalid(location + [.string(column)], "Input should be a valid string", type: "string_type")
                }
            }
        }
        return out
    }

    /// Where `Stud_id` is among the columns (every layout has it: `/init` and loading check).
    public var keyIndex: Int { schema.columns.firstIndex(of: ShardLB.key) ?? 0 }

    private static func quoted(_ schema: LBSchema) -> String { schema.columns.map(SQLLexer.quote).joined(separator: ", ") }

    /// INSERTs of `rows` (each in the schema's order), in statements of at most `rowsPerStatement` rows;
    /// sent as one atomic request, they commit on every shard they reach or on none.
    public func inserts(_ rows: [[SQLValue]]) -> [SQLStatement] {
        if rows.count == 1 { return [SQLStatement(oneRowInsert, rows[0])] }
        var out: [SQLStatement] = []
        var start = 0
        while start < rows.count {
            let chunk = rows[start..<min(start + ShardLB.rowsPerStatement, rows.count)]
            out.append(SQLStatement(Self.insertText(quotedColumns, columns: schema.columns.count, rows: chunk.count), Array(chunk.joined())))
            start += chunk.count
        }
        return out
    }

    private static func insertText(_ quotedColumns: String, columns: Int, rows: Int) -> String {
        let placeholders = "(" + Array(repeating: "?", count: columns).joined(separator: ", ") + ")"
        return "INSERT INTO \(ShardLB.table) (\(quotedColumns)) VALUES " + Array(repeating: placeholders, count: rows).joined(separator: ", ")
    }

    /// Sets every column but `Stud_id` of the student `values` names.
    public func update(_ values: [SQLValue]) -> SQLStatement {
        let k = keyIndex
        let others = schema.columns.indices.filter { $0 != k }
        // A schema of Stud_id alone has nothing to set: the statement still says whether the student exists.
        let sets = others.isEmpty ? "\(ShardLB.key) = \(ShardLB.key)" : others.map { "\(SQLLexer.quote(schema.columns[$0])) = ?" }.joined(separator: ", ")
        return SQLStatement("UPDATE \(ShardLB.table) SET \(sets) WHERE \(ShardLB.key) = ?", others.map { values[$0] } + [values[k]])
    }

    public func delete(_ studID: Int64) -> SQLStatement {
        SQLStatement("DELETE FROM \(ShardLB.table) WHERE \(ShardLB.key) = ?", [.integer(studID)])
    }

    /// Students with `Stud_id` from `low` to `high` (both included), in `Stud_id` order.
    public func select(from low: Int64, to high: Int64) -> SQLStatement {
        SQLStatement("SELECT \(quotedColumns) FROM \(ShardLB.table) WHERE \(ShardLB.key) BETWEEN ? AND ? ORDER BY \(ShardLB.key)",
                     [.integer(low), .integer(high)])
    }

    /// A row as the seed answered it: an object of the schema's columns.
    public func record(_ row: [SQLValue]) -> JSON {
        .object(zip(schema.columns, row).map { column, value in
            switch value {
            case .null: return (column, .null)
            case .integer(let v): return (column, .int(v))
            case .real(let v): return (column, .double(v))
            case .text(let s): return (column, .string(s))
            case .blob(let b): return (column, .string(String(decoding: b, as: UTF8.self)))
            }
        })
    }

    /// `/status`: the `/init` payload's shape. `placement` is where each shard's copies are (server
    /// name → shard ids), which `servers` shows.
    public func status(placement: [String: [String]]) -> JSON {
        .object([("N", .int(placement.count)), ("schema", schema.json), ("shards", .array(shards.map(\.json))),
                 ("servers", .object(placement.sorted { $0.key < $1.key }.map { ($0.key, .array($0.value.map { .string($0) })) }))])
    }
}

// MARK: - /add and /rm

/// A checked `/add`: the new shards (their ids new, their ranges clear of every shard's) and the
/// servers named for them.
public struct LBAddition: Sendable, Equatable {
    public var shards: [LBShard]
    public var servers: [String: [String]]
    public var count: Int

    /// The specified shape and the original's: `n`, `new_shards`, `servers`; `n` may not exceed the
    /// servers named.
    public init(_ json: JSON, to layout: LBLayout) throws(CompatFailure) {
        guard case .object = json else { throw ShardLB.invalid([], "Input should be a valid dictionary", type: "dict_type") }
        guard let n = Lax.integer(json["n"]) else { throw ShardLB.invalid([.string("n")], "Field required", type: "missing") }
        let servers = try LBLayout.serversMap(json["servers"])
        guard n >= 0, n <= Int64(servers.count) else {
            throw ShardLB.failure(400, "<Error> Number of new servers (n) is greater than newly added instances")
        }
        var shards: [LBShard] = []
        switch json["new_shards"] {
        case nil, .null?: break
        case .array(let list)?: shards = try LBLayout.shards(list, field: "new_shards")
        default: throw ShardLB.invalid([.string("new_shards")], "Input should be a valid list", type: "list_type")
        }
        guard layout.shards.count + shards.count <= ShardLB.maxShards else { throw ShardLB.failure(400, "<Error> at most \(ShardLB.maxShards) shards") }
        for s in shards where layout.shard(named: s.id) != nil { throw ShardLB.failure(400, "<Error> Duplicate shard id \(s.id) found in request") }
        let combined = LBLayout(schema: layout.schema, shards: layout.shards + shards, servers: [:])
        try combined.checkRanges()
        // Every shard a server is named for exists, old or new.
        for (name, held) in servers {
            for id in held where combined.shard(named: id) == nil { throw ShardLB.failure(400, "<Error> server \(name) names shard \(id), which does not exist") }
        }
        self.shards = shards
        self.servers = servers
        count = Int(n)
    }

    /// The prefix of a template server name (`Server[5]`: "Server"), for which a load balancer that
    /// starts servers picks a name (nil: an ordinary name).
    public static func templatePrefix(_ name: String) -> String? {
        guard name.hasSuffix("]"), let open = name.lastIndex(of: "["), open > name.startIndex else { return nil }
        let inside = name[name.index(after: open)..<name.index(before: name.endIndex)]
        guard !inside.isEmpty, inside.allSatisfy(\.isASCII), inside.allSatisfy(\.isNumber) else { return nil }
        return String(name[..<open])
    }

    /// The rows that record it (ShardT, MapT), as one atomic write. Each new shard is first checked
    /// against the shards recorded by then (in the log's order: another `/add` through another node a
    /// moment ago): an overlap fails LBGuard's CHECK, and nothing is written.
    public var metadata: [SQLStatement] {
        var out: [SQLStatement] = [SQLStatement("CREATE TABLE IF NOT EXISTS LBGuard(ok INTEGER CHECK (ok = 1))")]
        for s in shards {
            out.append(SQLStatement("INSERT INTO LBGuard(ok) SELECT 0 WHERE EXISTS (SELECT 1 FROM ShardT WHERE Stud_id_low < ?2 AND Stud_id_low + Shard_size > ?1)",
                                    [.integer(s.low), .integer(s.high)]))
            out.append(SQLStatement("INSERT INTO ShardT(Stud_id_low, Shard_id, Shard_size) VALUES (?, ?, ?)", [.integer(s.low), .text(s.id), .integer(s.size)]))
        }
        for (server, held) in servers.sorted(by: { $0.key < $1.key }) {
            for id in held {
                out.append(SQLStatement("INSERT OR IGNORE INTO MapT(Shard_id, Server_id) VALUES (?, ?)", [.text(id), .text(server)]))
            }
        }
        return out
    }
}

/// A checked `/rm`: `n` servers leave, those named and, if `n` is larger, others picked at random.
public struct LBRemoval: Sendable, Equatable {
    public var named: [String]
    public var count: Int

    public init(_ json: JSON) throws(CompatFailure) {
        guard case .object = json else { throw ShardLB.invalid([], "Input should be a valid dictionary", type: "dict_type") }
        guard let n = Lax.integer(json["n"]) else { throw ShardLB.invalid([.string("n")], "Field required", type: "missing") }
        var named: [String] = []
        switch json["servers"] {
        case nil, .null?: break
        case .array(let list)?:
            for case .string(let s) in list { named.append(s) }
            guard named.count == list.count else { throw ShardLB.invalid([.string("servers")], "Input should be a list of strings", type: "string_type") }
        default: throw ShardLB.invalid([.string("servers")], "Input should be a valid list", type: "list_type")
        }
        guard n >= 1, n <= 64 else { throw ShardLB.failure(400, "<Error> n must be from 1 to 64") }
        guard named.count <= Int(n) else { throw ShardLB.failure(400, "<Error> Length of server list is more than removable instances") }
        guard Set(named).count == named.count else { throw ShardLB.failure(400, "<Error> a server is named twice") }
        self.named = named
        count = Int(n)
    }

    /// The servers that leave: those named, then picked from `others` (in the order given, which the
    /// caller shuffles) until there are `count`.
    public func victims(from others: [String]) -> [String] {
        named + others.filter { !named.contains($0) }.prefix(count - named.count)
    }

    public static func forgetting(_ servers: [String]) -> [SQLStatement] {
        servers.map { SQLStatement("DELETE FROM MapT WHERE Server_id = ?", [.text($0)]) }
    }
}
