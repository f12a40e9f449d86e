"""The contract benchmark: the SQL path of one build against another's, A/B on the same machine
in one run.

Made to ask whether moving the workspace's SQL onto the store contract (`store`: `dyn
Sql`, rows handed out one at a time behind `dyn RowRef`) costs the embedded default any speed,
but it compares any two builds: A is BENCH_BASE_BIN (a `tenantd` built from another commit), B
is `--bin` (this tree's, as `bench/run` builds it).

Two servers run side by side, one per binary, each with the workspace suite's setup (tenants
`reads`, `one` and `chat`, one signed-in `admin` member, BENCH_ORDERS orders created through
the API one after another, so both files hold the same rows). Measured with
`wrk -t2 -c32 --latency`, only routes whose answers the kept-answers cache (`tenancy::reads`)
does not serve, so what is measured is the SQL path:

- `POST /t/one/api/orders` (a create: a write transaction, its event row, the answer);
- `GET /t/reads/api/orders?limit=50` with `Cache-Control: no-cache` (the 50 newest orders read
  from the file on every request);
- with BENCH_ROUTES including `get`: `GET /t/reads/api/orders/{id}` with `no-cache`, over the
  ids.

Rounds are interleaved: in each round every route is run once on A and once on B, back to
back, A first in odd rounds and B first in even ones (so what one run leaves behind, e.g. a
checkpoint after creates, falls on both alike).

Run through `bench/run contract` (only when named: it needs the second binary):

    BENCH_BASE_BIN=/path/to/other/target/release/tenantd bench/run contract

Knobs (environment), see bench/README.md: BENCH_BASE_BIN (required), BENCH_DURATION (5),
BENCH_ROUNDS (5), BENCH_WARMUP (2), BENCH_LOG_LEVEL ("warn"), BENCH_ORDERS (1000),
BENCH_ROUTES ("create list"; add "get").
"""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from benchlib import env_int  # noqa: E402
import tenancy as tn  # noqa: E402  (accounts, the keep-alive client, report helpers)
import workspace as ws  # noqa: E402  (the setup, the Lua scripts, row counts)

WRK_THREADS, WRK_CONNS = ws.WRK_THREADS, ws.WRK_CONNS
ROUTES = ("create", "list", "get")
FRESH = "tenantd; fwd=request"  # the Cache-Status of a read the client made skip the cache


def progress(msg):
    print(f"contract: {msg}", file=sys.stderr, flush=True)


def build_of(binary):
    """The short commit of the checkout a binary was built in (`.../target/release/tenantd`),
    flagged when that checkout has uncommitted changes; "unknown" if it is not in one."""
    d = os.path.dirname(os.path.realpath(binary))
    while d != os.path.dirname(d):
        if os.path.exists(os.path.join(d, ".git")):
            commit = bl.git(d, "rev-parse", "--short", "HEAD") or "unknown"
            if bl.git(d, "status", "--porcelain", "--untracked-files=no"):
                commit += " (with uncommitted changes)"
            return commit
        d = os.path.dirname(d)
    return "unknown"


def workloads(ctx, routes):
    """The measured routes, as the workspace suite's workloads (keys: create, list, get)."""
    ids = ctx["ids"]
    one, reads = f"/t/{ws.ONE}/api/orders", f"/t/{ws.READS}/api/orders"
    all_ = {
        "create": ws.Workload("create", f"`POST /t/{ws.ONE}/api/orders`", "POST", [one],
                              ws.ORDER, one),
        "list": ws.Workload("list", f"`GET /t/{ws.READS}/api/orders?limit=50`, `no-cache`",
                            "GET", [f"{reads}?limit=50"], None, f"{reads}?limit=50",
                            headers=[ws.NO_CACHE]),
        "get": ws.Workload("get", f"`GET /t/{ws.READS}/api/orders/{{id}}`, {len(ids):,} ids, "
                           "`no-cache`", "GET", [f"{reads}/{i}" for i in ids], None,
                           f"{reads}/{ids[0]}", headers=[ws.NO_CACHE]),
    }
    return [all_[k] for k in routes]


