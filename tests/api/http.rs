//! The HTTP layer against raw TCP: limits, framing, keep-alive, pipelining, 100-continue, HEAD,
//! panics, the connection cap, slowloris, the upgrade and streaming hooks, shutdown.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use tenantd::http::{self, Match, Request, Response, Router};

use crate::support::{eventually, spawn_serve, Client, TestServer};

type Route = Box<dyn Fn(&Request) -> Response + Send + Sync>;

/// A handler with the routes these tests need, built on the real router.
struct TestApp {
    router: Router<Route>,
}

impl http::Handler for TestApp {
    fn body_limit(&self, req: &Request) -> Option<http::BodyLimit> {
        if req.path == "/limit-panics" {
            panic!("body_limit failed");
        }
        match self.router.find(&req.method, &req.path) {
            Match::Found(route, _) => route.body_limit,
            _ => None,
        }
    }

    fn handle(&self, req: &Request, _: &mut dyn std::any::Any) -> Response {
        match self.router.find(&req.method, &req.path) {
            Match::Found(route, _) => (route.handler)(req),
            Match::MethodNotAllowed(allow) => {
                Response::error(405, "method_not_allowed", "no").with_header("Allow", allow)
            }
            Match::NotFound => Response::error(404, "not_found", "no such resource"),
        }
    }
}

/// Lets a test hold a handler (`/stream`, `/gated`) until it says so, and know when it started.
struct Gate {
    release: Sender<()>,
    started: Receiver<()>,
}

