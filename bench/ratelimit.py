"""The rate-limit benchmark: what the per-tenant rate limits cost a kept read far from the limit.

One workload, `GET /t/SLUG/api/orders?limit=50` (an answer the server keeps while the tenant's
file is unchanged), under `wrk -t2 -c32`, in three settings, alternating within every round:

- `off`: a server with `--tenant-rate 0 --member-rate 0`: no buckets, no headers;
- `flags`: a server with the rates benchlib gives every suite (16777216 a minute), a tenant on
  `unlimited`, which names no rate: the server's flags, as before plans named rates;
- `plan`: the same server, a tenant on `team` edited to name its own rates (10,000,000 a minute
  for the tenant and for each member): the rates come from the tenant's plan.

Every rate is far above what wrk reaches, so nothing is refused: what differs is only the
limiter's work and where its rates come from. The target: `plan` within 5% of `flags`.

Run through `bench/run ratelimit`, which installs wrk and builds the binary first. Directly:

    python3 bench/ratelimit.py --bin target/release/tenantd --out bench/out/ratelimit.md

Knobs (environment), see bench/README.md: BENCH_DURATION (5), BENCH_RUNS (5), BENCH_WARMUP (2),
BENCH_LOG_LEVEL ("warn"), BENCH_ORDERS (50).
"""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from benchlib import env_int  # noqa: E402
import tenancy as tn  # noqa: E402  (accounts, the keep-alive client, report helpers)
import workspace as ws  # noqa: E402  (the Lua client, expect)

WRK_THREADS, WRK_CONNS = 2, 32
TARGET_RATIO = 0.95          # `plan` against `flags`: within 5%
PLAN = "team"                # the plan the `plan` tenant is moved to, its rates edited
PLAN_RATE = 10_000_000       # a minute: ~167,000 a second refilled, far above wrk's rate
FLAG_RATE = 16_777_216       # benchlib's --tenant-rate / --member-rate
ROLE = "admin"
PATH = "/api/orders?limit=50"


def progress(msg):
    print(f"ratelimit: {msg}", file=sys.stderr, flush=True)


class Mode:
    def __init__(self, key, label, flags, plan):
        self.key, self.label, self.flags, self.plan = key, label, flags, plan
        self.srv = self.slug = self.script = self.policy = self.cache = None
        self.warm = None
        self.runs = []


def setup(binary, srv, creds, slugs, orders, clients):
    """The tenants, the bench user (an `admin` member of each), `orders` orders in each: the
    user's session token."""
    admin = tn.admin_session(binary, srv, creds)
    prov = tn.provision(srv, admin, slugs, clients)
    if prov["failures"]:
        raise bl.BenchError(f"creating the tenants failed: {prov['failures']}")
    tn.add_bench_user(binary, srv.data_dir, creds, role=ROLE)  # the server is idle
    token = tn.user_session(srv, creds)
    conn = tn.Conn(srv.host, srv.port)
    try:
        for slug in slugs:
            for k in range(orders):
                ws.expect(conn, "POST", f"/t/{slug}/api/orders", 201, token,
                          dict(ws.ORDER, title=f"Bench order {k}"))
    finally:
        conn.close()
    return admin, token


def on_plan(srv, admin, slug):
    """Names the rates of plan PLAN and moves `slug` to it, through the admin API."""
    conn = tn.Conn(srv.host, srv.port)
    try:
        ws.expect(conn, "PATCH", f"/api/admin/plans/{PLAN}", 200, admin,
                  {"limits": {"api_requests_per_minute": PLAN_RATE,
                              "api_requests_per_member_per_minute": PLAN_RATE}})
        ws.expect(conn, "PUT", f"/api/admin/tenants/{slug}/subscription", 200, admin,
                  {"plan": PLAN})
    finally:
        conn.close()


def look(mode, token):
    """One request of the workload: checks it answers 200 with the page, and notes its
    `RateLimit-Policy` and `Cache-Status`."""
    conn = tn.Conn(mode.srv.host, mode.srv.port)
    try:
        page = ws.expect(conn, "GET", f"/t/{mode.slug}{PATH}", 200, token)
        if not page.get("orders"):
            raise bl.BenchError(f"{mode.key}: GET {PATH}: no orders")
        mode.policy = conn.last_head.get("ratelimit-policy", "none")
        mode.cache = conn.last_head.get("cache-status", "none")
    finally:
        conn.close()


