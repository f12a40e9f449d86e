#!/usr/bin/env python3
"""bench/ops.py: backup, restore and export of one large tenant while it takes writes.

One `tenantd serve` and one tenant whose file is grown to BENCH_BACKUP_MB (200) MiB with orders (8 kB
of random notes each) written straight into it by SQLite (setup, not measured). Then:

1. Writes alone: order creates through the API by BENCH_CLIENTS keep-alive clients for
   BENCH_DURATION seconds; their p50 and p99.
2. Backup under writes: the same writers keep going while `tenantd backup` copies the file (the
   online copy the server's own backup job makes, run here as the CLI beside the server); the
   backup's MB/s (the file's size over the command's wall time) and the p50/p99 of the writes
   that ran while it did.
3. Restore: `POST /api/admin/tenants/{t}/backups/restore` with that backup, writers stopped: the
   answer's wall time (verification, keeping the replaced file aside, the copy, the swap).
4. Export: `GET /api/export` (the streamed zip) read to its end by one client: MB/s of the
   tenant file and of the archive.

Knobs (environment), see bench/README.md: BENCH_BACKUP_MB (200), BENCH_CLIENTS (2),
BENCH_DURATION (10), BENCH_LOG_LEVEL ("warn").
"""

import base64
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from benchlib import env_int, fmt_ms, pct  # noqa: E402
import tenancy as tn  # noqa: E402  (accounts, the keep-alive client)

SLUG = "big"
ORDER = {"title": "Bench order", "customer_name": "Bench Customer", "amount_minor": 1234,
         "currency": "EUR"}
NOTE_BYTES = 6000  # random bytes per order, base64: notes of 8,000 characters that deflate cannot shrink much
FILL_BATCH = 500


def progress(msg):
    print(f"ops: {msg}", file=sys.stderr, flush=True)


def tenant_file(data, slug):
    db = sqlite3.connect(os.path.join(data, "central.db"), timeout=30)
    try:
        (tid,) = db.execute("SELECT id FROM tenants WHERE slug = ?", (slug,)).fetchone()
    finally:
        db.close()
    return tid, os.path.join(data, "tenants", f"{tid}.db")


def fill(path, megabytes):
    """Orders written straight into the tenant's file until it holds `megabytes` MiB, then its
    log folded in: SQLite in this process beside the server's (their locks keep them apart)."""
    db = sqlite3.connect(path, timeout=60)
    try:
        db.execute("PRAGMA busy_timeout = 60000")
        target = megabytes * 1024 * 1024
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        while True:
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            (size,) = db.execute("PRAGMA page_size").fetchone()
            if pages * size >= target:
                break
            with db:
                db.execute("BEGIN IMMEDIATE")
                (start,) = db.execute(
                    "SELECT value FROM counters WHERE name = 'order_number'").fetchone()
                db.executemany(
                    "INSERT INTO orders (number, title, customer_name, amount_minor, currency, "
                    "status, created_by, notes, created_at, updated_at) "
                    "VALUES (?, 'Filled order', 'Filled Customer', 100, 'EUR', 'new', 1, ?, ?, ?)",
                    ((start + k + 1, base64.b64encode(os.urandom(NOTE_BYTES)).decode(), now, now)
                     for k in range(FILL_BATCH)))
                db.execute("UPDATE counters SET value = ? WHERE name = 'order_number'",
                           (start + FILL_BATCH,))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return os.path.getsize(path)


class Writers:
    """BENCH_CLIENTS threads creating orders until stopped; each write's (start time, ms)."""

    def __init__(self, srv, token, clients):
        self.srv, self.token, self.clients = srv, token, clients
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.samples, self.failures = [], {}
        self.threads = []

    def start(self):
        for _ in range(self.clients):
            t = threading.Thread(target=self.run, daemon=True)
            t.start()
            self.threads.append(t)

    def run(self):
        conn = tn.Conn(self.srv.host, self.srv.port)
        auth = [("Authorization", f"Bearer {self.token}"), ("Content-Type", "application/json")]
        body = json.dumps(ORDER).encode()
        try:
            while not self.stop_flag.is_set():
                t0 = time.monotonic()
                try:
                    status, _, ms = conn.request("POST", f"/t/{SLUG}/api/orders", body, auth)
                except OSError as e:
                    status, ms = f"{type(e).__name__}", None
                with self.lock:
                    if status == 201:
                        self.samples.append((t0, ms))
                    else:
                        tn.count(self.failures, f"status {status}")
        finally:
            conn.close()

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join()

    def between(self, t0, t1):
        with self.lock:
            return [ms for (t, ms) in self.samples if t0 <= t < t1]