fn test_app() -> (TestApp, Gate) {
    let (release, wait): (Sender<()>, Receiver<()>) = crossbeam_channel::unbounded();
    let (started_tx, started) = crossbeam_channel::unbounded::<()>();
    let wait = Mutex::new(wait);
    let gated_wait = wait.lock().unwrap().clone();
    let mut r: Router<Route> = Router::new();
    r.add(
        "GET",
        "/hello",
        Box::new(|_| Response::new(200, "text/plain", "hello")),
    );
    r.add(
        "GET",
        "/word/{w}",
        Box::new(|req| {
            let w = req.path.rsplit('/').next().unwrap_or_default().to_string();
            Response::new(200, "text/plain", w)
        }),
    );
    r.add(
        "POST",
        "/echo",
        Box::new(|req| Response::new(200, "application/octet-stream", req.body.clone())),
    );
    r.add(
        "POST",
        "/small",
        Box::new(|req| Response::new(200, "text/plain", req.body.clone())),
    )
    .body_limit(10);
    // Streamed: reads the body as it comes and answers its length and a checksum, or the
    // body's error; `?refuse` answers 401 without reading a byte.
    r.add(
        "POST",
        "/upload",
        Box::new(|req| {
            if req.query == "refuse" {
                return Response::error(401, "unauthenticated", "no");
            }
            let body = req.body_stream.as_ref().expect("a streamed route");
            let (mut len, mut sum, mut buf) = (0u64, 0u64, [0u8; 4096]);
            loop {
                match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        len += n as u64;
                        sum = buf[..n]
                            .iter()
                            .fold(sum, |s, &b| s.wrapping_mul(31) + b as u64);
                    }
                    Err(e) => {
                        let r = http::body_error(&e).expect("a client's fault");
                        return Response::error(r.status(), r.code(), &r.message());
                    }
                }
            }
            Response::json(200, &serde_json::json!({"len": len, "sum": sum}))
        }),
    )
    .streamed_body(1 << 20);
    r.add("GET", "/panic", Box::new(|_| panic!("boom")));
    r.add(
        "GET",
        "/client",
        Box::new(|req| Response::new(200, "text/plain", req.client_ip.to_string())),
    );
    r.add(
        "GET",
        "/query",
        Box::new(|req| {
            let pairs = req.query_pairs();
            Response::json(200, &serde_json::json!({"path": req.path, "query": pairs}))
        }),
    );
    r.add(
        "GET",
        "/gated",
        Box::new(move |_| {
            let _ = started_tx.send(());
            let _ = gated_wait.recv_timeout(Duration::from_secs(60));
            Response::new(200, "text/plain", "gated")
        }),
    );
    r.add(
        "GET",
        "/big",
        Box::new(|_| Response::new(200, "application/octet-stream", vec![b'x'; 8 << 20])),
    );
    r.add(
        "GET",
        "/stream204",
        Box::new(|_| Response::stream(204, "text/plain", Box::new(|out| out.write_all(b"zz")))),
    );
    r.add(
        "POST",
        "/limit-panics",
        Box::new(|_| Response::new(200, "text/plain", "unreachable")),
    );
    r.add(
        "GET",
        "/stream",
        Box::new(move |_| {
            let wait = wait.lock().unwrap().clone();
            Response::stream(
                200,
                "text/event-stream",
                Box::new(move |out| {
                    out.write_all(b"data: first\n\n")?;
                    // The test releases us only after it has read the first event, which
                    // proves the event left before the response was complete.
                    let _ = wait.recv_timeout(Duration::from_secs(60));
                    out.write_all(b"data: second\n\n")
                }),
            )
        }),
    );
    r.add(
        "GET",
        "/upgrade",
        Box::new(|req| {
            if req.header("upgrade") != Some("echo") {
                return Response::error(400, "bad_request", "Upgrade: echo expected");
            }
            Response::upgrade(
                vec![
                    ("Upgrade".into(), "echo".into()),
                    ("Connection".into(), "Upgrade".into()),
                ],
                Box::new(|upgraded| {
                    std::thread::spawn(move || {
                        // The slot lives as long as the echo: the cap counts this connection.
                        let http::Upgraded {
                            mut stream,
                            leftover,
                            slot: _slot,
                        } = upgraded;
                        let _ = stream.write_all(&leftover);
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = stream.read(&mut buf) {
                            if n == 0 || stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }),
            )
        }),
    );
    (TestApp { router: r }, Gate { release, started })
}

fn small_config() -> http::Config {
    http::Config {
        workers: 4,
        ..http::Config::default()
    }
}

fn start_with(config: http::Config) -> (TestServer, Gate) {
    let (app, gate) = test_app();
    (TestServer::start(config, Arc::new(app)), gate)
}

fn start() -> TestServer {
    start_with(small_config()).0
}

/// One request whose answer is an error: its status, code, and whether the server closed.
fn refused(server: &TestServer, raw: &[u8]) -> (u16, String, bool) {
    let mut c = server.connect();
    c.try_send(raw);
    let reply = c.reply();
    let code = reply.error_code();
    (reply.status, code, c.is_closed())
}

#[test]
fn framing_and_limit_violations_get_their_status_and_close() {
    let server = start();
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(8 * 1024));
    let long_header = format!(
        "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(8 * 1024)
    );
    let many_headers = format!(
        "GET /hello HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..100)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("request line over 8 KiB", long_target.into_bytes(), 414, "uri_too_long"),
        (
            "header field over 8 KiB",
            long_header.into_bytes(),
            431,
            "header_fields_too_large",
        ),
        (
            "more than 100 header fields",
            many_headers.into_bytes(),
            431,
            "header_fields_too_large",
        ),
        (
            "Content-Length not a number",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4x\r\n\r\nabcd".to_vec(),
            400,
            "bad_request",
        ),
        (
            "Content-Length with a sign",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd".to_vec(),
            400,
            "bad_request",
        ),
        (
            "two different Content-Length",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"
                .to_vec(),
            400,
            "bad_request",
        ),
        (
            "Content-Length with Transfer-Encoding",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"
                .to_vec(),
            400,
            "bad_request",
        ),
        (
            "a transfer coding other than chunked",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            501,
            "not_implemented",
        ),
        (
            "chunked is not the only coding",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
            501,
            "not_implemented",
        ),
        (
            "HTTP/1.1 without Host",
            b"GET /hello HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "two Host headers",
            b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "a bad chunk size",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "garbage instead of a request",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "an unsupported version",
            b"GET /hello HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
            505,
            "http_version_not_supported",
        ),
        (
            "a NUL in the path",
            b"GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "HTTP/1.0 with Transfer-Encoding",
            b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            400,
            "bad_request",
        ),
        (
            "Content-Length padded with a non-ASCII space",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xa05\r\n\r\nhello".to_vec(),
            400,
            "bad_request",
        ),
        (
            "Transfer-Encoding followed by a non-ASCII byte",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\xc2\x85\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
            "bad_request",
        ),
        (
            "a bare LF in chunked framing",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n"
                .to_vec(),
            400,
            "bad_request",
        ),
        (
            "a chunk extension too long",
            format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nX\r\n0\r\n\r\n",
                "a".repeat(1000)
            )
            .into_bytes(),
            400,
            "bad_request",
        ),
        (
            "a failure deciding the body limit",
            b"POST /limit-panics HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nA".to_vec(),
            500,
            "internal_error",
        ),
        (
            "an unknown Expect",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nA"
                .to_vec(),
            417,
            "expectation_failed",
        ),
    ];
    for (name, raw, status, code) in cases {
        let got = refused(&server, &raw);
        assert_eq!(got, (status, code.to_string(), true), "{name}");
    }
}

