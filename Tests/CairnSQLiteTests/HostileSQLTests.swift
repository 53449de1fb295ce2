import Foundation
import Testing
import CairnRaft
import CSQLite3
@testable import CairnSQLite

private func command(_ sql: String..., atomic: Bool = false, seed: UInt64 = 7) -> SQLCommand {
    SQLCommand(statements: sql.map { SQLStatement($0) }, atomic: atomic, timestampMillis: 1_790_000_000_123, randomSeed: seed)
}

/// What one client could do to every replica, tried as a hostile client would: each gets a clear
/// per-statement error or a result that depends on the log alone, and the replica keeps applying.
@Suite("SQLite state machine: hostile SQL")
struct HostileSQLTests {
    @Test("the authorizer reads each action's table from the argument SQLite puts it in",
          arguments: [
            // (action, arg1, arg2, database, role, refused?)
            (SQLITE_ALTER_TABLE, "main", "_cairn_x", "main", ConnectionRole.apply, true),
            (SQLITE_ALTER_TABLE, "main", "t", "main", .apply, false),
            (SQLITE_CREATE_TRIGGER, "tr", "_cairn_x", "main", .apply, true),
            (SQLITE_CREATE_TRIGGER, "tr", "t", "main", .apply, false),
            (SQLITE_DROP_TRIGGER, "tr", "sqlite_cairn_meta", "main", .apply, true),
            (SQLITE_CREATE_INDEX, "i", "_cairn_x", "main", .apply, true),
            (SQLITE_CREATE_INDEX, "_cairn_i", "t", "main", .apply, true),
            (SQLITE_DROP_INDEX, "i", "t", "main", .apply, false),
            (SQLITE_READ, "sqlite_cairn_meta", "value", "main", .read, true),
            (SQLITE_READ, "t", "a", "temp", .apply, true),
            (SQLITE_READ, "t", "a", "temp", .read, false),
            (SQLITE_READ, "dbstat", "name", "main", .apply, true),
            (SQLITE_READ, "dbstat", "name", "main", .read, false),
            (SQLITE_CREATE_VTABLE, "v", "fts5", "main", .apply, false),
            (SQLITE_CREATE_VTABLE, "v", "dbstat", "main", .apply, true),
            (SQLITE_CREATE_TEMP_VIEW, "v", nil, "temp", .read, true),
            (SQLITE_FUNCTION, nil, "sqlite_version", nil, .apply, true),
            (SQLITE_FUNCTION, nil, "sqlite_version", nil, .read, false),
            (SQLITE_FUNCTION, nil, "fts3_tokenizer", nil, .read, true),
            (SQLITE_PRAGMA, "foreign_keys", "OFF", nil, .apply, false),
            (SQLITE_PRAGMA, "foreign_keys", "ON", nil, .apply, true),
            (SQLITE_PRAGMA, "foreign_keys", nil, nil, .read, false),
            (SQLITE_PRAGMA, "foreign_keys", "1", nil, .read, true),
            (SQLITE_PRAGMA, "user_version", "3", nil, .apply, false),
            (SQLITE_PRAGMA, "page_count", nil, nil, .apply, true),
            (SQLITE_PRAGMA, "table_info", "t", nil, .apply, false),
            (SQLITE_PRAGMA, "integrity_check", "10", nil, .read, false),
          ] as [(Int32, String?, String?, String?, ConnectionRole, Bool)])
    func authorizerTable(action: Int32, arg1: String?, arg2: String?, database: String?, role: ConnectionRole, refused: Bool) {
        let reason = Authorizer.refusal(action: action, arg1: arg1, arg2: arg2, database: database, role: role)
        #expect((reason != nil) == refused, "\(action) \(arg1 ?? "-") \(arg2 ?? "-") \(role): \(reason ?? "allowed")")
    }

