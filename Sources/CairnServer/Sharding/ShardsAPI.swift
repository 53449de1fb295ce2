import CairnCluster
import CairnJSON
import CairnQuery
import CairnRouter
import CairnSQLite
import Foundation
import Hummingbird

/// Seeing the shards: `GET /v1/db/:db/shards` (each shard's arc, group, replicas, leader, rows and
/// bytes; each range table's ranges and their shards) and `POST /v1/db/:db/route` (the plan of each statement, without running it).
extension API {
    func addShardRoutes(to router: RecordingRouter) {
        router.get("/v1/db/:db/shards") { request, context in
            let db = try context.parameters.require("db")
            return await self.respond(request, .read, database: db) { _ in try await self.shardsJSON(db) }
        }
        router.post("/v1/db/:db/route") { request, context in
            let db = try context.parameters.require("db")
            return await self.respond(request, .read, database: db) { _ in
                let json = try self.parse(try await self.body(of: request))
                let statements = try Statements.parse(json["statements"], maxCount: self.options.maxStatementsPerRequest)
                return Self.json(200, .object([("plans", .array(try statements.map { try self.explain($0, db: db) }))]))
            }
        }
    }

    private func shardsJSON(_ db: String) async throws -> Response {
        // As of every committed change: a table created or dropped through another node a moment ago
        // is shown as it now is.
        let catalog = try await committedCatalog()
        guard catalog.databases[db] != nil, !Catalog.isInternalName(db) else { throw HTTPFailure.notFound("no database named \"\(db)\"") }
        let shards = catalog.shards(of: db)
        let map = catalog.shardMap(of: db).count == shards.count ? catalog.shardMap(of: db) : .uniform(count: max(1, shards.count))
        let declared = (catalog.shardedTables[db] ?? [:]).values
        let tables = declared.filter { !$0.isReference }.map(\.name).sorted()
        let references = declared.filter(\.isReference).map(\.name).sorted()
        let count = tables.isEmpty ? "0" : tables.map { "(SELECT count(*) FROM \(SQLLexer.quote($0)))" }.joined(separator: " + ")
        // Pages in use: the free pages a split's deletes leave are not the shard's data (the size splits go by).
        let probe = SQLStatement("SELECT \(count), ((SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count())) * (SELECT page_size FROM pragma_page_size())")
        var items: [JSON] = []
        var digests: Set<String> = []
        for (i, shard) in shards.enumerated() {
            let status = try? await runtime.status(group: shard.group)
            let read = try? await groupRouter.query([probe, Self.shardStateQuery, Self.schemaQuery], group: shard.group, consistency: .local).results
            let sizes = read?.first
            let prepared: JSON = read.map { .int(Self.shardState($0.count > 1 ? $0[1] : StatementResult()).prepared) } ?? .null
            var rows: JSON = .null, bytes: JSON = .null
            if let row = sizes?.rows.first, row.count == 2 {
                if case .integer(let n) = row[0] { rows = .int(n) }
                if case .integer(let b) = row[1] { bytes = .int(b) }
            }
            var schema: JSON = .null
            if let r = read, r.count > 2 {
                let digest = Self.schemaDigest(r[2])
                digests.insert(digest)
                schema = .string(digest)
            }
            let leader: JSON = status.map { $0.leader == 0 ? .null : .int($0.leader) } ?? .null
            items.append(.object([("shard", .int(i)), ("slots", .array([.int(map.arcs[i].lo), .int(map.arcs[i].hi)])), ("group", .int(shard.group)),
                                  ("replicas", .array(shard.replicas.map { .int($0) })), ("leader", leader), ("rows", rows), ("bytes", bytes),
                                  ("prepared_transactions", prepared), ("schema", schema)]))
        }
        // Every shard must hold the same tables and indexes (its range guard aside): a shard that could
        // not be read leaves the question open (null).
        let unread = items.contains { $0["schema"] == .null }
        let schemasMatch: JSON = digests.count > 1 ? .bool(false) : unread ? .null : .bool(true)
        // A range table's ranges, each with the shard it lives on (`from` inclusive, `to` exclusive,
        // null where the range is open).
        let ranged = declared.filter { $0.splitPoints != nil }.sorted { $0.name < $1.name }.map { t -> JSON in
            let points = t.splitPoints ?? []
            let splits = RangeSplits(points: points, placement: t.rangePlacement) ?? RangeSplits(points: points)
            let ranges = (0...points.count).map { r -> JSON in
                .object([("from", r == 0 ? .null : Statements.json(points[r - 1])), ("to", r == points.count ? .null : Statements.json(points[r])),
                         ("shard", .int(splits?.shard(ofRange: r, shardCount: map.rangeShardCount) ?? r % map.rangeShardCount))])
            }
            return .object([("table", .string(t.name)), ("column", .string(t.keyColumns.first ?? "")), ("ranges", .array(ranges))])
        }
        return Self.json(200, .object([("database", .string(db)), ("shard_count", .int(catalog.shardCount(of: db))),
                                       ("tables", .array(tables.map { .string($0) })), ("reference_tables", .array(references.map { .string($0) })),
                                       ("range_tables", .array(ranged)), ("schemas_match", schemasMatch), ("shards", .array(items))]))
    }