def expected_policy(mode):
    if mode.key == "off":
        return "none"
    q = PLAN_RATE if mode.key == "plan" else FLAG_RATE
    return f'"tenant";q={q};w=60, "member";q={q};w=60'


def measure(binary, creds, knobs):
    modes = [Mode("off", "limiter off", "`--tenant-rate 0 --member-rate 0`", "unlimited"),
             Mode("flags", "the server's rates", f"benchlib's ({FLAG_RATE:,})", "unlimited"),
             Mode("plan", "the plan's rates", f"benchlib's ({FLAG_RATE:,})",
                  f"`{PLAN}`, {PLAN_RATE:,} a minute named")]
    by = {m.key: m for m in modes}
    level = knobs["level"]
    off_args = ["--tenant-rate", "0", "--member-rate", "0"]  # after benchlib's: they win
    with bl.Server(binary, rust_log=level, args=off_args, name="server off") as off, \
            bl.Server(binary, rust_log=level, name="server on") as on:
        progress(f"setup: 3 tenants over 2 servers, {knobs['orders']} orders each ...")
        _, off_token = setup(binary, off, creds, ["a"], knobs["orders"], 2)
        admin, on_token = setup(binary, on, creds, ["flags", "plan"], knobs["orders"], 2)
        on_plan(on, admin, "plan")
        tokens = {"off": off_token, "flags": on_token, "plan": on_token}
        for m, srv, slug in ((by["off"], off, "a"), (by["flags"], on, "flags"),
                             (by["plan"], on, "plan")):
            m.srv, m.slug = srv, slug
            m.script = os.path.join(srv.dir, f"{m.key}.lua")
            with open(m.script, "w") as f:
                f.write(ws.LUA.format(what=f"{m.label}: GET {PATH}", method="GET", body="nil",
                                      token=tokens[m.key], extra="",
                                      paths=ws.lua_str(f"/t/{slug}{PATH}")))
        url = {m.key: f"http://{m.srv.addr}/t/{m.slug}{PATH}" for m in modes}

        def wrk(m, secs):
            return bl.run_wrk(url[m.key], WRK_THREADS, WRK_CONNS, secs, script=m.script,
                              pid=m.srv.pid)

        if knobs["warmup"] > 0:
            progress(f"warm-up: {knobs['warmup']}s of each ...")
            for m in modes:
                m.warm = wrk(m, knobs["warmup"])
        for m in modes:
            look(m, tokens[m.key])
            if m.policy != expected_policy(m):
                raise bl.BenchError(f"{m.key}: RateLimit-Policy {m.policy!r}, expected "
                                    f"{expected_policy(m)!r}")
        # Interleaved, each round starting one further along, so the machine's noise and the
        # position in a round fall on every setting alike.
        for r in range(knobs["runs"]):
            progress(f"round {r + 1} of {knobs['runs']}: {knobs['duration']}s of each ...")
            for m in modes[r % 3:] + modes[:r % 3]:
                m.runs.append(wrk(m, knobs["duration"]))
        problems = [(s.name, s.log_problems()) for s in (off, on)]
    return {"modes": modes, "problems": problems,
            "exits": {"server off": off.exit_note, "server on": on.exit_note}}


