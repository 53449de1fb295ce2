#!/usr/bin/env python3
"""CairnDB against the systems people would pick instead, given the same work, in one run on this machine.

Installs what it needs (apt-get, pip), builds CairnDB in release mode, and starts on loopback, all at
once: CairnDB (3 nodes), etcd 3.4 (3 members, through its HTTP/JSON gateway), dqlite (three
`dqlite-demo` nodes, replicated SQLite over Raft) and PostgreSQL (a primary and a synchronous
standby, through pgbench). Every system holds the same 10,000 keys; a write overwrites one of them
with a 100-byte value, a read fetches one (linearizable where the system can). Each cell (operation,
clients, entry node) is run on every system in turn, run after run, so a drift in the machine's speed
touches all alike; the report gives the median and the spread of the runs and flags any run below
half the median. Then:
  - a second table with authentication and TLS on everywhere it exists (CairnDB, etcd, PostgreSQL);
  - the collapse check: ten pairs of CairnDB runs through the leader and through a follower, with
    answers counted per second and the leader asked before and after each run.
Writes bench/RESULTS.md, bench/results.json and PNG charts.

Usage: python3 bench/run.py [--seconds 5] [--runs 5] [--clients 1,64] [--binary PATH] [--report-only]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The other scripts here import this module as `bench` and use these names.
from common import (KEYS, ROOT, VALUE, VALUE_BYTES, WRK_COMMON, cpu_seconds, ensure_tools, free_port, fsync_latency,  # noqa: F401,E402
                    http, log, loopback_rtt, machine, make_certificates, sh, sqlite_alone, wait_until, wrk)
from systems import Cairn, Dqlite, Etcd, Postgres  # noqa: E402

OPS = ["write", "read"]
PEERS = ["etcd", "dqlite", "PostgreSQL"]


def measure_once(system, runner):
    pids = system.pids()
    c0 = cpu_seconds(pids)
    r = runner()
    # PostgreSQL's backends are born with pgbench's connections, after this sample: no figure for it.
    r["cpu_per_1000"] = None if isinstance(system, Postgres) else (cpu_seconds(pids) - c0) / max(1, r["requests"]) * 1000
    return r


def one_run(system, op, clients, entry, seconds, work, trace=False):
    if isinstance(system, Postgres):
        return measure_once(system, lambda: system.pgbench(op, clients, seconds, work))
    url = system.url(entry)
    r = measure_once(system, lambda: wrk(system.script(op), url, clients, seconds, work, name=f"{system.name}-{op}", trace=trace))
    r["url"] = url
    return r


def summarize(samples):
    t = sorted(s["throughput"] for s in samples)
    median = statistics.median(t)
    cpu = [s["cpu_per_1000"] for s in samples if s.get("cpu_per_1000") is not None]
    return {"median": median, "min": t[0], "max": t[-1], "runs": [round(x) for x in (s["throughput"] for s in samples)],
            "p50_ms": statistics.median(s["p50"] for s in samples) / 1000, "p99_ms": statistics.median(s["p99"] for s in samples) / 1000,
            "p999_ms": statistics.median(s["p999"] for s in samples) / 1000,
            "cpu_ms_per_op": statistics.median(cpu) if cpu else None, "errors": sum(s["errors"] for s in samples),
            "collapsed": sum(1 for x in t if x < median / 2)}


def alternated(systems, cells, runs, seconds, work):
    """Every cell on every system, in turn, `runs` times; the systems' order rotates each run so none
    is always first after another's load."""
    samples = {}
    for i in range(runs):
        order = systems[i % len(systems):] + systems[:i % len(systems)]
        for op, clients, entry in cells:
            for system in order:
                if isinstance(system, Postgres) and entry != "leader":
                    continue
                r = one_run(system, op, clients, entry, seconds, work)
                samples.setdefault((system.name, op, clients, entry), []).append(r)
                log(f"  run {i + 1}/{runs} {system.name:10s} {op:5s} {clients:3d} clients via {entry:8s} {r['throughput']:8.0f}/s "
                    f"p50 {r['p50'] / 1000:6.2f} ms p99 {r['p99'] / 1000:6.2f} ms errors {r['errors']}")
    return {k: summarize(v) for k, v in samples.items()}


