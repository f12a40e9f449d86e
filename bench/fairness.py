"""The fairness benchmark: are normal requests served while one client, or 16, hold thousands of
slow-header, idle keep-alive or idle WebSocket connections?

Run through `bench/run fairness`. Directly:

    python3 bench/fairness.py --bin target/release/tenantd --out bench/out/fairness.md

For each kind of hostile connection and each set of source addresses (127.0.0.2 alone, then
127.0.0.2 to 127.0.0.17; the kernel routes all of 127.0.0.0/8 to this machine), a fresh server
is started, an attacker process opens BENCH_FAIR_CONNS connections spread over those addresses
and keeps them so (a slow-header client sends one more header line per connection every
second; every connection the server cuts is opened again, at most 500 a second). Meanwhile a
normal client on 127.0.0.1 sends `GET /healthz` on a fresh connection every 10 ms and counts the
answers (200 within 2 s) and their latency.

Knobs (environment): BENCH_FAIR_CONNS (2000), BENCH_FAIR_SECONDS (measuring time per case, 10),
BENCH_FAIR_MAX (--max-connections given to the server, 1024: the old default, low enough for
16 addresses to reach it; "default" lets the server derive it from its open-file limit).
"""

import base64
import multiprocessing
import os
import selectors
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from benchlib import env_int  # noqa: E402

NORMAL_SOURCE = "127.0.0.1"
ONE = ["127.0.0.2"]
SIXTEEN = [f"127.0.0.{i}" for i in range(2, 18)]
KINDS = ["slow-header", "idle keep-alive", "idle WebSocket"]
TARGET_SHARE, TARGET_P99_MS = 0.99, 50.0
REOPEN_PER_SEC = 500


# ---------------------------------------------------------------------------------------------
# The attacker (its own process, so it costs the normal client no interpreter time)


