"""The tenancy benchmark: what serving many tenants costs.

1. `GET /api/tenant` over 100 tenants under wrk, next to `GET /healthz` on the same server;
2. the first request of a tenant the process has not opened yet, and the second one;
3. tenants provisioned per second through the admin API;
4. `tenantd migrate` over 10,000 tenants with one pending migration (a probe build of this
   tree with one more tenant migration);
5. RSS and open descriptors after touching all 10,000 tenants with the default pool cap.

Run through `bench/run tenancy`, which installs wrk and builds the binary first. Directly:

    python3 bench/tenancy.py --bin target/release/tenantd --out bench/out/tenancy.md

Knobs (environment), see bench/README.md: BENCH_DURATION (10), BENCH_RUNS (3), BENCH_WARMUP (2),
BENCH_LOG_LEVELS ("warn info"), BENCH_TENANTS (100), BENCH_FIRST (300), BENCH_PROVISION (500),
BENCH_CLIENTS (4), BENCH_SCALE (10000; 0 skips parts 4 and 5), BENCH_MIGRATE_WORKERS ("2 4"),
BENCH_PROBE_TARGET (cargo target directory of the probe build).
"""

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from benchlib import env_int, fmt_ms, loadavg, pct, verdict  # noqa: E402

WRK_THREADS, WRK_CONNS = 2, 32
TARGET_RATIO = 0.80          # tenant requests/s against the /healthz ceiling
TARGET_FIRST_P50_MS = 2.0    # first request of a tenant not opened yet
TARGET_PROVISION = 100       # tenants created per second
TARGET_MIGRATE = 1000        # tenants migrated per second
TARGET_RSS_BYTES = 150_000_000
DEFAULT_CAP = 256            # tenantd's --max-open-tenants default
TARGET_FDS = 3 * DEFAULT_CAP + 64

# The accounts the suite makes in every data directory it creates (passwords are random per run):
# a system admin for the admin API, and one user, a `viewer` member of every tenant, whose
# session every tenant request carries.
ADMIN_EMAIL = "bench@example.test"
USER_EMAIL = "u@example.test"
MEMBER_ROLE = "viewer"

# Requests are prebuilt in init(): wrk.format at the top level runs before wrk knows the host,
# and its requests would carry no Host header (400 for every one).
LUA = """-- bench/tenancy.py: cycles the request path over {n} tenants, as one signed-in member
local reqs, n, i = {{}}, {n}, 0
init = function(args)
  for k = 0, n - 1 do
    -- wrk.format adds the Host header to a headers table that has none.
    reqs[k] = wrk.format("GET", {path},
                         {{["Authorization"] = "Bearer {token}"}})
  end
end
request = function()
  local r = reqs[i]
  i = (i + 1) % n
  return r
end
"""


def progress(msg):
    print(f"tenancy: {msg}", file=sys.stderr, flush=True)


def fmt_cpu(us):
    """Server CPU time per answered request (`bl.run_wrk`'s `cpu_us`)."""
    return "" if us is None else f"{us:.1f} µs"


def count(failures, key):
    failures[key] = failures.get(key, 0) + 1


# ---------------------------------------------------------------------------------------------
# A keep-alive HTTP/1.1 client on a raw socket (less overhead in the timing than http.client)


class Conn:
    def __init__(self, host, port, timeout=10.0):
        bl.check_loopback(host)
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = None
        self.reconnects = -1  # the first connect is not a reconnect

    def _connect(self):
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reconnects += 1

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, method, path, body=None, headers=()):
        """(status, body, milliseconds from sending to the whole answer read)."""
        if self.sock is None:
            self._connect()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        try:
            t0 = time.perf_counter()
            self.sock.sendall(data)
            status, head, rbody = bl.read_response(self.sock)
            ms = (time.perf_counter() - t0) * 1000
        except OSError:
            self.close()
            raise
        self.last_head = head  # the answer's headers, for callers that check one
        if head.get("connection", "").lower() == "close":
            self.close()
        return status, rbody, ms


def create_tenant(conn, token, slug):
    body = json.dumps({"slug": slug, "name": f"Bench {slug}"}).encode()
    return conn.request("POST", "/api/admin/tenants", body,
                        [("Authorization", f"Bearer {token}"),
                         ("Content-Type", "application/json")])


def parallel(srv, items, clients, one):
    """Runs `one(conn, item)` -> (ok, ms, failure) over `items` with `clients` keep-alive
    connections, each taking the next item in order. Returns the latencies of the successes,
    the failures by kind, the completion times (since start) and the elapsed seconds."""
    lock = threading.Lock()
    queue = iter(items)
    lat, done, failures = [], [], {}
    started = time.monotonic()

    def client():
        conn = Conn(srv.host, srv.port)
        try:
            while True:
                with lock:
                    item = next(queue, None)
                if item is None:
                    return
                try:
                    ok, ms, failure = one(conn, item)
                except (OSError, ValueError, IndexError) as e:
                    ok, ms, failure = False, None, f"{type(e).__name__}: {e}"
                with lock:
                    done.append(time.monotonic() - started)
                    if ok:
                        lat.append(ms)
                    else:
                        count(failures, failure)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"lat": lat, "failures": failures, "done": sorted(done),
            "secs": time.monotonic() - started, "clients": clients, "count": len(items)}


