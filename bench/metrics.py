#!/usr/bin/env python3
"""bench/metrics.py: how long a `/metrics` scrape takes with 10,000 tenants in the catalog.

The tenants are written into the catalog in one transaction (rows only: no tenant file is
needed, none is opened). Then 1,000 of them get traffic: unauthenticated `GET /t/SLUG/api/tenant`
requests, identified and counted per tenant like any other (they answer 401), some tenants more
than others, so that the per-tenant series have a top K to choose and an `_other` to sum. Then
`/metrics` is fetched one request after another on a keep-alive connection (with the bearer
token of `--metrics-token`), and the time from sending to the whole answer read is taken.

Knobs (environment), see bench/README.md: BENCH_TENANTS (10000), BENCH_ACTIVE (1000),
BENCH_SCRAPES (200), BENCH_METRICS_TENANTS (20, the default K).
"""

import os
import secrets
import sqlite3
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import tenancy as tn  # noqa: E402
from benchlib import env_int, fmt_ms, loadavg, pct, verdict  # noqa: E402

TARGET_P99_MS = 50.0


def progress(msg):
    print(f"metrics: {msg}", file=sys.stderr, flush=True)


def insert_tenants(srv, n):
    db = sqlite3.connect(os.path.join(srv.data_dir, "central.db"), timeout=30)
    try:
        with db:
            db.executemany(
                "INSERT INTO tenants (id, slug, name, created_at, updated_at) "
                "VALUES (?, ?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                ((f"00000000-0000-4000-8000-{i:012d}", f"m{i}", f"m{i}") for i in range(n)))
    finally:
        db.close()


def traffic(srv, active):
    """1 to 5 requests to each of `active` tenants; all must be identified (401, not 404)."""
    conn = tn.Conn(srv.host, srv.port)
    sent, wrong = 0, {}
    try:
        for i in range(active):
            for _ in range(1 + i % 5):
                status, _, _ = conn.request("GET", f"/t/m{i}/api/tenant")
                sent += 1
                if status != 401:
                    tn.count(wrong, f"status {status}")
    finally:
        conn.close()
    if wrong:
        raise bl.BenchError(f"tenant requests not identified: {wrong}")
    return sent


def scrapes(srv, token, n):
    conn = tn.Conn(srv.host, srv.port)
    times, size, samples = [], 0, 0
    try:
        for _ in range(n):
            status, body, ms = conn.request("GET", "/metrics",
                                            headers=[("Authorization", f"Bearer {token}")])
            if status != 200:
                raise bl.BenchError(f"/metrics answered {status}: {body[:200]!r}")
            times.append(ms)
        size = len(body)
        text = body.decode()
        samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        tenant_series = sum(1 for line in text.splitlines()
                            if line.startswith("tenantd_tenant_requests_total{"))
    finally:
        conn.close()
    return {"n": n, "p50": pct(times, 50), "p99": pct(times, 99), "max": max(times),
            "bytes": size, "samples": samples, "tenant_series": tenant_series}


def report(root, ctx):
    out = bl.header(root, "tenantd benchmark: /metrics scrape time")
    k = ctx["knobs"]
    s = ctx["scrape"]
    out += [f"- server: `tenantd serve --metrics-token ... --metrics-tenants {k['top']}`, "
            f"RUST_LOG=warn",
            f"- {k['tenants']} tenants in the catalog; {k['active']} of them had "
            f"{ctx['requests']} requests",
            f"- load average at start / end: {ctx['load_start']} / {ctx['load_end']}", ""]
    out += ["## `GET /metrics`, one after another on a keep-alive connection", ""]
    out += bl.table(["scrapes", "median", "p99", "max", "body", "samples",
                     "per-tenant series", "target", "verdict"], [[
        s["n"], fmt_ms(s["p50"]), fmt_ms(s["p99"]), fmt_ms(s["max"]),
        f"{s['bytes'] / 1024:.1f} KiB", s["samples"], s["tenant_series"],
        f"p99 < {TARGET_P99_MS:.0f} ms", verdict(s["p99"] < TARGET_P99_MS)]])
    out += ["", f"At most ({k['top']} + 1) x 5 per-tenant series (the busiest {k['top']} by "
            "slug and `_other`, by status class), whatever the number of tenants.", ""]
    out += bl.server_log_section(ctx["servers"])
    out += [f"Suite time: {ctx['suite_secs']:.0f} s", ""]
    return "\n".join(out)


def main():
    a = bl.suite_args(__doc__)
    knobs = {"tenants": env_int("BENCH_TENANTS", 10000), "active": env_int("BENCH_ACTIVE", 1000),
             "scrapes": env_int("BENCH_SCRAPES", 200),
             "top": env_int("BENCH_METRICS_TENANTS", 20)}
    if knobs["active"] > knobs["tenants"]:
        raise bl.BenchError("BENCH_ACTIVE is above BENCH_TENANTS")
    token = secrets.token_hex(16)
    ctx = {"knobs": knobs, "load_start": loadavg()}
    started = time.monotonic()
    args = ["--metrics-token", token, "--metrics-tenants", str(knobs["top"])]
    with bl.Server(a.bin, rust_log="warn", args=args, name="metrics") as srv:
        progress(f"{knobs['tenants']} tenants into the catalog ...")
        insert_tenants(srv, knobs["tenants"])
        progress(f"traffic to {knobs['active']} of them ...")
        ctx["requests"] = traffic(srv, knobs["active"])
        progress(f"{knobs['scrapes']} scrapes ...")
        scrapes(srv, token, 10)  # warm-up
        ctx["scrape"] = scrapes(srv, token, knobs["scrapes"])
        progress(f"   median {fmt_ms(ctx['scrape']['p50'])}, p99 {fmt_ms(ctx['scrape']['p99'])}")
        problems = srv.log_problems()
    ctx["servers"] = [("server", problems, srv.exit_note)]
    ctx["load_end"] = loadavg()
    ctx["suite_secs"] = time.monotonic() - started
    bl.write_report(a.out, report(a.root, ctx))


if __name__ == "__main__":
    bl.run_suite("metrics", main)