def opening(kind, key):
    if kind == "slow-header":
        return b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    if kind == "idle keep-alive":
        return b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    ws_key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /app/{key}?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\nHost: x\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {ws_key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode()


def attacker(kind, sources, port, key, count, stop, ready, report):
    bl.raise_fd_limit(count + 256)
    sel = selectors.DefaultSelector()
    socks = {}  # socket -> [source, answered (a 200 or a 101 came back)]
    reopen = []  # sources of connections to open again
    opened = refused = 0

    def open_one(src):
        nonlocal opened
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((src, 0))
            s.settimeout(2)
            s.connect((bl.LOOPBACK, port))
            s.sendall(opening(kind, key))
        except OSError:
            s.close()
            reopen.append(src)
            return
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks[s] = [src, False]
        opened += 1

    def drop(s):
        sel.unregister(s)
        src = socks.pop(s)[0]
        s.close()
        reopen.append(src)

    for i in range(count):
        open_one(sources[i % len(sources)])
    ready.set()
    next_trickle = time.monotonic() + 1
    while not stop.is_set():
        for k, _ in sel.select(0.05):
            s = k.fileobj
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                drop(s)
            elif data.startswith(b"HTTP/1.1 503"):
                refused += 1
                drop(s)
            elif data.startswith((b"HTTP/1.1 200", b"HTTP/1.1 101")):
                socks[s][1] = True
        now = time.monotonic()
        budget = int(REOPEN_PER_SEC * 0.05) + 1
        while reopen and budget > 0:
            open_one(reopen.pop(0))
            budget -= 1
        if kind == "slow-header" and now >= next_trickle:
            next_trickle = now + 1
            for s in list(socks):
                try:
                    s.send(b"X-Slow: 1\r\n")
                except OSError:
                    drop(s)
    held = len(socks)
    report.put({"opened": opened, "refused": refused, "held": held,
                "answered": sum(1 for v in socks.values() if v[1])})
    for s in list(socks):
        s.close()


# ---------------------------------------------------------------------------------------------
# The normal client


def normal_requests(port, seconds):
    """(answered with 200 within 2 s, sent, latencies in ms of the answered ones)."""
    sent, latencies = 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sent += 1
        started = time.monotonic()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((NORMAL_SOURCE, 0))
                s.settimeout(2)
                s.connect((bl.LOOPBACK, port))
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                status, _, _ = bl.read_response(s)
            if status == 200:
                latencies.append((time.monotonic() - started) * 1000)
        except (OSError, ConnectionError, ValueError):
            pass
        time.sleep(0.01)
    return len(latencies), sent, latencies


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def credentials_key(binary, data):
    p = subprocess.run([binary, "realtime", "credentials", "--json", "--data", data],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise bl.BenchError(f"realtime credentials failed: {p.stderr.strip()}")
    import json
    return json.loads(p.stdout)["key"]


def one_case(binary, kind, sources, count, seconds, max_conns):
    args = [] if max_conns == "default" else ["--max-connections", max_conns]
    with bl.Server(binary, rust_log="warn", args=args, name=f"server ({kind})") as srv:
        key = credentials_key(binary, srv.data_dir)
        ctx = multiprocessing.get_context("fork")
        stop, ready, report = ctx.Event(), ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=attacker,
                           args=(kind, sources, srv.port, key, count, stop, ready, report))
        proc.start()
        try:
            if not ready.wait(120):
                raise bl.BenchError("the attacker did not open its connections within 120 s")
            time.sleep(1)  # let the server settle with the connections it took
            served, sent, lat = normal_requests(srv.port, seconds)
            stop.set()
            attack = report.get(timeout=30)
        finally:
            stop.set()
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        stats = srv.stats()
    return {"kind": kind, "sources": len(sources), "served": served, "sent": sent,
            "p50": percentile(lat, 50), "p99": percentile(lat, 99), "attack": attack,
            "rss_kb": stats["rss_kb"]}


def main():
    a = bl.suite_args(__doc__.splitlines()[0])
    count = env_int("BENCH_FAIR_CONNS", 2000)
    seconds = env_int("BENCH_FAIR_SECONDS", 10)
    max_conns = os.environ.get("BENCH_FAIR_MAX", "1024")
    bl.raise_fd_limit(count + 256)
    results = []
    for kind in KINDS:
        for sources in (ONE, SIXTEEN):
            results.append(one_case(a.bin, kind, sources, count, seconds, max_conns))
            r = results[-1]
            print(f"fairness: {kind} from {r['sources']}: {r['served']}/{r['sent']} served",
                  file=sys.stderr)

    fmt = lambda v: "-" if v is None else f"{v:.1f} ms"  # noqa: E731
    rows = []
    met = True
    for r in results:
        share = r["served"] / r["sent"] if r["sent"] else 0
        ok = share >= TARGET_SHARE and r["p99"] is not None and r["p99"] < TARGET_P99_MS
        met &= ok
        at = r["attack"]
        rows.append([f"{count:,} {r['kind']}", "127.0.0.2" if r["sources"] == 1
                     else "127.0.0.2-17", f"{at['held']:,} held ({at['refused']:,} refused)",
                     f"{r['served']}/{r['sent']} ({share:.1%})", fmt(r["p50"]), fmt(r["p99"]),
                     "met" if ok else "MISSED"])
    lines = bl.header(a.root, "tenantd fairness benchmark")
    lines += [f"- server: --max-connections {max_conns}, RUST_LOG=warn; "
              f"{seconds} s of normal requests per case", ""]
    lines += bl.table(["hostile connections", "from", "attacker's sockets open at the end",
                       "normal requests served", "p50", "p99",
                       f"target (>= {TARGET_SHARE:.0%}, p99 < {TARGET_P99_MS:.0f} ms)"], rows)
    lines += ["", f"All targets met: {'yes' if met else 'no'}", ""]
    bl.write_report(a.out, "\n".join(lines))


if __name__ == "__main__":
    bl.run_suite("fairness", main)