#[test]
fn exactly_at_the_limits_is_accepted() {
    let server = start();
    // 100 header fields in all (Host included), each line 8 KiB at most.
    let headers: String = (0..99).map(|i| format!("X-{i}: v\r\n")).collect();
    let reply = server.request(&format!("GET /hello HTTP/1.1\r\nHost: x\r\n{headers}\r\n"));
    assert_eq!(reply.status, 200);
    let value = "v".repeat(8 * 1024 - "X-Big: ".len());
    let reply = server.request(&format!(
        "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: {value}\r\n\r\n"
    ));
    assert_eq!(reply.status, 200);
}

#[test]
fn no_second_request_is_parsed_out_of_a_refused_body() {
    let server = start();
    let mut c = server.connect();
    // The smuggling attempt: a proxy that reads `4x` as 4 would forward the GET as a new request.
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4x\r\n\r\nabcdGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(c.reply().status, 400);
    assert!(c.is_closed(), "nothing may follow the 400");
}

#[test]
fn a_body_over_the_limit_gets_413_before_it_is_sent() {
    let server = start();
    let mut c = server.connect();
    // Only the head goes out: the 413 must come without the server waiting for the body.
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n");
    let reply = c.reply();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (413, "payload_too_large")
    );
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(c.is_closed());

    // A route's own limit applies.
    let (status, code, closed) = refused(
        &server,
        b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n01234567890",
    );
    assert_eq!(
        (status, code.as_str(), closed),
        (413, "payload_too_large", true)
    );
    let reply =
        server.request("POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789");
    assert_eq!(reply.status, 200);

    // A chunked body is held to the same limit.
    let mut c = server.connect();
    c.send(b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n");
    assert_eq!(c.reply().status, 413);
    assert!(c.is_closed());
}

#[test]
fn chunked_bodies_are_decoded() {
    let server = start();
    let mut c = server.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = c.reply();
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello, world"));
    // The request after the chunked body is read from the right place.
    assert_eq!(c.reply().text(), "hello");
}

