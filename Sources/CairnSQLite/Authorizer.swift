import CSQLite3

/// Which connection a statement is prepared on. The apply connection applies committed entries, and
/// every replica must reach the same bytes from it, so it admits only what is a function of the log.
/// A read connection serves one client's query and is then reused by another client, so it admits no
/// setting that would outlive the request.
enum ConnectionRole: Sendable {
    case apply
    case read
}

/// What a client's SQL may do, judged action by action while SQLite prepares it (SQLite's authorizer).
/// Pure: the C callback in `SQLiteConnection` hands it the action and its arguments.
public enum Authorizer {
    /// Why the authorizer refuses an action, or nil to allow it. The arguments are SQLite's, whose
    /// meaning depends on the action (see the comments on each case); `database` is "main", "temp" or nil.
    /// `duringAlterTable`: the statement being prepared is an ALTER TABLE (SQLite renames the table's
    /// AUTOINCREMENT counter itself, by an UPDATE of sqlite_sequence it also asks about).
    /// `duringSchemaChange`: SQLite has already reported, for the statement being prepared, a change of
    /// the schema (CREATE, DROP, ALTER, ANALYZE, ...: it maintains its statistics itself).
    /// `duringSchemaRewrite`: SQLite is already rewriting its schema table for this statement (an
    /// UPDATE or DELETE of sqlite_master, or an ALTER TABLE), so reads of it that follow are its own,
    /// not the client's (a CREATE TABLE ... AS SELECT reads the client's SELECT before any rewrite).
    /// `inAtomicEntry`: the statement is part of an atomic entry.
    static func refusal(action: Int32, arg1: String?, arg2: String?, database: String?, role: ConnectionRole,
                        duringAlterTable: Bool = false, duringSchemaChange: Bool = false, duringSchemaRewrite: Bool = false,
                        inAtomicEntry: Bool = false) -> String? {
        switch action {
        case SQLITE_ATTACH, SQLITE_DETACH:
            return "ATTACH and DETACH are not allowed: a statement may only use its own database"
        case SQLITE_TRANSACTION, SQLITE_SAVEPOINT:
            return "transaction statements are not allowed: every request is one transaction (send it atomic for all-or-nothing)"
        case SQLITE_PRAGMA:
            // (pragma name, its argument or new value)
            return Pragmas.refusal(name: (arg1 ?? "").lowercased(), argument: arg2, role: role)
        case SQLITE_FUNCTION:
            // (nil, function name)
            return functionRefusal((arg2 ?? "").lowercased(), role: role)
        case SQLITE_READ:
            // (table, column)
            guard let table = arg1 else { return nil }
            if isReserved(table) && !(role == .read && readableState.contains(table.lowercased())) { return reservedMessage }
            if role == .apply {
                if database == "temp" && !isTempSchemaTable(table) { return tempMessage }
                // Its row order and root pages are the file's layout, which a snapshot install changes.
                if isSchemaTable(table) && !duringSchemaRewrite {
                    return "\(table) is not allowed in a write: its row order and root pages differ between replicas' files; send it as a query"
                }
                if nodeLocalTables.contains(table.lowercased()) {
                    return "\(table) is not allowed in a write: it describes this node's file, and every replica must apply a write alike; send it as a query"
                }
            }
            return nil
        case SQLITE_INSERT, SQLITE_UPDATE, SQLITE_DELETE:
            // (table, column for UPDATE)
            guard let table = arg1 else { return nil }
            if isReserved(table) { return reservedMessage }
            // ALTER TABLE ... RENAME rewrites the (empty) temp schema table too.
            if role == .apply && database == "temp" && !isTempSchemaTable(table) { return tempMessage }
            // SQLite keeps AUTOINCREMENT counters there; a counter set to the largest rowid makes the next
            // insert fail as "database or disk is full", which cannot be told from a real full disk.
            if action != SQLITE_DELETE && !duringAlterTable && table.lowercased() == "sqlite_sequence" {
                return "sqlite_sequence is maintained by SQLite: rows may be deleted (to restart a counter), not written"
            }
            // The planner reads statistics into memory only when it loads the schema: written by hand,
            // they would steer one replica's plans and not a restarted one's. ANALYZE writes them.
            if table.lowercased().hasPrefix("sqlite_stat") && !duringSchemaChange {
                return "\(table) is maintained by ANALYZE: run ANALYZE instead of writing it"
            }
            return nil
        case SQLITE_ANALYZE:
            // (table or index, nil). Rolled back inside an atomic entry, it would leave its statistics
            // in this connection's memory and not on disk, where a restarted replica reads them.
            if role == .apply && inAtomicEntry { return "ANALYZE cannot be part of an atomic request: send it in a request of its own" }
            return isReserved(arg1) ? reservedMessage : nil
        case SQLITE_CREATE_TABLE, SQLITE_DROP_TABLE, SQLITE_CREATE_VIEW, SQLITE_DROP_VIEW, SQLITE_REINDEX:
            // (table or view or index, nil)
            return isReserved(arg1) ? reservedMessage : nil
        case SQLITE_CREATE_INDEX, SQLITE_DROP_INDEX, SQLITE_CREATE_TRIGGER, SQLITE_DROP_TRIGGER:
            // (index or trigger, the table it is on)
            return isReserved(arg1) || isReserved(arg2) ? reservedMessage : nil
        case SQLITE_ALTER_TABLE:
            // (database, table)
            return isReserved(arg2) ? reservedMessage : nil
        case SQLITE_CREATE_VTABLE, SQLITE_DROP_VTABLE:
            // (table, module)
            if isReserved(arg1) { return reservedMessage }
            let module = (arg2 ?? "").lowercased()
            guard replicatedModules.contains(module) else {
                return "virtual tables using \(module) are not allowed: only \(replicatedModules.sorted().joined(separator: ", ")) store their rows in the database"
            }
            return nil
        case SQLITE_CREATE_TEMP_TABLE, SQLITE_CREATE_TEMP_INDEX, SQLITE_CREATE_TEMP_TRIGGER, SQLITE_CREATE_TEMP_VIEW,
             SQLITE_DROP_TEMP_TABLE, SQLITE_DROP_TEMP_INDEX, SQLITE_DROP_TEMP_TRIGGER, SQLITE_DROP_TEMP_VIEW:
            return tempMessage
        default:
            return nil
        }
    }

