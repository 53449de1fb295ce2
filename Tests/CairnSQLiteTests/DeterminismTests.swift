import Foundation
import Testing
import CairnRaft
@testable import CairnSQLite

/// Writes drawn at random from ordinary DML and DDL, triggers, defaults, constraints and conflicts,
/// mixed with every known hazard to determinism (connection counters, statistics tables and pragmas,
/// time zones, the largest rowid, TEMP objects, node-dependent functions, a runaway statement).
struct WriteGenerator {
    var rng: SplitMix64
    var now: Int64 = 1_790_000_000_000

    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    mutating func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
    mutating func int(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
    mutating func chance(_ percent: Int) -> Bool { int(100) < percent }

    static let schema = [
        "CREATE TABLE IF NOT EXISTS t1(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, w TEXT DEFAULT CURRENT_TIMESTAMP, r DEFAULT (random()), u TEXT UNIQUE, CHECK (v >= 0))",
        "CREATE TABLE IF NOT EXISTS t2(k TEXT PRIMARY KEY, n INTEGER, b BLOB) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS seq(id INTEGER PRIMARY KEY AUTOINCREMENT, note TEXT)",
        "CREATE TABLE IF NOT EXISTS audit(id, c, tc, lir, r, at)",
        "CREATE TRIGGER IF NOT EXISTS t1_audit AFTER INSERT ON t1 BEGIN INSERT INTO audit VALUES (new.id, changes(), total_changes(), last_insert_rowid(), random(), datetime('now', 'localtime')); END",
        "CREATE TRIGGER IF NOT EXISTS t1_guard BEFORE UPDATE ON t1 WHEN new.v = 13 BEGIN SELECT RAISE(ROLLBACK, 'thirteen'); END",
        "CREATE VIEW IF NOT EXISTS t1_view AS SELECT id, v * 2 AS v2 FROM t1",
    ]

    mutating func statement() -> String {
        let id = int(40), v = int(30)
        switch int(40) {
        case 0: return pick(Self.schema)
        case 1: return "CREATE INDEX IF NOT EXISTS t1_v ON t1(v)"
        case 2: return "DROP INDEX IF EXISTS t1_v"
        case 3: return chance(30) ? "DROP TABLE IF EXISTS t2" : "CREATE TABLE IF NOT EXISTS t2(k TEXT PRIMARY KEY, n INTEGER, b BLOB) WITHOUT ROWID"
        case 4: return pick(["ALTER TABLE t1 ADD COLUMN extra\(int(3)) DEFAULT 'x'", "ALTER TABLE t2 RENAME TO t2_renamed",
                             "ALTER TABLE t2_renamed RENAME TO t2", "ALTER TABLE seq RENAME COLUMN note TO remark",
                             "ALTER TABLE seq RENAME COLUMN remark TO note"])
        case 5...10: return "INSERT INTO t1(id, v, u) VALUES (\(id), \(v), \(chance(50) ? "'u\(int(10))'" : "NULL"))"
        case 11: return "INSERT INTO t1(v) VALUES (\(v)), (\(v + 1))"
        case 12: return "INSERT OR REPLACE INTO t1(id, v) VALUES (\(id), \(v))"
        case 13: return "INSERT OR ROLLBACK INTO t1(id, v) VALUES (\(id), \(v))"
        case 14: return "INSERT OR IGNORE INTO t1(id, v) VALUES (\(id), -1)"
        case 15...17: return "UPDATE t1 SET v = \(v), w = datetime('now', '+\(int(9)) days') WHERE id % 7 = \(int(7))"
        case 18: return "DELETE FROM t1 WHERE v > \(v)"
        case 19: return "INSERT INTO t2 VALUES ('k\(id)', changes(), randomblob(\(int(16))))"
        case 20: return "INSERT OR REPLACE INTO t2 VALUES ('k\(id)', total_changes(), NULL)"
        case 21: return "INSERT INTO seq(note) VALUES (last_insert_rowid() || ':' || changes())"
        case 22: return "DELETE FROM seq WHERE id % 3 = 0"
        case 23: return "DELETE FROM sqlite_sequence"
        case 24: return "INSERT INTO audit SELECT count(*), sum(v), total_changes(), changes(), last_insert_rowid(), datetime('now', 'localtime') FROM t1"
        case 25: return "UPDATE t1 SET v = 13 WHERE id = \(id)"
        case 26: return "INSERT INTO audit SELECT id, v2, 0, 0, 0, 0 FROM t1_view ORDER BY id LIMIT 3"
        case 27: return "INSERT INTO t1(id, v) VALUES (9223372036854775807, 1)"
        case 28: return "INSERT INTO t1(v) VALUES (\(v))"
        // The hazards, each refused alike everywhere.
        case 29: return pick([
            "INSERT INTO audit SELECT page_count, 0, 0, 0, 0, 0 FROM pragma_page_count()",
            "INSERT INTO audit SELECT count(*), 0, 0, 0, 0, 0 FROM dbstat",
            "INSERT INTO audit SELECT count(*), 0, 0, 0, 0, 0 FROM sqlite_stmt",
            "INSERT INTO audit VALUES (sqlite_version(), 0, 0, 0, 0, 0)",
            "INSERT INTO audit SELECT freelist_count, 0, 0, 0, 0, 0 FROM pragma_freelist_count()",
        ])
        case 30: return pick(["PRAGMA foreign_keys=ON", "PRAGMA recursive_triggers=ON", "PRAGMA user_version=\(v)",
                              "CREATE TEMP TABLE tmp(a)", "CREATE TEMP TRIGGER tt AFTER INSERT ON t1 BEGIN DELETE FROM t1; END",
                              "INSERT INTO audit SELECT count(*), 0, 0, 0, 0, 0 FROM temp.sqlite_master"])
        case 31: return "INSERT INTO t1(id, v) VALUES (\(id), NULL)"
        case 32: return "INSERT INTO t1(id, v) VALUES (\(id), -5)"
        case 33: return "UPDATE sqlite_sequence SET seq = 9223372036854775807"
        case 34: return "INSERT INTO audit VALUES (hex(randomblob(4)), random(), unixepoch('now'), strftime('%s', 'now', 'localtime'), 0, 0)"
        default: return "INSERT INTO t1(id, v) VALUES (\(id), \(v)) ON CONFLICT(id) DO UPDATE SET v = excluded.v + 1"
        }
    }

    /// A runaway statement, rarely: it costs most of a second on each replica.
    static let runaway = "INSERT INTO audit WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x, 0, 0, 0, 0, 0 FROM c"

    mutating func entry(runaway: Bool) -> SQLCommand {
        now += Int64(int(5000))
        var statements = (0..<(1 + int(4))).map { _ in SQLStatement(statement()) }
        if runaway { statements.insert(SQLStatement(Self.runaway), at: int(statements.count)) }
        return SQLCommand(statements: statements, atomic: chance(30), timestampMillis: now, randomSeed: rng.next())
    }

    /// Reads of every kind, which must not change how a replica applies.
    mutating func read() -> SQLStatement {
        SQLStatement(pick([
            "PRAGMA foreign_keys=ON", "PRAGMA recursive_triggers=ON", "PRAGMA case_sensitive_like=ON", "SELECT * FROM sqlite_stmt",
            "SELECT changes(), total_changes(), last_insert_rowid()", "SELECT * FROM t1 ORDER BY random() LIMIT 3",
            "CREATE TEMP TABLE tmp(a)", "SELECT count(*) FROM dbstat", "PRAGMA table_info(t1)", "SELECT sqlite_version()",
            "SELECT * FROM t1_view", "BEGIN", "PRAGMA read_uncommitted",
        ]))
    }
}

/// One replica in the differential test: applies the shared log with its own batch boundaries,
/// restarts, snapshot installs and reads.
final class Replica {
    let path: String
    var machine: SQLStateMachine
    var results: [LogIndex: [StatementResult]] = [:]
    /// The digest after each batch, by the index it ended at.
    var digests: [LogIndex: ContentDigest] = [:]

