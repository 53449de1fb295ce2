#include <sqlite3.h>

// sqlite3_db_config is variadic, which Swift cannot call: these set and read its integer options.
static inline int cairn_db_config_set(sqlite3 *db, int op, int value) {
    return sqlite3_db_config(db, op, value, (int *)0);
}

static inline int cairn_db_config_get(sqlite3 *db, int op) {
    int value = -1;
    sqlite3_db_config(db, op, -1, &value);
    return value;
}

// The step budget of a write: SQLite calls this once per virtual-machine step (progress handler with
// N = 1), in every statement the write runs (its triggers and a virtual table's own statements too).
// With N = 1 the count is exact, whatever a statement ran before: larger N would make the moment of
// the first call depend on statements' earlier runs. In C: it runs for every step of every write.
typedef struct cairn_budget {
    long long used;
    long long limit;
} cairn_budget;

static inline int cairn_budget_progress(void *budget) {
    cairn_budget *b = (cairn_budget *)budget;
    b->used += 1;
    return b->used > b->limit;
}