# ---------------------------------------------------------------------------------------------
# Accounts: the bench admin (admin API) and the bench user (tenant routes)


def tenantd_cli(binary, data, *args):
    """Runs a `tenantd` CLI command on a data directory (a running server sees its writes on its
    next request): its stdout."""
    cmd = [binary, *args, "--data", data]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=120)
    except subprocess.TimeoutExpired:
        raise bl.BenchError(f"`tenantd {' '.join(args[:2])}` took over 2 minutes")
    if p.returncode != 0:
        raise bl.BenchError(f"`tenantd {' '.join(args[:2])}` failed ({p.returncode}): "
                            f"{(p.stderr or p.stdout).strip()[:300]}")
    return p.stdout


def login(srv, path, email, password):
    """POST PATH {email, password} on a fresh connection: the session token of the answer."""
    conn = Conn(srv.host, srv.port)
    try:
        body = json.dumps({"email": email, "password": password}).encode()
        status, rbody, _ = conn.request("POST", path, body,
                                        [("Content-Type", "application/json")])
    finally:
        conn.close()
    if status != 200:
        raise bl.BenchError(f"{srv.name}: POST {path} as {email} answered {status}: "
                            f"{rbody[:200].decode(errors='replace')}")
    try:
        return json.loads(rbody)["token"]
    except (ValueError, KeyError, TypeError):
        raise bl.BenchError(f"{srv.name}: POST {path}: no token in the answer")


def admin_session(binary, srv, creds):
    """Creates the bench system admin in the server's catalog (`tenantd admin create`, which
    needs the catalog a first `serve` made) and logs it in: an admin session token."""
    tenantd_cli(binary, srv.data_dir, "admin", "create", "--email", ADMIN_EMAIL,
                "--password", creds["admin"])
    return login(srv, "/api/admin/auth/login", ADMIN_EMAIL, creds["admin"])


def add_bench_user(binary, data, creds, role=MEMBER_ROLE):
    """Creates the bench user (`tenantd users create`) and makes it a member of every tenant of
    the catalog with the built-in `role`, in one INSERT (setup, not measured; `tenantd members
    add` would be a process per tenant). Only while no server writes to the catalog: a server
    started before, or running but idle, sees the change through PRAGMA data_version on its next
    request. Returns the number of memberships."""
    tenantd_cli(binary, data, "users", "create", "--email", USER_EMAIL, "--name", "Bench",
                "--password", creds["user"])
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    db = sqlite3.connect(os.path.join(data, "central.db"), timeout=30)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        with db:
            (user_id,) = db.execute("SELECT id FROM users WHERE email = ?",
                                    (USER_EMAIL,)).fetchone()
            db.execute(
                "INSERT INTO memberships (user_id, tenant_id, role_id, created_at) "
                "SELECT ?, t.id, r.id, ? FROM tenants t "
                "JOIN roles r ON r.tenant_id = t.id AND r.name = ? "
                "WHERE NOT EXISTS (SELECT 1 FROM memberships m "
                "                  WHERE m.user_id = ? AND m.tenant_id = t.id)",
                (user_id, now, role, user_id))
        (members,) = db.execute("SELECT count(*) FROM memberships WHERE user_id = ?",
                                (user_id,)).fetchone()
        (tenants,) = db.execute("SELECT count(*) FROM tenants").fetchone()
    finally:
        db.close()
    if members != tenants:
        raise bl.BenchError(f"the bench user is a member of {members} of {tenants} tenants "
                            f"(no '{role}' role in some?)")
    return members


def user_session(srv, creds):
    return login(srv, "/api/auth/login", USER_EMAIL, creds["user"])


def provision(srv, token, slugs, clients):
    def one(conn, slug):
        status, body, ms = create_tenant(conn, token, slug)
        if status != 201:
            return False, ms, f"status {status}: {body[:120].decode(errors='replace')}"
        return True, ms, None
    return parallel(srv, slugs, clients, one)


def get_tenant(conn, token, slug):
    """GET /t/SLUG/api/tenant as the bench user (session token `token`): (ok, ms, failure) with
    the answer checked to be that tenant's."""
    status, body, ms = conn.request("GET", f"/t/{slug}/api/tenant",
                                    headers=[("Authorization", f"Bearer {token}")])
    if status != 200:
        return False, ms, f"status {status}: {body[:120].decode(errors='replace')}"
    try:
        got = json.loads(body).get("slug")
    except ValueError:
        got = None
    if got != slug:
        return False, ms, "answer for another tenant or unreadable"
    return True, ms, None


