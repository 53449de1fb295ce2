#!/usr/bin/env python3
"""CairnDB against reference systems, side by side, in one run on this machine.

Installs what it needs (apt-get, pip), builds CairnDB in release mode, starts on loopback:
  - CairnDB: 3 nodes, fsync on (the default);
  - etcd 3.4: 3 members, default durability, driven through its HTTP/JSON gateway;
  - PostgreSQL: a primary and one synchronous standby (synchronous_commit=on), driven by pgbench;
  - SQLite alone (WAL, synchronous=FULL), and the physical floor (fsync latency, loopback round trip);
measures single-row writes and point reads at 1, 16 and 64 clients (median of 3 runs; CairnDB and etcd
through the same HTTP load tool, wrk), samples the CPU time of every server process around each run,
stops everything, and writes bench/RESULTS.md and PNG charts.

Usage: python3 bench/run.py [--seconds 5] [--runs 3] [--clients 1,16,64]
"""
import argparse, base64, json, os, shutil, signal, socket, sqlite3, statistics, subprocess, sys, tempfile, time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VALUE = "x" * 100
KEYS = 10000


def log(*a):
    print(*a, flush=True)


def sh(cmd, check=True, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=check, **kw)


def ensure_tools():
    have_postgres = os.path.isdir("/usr/lib/postgresql") and any(
        os.path.exists(f"/usr/lib/postgresql/{v}/bin/pgbench") for v in os.listdir("/usr/lib/postgresql"))
    if shutil.which("etcd") is None or shutil.which("wrk") is None or not have_postgres:
        log("installing etcd-server, wrk, postgresql ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh("apt-get update -q", env=env, stdout=subprocess.DEVNULL)
        sh("apt-get install -y -q etcd-server wrk postgresql libsqlite3-dev", env=env, stdout=subprocess.DEVNULL)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sh([sys.executable, "-m", "pip", "install", "-q", "matplotlib"])
    # Debian starts a PostgreSQL cluster of its own on install; it would only take memory.
    sh("service postgresql stop", check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pg_bin():
    versions = sorted(os.listdir("/usr/lib/postgresql"))
    return f"/usr/lib/postgresql/{versions[-1]}/bin"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http(method, url, body=None, timeout=10):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def wait_until(check, seconds, what):
    end = time.time() + seconds
    while time.time() < end:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (FileNotFoundError, IndexError):
            pass
    return total


# ---------------------------------------------------------------- the physical floor

def fsync_latency(directory, n=200):
    path = os.path.join(directory, "fsync.probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    samples = []
    for i in range(n):
        os.pwrite(fd, b"x" * 4096, i * 4096)
        t = time.perf_counter()
        os.fsync(fd)
        samples.append(time.perf_counter() - t)
    os.close(fd)
    os.unlink(path)
    return statistics.median(samples)


def loopback_rtt(n=2000):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        c, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            b = c.recv(64)
            if not b:
                os._exit(0)
            c.sendall(b)
    cl = socket.create_connection(("127.0.0.1", port))
    cl.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        cl.sendall(b"p")
        cl.recv(64)
        samples.append(time.perf_counter() - t)
    cl.close()
    os.waitpid(pid, 0)
    srv.close()
    return statistics.median(samples)


def sqlite_alone(directory, seconds):
    db = sqlite3.connect(os.path.join(directory, "alone.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
    out = {}
    for op in ["write", "read"]:
        lat = []
        end = time.time() + seconds
        k = 0
        while time.time() < end:
            t = time.perf_counter()
            if op == "write":
                db.execute("INSERT INTO kv(k, v) VALUES(?, ?)", (k, VALUE))
            else:
                db.execute("SELECT v FROM kv WHERE k = ?", (k % max(1, KEYS),)).fetchall()
            lat.append(time.perf_counter() - t)
            k += 1
        lat.sort()
        out[op] = {"throughput": len(lat) / seconds, "p50": lat[len(lat) // 2] * 1e6, "p99": lat[int(len(lat) * 0.99)] * 1e6}
    db.close()
    return out


# ---------------------------------------------------------------- systems

class Cairn:
    name = "CairnDB"

    def __init__(self, work, binary):
        self.procs, self.http = [], []
        ports = [free_port() for _ in range(6)]
        self.http = [f"127.0.0.1:{ports[2 * i]}" for i in range(3)]
        for i in range(3):
            log_file = open(os.path.join(work, f"cairn{i}.log"), "w")
            self.procs.append(subprocess.Popen(
                [binary, "server", "--data-dir", os.path.join(work, f"cairn{i}"), "--http-addr", self.http[i],
                 "--raft-addr", f"127.0.0.1:{ports[2 * i + 1]}", "--join", ",".join(self.http), "--bootstrap-expect", "3",
                 "--insecure-dev"], stdout=log_file, stderr=log_file))
        for h in self.http:
            wait_until(lambda h=h: http("GET", f"http://{h}/v1/ready")[0] == 200, 60, "CairnDB")
        http("POST", f"http://{self.http[0]}/v1/db/default/execute",
             {"statements": ["CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)"]})
        for start in range(0, KEYS, 500):
            rows = ",".join(f"({k}, '{VALUE}')" for k in range(start, min(KEYS, start + 500)))
            http("POST", f"http://{self.http[0]}/v1/db/default/execute", {"statements": ["INSERT INTO kv(k, v) VALUES " + rows]})

    def leader_url(self):
        for h in self.http:
            st = json.loads(http("GET", f"http://{h}/v1/status")[1])
            for g in st["groups"]:
                if g["group"] == 1 and g["role"] == "leader":
                    return f"http://{h}"
        return f"http://{self.http[0]}"

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


class Etcd:
    name = "etcd"

    def __init__(self, work):
        self.procs = []
        ports = [free_port() for _ in range(6)]
        self.clients = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(3)]
        peers = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(3)]
        cluster = ",".join(f"e{i}={peers[i]}" for i in range(3))
        for i in range(3):
            log_file = open(os.path.join(work, f"etcd{i}.log"), "w")
            self.procs.append(subprocess.Popen(
                ["etcd", "--name", f"e{i}", "--data-dir", os.path.join(work, f"etcd{i}"),
                 "--listen-client-urls", self.clients[i], "--advertise-client-urls", self.clients[i],
                 "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
                 "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "bench"],
                stdout=log_file, stderr=log_file))
        for c in self.clients:
            wait_until(lambda c=c: http("GET", f"{c}/health")[0] == 200, 60, "etcd")
        for k in range(0, 1000):
            http("POST", f"{self.clients[0]}/v3/kv/put", {"key": b64(f"k{k}"), "value": b64(VALUE)})

    def leader_url(self):
        for c in self.clients:
            st = json.loads(http("POST", f"{c}/v3/maintenance/status", {})[1])
            if st.get("leader") == st.get("header", {}).get("member_id"):
                return c
        return self.clients[0]

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(20)


def b64(s):
    return base64.b64encode(s.encode()).decode()


class Postgres:
    name = "PostgreSQL"

    def __init__(self, work):
        self.bin = pg_bin()
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres", "postgres")
        self.port, self.standby_port = free_port(), free_port()
        primary, standby = os.path.join(self.dir, "primary"), os.path.join(self.dir, "standby")
        self.pg(f"{self.bin}/initdb -D {primary} -U postgres -A trust")
        with open(os.path.join(primary, "postgresql.conf"), "a") as f:
            f.write(f"port={self.port}\nlisten_addresses='127.0.0.1'\nsynchronous_standby_names='standby1'\n"
                    "synchronous_commit=on\nwal_level=replica\nmax_wal_senders=4\nunix_socket_directories='/tmp'\n")
        with open(os.path.join(primary, "pg_hba.conf"), "a") as f:
            f.write("host replication postgres 127.0.0.1/32 trust\n")
        self.pg(f"{self.bin}/pg_ctl -D {primary} -l {self.dir}/primary.log -w start")
        self.pg(f"{self.bin}/pg_basebackup -h 127.0.0.1 -p {self.port} -U postgres -D {standby} -R")
        with open(os.path.join(standby, "postgresql.conf"), "a") as f:
            f.write(f"port={self.standby_port}\n")
        # pg_basebackup -R wrote a primary_conninfo into postgresql.auto.conf, which wins over postgresql.conf;
        # the standby must name itself there for synchronous_standby_names to match.
        with open(os.path.join(standby, "postgresql.auto.conf"), "a") as f:
            f.write(f"primary_conninfo = 'host=127.0.0.1 port={self.port} user=postgres application_name=standby1'\n")
        self.pg(f"{self.bin}/pg_ctl -D {standby} -l {self.dir}/standby.log -w start")
        self.primary, self.standby = primary, standby
        self.psql("CREATE TABLE kv(k BIGINT PRIMARY KEY, v TEXT)")
        self.psql(f"INSERT INTO kv SELECT g, repeat('x', 100) FROM generate_series(0, {KEYS - 1}) g")
        wait_until(lambda: "standby1" in self.psql("SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'"),
                   30, "the synchronous standby")

    def pg(self, cmd):
        return sh(["runuser", "-u", "postgres", "--", "bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode()

    def psql(self, sql):
        return self.pg(f"{self.bin}/psql -h 127.0.0.1 -p {self.port} -U postgres -Atc \"{sql}\"")

    def pids(self):
        out = sh("pgrep -f 'postgres'", check=False, stdout=subprocess.PIPE).stdout.decode().split()
        return [int(p) for p in out]

    def stop(self):
        for d in [self.standby, self.primary]:
            self.pg(f"{self.bin}/pg_ctl -D {d} -m fast -w stop")


# ---------------------------------------------------------------- load

WRK_COMMON = r'''
local counter = 0
local thread_id = 0
setup = function(thread) thread:set("tid", thread_id); thread_id = thread_id + 1 end
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "duration_us": %d, "errors": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}\n',
    summary.requests, summary.duration, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
local b64chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
function b64(data)
  return ((data:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end
'''

SCRIPTS = {
    ("CairnDB", "write"): r'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local k = 1000000000 + (tid or 0) * 100000000 + counter + math.random(0, 999) * 1000000000000
  return wrk.format(nil, "/v1/db/default/execute", nil, '{"statements":[["INSERT INTO kv(k, v) VALUES(?, ?)",' .. k .. ',"@VALUE@"]]}')
end
''',
    ("CairnDB", "read"): r'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/v1/db/default/query", nil, '{"statements":[["SELECT v FROM kv WHERE k = ?",' .. math.random(0, @KEYS@ - 1) .. ']]}')
end
''',
    ("etcd", "write"): r'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local value = b64("@VALUE@")
request = function()
  counter = counter + 1
  return wrk.format(nil, "/v3/kv/put", nil, '{"key":"' .. b64("w" .. (tid or 0) .. "-" .. counter .. "-" .. math.random(0, 1e9)) .. '","value":"' .. value .. '"}')
end
''',
    ("etcd", "read"): r'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local keys = {}
for i = 0, 999 do keys[i] = b64("k" .. i) end
request = function()
  return wrk.format(nil, "/v3/kv/range", nil, '{"key":"' .. keys[math.random(0, 999)] .. '"}')
end
''',
}


def run_wrk(system, op, url, clients, seconds, work):
    script = os.path.join(work, f"{system}-{op}.lua")
    with open(script, "w") as f:
        # Placeholders no SQL word contains ("VALUE" would also rewrite "VALUES").
        f.write(WRK_COMMON + SCRIPTS[(system, op)].replace("@VALUE@", VALUE).replace("@KEYS@", str(KEYS)))
    threads = min(clients, 2)
    out = sh(["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{seconds}s", "--timeout", "10s", "-s", script, url],
             stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode()
    line = [l for l in out.splitlines() if l.startswith('{"requests"')][-1]
    r = json.loads(line)
    return {"throughput": r["requests"] / (r["duration_us"] / 1e6), "p50": r["p50"], "p99": r["p99"], "p999": r["p999"],
            "errors": r["errors"], "requests": r["requests"]}


def run_pgbench(pg, op, clients, seconds, work):
    script = os.path.join(work, f"pg-{op}.sql")
    with open(script, "w") as f:
        if op == "write":
            f.write("\\set k random(1000000000, 9000000000000)\nINSERT INTO kv(k, v) VALUES (:k, repeat('x', 100)) ON CONFLICT (k) DO NOTHING;\n")
        else:
            f.write(f"\\set k random(0, {KEYS - 1})\nSELECT v FROM kv WHERE k = :k;\n")
    os.chmod(script, 0o644)
    logdir = tempfile.mkdtemp(dir=work)
    shutil.chown(logdir, "postgres", "postgres")
    out = pg.pg(f"cd {logdir} && {pg.bin}/pgbench -h 127.0.0.1 -p {pg.port} -U postgres -n -c {clients} -j {min(clients, 2)} "
                f"-T {seconds} -l -f {script} postgres")
    lat = []
    for name in os.listdir(logdir):
        for line in open(os.path.join(logdir, name)):
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]))
    shutil.rmtree(logdir)
    lat.sort()
    n = len(lat)
    tps = [float(l.split("=")[1].split()[0]) for l in out.splitlines() if l.startswith("tps =")]
    return {"throughput": tps[0] if tps else n / seconds, "p50": lat[n // 2] if n else 0, "p99": lat[int(n * 0.99)] if n else 0,
            "p999": lat[int(n * 0.999)] if n else 0, "errors": 0, "requests": n}


def measure_once(system, runner):
    pids = system.pids()
    c0 = cpu_seconds(pids)
    r = runner()
    r["cpu_per_1000"] = (cpu_seconds(pids) - c0) / max(1, r["requests"]) * 1000
    return r


def median_of(system, op, clients, results):
    results = sorted(results, key=lambda r: r["throughput"])
    median = results[len(results) // 2]
    log(f"  {system.name:10s} {op:5s} {clients:3d} clients: {median['throughput']:9.0f} ops/s  p50 {median['p50'] / 1000:7.2f} ms  "
        f"p99 {median['p99'] / 1000:7.2f} ms  cpu/1000 {median['cpu_per_1000']:.3f} s  errors {median['errors']}")
    return median


def measure(system, op, clients, runs, seconds, work, runner):
    return median_of(system, op, clients, [measure_once(system, runner) for _ in range(runs)])


def measure_interleaved(systems, op, clients, runs, runners):
    """Runs the systems in turn, run after run: a machine whose speed drifts (a shared host) then
    affects every system alike, and the ratios between them stay fair."""
    samples = {s.name: [] for s in systems}
    for _ in range(runs):
        for s in systems:
            samples[s.name].append(measure_once(s, runners[s.name]))
    return {s.name: median_of(s, op, clients, samples[s.name]) for s in systems}


# ---------------------------------------------------------------- report

def machine():
    mem = [l for l in open("/proc/meminfo") if l.startswith("MemTotal")][0].split()[1]
    cpu = [l for l in open("/proc/cpuinfo") if l.startswith("model name")]
    return {"cores": os.cpu_count(), "memory_gib": round(int(mem) / 1048576, 1), "cpu": cpu[0].split(":", 1)[1].strip() if cpu else "?"}


def write_report(results, floor, alone, info, clients, runs, seconds, elapsed, cairn_version, generated=None):
    generated = generated or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    systems = ["CairnDB", "etcd", "PostgreSQL"]
    for metric, fname, label in [("throughput", "throughput.png", "operations per second"), ("p99", "p99.png", "p99 latency (ms)")]:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, op in zip(axes, ["write", "read"]):
            width = 0.27
            for i, s in enumerate(systems):
                vals = [results[(s, op, c)][metric] / (1000 if metric == "p99" else 1) for c in clients]
                ax.bar([x + i * width for x in range(len(clients))], vals, width, label=s)
            ax.set_xticks([x + width for x in range(len(clients))])
            ax.set_xticklabels([f"{c} clients" for c in clients])
            ax.set_title(f"{'single-row writes' if op == 'write' else 'point reads (linearizable)'}: {label}")
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(HERE, fname), dpi=90)
        plt.close(fig)

    def ratio(a, b):
        return f"{a / b:.2f}x" if b else "-"

    lines = ["# Benchmark results", "",
             f"Generated by `python3 bench/run.py` on {generated} in {elapsed / 60:.1f} min "
             f"({cairn_version}).", "",
             f"Machine: {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB memory. "
             f"Disk: fsync of a 4 KiB write {floor['fsync'] * 1e3:.3f} ms (median of 200). "
             f"Loopback TCP round trip {floor['rtt'] * 1e6:.0f} µs (median of 2,000).", "",
             f"Each figure is the median of {runs} runs of {seconds} s. CairnDB and etcd run side by side and their runs "
             "alternate (CairnDB, etcd, CairnDB, ...), so a drift in the machine's speed touches both alike. "
             "They are driven by the same tool (wrk, "
             f"Lua scripts in the run's work directory) with the same connection counts; PostgreSQL by pgbench. "
             "Writes are single-row inserts of a 100-byte value; reads are point reads of one of 10,000 keys "
             "(CairnDB: linearizable, the default; etcd: linearizable range, the default; PostgreSQL: on the primary). "
             "Requests go to one node (the leader). CPU is the user+system time of all the system's server processes "
             "during the run, per 1,000 operations (not for PostgreSQL, whose per-connection backends come and go within a run). "
             "CairnDB runs with --insecure-dev (no auth), as etcd runs without.", "",
             "| system | op | clients | ops/s | p50 ms | p99 ms | p99.9 ms | CPU s / 1000 ops | vs etcd (ops/s) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for op in ["write", "read"]:
        for c in clients:
            for s in systems:
                r = results[(s, op, c)]
                e = results[("etcd", op, c)]
                cpu = "n/a" if s == "PostgreSQL" else f"{r['cpu_per_1000']:.3f}"
                lines.append(f"| {s} | {op} | {c} | {r['throughput']:.0f} | {r['p50'] / 1000:.2f} | {r['p99'] / 1000:.2f} | "
                             f"{r['p999'] / 1000:.2f} | {cpu} | {ratio(r['throughput'], e['throughput']) if s != 'etcd' else ''} |")
    lines += ["", f"SQLite alone (one connection, WAL, synchronous=FULL): writes {alone['write']['throughput']:.0f}/s "
                  f"(p50 {alone['write']['p50'] / 1000:.2f} ms, p99 {alone['write']['p99'] / 1000:.2f} ms); reads "
                  f"{alone['read']['throughput']:.0f}/s (p50 {alone['read']['p50']:.0f} µs).", ""]
    top = clients[-1]
    cw, ew = results[("CairnDB", "write", top)], results[("etcd", "write", top)]
    cr, er = results[("CairnDB", "read", top)], results[("etcd", "read", top)]
    c1 = results[("CairnDB", "write", clients[0])]
    floor_us = (floor["fsync"] + floor["rtt"]) * 1e6
    targets = [
        (f"writes at {top} clients >= 1.5x etcd", cw["throughput"] / ew["throughput"], 1.5, ">="),
        (f"write p99 at {top} clients <= etcd's", cw["p99"] / max(1, ew["p99"]), 1.0, "<="),
        (f"linearizable reads at {top} clients >= 2x etcd", cr["throughput"] / er["throughput"], 2.0, ">="),
        ("single-client write p50 <= 1.3x (fsync + round trip)", c1["p50"] / floor_us, 1.3, "<="),
        (f"CPU per write at {top} clients <= 0.5x etcd's", cw["cpu_per_1000"] / max(1e-9, ew["cpu_per_1000"]), 0.5, "<="),
    ]
    lines += ["## Targets", "", "| target | measured | met |", "| --- | ---: | --- |"]
    for name, value, bound, cmp in targets:
        met = value >= bound if cmp == ">=" else value <= bound
        lines.append(f"| {name} | {value:.3f}x | {'yes' if met else 'no'} |")
    baseline_path = os.path.join(HERE, "baseline.json")
    if os.path.exists(baseline_path):
        base = json.load(open(baseline_path))
        before = {(r["system"], r["op"], r["clients"]): r for r in base["results"]}
        lines += ["", "## Before and after the optimization rounds", "",
                  f"Before: {base.get('version', 'the baseline run')} (`bench/baseline.json`, same machine, same script). "
                  "After: this run.", "",
                  "| CairnDB | clients | ops/s before | ops/s after | p99 ms before | p99 ms after | CPU s/1000 before | CPU s/1000 after |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for op in ["write", "read"]:
            for c in clients:
                b, a = before.get(("CairnDB", op, c)), results[("CairnDB", op, c)]
                if b:
                    lines.append(f"| {op} | {c} | {b['throughput']:.0f} | {a['throughput']:.0f} | {b['p99'] / 1000:.2f} | "
                                 f"{a['p99'] / 1000:.2f} | {b['cpu_per_1000']:.3f} | {a['cpu_per_1000']:.3f} |")
        notes = os.path.join(HERE, "NOTES.md")
        if os.path.exists(notes):
            lines += ["", open(notes).read().strip()]
    lines += ["", "![throughput](throughput.png)", "", "![p99 latency](p99.png)", ""]
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump({"version": cairn_version, "generated": generated, "floor": floor, "sqlite": alone, "machine": info, "seconds": seconds, "runs": runs,
                   "elapsed": elapsed,
                   "results": [{"system": s, "op": o, "clients": c, **v} for (s, o, c), v in results.items()]}, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md and the charts from bench/results.json")
    ap.add_argument("--binary", help="a cairn binary to use instead of building the release one (for trying the script)")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    if args.report_only:
        saved = json.load(open(os.path.join(HERE, "results.json")))
        results = {(r["system"], r["op"], r["clients"]): r for r in saved["results"]}
        clients = sorted({r["clients"] for r in saved["results"]})
        write_report(results, saved["floor"], saved["sqlite"], saved["machine"], clients, saved.get("runs", args.runs),
                     saved.get("seconds", args.seconds), saved.get("elapsed", 0), saved.get("version", "?"), saved.get("generated"))
        return
    started = time.time()
    ensure_tools()
    if not args.skip_build and not args.binary:
        log("building CairnDB (release) ...")
        sh(["swift", "build", "-c", "release", "--product", "cairn"], cwd=ROOT)
    binary = args.binary or os.path.join(ROOT, ".build", "release", "cairn")
    version = sh(["git", "-C", ROOT, "log", "-1", "--format=commit %h"], stdout=subprocess.PIPE).stdout.decode().strip()
    work = tempfile.mkdtemp(prefix="cairn-bench-", dir="/var/tmp")
    os.chmod(work, 0o755)
    info = machine()
    log("the floor: fsync latency and loopback round trip ...")
    floor = {"fsync": fsync_latency(work), "rtt": loopback_rtt()}
    log(f"  fsync {floor['fsync'] * 1e3:.3f} ms, round trip {floor['rtt'] * 1e6:.0f} µs")
    alone = sqlite_alone(work, args.seconds)
    results = {}
    systems = []
    try:
        # CairnDB and etcd, the pair the targets compare, run side by side with their runs interleaved.
        pair = [Cairn(work, binary)]
        systems.append(pair[0])
        pair.append(Etcd(work))
        systems.append(pair[1])
        for system in pair:
            system.url = system.leader_url()
            log(f"{system.name} is up (leader at {system.url})")
        for op in ["write", "read"]:
            for c in clients:
                runners = {s.name: (lambda s=s, op=op, c=c: run_wrk(s.name, op, s.url, c, args.seconds, work)) for s in pair}
                for name, r in measure_interleaved(pair, op, c, args.runs, runners).items():
                    results[(name, op, c)] = r
        for system in pair:
            system.stop()
            systems.remove(system)
        pg = Postgres(work)
        systems.append(pg)
        log("PostgreSQL is up")
        for op in ["write", "read"]:
            for c in clients:
                results[("PostgreSQL", op, c)] = measure(pg, op, c, args.runs, args.seconds, work,
                                                         lambda op=op, c=c: run_pgbench(pg, op, c, args.seconds, work))
        pg.stop()
        systems.remove(pg)
    finally:
        for s in systems:
            try:
                s.stop()
            except Exception:
                pass
    elapsed = time.time() - started
    write_report(results, floor, alone, info, clients, args.runs, args.seconds, elapsed, version)
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote bench/RESULTS.md, bench/throughput.png and bench/p99.png in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