#[test]
fn keep_alive_close_and_http_1_0() {
    let server = start();
    let mut c = server.connect();
    for _ in 0..3 {
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        let reply = c.reply();
        assert_eq!(
            (reply.status, reply.header("connection")),
            (200, Some("keep-alive"))
        );
    }
    c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(c.reply().header("connection"), Some("close"));
    assert!(c.is_closed());

    // HTTP/1.0 closes by default, needs no Host, and may ask for keep-alive.
    let mut c = server.connect();
    c.send(b"GET /hello HTTP/1.0\r\n\r\n");
    assert_eq!(c.reply().text(), "hello");
    assert!(c.is_closed());
    let mut c = server.connect();
    c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.reply().status, 200);
    c.send(b"GET /word/again HTTP/1.0\r\n\r\n");
    assert_eq!(c.reply().text(), "again");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = start();
    let mut c = server.connect();
    let mut batch = Vec::new();
    for w in ["one", "two", "three", "four"] {
        batch.extend_from_slice(format!("GET /word/{w} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    batch.extend_from_slice(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nfive");
    batch.extend_from_slice(b"GET /word/six HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    c.send(&batch);
    for w in ["one", "two", "three", "four", "five", "six"] {
        assert_eq!(c.reply().text(), w);
    }
    assert!(c.is_closed());
}

#[test]
fn expect_100_continue() {
    let server = start();
    let mut c = server.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.head().status, 100);
    c.send(b"hello");
    assert_eq!(c.reply().text(), "hello");

    // Over the limit: 413 at once, no 100.
    let mut c = server.connect();
    c.send(
        b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(c.reply().status, 413);
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |s, &b| s.wrapping_mul(31) + b as u64)
}

#[test]
fn a_streamed_body_reaches_its_handler_whole_in_either_framing() {
    let server = start();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let expected = serde_json::json!({"len": body.len(), "sum": checksum(&body)});
    let mut c = server.connect();
    let mut wire = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    wire.extend_from_slice(&body);
    // A pipelined request behind the body is read from the right place.
    wire.extend_from_slice(b"GET /word/after HTTP/1.1\r\nHost: x\r\n\r\n");
    c.send(&wire);
    assert_eq!(c.reply().json(), expected);
    assert_eq!(c.reply().text(), "after");

    let mut wire =
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(70_001) {
        wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\nGET /word/chunked HTTP/1.1\r\nHost: x\r\n\r\n");
    c.send(&wire);
    assert_eq!(c.reply().json(), expected);
    assert_eq!(c.reply().text(), "chunked");
}

#[test]
fn a_streamed_body_over_its_limit_or_cut_short_is_refused() {
    let server = start();
    // Declared too large: refused before the handler, as for buffered bodies.
    let (status, code, closed) = refused(
        &server,
        format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            (1 << 20) + 1
        )
        .as_bytes(),
    );
    assert_eq!(
        (status, code.as_str(), closed),
        (413, "payload_too_large", true)
    );
    // Chunked past the limit: the handler's read fails with 413 and the connection closes.
    let mut c = server.connect();
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    let piece = vec![b'a'; 300_000];
    for _ in 0..4 {
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(&piece);
        chunk.extend_from_slice(b"\r\n");
        if !c.try_send(&chunk) {
            break;
        }
    }
    let reply = c.reply();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (413, "payload_too_large")
    );
    assert!(c.is_closed());
    // Malformed chunk framing: 400.
    let (status, _, closed) = refused(
        &server,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    );
    assert_eq!((status, closed), (400, true));
    // The client closes its sending side mid-body: a 400, not a 500.
    let mut c = server.connect();
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this");
    c.shutdown_write();
    let reply = c.reply();
    assert_eq!(reply.status, 400, "{}", reply.text());
}

#[test]
fn a_streamed_body_is_asked_for_only_when_its_handler_reads() {
    let server = start();
    // Refused without reading: no 100 Continue, the final answer, and the connection closes
    // (the body the client may still send is never parsed as a request).
    let mut c = server.connect();
    c.send(b"POST /upload?refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let reply = c.reply();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(c.is_closed());
    // Read: 100 Continue first, then the answer.
    let mut c = server.connect();
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(c.head().status, 100);
    c.send(b"hello");
    assert_eq!(c.reply().json()["len"], 5);
}

#[test]
fn a_streamed_body_trickling_in_is_cut_off() {
    let (server, _gate) = start_with(http::Config {
        body_timeout: Duration::from_millis(300),
        ..small_config()
    });
    let mut c = server.connect();
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc");
    // A byte now and then, each within the idle timeout, far below the minimum rate.
    let mut refused = None;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if !c.try_send(b"x") {
            break;
        }
        if let Some(reply) = c.try_reply() {
            refused = Some(reply);
            break;
        }
    }
    let reply = refused.unwrap_or_else(|| c.reply());
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (408, "request_timeout")
    );
}

