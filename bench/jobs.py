#!/usr/bin/env python3
"""bench/jobs.py: the background job queue of one `tenantd serve`, over 100 tenants.

1. Throughput: a backlog of no-op jobs spread over the tenants, written into the catalog by
   another process (as `tenantd` commands beside a server do) and found by the workers' poll;
   jobs completed per second from the rows' first start to their last finish.
2. Start delay of the in-process path: jobs made pending by `POST /api/admin/jobs/{id}/retry`
   (a catalog write and a crossbeam wake-up, as every `app.enqueue` in a handler), at a steady
   rate well under the throughput; the delay is `started_at - run_at` of each row (ms, the
   server's own clock, so whole milliseconds).
3. `GET /api/tenant` over the 100 tenants under wrk with the queue idle, then while it drains a
   backlog: every job commit changes the catalog, which makes requests re-check it and drop
   cached identity reads.

Knobs (environment), see bench/README.md: BENCH_TENANTS (100), BENCH_JOBS (20000),
BENCH_DELAY_JOBS (2000), BENCH_DELAY_RATE (200 per second), BENCH_JOB_WORKERS (2, the default),
BENCH_DURATION (10), BENCH_BUSY_JOBS (60000).
"""

import json
import os
import sqlite3
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import tenancy as tn  # noqa: E402
from benchlib import env_int, fmt_ms, loadavg, pct, verdict  # noqa: E402

TARGET_JOBS_PER_S = 2000
TARGET_P50_MS = 5.0
TARGET_P99_MS = 50.0
WRK_THREADS, WRK_CONNS = 2, 32
# How often the workers look for jobs other processes enqueued (part 1 and 3 enqueue that way).
JOB_POLL = "0.05"


def progress(msg):
    print(f"jobs: {msg}", file=sys.stderr, flush=True)


def now_ms():
    return int(time.time() * 1000)


def catalog(srv):
    db = sqlite3.connect(os.path.join(srv.data_dir, "central.db"), timeout=30)
    db.execute("PRAGMA busy_timeout = 30000")
    return db


INSERT_BATCH = 1000


def insert_jobs(srv, tenant_ids, n, status="pending"):
    """`n` no-op jobs, round robin over the tenants, a transaction per thousand (a longer one
    would hold the catalog's write lock past the server's busy timeout): their ids, which are
    consecutive (AUTOINCREMENT, and nothing else enqueues meanwhile)."""
    db = catalog(srv)
    ids = []
    try:
        for start in range(0, n, INSERT_BATCH):
            with db:
                now = now_ms()
                for i in range(start, min(n, start + INSERT_BATCH)):
                    cur = db.execute(
                        "INSERT INTO jobs (tenant_id, queue, kind, payload, status, run_at, "
                        "created_at, finished_at) VALUES (?, 'default', 'noop', '{}', ?, ?, ?, ?)",
                        (tenant_ids[i % len(tenant_ids)], status, now, now,
                         now if status == "discarded" else None))
                    ids.append(cur.lastrowid)
        if ids != list(range(ids[0], ids[0] + n)):
            raise bl.BenchError("the job ids are not consecutive: another process enqueued")
        return ids
    finally:
        db.close()


def count_done(srv, ids):
    db = catalog(srv)
    try:
        (n,) = db.execute("SELECT count(*) FROM jobs WHERE status = 'done' AND id BETWEEN ? AND ?",
                          (ids[0], ids[-1])).fetchone()
        return n
    finally:
        db.close()


def wait_done(srv, ids, timeout):
    deadline = time.monotonic() + timeout
    while True:
        done = count_done(srv, ids)
        if done == len(ids):
            return
        if time.monotonic() > deadline:
            raise bl.BenchError(f"{done} of {len(ids)} jobs done after {timeout}s: "
                                f"{srv.stderr_tail()}")
        time.sleep(0.1)


def rows(srv, ids, columns):
    db = catalog(srv)
    try:
        return db.execute(f"SELECT {columns} FROM jobs WHERE id BETWEEN ? AND ?",
                          (ids[0], ids[-1])).fetchall()
    finally:
        db.close()


