import CairnCompat
import CairnJSON
import CairnSQLite
import Testing

/// Seed 004's requests, as `/init`, `/write`, `/update` and `/read` receive them (the compat
/// document's examples), checked and turned into statements without a cluster.
@Suite struct ShardLBTests {
    static func json(_ text: String) -> JSON { try! JSON.parse(Array(text.utf8)) }

    /// The compat document's `/init` example (its `N` is accepted and ignored).
    static let initBody = json("""
        {"N":3,
         "schema":{"columns":["Stud_id","Stud_name","Stud_marks"],"dtypes":["Number","String","String"]},
         "shards":[{"Stud_id_low":4096,"Shard_id":"sh2","Shard_size":4096},
                   {"Stud_id_low":0,"Shard_id":"sh1","Shard_size":4096},
                   {"Stud_id_low":8192,"Shard_id":"sh3","Shard_size":4096}],
         "servers":{"Server0":["sh1","sh2"],"Server1":["sh2","sh3"],"Server2":["sh1","sh3"]}}
        """)

    static func failure(_ body: () throws -> Void) -> CompatFailure? {
        do { try body() } catch { return error as? CompatFailure }
        return nil
    }

    static func message(_ f: CompatFailure?) -> String? {
        if case .string(let m)? = f?.body["message"] { return m }
        return nil
    }

    @Test func initLaysShardsOutInStudIDOrder() throws {
        let layout = try LBLayout.initRequest(Self.initBody)
        #expect(layout.shards.map(\.id) == ["sh1", "sh2", "sh3"])
        #expect(layout.servers["Server1"] == ["sh2", "sh3"])
        // One CairnDB range shard per seed shard: split at every low but the first.
        #expect(layout.createTable.sql == #"CREATE TABLE IF NOT EXISTS StudT ("Stud_id" INTEGER NOT NULL PRIMARY KEY, "Stud_name", "Stud_marks") SHARD BY RANGE (Stud_id) SPLIT AT (4096, 8192)"#)
        #expect(layout.shard(of: 0)?.id == "sh1")
        #expect(layout.shard(of: 4095)?.id == "sh1")
        #expect(layout.shard(of: 4096)?.id == "sh2")
        #expect(layout.shard(of: 12287)?.id == "sh3")
        #expect(layout.shard(of: 12288) == nil)
        #expect(layout.shard(of: -1) == nil)
        #expect(layout.shards(from: 1000, to: 8889).map(\.id) == ["sh1", "sh2", "sh3"])
        #expect(layout.shards(from: 4096, to: 4096).map(\.id) == ["sh2"])
        #expect(layout.shards(from: 20000, to: 30000).isEmpty)
    }

