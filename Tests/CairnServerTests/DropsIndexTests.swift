import Testing
@testable import CairnServer

/// Every statement of every write is asked whether it drops an index (the router then reads the
/// committed catalog to find the index's table): the byte scan in front of the lexer must never say no
/// to one that does.
@Suite struct DropsIndexTests {
    @Test("DROP INDEX in any case, after comments and spaces, is recognised; other statements are not")
    func recognised() {
        for sql in ["DROP INDEX i", "drop index if exists i", "  /* x */ Drop InDeX i;", "-- a\nDROP INDEX i", "DROP INDEX iindex"] {
            #expect(API.dropsIndex(sql), "\(sql)")
        }
        for sql in ["INSERT INTO t VALUES(1)", "CREATE INDEX i ON t(x)", "SELECT 'inde' || 'x'", "DROP TABLE indexes", "iindexx"] {
            #expect(!API.dropsIndex(sql), "\(sql)")
        }
        #expect(API.mentionsIndex("iindex") && API.mentionsIndex("INDEX") && API.mentionsIndex("xInDeXy"))
        #expect(!API.mentionsIndex("indx") && !API.mentionsIndex("inde") && !API.mentionsIndex(""))
    }
}