#[test]
fn streamed_bodies_in_progress_are_capped() {
    let (server, _gate) = start_with(http::Config {
        max_streaming: Some(1),
        ..small_config()
    });
    // The first upload holds its place while its client is slow.
    let mut first = server.connect();
    first.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    let mut second = server.connect();
    let busy = eventually(Duration::from_secs(10), || {
        second.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab");
        let reply = second.reply();
        if reply.status == 503 {
            assert_eq!(reply.error_code(), "server_busy");
            return true;
        }
        second = server.connect();
        false
    });
    assert!(
        busy,
        "a second streamed body while one is in progress gets 503"
    );
    first.send(b"defghij");
    assert_eq!(first.reply().json()["len"], 10);
    // The place is free again.
    let reply = server.request("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab");
    assert_eq!(reply.json()["len"], 2);
}

#[test]
fn one_client_holds_half_the_places_for_streamed_bodies() {
    // Clients told apart by the address a trusted proxy forwards.
    let (server, _gate) = start_with(http::Config {
        max_streaming: Some(2),
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..small_config()
    });
    let from = |client: &str, len: usize, body: &str| {
        format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\n\
             Content-Length: {len}\r\n\r\n{body}"
        )
    };
    // 203.0.113.1's first upload holds its one place while it is slow.
    let mut first = server.connect();
    first.send(from("203.0.113.1", 10, "abc").as_bytes());
    let mut again = server.connect();
    let refused = eventually(Duration::from_secs(10), || {
        again.send(from("203.0.113.1", 2, "ab").as_bytes());
        let reply = again.reply();
        again = server.connect();
        reply.status == 503 && reply.error_code() == "server_busy"
    });
    assert!(
        refused,
        "a second upload of the same client waits for the first"
    );
    // Another client still gets the other place.
    let reply = server.request(&from("203.0.113.2", 2, "ab"));
    assert_eq!(reply.json()["len"], 2);
    first.send(b"defghij");
    assert_eq!(first.reply().json()["len"], 10);
    // The first client's place is free again.
    assert_eq!(
        server.request(&from("203.0.113.1", 2, "ab")).json()["len"],
        2
    );
}

#[test]
fn head_has_headers_and_no_body() {
    let server = start();
    let mut c = server.connect();
    c.send(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = c.reply_to("HEAD");
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("5"))
    );
    // Had a body been sent, this would read it as the next response's status line.
    assert_eq!(c.reply().text(), "hello");
}

