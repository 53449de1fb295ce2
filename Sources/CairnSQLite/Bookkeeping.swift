/// Where CairnDB keeps its own bookkeeping in each database (the applied index, the membership, the
/// drop entry): a table in SQLite's reserved namespace, written in the same transaction as the entries
/// it describes. SQLite itself refuses to drop, alter, index or put triggers on tables named `sqlite_*`,
/// and clients that list tables leave that namespace out, as they must for SQLite's own
/// (`sqlite_sequence`, `sqlite_stat1`, and `sqlite_schema` in `PRAGMA table_list`); the authorizer keeps
/// user SQL from reading or writing it. A separate file would hide it better, but SQLite commits two
/// WAL-mode files atomically only one at a time, and the applied index must commit with the data.
enum Bookkeeping {
    static let table = "sqlite_cairn_meta"
    /// Its name before: an ordinary table that user SQL could list (and clients trip over).
    static let legacyTable = "_cairn_meta"

    /// Creates the table if it is missing (SQLite allows the reserved name only while the schema is
    /// writable), and moves a database's bookkeeping from its earlier table.
    static func create(on connection: SQLiteConnection) throws {
        try connection.exec("""
            PRAGMA writable_schema=ON;
            CREATE TABLE IF NOT EXISTS \(table)(key TEXT PRIMARY KEY, value);
            PRAGMA writable_schema=OFF;
            """)
        if try connection.tableExists(legacyTable) {
            try connection.exec("""
                BEGIN IMMEDIATE;
                INSERT OR REPLACE INTO \(table)(key, value) SELECT key, value FROM \(legacyTable);
                DROP TABLE \(legacyTable);
                COMMIT;
                """)
        }
    }
}
