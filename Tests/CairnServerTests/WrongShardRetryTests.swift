import CairnSQLite
import Testing
@testable import CairnServer

/// A shard refuses rows that are not its own; the router plans again with the committed shard map and
/// sends the write again, but only when the write took effect nowhere: statements of a non-atomic
/// request that committed before the refused one must not run twice.
@Suite struct WrongShardRetryTests {
    let refusal = StatementResult(error: "\(ShardGuard.wrongShard): the key belongs to another shard")
    var done: StatementResult {
        var r = StatementResult()
        r.rowsAffected = 1
        return r
    }

    @Test("sent again when the whole command was refused, or the write was atomic; answered as it is when others of a non-atomic request committed")
    func retriedOnlyWhenNothingCommitted() {
        #expect(API.refusedWholly([refusal, refusal], atomic: false) != nil)
        #expect(API.refusedWholly([done, refusal], atomic: true) != nil)
        #expect(API.refusedWholly([done, refusal], atomic: false) == nil)
        #expect(API.refusedWholly([done, StatementResult(error: "UNIQUE constraint failed: t.k")], atomic: true) == nil)
        #expect(API.refusedWholly([done], atomic: false) == nil)
    }
}
