"""The systems the benchmarks compare, each started as a 3-node cluster on loopback (PostgreSQL: a
primary and one synchronous standby) and given the same work: KEYS keys written first; a write
overwrites one of them with a VALUE_BYTES value; a read fetches one, linearizably where the system
can.

Each system answers `url(entry)` for entry "leader" (the node that leads) or "follower" (another
one), asked afresh before every run since leadership can move; `script(op)` is the wrk script of the
work (None where wrk cannot drive it: PostgreSQL uses pgbench); `pids()` lists its server processes.
`secure=True` starts it with authentication and TLS on (where it has them).
"""
import json, os, shutil, signal, subprocess, tempfile, time
from concurrent.futures import ThreadPoolExecutor

from common import KEYS, VALUE, VALUE_BYTES, free_port, http, log, sh, wait_until

ADMIN_PASSWORD = "bench-password-0123456789"


def _b64(s):
    import base64
    return base64.b64encode(s.encode()).decode()


class Processes:
    """A system made of its own server processes (`self.procs`): their pids, and a stop that asks
    each to end (SIGTERM) and kills any still running after 20 s."""

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


class Cairn(Processes):
    name = "CairnDB"

    def __init__(self, work, binary, secure=False, certs=None, label="cairn", table=True):
        self.procs, self.secure = [], secure
        ports = [free_port() for _ in range(6)]
        self.http = [f"127.0.0.1:{ports[2 * i]}" for i in range(3)]
        scheme = "https" if secure else "http"
        self.base = [f"{scheme}://{h}" for h in self.http]
        env = dict(os.environ)
        for i in range(3):
            args = [binary, "server", "--data-dir", os.path.join(work, f"{label}{i}"), "--http-addr", self.http[i],
                    "--raft-addr", f"127.0.0.1:{ports[2 * i + 1]}", "--join", ",".join(self.http), "--bootstrap-expect", "3"]
            if secure:
                # Auth on (the default), nodes on mutual TLS (the default), HTTPS for clients.
                env["CAIRN_ADMIN_PASSWORD"] = ADMIN_PASSWORD
                args += ["--http-tls-cert", certs["cert"], "--http-tls-key", certs["key"], "--http-tls-ca", certs["ca"]]
            else:
                args += ["--insecure-dev"]
            log_file = open(os.path.join(work, f"{label}{i}.log"), "w")
            self.procs.append(subprocess.Popen(args, stdout=log_file, stderr=log_file, env=env))
        for b in self.base:
            wait_until(lambda b=b: http("GET", f"{b}/v1/ready")[0] == 200, 90, "CairnDB")
        if table:
            self.execute(["CREATE TABLE IF NOT EXISTS kv(k INTEGER PRIMARY KEY, v TEXT)"])
            for start in range(0, KEYS, 500):
                rows = ",".join(f"({k}, '{VALUE}')" for k in range(start, min(KEYS, start + 500)))
                self.execute(["INSERT OR REPLACE INTO kv(k, v) VALUES " + rows])

    def headers(self):
        if not self.secure:
            return {}
        _, body = http("POST", f"{self.base[0]}/v1/auth/token", {"username": "admin", "password": ADMIN_PASSWORD})
        return {"Authorization": "Bearer " + json.loads(body)["token"]}

    def execute(self, statements, db="default"):
        status, body = http("POST", f"{self.base[0]}/v1/db/{db}/execute", {"statements": statements}, timeout=60, headers=self.headers())
        assert status == 200 and b'"error"' not in body, body[:300]

    def leader(self, group=1):
        for i, h in enumerate(self.http):
            st = json.loads(http("GET", f"{self.base[i]}/v1/status", headers=self.headers())[1])
            for g in st["groups"]:
                if g["group"] == group and g["role"] == "leader":
                    return i
        raise RuntimeError(f"CairnDB: no leader of group {group}")

    def url(self, entry):
        i = self.leader()
        return self.base[i] if entry == "leader" else self.base[(i + 1) % 3]

    def leader_url(self):
        return self.url("leader")

    def script(self, op):
        auth = ""
        if self.secure:
            auth = f'wrk.headers["Authorization"] = "{self.headers()["Authorization"]}"\n'
        if op == "write":
            return auth + f'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/v1/db/default/execute", nil, '{{"statements":[["INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)",' .. math.random(0, {KEYS - 1}) .. ',"{VALUE}"]]}}')
