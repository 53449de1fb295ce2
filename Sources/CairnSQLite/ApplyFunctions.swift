import CSQLite3
import Foundation

extension SQLiteConnection {
    /// The apply connection's replacements for functions whose results would otherwise depend on this
    /// connection's history (restarts, batch boundaries, CairnDB's own writes): `random()` and
    /// `randomblob()` draw from the entry's seed; `total_changes()` counts within the entry.
    /// (`changes()` and `last_insert_rowid()` are reset at the start of every entry.)
    func installApplyFunctions() {
        // Innocuous, as SQLite's own are: usable in triggers, views and defaults with an untrusted schema.
        let deterministic = SQLITE_UTF8 | SQLITE_INNOCUOUS
        sqlite3_create_function_v2(db, "random", 0, deterministic, contextPointer, { ctx, _, _ in
            let context = Unmanaged<ConnectionContext>.fromOpaque(sqlite3_user_data(ctx)!).takeUnretainedValue()
            if context.random != nil {
                sqlite3_result_int64(ctx, Int64(bitPattern: context.random!.next()))
            } else {
                var v: Int64 = 0
                sqlite3_randomness(8, &v)
                sqlite3_result_int64(ctx, v)
            }
        }, nil, nil, nil)
        sqlite3_create_function_v2(db, "randomblob", 1, deterministic, contextPointer, { ctx, _, argv in
            let context = Unmanaged<ConnectionContext>.fromOpaque(sqlite3_user_data(ctx)!).takeUnretainedValue()
            let requested = sqlite3_value_int64(argv![0])
            guard requested <= Int64(SQLiteLimits.maxValueBytes) else { return sqlite3_result_error_toobig(ctx) }
            let n = Int(max(1, requested))
            var bytes = [UInt8](repeating: 0, count: n)
            if context.random != nil {
                bytes.withUnsafeMutableBytes { buffer in
                    var i = 0
                    while i < n {
                        var word = context.random!.next()
                        let take = min(8, n - i)
                        withUnsafeBytes(of: &word) { w in
                            for k in 0..<take { buffer[i + k] = w[k] }
                        }
                        i += take
                    }
                }
            } else {
                sqlite3_randomness(Int32(n), &bytes)
            }
            sqlite3_result_blob(ctx, bytes, Int32(n), transientDestructor)
        }, nil, nil, nil)
        sqlite3_create_function_v2(db, "total_changes", 0, deterministic, contextPointer, { ctx, _, _ in
            let context = Unmanaged<ConnectionContext>.fromOpaque(sqlite3_user_data(ctx)!).takeUnretainedValue()
            sqlite3_result_int64(ctx, sqlite3_total_changes64(sqlite3_context_db_handle(ctx)) - context.entryTotalChangesBase)
        }, nil, nil, nil)
    }
}