def report(root, res, knobs, meta):
    out = bl.header(root, "tenantd benchmark: rate limits")
    out.insert(-1, f"- load average (1, 5, 15 min) at start: {meta['load_start']}, "
                   f"at end: {meta['load_end']}")
    out.insert(-1, f"- suite run time: {meta['secs']:.0f} s")
    modes = {m.key: m for m in res["modes"]}
    out += ["## Kept reads with the limiter off, on the server's rates, on the plan's rates", "",
            f"`GET /t/SLUG{PATH}` as one signed-in `{ROLE}` member (Bearer session), each "
            f"tenant holding {knobs['orders']} orders: an answer the server keeps while the "
            "file is unchanged (`Cache-Status` below). Two servers, RUST_LOG="
            f"{knobs['level']}: one with both limits off, one with benchlib's rates; on the "
            "second, one tenant on `unlimited` (no rate named: the server's flags) and one on "
            f"`{PLAN}` with its rates named. No rate is within reach of wrk, so nothing is "
            f"refused. `wrk -t{WRK_THREADS} -c{WRK_CONNS} -d{knobs['duration']}s --latency` "
            f"through a Lua script (Bearer header prebuilt); {knobs['warmup']}s warm-up of "
            f"each, then {knobs['runs']} rounds, the three alternating within every round "
            "(each round starting one further along); figures are medians of the rounds. Only "
            "one server is under load at a time.", ""]
    rows = []
    med = {}
    for m in res["modes"]:
        rps = bl.median([r["rps"] for r in m.runs])
        med[m.key] = rps
        non2xx = sum(r["non_2xx"] for r in m.runs)
        rows.append([m.label, m.flags, m.plan, f"`{m.policy}`", f"{rps:,.0f}",
                     bl.fmt_ms(bl.median([r["p50_ms"] for r in m.runs])),
                     bl.fmt_ms(bl.median([r["p99_ms"] for r in m.runs])),
                     tn.fmt_cpu(bl.median([r["cpu_us"] for r in m.runs])),
                     f"{non2xx:,}" if not non2xx else f"**{non2xx:,}**",
                     " / ".join(f"{r['rps']:,.0f}" for r in m.runs)])
    out += bl.table(["setting", "server flags", "tenant's plan", "RateLimit-Policy",
                     "requests/s", "p50", "p99", "server CPU per request", "non-2xx",
                     "each round: req/s"], rows)
    out.append("")
    plan_flags = med["plan"] / med["flags"] if med["flags"] else 0
    plan_off = med["plan"] / med["off"] if med["off"] else 0
    flags_off = med["flags"] / med["off"] if med["off"] else 0
    ok = plan_flags >= TARGET_RATIO
    out += [f"- **plan / flags: {plan_flags:.3f}** (target ≥ {TARGET_RATIO}: {bl.verdict(ok)}): "
            "the rates read from the tenant's plan against the server's flags, same server.",
            f"- plan / off: {plan_off:.3f}; flags / off: {flags_off:.3f}: everything the "
            "limiter costs (a bucket pair under a mutex, the two header fields) against none; "
            "these compare two server processes, so their noise is larger.",
            "- `Cache-Status` of each setting's request after the warm-up: "
            + "; ".join(f"{m.key}: `{m.cache}`" for m in res["modes"]) + ".",
            "- wrk socket errors: " + (", ".join(
                f"{m.key} {k} {v}" for m in res["modes"] for r in m.runs
                for k, v in r["socket_errors"].items() if v) or "none") + ".",
            "- On a machine whose cores are shared with the load generator (and, on the "
            "development machine, with other work), single rounds move by several percent; "
            "compare the medians, and runs from the same machine only.", ""]
    out += bl.server_log_section([(name, problems, res["exits"][name])
                                  for name, problems in res["problems"]])
    out += ["## Verdicts", "", f"- the plan's rates within 5% of the server's: "
            f"{bl.verdict(ok)}", ""]
    return "\n".join(out)


def main():
    a = bl.suite_args(__doc__)
    knobs = {
        "duration": env_int("BENCH_DURATION", 5),
        "runs": env_int("BENCH_RUNS", 5),
        "warmup": env_int("BENCH_WARMUP", 2),
        "level": os.environ.get("BENCH_LOG_LEVEL", "warn"),
        "orders": env_int("BENCH_ORDERS", 50),
    }
    if knobs["runs"] < 1 or knobs["orders"] < 1:
        raise bl.BenchError("BENCH_RUNS and BENCH_ORDERS must be at least 1")
    creds = bl.bench_credentials()
    started = time.monotonic()
    meta = {"load_start": bl.loadavg()}
    bl.raise_fd_limit(1024)
    res = measure(a.bin, creds, knobs)
    meta["load_end"] = bl.loadavg()
    meta["secs"] = time.monotonic() - started
    bl.write_report(a.out, report(a.root, res, knobs, meta))


if __name__ == "__main__":
    bl.run_suite("ratelimit", main)
