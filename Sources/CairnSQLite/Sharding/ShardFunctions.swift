import CSQLite3

/// SQL functions a shard's own statements use: `cairn_slot(k1, k2, ...)` is the slot of a shard key
/// (`SlotHash`) and `cairn_range(k, p1, ...)` its range among split points (`RangeSplits`), so a
/// shard's guard and a split's deletes judge rows exactly as the router does.
enum ShardFunctions {
    /// - Parameter context: an apply connection's: the slots its guards compute while a client's
    ///   entry applies are sampled for splits by load (`SlotSample`). Never changes a result.
    static func install(on db: OpaquePointer, context: UnsafeMutableRawPointer? = nil) {
        // Deterministic and innocuous: usable in triggers and indexes with an untrusted schema.
        let flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS
        sqlite3_create_function_v2(db, "cairn_slot", -1, flags, context, { ctx, argc, argv in
            guard argc > 0, let argv else {
                sqlite3_result_error(ctx, "cairn_slot() takes the shard key's values", -1)
                return
            }
            var key: [SQLValue] = []
            key.reserveCapacity(Int(argc))
            for i in 0..<Int(argc) { key.append(ShardFunctions.value(argv[i])) }
            let slot = SlotHash.slot(of: key)
            if let app = sqlite3_user_data(ctx) {
                // A client's entry applying (not CairnDB's own statements, such as a split's deletes).
                let context = Unmanaged<ConnectionContext>.fromOpaque(app).takeUnretainedValue()
                if context.random != nil && !context.internalAccess { context.slotSample?.record(slot) }
            }
            sqlite3_result_int64(ctx, Int64(slot))
        }, nil, nil, nil)
        // cairn_range(key, p1, ..., pk): the range of a range-sharded table's key among its split
        // points (`RangeSplits`), compared as SQLite orders stored values.
        sqlite3_create_function_v2(db, "cairn_range", -1, flags, nil, { ctx, argc, argv in
            guard argc > 0, let argv else {
                sqlite3_result_error(ctx, "cairn_range() takes a key and the split points", -1)
                return
            }
            let key = ShardFunctions.value(argv[0])
            var range: Int64 = 0
            for i in 1..<Int(argc) where SQLiteOrder.compare(ShardFunctions.value(argv[i]), key) <= 0 { range += 1 }
            sqlite3_result_int64(ctx, range)
        }, nil, nil, nil)
    }

    static func value(_ v: OpaquePointer?) -> SQLValue {
        switch sqlite3_value_type(v) {
        case SQLITE_INTEGER: return .integer(sqlite3_value_int64(v))
        case SQLITE_FLOAT: return .real(sqlite3_value_double(v))
        case SQLITE_TEXT:
            let n = Int(sqlite3_value_bytes(v))
            guard let p = sqlite3_value_text(v) else { return .text("") }
            return .text(String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self))
        case SQLITE_BLOB:
            let n = Int(sqlite3_value_bytes(v))
            guard n > 0, let p = sqlite3_value_blob(v) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default: return .null
        }
    }
}

extension SQLiteConnection {
    /// Creates (or replaces) a shard's guard triggers: CairnDB's own statements, past the authorizer
    /// that keeps `_cairn` names from clients. Returns why it failed, or nil.
    func installShardGuard(_ spec: ShardGuard) -> String? {
        // Restored, not cleared: these nest (a statement of CairnDB's own may load the schema, which runs more).
        let wasInternal = context.internalAccess
        context.internalAccess = true
        defer { context.internalAccess = wasInternal }
        context.schemaMayBeStale = true
        guard let statements = spec.statements else { return "the shard guard on \(spec.table) has a split point no SQL literal spells" }
        for sql in statements {
            var message: UnsafeMutablePointer<CChar>?
            if sqlite3_exec(db, sql, nil, nil, &message) != SQLITE_OK {
                let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(db))
                sqlite3_free(message)
                return "installing the shard guard on \(spec.table) failed: \(text)"
            }
        }
        return nil
    }
}