    /// CairnDB's own tables a query may read: the state of transactions across shards, which routers
    /// read with their queries (to wait out a prepared transaction) and to recover stalled ones, and a
    /// shard's map version since its last split (a router checks it at the read's read point).
    static let readableState: Set<String> = ["_cairn_shard_state", "_cairn_split_state", "_cairn_txn", "_cairn_txn_record"]
    static let reservedMessage = "tables named _cairn* and sqlite_cairn* are reserved for CairnDB"
    static let tempMessage = "TEMP tables, views, indexes and triggers are not allowed: they would exist on one node only, and vanish on restart"

    /// Whether `action` changes the schema (SQLite then maintains its statistics itself).
    static func changesSchema(action: Int32, arg1: String?) -> Bool {
        switch action {
        case SQLITE_CREATE_INDEX, SQLITE_CREATE_TABLE, SQLITE_CREATE_TRIGGER, SQLITE_CREATE_VIEW, SQLITE_CREATE_VTABLE,
             SQLITE_DROP_INDEX, SQLITE_DROP_TABLE, SQLITE_DROP_TRIGGER, SQLITE_DROP_VIEW, SQLITE_DROP_VTABLE,
             SQLITE_ALTER_TABLE, SQLITE_ANALYZE, SQLITE_REINDEX:
            return true
        default:
            return rewritesSchema(action: action, arg1: arg1)
        }
    }

    /// Whether `action` is SQLite rewriting its schema table (clients cannot: it is read-only to them).
    static func rewritesSchema(action: Int32, arg1: String?) -> Bool {
        switch action {
        case SQLITE_ALTER_TABLE: return true
        case SQLITE_UPDATE, SQLITE_DELETE: return arg1.map(isSchemaTable) ?? false
        default: return false
        }
    }

    static func isSchemaTable(_ name: String) -> Bool {
        ["sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"].contains(name.lowercased())
    }

    /// The temp schema's own table: always empty here, since TEMP objects are refused.
    static func isTempSchemaTable(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower == "sqlite_temp_master" || lower == "sqlite_temp_schema"
    }

    /// CairnDB's own tables (its bookkeeping, transaction records, guards), which clients never write.
    public static func isReserved(_ name: String?) -> Bool {
        guard let name else { return false }
        let lower = name.lowercased()
        // A load's staging tables are the loading user's data on its way in, not CairnDB's.
        if lower.hasPrefix(DatabaseLoader.stagingPrefix) { return false }
        return lower.hasPrefix("_cairn") || lower.hasPrefix("sqlite_cairn")
    }

    /// Eponymous virtual tables that show the node's file layout or its connection's statements.
    static let nodeLocalTables: Set<String> = ["dbstat", "sqlite_dbpage", "sqlite_stmt"]

    /// Virtual table modules whose rows live in ordinary tables of the database, so they replicate.
    static let replicatedModules: Set<String> = ["fts3", "fts4", "fts5", "rtree", "rtree_i32"]