    @Test("writes that would reach CairnDB's bookkeeping, escape the log or differ by node are refused, and the replica goes on",
          arguments: [
            ("PRAGMA application_id=5", "reserved for CairnDB"),
            ("INSERT INTO t SELECT application_id FROM pragma_application_id", "reserved for CairnDB"),
            ("ALTER TABLE _cairn_reset RENAME TO x", "reserved for CairnDB"),
            ("ALTER TABLE temp._cairn_reset ADD COLUMN y", "reserved for CairnDB"),
            ("CREATE TRIGGER tr AFTER INSERT ON _cairn_reset BEGIN SELECT 1; END", "TEMP tables"),
            ("CREATE INDEX i ON _cairn_reset(x)", "TEMP tables"),
            ("DROP TABLE temp._cairn_reset", "TEMP tables"),
            ("INSERT INTO _cairn_reset VALUES (1)", "reserved for CairnDB"),
            ("DELETE FROM _cairn_reset", "reserved for CairnDB"),
            ("INSERT INTO t SELECT x FROM _cairn_reset", "reserved for CairnDB"),
            ("CREATE TABLE sqlite_cairn_meta(a)", "reserved for internal use"),
            ("CREATE TABLE _cairn_meta(key, value)", "reserved for CairnDB"),
            ("CREATE VIEW _cairn_v AS SELECT 1", "reserved for CairnDB"),
            ("CREATE TABLE _cairn_t(a)", "reserved for CairnDB"),
            ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer() is not allowed"),
            ("SELECT fts3_tokenizer('simple', x'0000000000000000')", "fts3_tokenizer() is not allowed"),
            ("CREATE TEMP TABLE tt(a)", "TEMP tables"),
            ("CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END", "TEMP tables"),
            ("CREATE TEMP VIEW tv AS SELECT 1", "TEMP tables"),
            ("INSERT INTO t SELECT page_count FROM pragma_page_count()", "PRAGMA page_count is not allowed in a write"),
            ("INSERT INTO t SELECT freelist_count FROM pragma_freelist_count()", "PRAGMA freelist_count is not allowed in a write"),
            ("INSERT INTO t SELECT count(*) FROM dbstat", "dbstat is not allowed in a write"),
            ("INSERT INTO t SELECT count(*) FROM sqlite_stmt", "sqlite_stmt is not allowed in a write"),
            ("INSERT INTO t VALUES (sqlite_version())", "sqlite_version() is not allowed in a write"),
            ("INSERT INTO t VALUES (sqlite_source_id())", "sqlite_source_id() is not allowed in a write"),
            ("INSERT INTO t SELECT sqlite_compileoption_get(0)", "sqlite_compileoption_get() is not allowed in a write"),
            ("PRAGMA foreign_keys=ON", "PRAGMA foreign_keys cannot be changed"),
            ("PRAGMA recursive_triggers=1", "PRAGMA recursive_triggers cannot be changed"),
            ("PRAGMA defer_foreign_keys=ON", "PRAGMA defer_foreign_keys cannot be changed"),
            ("PRAGMA compile_options", "PRAGMA compile_options is not allowed in a write"),
            ("PRAGMA integrity_check", "PRAGMA integrity_check is not allowed in a write"),
            ("PRAGMA schema_version=5", "PRAGMA schema_version is not allowed"),
            ("PRAGMA query_only=1", "PRAGMA query_only is not allowed"),
            ("PRAGMA case_sensitive_like=1", "PRAGMA case_sensitive_like is not allowed"),
            ("CREATE VIRTUAL TABLE v USING dbstat", "virtual tables using dbstat are not allowed"),
            ("UPDATE sqlite_sequence SET seq = 9223372036854775807", "sqlite_sequence is maintained by SQLite"),
            ("INSERT INTO t(rowid, a) VALUES (9223372036854775807, 1)", "rowid 9223372036854775807 is not allowed"),
            ("SELECT randomblob(2000000000)", "exceeds the limit"),
            ("SELECT zeroblob(2000000000)", "exceeds the limit"),
            ("SELECT 1\u{0}; DROP TABLE t", "NUL character"),
            ("INSERT INTO t SELECT name FROM sqlite_master", "sqlite_master is not allowed in a write"),
            ("INSERT INTO t SELECT rootpage FROM sqlite_schema", "sqlite_master is not allowed in a write"),
            ("CREATE TABLE x AS SELECT group_concat(name) AS n FROM sqlite_master", "sqlite_master is not allowed in a write"),
            ("INSERT INTO sqlite_stat1 VALUES ('t', NULL, '1000000')", "maintained by ANALYZE"),
            ("PRAGMA table_list", "its order depends on the node"),
            ("PRAGMA foreign_key_check", "its order depends on the node"),
          ])
    func refusedInWrites(sql: String, reason: String) throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(a)", "CREATE TABLE s(id INTEGER PRIMARY KEY AUTOINCREMENT)",
                                                      "INSERT INTO s DEFAULT VALUES", "ANALYZE"))
        for atomic in [false, true] {
            let r = try sm.apply(index: sm.appliedIndex + 1, command: command(sql, atomic: atomic))
            #expect(r.first?.error?.contains(reason) == true, "\(sql): \(r.first?.error ?? "accepted")")
        }
        // ANALYZE works on its own; inside an atomic request it is refused (a rollback would leave its
        // statistics in one connection's memory only).
        let analyze = try sm.apply(index: sm.appliedIndex + 1, command: command("CREATE INDEX t_a ON t(a)", "ANALYZE"))
        #expect(analyze.allSatisfy { $0.error == nil }, "\(analyze)")
        let atomicAnalyze = try sm.apply(index: sm.appliedIndex + 1, command: command("ANALYZE", atomic: true))
        #expect(atomicAnalyze.first?.error?.contains("cannot be part of an atomic request") == true, "\(atomicAnalyze)")
        let dropIndexed = try sm.apply(index: sm.appliedIndex + 1, command: command("DROP INDEX t_a", "CREATE VIEW v AS SELECT * FROM t", "DROP VIEW v"))
        #expect(dropIndexed.allSatisfy { $0.error == nil }, "\(dropIndexed)")
        // Ordinary schema changes that touch the (empty) temp schema on the way still work.
        let rename = try sm.apply(index: sm.appliedIndex + 1, command: command("ALTER TABLE t RENAME TO t2", "ALTER TABLE t2 RENAME TO t",
                                                                                "ALTER TABLE s RENAME TO s2", "ALTER TABLE s2 RENAME TO s"))
        #expect(rename.allSatisfy { $0.error == nil }, "\(rename)")
        // The replica goes on applying, its settings intact, its bookkeeping where it was.
        let next = try sm.apply(index: sm.appliedIndex + 1, command: command("INSERT INTO t VALUES (42)"))
        #expect(next[0].error == nil)
        #expect(sm.appliedIndex == 8)
        #expect(sm.query(SQLStatement("SELECT count(*) FROM t WHERE a = 42")).rows == [[.integer(1)]])
        #expect(try SQLStateMachine.readMeta(ofFile: tmp.path()).index == 8)
    }

    @Test("CairnDB's bookkeeping is out of sight: sqlite_master lists the user's objects alone, and a client that lists the tables and drops them all succeeds, and the database goes on")
    func listAndDropEverything() throws {
        let tmp = TempDB()
        var sm = try SQLStateMachine(path: tmp.path())
        func objects() -> [String] {
            sm.query(SQLStatement("SELECT name FROM sqlite_master ORDER BY name")).rows.compactMap { row -> String? in
                if case .text(let n) = row[0] { return n } else { return nil }
            }
        }
        #expect(objects() == [], "a new database holds nothing of CairnDB's")
        _ = try sm.apply(index: 1, command: command("CREATE TABLE a(x)", "CREATE TABLE b(id INTEGER PRIMARY KEY AUTOINCREMENT)",
                                                      "CREATE VIEW v AS SELECT * FROM a", "INSERT INTO b DEFAULT VALUES"))
        try sm.applyEmpty(index: 2, confState: ConfState(voters: [1, 2, 3]))
        #expect(objects() == ["a", "b", "sqlite_sequence", "v"])
        for listing in ["SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sqlite_sequence'",
                        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite_%'"] {
            let names = sm.query(SQLStatement(listing)).rows.compactMap { row -> String? in if case .text(let n) = row[0] { return n } else { return nil } }
            #expect(Set(names) == ["a", "b"], "\(names)")
            let drops = names.map { SQLStatement("DROP TABLE \"\($0)\"") }
            let r = try sm.apply(index: sm.appliedIndex + 1, command: SQLCommand(statements: drops + [SQLStatement("DROP VIEW IF EXISTS v")],
                                                                               atomic: true, timestampMillis: 1, randomSeed: 1))
            #expect(r.allSatisfy { $0.error == nil }, "\(r)")
            #expect(objects() == ["sqlite_sequence"])
            _ = try sm.apply(index: sm.appliedIndex + 1, command: command("CREATE TABLE a(x)", "CREATE TABLE b(id INTEGER PRIMARY KEY AUTOINCREMENT)"))
        }
        // The bookkeeping holds across a reopen and a snapshot install, still out of sight.
        let applied = sm.appliedIndex
        sm.close()
        sm = try SQLStateMachine(path: tmp.path())
        #expect(sm.appliedIndex == applied && sm.confState == ConfState(voters: [1, 2, 3]))
        #expect(try SQLStateMachine.readMeta(ofFile: tmp.path()).index == applied)
        let other = try SQLStateMachine(path: tmp.path("other.sqlite"))
        _ = try SQLStateMachine.writeSnapshot(of: sm.path, to: tmp.path("snap.sqlite"))
        try other.install(snapshotFile: tmp.path("snap.sqlite"))
        #expect(other.appliedIndex == applied && other.confState == ConfState(voters: [1, 2, 3]))
        #expect(other.query(SQLStatement("SELECT name FROM sqlite_master ORDER BY name")).rows == [[.text("a")], [.text("b")], [.text("sqlite_sequence")]])
        // A user's backup carries nothing of CairnDB's either, not even the header marker.
        try SQLStateMachine.writeBackup(of: sm.path, to: tmp.path("backup.sqlite"))
        let backup = try RawDatabase(path: tmp.path("backup.sqlite"), readOnly: true)
        #expect(try backup.int64("SELECT count(*) FROM sqlite_master WHERE name NOT IN ('a', 'b', 'sqlite_sequence')") == 0)
        #expect(try backup.int64("PRAGMA application_id") == 0)
    }

    @Test("a database of an earlier version, with its bookkeeping in a table of either earlier name, opens with the bookkeeping moved out of sight, its pages freed, the data intact",
          arguments: ["_cairn_meta", "sqlite_cairn_meta"])
    func earlierVersionsMigrate(table: String) throws {
        let tmp = TempDB()
        var db: OpaquePointer?
        sqlite3_open(tmp.path(), &db)
        let conf = ConfState(voters: [1, 2], learners: [3]).encoded().map { String(format: "%02x", $0) }.joined()
        let sql = """
            PRAGMA journal_mode=WAL; PRAGMA writable_schema=ON; CREATE TABLE \(table)(key TEXT PRIMARY KEY, value); PRAGMA writable_schema=OFF;
            INSERT INTO \(table) VALUES ('applied_index', 4294967301), ('conf_state', X'\(conf)');
            CREATE TABLE kept(x); INSERT INTO kept VALUES (1)
            """
        #expect(sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK)
        sqlite3_close(db)
        let sm = try SQLStateMachine(path: tmp.path())
        #expect(sm.appliedIndex == 4_294_967_301 && sm.confState == ConfState(voters: [1, 2], learners: [3]))
        #expect(sm.query(SQLStatement("SELECT name FROM sqlite_master")).rows == [[.text("kept")]])
        #expect(sm.query(SQLStatement("PRAGMA integrity_check")).rows == [[.text("ok")]])
        _ = try sm.apply(index: sm.appliedIndex + 1, command: command("INSERT INTO kept VALUES (2)"))
        sm.close()
        let reopened = try SQLStateMachine(path: tmp.path())
        #expect(reopened.appliedIndex == 4_294_967_302 && reopened.confState == ConfState(voters: [1, 2], learners: [3]))
        #expect(reopened.query(SQLStatement("SELECT count(*) FROM kept")).rows == [[.integer(2)]])
        reopened.close()
        // Without its sidecar, the file is refused, not guessed at.
        try FileManager.default.removeItem(atPath: tmp.path() + "-cairn")
        #expect(throws: (any Error).self) { try SQLStateMachine(path: tmp.path()) }
    }

    @Test("a runaway write stops at its step budget on every replica alike; the entry still applies and the replica goes on")
    func stepBudget() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(x INTEGER)", "CREATE TABLE big(x INTEGER, y TEXT)"))
        let forever = "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c"
        for atomic in [false, true] {
            let started = Date()
            let r = try sm.apply(batch: [
                (sm.appliedIndex + 1, .command(command("INSERT INTO t VALUES (1)"))),
                (sm.appliedIndex + 2, .command(command("INSERT INTO t VALUES (2)", forever, "INSERT INTO t VALUES (3)", atomic: atomic))),
                (sm.appliedIndex + 3, .command(command("INSERT INTO t VALUES (4)"))),
            ])
            #expect(r[1][1].error?.contains("exceeded its budget of \(SQLiteLimits.maxStatementSteps) steps") == true, "\(r)")
            let rows = sm.query(SQLStatement("SELECT x FROM t ORDER BY x")).rows.map { $0[0] }
            #expect(rows == (atomic ? [1, 4] : [1, 2, 3, 4]).map { SQLValue.integer($0) }, "atomic \(atomic): \(rows)")
            print("step budget: a runaway statement was stopped after \(String(format: "%.2f", Date().timeIntervalSince(started))) s of apply")
            _ = try sm.apply(index: sm.appliedIndex + 1, command: command("DELETE FROM t"))
        }
        // Legitimate bulk work passes: a 100,000-row INSERT ... SELECT with an index to maintain.
        let bulk = try sm.apply(index: sm.appliedIndex + 1, command: command(
            "CREATE INDEX big_y ON big(y)",
            "INSERT INTO big WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000) SELECT x, printf('row %d', x) FROM c"))
        #expect(bulk.map(\.error) == [nil, nil], "\(bulk)")
        #expect(bulk[1].rowsAffected == 100_000)
    }

    @Test("changes(), total_changes() and last_insert_rowid() in a write depend on the entry alone")
    func connectionCounters() throws {
        let tmp = TempDB()
        let counters = "INSERT INTO log VALUES (changes(), total_changes(), last_insert_rowid())"
        let entries: [SQLCommand] = [
            command("CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "CREATE TABLE log(c, tc, lir)"),
            command(counters),
            command("INSERT INTO t(v) VALUES (1), (2), (3)", counters),
            command("UPDATE t SET v = v + 1", counters),
            command(counters),
        ]
        // One replica applies entry by entry with a restart in the middle; the other in one batch.
        let a = try SQLStateMachine(path: tmp.path("a.sqlite"))
        for (i, e) in entries.enumerated() where i < 3 { _ = try a.apply(index: LogIndex(i + 1), command: e) }
        try a.applyEmpty(index: 4, confState: ConfState(voters: [1, 2, 3]))
        a.close()
        let a2 = try SQLStateMachine(path: tmp.path("a.sqlite"))
        let b = try SQLStateMachine(path: tmp.path("b.sqlite"))
        var batch: [(index: LogIndex, change: SQLStateMachine.Change)] = entries.prefix(3).enumerated().map { (LogIndex($0.offset + 1), .command($0.element)) }
        batch.append((4, .empty(ConfState(voters: [1, 2, 3]))))
        _ = try b.apply(batch: batch)
        for (i, e) in entries.enumerated() where i >= 3 {
            _ = try a2.apply(index: LogIndex(i + 2), command: e)
            _ = try b.apply(index: LogIndex(i + 2), command: e)
        }
        let logA = a2.query(SQLStatement("SELECT * FROM log ORDER BY rowid")).rows
        let logB = b.query(SQLStatement("SELECT * FROM log ORDER BY rowid")).rows
        #expect(logA == logB)
        #expect(logA == [[0, 0, 0], [3, 3, 3], [3, 3, 0], [0, 0, 0]].map { $0.map { SQLValue.integer($0) } }, "\(logA)")
        #expect(try a2.reads.digest() == b.reads.digest())
    }

    @Test("the entry's random(), randomblob() and total_changes() work in defaults, views and triggers, with the schema untrusted")
    func replacementsInSchema() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        let r = try sm.apply(index: 1, command: command(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, r DEFAULT (random()), b DEFAULT (randomblob(4)))",
            "CREATE TABLE log(n, r)",
            "CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log VALUES (total_changes(), random()); END",
            "CREATE VIEW v AS SELECT id, random() AS x FROM t",
            "INSERT INTO t(id) VALUES (1), (2)",
            "INSERT INTO log SELECT id, x FROM v"))
        #expect(r.allSatisfy { $0.error == nil }, "\(r)")
        #expect(sm.query(SQLStatement("SELECT count(*) FROM log")).rows == [[.integer(4)]])
    }

    @Test("local time is UTC in a write, whatever the node's zone")
    func localTime() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        let r = try sm.apply(index: 1, command: command("CREATE TABLE t(a, b)", "INSERT INTO t VALUES (datetime('now', 'localtime'), datetime('now'))"))
        #expect(r.map(\.error) == [nil, nil])
        let row = sm.query(SQLStatement("SELECT a, b FROM t")).rows
        #expect(row == [[.text("2026-09-21 14:13:20"), .text("2026-09-21 14:13:20")]])
    }

    @Test("queries run on connections of their own: a setting a query tries cannot reach the apply path")
    func readsAreSealed() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE p(id INTEGER PRIMARY KEY)", "CREATE TABLE c(p REFERENCES p(id))"))
        for (sql, reason) in [
            ("PRAGMA foreign_keys=ON", "cannot be set"),
            ("PRAGMA case_sensitive_like=ON", "not allowed"),
            ("PRAGMA journal_mode=DELETE", "cannot be set"),
            ("PRAGMA user_version=3", "set by a write"),
            ("CREATE TEMP TABLE tt(a)", "TEMP tables"),
            ("BEGIN", "transaction statements are not allowed"),
            ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer() is not allowed"),
            ("PRAGMA application_id", "reserved for CairnDB"),
            ("SELECT * FROM pragma_application_id", "reserved for CairnDB"),
            ("INSERT INTO p VALUES (1)", "attempt to change database via query operation"),
        ] {
            let r = sm.query(SQLStatement(sql))
            #expect(r.error?.contains(reason) == true, "\(sql): \(r.error ?? "accepted")")
        }
        // Foreign keys stay off on the apply connection (SQLite's and rqlite's default) whatever a query did.
        let w = try sm.apply(index: 2, command: command("INSERT INTO c VALUES (99)"))
        #expect(w[0].error == nil)
        // What client libraries send on connect, and what a query may read about the node, works.
        for sql in ["PRAGMA read_uncommitted", "PRAGMA foreign_keys", "PRAGMA table_info(c)", "PRAGMA index_list(c)",
                    "PRAGMA foreign_key_list(c)", "PRAGMA page_count", "PRAGMA compile_options",
                    "PRAGMA integrity_check", "SELECT sqlite_version()", "SELECT count(*) FROM dbstat", "PRAGMA user_version"] {
            let r = sm.query(SQLStatement(sql))
            #expect(r.error == nil, "\(sql): \(r.error ?? "")")
        }
        #expect(sm.query(SQLStatement("PRAGMA foreign_keys")).rows == [[.integer(0)]])
        #expect(sm.query(SQLStatement("PRAGMA table_info(c)")).rows.count == 1)
    }

    @Test("a slow query is interrupted at its deadline, and writes apply meanwhile")
    func slowQueries() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE t(x)"))
        let done = DispatchSemaphore(value: 0)
        let reads = sm.reads
        let started = Date()
        nonisolated(unsafe) var slow = StatementResult()
        Thread.detachNewThread {
            slow = reads.query([SQLStatement("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c")],
                               timeoutNanos: 1_500_000_000)[0]
            done.signal()
        }
        Thread.sleep(forTimeInterval: 0.2)
        // While the query runs, writes apply and other queries are answered.
        for i in 0..<20 {
            let r = try sm.apply(index: sm.appliedIndex + 1, command: command("INSERT INTO t VALUES (\(i))"))
            #expect(r[0].error == nil)
        }
        #expect(sm.query(SQLStatement("SELECT count(*) FROM t")).rows == [[.integer(20)]])
        #expect(Date().timeIntervalSince(started) < 1.0, "writes waited for the slow query")
        done.wait()
        #expect(slow.error == "query timed out (db_timeout)")
    }

    @Test("a query whose result would exceed the limit fails, naming it, instead of taking the node's memory")
    func resultLimit() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        _ = try sm.apply(index: 1, command: command("CREATE TABLE big(b BLOB)",
            "INSERT INTO big WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 80) SELECT zeroblob(1000000) FROM c"))
        let all = sm.query(SQLStatement("SELECT b FROM big"))
        #expect(all.error == "the result exceeds the limit of \(SQLiteLimits.maxResultBytes) bytes; select fewer rows or columns (LIMIT, OFFSET)")
        #expect(sm.query(SQLStatement("SELECT b FROM big LIMIT 60")).rows.count == 60)
        #expect(sm.query(SQLStatement("SELECT length(b) FROM big")).rows.count == 80)
    }

    @Test("NUL inside text parameters is kept; inside SQL text it is refused, never truncated")
    func nulCharacters() throws {
        let tmp = TempDB()
        let sm = try SQLStateMachine(path: tmp.path())
        let cmd = SQLCommand(statements: [SQLStatement("CREATE TABLE t(a TEXT)"), SQLStatement("INSERT INTO t VALUES (?)", [.text("a\u{0}b")]),
                                          SQLStatement("INSERT INTO t VALUES ('x\u{0}y')")],
                             timestampMillis: 1, randomSeed: 1)
        let r = try sm.apply(index: 1, command: cmd)
        #expect(r[1].error == nil)
        #expect(r[2].error?.contains("NUL character") == true)
        #expect(sm.query(SQLStatement("SELECT a, length(CAST(a AS BLOB)) FROM t")).rows == [[.text("a\u{0}b"), .integer(3)]])
        #expect(sm.query(SQLStatement("SELECT 1\u{0}")).error?.contains("NUL character") == true)
    }
}

