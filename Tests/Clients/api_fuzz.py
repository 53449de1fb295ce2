#!/usr/bin/env python3
"""Hostile clients against a running cluster: random and mutated requests to every HTTP API.

Sends, for `--seconds`, requests built from valid ones with parts replaced by values of other types,
extremes, truncated JSON, wrong methods, odd paths and odd credentials, to CairnDB's own API, rqlite's
and the compatibility listeners given. Between them it commits numbered rows to a database of its own
and remembers those acknowledged. It fails (exit 1), printing each request that did it, when:
  - an answer is a 5xx (a 503 only from /readyz or /v1/ready, whose answers say what is not ready);
  - a connection is dropped or a request takes longer than its timeout;
  - a 4xx from the native API (under /v1/) has no {"error": "..."} message;
  - at the end, an acknowledged row cannot be read back.
The run is replayable: the same seed sends the same requests in the same order.

Usage: api_fuzz.py --node URL [--node URL ...] --password PW [--compat API=PORT ...] [--seconds 40] [--seed 1]
"""
import argparse, base64, http.client, json, random, sys, time, urllib.parse

SQLS = [
    "SELECT * FROM t WHERE k = ?", "INSERT INTO t(k, v) VALUES(?, ?)", "SELECT count(*), sum(k) FROM t", "UPDATE t SET v = ? WHERE k = ?",
    "SELECT * FROM t ORDER BY v LIMIT ? OFFSET ?", "SELECT k, count(DISTINCT v) FROM t GROUP BY k HAVING count(*) > ?",
    "DELETE FROM t WHERE k IN (?, ?)", "SELECT * FROM t JOIN r ON t.k = r.k WHERE t.k = ?", "INSERT INTO r VALUES(?, ?)",
    "SELECT typeof(v), min(v), max(k), avg(k), total(k) FROM t", "INSERT INTO u(v) VALUES(?)", "SELECT * FROM u", "BEGIN", "COMMIT",
    "PRAGMA table_info(t)", "SELECT random()", "WITH x AS (SELECT 1) SELECT * FROM x", "SELECT * FROM t WHERE k > ? ORDER BY k DESC LIMIT 3",
    "SELECT * FROM t WHERE k BETWEEN ? AND ? ORDER BY k", "SELECT v, count(*) FROM t GROUP BY v ORDER BY 2 DESC LIMIT 5",
]
STRINGS = ["", "x", "\u0000", "é", "e\u0301", "'; DROP TABLE t; --", "NaN", "Infinity", "-1", "1e999", "%s", "\\", "\"", "null", "\U0001F600"]
NUMBERS = [0, -1, 1, 2**31, 2**63 - 1, -2**63, 2**63, 2**64, 10**30, 0.5, -0.0, 1e308, 1e-308, 3.14]