end
'''
        return auth + f'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/v1/db/default/query", nil, '{{"statements":[["SELECT v FROM kv WHERE k = ?",' .. math.random(0, {KEYS - 1}) .. ']]}}')
end
'''

    def check(self):
        """The statements the load sends, once by hand: wrk counts HTTP errors only, and a statement
        failing inside a 200 answer would be measured as if it worked."""
        h = self.headers()
        s, b = http("POST", f"{self.base[0]}/v1/db/default/execute",
                    {"statements": [["INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)", 1, VALUE]]}, headers=h)
        assert s == 200 and b'"rows_affected":1' in b, b
        s, b = http("POST", f"{self.base[1]}/v1/db/default/query", {"statements": [["SELECT v FROM kv WHERE k = ?", 1]]}, headers=h)
        assert s == 200 and VALUE.encode() in b, b


class Etcd(Processes):
    name = "etcd"

    def __init__(self, work, secure=False, certs=None):
        self.procs, self.secure = [], secure
        ports = [free_port() for _ in range(6)]
        scheme = "https" if secure else "http"
        self.clients = [f"{scheme}://127.0.0.1:{ports[2 * i]}" for i in range(3)]
        peers = [f"{scheme}://127.0.0.1:{ports[2 * i + 1]}" for i in range(3)]
        cluster = ",".join(f"e{i}={peers[i]}" for i in range(3))
        tls = []
        if secure:
            # Clients: TLS and a token (no client certificates, as CairnDB's and PostgreSQL's clients); peers: mutual TLS.
            tls = ["--cert-file", certs["cert"], "--key-file", certs["key"],
                   "--peer-cert-file", certs["cert"], "--peer-key-file", certs["key"], "--peer-trusted-ca-file", certs["ca"],
                   "--peer-client-cert-auth"]
        label = "etcd-secure" if secure else "etcd"
        for i in range(3):
            log_file = open(os.path.join(work, f"{label}{i}.log"), "w")
            self.procs.append(subprocess.Popen(
                ["etcd", "--name", f"e{i}", "--data-dir", os.path.join(work, f"{label}{i}"),
                 "--listen-client-urls", self.clients[i], "--advertise-client-urls", self.clients[i],
                 "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
                 "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", label] + tls,
                stdout=log_file, stderr=log_file))
        for c in self.clients:
            wait_until(lambda c=c: http("GET", f"{c}/health")[0] == 200, 60, "etcd")
        # Batches of 100 puts per transaction (etcd allows 128 operations in one).
        for start in range(0, KEYS, 100):
            ops = [{"requestPut": {"key": _b64(f"k{k}"), "value": _b64(VALUE)}} for k in range(start, min(KEYS, start + 100))]
            http("POST", f"{self.clients[0]}/v3/kv/txn", {"success": ops})
        if secure:
            c = self.clients[0]
            http("POST", f"{c}/v3/auth/user/add", {"name": "root", "password": ADMIN_PASSWORD})
            http("POST", f"{c}/v3/auth/user/grant", {"user": "root", "role": "root"})
            http("POST", f"{c}/v3/auth/enable", {})

    def headers(self):
        if not self.secure:
            return {}
        _, body = http("POST", f"{self.clients[0]}/v3/auth/authenticate", {"name": "root", "password": ADMIN_PASSWORD})
        return {"Authorization": json.loads(body)["token"]}

    def leader(self):
        for i, c in enumerate(self.clients):
            st = json.loads(http("POST", f"{c}/v3/maintenance/status", {}, headers=self.headers())[1])
            if st.get("leader") == st.get("header", {}).get("member_id"):
                return i
        raise RuntimeError("etcd: no leader")

    def url(self, entry):
        i = self.leader()
        return self.clients[i] if entry == "leader" else self.clients[(i + 1) % 3]

    def script(self, op):
        auth = ""
        if self.secure:
            # Simple tokens expire after 5 idle minutes: a fresh one per run.
            auth = f'wrk.headers["Authorization"] = "{self.headers()["Authorization"]}"\n'
        keys = f'''
local keys = {{}}
for i = 0, {KEYS - 1} do keys[i] = b64("k" .. i) end
'''
        if op == "write":
            return auth + keys + f'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local value = b64("{VALUE}")
