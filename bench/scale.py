"""The scale-out benchmark: the embedded default (local SQLite files) beside sqld, in one run.

Three setups side by side, each holding the same 100 tenants of 200 orders (made through the
API on local, then copied row for row into the tenants on sqld):

- (a) `local`: one `tenantd serve` on its data directory (the default backend);
- (b) `sqld, 1 node`: one `tenantd serve --store sqld` (catalog and tenants on one libSQL server);
- (c) `sqld, 2 nodes`: two such nodes, each its own data directory, on the same sqld and the
  same tenants as (b); the load split across both by two wrk processes.

What is measured:

1. Under wrk, over the 100 tenants as one signed-in member of each: `GET /t/{slug}/api/orders/{id}`
   (the 20,000 orders, tenants interleaved), `GET /t/{slug}/api/orders?limit=50`,
   `POST /t/{slug}/api/orders`; on local also the two reads with `Cache-Control: no-cache`
   (past the kept answers, which sqld does not have). Requests/s, p50, p99, server and sqld CPU
   per request, and the ratio sqld/local.
2. A tenant's first request on a fresh server: `GET /t/{slug}/api/orders?limit=50` once per
   tenant, local vs sqld, then the second one.
3. 1,000 tenants provisioned through `POST /api/admin/tenants`, on sqld (1,000 namespaces beside
   the 100) and on local: tenants/s, and a sample of reads afterwards.

Needs an sqld binary: SQLD_BIN, else ../shared/bin/sqld beside the repository. Run through
`bench/run scale`, which builds the binary first. Directly:

    SQLD_BIN=../shared/bin/sqld python3 bench/scale.py --bin target/release/tenantd \\
        --out bench/out/scale.md

Knobs (environment), see bench/README.md: BENCH_DURATION (8), BENCH_RUNS (3), BENCH_WARMUP (2),
BENCH_LOG_LEVEL ("warn"), BENCH_TENANTS (100), BENCH_ORDERS (200 per tenant), BENCH_CLIENTS (8),
BENCH_NAMESPACES (1000; 0 skips part 3), BENCH_SQLD_MAX_ACTIVE (2000, sqld's
--max-active-namespaces), BENCH_NO_CACHE (1; 0 leaves out the local no-cache reads).
"""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from benchlib import env_int, fmt_ms, pct  # noqa: E402
import tenancy as tn  # noqa: E402  (accounts, the keep-alive client, provisioning)
import workspace as ws  # noqa: E402  (the status-counting Lua)

WRK_THREADS, WRK_CONNS = 2, 32   # per setup; the two-node setup splits them: 1 and 16 per node
DIAG_SECONDS = 3
ROLE = "admin"
ORDER = ws.ORDER
NO_CACHE = ws.NO_CACHE

LOCAL, SQLD1, SQLD2 = "local", "sqld, 1 node", "sqld, 2 nodes"

# Requests prebuilt in init() (see workspace.py). Each thread starts at its own place in the list
# (`offset`, set in setup()), and each node's script at its own `base`, so that concurrent
# clients do not walk the tenants in lockstep.
LUA = """-- bench/scale.py: {what}
local method, body, paths = "{method}", {body}, {{{paths}}}
local reqs, n, i = {{}}, #paths, 0
local threads_made = 0
setup = function(thread)
  thread:set("offset", threads_made * 37)
  threads_made = threads_made + 1
end
init = function(args)
  for k = 1, n do
    local headers = {{["Authorization"] = "Bearer {token}"}}
    if body then headers["Content-Type"] = "application/json" end{extra}
    reqs[k - 1] = wrk.format(method, paths[k], headers, body)
  end
  i = ({base} + (offset or 0)) % n
end
request = function()
  local r = reqs[i]
  i = (i + 1) % n
  return r
end
"""


def progress(msg):
    print(f"scale: {msg}", file=sys.stderr, flush=True)


def lua_str(s):
    return ws.lua_str(s)


