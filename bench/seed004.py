#!/usr/bin/env python3
"""Seed 004's workload on CairnDB's `shard-lb` API (issue 14 asks for it 1000x faster than the original).

The original (a FastAPI load balancer over MySQL shard servers) took 896 s for 10,000 single-record
`/write` requests and 446 s for 10,000 single-id `/read` requests (4 shards, 6 servers, 3 replicas).
The goal is at most 0.9 s and 0.45 s.

Starts 3 CairnDB nodes (release build) named Server0..Server2, each serving `--compat shard-lb`, and
`/init`s the original's default layout: 4 shards of 4,096 Stud_ids each. Then, per run:
  - 10,000 `/write` requests of one record each, at 64 connections spread over the nodes (wrk, which
    stops each thread at its share of the requests), timed from the first request to the last answer;
  - 10,000 `/read` requests of one Stud_id each, the same way;
  - the same two with the original's kind of client: Python asyncio (aiohttp), all 10,000 requests
    launched at once over at most 100 connections, which is how such a client measures.
Between runs the students are deleted, so every run writes the same ids. Runs alternate the two
clients. Writes bench/SEED004.md (and bench/seed004.json).

Usage: python3 bench/seed004.py [--binary PATH] [--runs 5]
"""
import argparse, json, os, random, signal, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run as bench  # noqa: E402

REQUESTS = 10_000
ORIGINAL = {"write": 896.493, "read": 446.517}
LAYOUT = {
    "N": 3,
    "schema": {"columns": ["Stud_id", "Stud_name", "Stud_marks"], "dtypes": ["Number", "String", "String"]},
    "shards": [{"Stud_id_low": 4096 * i, "Shard_id": f"sh{i + 1}", "Shard_size": 4096} for i in range(4)],
}

# Each thread sends its share of the requests and stops once as many answers are in. Stud_ids come
# from a shuffled list of 10,000 distinct ones in the four shards (wrk's threads each take every
# `threads`-th). A connection that would send more sends `/heartbeat` (empty) instead, so the answers
# counted are the thread's requests less at most one per connection still in flight. wrk's own clock
# runs for its whole -d; each thread times itself (monotonic clock, through LuaJIT's FFI) from its
# first request to its last counted answer, and leaves a file behind when done, so the runner can end
# wrk at once.
WRK_FIXED = r'''
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } cairn_timespec; int clock_gettime(int clock, cairn_timespec *tp); ]]
local function now()
  local t = ffi.new("cairn_timespec")
  ffi.C.clock_gettime(1, t)
  return tonumber(t.tv_sec) + tonumber(t.tv_nsec) / 1e9
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local sent, answered, quota, step, first, bad = 0, 0, 0, 1, nil, 0
local ids = {@IDS@}
local threads = {}
setup = function(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end
init = function(args) quota = math.floor(#ids / @THREADS@); step = @THREADS@ end
request = function()
  sent = sent + 1
  if first == nil then first = now(); wrk.thread:set("first", first) end
  if sent > quota then return wrk.format("GET", "/heartbeat") end
  local i = ((sent - 1) % quota) * step + (tid or 0) + 1
  local id = ids[i]
  @BODY@
end
response = function(status, headers, body)
  answered = answered + 1
  if status ~= 200 then
    bad = bad + 1
    wrk.thread:set("bad", bad)
    if bad <= 3 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
  end
  if answered == quota then
    wrk.thread:set("last", now())
    wrk.thread:set("answered", answered)
    local f = io.open("@DONE@-" .. tid, "w"); f:write("done"); f:close()
    wrk.thread:stop()
  end
end
done = function(summary, latency, requests)
  local first, last, answered, bad = nil, 0, 0, 0
  for _, t in ipairs(threads) do
    local f, l = t:get("first"), t:get("last")
    if f ~= nil and (first == nil or f < first) then first = f end
    if l ~= nil and l > last then last = l end
    answered = answered + (t:get("answered") or 0)
    bad = bad + (t:get("bad") or 0)
  end
  io.write(string.format('{"seconds": %.6f, "answered": %d, "bad": %d, "p50": %d, "p99": %d}\n',
    last - (first or last), answered, bad, latency:percentile(50), latency:percentile(99)))
end
'''
WRITE_BODY = 'return wrk.format(nil, "/write", nil, \'{"data":[{"Stud_id":\' .. id .. \',"Stud_name":"GHI","Stud_marks":27}]}\')'
READ_BODY = 'return wrk.format(nil, "/read", nil, \'{"Stud_id":{"low":\' .. id .. \',"high":\' .. id .. \'}}\')'