#[test]
fn unknown_paths_and_methods_are_json_errors() {
    let server = start();
    let reply = server.request("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (404, "not_found")
    );
    let reply = server.request("DELETE /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
}

#[test]
fn path_and_query_are_decoded() {
    let server = start();
    let reply = server.request("GET /query?a=1&b=two%20words&c=%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n");
    let json = reply.json();
    assert_eq!(json["path"], "/query");
    assert_eq!(
        json["query"],
        serde_json::json!([["a", "1"], ["b", "two words"], ["c", "é"]])
    );
    let reply = server.request("GET /word/caf%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reply.text(), "café");
}

#[test]
fn a_panicking_handler_gets_a_500_and_the_server_goes_on() {
    let server = start();
    let mut c = server.connect();
    c.send(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = c.reply();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (500, "internal_error")
    );
    // Same connection, then a new one: both still served.
    c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.reply().status, 200);
    for _ in 0..8 {
        assert_eq!(
            server
                .request("GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
                .status,
            500
        );
    }
    assert_eq!(
        server
            .request("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        200
    );
}

#[test]
fn forwarded_for_only_from_a_trusted_proxy() {
    let request = "GET /client HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n";
    let server = start();
    assert_eq!(server.request(request).text(), "127.0.0.1");
    let (trusting, _) = start_with(http::Config {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..small_config()
    });
    assert_eq!(trusting.request(request).text(), "203.0.113.7");
}

#[test]
fn the_upgrade_hook_hands_over_the_raw_connection() {
    let server = start();
    let mut c = server.connect();
    // Bytes sent right behind the head belong to the new protocol and must not be lost.
    c.send(
        b"GET /upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nearly",
    );
    let head = c.head();
    assert_eq!(head.status, 101);
    assert_eq!(head.header("upgrade"), Some("echo"));
    assert_eq!(head.header("connection"), Some("Upgrade"));
    let mut got = Vec::new();
    while got.len() < 5 {
        got.extend(c.read_some());
    }
    assert_eq!(got, b"early");
    c.send(b"ping");
    assert_eq!(c.read_some(), b"ping");
}

#[test]
fn upgraded_connections_count_against_the_cap_until_dropped() {
    let config = http::Config {
        max_connections: 2,
        head_timeout: Duration::from_millis(300),
        ..small_config()
    };
    let (server, _) = start_with(config.clone());
    let upgrade =
        b"GET /upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n";
    let mut first = server.connect();
    first.send(upgrade);
    assert_eq!(first.head().status, 101);
    let mut second = server.connect();
    second.send(upgrade);
    assert_eq!(second.head().status, 101);
    assert_eq!(server.connect().reply().status, 503);
    // Past the head timeout the echo still works: the HTTP layer no longer times it. The
    // witness is an idle connection to a server with the same timeout, made after the upgrades:
    // once it is closed, the upgraded ones are older than the timeout too.
    let (witness_server, _) = start_with(config);
    let mut witness = witness_server.connect();
    assert!(witness.is_closed_within(Duration::from_secs(10)));
    second.send(b"still here");
    assert_eq!(second.read_some(), b"still here");
    // Closing one upgraded connection ends its echo thread, which drops the slot.
    drop(first);
    assert!(eventually(Duration::from_secs(5), || {
        let mut c = server.connect();
        c.try_send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        c.try_reply().is_some_and(|r| r.status == 200)
    }));
}

#[test]
fn the_streaming_hook_sends_each_write_as_it_is_produced() {
    let (server, gate) = start_with(small_config());
    let mut c = server.connect();
    c.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = c.head();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let mut chunks = Vec::new();
    let body = c.chunked_body(|chunk| {
        chunks.push(chunk.to_vec());
        if chunks.len() == 1 {
            // Only now may the handler produce the rest.
            gate.release.send(()).unwrap();
        }
    });
    assert_eq!(
        chunks,
        vec![b"data: first\n\n".to_vec(), b"data: second\n\n".to_vec()]
    );
    assert_eq!(body, b"data: first\n\ndata: second\n\n");
    // The connection stays usable after a streamed answer.
    c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.reply().text(), "hello");
}

#[test]
fn the_connection_cap_answers_503_and_frees_up() {
    let (server, _) = start_with(http::Config {
        max_connections: 5,
        ..small_config()
    });
    let mut held: Vec<Client> = (0..5).map(|_| server.connect()).collect();
    // Make sure all five are registered before the sixth arrives, and each is in the middle of
    // a request body: not a connection the server may close to make room.
    for c in held.iter_mut() {
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.reply().status, 200);
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    }
    let mut sixth = server.connect();
    let reply = sixth.reply();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (503, "over_capacity")
    );
    assert!(sixth.is_closed());

    drop(held.pop());
    assert!(eventually(Duration::from_secs(5), || {
        let mut c = server.connect();
        c.try_send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        c.try_reply().is_some_and(|r| r.status == 200)
    }));
}

