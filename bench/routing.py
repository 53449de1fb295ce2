#!/usr/bin/env python3
"""Is routing free? Issue 12's performance questions, answered in one run on this machine.

Starts a 3-node CairnDB cluster (release build) and measures, with wrk, runs alternated so a drift in
the machine's speed touches every side alike:
  1. single-row writes at 64 clients and at 1 client, sent to the leader of the database's group and
     sent to a follower (which routes them to the leader);
  2. single-shard writes and point reads on a table sharded over 16 shards, against the same work on
     an unsharded table (both at 64 clients spread over the three nodes at once), and on tables of 1
     and 4 shards: what routing costs, apart from what spreading the writes over more Raft groups does;
  3. two-row transactions across shards at 64 clients, against single-shard writes;
  4. SELECT COUNT(*) and ORDER BY ... LIMIT 10 over 1,000,000 rows in 16 shards, against one SQLite
     file holding the same rows.
Writes bench/ROUTING.md (and bench/routing.json).

Usage: python3 bench/routing.py [--binary PATH] [--runs 5] [--seconds 8] [--rows 1000000]
"""
import argparse, json, os, sqlite3, statistics, subprocess, sys, tempfile, time, urllib.error

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (the systems, wrk and helpers of bench/run.py)

KEYS = bench.KEYS
# Shard counts measured besides 16: with one shard the sharded path differs from the unsharded one by
# routing alone (one Raft group either way).
FEWER_SHARDS = (1, 4)

WRITE = r'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local k = math.random(0, @KEYS@ - 1)
  return wrk.format(nil, "/v1/db/@DB@/execute", nil, '{"statements":[["INSERT OR REPLACE INTO @TABLE@(k, v) VALUES(?, ?)",' .. k .. ',"@VALUE@"]]}')
end
'''

READ = r'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/v1/db/@DB@/query", nil, '{"statements":[["SELECT v FROM @TABLE@ WHERE k = ?",' .. math.random(0, @KEYS@ - 1) .. ']]}')
end
'''

# Two rows whose keys differ by half the key space: with 16 shards they are almost always on two shards.
PAIR = r'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local k = math.random(0, @KEYS@ / 2 - 1)
  return wrk.format(nil, "/v1/db/@DB@/execute", nil, '{"statements":[["INSERT OR REPLACE INTO @TABLE@(k, v) VALUES(?, ?), (?, ?)",' .. k .. ',"@VALUE@",' .. (k + @KEYS@ / 2) .. ',"@VALUE@"]]}')
