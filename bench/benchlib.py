"""Shared pieces of the tenantd benchmarks: the server under test, /proc readings, wrk, reports.

Standard library only (Python 3.9+). Everything here talks to 127.0.0.1 and nothing else.
"""

import argparse
import datetime
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

LOOPBACK = "127.0.0.1"


class BenchError(Exception):
    """A benchmark could not be run (as opposed to a figure that misses its target)."""


def check_loopback(host):
    if host != LOOPBACK:
        raise BenchError(f"refusing to target {host}: benchmarks only talk to {LOOPBACK}")


def raise_fd_limit(want):
    """Lift our soft open-file limit so we can hold `want` sockets at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, want))
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < want:
        raise BenchError(f"open-file limit {target} is below the {want} sockets needed")


# ---------------------------------------------------------------------------------------------
# The server under test


def proc_stats(pid):
    """RSS (kB), thread count and open fd count of a process, from /proc."""
    rss_kb = threads = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_kb": rss_kb, "threads": threads, "fds": fds}


def listen_overflows():
    """The kernel's TcpExt ListenOverflows counter (system-wide): connections dropped because a
    listener's accept queue was full."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table.get("ListenOverflows", 0))
    return 0


class Server:
    """`tenantd serve` on 127.0.0.1:0 with a fresh data directory, stderr to a file.

    Use as a context manager: the process gets SIGTERM (SIGKILL if it lingers) and the temporary
    directory is removed on the way out, whatever happened in between.

    `env`: variables added to its environment after the `TENANTD_*` ones were removed (e.g.
    `TENANTD_MAX_OPEN_TENANTS`). `data`: an existing data directory to serve instead of a fresh one;
    it belongs to the caller and is left in place (the temporary directory only holds the logs).
    """

    STOP_WAIT = 5.0

    def __init__(self, binary, rust_log="info", args=(), name="server", env=None, data=None):
        self.binary = binary
        self.extra_env = dict(env or {})
        self.data = data
        self.rust_log = rust_log
        self.args = list(args)
        self.name = name
        self.proc = None
        self.dir = None
        self.host = self.port = None
        self.exit_note = None  # how it stopped, filled in by stop()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def pid(self):
        return self.proc.pid

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self):
        return self.data or os.path.join(self.dir, "data")

    @property
    def stderr_path(self):
        return os.path.join(self.dir, "stderr.log")

    def start(self, timeout=10.0):
        self.dir = tempfile.mkdtemp(prefix="tenantd-bench-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTD_")}
        env.update(self.extra_env)
        env["RUST_LOG"] = self.rust_log
        # The load generator is one member hammering one tenant, which no rate limit would let
        # through: rates this high keep the limiter's work in what is measured without refusing
        # (a bench's own args come later and win).
        cmd = [self.binary, "serve", "--bind", f"{LOOPBACK}:0",
               "--data", self.data_dir,
               "--tenant-rate", "16777216", "--member-rate", "16777216"] + self.args
        out = open(os.path.join(self.dir, "stdout.log"), "wb")
        err = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=env)
        finally:
            out.close()
            err.close()
        deadline = time.monotonic() + timeout
        pattern = re.compile(r"^tenantd listening on http://([0-9.]+):(\d+)\s*$", re.M)
        while True:
            with open(os.path.join(self.dir, "stdout.log")) as f:
                m = pattern.search(f.read())
            if m:
                break
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} before "
                                 f"listening: {self.stderr_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not print its address within {timeout}s")
            time.sleep(0.02)
        check_loopback(m.group(1))
        self.host, self.port = m.group(1), int(m.group(2))
        status, body = http_get(self.host, self.port, "/healthz")
        if status != 200:
            raise BenchError(f"{self.name}: GET /healthz answered {status}: {body!r}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            try:
                self.proc.wait(self.STOP_WAIT)
                self.exit_note = (f"exited {self.proc.returncode} "
                                  f"{time.monotonic() - started:.2f}s after SIGTERM")
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit_note = f"did not stop within {self.STOP_WAIT:.0f}s of SIGTERM: killed"
        elif self.proc is not None and self.exit_note is None:
            self.exit_note = f"had already exited with {self.proc.returncode}"
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def stats(self):
        return proc_stats(self.pid)

    def stderr_tail(self, n=5):
        try:
            with open(self.stderr_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return " | ".join(lines[-n:])
        except OSError:
            return "(no stderr)"

    def log_problems(self, limit=8):
        """(count, first few) of the stderr lines that are not INFO-level."""
        count, first = 0, []
        with open(self.stderr_path, "rb") as f:
            for raw in f:
                if b" INFO " in raw[:64] or b" DEBUG " in raw[:64] or b" TRACE " in raw[:64]:
                    continue
                count += 1
                if len(first) < limit:
                    first.append(raw.decode(errors="replace").rstrip())
        return count, first

    def log_lines(self):
        with open(self.stderr_path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def http_get(host, port, path, timeout=5.0):
    """One HTTP/1.1 GET on a fresh connection: (status, body)."""
    check_loopback(host)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def read_response(sock):
    """Reads one Content-Length-framed response off a blocking socket: (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        body += chunk
    return status, headers, body


# ---------------------------------------------------------------------------------------------
# wrk

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise BenchError(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def process_cpu_seconds(pid):
    """User plus system CPU time a process has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces; the fields after it are fixed.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url, threads, connections, duration, timeout_pad=15, script=None, pid=None):
    """Runs wrk with --latency (and `-s script` if given) and returns its figures (latencies in
    ms) and raw output. With the server's `pid`, also the server's CPU time per answered
    request (`cpu_us`): what a request costs the server, which the noise of a shared machine
    moves far less than requests/s."""
    host = re.match(r"http://([^:/]+)", url).group(1)
    check_loopback(host)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    cmd += ["-s", script] if script else []
    cmd.append(url)
    cpu_before = process_cpu_seconds(pid) if pid else None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout_pad)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + timeout_pad}s")
    cpu = process_cpu_seconds(pid) - cpu_before if pid else None
    out = p.stdout
    if p.returncode != 0:
        raise BenchError(f"wrk failed ({p.returncode}): {p.stderr.strip() or out.strip()}")
    res = {"raw": out, "cmd": " ".join(cmd)}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not m:
        raise BenchError(f"no Requests/sec in wrk output:\n{out}")
    res["rps"] = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else None
    res["cpu_us"] = (cpu / res["requests"] * 1e6) if cpu is not None and res["requests"] else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                    map(int, m.groups()))) if m else {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    return res


def wrk_version():
    p = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    m = re.search(r"wrk (\S+)", p.stdout + p.stderr)
    return m.group(1) if m else "unknown"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------------
# Reports


def git(root, *args):
    p = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else ""


def header(root, title):
    commit = git(root, "rev-parse", "--short", "HEAD") or "unknown"
    if git(root, "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"# {title}", "",
            f"- date: {now}",
            f"- commit: {commit}",
            f"- nproc: {len(os.sched_getaffinity(0))} (load generator and server share them)",
            f"- wrk: {wrk_version()}, kernel: {os.uname().release}",
            ""]


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return out


def mib(kb):
    return f"{kb / 1024:.1f} MiB"


def write_report(path, text):
    """Writes a suite's report to `path` (its folder made if needed) and prints it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(text)


def verdict(ok):
    return "PASS" if ok else "**FAIL**"


def fmt_ms(ms):
    return "n/a" if ms is None else (f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.2f} ms")


def pct(xs, p):
    """The p-th percentile (nearest rank) of a list of numbers."""
    if not xs:
        return None
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def server_log_section(servers):
    """The report's "Server log and shutdown" section: for each (name, problems, exit note) of
    a server, how it stopped and the first of its stderr lines above INFO."""
    out = ["## Server log and shutdown", ""]
    for name, (n, first), exit_note in servers:
        out.append(f"- {name}: {exit_note}; stderr lines above INFO: {n}"
                   + ("" if not first else ":"))
        out += [f"    - `{x}`" for x in first]
    out.append("")
    return out


# ---------------------------------------------------------------------------------------------
# A suite's main


def env_int(name, default):
    return int(os.environ.get(name, default))


def suite_args(description):
    """A suite's command line: the binary under test, where its report goes, the checkout."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the tenantd binary")
    ap.add_argument("--out", required=True, help="where to write the markdown report")
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return ap.parse_args()


def bench_credentials():
    """Passwords for the bench admin and user, random per run; they only ever travel to
    127.0.0.1."""
    return {"admin": secrets.token_urlsafe(18), "user": secrets.token_urlsafe(18)}


def run_suite(name, main):
    """Runs a suite's main: SIGTERM unwinds through the context managers (servers stopped, temp
    dirs removed); a BenchError is one line on stderr and exit status 1."""
    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        main()
    except BenchError as e:
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(1)