class Fuzz:
    def __init__(self, args):
        self.rng = random.Random(args.seed)
        self.nodes = [urllib.parse.urlsplit(u) for u in args.node]
        self.compat = dict(c.split("=") for c in args.compat)
        self.password = args.password
        self.basic = "Basic " + base64.b64encode(f"admin:{args.password}".encode()).decode()
        self.token = None
        # Good requests carry a token taken before the run: its wrong passwords lock password logins for
        # this user from this address for a minute (`LoginLimiter`), which would turn them into 429s.
        self.good = {"Authorization": self.basic}
        self.failures = []
        self.acknowledged = []
        self.codes = {}

    # -- the wire
    def send(self, host, port, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, urllib.parse.quote(path, safe="/?&=%:+,"), body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    def node(self):
        u = self.rng.choice(self.nodes)
        return u.hostname, u.port

    def native(self, method, path, body, auth=True):
        host, port = self.node()
        return self.send(host, port, method, path, None if body is None else json.dumps(body), self.good if auth else {})

    # -- values
    def value(self, depth=0):
        c = self.rng.randrange(13)
        r = self.rng
        if c == 0: return None
        if c == 1: return r.choice([True, False])
        if c == 2: return r.choice(NUMBERS) if r.random() < 0.5 else r.randrange(-1000, 1000)
        if c == 3: return r.choice(STRINGS) if r.random() < 0.8 else "a" * r.choice([300, 3000, 70000])
        if c == 4 and depth < 4: return [self.value(depth + 1) for _ in range(r.randrange(0, 5))]
        if c == 5 and depth < 4:
            return {r.choice(["sql", "params", "base64", "x", "", "statements", "consistency"]): self.value(depth + 1) for _ in range(r.randrange(0, 4))}
        if c == 6: return r.choice(SQLS)
        if c == 7: return {"base64": r.choice(["", "AAAA", "!!!", "QUJD", "====="])}
        if c == 8: return [r.choice(SQLS)] + [self.value(depth + 1) for _ in range(r.randrange(0, 4))]
        if c == 9: return {"sql": r.choice(SQLS), "params": self.value(depth + 1)}
        return r.randrange(-5, 5000)

    def mutate(self, v, depth=0):
        r = self.rng
        if depth > 5 or r.random() < 0.2:
            return self.value()
        if isinstance(v, dict):
            v = dict(v)
            if v and r.random() < 0.7:
                k = r.choice(list(v))
                if r.random() < 0.2:
                    del v[k]
                else:
                    v[k] = self.mutate(v[k], depth + 1)
            else:
                v[r.choice(["atomic", "consistency", "freshness_ms", "timeout", "level", "shards", "name", "x"])] = self.value()
            return v
        if isinstance(v, list):
            v = list(v)
            if v and r.random() < 0.7:
                i = r.randrange(len(v))
                v[i] = self.mutate(v[i], depth + 1)
            elif r.random() < 0.5:
                v.append(self.value())
            elif v:
                v.pop()
            return v
        return self.value()

    def statements(self):
        r = self.rng
        return [r.choice([r.choice(SQLS), [r.choice(SQLS), r.randrange(10), "v"], {"sql": r.choice(SQLS), "params": [r.randrange(10), 3]}])
                for _ in range(r.randrange(1, 4))]

    # -- requests: (host, port, method, path, body, headers)
    def native_request(self):
        r = self.rng
        db = r.choice(["default", "shop"] * 5 + ["nosuch", "", "sh op", "..", "a" * 300, "shop/../default"])
        # Splits only where they must be refused (a shard or table that is not there): a real one is an
        # operator's act, and many at once on a loaded machine would make the run's answers slow, not wrong.
        ep = r.choice(["execute", "query", "request", "route", "check", "shards", "backup", "load", "tables/zz/split", "shards/99/split"])
        body = {"statements": self.statements()}
        if ep == "query":
            body["consistency"] = r.choice(["linearizable", "stale", "local", "weak", 5])
            body["freshness_ms"] = r.choice([0, -1, 5000, 10**20])
        if ep == "execute":
            body["atomic"] = r.choice([True, False, "yes"])
        qs = r.choice(["", "", "?timings", "?fmt=sql", "?fmt=zip", "?level=strong", "?x=%ff"])
        method = r.choice(["POST"] * 6 + ["GET", "PUT", "DELETE"])
        host, port = self.node()
        auth = r.choice([self.good] * 18 + [{"Authorization": self.basic}, {}, {"Authorization": r.choice(["Bearer x.y.z", "Basic !!", "Basic " + base64.b64encode(b"admin:wrong").decode()])}])
        return host, port, method, f"/v1/db/{db}/{ep}{qs}", self.mutate(body) if r.random() < 0.8 else body, auth

    def rqlite_request(self):
        r = self.rng
        ep = r.choice(["/db/execute", "/db/query", "/db/request", "/db/load", "/db/backup", "/status", "/nodes", "/readyz", "/leader"])
        qs = r.choice(["", "?level=strong", "?level=none&freshness=1s", "?level=weak", "?freshness=abc", "?timings&pretty", "?associative",
                       "?transaction", "?q=SELECT%201", "?queue", "?wait&timeout=1x", "?blob_array", "?freshness_strict", "?redirect"])
        body = [r.choice(SQLS), [r.choice(SQLS), 1, "x"]]
        host, port = self.node()
        return host, port, r.choice(["POST"] * 4 + ["GET"]), ep + qs, self.mutate(body) if r.random() < 0.8 else body, self.good

    def admin_request(self):
        r = self.rng
        host, port = self.node()
        a = self.good
        c = r.randrange(8)
        if c == 0:
            # Shard counts from the edges of what is allowed (1-256), kept small inside it: each shard is a Raft group on every node here.
            body = {"name": r.choice([f"x{r.randrange(20)}", "shop", "default", "", "a" * 300, "sqlite_x", "_cairn"]), "shards": r.choice([-3, 0, 1, 2, 257, 10**6, "x", None, 2.5])}
            if r.random() < 0.3:
                body["name"] = self.value()
            return host, port, "POST", "/v1/databases", body, a
        if c == 1: return host, port, "DELETE", f"/v1/databases/{r.choice([f'x{r.randrange(20)}', 'nosuch', ''])}", None, a
        if c == 2:
            return host, port, "POST", "/v1/users", self.mutate({"username": f"u{r.randrange(10)}", "password": "pw-long-enough-1",
                                                                   "grants": [{"database": "shop", "permissions": ["read"]}]}), a
        if c == 3: return host, port, "POST", "/v1/auth/token", self.mutate({"username": "admin", "password": "wrong"}), {}
        if c == 4:
            body = self.mutate({"replication_factor": 3})
            # A valid factor would really change the cluster (copies added or trimmed): only the current one.
            if isinstance(body, dict) and isinstance(body.get("replication_factor"), int) and not isinstance(body["replication_factor"], bool) \
                    and 1 <= body["replication_factor"] <= 7:
                body["replication_factor"] = 3
            return host, port, "PUT", "/v1/cluster/settings", body, a
        if c == 5: return host, port, "POST", "/v1/cluster/join-tokens", self.mutate({"ttl_seconds": 60}), a
        if c == 6:
            return host, port, "GET", r.choice(["/v1/status", "/v1/cluster", "/metrics", "/v1/databases", "/v1/users", "/v1/cluster/settings",
                                                "/v1/db/shop/shards", "/console/x.js", "/console/../../etc/passwd"]), None, a
        return host, port, "POST", f"/v1/users/u{r.randrange(10)}/grants", self.mutate({"database": "shop", "permissions": ["read"]}), a

    def compat_request(self):
        r = self.rng
        api = r.choice(sorted(self.compat))
        host, port = "127.0.0.1", int(self.compat[api])
        if api == "shard-lb":
            ep, method, body = r.choice([
                ("/read", "POST", {"Stud_id": {"low": 10, "high": 20}}), ("/write", "POST", {"data": [{"Stud_id": 5, "Stud_name": "a", "Stud_marks": "7"}]}),
                ("/update", "PUT", {"Stud_id": 5, "data": {"Stud_id": 5, "Stud_name": "b", "Stud_marks": "8"}}), ("/del", "DELETE", {"Stud_id": 5}),
                ("/status", "GET", None), ("/heartbeat", "GET", None), ("/rm", "DELETE", {"n": 1, "servers": ["Server9"]}),
                ("/config", "POST", {"schema": {}, "shards": ["sh1"]}), ("/copy", "GET", {"shards": ["sh1"]}),
                ("/read", "POST", {"shard": "sh1", "Stud_id": {"low": 0, "high": 5}}),
                ("/write", "POST", {"shard": "sh1", "curr_idx": 0, "data": [{"Stud_id": 1, "Stud_name": "x", "Stud_marks": "1"}]}), ("/init", "POST", {"N": 1})])
            return host, port, method if r.random() < 0.9 else r.choice(["GET", "POST", "PUT", "DELETE"]), ep, self.mutate(body) if body and r.random() < 0.8 else body, {}
        if api == "key-endpoint":
            k = r.choice(["a", "b%2Fc", "x" * 2000, "é", "k1"])
            method, path, body = r.choice([("POST", f"/key/{k}", {"value": self.value()}), ("GET", f"/key/{k}", None), ("POST", "/token", None),
                                           ("GET", "/heartbeat", None), ("POST", "/masters", None), ("GET", "/slaves", None)])
            h = {"token": self.token} if r.random() < 0.8 else {"Authorization": r.choice([self.basic, "Basic !!"])}
            return host, port, method, path, self.mutate(body) if body is not None else None, h
        if api == "rest-db":
            path, body = r.choice([("/createdb?name=d1", None), ("/createtable?dbname=d1&table=t1&schema=id%20INT%20AUTO_INCREMENT%20PRIMARY%20KEY,%20name%20VARCHAR(20)", None),
                                   ("/insert", {"dbname": "d1", "table": "t1", "values": "NULL, 'a'"}), ("/select?dbname=d1&table=t1", None),
                                   ("/update", {"dbname": "d1", "table": "t1", "set": "name = 'b'", "where": "id = 1"}),
                                   ("/delete", {"dbname": "d1", "table": "t1", "where": "id = 1"}), ("/dropdb?name=d2", None), ("/ping", None), ("/nodes", None)])
            return host, port, r.choice(["POST", "POST", "GET", "PUT", "DELETE", "OPTIONS"]), path, self.mutate(body) if body is not None and r.random() < 0.85 else body, {}
        path, body = r.choice([("/api/query", {"query": "SELECT 1"}), ("/api/database/create", {"db_name": "m1"}),
                               ("/api/table/create", {"db_name": "m1", "table_name": "a", "columns": [{"name": "n", "type": "VARCHAR(9)"}]}),
                               ("/api/slaves", None), ("/api/logs", None)])
        h = self.good if r.random() < 0.8 else {}
        return host, port, r.choice(["POST", "POST", "GET"]), path, self.mutate(body) if body is not None and r.random() < 0.85 else body, h

    # -- checks
    def fail(self, why, request):
        host, port, method, path, body, _ = request
        self.failures.append(f"{why}: {method} {host}:{port}{path} {str(body)[:300]}")
        print("FAIL", self.failures[-1], flush=True)

    def check(self, request):
        host, port, method, path, body, headers = request
        raw = None if body is None else json.dumps(body)
        if raw and self.rng.random() < 0.05:
            raw = raw[:self.rng.randrange(len(raw))]  # truncated JSON
        if self.rng.random() < 0.05:
            headers = dict(headers, **{"Content-Type": self.rng.choice(["text/plain", "application/octet-stream", "application/json; charset=latin1"])})
        try:
            status, data = self.send(host, port, method, path, raw, headers)
        except Exception as e:  # a dropped connection or a hang
            return self.fail(f"no answer ({e!r})", request)
        self.codes[status] = self.codes.get(status, 0) + 1
        bare = path.split("?")[0]
        if status >= 500 and not (status == 503 and bare in ("/readyz", "/v1/ready")):
            return self.fail(f"{status} {data[:300]!r}", request)
        native = any(port == u.port for u in self.nodes) and bare.startswith("/v1/")
        if 400 <= status < 500 and native:
            try:
                message = json.loads(data).get("error")
            except (ValueError, AttributeError):
                message = None
            if not isinstance(message, str) or len(message) < 8:
                self.fail(f"{status} without a message: {data[:200]!r}", request)

    def acknowledged_write(self, k):
        try:
            status, data = self.native("POST", "/v1/db/fuzz_acks/execute", {"statements": [["INSERT INTO acks(k) VALUES(?)", k]]})
        except Exception:
            return
        if status == 200 and b'"error"' not in data:
            self.acknowledged.append(k)

    def setup(self):
        for method, path, body in [("POST", "/v1/databases", {"name": "shop", "shards": 4}), ("POST", "/v1/databases", {"name": "fuzz_acks"}),
                                   ("POST", "/v1/db/shop/execute", {"statements": ["CREATE TABLE t(k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"]}),
                                   ("POST", "/v1/db/shop/execute", {"statements": ["CREATE TABLE r(k INTEGER PRIMARY KEY, v TEXT) REFERENCE"]}),
                                   ("POST", "/v1/db/default/execute", {"statements": ["CREATE TABLE IF NOT EXISTS u(k INTEGER PRIMARY KEY, v TEXT)"]}),
                                   ("POST", "/v1/db/fuzz_acks/execute", {"statements": ["CREATE TABLE acks(k INTEGER PRIMARY KEY)"]})]:
            status, data = self.native(method, path, body)
            assert status in (200, 201), (path, status, data[:300])
        status, data = self.native("POST", "/v1/auth/token", {"username": "admin", "password": self.password})
        self.token = json.loads(data)["token"]
        self.good = {"Authorization": "Bearer " + self.token}
        if "shard-lb" in self.compat:
            self.send("127.0.0.1", int(self.compat["shard-lb"]), "POST", "/init", json.dumps({
                "N": 1, "schema": {"columns": ["Stud_id", "Stud_name", "Stud_marks"], "dtypes": ["Number", "String", "String"]},
                "shards": [{"Stud_id_low": 0, "Shard_id": "sh1", "Shard_size": 4096}, {"Stud_id_low": 4096, "Shard_id": "sh2", "Shard_size": 4096}],
                "servers": {"Server0": ["sh1", "sh2"]}}))

    def run(self, seconds):
        self.setup()
        kinds = [self.native_request] * 5 + [self.rqlite_request] * 2 + [self.admin_request] + [self.compat_request] * (3 if self.compat else 0)
        end, n = time.time() + seconds, 0
        while time.time() < end:
            if n % 10 == 0:
                self.acknowledged_write(n)
            self.check(self.rng.choice(kinds)())
            n += 1
        # Every acknowledged row is there, read linearizably through each node.
        for u in self.nodes:
            status, got = 0, set()
            for _ in range(20):  # a leader change at the end of the run answers 503 for a moment
                try:
                    status, data = self.send(u.hostname, u.port, "POST", "/v1/db/fuzz_acks/query", json.dumps({"statements": ["SELECT k FROM acks"]}), self.good)
                except OSError:
                    status = 0
                if status == 200:
                    got = {row[0] for row in json.loads(data)["results"][0].get("rows", [])}
                    break
                time.sleep(0.5)
            missing = [k for k in self.acknowledged if k not in got]
            if missing:
                self.failures.append(f"{len(missing)} acknowledged rows missing through {u.netloc} ({status}): {missing[:10]}")
                print("FAIL", self.failures[-1], flush=True)
        print(f"requests {n}, answers {sorted(self.codes.items())}, acknowledged rows {len(self.acknowledged)}, failures {len(self.failures)}")
        return not self.failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", action="append", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--compat", action="append", default=[])
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.seconds > 3000:
        ap.error("--seconds at most 3000: the run's token, taken at its start, lives an hour")
    print(f"seed {args.seed}", flush=True)
    sys.exit(0 if Fuzz(args).run(args.seconds) else 1)


if __name__ == "__main__":
    main()
