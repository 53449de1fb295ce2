#!/usr/bin/env python3
"""Two builds of CairnDB side by side, in one run on this machine: is a change free?

Builds each git revision in release mode (one scratch worktree, so the second build reuses the first's
dependencies), then starts a 3-node cluster of each in turn and measures single-row writes and point
reads at 64 clients through wrk, the two builds' runs alternating (a drift in the machine's speed then
touches both alike). Reports each build's median and the ratio. With --digest-mib N it also loads an
N MiB database into the second build and times a consistency check (the digest's cost per GiB).

Usage: python3 bench/compare_builds.py BASE_REV NEW_REV [--runs 3] [--seconds 8] [--clients 64] [--digest-mib 256]
"""
import argparse, json, os, shutil, sqlite3, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (the systems and the load tool of bench/run.py)


def build(rev, scratch, out_dir):
    if not os.path.isdir(scratch):
        bench.sh(["git", "-C", ROOT, "worktree", "add", "--detach", scratch, rev])
        if os.path.isdir(os.path.join(ROOT, ".build", "checkouts")):
            os.makedirs(os.path.join(scratch, ".build"), exist_ok=True)
            bench.sh(["cp", "-a", os.path.join(ROOT, ".build", "checkouts"), os.path.join(ROOT, ".build", "repositories"),
                      os.path.join(scratch, ".build")], check=False)
    bench.sh(["git", "-C", scratch, "checkout", "--detach", "-q", rev])
    started = time.time()
    bench.sh(["swift", "build", "-c", "release", "--product", "cairn"], cwd=scratch, stdout=subprocess.DEVNULL)
    binary = os.path.join(out_dir, f"cairn-{rev[:10]}")
    shutil.copy(os.path.join(scratch, ".build", "release", "cairn"), binary)
    bench.log(f"built {rev} in {time.time() - started:.0f} s")
    return binary


def digest_cost(binary, work, mib):
    """Loads an N MiB database and times a consistency check on it."""
    c = bench.Cairn(work, binary)
    try:
        f = os.path.join(work, "digest.sqlite")
        db = sqlite3.connect(f)
        db.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, payload BLOB, note TEXT)")
        db.execute(f"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {mib * 1024}) "
                   "INSERT INTO big SELECT i, randomblob(1000), 'n' || (i % 100) FROM c")
        db.commit()
        db.close()
        data = open(f, "rb").read()
        url = c.leader_url()
        started = time.time()
        load_raw(url + "/db/load", data)
        load_seconds = time.time() - started
        started = time.time()
        status, body = bench.http("POST", url + "/v1/db/default/check", {}, timeout=600)
        seconds = time.time() - started
        reply = json.loads(body)
        gib = reply["bytes"] / (1 << 30)
        return {"file_mib": len(data) >> 20, "load_seconds": load_seconds, "check_seconds": seconds,
                "digested_bytes": reply["bytes"], "seconds_per_gib": seconds / gib if gib else None}
    finally:
        c.stop()


def load_raw(url, data):
    import urllib.request
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=1200) as r:
        return r.status, r.read()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("new")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--digest-mib", type=int, default=0)
    a = p.parse_args()
    if shutil.which("wrk") is None:
        bench.sh("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk", stdout=subprocess.DEVNULL)
    out = tempfile.mkdtemp(prefix="cairn-compare-")
    scratch = os.path.join(tempfile.gettempdir(), "cairn-compare-worktree")
    binaries = {"base": build(a.base, scratch, out), "new": build(a.new, scratch, out)}
    results = {}
    for op in ["write", "read"]:
        samples = {k: [] for k in binaries}
        for r in range(a.runs):
            for name, binary in binaries.items():
                work = tempfile.mkdtemp(dir=out)
                c = bench.Cairn(work, binary)
                try:
                    url = c.leader_url()
                    samples[name].append(bench.measure_once(c, lambda: bench.wrk(c.script(op), url, a.clients, a.seconds, work)))
                finally:
                    c.stop()
                    shutil.rmtree(work, ignore_errors=True)
                s = samples[name][-1]
                bench.log(f"  {op:5s} run {r + 1} {name:4s}: {s['throughput']:8.0f} ops/s  p99 {s['p99'] / 1000:6.2f} ms  "
                          f"cpu/1000 {s['cpu_per_1000']:.3f} s  errors {s['errors']}")
        med = {k: statistics.median(x["throughput"] for x in v) for k, v in samples.items()}
        results[op] = {"base": med["base"], "new": med["new"], "ratio": med["new"] / med["base"],
                       "samples": {k: [x["throughput"] for x in v] for k, v in samples.items()}}
        bench.log(f"{op}: base {med['base']:.0f}/s, new {med['new']:.0f}/s, new/base {results[op]['ratio']:.3f}")
    if a.digest_mib:
        results["digest"] = digest_cost(binaries["new"], tempfile.mkdtemp(dir=out), a.digest_mib)
        bench.log(f"digest: {json.dumps(results['digest'])}")
    print(json.dumps({"base": a.base, "new": a.new, "clients": a.clients, "runs": a.runs, "seconds": a.seconds, **results}, indent=2))
    bench.sh(["git", "-C", ROOT, "worktree", "remove", "--force", scratch], check=False)


if __name__ == "__main__":
    main()