class Side:
    """One binary under test: its server, its setup and its runs per route."""

    def __init__(self, key, binary):
        self.key, self.binary = key, binary
        self.build = build_of(binary)
        self.srv = None
        self.ctx = None
        self.ws = []
        self.warm = {}
        self.runs = {}  # route key -> [wrk result], in round order
        self.cache = {}

    def prepare(self, creds, knobs, routes):
        progress(f"{self.key}: setup: 3 tenants, {knobs['orders']} orders ...")
        self.ctx = ws.setup(self.binary, self.srv, creds, knobs)
        self.ws = workloads(self.ctx, routes)
        for w in self.ws:
            w.script = os.path.join(self.srv.dir, f"{w.key}.lua")
            with open(w.script, "w") as f:
                f.write(w.lua(self.ctx["token"], f"{w.label} ({self.key})"))
            self.runs[w.key] = []

    def wrk(self, w, duration):
        return bl.run_wrk(f"http://{self.srv.addr}{w.url_path}", WRK_THREADS, WRK_CONNS,
                          duration, script=w.script, pid=self.srv.pid)

    def check_fresh(self):
        """Every measured read skips the kept answers: its Cache-Status says the client asked."""
        self.cache = ws.cache_statuses(self.srv, self.ws, self.ctx["token"])
        for key, status in self.cache.items():
            if status != FRESH:
                raise bl.BenchError(f"{self.key}: {key} answered Cache-Status `{status}`, not "
                                    f"`{FRESH}`: the read would not be measured")


def measure(sides, creds, knobs, routes):
    a, b = sides
    with bl.Server(a.binary, rust_log=knobs["level"], name=f"A ({a.build})") as sa, \
            bl.Server(b.binary, rust_log=knobs["level"], name=f"B ({b.build})") as sb:
        a.srv, b.srv = sa, sb
        for side in sides:
            side.prepare(creds, knobs, routes)
        if knobs["warmup"] > 0:
            progress(f"warm-up: {knobs['warmup']}s of each route on each ...")
            for w in range(len(routes)):
                for side in sides:
                    side.warm[side.ws[w].key] = side.wrk(side.ws[w], knobs["warmup"])
        for side in sides:
            side.check_fresh()
        for rnd in range(knobs["rounds"]):
            order = sides if rnd % 2 == 0 else sides[::-1]
            progress(f"round {rnd + 1} of {knobs['rounds']}: {knobs['duration']}s of each of "
                     f"{len(routes)} routes on {order[0].key}, then {order[1].key} ...")
            for w in range(len(routes)):
                for side in order:
                    wl = side.ws[w]
                    side.runs[wl.key].append(side.wrk(wl, knobs["duration"]))
        for side in sides:
            side.rows = ws.count_rows(side.srv.data_dir, [ws.READS, ws.ONE])
            side.after = side.srv.stats()
            side.problems = side.srv.log_problems()
    for side in sides:
        side.exit = side.srv.exit_note


# ---------------------------------------------------------------------------------------------
# Report


def ratio(b, a):
    return f"{b / a:.3f}" if a and b is not None else "n/a"