def throughput(srv, tenant_ids, n):
    ids = insert_jobs(srv, tenant_ids, n)
    wait_done(srv, ids, timeout=max(120, n / 100))
    (start, end), = rows(srv, ids, "min(started_at), max(finished_at)")
    secs = max(end - start, 1) / 1000
    return {"jobs": n, "secs": secs, "per_s": n / secs}


def start_delay(srv, token, tenant_ids, n, rate):
    """Pending again by the admin API at `rate` per second, one request after another."""
    ids = insert_jobs(srv, tenant_ids, n, status="discarded")
    conn = tn.Conn(srv.host, srv.port)
    failures = {}
    started = time.monotonic()
    try:
        for k, job in enumerate(ids):
            wait = started + k / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            status, body, _ = conn.request("POST", f"/api/admin/jobs/{job}/retry",
                                           headers=[("Authorization", f"Bearer {token}")])
            if status != 200:
                tn.count(failures, f"status {status}: {body[:100].decode(errors='replace')}")
    finally:
        conn.close()
    if failures:
        raise bl.BenchError(f"retry failed: {failures}")
    wait_done(srv, ids, timeout=60)
    delays = [s - r for s, r in rows(srv, ids, "started_at, run_at")]
    return {"jobs": n, "rate": rate, "p50": pct(delays, 50), "p99": pct(delays, 99),
            "max": max(delays), "sent_secs": time.monotonic() - started}


def wrk_tenant(srv, script, duration):
    return bl.run_wrk(f"http://{srv.addr}/t/t0/api/tenant", WRK_THREADS, WRK_CONNS, duration,
                      script=script, pid=srv.pid)


def busy_vs_idle(srv, tenant_ids, script, duration, backlog):
    progress("3. GET /api/tenant, queue idle ...")
    wrk_tenant(srv, script, 2)  # warm-up: every tenant opened, caches filled
    idle = wrk_tenant(srv, script, duration)
    progress(f"   {idle['rps']:.0f} req/s; queue busy ({backlog} jobs enqueued) ...")
    ids = insert_jobs(srv, tenant_ids, backlog)
    time.sleep(0.2)  # the workers' poll finds them
    before = count_done(srv, ids)
    busy = wrk_tenant(srv, script, duration)
    after = count_done(srv, ids)
    drained = after == len(ids)
    wait_done(srv, ids, timeout=max(120, backlog / 100))
    return {"idle": idle, "busy": busy, "jobs_during": after - before, "duration": duration,
            "drained": drained}


def report(root, ctx):
    out = bl.header(root, "tenantd benchmark: background jobs")
    k = ctx["knobs"]
    out += [f"- server: `tenantd serve --job-workers default={k['workers']} --job-poll {JOB_POLL}`"
            f", RUST_LOG=warn, {k['tenants']} tenants",
            f"- load average at start / end: {ctx['load_start']} / {ctx['load_end']}", ""]
    t, d, b = ctx["throughput"], ctx["delay"], ctx["busy"]
    out += ["## 1. No-op jobs over the tenants", ""]
    out += bl.table(["jobs", "first start to last finish", "jobs/s", "target", "verdict"], [[
        t["jobs"], f"{t['secs']:.2f} s", f"{t['per_s']:.0f}", f">= {TARGET_JOBS_PER_S}",
        verdict(t["per_s"] >= TARGET_JOBS_PER_S)]])
    out += ["", "## 2. Enqueue to start (in-process wake-up)", ""]
    out += bl.table(["jobs", "rate", "p50", "p99", "max", "targets", "verdict"], [[
        d["jobs"], f"{d['rate']}/s", f"{d['p50']} ms", f"{d['p99']} ms", f"{d['max']} ms",
        f"p50 < {TARGET_P50_MS:.0f} ms, p99 < {TARGET_P99_MS:.0f} ms",
        verdict(d["p50"] < TARGET_P50_MS and d["p99"] < TARGET_P99_MS)]])
    out += ["", "Milliseconds of the server's clock (`started_at - run_at` of each row): a "
            "delay under 1 ms reads 0.", ""]
    out += ["## 3. `GET /api/tenant` (100 tenants, wrk) with the queue idle and busy", ""]
    rows_ = []
    for name in ("idle", "busy"):
        r = b[name]
        rows_.append([name, f"{r['rps']:.0f}", fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]),
                      tn.fmt_cpu(r["cpu_us"]), r["non_2xx"]])
    out += bl.table(["queue", "req/s", "p50", "p99", "server CPU/req", "non-2xx"], rows_)
    ratio = b["busy"]["rps"] / b["idle"]["rps"] if b["idle"]["rps"] else 0
    out += ["", f"Busy/idle: {ratio:.2f}; jobs done during the busy run: {b['jobs_during']} "
            f"({b['jobs_during'] / b['duration']:.0f}/s"
            + ("" if b["drained"] else ", the backlog lasted the whole run")
            + ("; the backlog ran out before the run ended" if b["drained"] else "") + ").",
            "The server CPU per request of the busy run includes the jobs' own work.", ""]
    out += bl.server_log_section(ctx["servers"])
    out += [f"Suite time: {ctx['suite_secs']:.0f} s", ""]
    return "\n".join(out)


