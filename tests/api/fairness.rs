//! No one client takes the server: a share of the connections per address, room made at the cap
//! by closing idle and unfinished connections, WebSockets with caps of their own and closed when
//! they subscribe to nothing; and the small hardening of the same layers (security headers,
//! `no-store` on secrets, strict media types, escaped log values, reserved channel names).

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::Duration;

use tenantd::http::{self, Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{ClientRequestBuilder, Message};

use crate::support::{
    auth_form, frame_data, request_to, spawn_app_full, spawn_app_with, Client, TestServer, Ws,
    WS_WAIT,
};

/// Answers `hello` to anything.
struct Hello;

impl http::Handler for Hello {
    fn handle(&self, _: &Request, _: &mut dyn std::any::Any) -> Response {
        Response::new(200, "text/plain", "hello")
    }
}

fn hello_server(config: http::Config) -> TestServer {
    TestServer::start(
        http::Config {
            workers: 2,
            ..config
        },
        Arc::new(Hello),
    )
}

/// A connection from another loopback address (127.0.0.2 and so on): the kernel routes all of
/// 127.0.0.0/8 to this machine.
fn connect_from(source: IpAddr, to: SocketAddr) -> Client {
    let IpAddr::V4(v4) = source else {
        panic!("IPv4 only")
    };
    // SAFETY: a new socket we own, and two plain sockaddr_in values on the stack.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket failed");
        let stream = TcpStream::from_raw_fd(fd);
        let addr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = addr(v4, 0);
        assert_eq!(
            libc::bind(fd, &local as *const _ as *const libc::sockaddr, len),
            0,
            "bind to {source}"
        );
        let SocketAddr::V4(to4) = to else {
            panic!("IPv4 only")
        };
        let remote = addr(*to4.ip(), to4.port());
        assert_eq!(
            libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len),
            0,
            "connect from {source}"
        );
        stream
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let client = Client::from_stream(stream);
    client.stream.set_nodelay(true).unwrap();
    client
}

const HELLO: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// The server's (open connections, connections handed back to wait) as its reactor saw them.
fn counts(server: &TestServer) -> (usize, u64) {
    server.handle.as_ref().expect("running").counts()
}

/// Waits until the reactor has seen `open` connections open: a client's close reaches it a
/// moment after the client let go.
fn wait_open(server: &TestServer, open: usize) {
    assert!(
        crate::support::eventually(Duration::from_secs(10), || counts(server).0 == open),
        "open connections stayed {} instead of {open}",
        counts(server).0
    );
}

/// A served request on a connection that then stays open, idle. Returns once the reactor has
/// it back as idle: the client reads the answer a moment before the worker hands it back.
fn idle_keep_alive(server: &TestServer) -> Client {
    let before = counts(server).1;
    let mut c = server.connect();
    c.send(HELLO);
    assert_eq!(c.reply().status, 200);
    assert!(
        crate::support::eventually(Duration::from_secs(10), || counts(server).1 > before),
        "the connection never came back to the reactor"
    );
    c
}

/// A connection the server has answered once (so it is registered) and that is now in the
/// middle of a request body: not something the server may close to make room.
fn busy_with_a_body(server: &TestServer) -> Client {
    let mut c = idle_keep_alive(server);
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    c
}

#[test]
fn one_address_gets_its_share_and_the_others_are_served() {
    let server = hello_server(http::Config {
        max_connections: 100,
        max_per_client: Some(4),
        ..http::Config::default()
    });
    let mut held: Vec<Client> = (0..4).map(|_| idle_keep_alive(&server)).collect();
    // The fifth from the same address is refused, though the server is far from its cap.
    let mut fifth = server.connect();
    let reply = fifth.reply();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (503, "too_many_connections")
    );
    assert!(fifth.is_closed());
    // Another address is served meanwhile, and the first one's connections still work.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let mut c = connect_from(other, server.addr);
    c.send(HELLO);
    assert_eq!(c.reply().status, 200);
    held[0].send(HELLO);
    assert_eq!(held[0].reply().status, 200);
    // A connection given back frees a place for its address.
    drop(held.pop());
    assert!(crate::support::eventually(Duration::from_secs(5), || {
        let mut c = server.connect();
        c.try_send(HELLO);
        c.try_reply().is_some_and(|r| r.status == 200)
    }));
}

