"""The HTTP-layer benchmark: /healthz throughput under wrk, and the cost of idle connections.

Run through `bench/run http`, which installs wrk and builds the binary first. Directly:

    python3 bench/http.py --bin target/release/tenantd --out bench/out/http.md

Knobs (environment): BENCH_DURATION (seconds per wrk run, 10), BENCH_RUNS (3), BENCH_WARMUP (2),
BENCH_LOG_LEVELS (RUST_LOG levels to measure throughput with, "info warn"), BENCH_IDLE (1000).
"""

import os
import signal
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from benchlib import env_int, fmt_ms, verdict  # noqa: E402

TARGET_RPS = 30_000
TARGET_RSS_KB = 64 * 1024
WRK_THREADS, WRK_CONNS = 2, 32
# A loopback connect this slow has been retransmitted: the server's accept queue was full.
SLOW_CONNECT = 0.2

LEVEL_LABELS = {
    "info": "info (default: one access-log line per request, stderr to a file)",
    "warn": "warn (access log off)",
}


# ---------------------------------------------------------------------------------------------
# Throughput


def throughput(binary, level, runs, duration, warmup):
    with bl.Server(binary, rust_log=level, name=f"server RUST_LOG={level}") as srv:
        url = f"http://{srv.addr}/healthz"
        warm = bl.run_wrk(url, WRK_THREADS, WRK_CONNS, warmup) if warmup > 0 else None
        results = [bl.run_wrk(url, WRK_THREADS, WRK_CONNS, duration) for _ in range(runs)]
        # Requests wrk saw answered, plus the /healthz the harness sent at start.
        completed = 1 + sum(r["requests"] or 0 for r in results + ([warm] if warm else []))
        after = srv.stats()
        problems = srv.log_problems()
        lines = srv.log_lines()
    return {"level": level, "runs": results, "after": after, "problems": problems,
            "log_lines": lines, "completed": completed, "exit": srv.exit_note}


# ---------------------------------------------------------------------------------------------
# Idle connections


