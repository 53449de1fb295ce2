import Foundation
import Testing

extension ProcessTests {
@Suite("Sharded tables on real processes", .serialized)
struct ShardedTableTests {
    @Test("a hash-sharded table over 4 shards on 3 nodes: declared, written through any node to the shard its key hashes to, read exactly across shards, visible per shard; writes across shards all or nothing")
    func shardedTableEndToEnd() async throws {
        let c = try await ProcessCluster.founded("sharded", count: 3)
        defer { c.destroy() }
        let a = c.nodes[0]
        for bad: Any in [0, 1000, "four", 2.5] {
            let r = try await a.post("/v1/databases", ["name": "nope", "shards": bad])
            #expect(r.status == 400, "shards \(bad): \(r.status) \(r.text)")
        }
        let made = try await a.post("/v1/databases", ["name": "shop", "shards": 4])
        #expect(made.status == 201, "\(made.text)")
        #expect(made.json["shards"] as? Int == 4)

        // The rules, refused with a reason before anything is created.
        let notNull = try await a.execute(["CREATE TABLE bad (c INTEGER, id INTEGER NOT NULL, PRIMARY KEY (c, id)) SHARD BY HASH (c)"], db: "shop")
        #expect(notNull.status == 400 && notNull.text.contains("must be NOT NULL"), "\(notNull.text)")

        let create = "CREATE TABLE orders (customer INTEGER NOT NULL, id INTEGER NOT NULL, total REAL, note TEXT, PRIMARY KEY (customer, id)) SHARD BY HASH (customer)"
        let created = try await c.nodes[1].execute([create], db: "shop")
        #expect(created.status == 200, "\(created.text)")
        #expect(try await a.execute([create], db: "shop").text.contains("already exists"))
        #expect(try await a.execute([create.replacingOccurrences(of: "CREATE TABLE", with: "CREATE TABLE IF NOT EXISTS")], db: "shop").status == 200)
        // An ordinary table beside it stays in the database's home group, as before.
        #expect(try await a.execute(["CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", "INSERT INTO notes(body) VALUES ('home')"], db: "shop").status == 200)

        // 40 customers, each written through a different node; '7' lands with 7 (the column stores it as 7).
        var expectedTotal = 0.0
        for customer in 1...40 {
            let r = try await c.nodes[customer % 3].execute([["INSERT INTO orders VALUES (?, 1, ?, 'x')", customer, Double(customer) * 1.5]], db: "shop")
            #expect(r.status == 200 && !r.text.contains("error"), "\(r.text)")
            expectedTotal += Double(customer) * 1.5
        }
        #expect(try await a.execute(["INSERT INTO orders VALUES ('7', 2, 0.5, 'seven')"], db: "shop").status == 200)
        expectedTotal += 0.5

        // Rows for several shards in one request, and an unpinned UPDATE: all shards or none.
        let spread = try await a.execute(["INSERT INTO orders VALUES (101, 1, 1, 'spread'), (102, 1, 1, 'spread'), (103, 1, 1, 'spread'), (104, 1, 1, 'spread')"], db: "shop")
        #expect(spread.status == 200 && ((spread.json["results"] as? [Object])?.first?["rows_affected"] as? Int) == 4, "\(spread.text)")
        let failing = try await a.execute(["INSERT INTO orders VALUES (105, 1, 1, 'no'), (106, 1, 1, 'no'), (101, 1, 1, 'duplicate')"], db: "shop")
        #expect(failing.status == 200 && failing.text.contains("UNIQUE"), "\(failing.text)")
        let unpinned = try await a.execute(["DELETE FROM orders WHERE note IN ('spread', 'no')"], db: "shop")
        #expect(unpinned.status == 200 && ((unpinned.json["results"] as? [Object])?.first?["rows_affected"] as? Int) == 4, "\(unpinned.text)")
        let pinned = try await a.execute(["UPDATE orders SET note = 'vip' WHERE customer = 7"], db: "shop")
        #expect(pinned.status == 200 && ((pinned.json["results"] as? [Object])?.first?["rows_affected"] as? Int) == 2, "\(pinned.text)")
        let key = try await a.execute(["UPDATE orders SET customer = 8 WHERE customer = 7"], db: "shop")
        #expect(key.status == 400 && key.text.contains("cannot be changed"), "\(key.text)")

        // Reads, exact across shards, through every node.
        for n in c.nodes {
            let r = try await n.post("/v1/db/shop/query", ["statements": [
                "SELECT count(*), sum(total), count(DISTINCT customer) FROM orders",
                "SELECT customer FROM orders ORDER BY customer DESC, id LIMIT 3",
                "SELECT id, note FROM orders WHERE customer = 7 ORDER BY id",
                "SELECT note, count(*) FROM orders GROUP BY note ORDER BY note",
                "SELECT body FROM notes",
            ]])
            #expect(r.status == 200, "\(r.text)")
            let results = r.json["results"] as? [Object] ?? []
            let rows = results.map { $0["rows"] as? [[Any]] ?? [] }
            #expect(rows.count == 5)
            guard rows.count == 5 else { continue }
            #expect(rows[0].first?[0] as? Int == 41 && rows[0].first?[1] as? Double == expectedTotal && rows[0].first?[2] as? Int == 40,
                    "\(n.name): \(rows[0])")
            #expect(rows[1].map { $0[0] as? Int } == [40, 39, 38], "\(rows[1])")
            #expect(rows[2].map { $0[1] as? String } == ["vip", "vip"], "\(rows[2])")
            #expect(rows[3].map { $0[0] as? String } == ["vip", "x"] && rows[3].map { $0[1] as? Int } == [2, 39], "\(rows[3])")
            #expect(rows[4].first?[0] as? String == "home")
        }