    /// A shard's schema as text: its tables, indexes, views and triggers, CairnDB's own (the range
    /// guard, whose bounds differ from shard to shard, and the transaction tables) left out.
    static let schemaQuery = SQLStatement("""
        SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE sql IS NOT NULL AND substr(name, 1, 6) <> '_cairn' ORDER BY type, name
        """)

    /// A short digest of a shard's schema (`schemaQuery`'s rows), equal for equal schemas.
    static func schemaDigest(_ r: StatementResult) -> String {
        guard r.error == nil else { return "unreadable: \(r.error!)" }
        var bytes: [UInt8] = []
        for row in r.rows {
            for v in row {
                if case .text(let t) = v { bytes += Array(t.utf8) }
                bytes.append(0)
            }
        }
        return String(XXHash64.hash(bytes, seed: 0), radix: 16)
    }

    /// One statement's plan, as `route` and the shell's `.explain` show it.
    private func explain(_ statement: SQLStatement, db: String) throws -> JSON {
        let catalog = cluster.catalog
        if let clause = try Self.shardingClause(statement.sql) {
            return .object([("sql", .string(statement.sql)), ("plan", .string("create sharded table \(clause.table) on every shard")),
                            ("sqlite", .string(clause.createSQL))])
        }
        guard let view = shardView(db, catalog), Self.mentions(statement.sql, view.tables) || droppedIndexTable(statement.sql, db: db, view) != nil else {
            return .object([("sql", .string(statement.sql)), ("plan", .string("home group"))])
        }
        let (schema, analysis) = try Self.refusing { try schemaCopies.analyze(statement.sql, database: db, tables: view.tables) }
        if analysis.readOnly {
            let plan = try Self.refusing { try ReadPlanner(schema: schema, map: view.map).plan(statement, analysis: analysis) }
            switch plan {
            case .home: return .object([("sql", .string(statement.sql)), ("plan", .string("home group"))])
            case .single(let s):
                return .object([("sql", .string(statement.sql)), ("plan", .string("one shard")), ("shards", .array([.int(s)]))])
            case .scatter(let s):
                var combine: (String, String)
                switch s.combine {
                case .partial(let c): combine = ("partial results", c.sql)
                case .rows(_, let c): combine = ("gathered rows", c.sql)
                }
                var fields: [(String, JSON)] = [("sql", .string(statement.sql)), ("plan", .string("scatter, combine \(combine.0)")),
                                                ("shards", .array(s.shards.map { .int($0) })), ("worker", .string(s.worker.sql))]
                if let r = s.referenceWorker { fields.append(("reference_worker", .string(r.sql))) }
                return .object(fields + [("combine", .string(combine.1))])
            }
        }
        switch try Self.refusing({ try WritePlanner(schema: schema, map: view.map).plan(statement, analysis: analysis) }) {
        case .home: return .object([("sql", .string(statement.sql)), ("plan", .string("home group"))])
        case .dropTable(let table):
            return .object([("sql", .string(statement.sql)), ("plan", .string("drop \(table): from the catalog, then on every shard")),
                            ("shards", .array(view.groups.indices.map { .int($0) }))])
        case .shards(let list):
            return .object([("sql", .string(statement.sql)), ("plan", .string(list.count == 1 ? "one shard" : "\(list.count) shards")),
                            ("shards", .array(list.map { .object([("shard", .int($0.shard)), ("sql", .string($0.statement.sql))]) }))])
        }
    }
}