request = function()
  return wrk.format(nil, "/v3/kv/put", nil, '{{"key":"' .. keys[math.random(0, {KEYS - 1})] .. '","value":"' .. value .. '"}}')
end
'''
        return auth + keys + f'''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/v3/kv/range", nil, '{{"key":"' .. keys[math.random(0, {KEYS - 1})] .. '"}}')
end
'''

    def check(self):
        h = self.headers()
        http("POST", f"{self.clients[0]}/v3/kv/put", {"key": _b64("k1"), "value": _b64(VALUE)}, headers=h)
        _, b = http("POST", f"{self.clients[1]}/v3/kv/range", {"key": _b64("k1")}, headers=h)
        assert json.loads(b)["kvs"][0]["value"] == _b64(VALUE), b


class Dqlite(Processes):
    """Three `dqlite-demo` nodes (Debian's go-dqlite): replicated SQLite over Raft, the closest peer.
    Its HTTP API: PUT /KEY with the value as the body (INSERT OR REPLACE into a table keyed by the
    key), GET /KEY; any node takes any request, its driver sending the statement to the leader. It
    has no authentication or TLS of its own."""
    name = "dqlite"

    def __init__(self, work):
        self.procs = []
        self.api = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        self.db = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        for i in range(3):
            args = ["dqlite-demo", "--api", self.api[i], "--db", self.db[i], "--dir", os.path.join(work, f"dqlite{i}")]
            if i > 0:
                args += ["--join", self.db[0]]
            log_file = open(os.path.join(work, f"dqlite{i}.log"), "w")
            self.procs.append(subprocess.Popen(args, stdout=log_file, stderr=log_file))
            # Each joins through the first, one at a time.
            wait_until(lambda i=i: http("PUT", f"http://{self.api[i]}/probe{i}", b"x")[0] == 200, 60, f"dqlite node {i}")
        wait_until(lambda: len(self.voters()) == 3, 60, "three dqlite voters")

        def put(k):
            http("PUT", f"http://{self.api[k % 3]}/k{k}", VALUE.encode(), timeout=30)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(KEYS)))

    def shell(self, command):
        return sh(["dqlite", "-s", ",".join(self.db), "demo", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                  timeout=30).stdout.decode()

    def voters(self):
        return [l for l in self.shell(".cluster").splitlines() if l.endswith("|voter")]

    def leader(self):
        address = self.shell(".leader").strip()
        if address not in self.db:
            raise RuntimeError(f"dqlite: no leader ({address!r})")
        return self.db.index(address)

    def url(self, entry):
        i = self.leader()
        return f"http://{self.api[i]}" if entry == "leader" else f"http://{self.api[(i + 1) % 3]}"

    def script(self, op):
        if op == "write":
            return f'''
local value = string.rep("x", {VALUE_BYTES})
request = function()
  return wrk.format("PUT", "/k" .. math.random(0, {KEYS - 1}), nil, value)
end
'''
        return f'''
request = function()
  return wrk.format("GET", "/k" .. math.random(0, {KEYS - 1}))