        // The shards: arcs covering the ring, every shard on 3 replicas, the rows counted where they are.
        let shards = try await c.nodes[2].get("/v1/db/shop/shards")
        #expect(shards.status == 200, "\(shards.text)")
        let list = shards.json["shards"] as? [Object] ?? []
        #expect(list.count == 4)
        #expect(list.map { ($0["slots"] as? [Int])?.first } == [0, 16384, 32768, 49152])
        #expect(list.allSatisfy { ($0["replicas"] as? [Int])?.count == 3 }, "\(list)")
        #expect(list.reduce(0) { $0 + ($1["rows"] as? Int ?? 0) } == 41, "\(list)")
        #expect(list.filter { ($0["rows"] as? Int ?? 0) > 0 }.count == 4, "40 keys over 4 shards leave none empty: \(list)")

        // The plan, without running it.
        let route = try await a.post("/v1/db/shop/route", ["statements": ["SELECT count(*) FROM orders", "SELECT * FROM orders WHERE customer = 3"]])
        let plans = route.json["plans"] as? [Object] ?? []
        #expect(plans.first?["plan"] as? String == "scatter, combine partial results", "\(route.text)")
        #expect((plans.last?["shards"] as? [Int])?.count == 1, "\(route.text)")

        // Shard groups are not databases a client can address or list.
        let direct = try await a.post("/v1/db/shop%23shard%230/query", ["statements": ["SELECT count(*) FROM orders"]])
        #expect(direct.status == 404, "\(direct.text)")
        let names = ((try await a.get("/v1/databases")).json["databases"] as? [Object] ?? []).compactMap { $0["name"] as? String }
        #expect(names.sorted() == ["default", "shop"], "\(names)")
        let cluster = (try await a.get("/v1/cluster")).json["groups"] as? [Object] ?? []
        #expect(cluster.filter { $0["name"] as? String == "shop" && $0["shard"] != nil }.count == 4, "\(cluster)")

        // The CLI: a database made with --shards, and the shards shown.
        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_USER"] = "admin"
        environment["CAIRN_PASSWORD"] = TestHTTP.adminPassword
        let (made2, out) = try await runCairn(["db", "create", "two", "--shards", "2", "--host", a.url], environment: environment)
        #expect(made2 == 0 && out.contains("2 shards"), "\(out)")
        let (listed, table) = try await runCairn(["shards", "shop", "--host", a.url], environment: environment)
        #expect(listed == 0 && table.contains("Sharded tables: orders") && table.contains("16384"), "\(table)")
        let (shellStatus, shell) = try await runCairn(["shell", "--database", "shop", "--host", a.url], environment: environment,
                                                      input: ".tables\n.explain SELECT count(*) FROM orders\n.explain SELECT * FROM orders WHERE customer = 3\n")
        #expect(shellStatus == 0 && shell.contains("orders (sharded)") && shell.contains("notes") && shell.contains("plan: scatter, combine partial results")
                && shell.contains("worker: SELECT count") && shell.contains("plan: one shard"), "\(shell)")
        let (status, clusterTable) = try await runCairn(["cluster", "status", "--host", a.url], environment: environment)
        #expect(status == 0 && clusterTable.contains("shard"), "\(clusterTable)")