#[test]
fn trusted_proxies_are_held_to_the_cap_alone() {
    let server = hello_server(http::Config {
        max_connections: 100,
        max_per_client: Some(2),
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..http::Config::default()
    });
    let _held: Vec<Client> = (0..10).map(|_| idle_keep_alive(&server)).collect();
}

#[test]
fn at_the_cap_idle_then_unfinished_connections_make_room_before_a_refusal() {
    let server = hello_server(http::Config {
        max_connections: 4,
        ..http::Config::default()
    });
    let mut idle_old = idle_keep_alive(&server);
    let mut idle_new = idle_keep_alive(&server);
    let mut unfinished = server.connect();
    unfinished.send(b"GET / HT");
    let mut body = busy_with_a_body(&server);

    // Each newcomer is served; the connection that goes is the one idle longest, then the
    // other idle one, then the unfinished head (told why); the request in progress stays.
    let mut newcomers = Vec::new();
    for (round, gone) in [&mut idle_old, &mut idle_new].into_iter().enumerate() {
        let c = idle_keep_alive(&server);
        assert!(
            gone.is_closed(),
            "round {round}: the idle connection is open"
        );
        newcomers.push(c);
    }
    // The newcomers are idle now too, and younger than the unfinished head... which is not
    // idle: an idle keep-alive goes first whatever its age.
    let mut c = server.connect();
    c.send(HELLO);
    assert_eq!(c.reply().status, 200);
    assert!(newcomers[0].is_closed(), "the oldest idle newcomer is open");
    newcomers[1].send(HELLO);
    assert_eq!(newcomers[1].reply().status, 200);
    drop(c);
    drop(newcomers);
    wait_open(&server, 2);

    // Only the unfinished head and the body remain evictable or not; fill the rest with bodies.
    let _b2 = busy_with_a_body(&server);
    let _b3 = busy_with_a_body(&server);
    let mut c = server.connect();
    c.send(HELLO);
    assert_eq!(c.reply().status, 200);
    let reply = unfinished.reply();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (503, "over_capacity")
    );
    drop(c);
    wait_open(&server, 3);
    let _b4 = busy_with_a_body(&server);

    // Nothing left to close: a newcomer is refused, the requests in progress finish.
    let mut refused = server.connect();
    let reply = refused.reply();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (503, "over_capacity")
    );
    body.send(b"defghij");
    assert_eq!(body.reply().status, 200);
}