def wait_for(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def still_open(sock):
    """True if the server has neither closed nor written to this idle connection."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) is None
    except BlockingIOError:
        return True
    except OSError:
        return False


def idle_phase(binary, count, mode):
    """Opens `count` idle connections to a fresh server and reads its footprint meanwhile.

    mode "request": each connection first does one keep-alive GET /healthz, then stays idle.
    mode "silent": each connection never sends a byte.
    """
    cap = max(2000, count * 2)
    # All of them come from 127.0.0.1: the per-address share must not refuse them.
    args = ["--head-timeout", "60", "--max-connections", str(cap),
            "--max-client-connections", str(cap)]
    bl.raise_fd_limit(count + 64)
    with bl.Server(binary, rust_log="info", args=args, name=f"idle server ({mode})") as srv:
        time.sleep(0.2)
        before = srv.stats()
        socks, failures, connect_secs = [], {}, []
        overflows = bl.listen_overflows()
        request = f"GET /healthz HTTP/1.1\r\nHost: {srv.addr}\r\n\r\n".encode()
        started = time.monotonic()
        try:
            for _ in range(count):
                t0 = time.monotonic()
                try:
                    s = socket.create_connection((srv.host, srv.port), timeout=5)
                except OSError as e:
                    failures[f"connect: {e.strerror or e}"] = failures.get(
                        f"connect: {e.strerror or e}", 0) + 1
                    continue
                connect_secs.append(time.monotonic() - t0)
                socks.append(s)
                if mode == "request":
                    try:
                        s.sendall(request)
                        status, headers, _ = bl.read_response(s)
                        if status != 200:
                            failures[f"status {status}"] = failures.get(f"status {status}", 0) + 1
                        elif headers.get("connection", "").lower() == "close":
                            failures["answered Connection: close"] = failures.get(
                                "answered Connection: close", 0) + 1
                    except OSError as e:
                        failures[f"request: {e}"] = failures.get(f"request: {e}", 0) + 1
            open_secs = time.monotonic() - started
            overflows = bl.listen_overflows() - overflows
            # A connect returns once the kernel has queued it; wait until the server holds them.
            accepted = wait_for(lambda: srv.stats()["fds"] >= before["fds"] + len(socks), 5.0)
            time.sleep(0.5)
            during = srv.stats()
            alive = sum(1 for s in socks if still_open(s))
            t0 = time.monotonic()
            probe_status, _ = bl.http_get(srv.host, srv.port, "/healthz")
            probe_ms = (time.monotonic() - t0) * 1000
        finally:
            for s in socks:
                s.close()
        released = wait_for(lambda: srv.stats()["fds"] <= before["fds"], 5.0)
        time.sleep(0.2)
        after = srv.stats()
        problems = srv.log_problems()
    return {"mode": mode, "count": count, "opened": len(socks), "failures": failures,
            "open_secs": open_secs, "connect_secs": connect_secs, "overflows": overflows,
            "accepted": accepted, "alive": alive,
            "before": before, "during": during, "after": after, "released": released,
            "probe_status": probe_status, "probe_ms": probe_ms, "problems": problems,
            "exit": srv.exit_note}


# ---------------------------------------------------------------------------------------------
# Report


def report(root, tp, idle, duration, runs, warmup, count):
    out = bl.header(root, "tenantd benchmark: HTTP layer")
    out += [f"## Throughput: `wrk -t{WRK_THREADS} -c{WRK_CONNS} -d{duration}s --latency "
            f"http://127.0.0.1:PORT/healthz`", "",
            f"{warmup}s warm-up, then {runs} runs; each figure is the median of the runs. "
            "Fresh server per RUST_LOG level, default flags (16 workers).", ""]
    rows = []
    for t in tp:
        rs = t["runs"]
        rps = bl.median([r["rps"] for r in rs])
        rows.append([
            LEVEL_LABELS.get(t["level"], t["level"]),
            f"{rps:,.0f}",
            fmt_ms(bl.median([r["p50_ms"] for r in rs])),
            fmt_ms(bl.median([r["p99_ms"] for r in rs])),
            f"≥ {TARGET_RPS:,} req/s: {verdict(rps >= TARGET_RPS)}",
            " / ".join(f"{r['rps']:,.0f}" for r in rs),
            " / ".join(f"{fmt_ms(r['p50_ms'])}, {fmt_ms(r['p99_ms'])}" for r in rs),
        ])
    out += bl.table(["RUST_LOG", "requests/s", "p50", "p99", "target", "each run: req/s",
                     "each run: p50, p99"], rows)
    out.append("")
    for t in tp:
        errs = [f"{k} {v}" for r in t["runs"] for k, v in r["socket_errors"].items() if v]
        non2xx = sum(r["non_2xx"] for r in t["runs"])
        out.append(f"- RUST_LOG={t['level']}: wrk socket errors: {', '.join(errs) or 'none'}; "
                   f"non-2xx: {non2xx}; server afterwards: {bl.mib(t['after']['rss_kb'])} RSS, "
                   f"{t['after']['threads']} threads; {t['log_lines']:,} stderr lines for "
                   f"{t['completed']:,} requests wrk completed (warm-up included).")
    out.append("")

    if idle:
        out += [f"## Idle connections: {count:,} held open",
                "",
                "Fresh server per phase with `--head-timeout 60 --max-connections 2000`, "
                "RUST_LOG=info. Figures from /proc/PID/status (VmRSS, Threads) and "
                "/proc/PID/fd.", ""]
        labels = {"request": f"(a) {count:,} that each did one keep-alive GET /healthz, then idle",
                  "silent": f"(b) {count:,} that never sent a byte"}
        rows = []
        for p in idle:
            b, d, a = p["before"], p["during"], p["after"]
            tag = p["mode"] == "request" and "(a)" or "(b)"
            per_conn = (d["rss_kb"] - b["rss_kb"]) / max(p["opened"], 1)
            rows.append([f"{tag} baseline, before opening", "0", bl.mib(b["rss_kb"]),
                         b["threads"], b["fds"], ""])
            rows.append([labels[p["mode"]], f"{p['alive']:,} of {p['count']:,} still open",
                         f"{bl.mib(d['rss_kb'])} (+{per_conn:.1f} kB/conn)", d["threads"],
                         d["fds"],
                         f"< 64 MiB: {verdict(d['rss_kb'] < TARGET_RSS_KB)}"])
            rows.append([f"{tag} after closing them", "0", bl.mib(a["rss_kb"]), a["threads"],
                         a["fds"], ""])
        out += bl.table(["phase", "idle connections", "RSS", "threads", "open fds", "target"],
                        rows)
        out.append("")
        for p in idle:
            tag = p["mode"] == "request" and "(a)" or "(b)"
            fails = ", ".join(f"{k}: {v}" for k, v in p["failures"].items()) or "none"
            slow = [x for x in p["connect_secs"] if x >= SLOW_CONNECT]
            slow_note = (f" ({len(slow)} connect(s) took ≥ {SLOW_CONNECT:g}s, slowest "
                         f"{max(slow):.2f}s: SYN retransmits)" if slow else "")
            out.append(
                f"- {tag}: opened {p['opened']:,} one after another in {p['open_secs']:.2f}s"
                f"{slow_note}; kernel ListenOverflows meanwhile (system-wide): {p['overflows']}; "
                f"failures: {fails}; "
                f"server held them all: {'yes' if p['accepted'] else 'NO'}; "
                f"a new GET /healthz meanwhile: {p['probe_status']} in {p['probe_ms']:.1f} ms; "
                f"fds back to baseline after close: {'yes' if p['released'] else 'NO'}.")
        out.append("")

    servers = [(f"throughput RUST_LOG={t['level']}", t) for t in tp]
    servers += [(f"idle {p['mode'] == 'request' and '(a)' or '(b)'}", p) for p in idle]
    out += bl.server_log_section((name, s["problems"], s["exit"]) for name, s in servers)
    return "\n".join(out)


def main():
    a = bl.suite_args(__doc__)

    duration = env_int("BENCH_DURATION", 10)
    runs = env_int("BENCH_RUNS", 3)
    warmup = env_int("BENCH_WARMUP", 2)
    count = env_int("BENCH_IDLE", 1000)
    levels = os.environ.get("BENCH_LOG_LEVELS", "info warn").split()

    tp = []
    for level in levels:
        print(f"http: throughput, RUST_LOG={level}: {warmup}s warm-up + {runs} x {duration}s ...",
              file=sys.stderr, flush=True)
        tp.append(throughput(a.bin, level, runs, duration, warmup))
    idle = []
    if count > 0:
        for mode in ("request", "silent"):
            print(f"http: {count} idle connections ({mode}) ...", file=sys.stderr, flush=True)
            idle.append(idle_phase(a.bin, count, mode))

    text = report(a.root, tp, idle, duration, runs, warmup, count)
    bl.write_report(a.out, text)


if __name__ == "__main__":
    bl.run_suite("http", main)
