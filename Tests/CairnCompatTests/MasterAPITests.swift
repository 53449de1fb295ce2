import CairnCompat
import CairnJSON
import CairnSQLite
import Testing

/// Seed 002's queries: MySQL's words, tables named db.table, planned onto CairnDB databases.
@Suite struct MasterAPITests {
    @Test func queriesFindTheirDatabase() throws {
        #expect(try MasterAPI.plan("CREATE DATABASE shop") == .createDatabase("shop", ifNotExists: false))
        #expect(try MasterAPI.plan("create schema if not exists `shop`;") == .createDatabase("shop", ifNotExists: true))
        #expect(try MasterAPI.plan("DROP DATABASE IF EXISTS shop") == .dropDatabase("shop", ifExists: true))
        #expect(try MasterAPI.plan("SELECT * FROM shop.items WHERE price > 3") == .statement(database: "shop", sql: "SELECT * FROM items WHERE price > 3", reads: true))
        #expect(try MasterAPI.plan(#"INSERT INTO shop.items (name) VALUES ("pen")"#) == .statement(database: "shop", sql: "INSERT INTO items ( name ) VALUES ( 'pen' )", reads: false))
        // A column qualified by its table stays; the database's name goes.
        #expect(try MasterAPI.plan("SELECT i.name, shop.items.price FROM shop.items i, shop.tags t WHERE i.id = t.item")
                == .statement(database: "shop", sql: "SELECT i . name , items . price FROM items i , tags t WHERE i . id = t . item", reads: true))
        #expect(try MasterAPI.plan("CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB")
                == .statement(database: "shop", sql: "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR ( 20 ))", reads: false))
        #expect(try MasterAPI.plan("UPDATE items SET n = 1") == .statement(database: nil, sql: "UPDATE items SET n = 1", reads: false))
        // A subquery's FROM ends with its parenthesis: t.a after it is a column of t, not a database.
        #expect(try MasterAPI.plan("SELECT (SELECT max(b) FROM u), t.a FROM t") == .statement(database: nil, sql: "SELECT ( SELECT max ( b ) FROM u ) , t . a FROM t", reads: true))
        #expect(try MasterAPI.plan("CREATE INDEX i ON shop.items(name)") == .statement(database: "shop", sql: "CREATE INDEX i ON items ( name )", reads: false))
        #expect(try MasterAPI.plan("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x") == .statement(database: nil, sql: "WITH x AS ( SELECT 1 ) INSERT INTO t SELECT * FROM x", reads: false))
        // CREATE TABLE ... AS SELECT keeps every word; MySQL's options go, SQLite's stay, others are refused.
        #expect(try MasterAPI.plan("CREATE TABLE t2 AS SELECT id FROM t1 WHERE id IN (1, 2) AND flag = 1")
                == .statement(database: nil, sql: "CREATE TABLE t2 AS SELECT id FROM t1 WHERE id IN ( 1 , 2 ) AND flag = 1", reads: false))
        #expect(try MasterAPI.plan("CREATE TABLE t (id INT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 STRICT") == .statement(database: nil, sql: "CREATE TABLE t (id INT) STRICT", reads: false))
        #expect(throws: CompatFailure.self) { try MasterAPI.plan("CREATE TABLE t (id INT) AS SELECT 1") }
        for refused in ["SELECT 1; DROP TABLE x", "USE shop", "SELECT * FROM a.x JOIN b.y", "", "CREATE DATABASE", "CREATE DATABASE a b", "DROP DATABASE IF junk x", "CREATE DATABASE _x"] {
            #expect(throws: CompatFailure.self, "\(refused)") { try MasterAPI.plan(refused) }
        }
    }

    @Test func answersAsDBResponse() throws {
        var r = StatementResult()
        r.columns = ["id", "name"]
        r.rows = [[.integer(1), .null]]
        #expect(MasterAPI.answer(r, reads: true) == (try JSON.parse(Array(#"{"status":"ok","message":"Select executed successfully","header":["id","name"],"rows":[["1","NULL"]]}"#.utf8))))
        r.rowsAffected = 2
        #expect(MasterAPI.answer(r, reads: false) == MasterAPI.ok("Query executed successfully. Rows affected: 2"))
        let columns = try JSON.parse(Array(#"[{"name":"id","type":"INT","nullable":false},{"name":"note","type":"VARCHAR(10)","default":"n/a"}]"#.utf8))
        guard case .array(let list) = columns else { return }
        #expect(try MasterAPI.createTable("t", columns: list).sql == #"CREATE TABLE IF NOT EXISTS "t" ("id" INT NOT NULL, "note" VARCHAR ( 10 ) DEFAULT 'n/a')"#)
        #expect(throws: CompatFailure.self) { try MasterAPI.createTable("t", columns: [.object([("name", .string("x")), ("type", .string("INT); DROP TABLE t"))])]) }
    }
}