def collapse_check(cairn, pairs, seconds, work):
    """CairnDB writes at 64 clients through the leader and through a follower, `pairs` times in a row,
    answers counted per second; the leader is asked before and after each run, so a run whose
    leadership moved under it shows as such."""
    out = []
    for i in range(pairs):
        pair = {}
        for entry in ("leader", "follower"):
            before = cairn.leader()
            r = one_run(cairn, "write", 64, entry, seconds, work, trace=True)
            after = cairn.leader()
            per_second = r.get("per_second", [])[1:-1]
            pair[entry] = {"throughput": r["throughput"], "p99_ms": r["p99"] / 1000, "errors": r["errors"],
                           "per_second": r.get("per_second", []), "min_second": min(per_second) if per_second else None,
                           "leader_before": before, "leader_after": after, "url": r["url"]}
        pair["ratio"] = pair["follower"]["throughput"] / pair["leader"]["throughput"]
        log(f"  pair {i + 1}/{pairs}: leader {pair['leader']['throughput']:.0f}/s (slowest second {pair['leader']['min_second']}), "
            f"follower {pair['follower']['throughput']:.0f}/s (slowest second {pair['follower']['min_second']}), ratio {pair['ratio']:.2f}")
        out.append(pair)
    return out


# ---------------------------------------------------------------- report

def key(system, op, clients, entry):
    return f"{system}|{op}|{clients}|{entry}"


