import CairnCompat
import CairnJSON
import CairnSQLite
import Testing

/// Seed 003's raw SQL fragments: accepted as what they claim to be (values, assignments, a condition
/// over the table's columns, column definitions), refused as anything more.
@Suite struct RestDBTests {
    static func refused(_ body: () throws -> Any) -> Bool {
        do { _ = try body() } catch let f as CompatFailure { return f.status == 400 && f.text?.hasSuffix("\n") == true } catch { return false }
        return false
    }

    @Test func tablesFromTheReadmesBothWays() throws {
        let fromSchema = try RestDB.createTable("users", schema: "id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50), email VARCHAR(100)", columns: nil)
        #expect(fromSchema.sql == #"CREATE TABLE IF NOT EXISTS "users" (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR ( 50 ), email VARCHAR ( 100 ))"#)
        let columns = try JSON.parse(Array(#"{"columns":[{"Name":"name","DataType":"VARCHAR(50)"},{"Name":"email","DataType":"VARCHAR(100)"}]}"#.utf8))
        let fromJSON = try RestDB.createTable("users", schema: nil, columns: columns)
        #expect(fromJSON.sql == #"CREATE TABLE IF NOT EXISTS "users" (Id INTEGER PRIMARY KEY AUTOINCREMENT, "name" VARCHAR ( 50 ), "email" VARCHAR ( 100 ))"#)
        for schema in ["id INT); DROP TABLE users; --", "id INT) AS SELECT 1", "id INT, x INT DEFAULT (SELECT 1)", "id INT) WITHOUT ROWID"] {
            #expect(Self.refused { try RestDB.createTable("t", schema: schema, columns: nil) }, "\(schema)")
        }
        // MySQL's other way to declare it: the key as a table constraint.
        let separate = try RestDB.createTable("t", schema: "id INT NOT NULL AUTO_INCREMENT, name VARCHAR(50), PRIMARY KEY (id)", columns: nil)
        #expect(separate.sql == #"CREATE TABLE IF NOT EXISTS "t" (id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, name VARCHAR ( 50 ))"#, "\(separate.sql)")
        let named = try RestDB.createTable("t", schema: "`id` INT AUTO_INCREMENT, CONSTRAINT pk PRIMARY KEY (`id`)", columns: nil)
        #expect(named.sql == #"CREATE TABLE IF NOT EXISTS "t" ("id" INTEGER PRIMARY KEY AUTOINCREMENT)"#, "\(named.sql)")
        let untouched = try RestDB.createTable("t", schema: "a INT, b INT, PRIMARY KEY (a, b)", columns: nil)
        #expect(untouched.sql == #"CREATE TABLE IF NOT EXISTS "t" (a INT, b INT, PRIMARY KEY ( a , b ))"#, "\(untouched.sql)")
        for schema in ["id INT AUTO_INCREMENT, b INT, PRIMARY KEY (id, b)", "id INT AUTO_INCREMENT UNIQUE, name TEXT"] {
            #expect(Self.refused { try RestDB.createTable("t", schema: schema, columns: nil) }, "\(schema)")
        }
        let hostileType = try JSON.parse(Array(#"{"columns":[{"Name":"x","DataType":"INT); DROP TABLE users; --"}]}"#.utf8))
        #expect(Self.refused { try RestDB.createTable("t", schema: nil, columns: hostileType) })
        #expect(Self.refused { try RestDB.createTable("t", schema: nil, columns: nil) })
        #expect(Self.refused { try RestDB.checkName("users; DROP", what: "table") })
        // SQLite's tables and CairnDB's own are not the client's, in any case.
        for reserved in ["sqlite_schema", "sqlite_master", "SQLITE_sequence", "_cairn_txn", "_CAIRN_shard_state"] {
            #expect(Self.refused { try RestDB.checkName(reserved, what: "table") }, "\(reserved)")
        }
        try RestDB.checkName("_users", what: "table")
        try RestDB.checkName("sqlitex", what: "table")
    }

    @Test func valuesAreValuesOnly() throws {
        #expect(try RestDB.values(#"NULL, "John Doe", "john@example.com""#) == "NULL , 'John Doe' , 'john@example.com'")
        #expect(try RestDB.values(#"NULL, "O'Brien\tJr", 3.5, lower('X')"#) == "NULL , 'O''Brien\tJr' , 3.5 , lower ( 'X' )")
        // MySQL's escapes in either quote, and doubled quotes; quotes inside names and comments open nothing.
        #expect(try RestDB.values(#"'it\'s', "say \"hi\"", 'a''b', 'back\\slash', 'like\%'"#) == #"'it''s' , 'say "hi"' , 'a''b' , 'back\slash' , 'like\%'"#)
        #expect(try RestDB.assignments(#"`na'me` = 'x' /* it's */"#, columns: ["na'me"]) == #""na'me" = 'x'"#)
        for hostile in [#"'it\'s'); DROP TABLE users; --"#, #"'a\0b'"#, #"'open"#] {
            #expect(Self.refused { try RestDB.values(hostile) }, "\(hostile)")
        }
        for hostile in ["1); DROP TABLE users; --", "(SELECT secret FROM other)", "1, name", "?", "load_extension('x')", "1, (", "main.users"] {
            #expect(Self.refused { try RestDB.values(hostile) }, "\(hostile)")
        }
    }

    @Test func assignmentsAndConditionsStayOnTheirTable() throws {
        let columns: Set<String> = ["id", "name", "email"]
        #expect(try RestDB.assignments(#"name = "John Smith""#, columns: columns) == "name = 'John Smith'")
        #expect(try RestDB.assignments(#"name = upper(name), `email` = 'x'"#, columns: columns) == #"name = upper ( name ), "email" = 'x'"#)
        #expect(try RestDB.condition("Id = 1", columns: columns) == "Id = 1")
        #expect(try RestDB.condition("Id IN (1, 2) AND name LIKE 'J%' OR email IS NULL", columns: columns) == "Id IN ( 1 , 2 ) AND name LIKE 'J%' OR email IS NULL")
        for hostile in ["name = (SELECT password FROM secrets)", "password = 'x'", "name = 'x' WHERE 1=1; DROP TABLE users", "1 = 1",
                        "name = name FROM other"] {
            #expect(Self.refused { try RestDB.assignments(hostile, columns: columns) }, "\(hostile)")
        }
        for hostile in ["1=1; DROP TABLE users", "Id IN (SELECT id FROM t)", "users.Id = 1", "Id = ?", "sqlite_version() = 1",
                        "EXISTS (SELECT 1)", "Id = 1, Id = 2", "Id = 1) OR (1", "random() > 0"] {
            #expect(Self.refused { try RestDB.condition(hostile, columns: columns) }, "\(hostile)")
        }
        // A bare name after IN is a table; a column named like a function does not make it callable.
        #expect(Self.refused { try RestDB.condition("x IN x", columns: ["x", "id"]) })
        #expect(Self.refused { try RestDB.condition("zeroblob(1000000000) = x", columns: ["x", "zeroblob"]) })
        // Nor does quoting its name: SQLite calls a quoted name before a parenthesis as a function.
        // (In MySQL's dialect "cairn_slot" is a string, which SQLite never calls.)
        for hostile in ["`cairn_slot`(Id) >= 0", "[cairn_slot](Id) >= 0", "`json_extract`(x, '$') = 1"] {
            #expect(Self.refused { try RestDB.condition(hostile, columns: ["cairn_slot", "json_extract", "id", "x"]) }, "\(hostile)")
        }
        #expect(Self.refused { try RestDB.assignments("cairn_slot = `cairn_slot`(Id)", columns: ["cairn_slot", "id"]) })
        #expect(try RestDB.condition("`x` IN (1, 2)", columns: ["x"]) == #""x" IN ( 1 , 2 )"#)
        // A blob's doubled quote ends it, as in SQLite: what follows is a string, not more blob.
        #expect(try RestDB.condition("x = x'AB''; DROP TABLE t; --'", columns: ["x"]) == "x = x'AB' '; DROP TABLE t; --'")
        // A column named like a keyword still cannot open a subquery.
        #expect(Self.refused { try RestDB.condition("x IN (select x from x)", columns: ["x", "select", "from"]) })
    }

    @Test func rowsAsGoEncodedThem() {
        var r = StatementResult()
        r.columns = ["name", "Id", "email"]
        r.rows = [[.text("John"), .integer(1), .null]]
        #expect(RestDB.rows(r) == (try? JSON.parse(Array(#"[{"Id":1,"email":null,"name":"John"}]"#.utf8))))
        #expect(RestDB.rows(StatementResult()) == .null)
        let insert = try? RestDB.insert("users", records: [("name", .string("Jane Doe")), ("email", .string("jane@example.com"))])
        #expect(insert == SQLStatement(#"INSERT INTO "users" ("name", "email") VALUES (?, ?)"#, [.text("Jane Doe"), .text("jane@example.com")]))
    }
}
