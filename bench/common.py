"""What every benchmark here shares: installing the tools, starting processes, HTTP, the physical
floor of this machine (fsync and loopback round trip), and wrk with the Lua helpers every script uses."""
import json, os, shutil, socket, sqlite3, ssl, statistics, subprocess, sys, time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The work every system gets: KEYS keys written before the runs, each write overwriting one of them
# with a VALUE_BYTES-byte value, each read fetching one.
VALUE_BYTES = 100
VALUE = "x" * VALUE_BYTES
KEYS = 10000


def log(*a):
    print(*a, flush=True)


def sh(cmd, check=True, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=check, **kw)


def ensure_tools():
    have_postgres = os.path.isdir("/usr/lib/postgresql") and any(
        os.path.exists(f"/usr/lib/postgresql/{v}/bin/pgbench") for v in os.listdir("/usr/lib/postgresql"))
    missing = [t for t in ("etcd", "wrk", "dqlite-demo", "openssl") if shutil.which(t) is None]
    if missing or not have_postgres:
        log("installing etcd-server, go-dqlite, wrk, postgresql, openssl ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh("apt-get update -q", env=env, stdout=subprocess.DEVNULL)
        sh("apt-get install -y -q etcd-server go-dqlite wrk postgresql libsqlite3-dev openssl", env=env, stdout=subprocess.DEVNULL)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sh([sys.executable, "-m", "pip", "install", "-q", "matplotlib"])
    # Debian starts a PostgreSQL cluster of its own on install; it would only take memory.
    sh("service postgresql stop", check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


_UNVERIFIED = ssl.create_default_context()
_UNVERIFIED.check_hostname = False
_UNVERIFIED.verify_mode = ssl.CERT_NONE


def http(method, url, body=None, timeout=10, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    # The benchmark's own certificates: the load is what is measured, not the checking of a chain.
    with urllib.request.urlopen(req, timeout=timeout, context=_UNVERIFIED if url.startswith("https") else None) as r:
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


def rss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return total


def machine():
    mem = [l for l in open("/proc/meminfo") if l.startswith("MemTotal")][0].split()[1]
    cpu = [l for l in open("/proc/cpuinfo") if l.startswith("model name")]
    return {"cores": os.cpu_count(), "memory_gib": round(int(mem) / 1048576, 1), "cpu": cpu[0].split(":", 1)[1].strip() if cpu else "?"}


def make_certificates(directory):
    """A CA and one server certificate for 127.0.0.1 (both systems' HTTPS and etcd's peers use it)."""
    os.makedirs(directory, exist_ok=True)
    ca, srv = os.path.join(directory, "ca"), os.path.join(directory, "server")
    sh(f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {ca}.key -out {ca}.pem "
       f"-days 2 -subj /CN=bench-ca", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sh(f"openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {srv}.key -out {srv}.csr "
       f"-subj /CN=127.0.0.1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ext = os.path.join(directory, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    sh(f"openssl x509 -req -in {srv}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -out {srv}.pem -days 2 -extfile {ext}",
       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for name in os.listdir(directory):
        os.chmod(os.path.join(directory, name), 0o644)
    return {"ca": f"{ca}.pem", "cert": f"{srv}.pem", "key": f"{srv}.key"}


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
    """One SQLite file in this process, the same work: what a single unreplicated node could do at best."""
    db = sqlite3.connect(os.path.join(directory, "alone.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
    db.executemany("INSERT INTO kv VALUES(?, ?)", [(k, VALUE) for k in range(KEYS)])
    out = {}
    for op in ["write", "read"]:
        lat = []
        end = time.time() + seconds
        k = 0
        while time.time() < end:
            t = time.perf_counter()
            if op == "write":
                db.execute("INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)", (k % KEYS, VALUE))
            else:
                db.execute("SELECT v FROM kv WHERE k = ?", (k % KEYS,)).fetchall()
            lat.append(time.perf_counter() - t)
            k += 1
        lat.sort()
        out[op] = {"throughput": len(lat) / seconds, "p50": lat[len(lat) // 2] * 1e6, "p99": lat[int(len(lat) * 0.99)] * 1e6}
    db.close()
    return out


# ---------------------------------------------------------------- wrk

# Prepended to every wrk script: latency percentiles as one JSON line, per-second counts of answers
# when the script sets `trace = true` (the collapse check), and base64 for etcd's keys.
WRK_COMMON = r'''
local counter = 0
local thread_id = 0
local threads = {}
setup = function(thread) thread:set("tid", thread_id); thread_id = thread_id + 1; table.insert(threads, thread) end
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
  if trace then
    local total = {}
    for _, t in ipairs(threads) do
      local s = t:get("seconds")
      if s then for k, v in pairs(s) do total[k] = (total[k] or 0) + v end end
    end
    local keys = {}
    for k in pairs(total) do table.insert(keys, k) end
    table.sort(keys)
    local out = {}
    for _, k in ipairs(keys) do table.insert(out, tostring(total[k])) end
    io.write('{"per_second": [' .. table.concat(out, ",") .. ']}\n')
  end
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

# With `trace = true`, each thread counts its 2xx answers per wall-clock second.
TRACE = r'''
trace = true
seconds = {}
response = function(status, headers, body)
  if status >= 200 and status < 300 then
    local s = os.time()
    seconds[s] = (seconds[s] or 0) + 1
  end
end
'''


def wrk(script, url, clients, seconds, work, name="load", trace=False):
    """Runs wrk with `script` (Lua, after WRK_COMMON) at `clients` connections; returns throughput
    (successful answers per second), latency percentiles in µs and errors (and answers per second
    when `trace`)."""
    path = os.path.join(work, f"{name}.lua")
    with open(path, "w") as f:
        f.write(WRK_COMMON + (TRACE if trace else "") + script)
    out = sh(["wrk", "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{seconds}s", "--timeout", "10s", "-s", path, url],
             stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode()
    lines = [l for l in out.splitlines() if l.startswith('{"requests"')]
    if not lines:
        raise RuntimeError(f"wrk printed no result:\n{out[-2000:]}")
    r = json.loads(lines[-1])
    # Only answers that succeeded count: a system answering errors quickly is not doing the work.
    answered = r["requests"] - r.get("non2xx", 0)
    result = {"throughput": answered / (r["duration_us"] / 1e6), "p50": r["p50"], "p99": r["p99"], "p999": r["p999"],
              "errors": r["errors"], "requests": answered}
    per_second = [l for l in out.splitlines() if l.startswith('{"per_second"')]
    if per_second:
        # The first and last seconds are partial.
        result["per_second"] = json.loads(per_second[-1])["per_second"]
    return result