def measure(binary, creds, knobs):
    out = {}
    with bl.Server(binary, rust_log=knobs["level"], name="ops") as srv:
        admin = tn.admin_session(binary, srv, creds)
        prov = tn.provision(srv, admin, [SLUG], 1)
        if prov["failures"]:
            raise bl.BenchError(f"creating the tenant failed: {prov['failures']}")
        tn.add_bench_user(binary, srv.data_dir, creds, role="admin")
        token = tn.user_session(srv, creds)
        tid, path = tenant_file(srv.data_dir, SLUG)
        progress(f"filling {SLUG} to {knobs['mb']} MiB")
        t0 = time.monotonic()
        out["file_bytes"] = fill(path, knobs["mb"])
        progress(f"filled in {time.monotonic() - t0:.0f} s")

        writers = Writers(srv, token, knobs["clients"])
        writers.start()
        try:
            time.sleep(1)  # warm up: the pool opened, the first checkpoints done
            a = time.monotonic()
            time.sleep(knobs["duration"])
            b = time.monotonic()
            out["alone"] = writers.between(a, b)
            out["alone_secs"] = b - a
            progress("backup under writes")
            c = time.monotonic()
            backup = tn.tenantd_cli(binary, srv.data_dir, "backup", SLUG, "--json")
            d = time.monotonic()
            out["during"] = writers.between(c, d)
            out["backup_secs"] = d - c
        finally:
            writers.stop()
        out["write_failures"] = writers.failures
        manifest = json.loads(backup)
        if isinstance(manifest, list):
            manifest = manifest[0]
        if isinstance(manifest, dict) and "backups" in manifest:
            manifest = manifest["backups"][0]
        out["backup_bytes"] = manifest["bytes"]

        progress("restore")
        conn = tn.Conn(srv.host, srv.port, timeout=600)
        try:
            body = json.dumps({"backup": manifest["file"]}).encode()
            status, rbody, ms = conn.request(
                "POST", f"/api/admin/tenants/{SLUG}/backups/restore", body,
                [("Authorization", f"Bearer {admin}"), ("Content-Type", "application/json")])
        finally:
            conn.close()
        if status != 200:
            raise bl.BenchError(f"restore answered {status}: {rbody[:200]!r}")
        out["restore_ms"] = ms

        progress("export")
        out["export_bytes"], out["export_secs"] = export(srv, token)
    return out


def export(srv, token):
    """GET /t/SLUG/api/export read to its end by curl (this directory's http.py shadows Python's
    http package): the archive's bytes and the wall time."""
    p = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
         "-H", f"Authorization: Bearer {token}",
         f"http://{srv.host}:{srv.port}/t/{SLUG}/api/export"],
        capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise bl.BenchError(f"curl failed: {p.stderr.strip()[:200]}")
    status, size, secs = p.stdout.split()
    if status != "200":
        raise bl.BenchError(f"export answered {status}")
    return int(size), float(secs)


def report(root, r, knobs, meta):
    mb = r["file_bytes"] / 1e6
    lines = bl.header(root, "Operations: backup, restore and export of a large tenant")
    lines.append(
        f"One tenant of {mb:,.0f} MB (orders with 8 kB of random notes written into its file beforehand); "
        f"{knobs['clients']} keep-alive clients creating orders in it through the API; "
        f"RUST_LOG={knobs['level']}.\n")
    rows = [
        ["writes alone", f"{len(r['alone']):,}", fmt_ms(pct(r['alone'], 50)),
         fmt_ms(pct(r['alone'], 99)), f"{len(r['alone']) / r['alone_secs']:,.0f}"],
        ["writes during the backup", f"{len(r['during']):,}", fmt_ms(pct(r['during'], 50)),
         fmt_ms(pct(r['during'], 99)), f"{len(r['during']) / r['backup_secs']:,.0f}"],
    ]
    lines.extend(bl.table(["", "writes", "p50", "p99", "writes/s"], rows))
    lines.append("")
    rows = [
        ["backup (`tenantd backup`, under writes)", f"{r['backup_secs']:.2f} s",
         f"{r['backup_bytes'] / 1e6 / r['backup_secs']:,.0f} MB/s"],
        ["restore (`POST …/backups/restore`)", f"{r['restore_ms'] / 1000:.2f} s",
         f"{r['backup_bytes'] / 1e6 / (r['restore_ms'] / 1000):,.0f} MB/s"],
        ["export (`GET /api/export`, streamed zip)", f"{r['export_secs']:.2f} s",
         f"{mb / r['export_secs']:,.0f} MB/s of file, "
         f"{r['export_bytes'] / 1e6 / r['export_secs']:,.0f} MB/s of archive "
         f"({r['export_bytes'] / 1e6:,.0f} MB)"],
    ]
    lines.extend(bl.table(["operation", "time", "throughput"], rows))
    if r["write_failures"]:
        lines.append(f"\nFailed writes: {r['write_failures']}")
    lines.append(f"\nLoad average {meta['load_start']} -> {meta['load_end']}; "
                 f"{meta['secs']:.0f} s in all.")
    return "\n".join(lines) + "\n"


def main():
    a = bl.suite_args(__doc__)
    knobs = {
        "mb": env_int("BENCH_BACKUP_MB", 200),
        "clients": env_int("BENCH_CLIENTS", 2),
        "duration": env_int("BENCH_DURATION", 10),
        "level": os.environ.get("BENCH_LOG_LEVEL", "warn"),
    }
    if knobs["mb"] < 1 or knobs["clients"] < 1 or knobs["duration"] < 1:
        raise bl.BenchError("BENCH_BACKUP_MB, BENCH_CLIENTS and BENCH_DURATION must be >= 1")
    creds = bl.bench_credentials()
    started = time.monotonic()
    meta = {"load_start": bl.loadavg()}
    result = measure(a.bin, creds, knobs)
    meta["load_end"] = bl.loadavg()
    meta["secs"] = time.monotonic() - started
    bl.write_report(a.out, report(a.root, result, knobs, meta))


if __name__ == "__main__":
    bl.run_suite("ops", main)
