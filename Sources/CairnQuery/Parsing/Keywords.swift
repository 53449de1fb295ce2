/// SQL words the router must recognise as words of the language rather than names.
enum Keywords {
    /// Words that can never be a table's alias written without AS (SQLite's join and clause words).
    static let reserved: Set<String> = [
        "WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "OFFSET", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "OUTER", "CROSS",
        "NATURAL", "ON", "USING", "UNION", "INTERSECT", "EXCEPT", "WINDOW", "INDEXED", "NOT", "AS",
    ]

    /// Words that may appear inside an expression without naming a column.
    static let expression: Set<String> = [
        "AND", "OR", "NOT", "IS", "NULL", "IN", "BETWEEN", "LIKE", "GLOB", "REGEXP", "MATCH", "ESCAPE", "CASE", "WHEN",
        "THEN", "ELSE", "END", "CAST", "AS", "COLLATE", "TRUE", "FALSE", "ISNULL", "NOTNULL", "DISTINCT", "FROM",
        "CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP",
    ]

    /// Functions that aggregate rows. Those `PartialAggregation` cannot split send a query down the
    /// exact row-gathering path instead.
    static let aggregates: Set<String> = [
        "count", "sum", "total", "min", "max", "avg", "group_concat", "string_agg", "json_group_array", "json_group_object",
        "jsonb_group_array", "jsonb_group_object", "median", "percentile", "percentile_cont", "percentile_disc",
    ]
}