def fd_breakdown(pid, data_dir):
    """Open descriptors of a process pointing into DATA/tenants/: how many, how many distinct
    tenant files (each open pool holds its file open), and how many `.db` (one per connection)."""
    prefix = os.path.join(os.path.realpath(data_dir), "tenants") + os.sep
    total, files, db = 0, set(), 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith(prefix):
            total += 1
            name = target[len(prefix):]
            files.add(re.sub(r"-(wal|shm)$", "", name))
            db += name.endswith(".db")
    return {"tenant_fds": total, "pools": len(files), "db_fds": db}


def snapshot(srv):
    st = srv.stats()
    st.update(fd_breakdown(srv.pid, srv.data_dir))
    return st


def clean_env(rust_log="warn"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTD_")}
    env["RUST_LOG"] = rust_log
    return env


# ---------------------------------------------------------------------------------------------
# 1. Throughput


def throughput(binary, creds, level, tenants, runs, duration, warmup, clients):
    name = f"throughput server RUST_LOG={level}"
    with bl.Server(binary, rust_log=level, name=name) as srv:
        admin = admin_session(binary, srv, creds)
        prov = provision(srv, admin, [f"t{i}" for i in range(tenants)], clients)
        if prov["failures"]:
            raise bl.BenchError(f"{name}: creating the tenants failed: {prov['failures']}")
        # The server is idle here: nothing else writes to the catalog.
        add_bench_user(binary, srv.data_dir, creds)
        token = user_session(srv, creds)
        probe = Conn(srv.host, srv.port)
        try:
            ok, _, failure = get_tenant(probe, token, "t0")
            if ok:  # and without credentials it must be refused
                status, _, _ = probe.request("GET", "/t/t0/api/tenant")
                if status != 401:
                    ok, failure = False, f"without credentials: {status}, not 401"
        finally:
            probe.close()
        if not ok:
            raise bl.BenchError(f"{name}: GET /t/t0/api/tenant: {failure}")
        script = os.path.join(srv.dir, "tenants.lua")
        with open(script, "w") as f:
            f.write(LUA.format(n=tenants, path='"/t/t" .. k .. "/api/tenant"', token=token))
        # The same script asking for /healthz: the ceiling as this very client reaches it.
        # wrk runs Lua for every request of a scripted run, on the cores the server uses too
        # (about 5% of /healthz throughput on the 2-core development machine).
        h_script = os.path.join(srv.dir, "healthz.lua")
        with open(h_script, "w") as f:
            f.write(LUA.format(n=tenants, path='"/healthz"', token=token))
        h_url = f"http://{srv.addr}/healthz"
        t_url = f"http://{srv.addr}/t/t0/api/tenant"
        if warmup > 0:
            bl.run_wrk(h_url, WRK_THREADS, WRK_CONNS, warmup)
            bl.run_wrk(t_url, WRK_THREADS, WRK_CONNS, warmup, script=script)
        health, health_lua, tenant = [], [], []
        # Interleaved, so the machine's noise falls on all alike.
        for _ in range(runs):
            health.append(bl.run_wrk(h_url, WRK_THREADS, WRK_CONNS, duration, pid=srv.pid))
            health_lua.append(bl.run_wrk(h_url, WRK_THREADS, WRK_CONNS, duration,
                                         script=h_script, pid=srv.pid))
            tenant.append(bl.run_wrk(t_url, WRK_THREADS, WRK_CONNS, duration, script=script,
                                     pid=srv.pid))
        after = snapshot(srv)
        problems = srv.log_problems()
    return {"level": level, "health": health, "health_lua": health_lua, "tenant": tenant,
            "after": after,
            "problems": problems, "exit": srv.exit_note, "name": name}


# ---------------------------------------------------------------------------------------------
# 2 and 3. Provisioning, then first requests on a fresh server over those tenants


def provisioning(binary, creds, data, count_, clients):
    name = "provisioning server"
    with bl.Server(binary, rust_log="warn", name=name, data=data) as srv:
        token = admin_session(binary, srv, creds)
        seq = provision(srv, token, [f"s{i}" for i in range(count_)], 1)
        conc = provision(srv, token, [f"c{i}" for i in range(count_)], clients) \
            if clients > 1 else None
        problems = srv.log_problems()
    return {"seq": seq, "conc": conc, "problems": problems, "exit": srv.exit_note, "name": name}


def first_requests(binary, creds, data, slugs):
    name = "first-request server"
    with bl.Server(binary, rust_log="warn", name=name, data=data) as srv:
        token = user_session(srv, creds)  # on its own connection, before the measurement
        before = snapshot(srv)
        conn = Conn(srv.host, srv.port)
        # Connect and send one request first, so no tenant's figure includes the connect.
        status, _, _ = conn.request("GET", "/healthz")
        if status != 200:
            raise bl.BenchError(f"{name}: GET /healthz answered {status}")
        first, second, failures = [], [], {}
        for slug in slugs:
            for into in (first, second):
                try:
                    ok, ms, failure = get_tenant(conn, token, slug)
                except (OSError, ValueError, IndexError) as e:
                    ok, ms, failure = False, None, f"{type(e).__name__}: {e}"
                if ok:
                    into.append(ms)
                else:
                    count(failures, failure)
                    into.append(None)
        reconnects = conn.reconnects
        conn.close()
        after = snapshot(srv)
        problems = srv.log_problems()
    return {"first": first, "second": second, "failures": failures, "before": before,
            "after": after, "reconnects": reconnects, "problems": problems,
            "exit": srv.exit_note, "name": name}


# ---------------------------------------------------------------------------------------------
# 4. migrate with a probe build


def build_probe(root, binary, work):
    """Copies the tracked files of the tree (as they are on disk) to `work`, adds one tenant
    migration and builds that copy in release mode into its own target directory. Returns
    (binary, version, migration file name, seconds)."""
    target = os.environ.get("BENCH_PROBE_TARGET") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.realpath(binary))), "bench-probe")
    src = os.path.join(work, "probe-src")
    files = bl.git(root, "ls-files", "-z").split("\0")
    if not any(f == "Cargo.toml" for f in files):
        raise bl.BenchError("git ls-files did not list Cargo.toml: cannot copy the tree")
    for rel in filter(None, files):
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            continue  # deleted in the worktree
        dest = os.path.join(src, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        # Plain copy: fresh mtimes, so cargo rebuilds the crate and never reuses a stale probe.
        shutil.copyfile(path, dest)
    schema = os.path.join(src, "schema", "tenant")
    versions = [int(m.group(1)) for f in os.listdir(schema)
                if (m := re.fullmatch(r"(\d{4})_[a-z0-9_]+\.sql", f))]
    version = max(versions, default=0) + 1
    mig = f"{version:04d}_bench_probe.sql"
    with open(os.path.join(schema, mig), "w") as f:
        f.write("-- Added by bench/tenancy.py to time `tenantd migrate`.\n"
                "CREATE TABLE bench_probe (id INTEGER PRIMARY KEY, note TEXT);\n")
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    started = time.monotonic()
    try:
        p = subprocess.run(["cargo", "build", "--release",
                            "--message-format=json-render-diagnostics"],
                           cwd=src, env=env, stdout=subprocess.PIPE, stderr=sys.stderr,
                           text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        raise bl.BenchError("the probe build took over 20 minutes")
    secs = time.monotonic() - started
    if p.returncode != 0:
        raise bl.BenchError(f"the probe build failed ({p.returncode})")
    exe = None
    for line in p.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == "tenantd":
            exe = msg["executable"]
    if not exe:
        raise bl.BenchError("cargo did not report the probe's tenantd executable")
    return exe, version, mig, secs


def migrate_status(binary, data):
    p = subprocess.run([binary, "migrate", "--status", "--json", "--data", data],
                       capture_output=True, text=True, env=clean_env(), timeout=300)
    if p.returncode != 0:
        raise bl.BenchError(f"migrate --status failed ({p.returncode}): {p.stderr.strip()[:300]}")
    st = json.loads(p.stdout)
    versions = {}
    for t in st["tenants"]:
        versions[t["version"]] = versions.get(t["version"], 0) + 1
    return st, versions


def run_migrate(probe, version, data, workers):
    st, before = migrate_status(probe, data)
    if st["tenant_target"] != version:
        raise bl.BenchError(f"the probe binary's tenant target is {st['tenant_target']}, "
                            f"not {version}: the probe migration was not embedded")
    os.sync()  # no writeback of the copy during the timing
    started = time.monotonic()
    try:
        p = subprocess.run([probe, "migrate", "--data", data, "--workers", str(workers)],
                           capture_output=True, text=True, env=clean_env(), timeout=900)
    except subprocess.TimeoutExpired:
        raise bl.BenchError(f"migrate --workers {workers} took over 15 minutes")
    secs = time.monotonic() - started
    _, after = migrate_status(probe, data)
    errs = [x for x in p.stderr.splitlines() if x.strip()]
    return {"workers": workers, "secs": secs, "rc": p.returncode,
            "summary": (p.stdout.strip().splitlines() or [""])[-1],
            "before": before, "after": after, "stderr": errs,
            "tenants": sum(before.values())}


# ---------------------------------------------------------------------------------------------
# 5. Footprint after touching every tenant


def footprint(binary, creds, data, slugs, clients):
    name = "footprint server"
    with bl.Server(binary, rust_log="warn", name=name, data=data) as srv:
        token = user_session(srv, creds)
        before = snapshot(srv)
        peak = dict(before)
        stop = threading.Event()

        def sample():
            while not stop.wait(0.1):
                try:
                    s = snapshot(srv)
                except (OSError, ValueError):
                    continue
                for k in ("rss_kb", "fds", "tenant_fds", "pools", "threads"):
                    peak[k] = max(peak[k], s[k])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            touched = parallel(srv, slugs, clients,
                               lambda conn, slug: get_tenant(conn, token, slug))
        finally:
            stop.set()
            sampler.join()
        after = snapshot(srv)
        for k in ("rss_kb", "fds", "tenant_fds", "pools", "threads"):
            peak[k] = max(peak[k], after[k])
        with open(f"/proc/{srv.pid}/status") as f:
            hwm = next((int(x.split()[1]) for x in f if x.startswith("VmHWM:")), None)
        problems = srv.log_problems()
    return {"before": before, "peak": peak, "after": after, "hwm_kb": hwm, "touched": touched,
            "problems": problems, "exit": srv.exit_note, "name": name}


# ---------------------------------------------------------------------------------------------
# Report


def rate_blocks(done, block):
    """Creates per second within each consecutive block of `block` completions."""
    out = []
    for start in range(0, len(done) - block + 1, block):
        t0 = done[start - 1] if start else 0.0
        t1 = done[start + block - 1]
        out.append(block / (t1 - t0) if t1 > t0 else float("inf"))
    return out


def fails(f):
    return ", ".join(f"{k}: {v}" for k, v in f.items()) or "none"


def fd_note(s):
    return (f"{bl.mib(s['rss_kb'])} RSS, {s['threads']} threads, {s['fds']} fds, "
            f"{s['tenant_fds']} of them into tenants/ ({s['pools']} distinct tenant files, "
            f"{s['db_fds']} `.db`)")


def report(root, ctx):
    out = bl.header(root, "tenantd benchmark: tenancy")
    out.insert(-1, f"- load average (1, 5, 15 min) at start: {ctx['load_start']}, "
                   f"at end: {ctx['load_end']}")
    out.insert(-1, f"- suite run time: {ctx['suite_secs']:.0f} s")
    k = ctx["knobs"]

    # 1 ----------------------------------------------------------------------------------------
    tp = ctx["tp"]
    if tp:
        out += [f"## 1. `GET /api/tenant` over {k['tenants']} tenants against `GET /healthz`", "",
                f"`wrk -t{WRK_THREADS} -c{WRK_CONNS} -d{k['duration']}s --latency`, the tenant "
                f"runs with a Lua script cycling the path over `/t/t0/api/tenant` ... "
                f"`/t/t{k['tenants'] - 1}/api/tenant` (each wrk thread on its own). One fresh "
                f"server per RUST_LOG level, default flags; its {k['tenants']} tenants created "
                f"through the admin API first (as a system admin signed in with `POST "
                f"/api/admin/auth/login`). Every tenant request carries `Authorization: Bearer` "
                f"with the session of one user, a `{MEMBER_ROLE}` member of all "
                f"{k['tenants']} tenants (`POST /api/auth/login`); `/healthz` needs no "
                "credentials. Since the identity layer, a tenant request is authenticated "
                "(session lookup, user, membership in that tenant), so the ratio is the cost "
                "of identifying the tenant, authenticating, checking the membership and "
                "reading the tenant file, against `/healthz`. The ceiling is `/healthz` "
                "asked for by the same Lua script (same prebuilt requests, same header), since wrk "
                "runs Lua for every request of a scripted run on the cores it shares with the "
                "server; plain wrk on `/healthz` is shown too. "
                f"{k['warmup']}s warm-up of each (which opens the "
                f"tenant pools), then {k['runs']} runs of each, alternating plain /healthz, "
                "scripted /healthz and tenant; figures are medians of the runs.", ""]
        rows = []
        for t in tp:
            h_rps = bl.median([r["rps"] for r in t["health"]])
            hl_rps = bl.median([r["rps"] for r in t["health_lua"]])
            t_rps = bl.median([r["rps"] for r in t["tenant"]])
            ratio = t_rps / hl_rps if hl_rps else 0
            plain = t_rps / h_rps if h_rps else 0
            t["ratio"], t["plain_ratio"] = ratio, plain
            for label, rs, tgt in (
                    ("`GET /healthz`, plain wrk", t["health"], ""),
                    ("`GET /healthz`, the same Lua script (ceiling)", t["health_lua"], ""),
                    (f"`GET /t/tN/api/tenant`, {k['tenants']} tenants", t["tenant"],
                     f"{ratio:.0%} of the ceiling ({plain:.0%} of plain wrk); "
                     f"≥ {TARGET_RATIO:.0%}: {verdict(ratio >= TARGET_RATIO)}")):
                rows.append([t["level"], label,
                             f"{bl.median([r['rps'] for r in rs]):,.0f}",
                             fmt_ms(bl.median([r["p50_ms"] for r in rs])),
                             fmt_ms(bl.median([r["p99_ms"] for r in rs])),
                             fmt_cpu(bl.median([r["cpu_us"] for r in rs])),
                             tgt,
                             " / ".join(f"{r['rps']:,.0f}" for r in rs),
                             " / ".join(f"{fmt_ms(r['p50_ms'])}, {fmt_ms(r['p99_ms'])}"
                                        for r in rs)])
        out += bl.table(["RUST_LOG", "request", "requests/s", "p50", "p99",
                         "server CPU per request", "ratio / target",
                         "each run: req/s", "each run: p50, p99"], rows)
        out.append("")
        for t in tp:
            pairs = [tr["rps"] / hr["rps"] for hr, tr in zip(t["health_lua"], t["tenant"])
                     if hr["rps"]]
            every = t["health"] + t["health_lua"] + t["tenant"]
            errs = [f"{kk} {v}" for r in every for kk, v in r["socket_errors"].items() if v]
            non2xx = sum(r["non_2xx"] for r in every)
            out.append(f"- RUST_LOG={t['level']}: ratio of each back-to-back pair: "
                       f"{' / '.join(f'{x:.0%}' for x in pairs)}; wrk socket errors: "
                       f"{', '.join(errs) or 'none'}; non-2xx: {non2xx}; server afterwards: "
                       f"{fd_note(t['after'])}.")
        out.append("")

    # 2 ----------------------------------------------------------------------------------------
    fr = ctx["first"]
    if fr:
        n = len(fr["first"])
        cap = DEFAULT_CAP
        firsts = [x for x in fr["first"] if x is not None]
        seconds = [x for x in fr["second"] if x is not None]
        under = [x for x in fr["first"][:cap] if x is not None]
        over = [x for x in fr["first"][cap:] if x is not None]
        out += [f"## 2. First request of a tenant not opened yet ({n} tenants)", "",
                f"A server freshly started (RUST_LOG=warn, default flags: cap {cap} open "
                f"tenants) over the {ctx['prov_total']:,} tenants of part 3. One keep-alive "
                "connection, opened and used for one `GET /healthz` before; then for each "
                f"of {n} tenants in turn: `GET /t/SLUG/api/tenant` (the first: opens its file, "
                "checks its migrations, builds its pool) and at once the same request again "
                "(the second), each as the bench user, a member of every tenant (signed in "
                "before, on its own connection). Time from sending the request to having read the whole answer, "
                "client included; every answer checked to be 200 and that tenant's.", ""]
        rows = []

        def row(label, xs, target=""):
            rows.append([label, len(xs), fmt_ms(pct(xs, 50)), fmt_ms(pct(xs, 90)),
                         fmt_ms(pct(xs, 99)), fmt_ms(max(xs) if xs else None), target])
        p50 = pct(firsts, 50)
        row("first request", firsts, f"p50 ≤ {TARGET_FIRST_P50_MS:g} ms: "
            f"{verdict(p50 is not None and p50 <= TARGET_FIRST_P50_MS)}")
        if over:
            row(f"first, tenants 1-{cap} (pool cap not reached)", under)
            row(f"first, tenants {cap + 1}-{n} (each also closes the LRU pool)", over)
        row("second request (pool open)", seconds)
        out += bl.table(["request", "n", "p50", "p90", "p99", "max", "target"], rows)
        out += ["",
                f"- failures: {fails(fr['failures'])}; reconnects: {fr['reconnects']}; server "
                f"before: {fd_note(fr['before'])}; after: {fd_note(fr['after'])}.", ""]

    # 3 ----------------------------------------------------------------------------------------
    pv = ctx["prov"]
    if pv:
        out += ["## 3. Tenants provisioned per second (admin API)", "",
                "`POST /api/admin/tenants` with `{\"slug\":...,\"name\":...}` on the central "
                "host as a signed-in system admin (Bearer token), each client on its own keep-alive connection taking the next slug; "
                "every answer must be 201. A fresh server, RUST_LOG=warn. The concurrent run "
                "follows the sequential one on the same server (so its catalog starts "
                f"{k['provision']:,} tenants bigger). Latency: per create, client side.", ""]
        rows = []
        runs = [("sequential, 1 client", pv["seq"])]
        if pv["conc"]:
            runs.append((f"concurrent, {pv['conc']['clients']} clients", pv["conc"]))
        sc = ctx.get("scale_prov")
        if sc:
            runs.append((f"part 4's {sc['count']:,} tenants, {sc['clients']} clients "
                         "(fresh server)", sc))
        for label, r in runs:
            ok = len(r["lat"])
            rate = ok / r["secs"] if r["secs"] else 0
            rows.append([label, f"{ok:,} of {r['count']:,}", f"{r['secs']:.2f}",
                         f"{rate:,.0f}", fmt_ms(pct(r["lat"], 50)), fmt_ms(pct(r["lat"], 99)),
                         f"≥ {TARGET_PROVISION}/s: {verdict(rate >= TARGET_PROVISION)}"])
        out += bl.table(["clients", "created", "seconds", "tenants/s", "p50", "p99", "target"],
                        rows)
        out.append("")
        for label, r in runs:
            out.append(f"- {label}: failures: {fails(r['failures'])}.")
        if sc and len(sc["done"]) >= 2000:
            blocks = rate_blocks(sc["done"], 1000)
            out.append(f"- creates/s per 1,000 in part 4's provisioning, in order (catalog "
                       f"growing): {' / '.join(f'{b:,.0f}' for b in blocks)}.")
        out.append("")

    # 4 ----------------------------------------------------------------------------------------
    mg = ctx["migrate"]
    if mg:
        pb, sc = ctx["probe"], ctx["scale_prov"]
        out += [f"## 4. `tenantd migrate` over {sc['count']:,} tenants, one pending migration",
                "",
                f"The probe binary is this tree's tracked files copied to a temporary "
                f"directory plus `schema/tenant/{pb['file']}` (one `CREATE TABLE`), built "
                f"with `cargo build --release` into its own target directory (`bench-probe` "
                f"beside `release`): {pb['secs']:.0f} s this run (about 2.5 min the first "
                f"time, when its dependencies are compiled too). The {sc['count']:,} tenants "
                f"(version {pb['version'] - 1}) were created by the normal binary through the "
                f"admin API with {sc['clients']} clients in {sc['secs']:.1f} s "
                f"({len(sc['lat']) / sc['secs']:,.0f}/s), then the data directory was copied "
                f"once per run below and `sync`ed, so each run starts from the same files "
                "(warm in the page cache). Timed: the whole "
                "`<probe> migrate --data DIR --workers N` process (RUST_LOG=warn). Verified "
                "after with `<probe> migrate --status --json`.", ""]
        rows = []
        for m in mg:
            rate = m["tenants"] / m["secs"] if m["secs"] else 0
            at_target = m["after"].get(pb["version"], 0)
            rows.append([m["workers"], f"{m['tenants']:,}", f"{m['secs']:.2f}", f"{rate:,.0f}",
                         f"{at_target:,} of {m['tenants']:,}"
                         + ("" if at_target == m["tenants"] else " **(not all)**"),
                         f"≥ {TARGET_MIGRATE:,}/s: {verdict(rate >= TARGET_MIGRATE)}"])
        out += bl.table(["--workers", "tenants", "seconds", "tenants/s",
                         f"at version {pb['version']} after", "target"], rows)
        out.append("")
        for m in mg:
            out.append(f"- --workers {m['workers']}: exit {m['rc']}; it printed "
                       f"`{m['summary']}`; versions before: {m['before']}; stderr lines: "
                       f"{len(m['stderr'])}" + (f", first: `{m['stderr'][0]}`"
                                                if m["stderr"] else "") + ".")
        out.append("")

    # 5 ----------------------------------------------------------------------------------------
    fp = ctx["footprint"]
    if fp:
        t = fp["touched"]
        out += [f"## 5. Server footprint after touching {t['count']:,} tenants", "",
                f"A fresh server (RUST_LOG=warn, default flags: at most {DEFAULT_CAP} open "
                f"tenant pools) over part 4's {t['count']:,} tenants (the data directory "
                f"the migrate runs copied, itself never migrated). One `GET /t/SLUG/api/tenant` for "
                f"each tenant as the bench user (a member of all of them), {t['clients']} "
                f"keep-alive clients, in {t['secs']:.1f} s ({len(t['lat']) / t['secs']:,.0f} "
                "first requests/s). /proc/PID/status and /proc/PID/fd read before, every "
                "0.1 s during (peak) and after. Open pools = distinct tenant files among the "
                "descriptors (a pool holds its file, `-wal` and `-shm` open while it has a "
                "connection).", ""]
        rows = []
        b, pk, a = fp["before"], fp["peak"], fp["after"]
        rows.append(["before", bl.mib(b["rss_kb"]), b["threads"], b["fds"], b["tenant_fds"],
                     b["pools"], ""])
        rows.append(["peak while touching (sampled)", bl.mib(pk["rss_kb"]), pk["threads"],
                     pk["fds"], pk["tenant_fds"], pk["pools"], ""])
        rows.append([f"after all {t['count']:,}", bl.mib(a["rss_kb"]), a["threads"], a["fds"],
                     a["tenant_fds"], a["pools"],
                     f"RSS < 150 MB: {verdict(a['rss_kb'] * 1024 < TARGET_RSS_BYTES)}; "
                     f"fds < {TARGET_FDS}: {verdict(a['fds'] < TARGET_FDS)}"])
        out += bl.table(["when", "RSS", "threads", "open fds", "fds into tenants/",
                         "open pools", "target (3 × cap + 64 fds)"], rows)
        out += ["",
                f"- VmHWM (peak RSS of the process): {bl.mib(fp['hwm_kb'])}; answers: "
                f"{len(t['lat']):,} of {t['count']:,} 200 and the right tenant; failures: "
                f"{fails(t['failures'])}; per-request latency p50 {fmt_ms(pct(t['lat'], 50))},"
                f" p99 {fmt_ms(pct(t['lat'], 99))}.", ""]

    # log --------------------------------------------------------------------------------------
    servers = [t for t in tp] + [x for x in (pv, fr, ctx.get("scale_srv"), fp) if x]
    out += bl.server_log_section((s["name"], s["problems"], s["exit"]) for s in servers)
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------


def main():
    a = bl.suite_args(__doc__)

    knobs = {
        "duration": env_int("BENCH_DURATION", 10),
        "runs": env_int("BENCH_RUNS", 3),
        "warmup": env_int("BENCH_WARMUP", 2),
        "levels": os.environ.get("BENCH_LOG_LEVELS", "warn info").split(),
        "tenants": env_int("BENCH_TENANTS", 100),
        "first": env_int("BENCH_FIRST", 300),
        "provision": env_int("BENCH_PROVISION", 500),
        "clients": env_int("BENCH_CLIENTS", 4),
        "scale": env_int("BENCH_SCALE", 10000),
        "workers": [int(w) for w in os.environ.get("BENCH_MIGRATE_WORKERS", "2 4").split()],
    }
    creds = bl.bench_credentials()
    started = time.monotonic()
    ctx = {"knobs": knobs, "load_start": loadavg(), "tp": [], "first": None, "prov": None,
           "migrate": [], "footprint": None, "probe": None, "scale_prov": None, "prov_total": 0}
    bl.raise_fd_limit(1024)
    work = tempfile.mkdtemp(prefix="tenantd-bench-tenancy-")
    try:
        if knobs["scale"] > 0 and knobs["workers"]:
            # First, so a broken build fails the suite before minutes of measuring.
            progress("building the probe binary (one more tenant migration) ...")
            exe, version, mig, secs = build_probe(a.root, a.bin, work)
            ctx["probe"] = {"bin": exe, "version": version, "file": mig, "secs": secs}
            progress(f"probe built in {secs:.0f}s")

        for level in knobs["levels"]:
            progress(f"1. throughput, RUST_LOG={level}: {knobs['warmup']}s warm-up + "
                     f"{knobs['runs']} x ({knobs['duration']}s /healthz + {knobs['duration']}s "
                     f"tenants) ...")
            ctx["tp"].append(throughput(a.bin, creds, level, knobs["tenants"], knobs["runs"],
                                        knobs["duration"], knobs["warmup"], knobs["clients"]))

        if knobs["provision"] > 0:
            progress(f"3. provisioning {knobs['provision']} tenants sequentially, then "
                     f"{knobs['provision']} with {knobs['clients']} clients ...")
            prov_data = os.path.join(work, "provisioned")
            ctx["prov"] = provisioning(a.bin, creds, prov_data, knobs["provision"],
                                       knobs["clients"])
            slugs = [f"s{i}" for i in range(knobs["provision"])]
            if knobs["clients"] > 1:
                slugs += [f"c{i}" for i in range(knobs["provision"])]
            ctx["prov_total"] = len(slugs)
            if knobs["first"] > 0:
                n = min(knobs["first"], len(slugs))
                progress(f"2. first request of {n} tenants on a fresh server ...")
                add_bench_user(a.bin, prov_data, creds)  # no server runs here
                ctx["first"] = first_requests(a.bin, creds, prov_data, slugs[:n])
            shutil.rmtree(prov_data, ignore_errors=True)

        if knobs["scale"] > 0:
            scale_data = os.path.join(work, "scale")
            slugs = [f"m{i}" for i in range(knobs["scale"])]
            progress(f"4. provisioning {knobs['scale']} tenants with {knobs['clients']} "
                     "clients ...")
            with bl.Server(a.bin, rust_log="warn", name="scale provisioning server",
                           data=scale_data) as srv:
                admin = admin_session(a.bin, srv, creds)
                sc = provision(srv, admin, slugs, knobs["clients"])
                problems = srv.log_problems()
            ctx["scale_srv"] = {"name": srv.name, "problems": problems, "exit": srv.exit_note}
            if sc["failures"]:
                raise bl.BenchError(f"provisioning {knobs['scale']} tenants failed: "
                                    f"{sc['failures']}")
            ctx["scale_prov"] = sc
            add_bench_user(a.bin, scale_data, creds)  # no server runs here
            progress(f"   {knobs['scale']} tenants in {sc['secs']:.1f}s")
            if ctx["probe"]:
                for w in knobs["workers"]:
                    copy = os.path.join(work, f"migrate-w{w}")
                    shutil.copytree(scale_data, copy, symlinks=True)
                    progress(f"4. migrate --workers {w} ...")
                    m = run_migrate(ctx["probe"]["bin"], ctx["probe"]["version"], copy, w)
                    progress(f"   {m['secs']:.1f}s")
                    ctx["migrate"].append(m)
                    shutil.rmtree(copy, ignore_errors=True)
            progress(f"5. touching {knobs['scale']} tenants once each ...")
            ctx["footprint"] = footprint(a.bin, creds, scale_data, slugs, knobs["clients"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ctx["load_end"] = loadavg()
    ctx["suite_secs"] = time.monotonic() - started
    text = report(a.root, ctx)
    bl.write_report(a.out, text)


if __name__ == "__main__":
    bl.run_suite("tenancy", main)