#[test]
fn slowloris_clients_hold_no_worker() {
    // A head timeout no run of this test can reach: the tricklers are surely still held while
    // the whole requests are answered (their cut-off is the next test's subject).
    let (server, _) = start_with(http::Config {
        workers: 2,
        head_timeout: Duration::from_secs(3600),
        // All of them come from one address: this test is about the workers, not the share.
        max_per_client: Some(1000),
        ..http::Config::default()
    });
    // 300 clients that trickle a head one byte at a time and never finish it.
    let mut slow: Vec<Client> = (0..300).map(|_| server.connect()).collect();
    for c in slow.iter_mut() {
        c.send(b"G");
    }
    for round in 0..3 {
        for c in slow.iter_mut() {
            c.try_send(b"E");
        }
        // With 300 half-sent heads and only 2 workers, a whole request is still answered.
        let reply = server.request("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(reply.status, 200, "round {round}");
    }
    // And none of them was answered or dropped meanwhile.
    for (i, c) in slow.iter_mut().enumerate() {
        assert!(!c.is_closed_within(Duration::from_millis(1)), "client {i}");
        assert!(c.received_nothing(), "client {i} was answered");
    }
}

#[test]
fn slowloris_clients_are_closed_at_their_head_deadline() {
    let head_timeout = Duration::from_millis(300);
    let (server, _) = start_with(http::Config {
        workers: 2,
        head_timeout,
        max_per_client: Some(1000),
        ..http::Config::default()
    });
    let mut slow: Vec<Client> = (0..300).map(|_| server.connect()).collect();
    for c in slow.iter_mut() {
        c.send(b"G");
    }
    for c in slow.iter_mut() {
        c.try_send(b"E");
    }
    // Every trickler is cut off once its head deadline passes (sweeps run every 250 ms): told
    // why, then closed.
    for (i, c) in slow.iter_mut().enumerate() {
        let reply = c.reply();
        assert_eq!(reply.status, 408, "client {i}");
        assert!(
            c.is_closed_within(Duration::from_secs(5)),
            "client {i} still open"
        );
    }
    // An idle connection that never sends a byte is closed silently.
    let mut idle = server.connect();
    assert!(idle.is_closed_within(Duration::from_secs(10)));
}

#[test]
fn slow_bodies_hold_no_worker_and_time_out() {
    let (server, _) = start_with(http::Config {
        workers: 2,
        body_timeout: Duration::from_secs(3),
        ..small_config()
    });
    // More unfinished bodies than workers, each one partly sent.
    let mut slow: Vec<Client> = (0..6).map(|_| server.connect()).collect();
    for c in slow.iter_mut() {
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    }
    let reply = server.request("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reply.status, 200);
    // A slow body that does finish is served whole.
    slow[0].send(b"defghij");
    assert_eq!(slow[0].reply().text(), "abcdefghij");
    for c in slow.iter_mut().skip(1) {
        let reply = c.reply();
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (408, "request_timeout")
        );
        assert!(c.is_closed());
    }
}

#[test]
fn a_large_answer_is_not_cut_off_by_closing() {
    let server = start();
    let mut c = server.connect();
    // Stray bytes after a `Connection: close` request sit unread in the server's socket; closing
    // over them must not reset the connection before the answer is out.
    c.send(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\r\n\r\n");
    let reply = c.reply();
    assert_eq!((reply.status, reply.body.len()), (200, 8 << 20));
    assert!(c.is_closed());
}

#[test]
fn a_streamed_204_sends_no_body() {
    let server = start();
    let mut c = server.connect();
    c.send(b"GET /stream204 HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = c.reply();
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("transfer-encoding"), None);
    // Had the body gone out, it would be read as the next status line.
    assert_eq!(c.reply().text(), "hello");
}

#[test]
fn shutdown_lets_requests_in_flight_finish() {
    let (mut server, gate) = start_with(small_config());
    let addr = server.addr;
    let mut c = server.connect();
    c.send(b"GET /gated HTTP/1.1\r\nHost: x\r\n\r\n");
    gate.started
        .recv_timeout(Duration::from_secs(10))
        .expect("the handler never started");
    let handle = server.handle.take().unwrap();
    handle.stopper().stop();
    let stopping = std::thread::spawn(move || handle.wait());
    gate.release.send(()).unwrap();
    let reply = c.reply();
    assert_eq!((reply.status, reply.text().as_str()), (200, "gated"));
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(
        stopping.join().unwrap(),
        "shutdown reported requests cut off"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn the_binary_serves_healthz_and_exits_0_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut server = spawn_serve(data.path(), &[], 1);
    let mut c = Client::connect(server.addr);
    c.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let reply = c.reply();
    assert_eq!(reply.json(), serde_json::json!({"status": "ok"}));

    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let mut status = None;
    let exited = eventually(Duration::from_secs(15), || {
        status = server.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(exited, "the server did not exit after SIGTERM");
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

#[test]
fn help_describes_every_serve_option() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for option in [
        "--bind",
        "--data",
        "--workers",
        "--max-connections",
        "--head-timeout",
        "--io-timeout",
        "--body-timeout",
        "--max-body",
        "--trusted-proxy",
        "--shutdown-grace",
    ] {
        assert!(help.contains(option), "{option} missing from serve --help");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("serve"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["serve", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
