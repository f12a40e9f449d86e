"""The outbound webhooks benchmark: deliveries per second to a local receiver.

One server started with --webhooks-allow-private (the receiver is on 127.0.0.1), several tenants,
BENCH_ENDPOINTS endpoints per tenant for `order.created`, pointing at a receiver in this process (HTTP/1.1,
answers 200 at once). Orders are created through the API by a few keep-alive clients, spread
over the tenants; each is one `webhook.deliver` job. Measured:

- deliveries per second: deliveries received / (last delivery received - first order sent);
- the delay from an order's 201 to its delivery at the receiver (p50, p99), matched by order id
  (the payload names it);
- that every delivery came once and verified as from its tenant (the payload's tenant_id).

Run through `bench/run webhooks`, which builds the binary first. Directly:

    python3 bench/webhooks.py --bin target/release/tenantd --out bench/out/webhooks.md

Knobs (environment): BENCH_EVENTS (2000), BENCH_SPREAD (4 tenants), BENCH_CLIENTS (4),
BENCH_WEBHOOK_WORKERS (4 workers on the webhooks queue), BENCH_ENDPOINTS (5 per tenant),
BENCH_LOG_LEVEL ("warn").
"""

import json
import os
import sys
import threading
import time
import socketserver

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from benchlib import env_int  # noqa: E402
import tenancy as tn  # noqa: E402  (accounts, the keep-alive client, parallel)

ORDER = {"title": "Bench order", "customer_name": "Bench Customer", "amount_minor": 1234,
         "currency": "EUR"}
WAIT_SECONDS = 120  # for the last delivery, after the last order