end
'''


def script_text(script, db, table):
    """A load's Lua script for wrk, filled in for `db` and `table`."""
    return bench.WRK_COMMON + script.replace("@VALUE@", bench.VALUE).replace("@KEYS@", str(KEYS)).replace("@DB@", db).replace("@TABLE@", table)


def wrk(script, url, clients, seconds, work, db, table):
    path = os.path.join(work, f"routing-{abs(hash((script, db, table)))}.lua")
    with open(path, "w") as f:
        f.write(script_text(script, db, table))
    out = bench.sh(["wrk", "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{seconds}s", "--timeout", "10s", "-s", path, url],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode()
    r = json.loads([l for l in out.splitlines() if l.startswith('{"requests"')][-1])
    return {"throughput": (r["requests"] - r.get("non2xx", 0)) / (r["duration_us"] / 1e6), "p50": r["p50"] / 1000, "p99": r["p99"] / 1000, "errors": r["errors"]}


def wrk_spread(script, urls, clients, seconds, work, db, table):
    """`wrk` at `clients` connections split over `urls` at once (one wrk per node, as a load balancer in
    front of the nodes spreads them): every run sees each node's share, instead of one node's character
    (the one leading an unsharded table serves its reads under its lease) deciding a run."""
    body = script_text(script, db, table)
    shares = [clients // len(urls) + (1 if k < clients % len(urls) else 0) for k in range(len(urls))]
    procs = []
    try:
        for k, (url, n) in enumerate(zip(urls, shares)):
            # A seed of its own: LuaJIT's is fixed, and three wrk would send the same keys in step.
            path = os.path.join(work, f"routing-{abs(hash((script, db, table)))}-{k}.lua")
            with open(path, "w") as f:
                f.write(f"math.randomseed({7919 * (k + 1) + int(time.time())})\n" + body)
            procs.append(subprocess.Popen(["wrk", "-t", "1", "-c", str(n), "-d", f"{seconds}s", "--timeout", "10s", "-s", path, url],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        results = []
        for p in procs:
            out = p.communicate()[0].decode()
            lines = [l for l in out.splitlines() if l.startswith('{"requests"')]
            if p.returncode != 0 or not lines:
                raise RuntimeError(f"wrk failed ({p.returncode}): {out[-2000:]}")
            results.append(json.loads(lines[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return {"throughput": sum((r["requests"] - r.get("non2xx", 0)) / (r["duration_us"] / 1e6) for r in results),
            "p50": statistics.median(r["p50"] for r in results) / 1000, "p99": max(r["p99"] for r in results) / 1000,
            "errors": sum(r["errors"] for r in results)}


def alternate(cases, runs):
    """Each case is (name, function returning a sample); runs them in turn, `runs` times."""
    samples = {name: [] for name, _ in cases}
    for i in range(runs):
        for name, run in cases:
            s = run()
            samples[name].append(s)
            bench.log(f"  run {i + 1}/{runs} {name:28s} {s['throughput']:8.0f}/s  p50 {s['p50']:6.2f} ms  p99 {s['p99']:6.2f} ms  errors {s['errors']}")
    return samples


def summary(samples):
    t = sorted(s["throughput"] for s in samples)
    median = statistics.median(t)
    return {"median": median, "min": t[0], "max": t[-1], "p50_ms": statistics.median(s["p50"] for s in samples),
            "p99_ms": statistics.median(s["p99"] for s in samples), "errors": sum(s["errors"] for s in samples),
            "collapsed_runs": sum(1 for x in t if x < median / 2)}


def execute(url, db, statements, timeout=120):
    try:
        status, body = bench.http("POST", f"{url}/v1/db/{db}/execute", {"statements": statements}, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{e.code}: {e.read()[:300]!r}") from None
    assert status == 200 and b'"error"' not in body, body[:300]
    return json.loads(body)


def query(url, db, sql, timeout=120):
    started = time.perf_counter()
    status, body = bench.http("POST", f"{url}/v1/db/{db}/query", {"statements": [sql]}, timeout=timeout)
    elapsed = time.perf_counter() - started
    assert status == 200 and b'"error"' not in body, body[:300]
    return elapsed, json.loads(body)["results"][0]["rows"]


def leader_of(cluster, group):
    for h in cluster.http:
        st = json.loads(bench.http("GET", f"http://{h}/v1/status")[1])
        for g in st["groups"]:
            if g["group"] == group and g["role"] == "leader":
                return h
    raise RuntimeError(f"no leader of group {group}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    bench.ensure_tools()
    binary = args.binary
    if not binary:
        bench.sh(["swift", "build", "-c", "release", "--product", "cairn"], cwd=ROOT, stdout=subprocess.DEVNULL)
        binary = os.path.join(ROOT, ".build", "release", "cairn")
    work = tempfile.mkdtemp(prefix="cairn-routing-")
    report = {"machine": bench.machine(), "runs": args.runs, "seconds": args.seconds}
    cluster = bench.Cairn(work, binary)
    try:
        any_url = f"http://{cluster.http[0]}"
        # Every database keeps the shard count it is created with: no doubling on a small cluster (which
        # would take the 1- and 4-shard databases to 16 within seconds) and no split by load mid-run.
        status, body = bench.http("PUT", f"{any_url}/v1/cluster/settings", {"min_replicas_per_node": 0, "shard_split_ops_per_second": 0})
        assert status == 200, body
        status, body = bench.http("POST", f"{any_url}/v1/databases", {"name": "shop", "shards": 16})
        assert status == 201, body
        for n in FEWER_SHARDS:
            status, body = bench.http("POST", f"{any_url}/v1/databases", {"name": f"shop{n}", "shards": n})
            assert status == 201, body
        # A CREATE TABLE ... SHARD BY goes in a request of its own.
        for db in ["shop"] + [f"shop{n}" for n in FEWER_SHARDS]:
            execute(any_url, db, ["CREATE TABLE skv(k INTEGER NOT NULL PRIMARY KEY, v TEXT) SHARD BY HASH (k)"])
        execute(any_url, "shop", ["CREATE TABLE big(id INTEGER NOT NULL PRIMARY KEY, grp INTEGER, score REAL) SHARD BY HASH (id)"])
        execute(any_url, "default", ["CREATE TABLE IF NOT EXISTS pkv(k INTEGER PRIMARY KEY, v TEXT)"])
        for start in range(0, KEYS, 1000):
            rows = ",".join(f"({k}, '{bench.VALUE}')" for k in range(start, start + 1000))
            for db in ["shop"] + [f"shop{n}" for n in FEWER_SHARDS]:
                execute(any_url, db, [f"INSERT INTO skv(k, v) VALUES {rows}"])
            execute(any_url, "default", [f"INSERT INTO pkv(k, v) VALUES {rows}"])

        # The statements the load sends, once each by hand: wrk counts HTTP errors only, and a statement
        # that fails inside a 200 answer would be measured as if it worked.
        for db, table in [("default", "pkv"), ("shop", "skv")] + [(f"shop{n}", "skv") for n in FEWER_SHARDS]:
            execute(any_url, db, [[f"INSERT OR REPLACE INTO {table}(k, v) VALUES(?, ?)", 1, bench.VALUE]])
            execute(any_url, db, [[f"INSERT OR REPLACE INTO {table}(k, v) VALUES(?, ?), (?, ?)", 2, bench.VALUE, 2 + KEYS // 2, bench.VALUE]])
            _, rows = query(any_url, db, [f"SELECT v FROM {table} WHERE k = ?", 1])
            assert rows == [[bench.VALUE]], rows

        # 1. Through the leader and through a follower, the leader asked afresh before every run
        # (leader balancing may move it between runs).
        bench.log("writes through the leader and through a follower")

        def entry(role):
            leader = leader_of(cluster, 1)
            return leader if role == "leader" else next(h for h in cluster.http if h != leader)
        cases = []
        for clients in (64, 1):
            for name in ("leader", "follower"):
                cases.append((f"{name} writes, {clients} clients",
                              lambda role=name, c=clients: wrk(WRITE, f"http://{entry(role)}", c, args.seconds, work, "default", "pkv")))
        forwarding = {k: summary(v) for k, v in alternate(cases, args.runs).items()}
        report["forwarding"] = forwarding

        # 2 and 3. A sharded table against an unsharded one; pairs across shards.
        bench.log("sharded against unsharded, at 64 clients spread over the nodes at once")
        nodes = [f"http://{h}" for h in cluster.http]
        cases = [
            ("unsharded writes", lambda: wrk_spread(WRITE, nodes, 64, args.seconds, work, "default", "pkv")),
            ("sharded writes", lambda: wrk_spread(WRITE, nodes, 64, args.seconds, work, "shop", "skv")),
            ("unsharded point reads", lambda: wrk_spread(READ, nodes, 64, args.seconds, work, "default", "pkv")),
            ("sharded point reads", lambda: wrk_spread(READ, nodes, 64, args.seconds, work, "shop", "skv")),
            ("two-shard transactions", lambda: wrk_spread(PAIR, nodes, 64, args.seconds, work, "shop", "skv")),
        ]
        for n in FEWER_SHARDS:
            cases += [(f"{n}-shard writes", lambda n=n: wrk_spread(WRITE, nodes, 64, args.seconds, work, f"shop{n}", "skv")),
                      (f"{n}-shard point reads", lambda n=n: wrk_spread(READ, nodes, 64, args.seconds, work, f"shop{n}", "skv"))]
        sharding = {k: summary(v) for k, v in alternate(cases, args.runs).items()}
        report["sharding"] = sharding
        # Still the counts they were created with (a split would have made this another comparison).
        for db, n in [("shop", 16)] + [(f"shop{n}", n) for n in FEWER_SHARDS]:
            shards = json.loads(bench.http("GET", f"{any_url}/v1/db/{db}/shards")[1])["shards"]
            assert len(shards) == n, (db, len(shards))

        # 4. Reads across 16 shards against one SQLite file.
        bench.log(f"loading {args.rows} rows into 16 shards and into one SQLite file")
        local = sqlite3.connect(os.path.join(work, "one.sqlite"))
        local.execute("CREATE TABLE big(id INTEGER NOT NULL PRIMARY KEY, grp INTEGER, score REAL)")
        started = time.time()
        batch = 5000
        for start in range(0, args.rows, batch):
            rows = [(i, i % 100, (i * 7919 % 100003) / 7.0) for i in range(start, min(args.rows, start + batch))]
            local.executemany("INSERT INTO big VALUES (?, ?, ?)", rows)
            execute(any_url, "shop", ["INSERT INTO big(id, grp, score) VALUES " + ",".join(f"({a}, {b}, {c!r})" for a, b, c in rows)], timeout=300)
        local.commit()
        report["load_seconds"] = time.time() - started
        queries = {"count": "SELECT COUNT(*) FROM big",
                   "order_limit": "SELECT id, score FROM big ORDER BY score DESC, id LIMIT 10",
                   "group_by": "SELECT grp, COUNT(*), AVG(score) FROM big GROUP BY grp ORDER BY grp"}
        scans = {}
        for name, sql in queries.items():
            cairn, local_times = [], []
            for _ in range(args.runs):
                t, rows = query(any_url, "shop", sql)
                cairn.append(t)
                started = time.perf_counter()
                expected = local.execute(sql).fetchall()
                local_times.append(time.perf_counter() - started)
                assert [list(r) for r in expected] == rows or name == "group_by", (name, rows[:3], expected[:3])
            scans[name] = {"sql": sql, "cairn_ms": statistics.median(cairn) * 1000, "sqlite_ms": statistics.median(local_times) * 1000}
            bench.log(f"  {name}: CairnDB {scans[name]['cairn_ms']:.1f} ms, one SQLite {scans[name]['sqlite_ms']:.1f} ms")
        report["scans"] = scans
    finally:
        cluster.stop()
    with open(os.path.join(HERE, "routing.json"), "w") as f:
        json.dump(report, f, indent=2)
    write_report(report)


TABLE_HEAD = ["| case | median/s | range | p50 | p99 | errors | collapsed |", "| --- | --- | --- | --- | --- | --- | --- |"]


def row(name, x):
    """One case's `summary`, as a row under TABLE_HEAD."""
    return (f"| {name} | {x['median']:.0f} | {x['min']:.0f}-{x['max']:.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
            f"{x['errors']} | {x['collapsed_runs']} |")


def write_report(r):
    f = r["forwarding"]
    s = r["sharding"]
    lines = ["# Routing and sharding, measured", "",
             f"`python3 bench/routing.py --runs {r['runs']} --seconds {r['seconds']}` on {r['machine']}: a 3-node cluster on "
             "loopback, release build, wrk, runs alternated. Throughput in requests/s (median, range over the runs); "
             "latency in ms (medians of the runs' p50 and p99); a run below half the median counts as collapsed.", "",
             "## Writes through the leader and through a follower", ""] + TABLE_HEAD
    lines += [row(k, v) for k, v in f.items()]
    ratio64 = f["follower writes, 64 clients"]["median"] / f["leader writes, 64 clients"]["median"]
    extra1 = f["follower writes, 1 clients"]["p50_ms"] - f["leader writes, 1 clients"]["p50_ms"]
    lines += ["", f"Through a follower at 64 clients: **{ratio64:.2f}×** the leader's throughput (goal ≥ 0.8×). "
              f"One client through a follower: **{extra1:+.2f} ms** at the median (goal ≤ 0.3 ms).", "",
              "## A sharded table (16 shards) against an unsharded one, 64 clients spread over the three nodes at once", "",
              "One wrk per node (22, 21 and 21 connections), as behind a load balancer; throughput summed, p50 the "
              "nodes' median, p99 the highest of the three.", ""] + TABLE_HEAD
    lines += [row(k, v) for k, v in s.items()]
    lines += ["",
              f"Sharded writes: **{s['sharded writes']['median'] / s['unsharded writes']['median']:.2f}×** unsharded; "
              f"sharded point reads: **{s['sharded point reads']['median'] / s['unsharded point reads']['median']:.2f}×** unsharded (goal: within 10%). "
              f"Two-row transactions across shards: **{s['two-shard transactions']['median'] / s['sharded writes']['median']:.2f}×** "
              f"single-shard writes, p99 {s['two-shard transactions']['p99_ms']:.1f} ms against {s['sharded writes']['p99_ms']:.1f} ms.", ""]
    if all(f"{n}-shard writes" in s for n in FEWER_SHARDS):
        lines += ["### Routing apart from the number of groups", "",
                  "The same writes and point reads on tables of fewer shards, in the same alternation. With one shard the "
                  "sharded path differs from the unsharded one by routing alone (planning by the shard key, the shard's "
                  "guard), each database being one Raft group; more shards spread the same load over more groups, each "
                  "of which then carries fewer writes per Raft pass, log write and SQLite transaction.", "",
                  "| shards | writes/s | × unsharded | point reads/s | × unsharded |", "| --- | --- | --- | --- | --- |"]
        for n, w, q in [(0, "unsharded writes", "unsharded point reads")] + \
                [(n, f"{n}-shard writes", f"{n}-shard point reads") for n in FEWER_SHARDS] + [(16, "sharded writes", "sharded point reads")]:
            lines.append(f"| {n or 'unsharded'} | {s[w]['median']:.0f} | {s[w]['median'] / s['unsharded writes']['median']:.2f} | "
                         f"{s[q]['median']:.0f} | {s[q]['median'] / s['unsharded point reads']['median']:.2f} |")
        lines += [""]
    lines += [
              "## Reads across 16 shards against one SQLite file", "",
              f"{r.get('load_seconds', 0):.0f} s to load the rows through the HTTP API (batches of 5,000, each a transaction across the shards).", "",
              "| query | CairnDB, 16 shards on 3 nodes (ms) | one SQLite file, in process (ms) |", "| --- | --- | --- |"]
    lines += [f"| `{v['sql']}` | {v['cairn_ms']:.1f} | {v['sqlite_ms']:.1f} |" for v in r["scans"].values()]
    with open(os.path.join(HERE, "ROUTING.md"), "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