    init(path: String) throws {
        self.path = path
        machine = try SQLStateMachine(path: path)
    }

    func restart() throws {
        machine.close()
        machine = try SQLStateMachine(path: path)
    }
}

@Suite("SQLite state machine: determinism")
struct DeterminismTests {
    /// Seeds run by the normal test run; `CAIRN_DETERMINISM_SEEDS` runs more (the long run).
    static var seeds: Int { ProcessInfo.processInfo.environment["CAIRN_DETERMINISM_SEEDS"].flatMap(Int.init) ?? 40 }
    static let entriesPerSeed = 200

    @Test("three replicas with different batch boundaries, reads, restarts and snapshot installs have identical contents after every entry")
    func differential() throws {
        var cases = 0, comparisons = 0, refused = 0
        let started = Date()
        for seed in 1...UInt64(Self.seeds) {
            let (c, k, r) = try Self.run(seed: seed)
            cases += c
            comparisons += k
            refused += r
        }
        print("determinism: \(Self.seeds) seeds, \(cases) generated entries, \(comparisons) digest comparisons, \(refused) statements refused, 0 differences, \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
    }

    /// Runs one seed; returns (entries, digest comparisons, refused statements). Fails the test with the
    /// seed and index of the first difference.
    static func run(seed: UInt64) throws -> (Int, Int, Int) {
        let tmp = TempDB()
        var gen = WriteGenerator(seed: seed)
        let log: [SQLCommand] = (0..<entriesPerSeed).map { i in gen.entry(runaway: seed % 6 == 1 && i == 77) }
        let replicas = try (0..<3).map { try Replica(path: tmp.path("replica\($0).sqlite")) }
        // The first replica applies entry by entry: the reference digest at every index.
        var comparisons = 0
        while replicas.contains(where: { $0.machine.appliedIndex < LogIndex(log.count) }) {
            for (n, r) in replicas.enumerated() {
                let from = r.machine.appliedIndex + 1
                guard from <= LogIndex(log.count) else { continue }
                let size = n == 0 ? 1 : 1 + gen.int(6)
                let to = min(LogIndex(log.count), from + LogIndex(size) - 1)
                let batch = (from...to).map { (index: $0, change: SQLStateMachine.Change.command(log[Int($0) - 1])) }
                let out = try r.machine.apply(batch: batch)
                for (i, res) in zip(from...to, out) { r.results[i] = res }
                let digest = try r.machine.reads.digest()
                #expect(digest.index == to)
                r.digests[to] = digest
                // Between batches: reads of every kind, a restart, or a snapshot of a replica further on.
                for _ in 0..<gen.int(3) { _ = r.machine.reads.query([gen.read()], timeoutNanos: 1_000_000_000) }
                if n > 0 && gen.chance(8) { try r.restart() }
                if n > 0 && gen.chance(4), let ahead = replicas.first(where: { $0.machine.appliedIndex > r.machine.appliedIndex }) {
                    let file = tmp.path("snapshot-\(n).sqlite")
                    _ = try SQLStateMachine.writeSnapshot(of: ahead.path, to: file)
                    try r.machine.install(snapshotFile: file)
                    for i in from...r.machine.appliedIndex { r.results[i] = ahead.results[i] }
                }
            }
        }
        // The reference saw every index.
        for (n, r) in replicas.enumerated().dropFirst() {
            for (index, digest) in r.digests.sorted(by: { $0.key < $1.key }) {
                comparisons += 1
                if digest != replicas[0].digests[index] {
                    Issue.record("seed \(seed): replica \(n) differs from replica 0 after entry \(index) (\(log[Int(index) - 1].statements.map(\.sql)))")
                    return (log.count, comparisons, 0)
                }
            }
        }
        // Every replica gave each statement the same outcome (counts reported by DDL aside: they carry
        // over from the connection's history, as in SQLite and rqlite).
        var refused = 0
        for i in 1...LogIndex(log.count) {
            let mine = replicas[0].results[i]!
            refused += mine.filter { $0.error?.contains("not allowed") == true }.count
            for r in replicas.dropFirst() {
                guard let theirs = r.results[i] else { continue }
                let a = mine.map { [$0.error ?? "", "\($0.rows)"] }, b = theirs.map { [$0.error ?? "", "\($0.rows)"] }
                if a != b {
                    Issue.record("seed \(seed): entry \(i) gave \(b) on one replica and \(a) on another (\(log[Int(i) - 1].statements.map(\.sql)))")
                    return (log.count, comparisons, refused)
                }
            }
        }
        for r in replicas { r.machine.close() }
        return (log.count, comparisons, refused)
    }
}

/// Each write's random seed is what `random()` and `randomblob()` start from on every replica.
@Suite struct CommandSeedTests {
    @Test("no two commands of a process get the same random seed, and seeds are spread over all 64 bits (drawn from the system, many at a time)")
    func seedsDiffer() {
        // Many batches of `CommandSeeds.batch`.
        let seeds = (0..<200_000).map { _ in SQLCommand.now([], atomic: false).randomSeed }
        #expect(Set(seeds).count == seeds.count)
        // Every bit is set in roughly half of them (a counter or a clock would leave the high bits alone).
        for bit in 0..<64 {
            let ones = seeds.count { $0 >> UInt64(bit) & 1 == 1 }
            #expect(abs(ones - seeds.count / 2) < seeds.count / 50, "bit \(bit): \(ones) of \(seeds.count)")
        }
    }