        // Dropped with its shards: made again under the same name, it has none of the old rows or tables.
        #expect(try await a.execute(["CREATE TABLE t (k INTEGER NOT NULL PRIMARY KEY) SHARD BY HASH (k)", ], db: "two").status == 200)
        #expect(try await a.execute(["INSERT INTO t VALUES (1), (2), (3)"], db: "two").status == 200)
        let dropped = try await TestHTTP.request(.DELETE, a.url + "/v1/databases/two")
        #expect(dropped.status == 200, "\(dropped.text)")
        #expect(try await a.post("/v1/databases", ["name": "two", "shards": 2]).status == 201)
        let fresh = try await a.get("/v1/db/two/shards")
        #expect((fresh.json["shards"] as? [Object])?.isEmpty == true && (fresh.json["tables"] as? [Any])?.isEmpty == true, "\(fresh.text)")
        #expect(try await a.execute(["CREATE TABLE t (k INTEGER NOT NULL PRIMARY KEY) SHARD BY HASH (k)", ], db: "two").status == 200)
        let none = try await a.post("/v1/db/two/query", ["statements": ["SELECT count(*) FROM t"]])
        #expect(((none.json["results"] as? [Object])?.first?["rows"] as? [[Any]])?.first?[0] as? Int == 0, "\(none.text)")

