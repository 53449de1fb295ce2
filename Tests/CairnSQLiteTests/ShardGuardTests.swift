import CairnRaft
import Testing
@testable import CairnSQLite

@Suite struct ShardGuardTests {
    private func entry(_ sql: [String], guard spec: ShardGuard? = nil) -> SQLCommand {
        var c = SQLCommand(statements: sql.map { SQLStatement($0) }, atomic: spec != nil, timestampMillis: 1_790_000_000_000, randomSeed: 1)
        c.shardGuard = spec
        return c
    }

    /// The key 1's slot, and an arc that holds it and one that does not.
    private let slot = SlotHash.slot(of: [.integer(1)])

    @Test("a shard refuses rows whose key belongs to another shard, on insert and on a key change; the guard travels in the entry and clients cannot drop it")
    func refusesRowsOfOtherShards() throws {
        let tmp = TempDB()
        var sm = try SQLStateMachine(path: tmp.path())
        let spec = ShardGuard(table: "orders", keyColumns: ["customer"], lo: slot, hi: slot + 1)
        // Through the wire format, as a follower gets it.
        let decoded = SQLCommand(decoding: entry(["CREATE TABLE orders (customer INTEGER NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (customer, id))"],
                                                guard: spec).encoded())
        #expect(decoded?.shardGuard == spec)
        #expect(try sm.apply(index: 1, command: decoded!)[0].error == nil)
        // '1' is stored as 1 by the INTEGER column: it belongs here.
        #expect(try sm.apply(index: 2, command: entry(["INSERT INTO orders VALUES ('1', 10)"]))[0].error == nil)
        let wrong = try sm.apply(index: 3, command: entry(["INSERT INTO orders VALUES (2, 10)"]))[0]
        #expect(wrong.error?.contains(ShardGuard.wrongShard) == true)
        let moved = try sm.apply(index: 4, command: entry(["UPDATE orders SET customer = 2 WHERE id = 10"]))[0]
        #expect(moved.error?.contains(ShardGuard.wrongShard) == true)
        #expect(try sm.apply(index: 5, command: entry(["UPDATE orders SET id = 11 WHERE customer = 1"]))[0].error == nil)
        let dropped = try sm.apply(index: 6, command: entry(["DROP TRIGGER _cairn_guard_insert_orders"]))[0]
        #expect(dropped.error?.contains("reserved") == true)
        #expect(sm.query(SQLStatement("SELECT customer, id FROM orders")).rows == [[.integer(1), .integer(11)]])
        sm.close()
        // A restarted replica keeps refusing (the triggers are in the file).
        sm = try SQLStateMachine(path: tmp.path())
        #expect(try sm.apply(index: 7, command: entry(["INSERT INTO orders VALUES (2, 12)"]))[0].error?.contains(ShardGuard.wrongShard) == true)
    }

    @Test func resultsCrossTheWireUnchanged() {
        var a = StatementResult()
        a.columns = ["x", "y"]
        a.types = ["INTEGER", ""]
        a.rows = [[.integer(1), .text("é")], [.null, .blob([0, 255])], [.real(2.5), .text("")]]
        a.rowsAffected = 3
        a.lastInsertID = -7
        let b = StatementResult(error: "no such table: t")
        #expect(ResultCoding.decode(ResultCoding.encode([a, b, StatementResult()])) == [a, b, StatementResult()])
        #expect(ResultCoding.decode(Array(ResultCoding.encode([a]).dropLast())) == nil)
        #expect(ResultCoding.decode([1, 255, 255, 255, 255]) == nil)
    }
}