@Suite("SQLite state machine: consistency checks")
struct ConsistencyCheckTests {
    private func entry(_ sql: String) -> SQLCommand {
        SQLCommand(statements: [SQLStatement(sql)], timestampMillis: 1, randomSeed: 1)
    }

    @Test("a check entry takes each replica's digest at its index; the leader's digest, carried by the next check, verifies or flags each replica")
    func checks() throws {
        let tmp = TempDB()
        let replicas = try (0..<3).map { try SQLStateMachine(path: tmp.path("r\($0).sqlite")) }
        for r in replicas {
            _ = try r.apply(batch: [(1, .command(entry("CREATE TABLE t(a)"))), (2, .command(entry("INSERT INTO t VALUES (1)"))),
                                    (3, .command(.checkConsistency(expected: nil))), (4, .command(entry("INSERT INTO t VALUES (2)")))])
        }
        let leaderDigest = try #require(replicas[0].consistency.digest(at: 3))
        #expect(leaderDigest.rows == 1, "the digest is of entry 3, not of the batch's end")
        #expect(replicas.allSatisfy { $0.consistency.digest(at: 3) == leaderDigest })
        // One replica diverges on purpose; the next round of checks finds it, and only it.
        try replicas[2].divergeForTesting("UPDATE t SET a = 99 WHERE a = 2")
        for r in replicas {
            _ = try r.apply(batch: [(5, .command(.checkConsistency(expected: .init(index: 3, hash: leaderDigest.hash))))])
        }
        let second = try #require(replicas[0].consistency.digest(at: 5))
        for r in replicas {
            _ = try r.apply(batch: [(6, .command(.checkConsistency(expected: .init(index: 5, hash: second.hash))))])
        }
        #expect(replicas[0].consistency.current.verifiedIndex == 5 && replicas[0].consistency.current.mismatch == nil)
        #expect(replicas[1].consistency.current.verifiedIndex == 5 && replicas[1].consistency.current.mismatch == nil)
        let m = try #require(replicas[2].consistency.current.mismatch)
        #expect(m.index == 5 && m.leader == second.hash && m.mine != second.hash)
        #expect(replicas[2].consistency.current.verifiedIndex == 3)
    }
}