        // A node killed: every shard keeps a majority, so reads and writes go on through the others.
        await c.nodes[0].kill9()
        let after = try await c.nodes[1].execute([["INSERT INTO orders VALUES (?, 3, 1.0, 'after')", 12]], db: "shop")
        #expect(after.status == 200, "\(after.text)")
        // Right after the kill, a shard whose leader died answers 503 until it has a new one: retry.
        var counted: Int?
        let until = Date().addingTimeInterval(30)
        while counted == nil && Date() < until {
            let count = try await c.nodes[2].post("/v1/db/shop/query", ["statements": ["SELECT count(*) FROM orders"]])
            counted = ((count.json["results"] as? [Object])?.first?["rows"] as? [[Any]])?.first?[0] as? Int
            if counted == nil { #expect(count.status == 503, "\(count.text)"); try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(counted == 42)
    }

    @Test("a range-sharded table (seed 004's students): ranges split at declared points, each on its shard; rows routed by range through any node; reads exact, bounded reads only where their ranges are; the ranges shown")
    func rangeShardedTable() async throws {
        let c = try await ProcessCluster.founded("ranged", count: 3)
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "school", "shards": 3]).status == 201)
        let columns = "(Stud_id INTEGER NOT NULL PRIMARY KEY, Stud_name TEXT, Stud_marks INTEGER)"
        for (bad, why) in [("SPLIT AT (8192, 4096)", "ascending"), ("SPLIT AT ('a', 5)", "ascending"), ("SPLIT AT (5, '5')", "each once"),
                           ("SPLIT AT (NULL)", "literal values"), ("SPLIT AT (1e999)", "exactly")] {
            let r = try await a.execute(["CREATE TABLE students \(columns) SHARD BY RANGE (Stud_id) \(bad)"], db: "school")
            #expect(r.status == 400 && r.text.contains(why), "\(bad): \(r.text)")
        }
        let notKey = try await a.execute(["CREATE TABLE s2 (id INTEGER NOT NULL PRIMARY KEY, grade INTEGER NOT NULL) SHARD BY RANGE (grade)"], db: "school")
        #expect(notKey.status == 400 && notKey.text.contains("PRIMARY KEY"), "\(notKey.text)")
        let created = try await c.nodes[1].execute(["CREATE TABLE students \(columns) SHARD BY RANGE (Stud_id) SPLIT AT ('4096', 8192)"], db: "school")
        #expect(created.status == 200, "\(created.text)")

        // 24 students, 0 to 11500: one at a time through each node, then a batch spanning every range.
        for id in stride(from: 0, to: 6000, by: 500) {
            let r = try await c.nodes[(id / 500) % 3].execute([["INSERT INTO students VALUES (?, ?, ?)", id, "s\(id)", id % 100]], db: "school")
            #expect(r.status == 200 && !r.text.contains("error"), "\(r.text)")
        }
        let batch = stride(from: 6000, to: 12000, by: 500).map { "(\($0 == 8000 ? "'8000'" : String($0)), 's\($0)', \($0 % 100))" }.joined(separator: ", ")
        let spread = try await a.execute(["INSERT INTO students VALUES \(batch)"], db: "school")
        #expect(spread.status == 200 && ((spread.json["results"] as? [Object])?.first?["rows_affected"] as? Int) == 12, "\(spread.text)")
        let key = try await a.execute(["UPDATE students SET Stud_id = 1 WHERE Stud_id = 500"], db: "school")
        #expect(key.status == 400 && key.text.contains("cannot be changed"), "\(key.text)")

        for n in c.nodes {
            let r = try await n.post("/v1/db/school/query", ["statements": [
                "SELECT count(*), sum(Stud_id) FROM students",
                "SELECT Stud_id FROM students WHERE Stud_id >= 4000 AND Stud_id < 5000 ORDER BY Stud_id",
                "SELECT Stud_name FROM students WHERE Stud_id = 8000",
                "SELECT Stud_id FROM students ORDER BY Stud_id DESC LIMIT 2",
            ]])
            let rows = (r.json["results"] as? [Object] ?? []).map { $0["rows"] as? [[Any]] ?? [] }
            #expect(rows.count == 4, "\(r.text)")
            guard rows.count == 4 else { continue }
            #expect(rows[0].first?[0] as? Int == 24 && rows[0].first?[1] as? Int == (0..<24).reduce(0) { $0 + $1 * 500 }, "\(rows[0])")
            #expect(rows[1].map { $0[0] as? Int } == [4000, 4500], "\(rows[1])")
            #expect(rows[2].first?[0] as? String == "s8000", "\(rows[2])")
            #expect(rows[3].map { $0[0] as? Int } == [11500, 11000], "\(rows[3])")
        }

        // Each range's rows on its own shard, and the ranges shown.
        let shards = try await c.nodes[2].get("/v1/db/school/shards")
        let list = shards.json["shards"] as? [Object] ?? []
        #expect(list.map { $0["rows"] as? Int } == [9, 8, 7], "\(shards.text)")
        let ranged = (shards.json["range_tables"] as? [Object])?.first
        #expect(ranged?["table"] as? String == "students" && ranged?["column"] as? String == "stud_id", "\(shards.text)")
        let ranges = ranged?["ranges"] as? [Object] ?? []
        #expect(ranges.map { $0["from"] as? Int } == [nil, 4096, 8192] && ranges.map { $0["to"] as? Int } == [4096, 8192, nil]
                && ranges.map { $0["shard"] as? Int } == [0, 1, 2], "\(shards.text)")
        var environment = ProcessInfo.processInfo.environment
        environment["CAIRN_USER"] = "admin"
        environment["CAIRN_PASSWORD"] = TestHTTP.adminPassword
        let (listed, table) = try await runCairn(["shards", "school", "--host", a.url], environment: environment)
        #expect(listed == 0 && table.contains("Ranges of students by stud_id: [..4096) on 0, [4096..8192) on 1, [8192..) on 2"), "\(table)")

        // A read bounded to one range goes to its shard alone; one across two ranges to both.
        let route = try await a.post("/v1/db/school/route", ["statements": [
            "SELECT * FROM students WHERE Stud_id >= 4096 AND Stud_id < 8192",
            "SELECT * FROM students WHERE Stud_id BETWEEN 4000 AND 4500",
            "DELETE FROM students WHERE Stud_id < 100",
        ]])
        let plans = route.json["plans"] as? [Object] ?? []
        #expect(plans.count == 3 && plans[0]["shards"] as? [Int] == [1], "\(route.text)")
        #expect(plans.count == 3 && (plans[1]["shards"] as? [Int]) == [0, 1], "\(route.text)")
        #expect(plans.count == 3 && ((plans[2]["shards"] as? [Object])?.map { $0["shard"] as? Int }) == [0], "\(route.text)")

        // A column added on every shard at once: every node plans with it, every range holds it.
        let renamed = try await a.execute(["ALTER TABLE students RENAME COLUMN Stud_name TO name"], db: "school")
        #expect(renamed.status == 400 && renamed.text.contains("add or drop a column"), "\(renamed.text)")
        let added = try await c.nodes[2].execute(["ALTER TABLE students ADD COLUMN email TEXT DEFAULT 'none'"], db: "school")
        #expect(added.status == 200 && !added.text.contains("error"), "\(added.text)")
        let mail = try await a.execute(["INSERT INTO students VALUES (12000, 's12000', 1, 'a@b'), (1, 's1', 1, 'c@d')"], db: "school")
        #expect(mail.status == 200 && !mail.text.contains("error"), "\(mail.text)")
        for n in c.nodes {
            let r = try await n.post("/v1/db/school/query", ["statements": ["SELECT email, count(*) FROM students GROUP BY email ORDER BY email"]])
            let rows = (r.json["results"] as? [Object])?.first?["rows"] as? [[Any]] ?? []
            #expect(rows.map { $0[0] as? String } == ["a@b", "c@d", "none"] && rows.map { $0[1] as? Int } == [1, 1, 24], "\(r.text)")
        }
        #expect((try await a.get("/v1/db/school/shards")).json["schemas_match"] as? Bool == true)
        let dropColumn = try await a.execute(["ALTER TABLE students DROP COLUMN email"], db: "school")
        #expect(dropColumn.status == 200 && !dropColumn.text.contains("error"), "\(dropColumn.text)")
        let gone = try await c.nodes[1].post("/v1/db/school/query", ["statements": ["SELECT email FROM students"]])
        #expect(gone.text.contains("no such column"), "\(gone.text)")

        // Dropped: from the catalog and every shard; the name is free for an ordinary table.
        let together = try await a.execute(["DROP TABLE students", "SELECT 1"], db: "school")
        #expect(together.status == 400 && together.text.contains("request of its own"), "\(together.text)")
        let dropped = try await c.nodes[1].execute(["DROP TABLE students"], db: "school")
        #expect(dropped.status == 200 && !dropped.text.contains("error"), "\(dropped.status) \(dropped.text)")
        let after = try await c.nodes[2].get("/v1/db/school/shards")
        #expect((after.json["range_tables"] as? [Any])?.isEmpty == true && (after.json["tables"] as? [Any])?.isEmpty == true, "\(after.text)")
        #expect((after.json["shards"] as? [Object] ?? []).allSatisfy { $0["rows"] as? Int == 0 }, "\(after.text)")
        for n in c.nodes {
            let r = try await n.post("/v1/db/school/query", ["statements": ["SELECT count(*) FROM students"]])
            #expect(r.text.contains("no such table"), "\(n.name): \(r.text)")
        }
        let plain = try await a.execute(["CREATE TABLE students (id INTEGER PRIMARY KEY)", "INSERT INTO students VALUES (1)"], db: "school")
        #expect(plain.status == 200 && !plain.text.contains("error"), "\(plain.text)")
        let again = try await c.nodes[2].post("/v1/db/school/query", ["statements": ["SELECT count(*) FROM students"]])
        #expect(((again.json["results"] as? [Object])?.first?["rows"] as? [[Any]])?.first?[0] as? Int == 1, "\(again.text)")
    }

    @Test("a reference table: a copy on every shard, written to every copy at once, read from any node, joined with a pinned sharded table on its shard; indexes created and dropped on every shard")
    func referenceTables() async throws {
        let c = try await ProcessCluster.founded("reference", count: 3)
        defer { c.destroy() }
        let a = c.nodes[0]
        #expect(try await a.post("/v1/databases", ["name": "shop", "shards": 4]).status == 201)
        let created = try await c.nodes[1].execute(["CREATE TABLE countries (code TEXT PRIMARY KEY, name TEXT) REFERENCE"], db: "shop")
        #expect(created.status == 200, "\(created.text)")
        #expect(try await a.execute(["CREATE TABLE orders (customer INTEGER NOT NULL PRIMARY KEY, country TEXT) SHARD BY HASH (customer)"], db: "shop").status == 200)
        #expect(try await a.execute(["CREATE TABLE notes (body TEXT)"], db: "shop").status == 200)

        // One answer for the statement, not one per copy.
        let inserted = try await c.nodes[2].execute(["INSERT INTO countries VALUES ('FR', 'France'), ('DE', 'Germany')"], db: "shop")
        #expect(inserted.status == 200 && ((inserted.json["results"] as? [Object])?.first?["rows_affected"] as? Int) == 2, "\(inserted.text)")
        for customer in 1...12 {
            #expect(try await a.execute([["INSERT INTO orders VALUES (?, ?)", customer, customer % 2 == 0 ? "FR" : "DE"]], db: "shop").status == 200)
        }
        // A statement that fails on the copies changes none of them.
        let duplicate = try await a.execute(["INSERT INTO countries VALUES ('IT', 'Italy'), ('FR', 'again')"], db: "shop")
        #expect(duplicate.status == 200 && duplicate.text.contains("UNIQUE"), "\(duplicate.text)")
        let updated = try await a.execute(["UPDATE countries SET name = upper(name)"], db: "shop")
        #expect(updated.status == 200 && ((updated.json["results"] as? [Object])?.first?["rows_affected"] as? Int) == 2, "\(updated.text)")

        // Twelve customers cover the four shards: each join reads the copy on its customer's shard.
        for customer in 1...12 {
            let r = try await c.nodes[customer % 3].post("/v1/db/shop/query", ["statements": [
                ["SELECT o.customer, c.name FROM orders o JOIN countries c ON c.code = o.country WHERE o.customer = ?", customer],
                ["SELECT c.code FROM orders o, countries c WHERE o.customer = ? ORDER BY c.code", customer]]])
            let expected = customer % 2 == 0 ? "FRANCE" : "GERMANY"
            #expect(r.status == 200 && r.text.contains("[[\(customer),\"\(expected)\"]]") && r.text.contains(#"[["DE"],["FR"]]"#), "\(r.text)")
        }
        // Another table sharded by the same key: joined on it with one side pinned, each pair is on one shard.
        #expect(try await a.execute(["CREATE TABLE lines (customer INTEGER NOT NULL, item TEXT NOT NULL, PRIMARY KEY (customer, item)) SHARD BY HASH (customer)"],
                                    db: "shop").status == 200)
        let lines = (1...12).map { "(\($0), 'a'), (\($0), 'b')" }.joined(separator: ", ")
        #expect(try await a.execute(["INSERT INTO lines VALUES \(lines)"], db: "shop").status == 200)
        for customer in 1...12 {
            let r = try await c.nodes[customer % 3].post("/v1/db/shop/query", ["statements": [["SELECT o.customer, c.name, count(l.item) FROM orders o "
                + "JOIN lines l ON l.customer = o.customer JOIN countries c ON c.code = o.country WHERE o.customer = ? GROUP BY o.customer, c.name", customer]]])
            let expected = customer % 2 == 0 ? "FRANCE" : "GERMANY"
            #expect(r.status == 200 && r.text.contains("[[\(customer),\"\(expected)\",2]]"), "\(r.text)")
        }
        // Unpinned, every shard joins its own rows; a join that would pair rows of two shards is refused.
        let acrossShards = try await c.nodes[1].query("SELECT count(*), count(DISTINCT o.customer) FROM orders o JOIN lines l ON l.customer = o.customer", db: "shop")
        #expect(acrossShards.status == 200 && acrossShards.text.contains("[[24,12]]"), "\(acrossShards.text)")
        let pairing = try await a.query("SELECT count(*) FROM orders o JOIN lines l ON l.item = o.country", db: "shop")
        #expect(pairing.status == 400 && pairing.text.contains("pairing rows of different shards is not supported"), "\(pairing.text)")
        for n in c.nodes {
            let r = try await n.query("SELECT code, name FROM countries ORDER BY code", db: "shop")
            #expect(r.status == 200 && r.text.contains(#"[["DE","GERMANY"],["FR","FRANCE"]]"#), "\(n.name): \(r.text)")
        }

        // Unpinned joins with a reference table: every shard joins its rows with its copy; where a
        // country may meet no order (the reference table on the preserved side), the rows are gathered.
        #expect(try await a.execute(["INSERT INTO countries VALUES ('IT', 'ITALY')"], db: "shop").status == 200)
        let perCountry = try await c.nodes[2].query("SELECT c.name, count(*) FROM orders o JOIN countries c ON c.code = o.country GROUP BY c.name ORDER BY 1", db: "shop")
        #expect(perCountry.status == 200 && perCountry.text.contains(#"[["FRANCE",6],["GERMANY",6]]"#), "\(perCountry.text)")
        let everyCountry = try await c.nodes[1].query("SELECT c.code, count(o.customer) FROM countries c LEFT JOIN orders o ON o.country = c.code GROUP BY c.code ORDER BY 1", db: "shop")
        #expect(everyCountry.status == 200 && everyCountry.text.contains(#"[["DE",6],["FR",6],["IT",0]]"#), "\(everyCountry.text)")
        let route = try await a.post("/v1/db/shop/route", ["statements": ["SELECT c.code, count(o.customer) FROM countries c LEFT JOIN orders o ON o.country = c.code GROUP BY c.code"]])
        #expect(route.status == 200 && route.text.contains("reference_worker") && route.text.contains("gathered rows"), "\(route.text)")
        #expect(try await a.execute(["DELETE FROM countries WHERE code = 'IT'"], db: "shop").status == 200)

        // What a copy per shard cannot keep identical is refused with the reason.
        let fromShards = try await a.execute(["DELETE FROM countries WHERE code IN (SELECT country FROM orders)"], db: "shop")
        #expect(fromShards.status == 400 && fromShards.text.contains("may not touch sharded table"), "\(fromShards.text)")
        let intoHome = try await a.execute(["INSERT INTO notes SELECT name FROM countries"], db: "shop")
        #expect(intoHome.status == 400, "\(intoHome.text)")
        let mixedRead = try await a.query("SELECT * FROM countries, notes", db: "shop")
        // Planned as the home group's (the scratch copy of the shards' schemas has no "notes"), where
        // the reference table is not: an error either way.
        #expect(mixedRead.status == 400 || mixedRead.text.contains("no such table"), "\(mixedRead.text)")

        // Indexes reach every shard in one transaction; every shard keeps the same schema.
        let unique = try await a.execute(["CREATE UNIQUE INDEX orders_country ON orders (country)"], db: "shop")
        #expect(unique.status == 400 && unique.text.contains("must include its shard key"), "\(unique.text)")
        let uniqueName = try await a.execute(["CREATE UNIQUE INDEX countries_name ON countries (name)"], db: "shop")
        #expect(uniqueName.status == 200 && !uniqueName.text.contains("error"), "\(uniqueName.text)")
        let indexed = try await c.nodes[1].execute(["CREATE INDEX orders_by_country ON orders (country, customer)"], db: "shop")
        #expect(indexed.status == 200 && !indexed.text.contains("error"), "\(indexed.text)")
        let clash = try await c.nodes[2].execute(["INSERT INTO countries VALUES ('XX', 'FRANCE')"], db: "shop")
        #expect(clash.status == 200 && clash.text.contains("UNIQUE"), "\(clash.text)")
        func schemas() async throws -> (match: Bool?, digests: Set<String>) {
            let view = try await a.get("/v1/db/shop/shards").json
            return (view["schemas_match"] as? Bool, Set((view["shards"] as? [Object] ?? []).compactMap { $0["schema"] as? String }))
        }
        let withIndexes = try await schemas()
        #expect(withIndexes.match == true && withIndexes.digests.count == 1, "\(withIndexes)")
        // DROP INDEX names no table: the node finds it among the sharded tables' indexes.
        let dropped = try await c.nodes[2].execute(["DROP INDEX countries_name"], db: "shop")
        #expect(dropped.status == 200 && !dropped.text.contains("error"), "\(dropped.status) \(dropped.text)")
        let allowed = try await a.execute(["INSERT INTO countries VALUES ('XX', 'FRANCE')"], db: "shop")
        #expect(allowed.status == 200 && !allowed.text.contains("error"), "\(allowed.text)")
        #expect(try await a.execute(["DROP INDEX IF EXISTS orders_by_country"], db: "shop").status == 200)
        let without = try await schemas()
        #expect(without.match == true && without.digests.count == 1 && without.digests != withIndexes.digests, "\(without)")

        // Per-shard metrics: each shard group named by database and shard, and the statements sent to each.
        let metrics = try await a.get("/metrics").text
        #expect(metrics.contains(#"database="shop""#) && metrics.contains("cairn_group_info") && metrics.contains(#"shard="3""#), "\(metrics.prefix(2000))")
        #expect(metrics.contains("cairn_shard_requests_total"), "\(metrics.prefix(2000))")

        // rqlite's API on the default database's sharded tables: routed as CairnDB's own API routes them,
        // answered in rqlite's shapes.
        #expect(try await a.execute(["CREATE TABLE kv (k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"]).status == 200)
        #expect(try await c.nodes[1].post("/db/execute", ["CREATE TABLE jot (body TEXT)"]).status == 200)
        let rqWrite = try await c.nodes[1].post("/db/execute", [["INSERT INTO kv VALUES (?, ?)", 1, "one"], "INSERT INTO kv VALUES (2, 'two'), (3, 'three'), (4, 'four')"])
        #expect(rqWrite.status == 200 && rqWrite.text.contains(#""rows_affected":3"#) && !rqWrite.text.contains("error"), "\(rqWrite.text)")
        let rqTransaction = try await c.nodes[2].post("/db/execute?transaction", ["INSERT INTO kv VALUES (8, 'eight'), (9, 'nine')", "INSERT INTO kv VALUES (1, 'again')"])
        #expect(rqTransaction.status == 200 && rqTransaction.text.contains("UNIQUE"), "\(rqTransaction.text)")
        let rqQueued = try await c.nodes[2].post("/db/execute?queue&wait", ["INSERT INTO kv VALUES (6, 'six')", "INSERT INTO kv VALUES (7, 'seven')", "INSERT INTO jot VALUES ('queued')"])
        #expect(rqQueued.status == 200 && rqQueued.text.contains("sequence_number"), "\(rqQueued.text)")
        let rqRead = try await c.nodes[0].post("/db/query?level=strong", ["SELECT count(*), sum(k) FROM kv", ["SELECT v FROM kv WHERE k = ?", 3], "SELECT count(*) FROM jot"])
        #expect(rqRead.status == 200 && rqRead.text.contains(#""values":[[6,23]]"#) && rqRead.text.contains(#""values":[["three"]]"#)
                && rqRead.text.contains(#""values":[[1]]"#), "\(rqRead.text)")
        let rqGet = try await c.nodes[1].get("/db/query?q=" + "SELECT k FROM kv ORDER BY k DESC LIMIT 2".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)
        #expect(rqGet.status == 200 && rqGet.text.contains(#""values":[[7],[6]]"#), "\(rqGet.text)")
        let rqReads = try await c.nodes[2].post("/db/request", ["SELECT max(v) FROM kv"])
        #expect(rqReads.status == 200 && rqReads.text.contains(#""values":[["two"]]"#), "\(rqReads.text)")
        let rqWrites = try await c.nodes[0].post("/db/request", ["DELETE FROM kv WHERE k > 5", "UPDATE kv SET v = upper(v) WHERE k = 2"])
        #expect(rqWrites.status == 200 && rqWrites.text.contains(#""rows_affected":2"#) && rqWrites.text.contains(#""rows_affected":1"#), "\(rqWrites.text)")
        let rqAfter = try await c.nodes[1].post("/db/query", ["SELECT group_concat(v, ',') FROM (SELECT v FROM kv ORDER BY k)"])
        #expect(rqAfter.status == 200 && rqAfter.text.contains(#"[["one,TWO,three,four"]]"#), "\(rqAfter.text)")

        // CairnDB's own /request: reads where the rows are; writes to sharded and unsharded tables in one
        // transaction, a home statement's rows answered whole.
        let nativeReads = try await c.nodes[2].post("/v1/db/shop/request", ["statements": ["SELECT count(*) FROM orders", "SELECT count(*) FROM notes"]])
        #expect(nativeReads.status == 200 && nativeReads.text.contains("[[12]]") && nativeReads.text.contains("[[0]]"), "\(nativeReads.text)")
        let nativeWrites = try await c.nodes[1].post("/v1/db/shop/request", ["statements": [
            "INSERT INTO notes VALUES ('moved') RETURNING body", "UPDATE orders SET country = 'FR' WHERE customer IN (1, 3)"]])
        #expect(nativeWrites.status == 200 && nativeWrites.text.contains(#"[["moved"]]"#) && nativeWrites.text.contains(#""rows_affected":2"#)
                && !nativeWrites.text.contains("error"), "\(nativeWrites.text)")
        let moved = try await c.nodes[0].post("/v1/db/shop/query", ["statements": ["SELECT count(*) FROM orders WHERE country = 'FR'", "SELECT body FROM notes"]])
        #expect(moved.text.contains("[[8]]") && moved.text.contains(#"[["moved"]]"#), "\(moved.text)")
    }
}
}
