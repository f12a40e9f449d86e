"""The realtime benchmark: WebSocket connections (Pusher protocol v7 on `GET /app/{key}`).

1. The server's footprint with 5,000 idle WebSockets open (each connected, `connection_established`
   received, subscribed to a public channel): RSS, threads, descriptors, and CPU time over a
   20 s window against the same window with none open.
2. Fan-out: 1,000 sockets subscribed to one private chat channel; 50 messages posted one at a
   time (`POST /t/SLUG/api/chats/ID/messages`), each one's arrival at every subscriber timed
   against the send of its POST.

The client is this one Python process, one thread, epoll over every socket, with a minimal
RFC 6455 client (masked client frames) written here. Arrival is the kernel's receive timestamp of
the socket (SO_TIMESTAMPNS), so it does not depend on how fast Python gets round to reading that
socket; the time Python read it is reported beside it.

Run through `bench/run realtime`, which installs wrk and builds the binary first. Directly:

    python3 bench/realtime.py --bin target/release/tenantd --out bench/out/realtime.md

Knobs (environment), see bench/README.md: BENCH_IDLE_CONNS (5000), BENCH_IDLE_CHANNELS (100),
BENCH_CPU_WINDOW (20), BENCH_SUBSCRIBERS (1000), BENCH_MESSAGES (50), BENCH_SPACING_MS (100),
BENCH_LOG_LEVEL ("warn").
"""

import base64
import collections
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from benchlib import env_int  # noqa: E402
import tenancy as tn  # noqa: E402  (accounts, the keep-alive client, report helpers)