def http_call(port, method, path, body=None, headers=(), timeout=30.0):
    """One HTTP/1.1 request to 127.0.0.1:port on a fresh connection (sqld's listeners; the
    standard library's http package is shadowed by bench/http.py): (status, body)."""
    with socket.create_connection((bl.LOOPBACK, port), timeout=timeout) as s:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {bl.LOOPBACK}:{port}",
                 "Connection: close"] + [f"{k}: {v}" for k, v in headers]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if b"transfer-encoding: chunked" in head.lower():
        out = b""
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            size = int(size.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        rest = out
    return status, rest


def free_port():
    with socket.socket() as s:
        s.bind((bl.LOOPBACK, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# sqld


def find_sqld(root):
    """SQLD_BIN, else ../shared/bin/sqld beside the repository; None if neither is a file."""
    named = os.environ.get("SQLD_BIN")
    if named:
        return os.path.abspath(named) if os.path.isfile(named) else None
    beside = os.path.join(os.path.dirname(os.path.abspath(root)), "shared", "bin", "sqld")
    return beside if os.path.isfile(beside) else None


class Sqld:
    """libSQL's server on free loopback ports, namespaces on and no default namespace, a fresh
    database directory; SIGTERM (SIGKILL if it lingers) and the directory removed on exit."""

    def __init__(self, binary, max_active):
        self.binary, self.max_active = binary, max_active
        self.proc = self.dir = None
        self.exit_note = None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="tenantd-bench-sqld-")
        last = ""
        for _ in range(3):  # a free port can be taken before sqld binds it
            self.http_port, self.admin_port = free_port(), free_port()
            if self._start():
                return self
            last = self.log_tail()
        self.__exit__()
        raise bl.BenchError(f"sqld did not start: {last}")

    def _start(self):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [self.binary, "--enable-namespaces", "--disable-default-namespace",
                 "--db-path", os.path.join(self.dir, "data"),
                 "--http-listen-addr", f"{bl.LOOPBACK}:{self.http_port}",
                 "--admin-listen-addr", f"{bl.LOOPBACK}:{self.admin_port}",
                 "--max-active-namespaces", str(self.max_active), "--no-welcome"],
                cwd=self.dir, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                env=dict(os.environ, RUST_LOG="warn"))
        finally:
            log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if http_call(self.http_port, "GET", "/health", timeout=2)[0] == 200:
                    with socket.create_connection((bl.LOOPBACK, self.admin_port), timeout=2):
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        self.proc.wait()
        return False

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
                self.exit_note = f"exited {self.proc.returncode} after SIGTERM"
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit_note = "did not stop within 5s of SIGTERM: killed"
        elif self.proc is not None and self.exit_note is None:
            self.exit_note = f"had already exited with {self.proc.returncode}"
        if self.dir:
            import shutil
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        return False

    @property
    def pid(self):
        return self.proc.pid

    @property
    def url(self):
        return f"http://{bl.LOOPBACK}:{self.http_port}"

    @property
    def admin_url(self):
        return f"http://{bl.LOOPBACK}:{self.admin_port}"

    @property
    def log_path(self):
        return os.path.join(self.dir, "sqld.log")

    def log_tail(self, n=5):
        try:
            with open(self.log_path, "rb") as f:
                return " | ".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def log_problems(self, limit=8):
        """(count, first few) of sqld's log lines (it runs with RUST_LOG=warn: all are)."""
        with open(self.log_path, "rb") as f:
            lines = [x.decode(errors="replace").rstrip() for x in f if x.strip()]
        return len(lines), lines[:limit]

    def version(self):
        p = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        return (p.stdout or p.stderr).strip().splitlines()[0] if p.returncode == 0 else "?"

    def rss_kb(self):
        return bl.proc_stats(self.pid)["rss_kb"]

    def execute(self, ns, stmts):
        """Runs [(sql, args)] on namespace `ns` in one Hrana pipeline (autocommit each): the
        rows of each statement, values as Python ints, strings or None."""
        def arg(v):
            if v is None:
                return {"type": "null"}
            if isinstance(v, int):
                return {"type": "integer", "value": str(v)}
            if isinstance(v, float):
                return {"type": "float", "value": v}
            return {"type": "text", "value": str(v)}
        reqs = [{"type": "execute", "stmt": {"sql": sql, "args": [arg(a) for a in args]}}
                for sql, args in stmts] + [{"type": "close"}]
        try:
            status, body = http_call(self.http_port, "POST", "/v3/pipeline",
                                     json.dumps({"baton": None, "requests": reqs}).encode(),
                                     [("Content-Type", "application/json"),
                                      ("x-namespace", ns)])
            if status != 200:
                raise ValueError(f"status {status}: {body[:200]!r}")
            answer = json.loads(body)
        except (OSError, ValueError) as e:
            raise bl.BenchError(f"sqld pipeline on {ns}: {e}")
        out = []
        for (sql, _), res in zip(stmts, answer["results"]):
            if res.get("type") != "ok":
                raise bl.BenchError(f"sqld on {ns}: {sql[:60]}: {res.get('error')}")
            rows = res["response"]["result"]["rows"]
            out.append([[None if c["type"] == "null"
                         else int(c["value"]) if c["type"] == "integer" else c.get("value")
                         for c in row] for row in rows])
        return out


# ---------------------------------------------------------------------------------------------
# Accounts on each store


MEMBERS_SQL = (
    "INSERT INTO memberships (user_id, tenant_id, role_id, created_at) "
    "SELECT u.id, t.id, r.id, ? FROM tenants t "
    "JOIN roles r ON r.tenant_id = t.id AND r.name = ? "
    "JOIN users u ON u.email = ? "
    "WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = u.id "
    "                  AND m.tenant_id = t.id)")


def copy_accounts_to_sqld(local_data, sqld):
    """The bench admin and user, made by the CLI in the local catalog (`tenantd admin create`
    and `users create` open the local catalog only), copied row for row (password hashes
    included) into the catalog on sqld, `central`."""
    db = sqlite3.connect(f"file:{os.path.join(local_data, 'central.db')}?mode=ro", uri=True,
                         timeout=30)
    try:
        stmts = []
        for table, email in (("system_admins", tn.ADMIN_EMAIL), ("users", tn.USER_EMAIL)):
            cur = db.execute(f"SELECT * FROM {table} WHERE email = ?", (email,))
            cols = [d[0] for d in cur.description]
            row = cur.fetchone()
            keep = [(c, v) for c, v in zip(cols, row) if c != "id"]
            stmts.append((f"INSERT INTO {table} ({', '.join(c for c, _ in keep)}) VALUES "
                          f"({', '.join('?' for _ in keep)})", [v for _, v in keep]))
    finally:
        db.close()
    sqld.execute("central", stmts)


def sqld_members(sqld):
    """The bench user made a member of every tenant of the catalog on sqld: (members, tenants)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res = sqld.execute("central", [
        (MEMBERS_SQL, [now, ROLE, tn.USER_EMAIL]),
        ("SELECT (SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id "
         "WHERE u.email = ?), (SELECT count(*) FROM tenants)", [tn.USER_EMAIL])])
    return tuple(res[1][0])


def copy_orders_to_sqld(local_data, sqld, slugs):
    """The orders seeded through the API on local, copied into the same tenants on sqld: for
    each tenant its `orders`, `order_events` and order counter, in one transaction on one Hrana
    pipeline (faster than 20,000 creates through sqld, which seeding is not here to measure).
    `created_by` and events' `user_id` become the bench user's id in the sqld catalog."""
    db = sqlite3.connect(f"file:{os.path.join(local_data, 'central.db')}?mode=ro", uri=True,
                         timeout=30)
    try:
        local_ids = dict(db.execute("SELECT slug, id FROM tenants"))
        (local_user,) = db.execute("SELECT id FROM users WHERE email = ?",
                                   (tn.USER_EMAIL,)).fetchone()
    finally:
        db.close()
    tenants, users = sqld.execute("central", [("SELECT slug, id FROM tenants", []),
                                              ("SELECT id FROM users WHERE email = ?",
                                               [tn.USER_EMAIL])])
    sqld_ids, sqld_user = dict(map(tuple, tenants)), users[0][0]

    def user(v):
        return sqld_user if v == local_user else v
    for slug in slugs:
        t = sqlite3.connect(f"file:{os.path.join(local_data, 'tenants', local_ids[slug] + '.db')}"
                            "?mode=ro", uri=True, timeout=30)
        try:
            stmts = [("BEGIN IMMEDIATE", [])]
            for table, fix in (("orders", "created_by"), ("order_events", "user_id")):
                cur = t.execute(f"SELECT * FROM {table} ORDER BY id")
                cols = [d[0] for d in cur.description]
                sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                       f"({', '.join('?' for _ in cols)})")
                at = cols.index(fix)
                for row in cur:
                    row = list(row)
                    row[at] = user(row[at])
                    stmts.append((sql, row))
            (value,) = t.execute("SELECT value FROM counters WHERE name = 'order_number'") \
                .fetchone()
            stmts += [("UPDATE counters SET value = ? WHERE name = 'order_number'", [value]),
                      ("COMMIT", [])]
        finally:
            t.close()
        sqld.execute(sqld_ids[slug], stmts)


def local_members(data):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    db = sqlite3.connect(os.path.join(data, "central.db"), timeout=30)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        with db:
            db.execute(MEMBERS_SQL, (now, ROLE, tn.USER_EMAIL))
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------
# Setup


def expect(conn, method, path, status, token, body=None, what=""):
    return ws.expect(conn, method, path, status, token, body, what)


def seed(srv, token, slugs, per_tenant, clients):
    """`per_tenant` orders in each tenant through the API, tenants interleaved: the ids per
    slug and the seconds it took."""
    ids = {s: [] for s in slugs}
    lock = threading.Lock()
    items = [(s, k) for k in range(per_tenant) for s in slugs]

    def one(conn, item):
        slug, k = item
        body = dict(ORDER, title=f"Bench order {k}", customer_name=f"Customer {k}",
                    amount_minor=100 + k)
        status, rbody, ms = conn.request("POST", f"/t/{slug}/api/orders",
                                         json.dumps(body).encode(), ws.json_auth(token))
        if status != 201:
            return False, ms, f"status {status}: {rbody[:120].decode(errors='replace')}"
        with lock:
            ids[slug].append(json.loads(rbody)["id"])
        return True, ms, None
    res = tn.parallel(srv, items, clients, one)
    if res["failures"]:
        raise bl.BenchError(f"{srv.name}: seeding orders failed: {res['failures']}")
    for s in slugs:
        ids[s].sort()
    return ids, res["secs"]


def check_workloads(srv, token, slugs, ids):
    """Every workload's request answers as expected once before wrk sends it by the thousand."""
    conn = tn.Conn(srv.host, srv.port)
    try:
        s = slugs[-1]
        got = expect(conn, "GET", f"/t/{s}/api/orders/{ids[s][0]}", 200, token)
        if got.get("id") != ids[s][0] or "customer_name" not in got:
            raise bl.BenchError(f"{srv.name}: GET order {ids[s][0]} of {s}: not that order: "
                                f"{got}")
        page = expect(conn, "GET", f"/t/{s}/api/orders?limit=50", 200, token)
        if len(page.get("orders", [])) != min(50, len(ids[s])):
            raise bl.BenchError(f"{srv.name}: GET /t/{s}/api/orders?limit=50: "
                                f"{len(page.get('orders', []))} orders")
        expect(conn, "POST", f"/t/{s}/api/orders", 201, token, ORDER)
        expect(conn, "GET", f"/t/{s}/api/orders/{ids[s][0]}", 401, None,
               what=" without credentials")
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Workloads and measuring


class Workload:
    def __init__(self, key, label, method, paths, body=None, headers=()):
        self.key, self.label, self.method, self.paths = key, label, method, paths
        self.body, self.headers = body, list(headers)

    def lua(self, token, base=0, status_counter=False):
        body = "nil" if self.body is None else lua_str(json.dumps(self.body))
        extra = "".join(f"\n    headers[{lua_str(k)}] = {lua_str(v)}" for k, v in self.headers)
        text = LUA.format(what=self.label, method=self.method, body=body, token=token,
                          extra=extra, base=base,
                          paths=", ".join(lua_str(p) for p in self.paths))
        return text + (ws.LUA_STATUS if status_counter else "")


def workloads(slugs, ids, no_cache):
    gets = [f"/t/{s}/api/orders/{ids[s][k]}" for k in range(max(len(v) for v in ids.values()))
            for s in slugs if k < len(ids[s])]
    lists = [f"/t/{s}/api/orders?limit=50" for s in slugs]
    creates = [f"/t/{s}/api/orders" for s in slugs]
    out = [Workload("get", f"`GET /orders/{{id}}`, {len(gets):,} orders of {len(slugs)} tenants",
                    "GET", gets),
           Workload("list", f"`GET /orders?limit=50`, {len(slugs)} tenants", "GET", lists),
           Workload("create", f"`POST /orders`, {len(slugs)} tenants", "POST", creates, ORDER)]
    if no_cache:
        out += [Workload("get_nc", "`GET /orders/{id}`, `Cache-Control: no-cache`", "GET", gets,
                         headers=[NO_CACHE]),
                Workload("list_nc", "`GET /orders?limit=50`, `Cache-Control: no-cache`", "GET",
                         lists, headers=[NO_CACHE])]
    return out


class Setup:
    """A setup under load: its nodes (one or two tenantd servers), the session token they take,
    and the sqld process (if any) whose CPU is counted beside theirs."""

    def __init__(self, name, nodes, token, sqld=None):
        self.name, self.nodes, self.token, self.sqld = name, nodes, token, sqld
        self.scripts = {}
        self.runs = {}   # workload key -> [result]
        self.warm = {}
        self.diag = {}

    def write_scripts(self, w, workdir):
        paths = []
        for i, _ in enumerate(self.nodes):
            # The second node starts half-way through the list.
            path = os.path.join(workdir, f"{self.name.replace(', ', '-').replace(' ', '')}"
                                         f"-{w.key}-{i}.lua")
            with open(path, "w") as f:
                f.write(w.lua(self.token, base=i * len(w.paths) // len(self.nodes)))
            paths.append(path)
        self.scripts[w.key] = paths

    def wrk(self, w, duration, scripts=None):
        """One run of `w` across the nodes at once: combined requests/s, the per-node latency
        figures, and CPU per request of the tenantd processes and of sqld."""
        scripts = scripts or self.scripts[w.key]
        n = len(self.nodes)
        threads, conns = WRK_THREADS // n, WRK_CONNS // n
        pids = [srv.pid for srv in self.nodes]
        cpu0 = [bl.process_cpu_seconds(p) for p in pids]
        sq0 = bl.process_cpu_seconds(self.sqld.pid) if self.sqld else None
        results, errors = [None] * n, []

        def go(i):
            srv = self.nodes[i]
            try:
                results[i] = bl.run_wrk(f"http://{srv.addr}{w.paths[0]}", threads, conns,
                                        duration, script=scripts[i])
            except bl.BenchError as e:
                errors.append(str(e))
        ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise bl.BenchError(f"{self.name}: {errors[0]}")
        cpu = sum(bl.process_cpu_seconds(p) - c for p, c in zip(pids, cpu0))
        sq = bl.process_cpu_seconds(self.sqld.pid) - sq0 if self.sqld else None
        reqs = sum(r["requests"] or 0 for r in results)
        return {"rps": sum(r["rps"] for r in results),
                "p50_ms": max(r["p50_ms"] for r in results),
                "p99_ms": max(r["p99_ms"] for r in results),
                "per_node": [(r["rps"], r["p50_ms"], r["p99_ms"]) for r in results],
                "requests": reqs,
                "non_2xx": sum(r["non_2xx"] for r in results),
                "socket_errors": {k: sum(r["socket_errors"].get(k, 0) for r in results)
                                  for k in ("connect", "read", "write", "timeout")},
                "cpu_us": cpu / reqs * 1e6 if reqs else None,
                "sqld_cpu_us": sq / reqs * 1e6 if reqs and sq is not None else None}

    def diagnose(self, w, workdir):
        """A short run of a workload that answered non-2xx, counting answers by status (node
        one only)."""
        path = os.path.join(workdir, f"diag-{w.key}.lua")
        with open(path, "w") as f:
            f.write(w.lua(self.token, status_counter=True))
        srv = self.nodes[0]
        r = bl.run_wrk(f"http://{srv.addr}{w.paths[0]}", WRK_THREADS, WRK_CONNS, DIAG_SECONDS,
                       script=path)
        line = next((x for x in r["raw"].splitlines() if x.startswith("STATUSES")), "STATUSES ?")
        return {"statuses": line.split(" ", 1)[1] if " " in line else "", "rps": r["rps"]}


def sqld_metrics(sqld):
    """sqld's Prometheus counters (its admin listener's /metrics), by name with labels."""
    status, body = http_call(sqld.admin_port, "GET", "/metrics")
    if status != 200:
        raise bl.BenchError(f"sqld /metrics answered {status}")
    out = {}
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            pass
    return out


ROUND_TRIP_REQUESTS = 100


def round_trips(sqld, srv, token, wls):
    """What one API request asks of sqld: sqld's counters around 100 requests of each workload
    sent one after another through `srv` (nothing else running), divided by 100."""
    out = {}
    conn = tn.Conn(srv.host, srv.port)
    try:
        for w in wls:
            body = None if w.body is None else json.dumps(w.body).encode()
            before = sqld_metrics(sqld)
            for k in range(ROUND_TRIP_REQUESTS):
                status, rbody, _ = conn.request(w.method, w.paths[k % len(w.paths)], body,
                                                ws.json_auth(token) if body else ws.auth(token))
                if status not in (200, 201):
                    raise bl.BenchError(f"{srv.name}: {w.method} {w.paths[0]}: {status}")
            after = sqld_metrics(sqld)

            def d(name):
                return (after.get(name, 0.0) - before.get(name, 0.0)) / ROUND_TRIP_REQUESTS
            out[w.key] = {
                "http": sum(after[n] - before.get(n, 0.0) for n in after
                            if n.startswith("libsql_server_user_http_response{"))
                / ROUND_TRIP_REQUESTS,
                "central": d('libsql_server_query_count{namespace="central"}'),
                "statements": d("libsql_server_query_count"),
                "connections": d("libsql_server_connection_create_time_count"),
                "conn_ms": d("libsql_server_connection_create_time_sum") * 1000,
            }
    finally:
        conn.close()
    return out


def first_requests(srv, token, slugs):
    """On a server that has served no tenant request yet: one GET of a page of orders per
    tenant (the first), then again (the second), on one warm keep-alive connection."""
    conn = tn.Conn(srv.host, srv.port)
    first, second, failures = [], [], {}
    try:
        status, _, _ = conn.request("GET", "/healthz")
        if status != 200:
            raise bl.BenchError(f"{srv.name}: GET /healthz answered {status}")
        for slug in slugs:
            for into in (first, second):
                try:
                    status, body, ms = conn.request("GET", f"/t/{slug}/api/orders?limit=50",
                                                    headers=ws.auth(token))
                    ok = status == 200 and len(json.loads(body).get("orders", [])) == 50
                    failure = None if ok else f"status {status}"
                except (OSError, ValueError) as e:
                    ok, ms, failure = False, None, f"{type(e).__name__}: {e}"
                if ok:
                    into.append(ms)
                else:
                    tn.count(failures, failure)
    finally:
        conn.close()
    return {"first": first, "second": second, "failures": failures}


def sample_reads(nodes, token, slugs):
    """GET a page of orders of each slug through each node: (ok, total, failures)."""
    ok, total, failures = 0, 0, {}
    for srv in nodes:
        conn = tn.Conn(srv.host, srv.port)
        try:
            for slug in slugs:
                total += 1
                try:
                    status, body, _ = conn.request("GET", f"/t/{slug}/api/orders?limit=50",
                                                   headers=ws.auth(token))
                    if status == 200 and isinstance(json.loads(body).get("orders"), list):
                        ok += 1
                    else:
                        tn.count(failures, f"{srv.name}: status {status}: "
                                           f"{body[:100].decode(errors='replace')}")
                except (OSError, ValueError) as e:
                    tn.count(failures, f"{srv.name}: {type(e).__name__}: {e}")
        finally:
            conn.close()
    return ok, total, failures


def provision(srv, token, count_, clients, prefix):
    res = tn.provision(srv, token, [f"{prefix}{i}" for i in range(count_)], clients)
    return res


# ---------------------------------------------------------------------------------------------
# The run


def measure(binary, sqld_bin, creds, knobs):
    level = knobs["level"]
    slugs = [f"t{i}" for i in range(knobs["tenants"])]
    res = {"knobs": knobs, "logs": [], "seed": {}, "first": {}, "prov": {}, "reads_after": {}}
    with ExitStack() as stack:
        work = tempfile.mkdtemp(prefix="tenantd-bench-scale-")
        stack.callback(lambda: __import__("shutil").rmtree(work, ignore_errors=True))
        local_data = os.path.join(work, "local")
        node_data = [os.path.join(work, f"node{i}") for i in (1, 2, 3)]
        for d in [local_data] + node_data:
            os.makedirs(d)

        progress(f"starting sqld (--max-active-namespaces {knobs['max_active']}) ...")
        sqld = stack.enter_context(Sqld(sqld_bin, knobs["max_active"]))
        res["sqld_version"] = sqld.version()
        sqld_args = ["--store", "sqld", "--sqld-url", sqld.url, "--sqld-admin-url", sqld.admin_url]

        def node(i):
            return bl.Server(binary, rust_log=level, args=sqld_args, name=f"sqld node {i + 1}",
                             data=node_data[i])

        # (a) local ----------------------------------------------------------------------------
        with ExitStack() as servers:
            local = servers.enter_context(bl.Server(binary, rust_log=level, name="local server",
                                                    data=local_data))
            progress(f"local: {len(slugs)} tenants, {knobs['orders']} orders each ...")
            admin = tn.admin_session(binary, local, creds)
            prov = tn.provision(local, admin, slugs, knobs["clients"])
            if prov["failures"]:
                raise bl.BenchError(f"local: creating the tenants failed: {prov['failures']}")
            tn.tenantd_cli(binary, local_data, "users", "create", "--email", tn.USER_EMAIL,
                           "--name", "Bench", "--password", creds["user"])
            local_members(local_data)
            local_token = tn.user_session(local, creds)
            local_ids, secs = seed(local, local_token, slugs, knobs["orders"], knobs["clients"])
            res["seed"][LOCAL] = secs
            check_workloads(local, local_token, slugs, local_ids)

            # (b), (c) sqld ---------------------------------------------------------------------
            n1 = servers.enter_context(node(0))
            copy_accounts_to_sqld(local_data, sqld)
            progress(f"sqld: {len(slugs)} tenants, {knobs['orders']} orders each ...")
            admin_s = tn.login(n1, "/api/admin/auth/login", tn.ADMIN_EMAIL, creds["admin"])
            prov = tn.provision(n1, admin_s, slugs, knobs["clients"])
            if prov["failures"]:
                raise bl.BenchError(f"sqld: creating the tenants failed: {prov['failures']}")
            members, tenants = sqld_members(sqld)
            if members != tenants:
                raise bl.BenchError(f"sqld: the bench user is a member of {members} of "
                                    f"{tenants} tenants")
            sqld_token = tn.user_session(n1, creds)
            started = time.monotonic()
            copy_orders_to_sqld(local_data, sqld, slugs)
            sqld_ids = local_ids
            res["seed"][SQLD1] = time.monotonic() - started
            n2 = servers.enter_context(node(1))
            for srv in (n1, n2):
                check_workloads(srv, sqld_token, slugs, sqld_ids)

            setups = [Setup(LOCAL, [local], local_token),
                      Setup(SQLD1, [n1], sqld_token, sqld),
                      Setup(SQLD2, [n1, n2], sqld_token, sqld)]
            wl_local = workloads(slugs, local_ids, knobs["no_cache"])
            wl_sqld = workloads(slugs, sqld_ids, False)
            plan = []  # (setup, workload), in the order of one run
            for w in wl_local:
                plan.append((setups[0], w))
                if not w.key.endswith("_nc"):
                    ws_ = next(x for x in wl_sqld if x.key == w.key)
                    plan += [(setups[1], ws_), (setups[2], ws_)]
            for s, w in plan:
                s.write_scripts(w, work)
            res["setups"], res["workloads"] = setups, wl_local
            res["sqld_rss_before"] = sqld.rss_kb()

            if knobs["warmup"] > 0:
                progress(f"warm-up: {knobs['warmup']}s of each of {len(plan)} ...")
                for s, w in plan:
                    s.warm[w.key] = s.wrk(w, knobs["warmup"])
            for run in range(knobs["runs"]):
                progress(f"run {run + 1} of {knobs['runs']}: {knobs['duration']}s of each of "
                         f"{len(plan)} ...")
                for s, w in plan:
                    s.runs.setdefault(w.key, []).append(s.wrk(w, knobs["duration"]))
            for s, w in plan:
                if any(r["non_2xx"] for r in s.runs[w.key] + [s.warm.get(w.key)] if r):
                    progress(f"{s.name} {w.key} answered non-2xx: counting statuses ...")
                    s.diag[w.key] = s.diagnose(w, work)
            res["sqld_rss_after"] = sqld.rss_kb()
            progress("what one request asks of sqld ...")
            res["round_trips"] = round_trips(sqld, n1, sqld_token, wl_sqld)
            res["stats"] = {srv.name: srv.stats() for srv in (local, n1, n2)}
            problems = [(srv, srv.log_problems()) for srv in (local, n1, n2)]
        for srv, p in problems:
            res["logs"].append((srv.name, p, srv.exit_note))

        # 2. First requests on fresh servers ---------------------------------------------------
        progress("first requests: fresh servers ...")
        with bl.Server(binary, rust_log=level, name="local server, restarted",
                       data=local_data) as srv:
            res["first"][LOCAL] = first_requests(srv, local_token, slugs)
            p = srv.log_problems()
        res["logs"].append((srv.name, p, srv.exit_note))
        with node(2) as srv:
            res["first"]["sqld"] = first_requests(srv, sqld_token, slugs)
            p = srv.log_problems()
        res["logs"].append((srv.name, p, srv.exit_note))

        # 3. 1,000 namespaces ------------------------------------------------------------------
        if knobs["namespaces"] > 0:
            count_ = knobs["namespaces"]
            sample = [f"p{i}" for i in range(0, count_, max(1, count_ // 10))][:10]
            old = slugs[:3]
            with bl.Server(binary, rust_log=level, name="local server, provisioning",
                           data=local_data) as srv:
                progress(f"local: provisioning {count_:,} tenants ...")
                token = tn.login(srv, "/api/admin/auth/login", tn.ADMIN_EMAIL, creds["admin"])
                res["prov"][LOCAL] = provision(srv, token, count_, knobs["clients"], "p")
                local_members(local_data)
                res["reads_after"][LOCAL] = sample_reads([srv], local_token, sample + old)
                p = srv.log_problems()
            res["logs"].append((srv.name, p, srv.exit_note))
            with node(0) as a, node(1) as b:
                progress(f"sqld: provisioning {count_:,} tenants (namespaces) ...")
                token = tn.login(a, "/api/admin/auth/login", tn.ADMIN_EMAIL, creds["admin"])
                res["prov"]["sqld"] = provision(a, token, count_, knobs["clients"], "p")
                sqld_members(sqld)
                res["reads_after"]["sqld"] = sample_reads([a, b], sqld_token, sample + old)
                res["sample"] = sample + old
                pa, pb = a.log_problems(), b.log_problems()
            res["logs"].append((a.name + ", provisioning", pa, a.exit_note))
            res["logs"].append((b.name + ", reads after", pb, b.exit_note))
            res["sqld_rss_end"] = sqld.rss_kb()
        res["sqld_log"] = sqld.log_problems()
    res["sqld_exit"] = sqld.exit_note
    return res


# ---------------------------------------------------------------------------------------------
# Report


def fmt_cpu(us):
    return "" if us is None else f"{us:.0f} µs"


def report(root, res, meta):
    k = res["knobs"]
    out = bl.header(root, "tenantd benchmark: scale (local vs sqld)")
    out.insert(-1, f"- load average (1, 5, 15 min) at start: {meta['load_start']}, "
                   f"at end: {meta['load_end']}")
    out.insert(-1, f"- suite run time: {meta['secs']:.0f} s")
    out.insert(-1, f"- sqld: {res['sqld_version']}, `--max-active-namespaces {k['max_active']}`, "
                   "on the same 2 cores as tenantd and wrk")
    n = k["tenants"]
    out += ["## Throughput", "",
            f"{n} tenants, each with {k['orders']} orders made through the API on local "
            f"(`POST /t/{{slug}}/api/orders` by {k['clients']} keep-alive clients, tenants "
            f"interleaved: {res['seed'][LOCAL]:.1f} s), then copied into the same tenants on "
            "sqld over Hrana (each tenant's `orders`, `order_events` and order counter in one "
            f"transaction: {res['seed'][SQLD1]:.1f} s). One user, an `{ROLE}` member of every "
            "tenant, signs every request with its session (`Authorization: Bearer`). "
            f"Setups: **{LOCAL}** (one server, its data directory); **{SQLD1}** (one "
            "`serve --store sqld`: catalog and tenants in sqld namespaces); "
            f"**{SQLD2}** (a second node, its own data directory, on the same sqld and "
            "tenants, so both nodes serve the same data). Every setup runs "
            f"`wrk -t{WRK_THREADS} -c{WRK_CONNS} -d{k['duration']}s --latency` in all: the "
            f"two-node setup as two wrk processes at once (`-t1 -c16` each, one per node), "
            "whose requests/s are added; its p50 and p99 are the worse node's. Lua scripts "
            "prebuild the requests and cycle over them (each thread from its own place). "
            f"{k['warmup']} s warm-up of each, then {k['runs']} runs, every setup and workload "
            "alternating within a run; figures are medians of the runs. CPU per request: the "
            "CPU time of the tenantd process(es), and of sqld, over a run, divided by the "
            "requests answered. The ratio is the setup's requests/s over local's.", ""]
    setups = res["setups"]
    local = setups[0]
    rows = []
    for w in res["workloads"]:
        base = bl.median([r["rps"] for r in local.runs[w.key]])
        for s in setups:
            runs = s.runs.get(w.key)
            if not runs:
                continue
            rps = bl.median([r["rps"] for r in runs])
            non2xx = sum(r["non_2xx"] for r in runs)
            ratio = "" if s is local or not base else \
                f"{rps / base:.2f}" if rps / base >= 0.1 else f"{rps / base:.4f}"
            rows.append([w.label if s is local else "", s.name, f"{rps:,.0f}",
                         fmt_ms(bl.median([r["p50_ms"] for r in runs])),
                         fmt_ms(bl.median([r["p99_ms"] for r in runs])),
                         fmt_cpu(bl.median([r["cpu_us"] for r in runs])),
                         fmt_cpu(bl.median([r["sqld_cpu_us"] for r in runs])),
                         f"{non2xx:,}" if not non2xx else f"**{non2xx:,}**", ratio,
                         " / ".join(f"{r['rps']:,.0f}" for r in runs)])
    out += bl.table(["workload", "setup", "requests/s", "p50", "p99", "tenantd CPU/req",
                     "sqld CPU/req", "non-2xx", "vs local", "each run: req/s"], rows)
    out.append("")
    if k["no_cache"]:
        out += ["The `no-cache` rows are local reads past the kept answers (`tenancy::reads`), "
                "which are off on sqld: they separate what the round trip to sqld costs from "
                "what the kept answers save.",
                ""]
    for s in setups:
        for w in res["workloads"]:
            runs = s.runs.get(w.key)
            if not runs:
                continue
            errs = {}
            for r in runs:
                for kk, v in r["socket_errors"].items():
                    errs[kk] = errs.get(kk, 0) + v
            warm = s.warm.get(w.key)
            note = (f"- {s.name}, {w.key}: socket errors: "
                    f"{', '.join(f'{kk} {v}' for kk, v in errs.items() if v) or 'none'}; "
                    f"non-2xx in the warm-up: {warm['non_2xx'] if warm else 0}")
            if len(s.nodes) > 1:
                note += "; per node (req/s, p50, p99): " + "; ".join(
                    " / ".join(f"{rps:,.0f}, {fmt_ms(a)}, {fmt_ms(b)}" for rps, a, b in
                               r["per_node"]) for r in runs)
            if w.key in s.diag:
                d = s.diag[w.key]
                note += (f"; a {DIAG_SECONDS} s run counting statuses afterwards saw "
                         f"`{d['statuses']}` ({d['rps']:,.0f} req/s)")
            out.append(note + ".")
    out.append(f"- sqld RSS: {bl.mib(res['sqld_rss_before'])} before the warm-up, "
               f"{bl.mib(res['sqld_rss_after'])} after the runs"
               + (f", {bl.mib(res['sqld_rss_end'])} at the end of the suite."
                  if "sqld_rss_end" in res else "."))
    out.append("- tenantd after the runs: " + "; ".join(
        f"{name} {bl.mib(st['rss_kb'])}, {st['threads']} threads" for name, st in
        res["stats"].items()) + ".")
    out.append("")

    out += ["## What one request asks of sqld", "",
            f"Through sqld node 1 alone, nothing else running: {ROUND_TRIP_REQUESTS} requests "
            "of each workload one after another, sqld's own counters (its admin listener's "
            "`/metrics`) before and after, divided by the requests: the statements sqld ran "
            "(`libsql_server_query_count`; tenantd sends a read as a one-statement Hrana "
            "pipeline, a write as an interactive transaction on a stream), those on the "
            "catalog's namespace `central`, and the SQLite connections sqld opened for them "
            "(`libsql_server_connection_create_time`: one per pipeline outside a stream, one "
            "per stream) with the time that took it.", ""]
    rows = []
    for w in res["workloads"]:
        rt = res["round_trips"].get(w.key)
        if rt:
            rows.append([w.label, f"{rt['statements']:.2f}", f"{rt['central']:.2f}",
                         f"{rt['connections']:.2f}",
                         fmt_ms(rt["conn_ms"])])
    out += bl.table(["workload", "statements", "of them on `central`",
                     "connections sqld opened", "sqld time opening them"],
                    rows)
    out.append("")

    out += ["## A tenant's first request", "",
            f"A fresh server (local: restarted on its data directory; sqld: a third node with a "
            f"new data directory, on the same sqld), which has served no tenant request yet: "
            f"`GET /t/{{slug}}/api/orders?limit=50` once for each of the {n} tenants (the "
            "first: the tenant opened, on sqld its namespace's owner and migration checks), "
            "then once more (the second), one after another on one keep-alive connection "
            "opened with a `GET /healthz`. Time from sending to the whole answer read. On sqld "
            "the namespaces were in use a moment before: sqld itself is warm, this node is "
            "not.", ""]
    rows = []
    for name, f in res["first"].items():
        rows.append([name, fmt_ms(bl.median(f["first"])), fmt_ms(pct(f["first"], 90)),
                     fmt_ms(max(f["first"]) if f["first"] else None),
                     fmt_ms(bl.median(f["second"])), fmt_ms(pct(f["second"], 90)),
                     ", ".join(f"{kk}: {v}" for kk, v in f["failures"].items()) or "none"])
    out += bl.table(["store", "first: median", "first: p90", "first: max", "second: median",
                     "second: p90", "failures"], rows)
    out.append("")

    if res["prov"]:
        c = k["namespaces"]
        out += [f"## {c:,} tenants provisioned", "",
                f"`POST /api/admin/tenants` {c:,} times by {k['clients']} keep-alive clients "
                f"(a system admin's session), on local (beside the {n} tenants above; each a "
                f"new file, migrated and seeded) and on sqld (each a new namespace made through "
                f"sqld's admin API, migrated and seeded over the wire, beside the {n} above and "
                f"`central`: {c + n + 1:,} namespaces; sqld keeps at most "
                f"{k['max_active']:,} of them in memory, `--max-active-namespaces`, default "
                "100). Latency per create, from sending to the answer. Afterwards the bench user "
                f"is made a member of the new tenants and reads a page of orders of "
                f"{len(res['sample'])} of them ({', '.join(res['sample'])}), through each node "
                "on sqld.", ""]
        rows = []
        for name, p in res["prov"].items():
            ok = len(p["lat"])
            reads = res["reads_after"][name]
            rows.append([name, f"{ok:,} of {p['count']:,}", f"{p['secs']:.1f} s",
                         f"{ok / p['secs']:,.0f}" if p["secs"] else "",
                         fmt_ms(bl.median(p["lat"])), fmt_ms(pct(p["lat"], 99)),
                         fmt_ms(max(p["lat"]) if p["lat"] else None),
                         ", ".join(f"{kk}: {v}" for kk, v in p["failures"].items()) or "none",
                         f"{reads[0]} of {reads[1]} 200"
                         + (f" ({'; '.join(f'{kk}: {v}' for kk, v in reads[2].items())})"
                            if reads[2] else "")])
        out += bl.table(["store", "created", "time", "tenants/s", "p50", "p99", "max",
                         "failures", "reads after"], rows)
        out.append("")

    out += bl.server_log_section(res["logs"])
    n_sq, first_sq = res["sqld_log"]
    out[-1:-1] = [f"- sqld: {res['sqld_exit']}; log lines (RUST_LOG=warn): {n_sq}"
                  + (":" if first_sq else "")] + [f"    - `{x[:300]}`" for x in first_sq]
    return "\n".join(out)


def main():
    a = bl.suite_args(__doc__)
    knobs = {
        "duration": env_int("BENCH_DURATION", 8),
        "runs": env_int("BENCH_RUNS", 3),
        "warmup": env_int("BENCH_WARMUP", 2),
        "level": os.environ.get("BENCH_LOG_LEVEL", "warn"),
        "tenants": env_int("BENCH_TENANTS", 100),
        "orders": env_int("BENCH_ORDERS", 200),
        "clients": env_int("BENCH_CLIENTS", 8),
        "namespaces": env_int("BENCH_NAMESPACES", 1000),
        "max_active": env_int("BENCH_SQLD_MAX_ACTIVE", 2000),
        "no_cache": env_int("BENCH_NO_CACHE", 1) != 0,
    }
    if knobs["runs"] < 1 or knobs["tenants"] < 1 or knobs["orders"] < 50:
        raise bl.BenchError("BENCH_RUNS and BENCH_TENANTS must be at least 1, BENCH_ORDERS 50")
    sqld_bin = find_sqld(a.root)
    if not sqld_bin:
        raise bl.BenchError("cannot run: no sqld binary (set SQLD_BIN, or put it at "
                            "../shared/bin/sqld beside the repository)")
    creds = bl.bench_credentials()
    started = time.monotonic()
    meta = {"load_start": bl.loadavg()}
    bl.raise_fd_limit(1024)
    res = measure(a.bin, sqld_bin, creds, knobs)
    meta["load_end"] = bl.loadavg()
    meta["secs"] = time.monotonic() - started
    bl.write_report(a.out, report(a.root, res, meta))


if __name__ == "__main__":
    bl.run_suite("scale", main)
