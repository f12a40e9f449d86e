"""The workspace benchmark: orders and chat messages under wrk, next to `GET /healthz` on the same
server.

One server, several tenants, one signed-in user (an `admin` member of each, so every route is
allowed). Under `wrk -t2 -c32 --latency`, alternating with `GET /healthz` (the ceiling):

- `GET /t/reads/api/orders/{id}`, cycling over the ids of the ~1,000 orders of one tenant;
- `GET /t/reads/api/orders?limit=50`;
- `POST /t/one/api/orders`, every order into one tenant;
- `POST /t/wN/api/orders`, the path cycling over 8 tenants;
- `POST /t/chat/api/chats/{id}/messages` into one chat.

Run through `bench/run workspace`, which installs wrk and builds the binary first. Directly:

    python3 bench/workspace.py --bin target/release/tenantd --out bench/out/workspace.md

Knobs (environment), see bench/README.md: BENCH_DURATION (10), BENCH_RUNS (3), BENCH_WARMUP (2),
BENCH_LOG_LEVEL ("warn"), BENCH_ORDERS (1000), BENCH_SPREAD (8), BENCH_CLIENTS (4).
"""

import json
import os
import signal
import sqlite3
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from benchlib import env_int  # noqa: E402
import tenancy as tn  # noqa: E402  (accounts, the keep-alive client, report helpers)

WRK_THREADS, WRK_CONNS = 2, 32
TARGET_READ_RATIO = 0.60     # order reads against the /healthz ceiling
TARGET_CREATE_RPS = 2000     # order creates per second into one tenant
TARGET_SPREAD_FACTOR = 1.5   # creates spread over several tenants against one tenant
DIAG_SECONDS = 3             # a status-counting wrk run, only after non-2xx answers
ROLE = "admin"               # the bench user's built-in role in every tenant: every route allowed

NO_CACHE = ("Cache-Control", "no-cache")  # past tenantd's answers cache (tenancy::reads)
READS, ONE, CHAT = "reads", "one", "chat"  # tenant slugs; the spread ones are w0 ... w{N-1}

ORDER = {"title": "Bench order", "customer_name": "Bench Customer", "amount_minor": 1234,
         "currency": "EUR"}
MESSAGE = {"body": "A bench message of a few words, as chats have."}

# Requests are prebuilt in init(): wrk.format at the top level runs before wrk knows the host,
# and its requests would carry no Host header (400 for every one).
LUA = """-- bench/workspace.py: {what}
local method, body, paths = "{method}", {body}, {{{paths}}}
local reqs, n, i = {{}}, #paths, 0
init = function(args)
  for k = 1, n do
    -- wrk.format adds Host (and Content-Length for a body) to the headers table.
    local headers = {{["Authorization"] = "Bearer {token}"}}
    if body then headers["Content-Type"] = "application/json" end{extra}
    reqs[k - 1] = wrk.format(method, paths[k], headers, body)
  end
end
request = function()
  local r = reqs[i]
  i = (i + 1) % n
  return r
end
"""

# Appended for the diagnostic run only: a response() callback makes wrk hand every answer to Lua,
# which costs throughput, so the measured runs go without it.
LUA_STATUS = """
local threads = {}
setup = function(thread) table.insert(threads, thread) end
statuses = {}
response = function(status, headers, body)
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
end
done = function(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses") or {}) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, k .. "=" .. v) end
  table.sort(parts)
  io.write("STATUSES " .. table.concat(parts, " ") .. "\\n")
end
"""


def lua_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def progress(msg):
    print(f"workspace: {msg}", file=sys.stderr, flush=True)


def auth(token):
    return [("Authorization", f"Bearer {token}")]


def json_auth(token):
    return auth(token) + [("Content-Type", "application/json")]