    /// SplitMix64's output function undone (it is a bijection): what made a seed from a counter.
    static func unmix(_ value: UInt64) -> UInt64 {
        func inverse(_ c: UInt64) -> UInt64 {
            var x = c
            for _ in 0..<6 { x = x &* (2 &- c &* x) }
            return x
        }
        var z = value
        z ^= z >> 31 ^ z >> 62
        z = z &* inverse(0x94D0_49BB_1331_11EB)
        z ^= z >> 27 ^ z >> 54
        z = z &* inverse(0xBF58_476D_1CE4_E5B9)
        z ^= z >> 30 ^ z >> 60
        return z
    }

    @Test("a write's seed says nothing of the next one's: seeds are not a sequence one could run forward from a seed a client learns from its own random() values")
    func seedsIndependent() {
        // Sanity: unmix undoes the output function.
        var z: UInt64 = 0x1234_5678_9ABC_DEF0
        let x = z
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        #expect(Self.unmix(z) == x)
        // A SplitMix64 sequence over a counter (what the seeds were for a day) steps by the same gap.
        let seeds = (0..<1_000).map { _ in SQLCommand.now([], atomic: false).randomSeed }
        let gaps = zip(seeds, seeds.dropFirst()).map { Self.unmix($1) &- Self.unmix($0) }
        #expect(Set(gaps).count > 990, "\(Set(gaps).count) distinct gaps")
    }
}
