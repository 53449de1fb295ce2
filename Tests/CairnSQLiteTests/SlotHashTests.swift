import CairnRaft
import Testing
@testable import CairnSQLite

/// The slot of a key is forever: these values are frozen. A change here moves every stored row to
/// another shard, so a failing test means the change is wrong, not the test.
@Suite struct SlotHashTests {
    @Test func xxHash64MatchesTheSpecificationsVectors() {
        // Published XXH64 values (seed 0), and longer inputs checked with the reference implementation.
        #expect(XXHash64.hash(Array("".utf8), seed: 0) == 0xEF46_DB37_51D8_E999)
        #expect(XXHash64.hash(Array("a".utf8), seed: 0) == 0xD24E_C4F1_A98C_6E5B)
        #expect(XXHash64.hash(Array("abc".utf8), seed: 0) == 0x44BC_2CF5_AD77_0999)
        #expect(XXHash64.hash(Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8), seed: 0) == 0x6919_6C1B_3AF0_BFF9)
        #expect(XXHash64.hash((0..<100).map { UInt8($0) }, seed: 0) == 0x6AC1_E580_3216_6597)
    }

    @Test func goldenSlots() {
        let golden: [([SQLValue], Int)] = [
            ([.integer(0)], 41540), ([.integer(1)], 18057), ([.integer(-1)], 58532), ([.integer(42)], 32276),
            ([.integer(.max)], 41495), ([.real(5.0)], 16581), ([.real(2.5)], 22238), ([.text("")], 7725),
            ([.text("hello")], 40687), ([.text("Σ")], 65098), ([.blob([1, 2, 3])], 2843), ([.integer(1), .text("a")], 1422),
        ]
        for (key, slot) in golden { #expect(SlotHash.slot(of: key) == slot, "\(key)") }
    }

    @Test func valuesSQLiteHoldsEqualLandTogether() {
        // 5 and 5.0 are equal in SQLite; -0.0 and 0 too.
        #expect(SlotHash.slot(of: [.real(5.0)]) == SlotHash.slot(of: [.integer(5)]))
        #expect(SlotHash.slot(of: [.real(-0.0)]) == SlotHash.slot(of: [.integer(0)]))
        // After the column's affinity: '5', 5.0 and ' 5 ' in an INTEGER column are stored as 5.
        let integer = Affinity(declaredType: "INTEGER")
        for v: SQLValue in [.text("5"), .real(5.0), .text(" 5 "), .text("5.0"), .text("0.5e1")] {
            #expect(SlotHash.slot(of: [integer.apply(v)]) == SlotHash.slot(of: [.integer(5)]), "\(v)")
        }
        // Not numbers, or not as SQLite reads them: stay text.
        for v: SQLValue in [.text("0x5"), .text("5a"), .text(""), .text("e5")] { #expect(integer.apply(v) == v) }
        let text = Affinity(declaredType: "VARCHAR(20)")
        #expect(text.apply(.integer(5)) == .text("5"))
        #expect(text.apply(.real(1.5), renderReal: RealText.render) == .text("1.5"))
        #expect(text.apply(.real(1e300), renderReal: RealText.render) == .text("1.0e+300"))
        #expect(Affinity(declaredType: "DOUBLE").apply(.text("2")) == .real(2))
        #expect(Affinity(declaredType: "").apply(.text("5")) == .text("5"))
        #expect(Affinity(declaredType: "DECIMAL(10,2)") == .numeric)
    }

    @Test func theGuardFunctionAgreesWithTheRouter() throws {
        let db = try ScratchDatabase()
        try db.exec("CREATE TABLE t (k INTEGER, s TEXT)")
        try db.insert(into: "t", columns: ["k", "s"], rows: [[.text("5"), .integer(7)]])
        let r = db.query(SQLStatement("SELECT cairn_slot(k), cairn_slot(s), cairn_slot(k, s) FROM t"))
        #expect(r.error == nil)
        #expect(r.rows == [[.integer(Int64(SlotHash.slot(of: [.integer(5)]))), .integer(Int64(SlotHash.slot(of: [.text("7")]))),
                            .integer(Int64(SlotHash.slot(of: [.integer(5), .text("7")])))]])
    }

    @Test func aMillionRandomKeysSpreadEvenlyOverSixteenShards() {
        let map = ShardMap.uniform(count: 16)
        var counts = [Int](repeating: 0, count: 16)
        var rng = SplitMix64(seed: 12345)
        let n = 1_000_000
        for i in 0..<n {
            let key: SQLValue = i % 2 == 0 ? .integer(Int64(bitPattern: rng.next())) : .text(String(rng.next(), radix: 36))
            counts[map.shard(of: [key])] += 1
        }
        let mean = Double(n) / 16
        for c in counts { #expect(abs(Double(c) - mean) / mean < 0.01, "\(counts)") }
        // Sequential ids too (the usual key).
        counts = [Int](repeating: 0, count: 16)
        for i in 0..<n { counts[map.shard(of: [.integer(Int64(i))])] += 1 }
        for c in counts { #expect(abs(Double(c) - mean) / mean < 0.01, "\(counts)") }
    }

    @Test func uniformMapsCoverTheRing() {
        for count in [1, 3, 7, 16, 100, 4096] {
            let map = ShardMap.uniform(count: count)
            #expect(map.count == count)
            #expect(map.arcs.first?.lo == 0 && map.arcs.last?.hi == SlotHash.slotCount)
            for slot in stride(from: 0, to: SlotHash.slotCount, by: 97) {
                let shard = map.shard(ofSlot: slot)
                #expect(map.arcs[shard].contains(slot))
                #expect(shard == slot * count / SlotHash.slotCount)
            }
        }
        #expect(ShardMap.uniform(count: 16).arcs[1] == ShardMap.Arc(lo: 4096, hi: 8192))
        #expect(ShardMap(arcs: [.init(lo: 0, hi: 10)]) == nil)
        #expect(ShardMap(arcs: [.init(lo: 0, hi: 10), .init(lo: 11, hi: 65536)]) == nil)
    }
}