    /// Functions that answer differently on different nodes (their build, their file layout).
    /// `random()`, `randomblob()`, `changes()`, `total_changes()` and `last_insert_rowid()` are replaced
    /// on the apply connection by versions that depend on the entry alone.
    static let nodeLocalFunctions: Set<String> = [
        "sqlite_version", "sqlite_source_id", "sqlite_compileoption_get", "sqlite_compileoption_used", "sqlite_offset",
        "fts5_source_id",
    ]

    static func functionRefusal(_ name: String, role: ConnectionRole) -> String? {
        switch name {
        case "load_extension": return "load_extension() is not allowed"
        // One argument leaks an address; two replace a tokenizer with a pointer the caller chose.
        case "fts3_tokenizer": return "fts3_tokenizer() is not allowed"
        default:
            if role == .apply && nodeLocalFunctions.contains(name) {
                return "\(name)() is not allowed in a write: its result depends on the node, and every replica must apply a write alike; send it as a query"
            }
            return nil
        }
    }
}

/// Which PRAGMAs a client may run, and where.
enum Pragmas {
    /// Describe the schema; their argument names what to describe.
    static let describing: Set<String> = [
        "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "foreign_key_list", "foreign_key_check",
    ]
    /// Stored in the database file: reading and setting them replicates like data.
    static let stored: Set<String> = ["user_version"]
    /// CairnDB's: the applied-entry marker of each database file (see `Bookkeeping`).
    static let reserved: Set<String> = ["application_id"]
    /// Fixed when the apply connection opens, the same on every node: a write may read them.
    static let fixed: Set<String> = ["foreign_keys", "recursive_triggers", "defer_foreign_keys", "encoding", "data_version"]
    /// Fixed settings that are off on the apply connection.
    static let offByDefault: Set<String> = ["foreign_keys", "recursive_triggers", "defer_foreign_keys"]
    /// Read forms a query may use (client libraries send several on connect). Their answers may depend on
    /// the node (its file layout, its build, its connection), so a write may not.
    static let readable: Set<String> = [
        "integrity_check", "quick_check", "collation_list", "function_list", "module_list", "pragma_list", "compile_options",
        "data_version", "page_count", "page_size", "freelist_count", "max_page_count", "schema_version", "encoding",
        "journal_mode", "synchronous", "busy_timeout", "cache_size", "cache_spill", "temp_store", "auto_vacuum",
        "read_uncommitted", "query_only", "foreign_keys", "defer_foreign_keys", "recursive_triggers", "legacy_alter_table",
        "automatic_index", "cell_size_check", "secure_delete", "mmap_size", "locking_mode", "trusted_schema",
        "reverse_unordered_selects", "ignore_check_constraints", "wal_autocheckpoint", "analysis_limit", "fullfsync",
        "checkpoint_fullfsync", "count_changes", "empty_result_callbacks", "full_column_names", "short_column_names",
        "soft_heap_limit", "hard_heap_limit", "threads", "writable_schema", "user_version",
    ]
    /// Take an argument that limits their work rather than setting anything.
    static let checking: Set<String> = ["integrity_check", "quick_check"]

    static func refusal(name: String, argument: String?, role: ConnectionRole) -> String? {
        let setting = argument != nil
        if reserved.contains(name) {
            return "PRAGMA \(name) is reserved for CairnDB: it marks which entry each database file holds"
        }
        let known = describing.contains(name) || stored.contains(name) || fixed.contains(name) || readable.contains(name)
        guard known else { return "PRAGMA \(name) is not allowed: it could change durability or make replicas diverge" }
        switch role {
        case .apply:
            // Listed in the order of an in-memory hash table, which depends on the connection's history.
            if name == "table_list" || (name == "foreign_key_check" && argument == nil) {
                return "PRAGMA \(name) is not allowed in a write: its order depends on the node; send it as a query"
            }
            if describing.contains(name) || stored.contains(name) { return nil }
            if setting {
                // `PRAGMA foreign_keys=OFF` heads every sqlite3 dump: setting what is already so is no change.
                if offByDefault.contains(name), let value = argument, ["0", "off", "false", "no"].contains(value.lowercased()) { return nil }
                return fixed.contains(name)
                    ? "PRAGMA \(name) cannot be changed: the connection that applies writes is configured alike on every node"
                    : "PRAGMA \(name) is not allowed: it could change durability or make replicas diverge"
            }
            if fixed.contains(name) { return nil }
            return "PRAGMA \(name) is not allowed in a write: its answer depends on the node, and every replica must apply a write alike; send it as a query"
        case .read:
            if describing.contains(name) || checking.contains(name) { return nil }
            if setting {
                return stored.contains(name)
                    ? "PRAGMA \(name) is set by a write (execute), not a query"
                    : "PRAGMA \(name) cannot be set: a setting would outlive the request on a shared connection"
            }
            return nil
        }
    }
}
