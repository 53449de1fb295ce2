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
        for refused in ["SELECT 1; DROP TABLE x", "USE shop", "SELECT * FROM a.x JOIN b.y", "", "CREATE DATABASE", "CREATE DATABASE a b"] {
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