def main():
    a = bl.suite_args(__doc__)
    knobs = {"tenants": env_int("BENCH_TENANTS", 100), "jobs": env_int("BENCH_JOBS", 20000),
             "delay_jobs": env_int("BENCH_DELAY_JOBS", 2000),
             "delay_rate": env_int("BENCH_DELAY_RATE", 200),
             "workers": env_int("BENCH_JOB_WORKERS", 2),
             "duration": env_int("BENCH_DURATION", 10),
             "busy_jobs": env_int("BENCH_BUSY_JOBS", 60000)}
    creds = bl.bench_credentials()
    ctx = {"knobs": knobs, "load_start": loadavg()}
    started = time.monotonic()
    args = ["--job-workers", f"default={knobs['workers']}", "--job-poll", JOB_POLL]
    with bl.Server(a.bin, rust_log="warn", args=args, name="jobs") as srv:
        token = tn.admin_session(a.bin, srv, creds)
        slugs = [f"t{i}" for i in range(knobs["tenants"])]
        progress(f"provisioning {len(slugs)} tenants ...")
        made = tn.provision(srv, token, slugs, 4)
        if made["failures"]:
            raise bl.BenchError(f"provisioning failed: {made['failures']}")
        tn.add_bench_user(a.bin, srv.data_dir, creds)
        user = tn.user_session(srv, creds)
        db = catalog(srv)
        tenant_ids = [r[0] for r in db.execute("SELECT id FROM tenants ORDER BY slug")]
        db.close()
        progress(f"1. {knobs['jobs']} no-op jobs ...")
        ctx["throughput"] = throughput(srv, tenant_ids, knobs["jobs"])
        progress(f"   {ctx['throughput']['per_s']:.0f} jobs/s")
        progress(f"2. {knobs['delay_jobs']} jobs at {knobs['delay_rate']}/s ...")
        ctx["delay"] = start_delay(srv, token, tenant_ids, knobs["delay_jobs"],
                                   knobs["delay_rate"])
        progress(f"   p50 {ctx['delay']['p50']} ms, p99 {ctx['delay']['p99']} ms")
        script = os.path.join(srv.dir, "tenants.lua")
        with open(script, "w") as f:
            f.write(tn.LUA.format(n=len(slugs), path='"/t/t" .. k .. "/api/tenant"', token=user))
        ctx["busy"] = busy_vs_idle(srv, tenant_ids, script, knobs["duration"],
                                   knobs["busy_jobs"])
        progress(f"   busy: {ctx['busy']['busy']['rps']:.0f} req/s")
        problems = srv.log_problems()
    ctx["servers"] = [("server", problems, srv.exit_note)]
    ctx["load_end"] = loadavg()
    ctx["suite_secs"] = time.monotonic() - started
    bl.write_report(a.out, report(a.root, ctx))


if __name__ == "__main__":
    bl.run_suite("jobs", main)
