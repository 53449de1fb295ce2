#!/usr/bin/env python3
"""How CairnDB's cost grows with the work: throughput, p99 latency and memory on a 3-node cluster as
one dimension grows at a time, the others held at the fair bench's values (64 clients, 100-byte
values, 10,000 rows, one database):
  - connections: 1 -> 1,024 clients;
  - value size: 100 B -> 64 KiB (writes overwrite one of 1,000 keys);
  - rows in the table: 10^4 -> 10^7 (loaded in 100,000-row statements; reads and overwrites of
    random keys over the whole table);
  - databases: 1 -> 1,000 (each a Raft group on all three nodes), load spread over up to 100 of them
    while the rest stay idle.
Memory is the resident set of the three server processes after each step's runs. Each point is the
median of --runs runs of --seconds s through wrk. Writes bench/GROWTH.md, bench/growth.json and
bench/growth-*.png.

Usage: python3 bench/growth.py [--binary PATH] [--seconds 5] [--runs 1] [--max-rows 10000000] [--max-databases 1000]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import ROOT, ensure_tools, http, log, machine, rss_bytes, sh, wrk  # noqa: E402
from systems import Cairn  # noqa: E402


def write_script(db, keys, value_bytes):
    return f'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local value = string.rep("x", {value_bytes})
local dbs = {{{",".join(f'"{d}"' for d in db)}}}
request = function()
  local d = dbs[math.random(1, #dbs)]
  return wrk.format(nil, "/v1/db/" .. d .. "/execute", nil, '{{"statements":[["INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)",' .. math.random(0, {keys - 1}) .. ',"' .. value .. '"]]}}')
end
'''


def read_script(db, keys):
    return f'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local dbs = {{{",".join(f'"{d}"' for d in db)}}}
request = function()
  local d = dbs[math.random(1, #dbs)]
  return wrk.format(nil, "/v1/db/" .. d .. "/query", nil, '{{"statements":[["SELECT v FROM kv WHERE k = ?",' .. math.random(0, {keys - 1}) .. ']]}}')
end
'''


def execute(cluster, db, statements, timeout=600):
    status, body = http("POST", f"{cluster.base[0]}/v1/db/{db}/execute", {"statements": statements}, timeout=timeout)
    assert status == 200 and b'"error"' not in body, body[:300]


def load_rows(cluster, db, start, end, value_bytes=100, per_statement=100_000):
    """Rows start..end-1, each with a value_bytes value, in statements of per_statement rows (a
    recursive CTE: the statement is replicated, not the rows)."""
    for lo in range(start, end, per_statement):
        hi = min(end, lo + per_statement) - 1
        execute(cluster, db, [f"WITH RECURSIVE c(x) AS (SELECT {lo} UNION ALL SELECT x + 1 FROM c WHERE x < {hi}) "
                              f"INSERT OR REPLACE INTO kv(k, v) SELECT x, substr(hex(zeroblob({value_bytes})), 1, {value_bytes}) FROM c"])


def point(cluster, work, script, clients, seconds, runs, name):
    samples = [wrk(script, cluster.url("leader"), clients, seconds, work, name=name) for _ in range(runs)]
    best = sorted(samples, key=lambda s: s["throughput"])[len(samples) // 2]
    return {"throughput": statistics.median(s["throughput"] for s in samples), "p99_ms": best["p99"] / 1000,
            "p50_ms": best["p50"] / 1000, "errors": sum(s["errors"] for s in samples)}


def measure(cluster, work, label, x, writes, reads, clients, seconds, runs, out, extra=None):
    row = {"x": x, **(extra or {})}
    for op, script in (("write", writes), ("read", reads)):
        row[op] = point(cluster, work, script, clients, seconds, runs, f"growth-{label}-{op}")
    row["rss_mib"] = rss_bytes(cluster.pids()) / 2**20
    log(f"  {label} = {x}: writes {row['write']['throughput']:.0f}/s p99 {row['write']['p99_ms']:.1f} ms, "
        f"reads {row['read']['throughput']:.0f}/s p99 {row['read']['p99_ms']:.1f} ms, memory {row['rss_mib']:.0f} MiB, "
        f"errors {row['write']['errors'] + row['read']['errors']}")
    out.append(row)


def connections(cluster, work, args, a):
    rows = []
    for c in (1, 4, 16, 64, 256, 1024):
        measure(cluster, work, "connections", c, write_script(["default"], 10_000, 100), read_script(["default"], 10_000), c, out=rows, **a)
    return rows


def value_sizes(cluster, work, args, a):
    rows = []
    for size in (100, 1024, 4096, 16384, 65536):
        load_rows(cluster, "default", 0, 1000, value_bytes=size)
        measure(cluster, work, "value_bytes", size, write_script(["default"], 1000, size), read_script(["default"], 1000), 64, out=rows, **a)
    return rows


def databases(cluster, work, args, a):
    rows = []
    made = ["default"]
    for total in (1, 10, 100, 1000):
        if total > args.max_databases:
            break
        t = time.time()

        def create(i):
            name = f"g{i}"
            status, body = http("POST", f"{cluster.base[i % 3]}/v1/databases", {"name": name, "shards": 1}, timeout=120)
            assert status == 201, body
            execute(cluster, name, ["CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)"])
            load_rows(cluster, name, 0, 1000)
            return name
        # Eight at a time, as several clients would.
        with ThreadPoolExecutor(8) as pool:
            made += list(pool.map(create, range(len(made), total)))
        create_seconds = time.time() - t
        active = made[:100]
        measure(cluster, work, "databases", total, write_script(active, 1000, 100), read_script(active, 1000), 64, out=rows,
                extra={"active": len(active), "create_seconds": create_seconds}, **a)
    return rows


def table_rows(cluster, work, args, a):
    rows = []
    execute(cluster, "default", ["DELETE FROM kv"])
    have = 0
    n = 10_000
    while n <= args.max_rows:
        t = time.time()
        load_rows(cluster, "default", have, n)
        load_seconds = time.time() - t
        have = n
        measure(cluster, work, "rows", n, write_script(["default"], n, 100), read_script(["default"], n), 64, out=rows,
                extra={"load_seconds": load_seconds}, **a)
        n *= 10
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--max-rows", type=int, default=10_000_000)
    ap.add_argument("--max-databases", type=int, default=1000)
    args = ap.parse_args()
    ensure_tools()
    binary = args.binary
    if not binary:
        sh(["swift", "build", "-c", "release", "--product", "cairn"], cwd=ROOT, stdout=subprocess.DEVNULL)
        binary = os.path.join(ROOT, ".build", "release", "cairn")
    started = time.time()
    work = tempfile.mkdtemp(prefix="cairn-growth-", dir="/var/tmp")
    report = {"machine": machine(), "seconds": args.seconds, "runs": args.runs, "generated": time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
              "version": sh(["git", "-C", ROOT, "log", "-1", "--format=commit %h"], stdout=subprocess.PIPE).stdout.decode().strip()}
    # wrk at 1,024 connections needs as many descriptors; so do the nodes with 1,000 groups.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    a = dict(seconds=args.seconds, runs=args.runs)
    steps = [("connections", connections), ("value_bytes", value_sizes), ("databases", databases), ("rows", table_rows)]
    for dim, step in steps:
        # A fresh cluster per dimension: what one step leaves behind (1,000 databases, 10^7 rows) must
        # not weigh on the next.
        log(dim)
        cluster = Cairn(work, binary, label=f"{dim}-")
        try:
            report[dim] = step(cluster, work, args, a)
        finally:
            cluster.stop()
    report["elapsed"] = time.time() - started
    with open(os.path.join(HERE, "growth.json"), "w") as f:
        json.dump(report, f, indent=1)
    write_report(report)
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote bench/GROWTH.md and bench/growth-*.png in {report['elapsed'] / 60:.1f} min")


DIMENSIONS = [("connections", "clients (connections)"), ("value_bytes", "value size (bytes)"),
              ("databases", "databases (load on up to 100)"), ("rows", "rows in the table")]


def write_report(r):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lines = ["# Cost as the work grows", "",
             f"`python3 bench/growth.py --runs {r['runs']} --seconds {r['seconds']}` on {r['generated']} ({r['version']}), "
             f"{r['machine']['cores']} cores ({r['machine']['cpu']}): a 3-node CairnDB cluster on this machine, release build, "
             "wrk through the leader. One dimension grows at a time, each on a fresh cluster; the others stay at 64 clients, 100-byte values, "
             "10,000 rows (1,000 for the value-size and database steps) and one database. Writes overwrite a random key, "
             "reads fetch one (linearizable). Memory is the resident set of the three server processes after the step.", ""]
    for dim, label in DIMENSIONS:
        rows = r.get(dim)
        if not rows:
            continue
        xs = [row["x"] for row in rows]
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
        for op in ("write", "read"):
            axes[0].plot(xs, [row[op]["throughput"] for row in rows], marker="o", label=f"{op}s")
            axes[1].plot(xs, [row[op]["p99_ms"] for row in rows], marker="o", label=f"{op}s")
        axes[2].plot(xs, [row["rss_mib"] for row in rows], marker="o", color="gray")
        for ax, title in zip(axes, ("operations per second", "p99 latency (ms)", "memory of 3 nodes (MiB)")):
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_title(title)
            ax.set_ylim(bottom=0)
        axes[0].legend()
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(os.path.join(HERE, f"growth-{dim}.png"), dpi=80)
        plt.close(fig)
        lines += [f"## {label[0].upper() + label[1:]}", "",
                  "| " + label + " | writes/s | write p99 ms | reads/s | read p99 ms | memory MiB | errors | note |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for row in rows:
            note = ""
            if "load_seconds" in row:
                note = f"loaded in {row['load_seconds']:.0f} s"
            if "create_seconds" in row:
                note = f"{row['active']} active; created in {row['create_seconds']:.0f} s"
            if dim == "value_bytes":
                note = f"writes {row['write']['throughput'] * row['x'] / 2**20:.1f} MiB/s"
            lines.append(f"| {row['x']:,} | {row['write']['throughput']:.0f} | {row['write']['p99_ms']:.1f} | {row['read']['throughput']:.0f} | "
                         f"{row['read']['p99_ms']:.1f} | {row['rss_mib']:.0f} | {row['write']['errors'] + row['read']['errors']} | {note} |")
        lines += ["", f"![{dim}](growth-{dim}.png)", ""]
    with open(os.path.join(HERE, "GROWTH.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
