import Foundation
import Testing
import CairnRaft
@testable import CairnSQLite

final class TempDB {
    let dir = NSTemporaryDirectory() + "cairn-sql-test-" + UUID().uuidString
    init() { try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
    deinit { try? FileManager.default.removeItem(atPath: dir) }
    func path(_ name: String = "db.sqlite") -> String { dir + "/" + name }
}

private func command(_ sql: String..., atomic: Bool = false) -> SQLCommand {
    SQLCommand(statements: sql.map { SQLStatement($0) }, atomic: atomic,
               timestampMillis: 1_790_000_000_123, randomSeed: 99)
}

@Suite("SQLite state machine")
struct StateMachineTests {
    @Test("texts that differ only in Unicode normalization are different statements: each runs as its own bytes say, on the apply connection and on reads")
    func canonicallyEquivalentTextsStayApart() throws {
        let tmp = TempDB()
        let composed = "caf\u{E9}", decomposed = "cafe\u{301}"
        // Equal as Swift strings, different bytes (and so different to SQLite).
        #expect(composed == decomposed && Array(composed.utf8) != Array(decomposed.utf8))
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))
        // The first text is prepared and kept; the second, equal as a Swift string, must not run as it.
        _ = try sm.apply(index: 2, command: command("INSERT INTO t(id, v) VALUES (3, '\(composed)')"))
        _ = try sm.apply(index: 3, command: command("DELETE FROM t"))
        _ = try sm.apply(index: 4, command: command("INSERT INTO t(id, v) VALUES (3, '\(decomposed)')"))
        for _ in 0..<2 {
            let a = sm.query(SQLStatement("SELECT '\(composed)'")).rows, b = sm.query(SQLStatement("SELECT '\(decomposed)'")).rows
            guard case .text(let ta)? = a.first?.first, case .text(let tb)? = b.first?.first else {
                Issue.record("no rows: \(a) \(b)")
                return
            }
            #expect(Array(ta.utf8) == Array(composed.utf8) && Array(tb.utf8) == Array(decomposed.utf8))
        }
        guard case .text(let stored)? = sm.query(SQLStatement("SELECT v FROM t WHERE id = 3")).rows.first?.first else {
            Issue.record("row 3 missing")
            return
        }
        #expect(Array(stored.utf8) == Array(decomposed.utf8))
    }

    @Test("a batch of entries applies in one transaction; an atomic entry that fails rolls back alone")
    func batchApply() throws {
        let tmp = TempDB()
        do {
            let sm = try SQLStateMachine(path: tmp.path())
            _ = try sm.apply(index: 1, command: command("CREATE TABLE t(a INTEGER PRIMARY KEY)"))
            let results = try sm.apply(batch: [
                (2, .command(command("INSERT INTO t VALUES (1)"))),
                (3, .command(command("INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (1)", atomic: true))),
                (4, .empty(nil)),
                (5, .command(command("INSERT INTO t VALUES (3)", "INSERT INTO nosuch VALUES (1)"))),
            ])
            #expect(results.count == 4)
            #expect(results[1].last?.error?.contains("UNIQUE") == true, "the atomic entry failed on its second statement")
            #expect(results[3].map { $0.error == nil } == [true, false])
            #expect(sm.appliedIndex == 5)
            #expect(sm.query(SQLStatement("SELECT a FROM t ORDER BY a")).rows == [[.integer(1)], [.integer(3)]])
        }
        // The applied index went into the same transaction.
        let reopened = try SQLStateMachine(path: tmp.path())
        #expect(reopened.appliedIndex == 5)
    }

    @Test("applied entries are queryable and the applied index survives a reopen")
    func applyAndReopen() throws {
        let tmp = TempDB()
        do {
            let sm = try SQLStateMachine(path: tmp.path())
            #expect(sm.appliedIndex == 0)
            let r = try sm.apply(index: 1, command: command("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT)",
                                                              "INSERT INTO t(name) VALUES ('ada')"))
            #expect(r.map(\.error) == [nil, nil])
            #expect(r[1].rowsAffected == 1 && r[1].lastInsertID == 1)
            try sm.applyEmpty(index: 2)
        }
        let sm = try SQLStateMachine(path: tmp.path())
        #expect(sm.appliedIndex == 2)
        let q = sm.query(SQLStatement("SELECT id, name FROM t"))
        #expect(q.columns == ["id", "name"])
        #expect(q.types == ["INTEGER", "TEXT"])
        #expect(q.rows == [[.integer(1), .text("ada")]])
    }

    @Test("without atomic, a failing statement leaves no trace and the others take effect")
    func perStatement() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)"))
        let r = try sm.apply(index: 2, command: command("INSERT INTO t VALUES (1, 'a')", "INSERT INTO t VALUES (1, 'dup')",
                                                          "INSERT INTO t VALUES (2, 'b')"))
        #expect(r[0].error == nil && r[2].error == nil)
        #expect(r[1].error?.contains("UNIQUE constraint failed") == true)
        #expect(sm.query(SQLStatement("SELECT v FROM t ORDER BY id")).rows == [[.text("a")], [.text("b")]])
        #expect(sm.appliedIndex == 2)
    }

    @Test("a statement whose conflict resolution rolls back the transaction fails alone; the rest of the batch stands")
    func statementThatRollsBackTheTransaction() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(id INTEGER PRIMARY KEY)",
                                                      "CREATE TABLE u(id INTEGER PRIMARY KEY)",
                                                      "CREATE TRIGGER no_seven BEFORE INSERT ON u WHEN new.id = 7 BEGIN SELECT RAISE(ROLLBACK, 'seven is refused'); END"))
        for atomic in [false, true] {
            let base: Int64 = atomic ? 100 : 0
            let results = try sm.apply(batch: [
                (sm.appliedIndex + 1, .command(command("INSERT INTO t VALUES (\(base + 1))"))),
                (sm.appliedIndex + 2, .command(command("INSERT INTO t VALUES (\(base + 2))", "INSERT OR ROLLBACK INTO t VALUES (\(base + 1))",
                                                       "INSERT INTO t VALUES (\(base + 3))", atomic: atomic))),
                (sm.appliedIndex + 3, .command(command("INSERT INTO u VALUES (7)", "INSERT INTO t VALUES (\(base + 4))", atomic: atomic))),
                (sm.appliedIndex + 4, .command(command("INSERT INTO t VALUES (\(base + 5))"))),
            ])
            #expect(results[1][1].error?.contains("UNIQUE") == true, "\(results)")
            #expect(results[2][0].error?.contains("seven is refused") == true, "\(results)")
            let rows = sm.query(SQLStatement("SELECT id FROM t WHERE id > \(base) AND id < \(base + 100) ORDER BY id")).rows
            // Atomic entries stop at their failure and leave nothing; the others keep their good statements.
            let expected: [Int64] = atomic ? [1, 5] : [1, 2, 3, 4, 5]
            #expect(rows == expected.map { [.integer(base + $0)] }, "atomic \(atomic)")
        }
        let reopened = try SQLStateMachine(path: tmp.path())
        #expect(reopened.appliedIndex == sm.appliedIndex)
    }

    @Test("a batch applied again after a rollback reports what DDL carries over as the first pass would")
    func carriedCountsSurviveARetry() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(id INTEGER PRIMARY KEY)"))
        _ = try sm.apply(index: 2, command: command("INSERT INTO t VALUES (7)"))
        let results = try sm.apply(batch: [
            (3, .command(command("CREATE TABLE u(x)"))),
            (4, .command(command("INSERT INTO t VALUES (50)"))),
            (5, .command(command("INSERT OR ROLLBACK INTO t VALUES (7)"))),
        ])
        // SQLite reports the last row change before a DDL statement: the insert of 7, as on a replica
        // that applied entry 3 in a batch of its own.
        #expect(results[0][0].lastInsertID == 7, "\(results)")
        #expect(results[1][0].lastInsertID == 50 && results[2][0].error?.contains("UNIQUE") == true, "\(results)")
    }

    @Test("a statement kept prepared takes new parameters, follows schema changes and still refuses writes in a query")
    func preparedStatementsAreReused() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))
        let insert = "INSERT INTO t(id, v) VALUES (?, ?)"
        for id in Int64(1)...3 {
            let r = try sm.apply(index: sm.appliedIndex + 1, command: SQLCommand(statements: [SQLStatement(insert, [.integer(id), .text("v\(id)")])], timestampMillis: 1, randomSeed: 1))
            #expect(r[0].error == nil && r[0].lastInsertID == id && r[0].rowsAffected == 1)
        }
        let select = "SELECT * FROM t WHERE id = ?"
        #expect(sm.query(SQLStatement(select, [.integer(2)])).rows == [[.integer(2), .text("v2")]])
        _ = try sm.apply(index: sm.appliedIndex + 1, command: command("ALTER TABLE t ADD COLUMN w INTEGER DEFAULT 7"))
        let after = sm.query(SQLStatement(select, [.integer(3)]))
        #expect(after.columns == ["id", "v", "w"] && after.rows == [[.integer(3), .text("v3"), .integer(7)]])
        // Prepared on the write path, refused on the read path all the same.
        #expect(sm.query(SQLStatement(insert, [.integer(9), .text("x")])).error == "attempt to change database via query operation")
        // A duplicate key fails alone, and the statement is usable again afterwards.
        let dup = try sm.apply(index: sm.appliedIndex + 1, command: SQLCommand(statements: [SQLStatement(insert, [.integer(1), .text("again")])], timestampMillis: 1, randomSeed: 1))
        #expect(dup[0].error?.contains("UNIQUE") == true)
        let ok = try sm.apply(index: sm.appliedIndex + 1, command: SQLCommand(statements: [SQLStatement(insert, [.integer(4), .text("v4")])], timestampMillis: 1, randomSeed: 1))
        #expect(ok[0].error == nil)
        #expect(sm.query(SQLStatement("SELECT count(*) FROM t")).rows == [[.integer(4)]])
    }

    @Test("atomic: the first failure rolls back the whole batch and stops it")
    func atomicBatch() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(id INTEGER PRIMARY KEY)"))
        let r = try sm.apply(index: 2, command: command("INSERT INTO t VALUES (1)", "INSERT INTO nope VALUES (1)",
                                                          "INSERT INTO t VALUES (2)", atomic: true))
        #expect(r.count == 2)
        #expect(r[1].error?.contains("no such table: nope") == true)
        #expect(sm.query(SQLStatement("SELECT count(*) FROM t")).rows == [[.integer(0)]])
        #expect(sm.appliedIndex == 2)
    }

    @Test("random(), randomblob(), 'now' and CURRENT_TIMESTAMP give the same row on every replica")
    func deterministicAcrossReplicas() throws {
        let tmp = TempDB()
        let replicas = try (1...3).map { try SQLStateMachine(path: tmp.path("replica\($0).sqlite")) }
        let schema = command("CREATE TABLE t(r INTEGER, b BLOB, now TEXT, ts TEXT, d TEXT DEFAULT CURRENT_TIMESTAMP)")
        let insert = command("INSERT INTO t(r, b, now, ts) VALUES (random(), randomblob(8), datetime('now'), CURRENT_TIMESTAMP)")
        var rows: [[[SQLValue]]] = []
        for (i, sm) in replicas.enumerated() {
            _ = try sm.apply(index: 1, command: schema)
            // Replicas apply at different real times; it must not matter.
            if i > 0 { Thread.sleep(forTimeInterval: 1.1) }
            _ = try sm.apply(index: 2, command: insert)
            rows.append(sm.query(SQLStatement("SELECT * FROM t")).rows)
        }
        #expect(rows[0] == rows[1] && rows[1] == rows[2])
        let row = try #require(rows[0].first)
        #expect(row[2] == .text("2026-09-21 14:13:20"))
        #expect(row[3] == row[2] && row[4] == row[2])
        // Outside an apply, reads see the real clock and real randomness.
        let now = replicas[0].query(SQLStatement("SELECT datetime('now')")).rows
        #expect(now != [[.text("2026-09-21 14:13:20")]])
    }

    @Test("statements that would escape the database or change its durability are refused with a reason",
          arguments: [
            ("ATTACH DATABASE '/tmp/x.db' AS x", "ATTACH and DETACH are not allowed"),
            ("DETACH DATABASE x", "ATTACH and DETACH are not allowed"),
            ("PRAGMA journal_mode=DELETE", "PRAGMA journal_mode is not allowed"),
            ("PRAGMA synchronous=OFF", "PRAGMA synchronous is not allowed"),
            ("PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA wal_checkpoint is not allowed"),
            ("PRAGMA writable_schema=ON", "PRAGMA writable_schema is not allowed"),
            ("SELECT load_extension('/tmp/evil.so')", "load_extension() is not allowed"),
            ("BEGIN", "transaction statements are not allowed"),
            ("SAVEPOINT s", "transaction statements are not allowed"),
            ("PRAGMA application_id=0", "reserved for CairnDB"),
            ("DROP TABLE _cairn_reset", "TEMP tables"),
          ])
    func refused(sql: String, reason: String) throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        let r = try sm.apply(index: 1, command: command(sql))
        #expect(r.first?.error?.contains(reason) == true, "\(sql): \(r.first?.error ?? "accepted")")
        #expect(sm.appliedIndex == 1)
        #expect(sm.query(SQLStatement("PRAGMA journal_mode")).error != nil)
    }

    @Test("harmless PRAGMAs still work")
    func allowedPragmas() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        let r = try sm.apply(index: 1, command: command("CREATE TABLE t(a INTEGER, b TEXT)", "PRAGMA user_version = 7"))
        #expect(r.map(\.error) == [nil, nil])
        #expect(sm.query(SQLStatement("PRAGMA user_version")).rows == [[.integer(7)]])
        #expect(sm.query(SQLStatement("PRAGMA table_info(t)")).rows.count == 2)
    }

    @Test("a query that would write is refused")
    func queryIsReadOnly() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(a)"))
        #expect(sm.query(SQLStatement("INSERT INTO t VALUES (1)")).error == "attempt to change database via query operation")
        #expect(sm.query(SQLStatement("SELECT count(*) FROM t")).rows == [[.integer(0)]])
    }

    @Test("positional and named parameters bind; mistakes are explained")
    func parameters() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(a, b)"))
        let cmd = SQLCommand(statements: [
            SQLStatement("INSERT INTO t VALUES (?, ?)", [.integer(1), .text("x")]),
            SQLStatement("INSERT INTO t VALUES (:a, :b)", named: ["a": .integer(2), ":b": .text("y")]),
            SQLStatement("INSERT INTO t VALUES (?, ?)", [.integer(1), .integer(2), .integer(3)]),
            SQLStatement("INSERT INTO t VALUES (:a, :b)", named: ["c": .integer(3)]),
        ], timestampMillis: 1, randomSeed: 1)
        let r = try sm.apply(index: 2, command: cmd)
        #expect(r[0].error == nil && r[1].error == nil)
        #expect(r[2].error == "the statement takes 2 parameter(s), 3 given")
        #expect(r[3].error == "the statement has no parameter named c")
        #expect(sm.query(SQLStatement("SELECT a, b FROM t ORDER BY a")).rows == [[.integer(1), .text("x")], [.integer(2), .text("y")]])
    }

    @Test("every SQLite type round-trips")
    func valueTypes() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        let values: [SQLValue] = [.null, .integer(-42), .integer(Int64.max), .real(3.25), .text("héllo ✓"), .text(""), .blob([0, 1, 255]), .blob([])]
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(v)"))
        let inserts = values.map { SQLStatement("INSERT INTO t VALUES (?)", [$0]) }
        _ = try sm.apply(index: 2, command: SQLCommand(statements: inserts, timestampMillis: 1, randomSeed: 1))
        #expect(sm.query(SQLStatement("SELECT v FROM t ORDER BY rowid")).rows == values.map { [$0] })
    }

    @Test("a snapshot carries data, applied index and membership, and installs over another replica")
    func snapshotAndInstall() throws {
        let tmp = TempDB()
        let source = try SQLStateMachine(path: tmp.path("source.sqlite"))
        _ = try source.apply(index: 1, command: command("CREATE TABLE t(v)", "INSERT INTO t VALUES ('kept')"))
        let conf = ConfState(voters: [1, 2, 3], learners: [4])
        try source.applyEmpty(index: 2, confState: conf)
        let file = tmp.path("snap.sqlite")
        let meta = try SQLStateMachine.writeSnapshot(of: source.path, to: file)
        #expect(meta.index == 2 && meta.conf == conf)
        // Reading it back does not change the file that will be shipped.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        #expect(try SQLStateMachine.readMeta(ofFile: file).index == 2)
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)) == bytes)

        let target = try SQLStateMachine(path: tmp.path("target.sqlite"))
        _ = try target.apply(index: 1, command: command("CREATE TABLE other(x)"))
        try target.install(snapshotFile: file)
        #expect(target.appliedIndex == 2 && target.confState == conf)
        #expect(target.query(SQLStatement("SELECT v FROM t")).rows == [[.text("kept")]])
        #expect(target.query(SQLStatement("SELECT * FROM other")).error != nil, "the old contents are gone")
        _ = try target.apply(index: 3, command: command("INSERT INTO t VALUES ('after')"))
        let reopened = try SQLStateMachine(path: tmp.path("target.sqlite"))
        #expect(reopened.appliedIndex == 3 && reopened.confState == conf)
        #expect(reopened.query(SQLStatement("SELECT count(*) FROM t")).rows == [[.integer(2)]])
    }

    @Test("a drop entry ends the database: later entries in its batch and after change nothing, across a reopen and a snapshot")
    func dropEntry() throws {
        let tmp = TempDB()
        do {
            let sm = try SQLStateMachine(path: tmp.path())
            _ = try sm.apply(index: 1, command: command("CREATE TABLE t(v)", "INSERT INTO t VALUES (1)"))
            #expect(sm.droppedAt == nil)
            let results = try sm.apply(batch: [
                (2, .command(command("INSERT INTO t VALUES (2)"))),
                (3, .command(SQLCommand.dropDatabase())),
                (4, .command(command("INSERT INTO t VALUES (4)"))),
            ])
            #expect(results.map(\.count) == [1, 0, 0])
            #expect(sm.droppedAt == 3 && sm.appliedIndex == 4)
            _ = try sm.apply(index: 5, command: command("INSERT INTO t VALUES (5)"))
            #expect(sm.query(SQLStatement("SELECT v FROM t ORDER BY v")).rows == [[.integer(1)], [.integer(2)]])
        }
        let reopened = try SQLStateMachine(path: tmp.path())
        #expect(reopened.droppedAt == 3 && reopened.appliedIndex == 5)
        let file = tmp.path("snap.sqlite")
        _ = try SQLStateMachine.writeSnapshot(of: reopened.path, to: file)
        let target = try SQLStateMachine(path: tmp.path("target.sqlite"))
        try target.install(snapshotFile: file)
        #expect(target.droppedAt == 3, "a replica that catches up through a snapshot knows too")
    }

    @Test("commands round-trip through their log encoding; garbage is refused")
    func commandEncoding() {
        let cmd = SQLCommand(statements: [SQLStatement("INSERT INTO t VALUES (?, :n)", [.real(1.5), .blob([9])], named: [":n": .null])],
                             atomic: true, timestampMillis: -5, randomSeed: .max)
        #expect(SQLCommand(decoding: cmd.encoded()) == cmd)
        #expect(SQLCommand(decoding: SQLCommand.dropDatabase().encoded())?.dropsDatabase == true)
        #expect(SQLCommand(decoding: cmd.encoded())?.dropsDatabase == false)
        var flags = cmd.encoded()
        flags[1] = 16
        #expect(SQLCommand(decoding: flags) == nil, "an unknown flag is refused")
        flags[1] = 8
        #expect(SQLCommand(decoding: flags) == nil, "an expected digest without a check is refused")
        let check = SQLCommand.checkConsistency(expected: .init(index: 41, hash: 0xdead_beef))
        #expect(SQLCommand(decoding: check.encoded()) == check)
        #expect(SQLCommand(decoding: SQLCommand.checkConsistency(expected: nil).encoded())?.consistencyCheck == ConsistencyCheck(expected: nil))
        #expect(SQLCommand(decoding: [1, 2, 3]) == nil)
        #expect(SQLCommand(decoding: Array(cmd.encoded().dropLast())) == nil)
    }
}