def report(root, sides, knobs, routes, meta):
    a, b = sides
    out = bl.header(root, "tenantd benchmark: contract (A/B)")
    out.insert(-1, f"- A: `{a.build}` ({a.binary}); B: `{b.build}` ({b.binary})")
    out.insert(-1, f"- load average (1, 5, 15 min) at start: {meta['load_start']}, "
                   f"at end: {meta['load_end']}")
    out.insert(-1, f"- suite run time: {meta['secs']:.0f} s")
    out += [f"Two servers, one per binary, default flags, RUST_LOG={knobs['level']}, both "
            "running throughout; each with tenants `reads`, `one`, `chat` and one signed-in "
            f"`admin` member of each (every request carries its Bearer token). `reads` holds "
            f"{len(a.ctx['ids']):,} orders created through the API one after another before "
            "the runs. `wrk "
            f"-t{WRK_THREADS} -c{WRK_CONNS} -d{knobs['duration']}s --latency` through the "
            "workspace suite's Lua scripts; the reads carry `Cache-Control: no-cache`, so every "
            "one is read from the file (first answer after the warm-up: "
            + "; ".join(f"{s.key} {k} `{v}`" for s in sides for k, v in s.cache.items())
            + f"). {knobs['warmup']}s warm-up of each route on each server, then "
            f"{knobs['rounds']} rounds; in each, every route runs on both, back to back (A "
            "first in odd rounds, B first in even ones). Figures are medians of the rounds; "
            "server CPU per request is the server's user + system time over a run divided by "
            "the requests wrk completed.", ""]
    rows = []
    for k in routes:
        for side in sides:
            rs = side.runs[k]
            label = next(w.label for w in side.ws if w.key == k)
            non2xx = sum(r["non_2xx"] for r in rs)
            errs = sum(v for r in rs for v in r["socket_errors"].values())
            rows.append([label, side.key, f"{bl.median([r['rps'] for r in rs]):,.0f}",
                         bl.fmt_ms(bl.median([r["p50_ms"] for r in rs])),
                         bl.fmt_ms(bl.median([r["p99_ms"] for r in rs])),
                         tn.fmt_cpu(bl.median([r["cpu_us"] for r in rs])),
                         f"{non2xx:,}" if not non2xx else f"**{non2xx:,}**",
                         f"{errs:,}" if not errs else f"**{errs:,}**",
                         " / ".join(f"{r['rps']:,.0f}" for r in rs),
                         " / ".join(f"{bl.fmt_ms(r['p50_ms'])}, {bl.fmt_ms(r['p99_ms'])}"
                                    for r in rs)])
    out += bl.table(["route", "build", "requests/s", "p50", "p99", "server CPU per request",
                     "non-2xx", "socket errors", "each round: req/s", "each round: p50, p99"],
                    rows)
    out += ["", "### B over A", ""]
    rows = []
    for k in routes:
        ra, rb = a.runs[k], b.runs[k]
        med = {f: (bl.median([r[f] for r in ra]), bl.median([r[f] for r in rb]))
               for f in ("rps", "p50_ms", "p99_ms", "cpu_us")}
        label = next(w.label for w in a.ws if w.key == k)
        pairs = [y["rps"] / x["rps"] for x, y in zip(ra, rb) if x["rps"]]
        rows.append([label] + [ratio(med[f][1], med[f][0])
                               for f in ("rps", "p50_ms", "p99_ms", "cpu_us")]
                    + [f"{bl.median(pairs):.3f}" if pairs else "n/a",
                       " / ".join(f"{p:.3f}" for p in pairs)])
    out += bl.table(["route", "req/s B/A", "p50 B/A", "p99 B/A", "CPU per request B/A",
                     "req/s B/A, median of the rounds' pairs", "each round's pair: req/s B/A"],
                    rows)
    out += ["", "Above 1 in req/s (below 1 in latency and CPU) means B is faster.", ""]
    notes = []
    for side in sides:
        c = side.rows
        warm = sum(v["non_2xx"] for v in side.warm.values())
        notes.append(f"- {side.key}: rows afterwards (sqlite3 beside the server): `reads` "
                     f"{c[ws.READS]['orders']:,} orders, `one` {c[ws.ONE]['orders']:,}; "
                     f"non-2xx in the warm-up: {warm}; RSS {bl.mib(side.after['rss_kb'])}, "
                     f"{side.after['threads']} threads after the runs.")
    out += notes + [""]
    out += bl.server_log_section([(s.srv.name, s.problems, s.exit) for s in sides])
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------


def main():
    a_args = bl.suite_args(__doc__)
    base = os.environ.get("BENCH_BASE_BIN", "")
    if not base:
        raise bl.BenchError("set BENCH_BASE_BIN to the tenantd binary to compare against "
                            "(A; --bin is B)")
    if not (os.path.isfile(base) and os.access(base, os.X_OK)):
        raise bl.BenchError(f"BENCH_BASE_BIN {base!r} is not an executable file")
    knobs = {
        "duration": env_int("BENCH_DURATION", 5),
        "rounds": env_int("BENCH_ROUNDS", 5),
        "warmup": env_int("BENCH_WARMUP", 2),
        "level": os.environ.get("BENCH_LOG_LEVEL", "warn"),
        "orders": env_int("BENCH_ORDERS", 1000),
        # The workspace setup's knobs: no spread tenants; orders seeded by one client, so the
        # two files get the same rows in the same order.
        "spread": 0,
        "clients": 1,
    }
    routes = os.environ.get("BENCH_ROUTES", "create list").split()
    unknown = [r for r in routes if r not in ROUTES]
    if unknown or not routes:
        raise bl.BenchError(f"BENCH_ROUTES: unknown {unknown} (known: {' '.join(ROUTES)})")
    if knobs["rounds"] < 1 or knobs["orders"] < 1:
        raise bl.BenchError("BENCH_ROUNDS and BENCH_ORDERS must be at least 1")
    creds = bl.bench_credentials()
    started = time.monotonic()
    meta = {"load_start": bl.loadavg()}
    bl.raise_fd_limit(1024)
    sides = [Side("A", base), Side("B", a_args.bin)]
    measure(sides, creds, knobs, routes)
    meta["load_end"] = bl.loadavg()
    meta["secs"] = time.monotonic() - started
    bl.write_report(a_args.out, report(a_args.root, sides, knobs, routes, meta))


if __name__ == "__main__":
    bl.run_suite("contract", main)