def expect(conn, method, path, status, token=None, body=None, what=""):
    """One request on `conn`, which must answer `status`: its JSON body."""
    data = None if body is None else json.dumps(body).encode()
    headers = [] if token is None else (json_auth(token) if data else auth(token))
    got, rbody, _ = conn.request(method, path, data, headers)
    if got != status:
        raise bl.BenchError(f"{method} {path}{what}: {got}, not {status}: "
                            f"{rbody[:200].decode(errors='replace')}")
    try:
        return json.loads(rbody) if rbody else None
    except ValueError:
        raise bl.BenchError(f"{method} {path}: the answer is not JSON")


class Workload:
    def __init__(self, key, label, method, paths, body, url_path, target=None, plain=False,
                 headers=()):
        self.key, self.label, self.method, self.paths = key, label, method, paths
        self.body, self.url_path, self.target = body, url_path, target
        self.plain = plain  # plain wrk, no script (GET /healthz, as in the http suite)
        self.headers = list(headers)  # beside Authorization (and Content-Type with a body)
        self.script = None
        self.warm = None
        self.runs = []
        self.diag = None

    def lua(self, token, what, status_counter=False):
        body = "nil" if self.body is None else lua_str(json.dumps(self.body))
        extra = "".join(f"\n    headers[{lua_str(k)}] = {lua_str(v)}" for k, v in self.headers)
        text = LUA.format(what=what, method=self.method, body=body, token=token, extra=extra,
                          paths=", ".join(lua_str(p) for p in self.paths))
        return text + (LUA_STATUS if status_counter else "")


# ---------------------------------------------------------------------------------------------
# Setup: tenants, the user, 1,000 orders, a chat


def setup(binary, srv, creds, knobs):
    admin = tn.admin_session(binary, srv, creds)
    spread = [f"w{i}" for i in range(knobs["spread"])]
    slugs = [READS, ONE, CHAT] + spread
    prov = tn.provision(srv, admin, slugs, knobs["clients"])
    if prov["failures"]:
        raise bl.BenchError(f"creating the tenants failed: {prov['failures']}")
    members = tn.add_bench_user(binary, srv.data_dir, creds, role=ROLE)  # the server is idle
    token = tn.user_session(srv, creds)

    # ~1,000 orders in the read tenant, through the API (checked 201, ids kept).
    ids = []

    def one(conn, k):
        body = dict(ORDER, title=f"Bench order {k}", customer_name=f"Customer {k}",
                    amount_minor=100 + k)
        status, rbody, ms = conn.request("POST", f"/t/{READS}/api/orders",
                                         json.dumps(body).encode(), json_auth(token))
        if status != 201:
            return False, ms, f"status {status}: {rbody[:120].decode(errors='replace')}"
        ids.append(json.loads(rbody)["id"])
        return True, ms, None
    seeded = tn.parallel(srv, range(knobs["orders"]), knobs["clients"], one)
    if seeded["failures"]:
        raise bl.BenchError(f"seeding {knobs['orders']} orders failed: {seeded['failures']}")
    ids.sort()

    conn = tn.Conn(srv.host, srv.port)
    try:
        chat = expect(conn, "POST", f"/t/{CHAT}/api/chats", 201, token,
                      {"title": "bench", "kind": "group", "participant_ids": []})
        chat_id = chat["id"]
        # Every workload's request answers as expected once before wrk sends it by the thousand.
        expect(conn, "GET", f"/t/{READS}/api/orders/{ids[0]}", 401, what=" without credentials")
        got = expect(conn, "GET", f"/t/{READS}/api/orders/{ids[0]}", 200, token)
        if got.get("id") != ids[0] or "customer_name" not in got:
            raise bl.BenchError(f"GET order {ids[0]}: not that order with all fields: {got}")
        page = expect(conn, "GET", f"/t/{READS}/api/orders?limit=50", 200, token)
        if len(page.get("orders", [])) != min(50, len(ids)):
            raise bl.BenchError(f"GET orders?limit=50: {len(page.get('orders', []))} orders")
        for slug in [ONE] + spread:
            expect(conn, "POST", f"/t/{slug}/api/orders", 201, token, ORDER)
        expect(conn, "POST", f"/t/{CHAT}/api/chats/{chat_id}/messages", 201, token, MESSAGE)
    finally:
        conn.close()
    return {"token": token, "ids": ids, "chat_id": chat_id, "spread": spread,
            "members": members, "seed_secs": seeded["secs"], "tenants": slugs}