end
'''

    def check(self):
        http("PUT", f"http://{self.api[0]}/k1", VALUE.encode())
        _, b = http("GET", f"http://{self.api[1]}/k1")
        assert b.decode().strip() == VALUE, b  # the demo ends its answers with a newline


def pg_bin():
    versions = sorted(os.listdir("/usr/lib/postgresql"))
    return f"/usr/lib/postgresql/{versions[-1]}/bin"


class Postgres:
    """A primary and one synchronous standby (synchronous_commit=on): a commit waits until the standby
    has the WAL on disk. Driven by pgbench on the primary; a standby takes no writes and its reads are
    not linearizable, so there is no "through a follower"."""
    name = "PostgreSQL"

    def __init__(self, work, secure=False, certs=None):
        self.bin, self.secure = pg_bin(), secure
        self.dir = os.path.join(work, "pg-secure" if secure else "pg")
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres", "postgres")
        self.port, self.standby_port = free_port(), free_port()
        primary, standby = os.path.join(self.dir, "primary"), os.path.join(self.dir, "standby")
        self.pg(f"{self.bin}/initdb -D {primary} -U postgres -A trust")
        conf = (f"port={self.port}\nlisten_addresses='127.0.0.1'\nsynchronous_standby_names='standby1'\n"
                "synchronous_commit=on\nwal_level=replica\nmax_wal_senders=4\nunix_socket_directories='/tmp'\n")
        if secure:
            for name in ("cert", "key"):
                target = os.path.join(self.dir, f"server.{name}")
                shutil.copy(certs[name], target)
                shutil.chown(target, "postgres", "postgres")
                os.chmod(target, 0o600)
            conf += f"ssl=on\nssl_cert_file='{self.dir}/server.cert'\nssl_key_file='{self.dir}/server.key'\npassword_encryption=scram-sha-256\n"
        with open(os.path.join(primary, "postgresql.conf"), "a") as f:
            f.write(conf)
        with open(os.path.join(primary, "pg_hba.conf"), "w") as f:
            if secure:
                # Replication stays trusted on loopback; clients need TLS and a password.
                f.write("host replication postgres 127.0.0.1/32 trust\nlocal all postgres trust\n"
                        "hostssl all bench 127.0.0.1/32 scram-sha-256\nhost all postgres 127.0.0.1/32 trust\n")
            else:
                f.write("host replication postgres 127.0.0.1/32 trust\nlocal all all trust\nhost all all 127.0.0.1/32 trust\n")
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
        self.psql(f"INSERT INTO kv SELECT g, repeat('x', {VALUE_BYTES}) FROM generate_series(0, {KEYS - 1}) g")
        if secure:
            self.psql(f"CREATE USER bench PASSWORD '{ADMIN_PASSWORD}'")
            self.psql("GRANT SELECT, INSERT, UPDATE ON kv TO bench")
        wait_until(lambda: "standby1" in self.psql("SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'"),
                   30, "the synchronous standby")

    def pg(self, cmd):
        return sh(["runuser", "-u", "postgres", "--", "bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode()

    def psql(self, sql):
        return self.pg(f"{self.bin}/psql -h 127.0.0.1 -p {self.port} -U postgres -Atc \"{sql}\"")

    def url(self, entry):
        return None if entry != "leader" else "primary"

    def script(self, op):
        return None

    def check(self):
        assert self.psql("SELECT count(*) FROM kv").strip() == str(KEYS)

    def pgbench(self, op, clients, seconds, work):
        script = os.path.join(work, f"pg-{op}.sql")
        with open(script, "w") as f:
            if op == "write":
                f.write(f"\\set k random(0, {KEYS - 1})\n"
                        f"INSERT INTO kv(k, v) VALUES (:k, repeat('x', {VALUE_BYTES})) ON CONFLICT (k) DO UPDATE SET v = excluded.v;\n")
            else:
                f.write(f"\\set k random(0, {KEYS - 1})\nSELECT v FROM kv WHERE k = :k;\n")
        os.chmod(script, 0o644)
        logdir = tempfile.mkdtemp(dir=work)
        shutil.chown(logdir, "postgres", "postgres")
        who = f"PGSSLMODE=require PGPASSWORD={ADMIN_PASSWORD} " if self.secure else ""
        user = "bench" if self.secure else "postgres"
        out = self.pg(f"cd {logdir} && {who}{self.bin}/pgbench -h 127.0.0.1 -p {self.port} -U {user} -n -c {clients} -j {min(clients, 2)} "
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
        if not tps:
            raise RuntimeError(f"pgbench failed:\n{out[-2000:]}")
        failed = [l for l in out.splitlines() if "number of failed transactions" in l]
        errors = int(failed[0].split(":")[1].split()[0]) if failed else 0
        return {"throughput": tps[0], "p50": lat[n // 2] if n else 0, "p99": lat[int(n * 0.99)] if n else 0,
                "p999": lat[int(n * 0.999)] if n else 0, "errors": errors, "requests": n}

    def pids(self):
        out = sh("pgrep -f 'postgres'", check=False, stdout=subprocess.PIPE).stdout.decode().split()
        return [int(p) for p in out]

    def stop(self):
        for d in [self.standby, self.primary]:
            self.pg(f"{self.bin}/pg_ctl -D {d} -m fast -w stop")