#[test]
fn unfinished_heads_go_from_the_address_holding_the_most_first() {
    let server = hello_server(http::Config {
        max_connections: 4,
        ..http::Config::default()
    });
    let other: IpAddr = "127.0.0.3".parse().unwrap();
    // The oldest unfinished head is from an address with one connection; three younger ones
    // come from another address.
    let mut lone = connect_from(other, server.addr);
    lone.send(b"GET / HT");
    let mut many: Vec<Client> = (0..3).map(|_| server.connect()).collect();
    for c in many.iter_mut() {
        c.send(b"GET / HT");
    }
    let mut c = connect_from("127.0.0.4".parse().unwrap(), server.addr);
    c.send(HELLO);
    assert_eq!(c.reply().status, 200);
    // The crowded address's oldest goes (with a 503 if its first bytes were read by then).
    assert!(many[0].try_reply().is_none_or(|r| r.status == 503));
    lone.send(b"TP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(lone.reply().status, 200, "the lone client is served");
}

// ---- WebSockets ---------------------------------------------------------------------------

/// Reads until the server closes; the close code.
fn close_code(ws: &mut Ws) -> u16 {
    ws.ws.get_ref().set_read_timeout(Some(WS_WAIT)).unwrap();
    loop {
        match ws.ws.read() {
            Ok(Message::Close(Some(frame))) => return frame.code.into(),
            Ok(Message::Close(None)) => return CloseCode::Status.into(),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

/// A WebSocket handshake on `/app/{key}` with extra headers: the socket, or the HTTP status.
fn open_ws(addr: SocketAddr, key: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WS_WAIT)).unwrap();
    let uri = format!("ws://{addr}/app/{key}?protocol=7&client=js&version=8.4.0")
        .parse()
        .unwrap();
    let mut request = ClientRequestBuilder::new(uri);
    for (name, value) in headers {
        request = request.with_header(*name, *value);
    }
    match tungstenite::client::client(request, stream) {
        Ok((ws, _)) => {
            let mut ws = Ws {
                ws,
                socket_id: String::new(),
            };
            let hello = ws.recv_event("pusher:connection_established", None);
            ws.socket_id = frame_data(&hello)["socket_id"].as_str().unwrap().into();
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[test]
fn a_websocket_that_subscribes_to_nothing_is_closed_with_4202() {
    let app = spawn_app_with(|c| c.realtime.subscribe_timeout = Duration::from_millis(300));
    let mut subscribed = app.ws();
    let reply = subscribed.subscribe("news", None, None);
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
    let mut lonely = app.ws();
    assert_eq!(close_code(&mut lonely), 4202);
    // The lonely one was closed after the timeout, which the subscribed one outlived.
    subscribed.assert_nothing_pending();
    // Its last channel left, a socket is lonely again.
    subscribed
        .send(serde_json::json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}));
    assert_eq!(close_code(&mut subscribed), 4202);
}

#[test]
fn websockets_have_caps_of_their_own_in_all_and_per_client() {
    let app = spawn_app_full(
        |c| {
            c.realtime.max_websockets = 3;
            c.realtime.max_websockets_per_client = 2;
        },
        |h| h.trusted_proxies = vec!["127.0.0.1".parse().unwrap()],
    );
    let (_, key, _) = app.app.realtime_credentials();
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    // Behind a trusted proxy, clients are counted by their forwarded address.
    let a1 = open_ws(app.server.addr, &key, &from("203.0.113.1")).unwrap();
    let _a2 = open_ws(app.server.addr, &key, &from("203.0.113.1")).unwrap();
    assert_eq!(
        open_ws(app.server.addr, &key, &from("203.0.113.1")).err(),
        Some(503)
    );
    let _b1 = open_ws(app.server.addr, &key, &from("203.0.113.2")).unwrap();
    // Three in all: a fourth client is refused too.
    assert_eq!(
        open_ws(app.server.addr, &key, &from("203.0.113.3")).err(),
        Some(503)
    );
    // Ordinary requests are still served, and a closed socket gives its place back.
    assert_eq!(app.call("GET", "/healthz", &[], None).status, 200);
    drop(a1);
    assert!(crate::support::eventually(Duration::from_secs(5), || {
        open_ws(app.server.addr, &key, &from("203.0.113.3")).is_ok()
    }));
}

#[test]
fn public_channels_named_like_ours_are_refused() {
    let app = spawn_app_with(|_| {});
    let tenant = app.create_tenant("acme", &[]);
    let id = tenant["id"].as_str().unwrap();
    let mut ws = app.ws();
    for name in [
        format!("company.{id}.orders"),
        format!("company.{id}.chat.1"),
        format!("company.{id}.presence"),
        format!("App.Models.User.{}", app.owner_id),
    ] {
        let reply = ws.subscribe(&name, None, None);
        assert_eq!(
            reply["event"], "pusher:subscription_error",
            "{name}: {reply}"
        );
        assert_eq!(frame_data(&reply)["status"], 403, "{name}");
    }
    let reply = ws.subscribe("news", None, None);
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
}

// ---- Headers, media types, the log --------------------------------------------------------

#[test]
fn every_answer_has_the_security_headers_and_secrets_are_not_stored() {
    let app = spawn_app_with(|_| {});
    let check = |what: &str, reply: &crate::support::Reply| {
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(
            reply.header("referrer-policy"),
            Some("no-referrer"),
            "{what}"
        );
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{what}");
    };
    check("healthz", &app.call("GET", "/healthz", &[], None));
    check("404", &app.call("GET", "/nope", &[], None));
    // An answer of the HTTP layer itself, before any handler.
    let mut c = app.server.connect();
    c.send(b"GET / HTTP/1.1\r\n\r\n");
    check("400 without Host", &c.reply());

    let login = app.login(crate::support::OWNER_EMAIL, crate::support::OWNER_PASSWORD);
    assert_eq!(login.status, 200);
    check("login", &login);
    assert_eq!(login.header("cache-control"), Some("no-store"));
    let admin = app.call(
        "POST",
        "/api/admin/auth/login",
        &[],
        Some(
            &serde_json::json!({"email": crate::support::ADMIN_EMAIL,
                                "password": crate::support::ADMIN_PASSWORD})
            .to_string(),
        ),
    );
    assert_eq!(admin.status, 200);
    assert_eq!(admin.header("cache-control"), Some("no-store"));
    app.create_tenant("acme", &[]);
    let token = app.as_bearer(
        &app.owner_token,
        "POST",
        "/api/tokens",
        &[],
        Some(serde_json::json!({"name": "ci", "tenant": "acme"})),
    );
    assert_eq!(token.status, 201, "{}", token.text());
    assert!(token.json()["token"].is_string());
    assert_eq!(token.header("cache-control"), Some("no-store"));
    let auth = app.channel_auth(
        &app.owner_token,
        "1.2",
        &format!("private-App.Models.User.{}", app.owner_id),
    );
    assert_eq!(auth.status, 200);
    assert_eq!(auth.header("cache-control"), Some("no-store"));
}

#[test]
fn channel_auth_takes_only_exact_media_types() {
    let app = spawn_app_with(|_| {});
    let channel = format!("private-App.Models.User.{}", app.owner_id);
    let bearer = format!("Bearer {}", app.owner_token);
    let json = serde_json::json!({"socket_id": "1.2", "channel_name": channel}).to_string();
    let post = |ct: &str, body: &str| {
        app.call(
            "POST",
            "/broadcasting/auth",
            &[("Authorization", &bearer), ("Content-Type", ct)],
            Some(body),
        )
    };
    assert_eq!(post("application/json; charset=utf-8", &json).status, 200);
    assert_eq!(
        post(
            "application/x-www-form-urlencoded",
            &auth_form("1.2", &channel)
        )
        .status,
        200
    );
    for other in [
        "application/jsonx",
        "application/json-patch+json",
        "text/plain",
    ] {
        let reply = post(other, &json);
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (415, "unsupported_media_type"),
            "{other}"
        );
    }
    // The same rule for the JSON API.
    let reply = app.call(
        "POST",
        "/api/auth/login",
        &[("Content-Type", "application/jsonx")],
        Some(r#"{"email":"a@b.c","password":"x"}"#),
    );
    assert_eq!(reply.status, 415);
}

#[test]
fn a_newline_in_a_client_value_writes_no_extra_log_line() {
    let data = tempfile::tempdir().unwrap();
    crate::cli::init_data_dir(data.path());
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
            .args(args)
            .arg("--data")
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    cli(&[
        "users",
        "create",
        "--email",
        "ann@example.test",
        "--name",
        "Ann",
        "--password",
        "ann-password-1",
    ]);
    let log = data.path().join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(child.stdout.as_mut().unwrap());
        out.read_line(&mut first).unwrap();
    }
    let addr: SocketAddr = first
        .trim()
        .strip_prefix("tenantd listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let login = request_to(
        addr,
        "POST",
        "/api/auth/login",
        &[],
        Some(&serde_json::json!({"email": "ann@example.test", "password": "ann-password-1"})),
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let bearer = format!("Bearer {}", login.json()["token"].as_str().unwrap());
    let forged = "x\nFORGED 127.0.0.1 GET /admin 200";
    let reply = request_to(
        addr,
        "POST",
        "/broadcasting/auth",
        &[("Authorization", &bearer)],
        Some(&serde_json::json!({"socket_id": "1.2", "channel_name": forged})),
    );
    assert_eq!(reply.status, 403);
    let _ = child.kill();
    let _ = child.wait();
    let mut text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(
        text.contains("unknown channel x\\nFORGED"),
        "the refusal is logged, escaped: {text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "a forged log line: {text}"
    );
}