def write_report(r):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = r["results"]
    clients = r["clients"]
    top, one = max(clients), min(clients)
    systems = ["CairnDB"] + PEERS
    cells = [(c, "leader") for c in clients] + [(top, "follower")]
    for metric, fname, label in [("median", "throughput.png", "operations per second (median)"), ("p99_ms", "p99.png", "p99 latency, ms")]:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        for ax, op in zip(axes, OPS):
            width = 0.2
            for i, s in enumerate(systems):
                vals = [res.get(key(s, op, c, e), {}).get(metric, 0) for c, e in cells]
                ax.bar([x + i * width for x in range(len(cells))], vals, width, label=s)
            ax.set_xticks([x + 1.5 * width for x in range(len(cells))])
            ax.set_xticklabels([f"{c} clients, {e}" for c, e in cells])
            ax.set_title(f"{'overwrites' if op == 'write' else 'point reads (linearizable)'}: {label}")
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(HERE, fname), dpi=90)
        plt.close(fig)

    def cell(x, field, fmt):
        v = x.get(field)
        return "n/a" if v is None else format(v, fmt)

    def table(results, cells_shown, names):
        lines = ["| op | clients | via | system | median ops/s | runs (ops/s) | p50 ms | p99 ms | p99.9 ms | CPU ms/op | errors | collapsed | CairnDB vs it |",
                 "| --- | ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for op in OPS:
            for c, e in cells_shown:
                cairn = results.get(key("CairnDB", op, c, e))
                for s in names:
                    x = results.get(key(s, op, c, e))
                    if x is None:
                        continue
                    vs = "" if s == "CairnDB" or not cairn else f"{cairn['median'] / x['median']:.2f}x"
                    lines.append(f"| {op} | {c} | {e} | {s} | {x['median']:.0f} | {' '.join(str(v) for v in x['runs'])} | "
                                 f"{x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {x['p999_ms']:.2f} | {cell(x, 'cpu_ms_per_op', '.3f')} | "
                                 f"{x['errors']} | {x['collapsed']} | {vs} |")
        return lines

    floor = r["floor"]
    alone = r["sqlite"]
    info = r["machine"]
    lines = ["# Benchmark results", "",
             f"Generated by `python3 bench/run.py --runs {r['runs']} --seconds {r['seconds']}` on {r['generated']} in "
             f"{r['elapsed'] / 60:.1f} min ({r['version']}).", "",
             f"Machine: {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB memory. Disk: fsync of a 4 KiB write "
             f"{floor['fsync'] * 1e3:.3f} ms (median of 200). Loopback TCP round trip {floor['rtt'] * 1e6:.0f} µs (median of 2,000).", "",
             "## The same work for every system", "",
             f"All four systems run at once, each on 3 nodes on this machine. Each holds the same {KEYS:,} keys; a write overwrites "
             f"one of them, chosen at random, with a {VALUE_BYTES}-byte value; a read fetches one (CairnDB: linearizable, its default; "
             "etcd: a linearizable range, its default; dqlite: its driver reads on the leader; PostgreSQL: on the primary). "
             "CairnDB, etcd and dqlite are driven by one tool (wrk) through their HTTP APIs with the same connection counts "
             "(CairnDB: `INSERT OR REPLACE` and `SELECT` on `/v1/db/default/execute` and `/query`; etcd: `/v3/kv/put` and "
             "`/v3/kv/range`; dqlite: `dqlite-demo`'s `PUT /KEY` and `GET /KEY`, which run `INSERT OR REPLACE` and `SELECT` "
             "through its driver); PostgreSQL by pgbench (`INSERT ... ON CONFLICT DO UPDATE`; its synchronous standby takes no "
             "writes, so it has no \"via follower\" rows). \"via leader\" sends every request to the node leading the data; "
             "\"via follower\" to another node, which must pass it on (asked afresh before every run). "
             f"Every cell ran {r['runs']} times for {r['seconds']} s on each system in turn (the order rotating each run); "
             "the table gives the median, every run, and the medians of the runs' percentiles. CPU is the user+system time of "
             "all the system's server processes during the run per operation (none for PostgreSQL, whose backends start "
             "with pgbench's connections). A run below half its cell's median counts as collapsed. Authentication and TLS "
             "are off everywhere (CairnDB with `--insecure-dev`).", ""]
    lines += table(res, cells, systems)
    lines += ["", f"SQLite alone (one connection in the benchmark's process, WAL, synchronous=FULL, the same overwrites): "
                  f"writes {alone['write']['throughput']:.0f}/s (p50 {alone['write']['p50'] / 1000:.2f} ms), reads "
                  f"{alone['read']['throughput']:.0f}/s (p50 {alone['read']['p50']:.0f} µs).", ""]
    if r.get("secure"):
        lines += ["## With authentication and TLS on", "",
                  "The same work at 64 clients through the leader, with every system's own authentication and TLS on: "
                  "CairnDB over HTTPS with a bearer token (nodes on mutual TLS, its default); etcd with client and peer TLS "
                  "(peer certificates checked) and auth enabled, each request carrying a token; PostgreSQL over TLS "
                  "(`sslmode=require`) with a SCRAM password. dqlite-demo has neither, so it is not in this table. "
                  "The certificates are one P-256 CA and server certificate made by openssl for the run.", ""]
        lines += table(r["secure"], [(64, "leader")], ["CairnDB", "etcd", "PostgreSQL"])
        lines.append("")

    def res_of(s, op, c, e="leader"):
        return res.get(key(s, op, c, e))
    cw, cr, c1 = res_of("CairnDB", "write", top), res_of("CairnDB", "read", top), res_of("CairnDB", "write", one)
    cf = res_of("CairnDB", "write", top, "follower")
    targets = []
    for peer in ("etcd", "dqlite"):
        pw, pr = res_of(peer, "write", top), res_of(peer, "read", top)
        if pw and pr:
            targets += [(f"writes at {top} clients >= 1.5x {peer}", cw["median"] / pw["median"], 1.5, ">="),
                        (f"linearizable reads at {top} clients >= 2x {peer}", cr["median"] / pr["median"], 2.0, ">="),
                        (f"write p99 at {top} clients <= {peer}'s", cw["p99_ms"] / pw["p99_ms"], 1.0, "<="),
                        (f"read p99 at {top} clients <= {peer}'s", cr["p99_ms"] / pr["p99_ms"], 1.0, "<=")]
    ew = res_of("etcd", "write", top)
    if ew and ew.get("cpu_ms_per_op"):
        targets.append((f"CPU per write at {top} clients <= 0.5x etcd's", cw["cpu_ms_per_op"] / ew["cpu_ms_per_op"], 0.5, "<="))
    floor_ms = (floor["fsync"] + floor["rtt"]) * 1e3
    targets.append(("single-client write p50 <= 2x (fsync + round trip)", c1["p50_ms"] / floor_ms, 2.0, "<="))
    if cf:
        targets.append((f"writes via a follower at {top} clients >= 0.8x via the leader", cf["median"] / cw["median"], 0.8, ">="))
    lines += ["## Targets (issue 16)", "", "| target | measured | met |", "| --- | ---: | --- |"]
    for name, value, bound, cmp in targets:
        met = value >= bound if cmp == ">=" else value <= bound
        lines.append(f"| {name} | {value:.2f}x | {'yes' if met else 'no'} |")
    pairs = r.get("collapse")
    if pairs:
        ratios = [p["ratio"] for p in pairs]
        lines += ["", "## No collapse: CairnDB writes through the leader and through a follower, ten times in a row", "",
                  "64 clients, each run answers counted per second (wrk), the leader of the database's group asked before and after "
                  "every run. The slowest second leaves out the first and last, which are partial.", "",
                  "| pair | via leader ops/s | slowest second | via follower ops/s | slowest second | follower/leader | leader moved during the pair |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for i, p in enumerate(pairs):
            moved = p["leader"]["leader_before"] != p["follower"]["leader_after"] or p["leader"]["leader_before"] != p["leader"]["leader_after"]
            lines.append(f"| {i + 1} | {p['leader']['throughput']:.0f} | {p['leader']['min_second']} | {p['follower']['throughput']:.0f} | "
                         f"{p['follower']['min_second']} | {p['ratio']:.2f} | {'yes' if moved else 'no'} |")
        lines += ["", f"Follower/leader: median {statistics.median(ratios):.2f}, lowest {min(ratios):.2f}; "
                      f"runs below half the median of their kind: "
                      f"{sum(1 for p in pairs for e in ('leader', 'follower') if p[e]['throughput'] < statistics.median(q[e]['throughput'] for q in pairs) / 2)}."]
    notes = os.path.join(HERE, "NOTES.md")
    if os.path.exists(notes):
        lines += ["", open(notes).read().strip()]
    lines += ["", "![throughput](throughput.png)", "", "![p99 latency](p99.png)", ""]
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--clients", default="1,64", help="client counts for the main table (the follower rows use the largest)")
    ap.add_argument("--pairs", type=int, default=10, help="leader/follower pairs in the collapse check (0: skip)")
    ap.add_argument("--no-secure", action="store_true", help="skip the table with authentication and TLS on")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md and the charts from bench/results.json")
    ap.add_argument("--binary", help="a cairn binary to use instead of building the release one")
    args = ap.parse_args()
    if args.report_only:
        write_report(json.load(open(os.path.join(HERE, "results.json"))))
        return
    clients = [int(c) for c in args.clients.split(",")]
    started = time.time()
    ensure_tools()
    if not args.skip_build and not args.binary:
        log("building CairnDB (release) ...")
        sh(["swift", "build", "-c", "release", "--product", "cairn"], cwd=ROOT)
    binary = args.binary or os.path.join(ROOT, ".build", "release", "cairn")
    version = sh(["git", "-C", ROOT, "log", "-1", "--format=commit %h"], stdout=subprocess.PIPE).stdout.decode().strip()
    work = tempfile.mkdtemp(prefix="cairn-bench-", dir="/var/tmp")
    os.chmod(work, 0o755)
    report = {"version": version, "machine": machine(), "runs": args.runs, "seconds": args.seconds, "clients": clients,
              "generated": time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}
    log("the floor: fsync latency and loopback round trip ...")
    report["floor"] = {"fsync": fsync_latency(work), "rtt": loopback_rtt()}
    log(f"  fsync {report['floor']['fsync'] * 1e3:.3f} ms, round trip {report['floor']['rtt'] * 1e6:.0f} µs")
    report["sqlite"] = sqlite_alone(work, args.seconds)
    running = []
    try:
        for make in (lambda: Cairn(work, binary), lambda: Etcd(work), lambda: Dqlite(work), lambda: Postgres(work)):
            running.append(make())
            running[-1].check()
            log(f"{running[-1].name} is up")
        top = max(clients)
        cells = [(op, c, "leader") for op in OPS for c in clients] + [(op, top, "follower") for op in OPS]
        results = alternated(running, cells, args.runs, args.seconds, work)
        report["results"] = {key(*k): v for k, v in results.items()}
        if args.pairs:
            log("the collapse check ...")
            report["collapse"] = collapse_check(running[0], args.pairs, args.seconds, work)
        for s in running:
            s.stop()
        running = []
        if not args.no_secure:
            certs = make_certificates(os.path.join(work, "certs"))
            for make in (lambda: Cairn(work, binary, secure=True, certs=certs, label="cairn-secure"),
                         lambda: Etcd(work, secure=True, certs=certs), lambda: Postgres(work, secure=True, certs=certs)):
                running.append(make())
                running[-1].check()
                log(f"{running[-1].name} is up with authentication and TLS")
            secure = alternated(running, [("write", 64, "leader"), ("read", 64, "leader")], args.runs, args.seconds, work)
            report["secure"] = {key(*k): v for k, v in secure.items()}
    finally:
        for s in running:
            try:
                s.stop()
            except Exception:
                pass
    report["elapsed"] = time.time() - started
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(report, f, indent=1)
    write_report(report)
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote bench/RESULTS.md, bench/results.json, bench/throughput.png and bench/p99.png in {report['elapsed'] / 60:.1f} min")


if __name__ == "__main__":
    main()