TARGET_IDLE_RSS_BYTES = 100_000_000  # with 5,000 idle WebSockets
TARGET_IDLE_CPU_PCT = 1.0            # "near zero": under 1% of one core over the window
TARGET_P99_MS = 50.0                 # POST to arrival at a subscriber
MAX_CONNECTIONS = 6000               # --max-connections: upgraded sockets count against it
SLUG = "rt"                          # the tenant of the chat
ROLE = "admin"                       # the bench user's role there: admins see every chat
OPEN_BATCH = 250                     # handshakes in flight at once while opening
DELIVERY_WAIT = 2.0                  # seconds to wait for one message at every subscriber
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not name it
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def progress(msg):
    print(f"realtime: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# A minimal WebSocket client (RFC 6455): non-blocking sockets, driven by one selector


def mask_frame(opcode, payload):
    """A final client frame: masked, as RFC 6455 5.3 requires of every client frame."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    if n:
        k = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")
    else:
        masked = b""
    return head + key + masked


class WS:
    """One client WebSocket. `state`: handshake, open, closing (we sent a close), closed."""

    __slots__ = ("i", "sock", "buf", "state", "key", "socket_id", "close_code", "eof", "msg",
                 "frag", "subscribed", "errors", "pongs", "late", "got", "t_connect", "t_open",
                 "ts", "http_status")

    def __init__(self, i):
        self.i = i
        self.sock = None
        self.buf = bytearray()
        self.state = "handshake"
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.socket_id = None
        self.close_code = None   # the code of the close frame the server sent, if any
        self.eof = False
        self.frag = None         # a fragmented message being put together: (opcode, bytes)
        self.subscribed = set()
        self.errors = []         # pusher:error / pusher:subscription_error events
        self.pongs = 0
        self.late = 0            # frames that arrived while nothing was expected (idle window)
        self.got = {}            # fan-out: message number -> (kernel arrival ns, read ns)
        self.t_connect = self.t_open = None
        self.ts = None           # kernel receive timestamp (ns, CLOCK_REALTIME) of the last read
        self.http_status = None

    def send(self, opcode, payload):
        self.sock.sendall(mask_frame(opcode, payload))

    def send_json(self, obj):
        self.send(0x1, json.dumps(obj, separators=(",", ":")).encode())


class Client:
    """Many WebSockets to one server, all driven by one epoll selector in this thread."""

    def __init__(self, host, port, key, timestamps=False):
        bl.check_loopback(host)
        self.host, self.port, self.key = host, port, key
        self.timestamps = timestamps
        self.sel = selectors.DefaultSelector()
        self.socks = []
        self.events = collections.Counter()   # pusher event names received
        self.on_event = None                  # fan-out: called with (ws, event dict)
        self.expect_quiet = False             # idle window: any frame is counted as late
        self.failures = collections.Counter()

    def connect(self, ws):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.timestamps:
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(10)
        ws.t_connect = time.monotonic()
        try:
            s.connect((self.host, self.port))
            path = f"/app/{self.key}?protocol=7&client=bench&version=1"
            s.sendall((f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {ws.key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                      .encode())
        except OSError as e:
            s.close()
            ws.state = "closed"
            self.failures[f"connect: {type(e).__name__}: {e}"] += 1
            return
        s.setblocking(False)
        ws.sock = s
        self.sel.register(s, selectors.EVENT_READ, ws)

    def open(self, n, start=0, deadline_s=60):
        """Opens n sockets, OPEN_BATCH handshakes in flight at once; returns them (those that
        failed have state "closed" and a failure counted)."""
        out = [WS(start + k) for k in range(n)]
        deadline = time.monotonic() + deadline_s
        pending = collections.deque(out)
        inflight = set()
        while (pending or inflight) and time.monotonic() < deadline:
            while pending and len(inflight) < OPEN_BATCH:
                ws = pending.popleft()
                self.connect(ws)
                if ws.state == "handshake":
                    inflight.add(ws)
            self.pump(0.5)
            # "upgraded": the 101 came, connection_established not yet.
            inflight = {ws for ws in inflight if ws.state in ("handshake", "upgraded")}
        for ws in inflight:
            self.failures["no connection_established before the deadline"] += 1
            self.drop(ws)
        for ws in pending:
            self.failures["not attempted before the deadline"] += 1
            ws.state = "closed"
        self.socks += out
        return out

    def drop(self, ws):
        if ws.sock is not None:
            try:
                self.sel.unregister(ws.sock)
            except (KeyError, ValueError):
                pass
            ws.sock.close()
            ws.sock = None
        ws.state = "closed"

    def pump(self, timeout):
        """One select: reads whatever is ready and handles it. Returns the number of sockets
        that were ready."""
        ready = self.sel.select(timeout)
        for skey, _ in ready:
            ws = skey.data
            if not isinstance(ws, WS):  # another connection in the loop (the poster)
                ws.readable()
                continue
            try:
                if self.timestamps:
                    data, anc, _, _ = ws.sock.recvmsg(65536, socket.CMSG_SPACE(16))
                    ws.ts = None
                    for level, typ, d in anc:
                        if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(d) >= 16:
                            sec, ns = struct.unpack("qq", d[:16])
                            ws.ts = sec * 1_000_000_000 + ns
                else:
                    data = ws.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                self.failures[f"read: {type(e).__name__}"] += 1
                self.drop(ws)
                continue
            if not data:
                ws.eof = True
                if ws.state not in ("closing", "closed-frame", "closed"):
                    self.failures["closed by the server without a close frame"] += 1
                self.drop(ws)
                continue
            ws.buf += data
            self.parse(ws)
        return len(ready)

    def parse(self, ws):
        if ws.state == "handshake":
            end = ws.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(ws.buf[:end]).decode("latin-1").split("\r\n")
            del ws.buf[:end + 4]
            try:
                ws.http_status = int(head[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                ws.http_status = 0
            headers = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            accept = base64.b64encode(hashlib.sha1(ws.key.encode() + WS_GUID).digest()).decode()
            if ws.http_status != 101:
                self.failures[f"handshake answered {ws.http_status}"] += 1
                self.drop(ws)
                return
            if headers.get("sec-websocket-accept") != accept:
                self.failures["wrong Sec-WebSocket-Accept"] += 1
                self.drop(ws)
                return
            ws.state = "upgraded"
        buf = ws.buf
        pos = 0
        while ws.sock is not None:
            if len(buf) - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            n, hl = b1 & 0x7F, 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, hl = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, hl = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if b1 & 0x80:
                self.failures["a masked frame from the server"] += 1
                self.drop(ws)
                return
            if len(buf) - pos < hl + n:
                break
            payload = bytes(buf[pos + hl:pos + hl + n])
            pos += hl + n
            self.frame(ws, b0 & 0x80, b0 & 0x0F, payload)
        del buf[:pos]

    def frame(self, ws, fin, opcode, payload):
        if opcode == 0x0:  # continuation
            if ws.frag is None:
                self.failures["a continuation frame with nothing to continue"] += 1
                return
            ws.frag = (ws.frag[0], ws.frag[1] + payload)
            if not fin:
                return
            opcode, payload = ws.frag
            ws.frag = None
        elif opcode in (0x1, 0x2) and not fin:
            ws.frag = (opcode, payload)
            return
        if opcode == 0x1:
            self.text(ws, payload)
        elif opcode == 0x8:
            ws.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if ws.state != "closing":
                # Closed by the server: answer it, as RFC 6455 asks.
                self.failures[f"closed by the server: {ws.close_code}"] += 1
                try:
                    ws.send(0x8, payload[:2])
                except OSError:
                    pass
            ws.state = "closed-frame"
        elif opcode == 0x9:  # a WebSocket ping: answer it
            try:
                ws.send(0xA, payload)
            except OSError:
                pass
            self.events["(websocket ping)"] += 1
        elif opcode == 0xA:
            self.events["(websocket pong)"] += 1
        else:
            self.failures[f"unexpected opcode {opcode}"] += 1

    def text(self, ws, payload):
        if self.expect_quiet:
            ws.late += 1
        try:
            ev = json.loads(payload)
            name = ev.get("event")
        except (ValueError, AttributeError):
            self.failures["a text frame that is not a JSON event"] += 1
            return
        self.events[name] += 1
        if name == "pusher:connection_established":
            try:
                ws.socket_id = json.loads(ev["data"])["socket_id"]
            except (ValueError, KeyError, TypeError):
                self.failures["connection_established without a socket_id"] += 1
                return
            ws.t_open = time.monotonic()
            ws.state = "open"
        elif name == "pusher_internal:subscription_succeeded":
            ws.subscribed.add(ev.get("channel"))
        elif name in ("pusher:error", "pusher:subscription_error"):
            ws.errors.append(payload.decode(errors="replace")[:200])
        elif name == "pusher:pong":
            ws.pongs += 1
        elif self.on_event is not None:
            self.on_event(ws, ev)

    def wait(self, done, deadline_s):
        """Pumps until done() or the deadline; True if done."""
        deadline = time.monotonic() + deadline_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.2))
        return True

    def close_all(self, socks, deadline_s=15):
        """Sends a close frame (1000) on each open socket, waits for the server's close frame and
        its end of stream, then closes. Returns the close codes the server answered with."""
        for ws in socks:
            if ws.sock is not None and ws.state in ("open", "upgraded"):
                try:
                    ws.send(0x8, struct.pack("!H", 1000) + b"bench done")
                    ws.state = "closing"
                except OSError:
                    self.failures["close: write failed"] += 1
                    self.drop(ws)
        self.wait(lambda: all(ws.sock is None for ws in socks), deadline_s)
        codes = collections.Counter()
        for ws in socks:
            if ws.sock is not None:
                self.failures["close: no end of stream from the server in time"] += 1
                self.drop(ws)
            codes[ws.close_code if ws.close_code is not None else "none"] += 1
        return codes


# ---------------------------------------------------------------------------------------------
# /proc readings


def ctx_switches(pid):
    """Context switches summed over a process's threads (each is a wake-up or a preemption)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_window(srv, seconds):
    """Server CPU time over `seconds`, with RSS sampled every second (peak), and our own CPU."""
    t0, c0, x0 = time.monotonic(), bl.process_cpu_seconds(srv.pid), ctx_switches(srv.pid)
    me0 = os.times()
    peak = srv.stats()["rss_kb"]
    while time.monotonic() - t0 < seconds:
        time.sleep(min(1.0, seconds - (time.monotonic() - t0)))
        peak = max(peak, srv.stats()["rss_kb"])
    secs = time.monotonic() - t0
    c1, x1, me1 = bl.process_cpu_seconds(srv.pid), ctx_switches(srv.pid), os.times()
    cpu = c1 - c0
    return {"secs": secs, "cpu_s": cpu, "pct": 100 * cpu / secs, "switches": x1 - x0,
            "peak_kb": peak, "client_cpu_s": (me1.user + me1.system) - (me0.user + me0.system)}


# ---------------------------------------------------------------------------------------------
# Setup: credentials, a tenant, the bench user (admin member), a chat


def setup(binary, srv, creds):
    out = tn.tenantd_cli(binary, srv.data_dir, "realtime", "credentials", "--json")
    try:
        rt = json.loads(out)
        key = rt["key"]
    except (ValueError, KeyError, TypeError):
        raise bl.BenchError(f"`tenantd realtime credentials --json`: no key in {out[:200]!r}")
    steps = [("just started", srv.stats()["rss_kb"])]
    admin = tn.admin_session(binary, srv, creds)
    steps.append(("admin signed in", srv.stats()["rss_kb"]))
    prov = tn.provision(srv, admin, [SLUG], 1)
    if prov["failures"]:
        raise bl.BenchError(f"creating tenant {SLUG} failed: {prov['failures']}")
    tn.add_bench_user(binary, srv.data_dir, creds, role=ROLE)  # the server is idle
    token = tn.user_session(srv, creds)
    steps.append(("tenant made, user signed in", srv.stats()["rss_kb"]))
    conn = tn.Conn(srv.host, srv.port)
    try:
        auth = [("Authorization", f"Bearer {token}")]
        status, body, _ = conn.request("GET", "/api/me", headers=auth)
        if status != 200:
            raise bl.BenchError(f"GET /api/me: {status}")
        tenant_id = next((m["tenant_id"] for m in json.loads(body)["memberships"]
                          if m["slug"] == SLUG), None)
        if tenant_id is None:
            raise bl.BenchError(f"GET /api/me: no membership in {SLUG}")
        status, body, _ = conn.request(
            "POST", f"/t/{SLUG}/api/chats",
            json.dumps({"title": "bench", "kind": "group", "participant_ids": []}).encode(),
            auth + [("Content-Type", "application/json")])
        if status != 201:
            raise bl.BenchError(f"creating the chat: {status}: {body[:200]!r}")
        chat_id = json.loads(body)["id"]
    finally:
        conn.close()
    steps.append(("chat made", srv.stats()["rss_kb"]))
    return {"key": key, "token": token, "tenant_id": tenant_id, "chat_id": chat_id,
            "rss_steps": steps,
            "channel": f"private-company.{tenant_id}.chat.{chat_id}"}


# ---------------------------------------------------------------------------------------------
# 1. Idle connections


def idle(srv, ctx, knobs):
    n, window, nch = knobs["idle"], knobs["window"], knobs["channels"]
    res = {"n": n, "channels": nch}
    time.sleep(1)
    res["base"] = srv.stats()
    progress(f"1. baseline: {window}s CPU window with no WebSocket open ...")
    res["base_cpu"] = cpu_window(srv, window)

    progress(f"1. opening {n} WebSockets ...")
    cl = Client(srv.host, srv.port, ctx["key"])
    lo0 = bl.listen_overflows()
    t0 = time.monotonic()
    socks = cl.open(n)
    res["open_secs"] = time.monotonic() - t0
    res["overflows"] = bl.listen_overflows() - lo0
    opened = [ws for ws in socks if ws.state == "open"]
    res["opened"] = len(opened)
    res["after_open"] = srv.stats()

    t0 = time.monotonic()
    for ws in opened:
        ws.send_json({"event": "pusher:subscribe",
                      "data": {"channel": f"bench-idle-{ws.i % nch}"}})
    cl.wait(lambda: all(ws.subscribed or ws.sock is None for ws in opened), 30)
    res["sub_secs"] = time.monotonic() - t0
    res["subscribed"] = sum(1 for ws in opened if ws.subscribed)
    res["sub_errors"] = sum(len(ws.errors) for ws in opened)

    time.sleep(1)  # let the server settle after the burst
    res["start"] = srv.stats()
    progress(f"1. {res['subscribed']} subscribed; {window}s CPU window ...")
    cl.expect_quiet = True
    res["cpu"] = cpu_window(srv, window)
    cl.pump(0)  # anything that arrived during the window is counted as late
    while cl.pump(0):
        pass
    cl.expect_quiet = False
    res["end"] = srv.stats()
    res["late"] = sum(ws.late for ws in opened)
    res["alive_before_ping"] = sum(1 for ws in opened if ws.sock is not None)

    # Every socket is still served: pusher:ping on each, a pusher:pong back on each.
    t0 = time.monotonic()
    live = [ws for ws in opened if ws.sock is not None]
    for ws in live:
        try:
            ws.send_json({"event": "pusher:ping", "data": {}})
        except OSError:
            cl.failures["ping: write failed"] += 1
    cl.wait(lambda: all(ws.pongs or ws.sock is None for ws in live), 30)
    res["pongs"] = sum(1 for ws in live if ws.pongs)
    res["ping_secs"] = time.monotonic() - t0

    progress("1. closing them ...")
    t0 = time.monotonic()
    res["close_codes"] = cl.close_all(socks)
    res["close_secs"] = time.monotonic() - t0
    # The server drops a socket once it has our end of stream; wait for its descriptors.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and srv.stats()["fds"] > res["base"]["fds"] + 5:
        time.sleep(0.2)
    res["after"] = srv.stats()
    res["failures"] = dict(cl.failures)
    res["events"] = dict(cl.events)
    # A new WebSocket still opens afterwards.
    probe = Client(srv.host, srv.port, ctx["key"])
    ws = probe.open(1)[0]
    res["reopen"] = ws.state == "open"
    probe.close_all([ws])
    return res


# ---------------------------------------------------------------------------------------------
# 2. Fan-out to one chat channel


class Poster:
    """POSTs chat messages on one keep-alive connection that sits in the client's selector, so
    the answer is read while the deliveries are."""

    def __init__(self, host, port, token, path):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host, self.port, self.token, self.path = host, port, token, path
        self.buf = bytearray()
        self.answers = []  # (status, message id or None, ms from send to the whole answer)
        self.t_send = None

    def post(self, body):
        data = json.dumps({"body": body}).encode()
        req = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
               f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data
        self.t_send = time.perf_counter()
        t_real = time.time_ns()
        self.sock.sendall(req)
        return t_real

    def readable(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise bl.BenchError("the server closed the posting connection")
        self.buf += chunk
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        if len(self.buf) < end + 4 + length:
            return
        ms = (time.perf_counter() - self.t_send) * 1000
        body = bytes(self.buf[end + 4:end + 4 + length])
        del self.buf[:end + 4 + length]
        status = int(head[0].split(" ", 2)[1])
        try:
            mid = json.loads(body).get("id") if status == 201 else None
        except ValueError:
            mid = None
        self.answers.append((status, mid, ms))


def fanout(srv, ctx, knobs):
    n, count, spacing = knobs["subs"], knobs["messages"], knobs["spacing_ms"] / 1000
    channel = ctx["channel"]
    res = {"n": n, "count": count, "spacing_ms": knobs["spacing_ms"], "channel": channel}
    res["before"] = srv.stats()
    progress(f"2. opening {n} WebSockets and authorizing each for the chat channel ...")
    cl = Client(srv.host, srv.port, ctx["key"], timestamps=True)
    socks = [ws for ws in cl.open(n) if ws.state == "open"]
    res["opened"] = len(socks)

    # POST /broadcasting/auth for each socket (one login token for all), then subscribe.
    conn = tn.Conn(srv.host, srv.port)
    auth_ms, auth_bad = [], collections.Counter()
    try:
        for ws in socks:
            form = (f"socket_id={ws.socket_id}&channel_name={channel}").encode()
            status, body, ms = conn.request(
                "POST", "/broadcasting/auth", form,
                [("Authorization", f"Bearer {ctx['token']}"),
                 ("Content-Type", "application/x-www-form-urlencoded")])
            if status != 200:
                auth_bad[status] += 1
                continue
            auth_ms.append(ms)
            ws.send_json({"event": "pusher:subscribe",
                          "data": {"channel": channel, "auth": json.loads(body)["auth"]}})
            cl.pump(0)
        # One refusal, to be sure the auth is not a formality: a chat that does not exist.
        other = f"private-company.{ctx['tenant_id']}.chat.{ctx['chat_id'] + 1000}"
        status, _, _ = conn.request(
            "POST", "/broadcasting/auth",
            f"socket_id={socks[0].socket_id}&channel_name={other}".encode(),
            [("Authorization", f"Bearer {ctx['token']}"),
             ("Content-Type", "application/x-www-form-urlencoded")])
        res["refusal_status"] = status
    finally:
        conn.close()
    res["auth_ms"], res["auth_bad"] = auth_ms, dict(auth_bad)
    cl.wait(lambda: all(channel in ws.subscribed or ws.errors or ws.sock is None
                        for ws in socks), 30)
    subs = [ws for ws in socks if channel in ws.subscribed]
    res["subscribed"] = len(subs)
    res["sub_errors"] = [e for ws in socks for e in ws.errors][:3]
    if not subs:
        raise bl.BenchError(f"no socket could subscribe to {channel}: {res['sub_errors']}")
    res["subscribed_stats"] = srv.stats()

    # Deliveries: message.created on the channel, the body says which message it is.
    sent = {}  # message number -> send time (ns, CLOCK_REALTIME)
    res["other_events"] = collections.Counter()
    res["dupes"] = 0
    delivered = collections.Counter()  # message number -> subscribers that got it

    def on_event(ws, ev):
        now = time.time_ns()
        if ev.get("event") != "message.created" or ev.get("channel") != channel:
            res["other_events"][ev.get("event")] += 1
            return
        try:
            body = json.loads(ev["data"])["message"]["body"]
            k = int(body.rsplit(" ", 1)[1])
        except (ValueError, KeyError, TypeError, IndexError):
            res["other_events"]["message.created (unreadable)"] += 1
            return
        if k in ws.got:
            res["dupes"] += 1
            return
        ws.got[k] = (ws.ts, now)
        delivered[k] += 1

    cl.on_event = on_event
    poster = Poster(srv.host, srv.port, ctx["token"],
                    f"/t/{SLUG}/api/chats/{ctx['chat_id']}/messages")
    cl.sel.register(poster.sock, selectors.EVENT_READ, poster)
    c0, t_start = bl.process_cpu_seconds(srv.pid), time.monotonic()
    for k in range(count + 1):  # message 0 is a warm-up, not counted
        t_real = poster.post(f"bench message {k}")
        sent[k] = t_real
        t_mono = time.monotonic()
        answers = len(poster.answers)
        # A counter, not a scan of every socket: the check runs after every select.
        cl.wait(lambda: len(poster.answers) > answers and delivered[k] >= len(subs),
                DELIVERY_WAIT)
        left = t_mono + spacing - time.monotonic()
        while left > 0:
            cl.pump(left)
            left = t_mono + spacing - time.monotonic()
    cl.wait(lambda: all(delivered[k] >= len(subs) for k in range(count + 1)), 2)
    res["run_secs"] = time.monotonic() - t_start
    res["cpu_s"] = bl.process_cpu_seconds(srv.pid) - c0
    res["after"] = srv.stats()

    arrive, read, spread_k, spread_r, missing, no_ts = [], [], [], [], 0, 0
    for k in range(1, count + 1):
        ks, rs = [], []
        for ws in subs:
            got = ws.got.get(k)
            if got is None:
                missing += 1
                continue
            ts, now = got
            rs.append((now - sent[k]) / 1e6)
            if ts is None:
                no_ts += 1
            else:
                ks.append((ts - sent[k]) / 1e6)
        arrive += ks
        read += rs
        if ks:
            spread_k.append(max(ks) - min(ks))
        if rs:
            spread_r.append(max(rs) - min(rs))
    warm = [(ws.got[0][1] - sent[0]) / 1e6 for ws in subs if 0 in ws.got]
    res.update({"arrive": arrive, "read": read, "spread_k": spread_k, "spread_r": spread_r,
                "missing": missing, "no_ts": no_ts, "warm_max": max(warm) if warm else None,
                "warm_got": len(warm), "answers": poster.answers[1:],
                "warm_answer": poster.answers[:1]})
    res["every"] = missing == 0 and len(poster.answers) == count + 1
    res["all_every"] = sum(1 for ws in subs if all(k in ws.got for k in range(1, count + 1)))
    res["posted_ok"] = sum(1 for a in poster.answers[1:] if a[0] == 201)
    cl.sel.unregister(poster.sock)
    poster.sock.close()
    cl.on_event = None
    res["close_codes"] = cl.close_all(socks)
    res["failures"] = dict(cl.failures)
    res["events"] = dict(cl.events)
    return res


# ---------------------------------------------------------------------------------------------
# Report


def pctl(xs, p):
    return bl.pct(xs, p)


def kb_per_conn(a, b, n):
    return (b["rss_kb"] - a["rss_kb"]) / n if n else 0


def counts(c):
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(c.items(), key=lambda kv: str(kv[0]))) \
        or "none"


def report(root, ctx, idle_res, fan, srv_note, knobs, meta):
    out = bl.header(root, "tenantd benchmark: realtime")
    out.insert(-1, f"- load average (1, 5, 15 min) at start: {meta['load_start']}, "
                   f"at end: {meta['load_end']}")
    out.insert(-1, f"- suite run time: {meta['secs']:.0f} s")
    out += ["One fresh server, `tenantd serve --max-connections "
            f"{MAX_CONNECTIONS}` (upgraded WebSockets count against the HTTP connection cap), "
            f"RUST_LOG={knobs['level']}. The client is this one Python process, one thread, "
            "epoll over every socket, with a minimal RFC 6455 client (masked client frames); "
            "it connects to `GET /app/{key}?protocol=7&client=bench&version=1` with the key "
            "from `tenantd realtime credentials --json`. A socket counts as open once it has "
            "received `pusher:connection_established`.", ""]
    verdicts = []

    # 1 ----------------------------------------------------------------------------------------
    r = idle_res
    if r:
        n = r["n"]
        out += [f"## 1. {n:,} idle WebSockets", "",
                f"Each socket connected, received `connection_established` and subscribed to "
                f"a public channel (`bench-idle-0` ... `bench-idle-{r['channels'] - 1}`, "
                f"{n // max(r['channels'], 1):,} sockets each), then left silent. CPU is "
                "utime + stime of the whole process (`/proc/PID/stat`) over the window, as a "
                "share of one core; context switches are summed over its threads "
                "(`/proc/PID/task/*/status`), each one a wake-up or a preemption.", ""]
        rss_ok = r["start"]["rss_kb"] * 1024 < TARGET_IDLE_RSS_BYTES and \
            r["cpu"]["peak_kb"] * 1024 < TARGET_IDLE_RSS_BYTES
        cpu_ok = r["cpu"]["pct"] < TARGET_IDLE_CPU_PCT
        rows = [["no WebSocket (baseline, after the setup)", bl.mib(r["base"]["rss_kb"]),
                 r["base"]["threads"], r["base"]["fds"],
                 f"{r['base_cpu']['cpu_s']:.2f} s = {r['base_cpu']['pct']:.2f}%",
                 f"{r['base_cpu']['switches'] / r['base_cpu']['secs']:.1f}"],
                [f"{r['opened']:,} open, {r['subscribed']:,} subscribed",
                 f"{bl.mib(r['start']['rss_kb'])} (peak in the window "
                 f"{bl.mib(r['cpu']['peak_kb'])})",
                 r["start"]["threads"], r["start"]["fds"],
                 f"{r['cpu']['cpu_s']:.2f} s = {r['cpu']['pct']:.2f}%",
                 f"{r['cpu']['switches'] / r['cpu']['secs']:.1f}"],
                ["after closing them", bl.mib(r["after"]["rss_kb"]), r["after"]["threads"],
                 r["after"]["fds"], "", ""]]
        out += bl.table(["server", "RSS (VmRSS)", "threads", "fds",
                         f"CPU over {r['cpu']['secs']:.0f} s", "context switches/s"], rows)
        per = kb_per_conn(r["base"], r["start"], r["opened"])
        steps = ctx["rss_steps"]
        out += ["",
                "- the baseline is a server that has done the setup, as any server in use "
                "has: RSS " + ", ".join(f"{what} {bl.mib(kb)}" for what, kb in steps) + ". "
                "Each sign-in runs Argon2id (19 MiB of working memory) on a hashing thread, "
                "and the steps of about that size after each sign-in look like that memory "
                "kept by the allocator afterwards: it is not the WebSockets'.",
                f"- RSS with {r['opened']:,} idle WebSockets: {bl.mib(r['start']['rss_kb'])} = "
                f"{r['start']['rss_kb'] * 1024 / 1e6:.1f} MB, {per:.1f} kB per connection over "
                f"the baseline ({bl.mib(r['start']['rss_kb'] - r['base']['rss_kb'])} for all "
                f"of them); target under {TARGET_IDLE_RSS_BYTES / 1e6:.0f} MB (the whole "
                f"process): {bl.verdict(rss_ok)}. After they closed, RSS stayed at "
                f"{bl.mib(r['after']['rss_kb'])} (freed memory the allocator keeps) while the "
                f"descriptors went back to {r['after']['fds']}.",
                f"- server CPU while they sat idle: {r['cpu']['pct']:.2f}% of one core "
                f"(baseline {r['base_cpu']['pct']:.2f}%); target under "
                f"{TARGET_IDLE_CPU_PCT:g}%: {bl.verdict(cpu_ok)}. This process used "
                f"{r['cpu']['client_cpu_s']:.2f} s of CPU in the window (it only slept).",
                f"- opening: {r['opened']:,} of {n:,} open in {r['open_secs']:.1f} s "
                f"({r['opened'] / r['open_secs']:,.0f}/s, up to {OPEN_BATCH} handshakes in "
                f"flight; RSS right after: {bl.mib(r['after_open']['rss_kb'])}); kernel "
                f"ListenOverflows during it: {r['overflows']}. Subscribing took "
                f"{r['sub_secs']:.1f} s; subscription errors: {r['sub_errors']}.",
                f"- during the window: frames received {r['late']} (none expected: the server "
                f"pings only after 120 s of silence); sockets still open after it: "
                f"{r['alive_before_ping']:,}; a `pusher:ping` on each got "
                f"{r['pongs']:,} `pusher:pong` in {r['ping_secs']:.1f} s.",
                f"- closing: a close frame (1000) from us on each; the server's close codes in "
                f"answer: {counts(r['close_codes'])} ({r['close_secs']:.1f} s). A new WebSocket "
                f"opened afterwards: {'yes' if r['reopen'] else '**no**'}.",
                f"- client-side failures: {counts(r['failures'])}.", ""]
        verdicts += [(f"RSS with {r['opened']:,} idle WebSockets under "
                      f"{TARGET_IDLE_RSS_BYTES / 1e6:.0f} MB", rss_ok),
                     (f"idle CPU under {TARGET_IDLE_CPU_PCT:g}% of a core", cpu_ok)]

    # 2 ----------------------------------------------------------------------------------------
    f = fan
    if f:
        n, count = f["subscribed"], f["count"]
        has_ts = bool(f["arrive"])
        out += [f"## 2. Fan-out: one chat channel, {n:,} subscribers", "",
                f"{f['opened']:,} sockets, each authorized for `private-company.{{tenant}}."
                f"chat.{{id}}` by `POST /broadcasting/auth` (one login token of a user who is "
                f"an `{ROLE}` member of the tenant) and subscribed. Then {count} messages "
                f"`POST /t/{SLUG}/api/chats/{{id}}/messages`, one at a time, each sent "
                f"{f['spacing_ms']} ms after the previous one was sent (after a warm-up "
                "message, not counted), on one keep-alive connection read in the same epoll "
                "loop. Latency = a subscriber's arrival time minus the time just before the "
                "POST was written, both CLOCK_REALTIME on this machine, over every "
                f"delivery ({n:,} × {count}).", "",
                "- **arrival**: the kernel's receive timestamp of the subscriber's socket "
                "(SO_TIMESTAMPNS on loopback: when the server's write reached that socket), "
                "so it does not wait for Python to get round to that socket;",
                "- **read by client**: when this process read it. One Python thread parses "
                f"the frames of {n:,} sockets one after another, so the last socket of a "
                "message is read well after the first: this row is bounded by the client's "
                "own reading speed, not the server's.", ""]
        rows = []
        for label, xs in (("arrival (kernel timestamp)", f["arrive"]),
                          ("read by client", f["read"])):
            if not xs:
                rows.append([label, 0, "n/a", "n/a", "n/a", "n/a", "n/a"])
                continue
            rows.append([label, f"{len(xs):,}", bl.fmt_ms(min(xs)), bl.fmt_ms(pctl(xs, 50)),
                         bl.fmt_ms(pctl(xs, 90)), bl.fmt_ms(pctl(xs, 99)), bl.fmt_ms(max(xs))])
        out += bl.table(["POST → subscriber", "deliveries", "min", "p50", "p90", "p99", "max"],
                        rows)
        primary = f["arrive"] if has_ts else f["read"]
        p99 = pctl(primary, 99)
        lat_ok = p99 is not None and p99 < TARGET_P99_MS and f["every"]
        ans = [a[2] for a in f["answers"]]
        out += ["",
                f"- p99 POST → {'arrival' if has_ts else 'read'}: {bl.fmt_ms(p99)}; target "
                f"under {TARGET_P99_MS:g} ms with every subscriber getting every message: "
                f"{bl.verdict(lat_ok)}.",
                f"- every subscriber got every message: "
                f"{'yes' if f['every'] else '**no**'} ({f['all_every']:,} of {n:,} got all "
                f"{count}; deliveries missing: {f['missing']:,}; duplicates: {f['dupes']}; "
                f"deliveries without a kernel timestamp: {f['no_ts']}).",
                f"- spread within one message, first to last subscriber (median over the "
                f"messages): arrival {bl.fmt_ms(pctl(f['spread_k'], 50))}, read "
                f"{bl.fmt_ms(pctl(f['spread_r'], 50))}. The arrival spread is the server "
                "writing the event to every socket; the read spread is mostly this client.",
                f"- the POSTs themselves: {f['posted_ok']} of {count} answered 201; send to "
                f"whole answer p50 {bl.fmt_ms(pctl(ans, 50))}, max "
                f"{bl.fmt_ms(max(ans) if ans else None)}. Warm-up message: "
                f"{f['warm_got']:,} deliveries, slowest read "
                f"{bl.fmt_ms(f['warm_max'])}.",
                f"- setup: {f['opened']:,} of {f['n']:,} sockets open, {n:,} subscribed; "
                f"`/broadcasting/auth` p50 {bl.fmt_ms(pctl(f['auth_ms'], 50))}, p99 "
                f"{bl.fmt_ms(pctl(f['auth_ms'], 99))}, non-200: {counts(f['auth_bad'])}; "
                f"a chat that does not exist is refused with {f['refusal_status']}"
                + (f"; subscription errors: {f['sub_errors']}" if f["sub_errors"] else "")
                + ".",
                f"- server: {bl.mib(f['before']['rss_kb'])} RSS before, "
                f"{bl.mib(f['subscribed_stats']['rss_kb'])} with the {n:,} subscribed, "
                f"{bl.mib(f['after']['rss_kb'])} after the messages; {f['after']['threads']} "
                f"threads; CPU over the {f['run_secs']:.1f} s of posting: {f['cpu_s']:.2f} s.",
                f"- other events on the channel: {counts(f['other_events'])}; closing: the "
                f"server's close codes in answer to ours: {counts(f['close_codes'])}; "
                f"client-side failures: {counts(f['failures'])}.", ""]
        verdicts.append((f"p99 POST → subscriber under {TARGET_P99_MS:g} ms, all delivered",
                         lat_ok))

    out += bl.server_log_section([(srv_note["name"], srv_note["problems"], srv_note["exit"])])
    out += ["## Verdicts", ""]
    out += [f"- {label}: {bl.verdict(ok)}" for label, ok in verdicts]
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------


def main():
    a = bl.suite_args(__doc__)

    knobs = {
        "idle": env_int("BENCH_IDLE_CONNS", 5000),
        "channels": max(1, env_int("BENCH_IDLE_CHANNELS", 100)),
        "window": env_int("BENCH_CPU_WINDOW", 20),
        "subs": env_int("BENCH_SUBSCRIBERS", 1000),
        "messages": max(1, env_int("BENCH_MESSAGES", 50)),
        "spacing_ms": env_int("BENCH_SPACING_MS", 100),
        "level": os.environ.get("BENCH_LOG_LEVEL", "warn"),
    }
    if knobs["idle"] + 100 > MAX_CONNECTIONS or knobs["subs"] + 100 > MAX_CONNECTIONS:
        raise bl.BenchError(f"at most {MAX_CONNECTIONS - 100} sockets per part")
    creds = bl.bench_credentials()
    started = time.monotonic()
    meta = {"load_start": bl.loadavg()}
    # Our sockets, plus slack; the server raises its own limit to the hard one.
    bl.raise_fd_limit(max(knobs["idle"], knobs["subs"]) + 256)
    name = f"realtime server RUST_LOG={knobs['level']}"
    with bl.Server(a.bin, rust_log=knobs["level"], name=name,
                   # Every socket comes from 127.0.0.1: no per-address share, and every
                   # connection may be a WebSocket.
                   args=["--max-connections", str(MAX_CONNECTIONS),
                         "--max-client-connections", str(MAX_CONNECTIONS),
                         "--max-websockets", str(MAX_CONNECTIONS)]) as srv:
        progress("setup: credentials, a tenant, the bench user, a chat ...")
        ctx = setup(a.bin, srv, creds)
        idle_res = idle(srv, ctx, knobs) if knobs["idle"] > 0 else None
        fan = fanout(srv, ctx, knobs) if knobs["subs"] > 0 else None
        problems = srv.log_problems()
    srv_note = {"name": name, "exit": srv.exit_note, "problems": problems}
    meta["load_end"] = bl.loadavg()
    meta["secs"] = time.monotonic() - started
    text = report(a.root, ctx, idle_res, fan, srv_note, knobs, meta)
    bl.write_report(a.out, text)


if __name__ == "__main__":
    bl.run_suite("realtime", main)