def workloads(ctx):
    ids, spread, chat = ctx["ids"], ctx["spread"], ctx["chat_id"]
    create_one = f"/t/{ONE}/api/orders"
    message = f"/t/{CHAT}/api/chats/{chat}/messages"
    return [
        Workload("health", "`GET /healthz`, plain wrk", "GET", ["/healthz"], None, "/healthz",
                 plain=True),
        # The ceiling: the same scripted client as every other workload. wrk runs Lua for each
        # request of a scripted run, on the cores it shares with the server (about 5% of
        # /healthz throughput on the 2-core development machine).
        Workload("health_lua", "`GET /healthz`, the same Lua script (ceiling)", "GET",
                 ["/healthz"], None, "/healthz"),
        Workload("get", f"`GET /api/orders/{{id}}`, {len(ids):,} ids of one tenant", "GET",
                 [f"/t/{READS}/api/orders/{i}" for i in ids], None,
                 f"/t/{READS}/api/orders/{ids[0]}", "ratio"),
        Workload("list", "`GET /api/orders?limit=50`, one tenant", "GET",
                 [f"/t/{READS}/api/orders?limit=50"], None, f"/t/{READS}/api/orders?limit=50",
                 "ratio"),
        # The same two reads past the server's answers cache: every request reads the file.
        Workload("get_fresh", f"`GET /api/orders/{{id}}`, {len(ids):,} ids, "
                 "`Cache-Control: no-cache`", "GET",
                 [f"/t/{READS}/api/orders/{i}" for i in ids], None,
                 f"/t/{READS}/api/orders/{ids[0]}", headers=[NO_CACHE]),
        Workload("list_fresh", "`GET /api/orders?limit=50`, `Cache-Control: no-cache`", "GET",
                 [f"/t/{READS}/api/orders?limit=50"], None, f"/t/{READS}/api/orders?limit=50",
                 headers=[NO_CACHE]),
        Workload("create1", "`POST /api/orders`, one tenant", "POST", [create_one], ORDER,
                 create_one, "create"),
        Workload("createN", f"`POST /api/orders`, {len(spread)} tenants", "POST",
                 [f"/t/{s}/api/orders" for s in spread], ORDER, f"/t/{spread[0]}/api/orders",
                 "spread"),
        Workload("message", "`POST /api/chats/{id}/messages`, one chat", "POST", [message],
                 MESSAGE, message),
    ]


# ---------------------------------------------------------------------------------------------
# Measuring


def wrk(srv, w, duration, script=None):
    url = f"http://{srv.addr}{w.url_path}"
    return bl.run_wrk(url, WRK_THREADS, WRK_CONNS, duration,
                      script=None if w.plain else (script or w.script), pid=srv.pid)


def diagnose(srv, w, token):
    """A short run of a workload that answered non-2xx, counting the answers by status."""
    path = os.path.join(srv.dir, f"{w.key}-status.lua")
    with open(path, "w") as f:
        f.write(w.lua(token, f"{w.label}, counting statuses", status_counter=True))
    r = bl.run_wrk(f"http://{srv.addr}{w.url_path}", WRK_THREADS, WRK_CONNS, DIAG_SECONDS,
                   script=path)
    line = next((x for x in r["raw"].splitlines() if x.startswith("STATUSES")), "STATUSES ?")
    return {"statuses": line.split(" ", 1)[1] if " " in line else "", "rps": r["rps"]}