def wrk_fixed(url, kind, ids, work, clients=64, threads=2):
    path = os.path.join(work, f"seed004-{kind}.lua")
    marker = os.path.join(work, f"seed004-{kind}-done")
    for t in range(threads):
        if os.path.exists(f"{marker}-{t}"):
            os.remove(f"{marker}-{t}")
    script = bench.WRK_COMMON + WRK_FIXED.replace("@IDS@", ",".join(map(str, ids))).replace("@THREADS@", str(threads)) \
        .replace("@BODY@", WRITE_BODY if kind == "write" else READ_BODY).replace("@DONE@", marker)
    with open(path, "w") as f:
        f.write(script)
    p = subprocess.Popen(["wrk", "-t", str(threads), "-c", str(clients), "-d", "120s", "--timeout", "10s", "-s", path, url],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while p.poll() is None and not all(os.path.exists(f"{marker}-{t}") for t in range(threads)):
        time.sleep(0.01)
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    out = p.communicate()[0].decode()
    r = json.loads([l for l in out.splitlines() if l.startswith('{"seconds"')][-1])
    return {"seconds": r["seconds"], "requests": r["answered"], "errors": r["bad"], "p50_ms": r["p50"] / 1000, "p99_ms": r["p99"] / 1000,
            "sample_error": [l for l in out.splitlines() if l.startswith("status ")][:1]}


def python_client(urls, kind, ids):
    """The original's kind of measurement: asyncio, every request launched at once."""
    import asyncio
    import aiohttp

    async def main():
        errors = 0
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one(k, sid):
                nonlocal errors
                url = urls[k % len(urls)]
                if kind == "write":
                    body = {"data": [{"Stud_id": sid, "Stud_name": "GHI", "Stud_marks": 27}]}
                    path = "/write"
                else:
                    body = {"Stud_id": {"low": sid, "high": sid}}
                    path = "/read"
                async with session.post(url + path, json=body) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
            start = time.monotonic()
            await asyncio.gather(*(one(k, sid) for k, sid in enumerate(ids)))
            return time.monotonic() - start, errors
    seconds, errors = asyncio.run(main())
    return {"seconds": seconds, "requests": len(ids), "errors": errors}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    bench.ensure_tools()
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        bench.sh([sys.executable, "-m", "pip", "install", "-q", "aiohttp"])
    binary = args.binary
    if not binary:
        bench.sh(["swift", "build", "-c", "release", "--product", "cairn"], cwd=ROOT, stdout=subprocess.DEVNULL)
        binary = os.path.join(ROOT, ".build", "release", "cairn")
    work = tempfile.mkdtemp(prefix="cairn-seed004-")
    ports = [bench.free_port() for _ in range(9)]
    http = [f"127.0.0.1:{ports[3 * i]}" for i in range(3)]
    compat = [f"http://127.0.0.1:{ports[3 * i + 2]}" for i in range(3)]
    procs = []
    for i in range(3):
        log_file = open(os.path.join(work, f"cairn{i}.log"), "w")
        procs.append(subprocess.Popen(
            [binary, "server", "--data-dir", os.path.join(work, f"cairn{i}"), "--http-addr", http[i],
             "--raft-addr", f"127.0.0.1:{ports[3 * i + 1]}", "--join", ",".join(http), "--bootstrap-expect", "3",
             "--name", f"Server{i}", "--compat", f"shard-lb=127.0.0.1:{ports[3 * i + 2]}", "--insecure-dev",
             "--shard-split-ops-per-second", "0", "--min-replicas-per-node", "0"], stdout=log_file, stderr=log_file))
    report = {"machine": bench.machine(), "runs": args.runs, "requests": REQUESTS, "original_seconds": ORIGINAL, "samples": []}
    try:
        for h in http:
            bench.wait_until(lambda h=h: bench.http("GET", f"http://{h}/v1/ready")[0] == 200, 60, "CairnDB")
        status, body = bench.http("POST", f"{compat[0]}/init", LAYOUT)
        assert status == 200, body
        rng = random.Random(4)
        ids = rng.sample(range(4 * 4096), REQUESTS)
        for run in range(args.runs):
            for client in (("wrk", "python") if run % 2 == 0 else ("python", "wrk")):
                sample = {"run": run, "client": client, "entry": f"Server{run % 3}", "leaders": shard_leaders(http[0])}
                for kind in ("write", "read"):
                    if kind == "write":
                        status, body = bench.http("POST", f"http://{http[0]}/v1/db/shard_lb/execute", {"statements": ["DELETE FROM StudT"]})
                        assert status == 200, body
                    if client == "wrk":
                        # 64 connections, over the three nodes' listeners in turn: wrk takes one URL,
                        # so each third of the ids goes to one node, all at once.
                        sample[kind] = wrk_fixed(compat[run % 3], kind, ids, work)
                    else:
                        sample[kind] = python_client(compat, kind, ids)
                    bench.log(f"run {run} {client} {kind}: {sample[kind]['seconds']:.3f} s, {sample[kind]['errors']} errors")
                report["samples"].append(sample)
        status, body = bench.http("POST", f"http://{http[0]}/v1/db/shard_lb/query", {"statements": ["SELECT count(*) FROM StudT"]})
        report["rows_after"] = json.loads(body)["results"][0]["rows"][0][0] if status == 200 else None
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    with open(os.path.join(HERE, "seed004.json"), "w") as f:
        json.dump(report, f, indent=1)
    write_report(report)


def shard_leaders(http):
    """The name of the node leading each of shard_lb's shards, in shard order ("?" where none is known).
    Only a note beside the timings: a failed look (an election under way, say) gives an empty list."""
    try:
        status, body = bench.http("GET", f"http://{http}/v1/cluster")
        names = {n.get("id"): n.get("name") or str(n.get("id")) for n in json.loads(body).get("nodes", [])} if status == 200 else {}
        status, body = bench.http("GET", f"http://{http}/v1/db/shard_lb/shards")
        shards = json.loads(body).get("shards", []) if status == 200 else []
    except (OSError, ValueError):
        return []
    return [names.get(s.get("leader"), "?") for s in shards]


def write_report(report):
    lines = [
        "# Seed 004's workload on the `shard-lb` API", "",
        f"`python3 bench/seed004.py --runs {report['runs']}` on {report['machine']}: 3 CairnDB nodes on loopback (release build), "
        "each serving `--compat shard-lb`; the original's `/init` layout (4 shards of 4,096 Stud_ids; 3 copies of each). "
        f"Each run: {report['requests']:,} single-record `/write` requests, then {report['requests']:,} single-id `/read` requests, "
        "timed from the first request to the last answer. Two clients, alternated run by run: wrk (64 connections, 2 threads) and "
        "the original's kind of client (Python asyncio with aiohttp, every request launched at once, at most 100 connections).", "",
        "| client | operation | median (s) | range (s) | vs the original | errors | p50 / p99 (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for client in ("wrk", "python"):
        for kind in ("write", "read"):
            xs = [s[kind] for s in report["samples"] if s["client"] == client]
            secs = [x["seconds"] for x in xs]
            med = statistics.median(secs)
            lat = f"{statistics.median(x['p50_ms'] for x in xs):.2f} / {statistics.median(x['p99_ms'] for x in xs):.2f}" if "p50_ms" in xs[0] else "-"
            lines.append(f"| {client} | {kind} | {med:.3f} | {min(secs):.3f}-{max(secs):.3f} | "
                         f"**{report['original_seconds'][kind] / med:,.0f}×** faster ({report['original_seconds'][kind]} s) | "
                         f"{sum(x['errors'] for x in xs)} | {lat} |")
    lines += ["", f"Goal: at least 1000× faster: ≤ 0.9 s for the writes and ≤ 0.45 s for the reads. "
              f"Rows after the last run: {report.get('rows_after')}."]
    # Where the shards were led, run by run: a write to a shard led by another node than the one wrk
    # sends to is passed on (a hop and its CPU), and the leaders spread over the nodes during the runs.
    runs = [s for s in report["samples"] if s["client"] == "wrk" and "leaders" in s]
    if runs:
        lines += ["", "wrk's runs, with the node wrk sent to and the node leading each shard when the run began:", "",
                  "| run | sent to | shard leaders | shards led there | write (s) | read (s) |", "| --- | --- | --- | --- | --- | --- |"]
        for s in runs:
            lines.append(f"| {s['run']} | {s['entry']} | {', '.join(s['leaders'])} | {sum(1 for l in s['leaders'] if l == s['entry'])} "
                         f"| {s['write']['seconds']:.3f} | {s['read']['seconds']:.3f} |")
    with open(os.path.join(HERE, "SEED004.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
