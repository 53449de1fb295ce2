import CairnQuery
import CairnSQLite
import Foundation
import Testing

/// Datadriven plans (etcd's style): `testdata/plans.txt` holds cases, each a command line, `----`, and
/// the expected output. `CAIRN_REWRITE=1 swift test --filter PlanTableTests` writes the actual outputs
/// back into the file, to review as a diff.
@Suite struct PlanTableTests {
    static let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("testdata/plans.txt")

    @Test func plansMatchTheTable() throws {
        let text = try String(contentsOf: Self.file, encoding: .utf8)
        var output: [String] = []
        var failures: [String] = []
        var db: ShardedDatabase?
        for block in text.components(separatedBy: "\n\n") where !block.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            let parts = block.components(separatedBy: "\n----\n")
            let command = parts[0].trimmingCharacters(in: .newlines)
            let expected = parts.count > 1 ? parts[1].trimmingCharacters(in: .newlines) : ""
            let actual: String
            let lines = command.split(separator: "\n", omittingEmptySubsequences: false)
            let directive = lines.last(where: { !$0.hasPrefix("#") }).map(String.init) ?? ""
            if directive.hasPrefix("table ") {
                // table <shards> <key,...>: <CREATE TABLE>
                let header = directive.dropFirst(6).split(separator: ":", maxSplits: 1)
                let words = header[0].split(separator: " ")
                db = try ShardedDatabase(shardCount: Int(words[0])!, createSQL: String(header[1]), table: "t",
                                         key: words[1].split(separator: ",").map(String.init))
                actual = "ok"
            } else if directive.hasPrefix("range ") {
                // range <shards> <key> <v1,v2,...>: <CREATE TABLE> (split points as SQL literals)
                let header = directive.dropFirst(6).split(separator: ":", maxSplits: 1)
                let words = header[0].split(separator: " ", maxSplits: 2)
                let points = try ScratchDatabase().query(SQLStatement("SELECT \(words[2])"), ownSQL: true).rows[0]
                db = try ShardedDatabase(shardCount: Int(words[0])!, createSQL: String(header[1]), table: "t",
                                         key: [String(words[1])], splitPoints: points)
                actual = "ok"
            } else if directive.hasPrefix("sharded ") {
                // sharded <name> <key,...>: <CREATE TABLE>, another hash-sharded table in the current database
                let header = directive.dropFirst(8).split(separator: ":", maxSplits: 1)
                let words = header[0].split(separator: " ")
                db = try db!.adding(sharded: String(words[0]), key: words[1].split(separator: ",").map(String.init),
                                    createSQL: String(header[1]).trimmingCharacters(in: .whitespaces))
                actual = "ok"
            } else if directive.hasPrefix("reference ") {
                // reference <name>: <CREATE TABLE>, added to the current database
                let header = directive.dropFirst(10).split(separator: ":", maxSplits: 1)
                db = try db!.adding(reference: String(header[0]), createSQL: String(header[1]).trimmingCharacters(in: .whitespaces))
                actual = "ok"
            } else if directive.hasPrefix("read ") {
                actual = Self.describe(read: String(directive.dropFirst(5)), db!)
            } else if directive.hasPrefix("write ") {
                actual = Self.describe(write: String(directive.dropFirst(6)), db!)
            } else if directive.hasPrefix("ddl ") {
                actual = Self.describe(ddl: String(directive.dropFirst(4)))
            } else {
                actual = "unknown command: \(directive)"
            }
            if actual != expected { failures.append("\(command)\nexpected:\n\(expected)\nactual:\n\(actual)") }
            output.append(command + "\n----\n" + actual)
        }
        if ProcessInfo.processInfo.environment["CAIRN_REWRITE"] == "1" {
            try (output.joined(separator: "\n\n") + "\n").write(to: Self.file, atomically: true, encoding: .utf8)
        } else {
            #expect(failures.isEmpty, "\(failures.joined(separator: "\n\n"))")
        }
    }

    static func describe(read sql: String, _ db: ShardedDatabase) -> String {
        do {
            let plan = try db.plan(SQLStatement(sql))
            switch plan {
            case .home, .single: return plan.summary
            case .scatter(let s):
                var lines = [plan.summary, "worker: \(s.worker.sql)"]
                if let r = s.referenceWorker { lines.append("on the first shard also: \(r.sql)") }
                switch s.combine {
                case .partial(let c): lines.append("combine: \(c.sql)")
                case .rows(_, let c): lines.append("combine over gathered rows: \(c.sql)")
                }
                return lines.joined(separator: "\n")
            }
        } catch {
            return "refused: \(error)"
        }
    }

    static func describe(write sql: String, _ db: ShardedDatabase) -> String {
        do {
            let planner = WritePlanner(schema: db.planner.schema, map: db.planner.map)
            switch try planner.plan(SQLStatement(sql), analysis: db.schema.analyze(sql)) {
            case .home: return "home group"
            case .dropTable(let t): return "drop table \(t): catalog, then every shard"
            case .shards(let list):
                if list.count > 4 { return "\(list.count) shards: \(list[0].statement.sql)" }
                return list.map { "shard \($0.shard): \($0.statement.sql)" }.joined(separator: "\n")
            }
        } catch {
            return "refused: \(error)"
        }
    }

    static func describe(ddl sql: String) -> String {
        do {
            guard let clause = try ShardingClause.parse(sql) else { return "not sharded" }
            var lines = ["table \(clause.table): \(clause.method)", "sqlite: \(clause.createSQL)"]
            if case .hash(let keys) = clause.method {
                let schema = try ScratchDatabase()
                try schema.exec(clause.createSQL)
                let t = try ShardingClause.validate(table: clause.table, keyColumns: keys, in: schema)
                lines.append("valid: key \(t.keyColumns) \(t.keyAffinities)")
            }
            return lines.joined(separator: "\n")
        } catch {
            return "refused: \(error)"
        }
    }
}