def count_rows(data_dir, slugs):
    """Rows of `orders` and `messages` in each tenant's file (read beside the running server)."""
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'central.db')}?mode=ro", uri=True,
                         timeout=30)
    try:
        files = dict(db.execute("SELECT slug, id FROM tenants"))
    finally:
        db.close()
    out = {}
    for slug in slugs:
        t = sqlite3.connect(f"file:{os.path.join(data_dir, 'tenants', files[slug] + '.db')}"
                            "?mode=ro", uri=True, timeout=30)
        try:
            out[slug] = {"orders": t.execute("SELECT count(*) FROM orders").fetchone()[0],
                         "messages": t.execute("SELECT count(*) FROM messages").fetchone()[0]}
        finally:
            t.close()
    return out


def cache_statuses(srv, ws, token):
    """The `Cache-Status` each read workload's first request answers once warmed up: whether
    wrk is about to measure kept answers (`tenantd; hit`) or reads of the file."""
    out = {}
    conn = tn.Conn(srv.host, srv.port)
    try:
        for w in ws:
            if w.method != "GET" or w.url_path == "/healthz":
                continue
            status, _, _ = conn.request("GET", w.paths[0], headers=auth(token) + w.headers)
            if status != 200:
                raise bl.BenchError(f"{w.label}: GET {w.paths[0]} answered {status}")
            out[w.key] = conn.last_head.get("cache-status", "none")
    finally:
        conn.close()
    return out


def measure(binary, creds, knobs):
    name = f"workspace server RUST_LOG={knobs['level']}"
    with bl.Server(binary, rust_log=knobs["level"], name=name) as srv:
        progress(f"setup: {3 + knobs['spread']} tenants, {knobs['orders']} orders, a chat ...")
        ctx = setup(binary, srv, creds, knobs)
        ws = workloads(ctx)
        for w in ws:
            if not w.plain:
                w.script = os.path.join(srv.dir, f"{w.key}.lua")
                with open(w.script, "w") as f:
                    f.write(w.lua(ctx["token"], w.label))
        before = tn.snapshot(srv)
        if knobs["warmup"] > 0:
            progress(f"warm-up: {knobs['warmup']}s of each ...")
            for w in ws:
                w.warm = wrk(srv, w, knobs["warmup"])
        cache = cache_statuses(srv, ws, ctx["token"])
        # Interleaved, so the machine's noise falls on every workload alike.
        for run in range(knobs["runs"]):
            progress(f"run {run + 1} of {knobs['runs']}: {knobs['duration']}s of each of "
                     f"{len(ws)} ...")
            for w in ws:
                w.runs.append(wrk(srv, w, knobs["duration"]))
        after = tn.snapshot(srv)
        for w in ws:
            if any(r["non_2xx"] for r in w.runs + ([w.warm] if w.warm else [])):
                progress(f"{w.key} answered non-2xx: {DIAG_SECONDS}s counting statuses ...")
                w.diag = diagnose(srv, w, ctx["token"])
        rows = count_rows(srv.data_dir, [READS, ONE, CHAT] + ctx["spread"])
        problems = srv.log_problems()
    return {"ctx": ctx, "ws": ws, "before": before, "after": after, "rows": rows,
            "cache": cache,
            "problems": problems, "exit": srv.exit_note, "name": name}


# ---------------------------------------------------------------------------------------------
# Report