class Receiver:
    """An HTTP receiver on 127.0.0.1:0 that notes when each delivery came."""

    def __init__(self):
        self.lock = threading.Lock()
        self.got = {}  # (tenant_id, order id) -> [monotonic times]
        outer = self

        # bench/http.py shadows the standard library's http package here: a small keep-alive
        # HTTP/1.1 handler on socketserver instead.
        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    length = 0
                    while True:
                        h = self.rfile.readline()
                        if h in (b"\r\n", b"\n", b""):
                            break
                        name, _, value = h.decode("latin-1").partition(":")
                        if name.strip().lower() == "content-length":
                            length = int(value.strip())
                    body = self.rfile.read(length)
                    at = time.monotonic()
                    try:
                        event = json.loads(body)
                        key = (event["data"]["tenant_id"], event["data"]["order"]["id"])
                    except (ValueError, KeyError, TypeError):
                        key = ("?", body[:40])
                    with outer.lock:
                        outer.got.setdefault(key, []).append(at)
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return sum(len(v) for v in self.got.values())

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def measure(binary, creds, knobs):
    receiver = Receiver()
    args = ["--webhooks-allow-private", "--job-workers", f"webhooks={knobs['workers']}"]
    try:
        with bl.Server(binary, rust_log=knobs["level"], args=args, name="webhooks") as srv:
            admin = tn.admin_session(binary, srv, creds)
            slugs = [f"h{i}" for i in range(knobs["spread"])]
            prov = tn.provision(srv, admin, slugs, knobs["clients"])
            if prov["failures"]:
                raise bl.BenchError(f"creating the tenants failed: {prov['failures']}")
            tn.add_bench_user(binary, srv.data_dir, creds, role="admin")
            token = tn.user_session(srv, creds)
            auth = [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")]
            conn = tn.Conn(srv.host, srv.port)
            tenant_ids = {}
            for slug in slugs:
                for j in range(knobs["endpoints"]):
                    hook = {"url": f"http://127.0.0.1:{receiver.port}/{slug}/{j}",
                            "events": ["order.created"]}
                    status, body, _ = conn.request("POST", f"/t/{slug}/api/webhook-endpoints",
                                                   json.dumps(hook).encode(), auth)
                    if status != 201:
                        raise bl.BenchError(f"registering an endpoint answered {status}: "
                                            f"{body[:200]}")
                status, body, _ = conn.request("GET", f"/t/{slug}/api/tenant", None, auth)
                tenant_ids[slug] = json.loads(body)["id"]
            conn.close()

            sent = {}  # (tenant_id, order id) -> monotonic time of the 201
            lock = threading.Lock()

            def one(conn, k):
                slug = slugs[k % len(slugs)]
                body = json.dumps(dict(ORDER, title=f"Bench order {k}")).encode()
                status, rbody, ms = conn.request("POST", f"/t/{slug}/api/orders", body, auth)
                if status != 201:
                    return False, ms, f"status {status}"
                with lock:
                    sent[(tenant_ids[slug], json.loads(rbody)["id"])] = time.monotonic()
                return True, ms, None

            tn.progress(f"webhooks: {knobs['events']} orders over {len(slugs)} tenants")
            started = time.monotonic()
            made = tn.parallel(srv, range(knobs["events"]), knobs["clients"], one)
            created = len(sent)
            deadline = time.monotonic() + WAIT_SECONDS
            while receiver.count() < created * knobs["endpoints"] and time.monotonic() < deadline:
                time.sleep(0.05)
            with receiver.lock:
                got = {k: list(v) for k, v in receiver.got.items()}
            stats = srv.stats()
    finally:
        receiver.close()
    times = [t for ts in got.values() for t in ts]
    delays = [(t - at) * 1000 for k, at in sent.items() for t in got.get(k, [])]
    return {
        "created": created,
        "expected": created * knobs["endpoints"],
        "create_failures": made["failures"],
        "create_secs": made["secs"],
        "delivered": sum(len(v) for k, v in got.items() if k in sent),
        "duplicates": sum(max(0, len(v) - knobs["endpoints"]) for v in got.values()),
        "strays": sum(1 for k in got if k not in sent),
        "secs": (max(times) - started) if times else None,
        "delays": delays,
        "rss_kb": stats.get("rss_kb"),
    }


def report(root, res, knobs, meta):
    lines = bl.header(root, "Outbound webhooks: deliveries per second")
    rate = res["delivered"] / res["secs"] if res["secs"] else 0.0
    lines.append(
        f"{knobs['events']} orders created by {knobs['clients']} clients over "
        f"{knobs['spread']} tenants, {knobs['endpoints']} endpoints each (one delivery per "
        f"endpoint per order) on a local receiver; "
        f"{knobs['workers']} workers on the `webhooks` queue; RUST_LOG={knobs['level']}.\n")
    rows = [
        ["deliveries/s", f"{rate:,.0f}"],
        ["orders created/s (API)", f"{res['created'] / res['create_secs']:,.0f}"],
        ["201 to delivery p50", bl.fmt_ms(bl.pct(res["delays"], 50)) if res["delays"] else "-"],
        ["201 to delivery p99", bl.fmt_ms(bl.pct(res["delays"], 99)) if res["delays"] else "-"],
        ["delivered / expected", f"{res['delivered']} / {res['expected']}"],
        ["duplicates, strays", f"{res['duplicates']}, {res['strays']}"],
    ]
    lines.extend(bl.table(["figure", "value"], rows))
    if res["create_failures"]:
        lines.append(f"\nOrder creates that failed: {res['create_failures']}")
    lines.append(f"\nServer RSS afterwards: {bl.mib(res['rss_kb'] or 0)}. "
                 f"Load average {meta['load_start']} -> {meta['load_end']}; "
                 f"{meta['secs']:.0f} s in all.")
    return "\n".join(lines) + "\n"


def main():
    a = bl.suite_args(__doc__)
    knobs = {
        "events": env_int("BENCH_EVENTS", 2000),
        "spread": env_int("BENCH_SPREAD", 4),
        "clients": env_int("BENCH_CLIENTS", 4),
        "workers": env_int("BENCH_WEBHOOK_WORKERS", 4),
        "endpoints": env_int("BENCH_ENDPOINTS", 5),
        "level": os.environ.get("BENCH_LOG_LEVEL", "warn"),
    }
    if knobs["events"] < 1 or knobs["spread"] < 1 or knobs["workers"] < 1:
        raise bl.BenchError("BENCH_EVENTS, BENCH_SPREAD and BENCH_WEBHOOK_WORKERS must be >= 1")
    creds = bl.bench_credentials()
    started = time.monotonic()
    meta = {"load_start": bl.loadavg()}
    res = measure(a.bin, creds, knobs)
    meta["load_end"] = bl.loadavg()
    meta["secs"] = time.monotonic() - started
    bl.write_report(a.out, report(a.root, res, knobs, meta))


if __name__ == "__main__":
    bl.run_suite("webhooks", main)