    @Test func initRefusesWhatTheSeedRefused() {
        var body = Self.initBody
        func with(_ key: String, _ text: String) -> JSON {
            guard case .object(var members) = body else { return body }
            members.removeAll { $0.0 == key }
            members.append((key, Self.json(text)))
            return .object(members)
        }
        let duplicate = Self.failure { _ = try LBLayout.initRequest(with("shards", #"[{"Stud_id_low":0,"Shard_id":"sh1","Shard_size":10},{"Stud_id_low":10,"Shard_id":"sh1","Shard_size":10}]"#)) }
        #expect(duplicate?.status == 400)
        #expect(Self.message(duplicate) == "<Error> Duplicate shard id sh1 found in request")
        let mismatch = Self.failure { _ = try LBLayout.initRequest(with("servers", #"{"Server0":["sh1"]}"#)) }
        #expect(Self.message(mismatch) == "<Error> Mismatch between shards in 'shards' and 'servers'")
        let overlap = Self.failure { _ = try LBLayout.initRequest(with("shards", #"[{"Stud_id_low":0,"Shard_id":"sh1","Shard_size":100},{"Stud_id_low":50,"Shard_id":"sh2","Shard_size":100},{"Stud_id_low":500,"Shard_id":"sh3","Shard_size":1}]"#)) }
        #expect(Self.message(overlap)?.contains("overlap") == true)
        let noKey = Self.failure { _ = try LBLayout.initRequest(with("schema", #"{"columns":["id","name"],"dtypes":["Number","String"]}"#)) }
        #expect(noKey?.status == 400)
        let badType = Self.failure { _ = try LBLayout.initRequest(with("schema", #"{"columns":["Stud_id","x"],"dtypes":["Number","Blob"]}"#)) }
        #expect(Self.message(badType) == "<Error> dtype Blob is not one of Number, String, Float")
        let injected = Self.failure { _ = try LBLayout.initRequest(with("schema", #"{"columns":["Stud_id","x TEXT); DROP TABLE ShardT; --"],"dtypes":["Number","String"]}"#)) }
        #expect(injected?.status == 400)
        body = .object([("shards", .array([]))])
        let missing = Self.failure { _ = try LBLayout.initRequest(body) }
        #expect(missing?.status == 422)
        #expect(missing?.body["detail"] != nil)
        // Without servers: the cluster places the copies.
        guard case .object(var members) = Self.initBody else { return }
        members.removeAll { $0.0 == "servers" }
        #expect((try? LBLayout.initRequest(.object(members)))?.servers.isEmpty == true)
    }

    @Test func recordsAreCheckedAsPydanticDid() throws {
        let layout = try LBLayout.initRequest(Self.initBody)
        // The spec's /update sends Stud_id as a string; pydantic's lax mode took it.
        let values = try layout.values(of: Self.json(#"{"Stud_id":"2255","Stud_name":"GHI","Stud_marks":"30","extra":1}"#), at: [.string("data")])
        #expect(values == [.integer(2255), .text("GHI"), .text("30")])
        let missing = Self.failure { _ = try layout.values(of: Self.json(#"{"Stud_id":1,"Stud_name":"A"}"#), at: [.string("data"), .int(3)]) }
        #expect(missing?.status == 422)
        #expect(missing?.body["detail"] == Self.json(#"[{"type":"missing","loc":["body","data",3,"Stud_marks"],"msg":"Field required"}]"#))
        let notInt = Self.failure { _ = try layout.values(of: Self.json(#"{"Stud_id":"x1","Stud_name":"A","Stud_marks":"1"}"#), at: []) }
        #expect(notInt?.status == 422)
        // The seed's examples send numbers to a String column; they are kept as sent.
        #expect(try layout.values(of: Self.json(#"{"Stud_id":1,"Stud_name":"A","Stud_marks":23}"#), at: []) == [.integer(1), .text("A"), .integer(23)])
        let notString = Self.failure { _ = try layout.values(of: Self.json(#"{"Stud_id":1,"Stud_name":[5],"Stud_marks":"1"}"#), at: []) }
        #expect(notString?.status == 422)
        #expect(layout.update(values) == SQLStatement(#"UPDATE StudT SET "Stud_name" = ?, "Stud_marks" = ? WHERE Stud_id = ?"#, [.text("GHI"), .text("30"), .integer(2255)]))
        #expect(layout.record([.integer(1000), .text("PQR"), .integer(23)]) == Self.json(#"{"Stud_id":1000,"Stud_name":"PQR","Stud_marks":23}"#))
    }

    @Test func aLargeBatchIsSeveralStatementsOfOneRequest() throws {
        let layout = try LBLayout.initRequest(Self.initBody)
        let rows = (0..<1_001).map { [SQLValue.integer(Int64($0)), .text("n\($0)"), .text("1")] }
        let inserts = layout.inserts(rows)
        #expect(inserts.count == 3)
        #expect(inserts.map(\.positional.count) == [1_500, 1_500, 3])
        #expect(inserts[2].sql == #"INSERT INTO StudT ("Stud_id", "Stud_name", "Stud_marks") VALUES (?, ?, ?)"#)
        #expect(inserts[0].sql.hasSuffix("VALUES " + Array(repeating: "(?, ?, ?)", count: 500).joined(separator: ", ")))
        // One row, the usual /write, takes the INSERT kept with the layout: the same statement.
        #expect(layout.inserts([rows[7]]) == [SQLStatement(inserts[2].sql, rows[7])])
        // A schema changed after the fact keeps its INSERT in step.
        var changed = layout
        changed.schema = LBSchema(columns: ["Stud_id", "Name"], dtypes: ["Number", "String"])
        #expect(changed.inserts([[.integer(1), .text("a")]]) == [SQLStatement(#"INSERT INTO StudT ("Stud_id", "Name") VALUES (?, ?)"#, [.integer(1), .text("a")])])
    }

    @Test func theLayoutReadsBackAsRecorded() throws {
        let layout = try LBLayout.initRequest(Self.initBody)
        func result(_ rows: [[SQLValue]]) -> StatementResult {
            var r = StatementResult()
            r.rows = rows
            return r
        }
        // What `loadQueries` answer after `metadata` ran.
        let loaded = LBLayout(loading: [
            result([[.integer(4)]]),
            result(zip(layout.schema.columns, layout.schema.dtypes).map { [.text($0), .text($1)] }),
            result(layout.shards.map { [.integer($0.low), .text($0.id), .integer($0.size)] }),
            result(layout.servers.sorted { $0.key < $1.key }.flatMap { s in s.value.sorted().map { [.text(s.key), .text($0)] } }),
            result([[.integer(1)]]),
        ])
        #expect(loaded?.shards == layout.shards)
        #expect(loaded?.schema == layout.schema)
        #expect(loaded?.servers.mapValues { $0.sorted() } == layout.servers.mapValues { $0.sorted() })
        // A layout someone rewrote in ShardT (an overflowing size) is refused, never trusted.
        var corrupt = LBLayout(loading: [result([[.integer(4)]]), result([[.text("Stud_id"), .text("Number")]]),
                                         result([[.integer(0), .text("sh1"), .integer(Int64.max)]]), result([]), result([[.integer(1)]])])
        #expect(corrupt != nil)
        #expect(throws: CompatFailure.self) { _ = try LBLayout.loaded([result([[.integer(4)]]), result([[.text("Stud_id"), .text("Number")]]),
                                                                            result([[.integer(0), .text("sh1"), .integer(Int64.max)]]), result([]), result([[.integer(1)]])]) }
        corrupt = nil
        // Not configured: the tables are missing, or the config row is.
        #expect(LBLayout(loading: [result([[.integer(0)]]), result([]), result([]), result([]), result([])]) == nil)
        let status = layout.status(placement: ["n1": ["sh1", "sh2"], "n2": ["sh3"]])
        #expect(status["N"] == .int(2))
        #expect(status["shards"] == Self.json(#"[{"Stud_id_low":0,"Shard_id":"sh1","Shard_size":4096},{"Stud_id_low":4096,"Shard_id":"sh2","Shard_size":4096},{"Stud_id_low":8192,"Shard_id":"sh3","Shard_size":4096}]"#))
    }

    @Test func addAndRemoveAreCheckedAsTheSeedDid() throws {
        let layout = try LBLayout.initRequest(Self.initBody)
        let added = try LBAddition(Self.json(#"{"n":1,"new_shards":[{"Stud_id_low":12288,"Shard_id":"sh4","Shard_size":4096}],"servers":{"Server4":["sh3","sh4"]}}"#), to: layout)
        #expect(added.shards == [LBShard(id: "sh4", low: 12288, size: 4096)] && added.count == 1)
        // Each new shard is checked against those recorded by then, in the same atomic write.
        #expect(added.metadata.contains { $0.sql.hasPrefix("INSERT INTO LBGuard") })
        let tooMany = Self.failure { _ = try LBAddition(Self.json(#"{"n":3,"new_shards":[],"servers":{"Server4":["sh3"]}}"#), to: layout) }
        #expect(Self.message(tooMany) == "<Error> Number of new servers (n) is greater than newly added instances")
        let overlaps = Self.failure { _ = try LBAddition(Self.json(#"{"n":0,"new_shards":[{"Stud_id_low":12000,"Shard_id":"sh4","Shard_size":10}]}"#), to: layout) }
        #expect(Self.message(overlaps)?.contains("overlap") == true)
        let again = Self.failure { _ = try LBAddition(Self.json(#"{"n":0,"new_shards":[{"Stud_id_low":20000,"Shard_id":"sh1","Shard_size":10}]}"#), to: layout) }
        #expect(Self.message(again) == "<Error> Duplicate shard id sh1 found in request")
        let unknownShard = Self.failure { _ = try LBAddition(Self.json(#"{"n":1,"servers":{"Server4":["sh9"]}}"#), to: layout) }
        #expect(unknownShard?.status == 400)
        // A template name (the seed's `Server[5]`) asks a load balancer that starts servers to pick one.
        #expect(LBAddition.templatePrefix("Server[5]") == "Server" && LBAddition.templatePrefix("db[12]") == "db")
        #expect(["Server5", "[5]", "Server[]", "Server[x]", "Server[5]x", "Server[٥]"].allSatisfy { LBAddition.templatePrefix($0) == nil })

        let removal = try LBRemoval(Self.json(#"{"n":2,"servers":["Server4"]}"#))
        #expect(removal.victims(from: ["Server1", "Server4", "Server2"]) == ["Server4", "Server1"])
        let long = Self.failure { _ = try LBRemoval(Self.json(#"{"n":2,"servers":["Server1","Server4","Server2"]}"#)) }
        #expect(Self.message(long) == "<Error> Length of server list is more than removable instances")
        #expect(Self.failure { _ = try LBRemoval(Self.json(#"{"servers":[]}"#)) }?.status == 422)
    }
}