def report(root, res, knobs, meta):
    out = bl.header(root, "tenantd benchmark: workspace")
    out.insert(-1, f"- load average (1, 5, 15 min) at start: {meta['load_start']}, "
                   f"at end: {meta['load_end']}")
    out.insert(-1, f"- suite run time: {meta['secs']:.0f} s")
    ctx, ws = res["ctx"], {w.key: w for w in res["ws"]}
    n_spread = len(ctx["spread"])
    out += [f"## Orders and messages against `GET /healthz` (RUST_LOG={knobs['level']})", "",
            f"One fresh server, default flags, RUST_LOG={knobs['level']}; its "
            f"{len(ctx['tenants'])} tenants (`{READS}`, `{ONE}`, `{CHAT}`, `w0` ... "
            f"`w{n_spread - 1}`) created through the admin API. **Every tenant request is "
            "authenticated and permission-shaped**: it carries `Authorization: Bearer` with the "
            f"session of one user (`POST /api/auth/login`), an `{ROLE}` member of every tenant, "
            "so each request costs identifying the tenant, the session, user and membership "
            "lookups and the permission check before the handler reads or writes the tenant's "
            "file, and reads are shaped by those permissions (`admin`: all orders, all fields). "
            f"`/healthz` needs no credentials. `{READS}` holds {len(ctx['ids']):,} orders "
            f"created through the API before (in {ctx['seed_secs']:.1f} s, "
            f"{knobs['clients']} clients); the creates go to other tenants, so the read "
            "figures do not drift as orders pile up.", "",
            f"`wrk -t{WRK_THREADS} -c{WRK_CONNS} -d{knobs['duration']}s --latency`; every "
            "workload but the plain `/healthz` through a Lua script that prebuilds its "
            "requests in `init()` (Bearer header, JSON body) and cycles over them: the "
            f"{len(ctx['ids']):,} order ids, or the {n_spread} tenants' paths. "
            f"{knobs['warmup']}s warm-up of each, then {knobs['runs']} runs of each, the "
            "workloads alternating within every run; figures are medians of the runs, the "
            "ratio is a median over the median of `/healthz` through the same script (the "
            "ceiling as this client reaches it). non-2xx: the measured runs' sum "
            "(wrk counts statuses ≥ 400).", ""]
    h_rps = bl.median([r["rps"] for r in ws["health_lua"].runs])
    plain_rps = bl.median([r["rps"] for r in ws["health"].runs])
    c1_rps = bl.median([r["rps"] for r in ws["create1"].runs])
    rows, verdicts = [], {}
    for w in res["ws"]:
        rps = bl.median([r["rps"] for r in w.runs])
        ratio = rps / h_rps if h_rps else 0
        if w.target == "ratio":
            ok = ratio >= TARGET_READ_RATIO
            plain = rps / plain_rps if plain_rps else 0
            tgt = (f"≥ {TARGET_READ_RATIO:.0%} of the ceiling: {bl.verdict(ok)} "
                   f"({plain:.0%} of plain wrk)")
        elif w.target == "create":
            ok = rps >= TARGET_CREATE_RPS
            tgt = f"≥ {TARGET_CREATE_RPS:,}/s: {bl.verdict(ok)}"
        elif w.target == "spread":
            factor = rps / c1_rps if c1_rps else 0
            ok = factor >= TARGET_SPREAD_FACTOR
            tgt = (f"{factor:.2f} × one tenant; ≥ {TARGET_SPREAD_FACTOR:g} ×: "
                   f"{bl.verdict(ok)}")
        else:
            ok, tgt = None, ""
        verdicts[w.key] = ok
        non2xx = sum(r["non_2xx"] for r in w.runs)
        rows.append([w.label, f"{rps:,.0f}", bl.fmt_ms(bl.median([r["p50_ms"] for r in w.runs])),
                     bl.fmt_ms(bl.median([r["p99_ms"] for r in w.runs])),
                     tn.fmt_cpu(bl.median([r["cpu_us"] for r in w.runs])),
                     f"{non2xx:,}" if not non2xx else f"**{non2xx:,}**",
                     "" if w.key.startswith("health") else f"{ratio:.0%}", tgt,
                     " / ".join(f"{r['rps']:,.0f}" for r in w.runs),
                     " / ".join(f"{bl.fmt_ms(r['p50_ms'])}, {bl.fmt_ms(r['p99_ms'])}"
                                for r in w.runs)])
    out += bl.table(["request", "requests/s", "p50", "p99", "server CPU per request", "non-2xx",
                     "of ceiling", "target",
                     "each run: req/s", "each run: p50, p99"], rows)
    out.append("")

    # Notes ------------------------------------------------------------------------------------
    for w in res["ws"]:
        errs = [f"{k} {v}" for r in w.runs for k, v in r["socket_errors"].items() if v]
        warm_bad = w.warm["non_2xx"] if w.warm else 0
        note = (f"- {w.label}: wrk socket errors: {', '.join(errs) or 'none'}; non-2xx in the "
                f"warm-up: {warm_bad}")
        if w.diag:
            note += (f"; a {DIAG_SECONDS}s run counting statuses afterwards saw "
                     f"`{w.diag['statuses']}` ({w.diag['rps']:,.0f} req/s)")
        out.append(note + ".")
    out.append("- `Cache-Status` of each read's first request after the warm-up: "
               + "; ".join(f"{ws[k].label}: `{v}`" for k, v in res["cache"].items())
               + ". `tenantd; hit` is an answer kept while the tenant's file is unchanged "
               "(`tenancy::reads`); `fwd=request` reads the file because the request says "
               "`no-cache`.")
    c = res["rows"]
    writes = {k: sum(r["requests"] or 0 for r in ws[k].runs + ([ws[k].warm] if ws[k].warm
                                                                else []))
              for k in ("create1", "createN", "message")}
    spread_orders = sum(c[s]["orders"] for s in ctx["spread"])
    each = " / ".join(f"{c[s]['orders']:,}" for s in ctx["spread"])
    out += [f"- rows in the tenant files afterwards (read with sqlite3 beside the server): "
            f"`{READS}` {c[READS]['orders']:,} orders; `{ONE}` {c[ONE]['orders']:,} orders "
            f"(wrk counted {writes['create1']:,} answered creates, warm-up included, plus 1 "
            f"from the check before); `w0` ... `w{n_spread - 1}` {spread_orders:,} orders "
            f"({each}; wrk "
            f"counted {writes['createN']:,}, plus {n_spread}); `{CHAT}` "
            f"{c[CHAT]['messages']:,} messages (wrk counted {writes['message']:,}, plus 1). "
            "A few more rows than wrk counted are requests in flight when a run ended.",
            f"- server before the warm-up: {tn.fd_note(res['before'])}; after the runs: "
            f"{tn.fd_note(res['after'])}.",
            ""]

    out += bl.server_log_section([(res["name"], res["problems"], res["exit"])])

    out += ["## Verdicts", ""]
    for w in res["ws"]:
        if verdicts[w.key] is not None:
            out.append(f"- {w.label}: {bl.verdict(verdicts[w.key])}")
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------


def main():
    a = bl.suite_args(__doc__)

    knobs = {
        "duration": env_int("BENCH_DURATION", 10),
        "runs": env_int("BENCH_RUNS", 3),
        "warmup": env_int("BENCH_WARMUP", 2),
        "level": os.environ.get("BENCH_LOG_LEVEL", "warn"),
        "orders": env_int("BENCH_ORDERS", 1000),
        "spread": env_int("BENCH_SPREAD", 8),
        "clients": env_int("BENCH_CLIENTS", 4),
    }
    if knobs["runs"] < 1 or knobs["orders"] < 1 or knobs["spread"] < 1:
        raise bl.BenchError("BENCH_RUNS, BENCH_ORDERS and BENCH_SPREAD must be at least 1")
    creds = bl.bench_credentials()
    started = time.monotonic()
    meta = {"load_start": bl.loadavg()}
    bl.raise_fd_limit(1024)
    res = measure(a.bin, creds, knobs)
    meta["load_end"] = bl.loadavg()
    meta["secs"] = time.monotonic() - started
    text = report(a.root, res, knobs, meta)
    bl.write_report(a.out, text)


if __name__ == "__main__":
    bl.run_suite("workspace", main)
