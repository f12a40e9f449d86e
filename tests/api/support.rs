//! Test helpers: starting servers on port 0, and a raw HTTP/1.1 client that shows exactly what
//! went over the wire (status, headers, body, and whether the server closed the connection).

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tenantd::http::{self, Handler, ServerHandle};

pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: Option<ServerHandle>,
}

impl TestServer {
    pub fn start(config: http::Config, handler: Arc<dyn Handler>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let handle = http::serve(listener, config, handler).expect("start server");
        TestServer {
            addr: handle.local_addr(),
            handle: Some(handle),
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn request(&self, raw: &str) -> Reply {
        let mut c = self.connect();
        c.send(raw.as_bytes());
        c.reply()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `error.code` of our JSON error shape.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.text()))
            .to_string()
    }
}

pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A client over a socket connected some other way (from another source address, say).
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Ends our sending side: the server sees the end of the stream.
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    /// Sends, tolerating a server that has already answered and closed.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return n;
                }
                // A signal to the test process (a child's exit, say) is no answer: read again.
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return 0,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    fn take_head(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 4);
                return Some(head);
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill() > 0, "connection closed inside a body");
        }
        self.buf.drain(..n).collect()
    }

    fn take_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.fill() > 0, "connection closed inside a chunk line");
        }
    }

    /// Reads one response head and, unless told otherwise, its body.
    pub fn reply(&mut self) -> Reply {
        self.reply_to("GET")
    }

    /// Reads one response to a request of this method (a HEAD answer has no body).
    pub fn reply_to(&mut self, method: &str) -> Reply {
        let head = self
            .take_head()
            .expect("the server closed the connection without answering");
        let mut reply = parse_head(&head);
        let status = reply.status;
        if method == "HEAD" || status < 200 || status == 204 || status == 304 {
            return reply;
        }
        if let Some(n) = reply.header("content-length") {
            let n: usize = n.parse().expect("numeric content-length");
            reply.body = self.take(n);
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            reply.body = self.chunked_body(|_| {});
        } else {
            while self.fill() > 0 {}
            reply.body = std::mem::take(&mut self.buf);
        }
        reply
    }

    /// Reads a chunked body, calling `each` with every chunk as it arrives.
    pub fn chunked_body(&mut self, mut each: impl FnMut(&[u8])) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let size = usize::from_str_radix(self.take_line().trim(), 16).expect("chunk size");
            if size == 0 {
                assert_eq!(self.take_line(), "", "no trailers expected");
                return body;
            }
            let chunk = self.take(size);
            each(&chunk);
            body.extend_from_slice(&chunk);
            assert_eq!(self.take(2), b"\r\n");
        }
    }

    /// Reads only a response head (for streamed and upgraded answers).
    pub fn head(&mut self) -> Reply {
        parse_head(&self.take_head().expect("no response head"))
    }

    /// Bytes already received past the last response, or else whatever arrives next. Panics if
    /// the connection is closed instead.
    pub fn read_some(&mut self) -> Vec<u8> {
        if self.buf.is_empty() {
            assert!(self.fill() > 0, "the connection was closed");
        }
        std::mem::take(&mut self.buf)
    }

    /// One response, or `None` if the server closed without answering.
    pub fn try_reply(&mut self) -> Option<Reply> {
        if self.buf.is_empty() && self.fill() == 0 {
            return None;
        }
        Some(self.reply())
    }

    /// True when the server has closed the connection (EOF or reset) within the timeout, with
    /// nothing more sent.
    pub fn is_closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return self.buf.is_empty(),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return self.buf.is_empty(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(e) => panic!("read failed: {e}"),
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// True when nothing has been received that was not read yet.
    pub fn received_nothing(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn is_closed(&mut self) -> bool {
        self.is_closed_within(Duration::from_secs(5))
    }
}

/// A response head (status line and headers, without the blank line) as a body-less reply.
fn parse_head(head: &str) -> Reply {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    Reply {
        status,
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect(),
        body: Vec::new(),
    }
}

/// Polls `check` until it holds or the timeout passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub const ADMIN_EMAIL: &str = "root@example.test";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// The real application on port 0 with a fresh data directory (zero2prod's `spawn_app`), with a
/// system admin signed in.
pub struct TestApp {
    pub server: TestServer,
    pub app: Arc<tenantd::api::App>,
    pub data: tempfile::TempDir,
    /// The system admin's bearer token.
    pub admin_token: String,
    /// A user made admin of every tenant `create_tenant` makes; `get` uses their token unless
    /// told otherwise.
    pub owner_id: i64,
    pub owner_token: String,
}

pub const OWNER_EMAIL: &str = "owner@example.test";
pub const OWNER_PASSWORD: &str = "owner-password-1";

pub fn spawn_app() -> TestApp {
    spawn_app_with(|_| {})
}

pub fn spawn_app_with(configure: impl FnOnce(&mut tenantd::api::AppConfig)) -> TestApp {
    spawn_app_full(configure, |_| {})
}

/// Like `spawn_app_with`, and the HTTP layer's configuration too (e.g. trusted proxies, so that
/// a test can speak from several client addresses through `X-Forwarded-For`).
pub fn spawn_app_full(
    configure: impl FnOnce(&mut tenantd::api::AppConfig),
    configure_http: impl FnOnce(&mut http::Config),
) -> TestApp {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = tenantd::api::AppConfig {
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    configure(&mut config);
    let (app, _) = tenantd::api::App::open(config).expect("open app");
    let hash = tenantd::auth::password::hash(ADMIN_PASSWORD).unwrap();
    app.catalog
        .create_admin(ADMIN_EMAIL, &hash)
        .expect("create admin");
    let app = Arc::new(app);
    tenantd::api::broadcasting::spawn_watcher(&app);
    let mut http = http::Config {
        workers: 4,
        ..http::Config::default()
    };
    configure_http(&mut http);
    let server = TestServer::start(http, app.clone());
    let mut test = TestApp {
        server,
        app,
        data,
        admin_token: String::new(),
        owner_id: 0,
        owner_token: String::new(),
    };
    let login = test.call(
        "POST",
        "/api/admin/auth/login",
        &[],
        Some(&serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).to_string()),
    );
    assert_eq!(login.status, 200, "admin login: {}", login.text());
    test.admin_token = login.json()["token"].as_str().unwrap().to_string();
    test.owner_id = test.user(OWNER_EMAIL, OWNER_PASSWORD);
    test.owner_token = test.token(OWNER_EMAIL, OWNER_PASSWORD);
    test
}

/// Another node of `first`'s catalog when that catalog is shared (kept on sqld): an app of its
/// own, with its own data directory and HTTP server, configured by `configure` (which must
/// name the same sqld). The admin and the owner are `first`'s: their sessions live in the
/// shared catalog, so their tokens work here too.
pub fn spawn_node(
    first: &TestApp,
    configure: impl FnOnce(&mut tenantd::api::AppConfig),
) -> TestApp {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = tenantd::api::AppConfig {
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    configure(&mut config);
    let (app, _) = tenantd::api::App::open(config).expect("open node");
    assert!(
        app.catalog.is_shared(),
        "a second node needs a shared catalog"
    );
    let app = Arc::new(app);
    tenantd::api::broadcasting::spawn_watcher(&app);
    let http = http::Config {
        workers: 4,
        ..http::Config::default()
    };
    TestApp {
        server: TestServer::start(http, app.clone()),
        app,
        data,
        admin_token: first.admin_token.clone(),
        owner_id: first.owner_id,
        owner_token: first.owner_token.clone(),
    }
}

impl TestApp {
    /// One request; `headers` may override Host (default `localhost`).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        self.server
            .request(&raw_request(method, path, headers, body))
    }

    /// A GET as the owner (see `owner_token`), unless `headers` carry their own Authorization.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let auth = format!("Bearer {}", self.owner_token);
        let mut all = headers.to_vec();
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        {
            all.push(("Authorization", &auth));
        }
        self.call("GET", path, &all, None)
    }

    /// An admin API call with the system admin's token.
    pub fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Reply {
        self.as_bearer(&self.admin_token.clone(), method, path, &[], body)
    }

    /// A call with a bearer token and extra headers.
    pub fn as_bearer(
        &self,
        token: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Reply {
        let auth = format!("Bearer {token}");
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let body = body.map(|b| b.to_string());
        self.call(method, path, &all, body.as_deref())
    }

    /// A user with a password, straight into the catalog.
    pub fn user(&self, email: &str, password: &str) -> i64 {
        let hash = tenantd::auth::password::hash(password).unwrap();
        self.app
            .catalog
            .create_user(&tenantd::catalog::NewUser {
                email: email.into(),
                name: email.split('@').next().unwrap().into(),
                surname: String::new(),
                photo_url: None,
                password_hash: hash,
            })
            .expect("create user")
            .id
    }

    /// Makes a user a member of a tenant (by slug) with a role.
    pub fn join(&self, user_id: i64, slug: &str, role: &str) {
        let tenant = self.app.catalog.by_slug(slug).unwrap().expect("tenant");
        self.app
            .catalog
            .add_member(&tenant.id, user_id, role)
            .expect("add member");
    }

    /// Logs in and returns the whole answer.
    pub fn login(&self, email: &str, password: &str) -> Reply {
        self.call(
            "POST",
            "/api/auth/login",
            &[],
            Some(&serde_json::json!({"email": email, "password": password}).to_string()),
        )
    }

    /// Logs in and returns the bearer token.
    pub fn token(&self, email: &str, password: &str) -> String {
        let reply = self.login(email, password);
        assert_eq!(reply.status, 200, "login {email}: {}", reply.text());
        reply.json()["token"].as_str().unwrap().to_string()
    }

    /// A user who is `role` of the tenant, logged in: their bearer token.
    pub fn member_token(&self, email: &str, slug: &str, role: &str) -> String {
        let id = self.user(email, "member-password-1");
        self.join(id, slug, role);
        self.token(email, "member-password-1")
    }

    /// Creates a tenant through the admin API and returns its record.
    pub fn create_tenant(&self, slug: &str, domains: &[&str]) -> serde_json::Value {
        let reply = self.admin(
            "POST",
            "/api/admin/tenants",
            Some(serde_json::json!({"slug": slug, "name": format!("{slug} Inc"), "domains": domains})),
        );
        assert_eq!(reply.status, 201, "create {slug}: {}", reply.text());
        self.join(self.owner_id, slug, "admin");
        reply.json()
    }

    /// The catalog's file, opened beside the running server (as an operator would).
    pub fn central_db(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.data.path().join("central.db"))
            .expect("open central.db");
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    pub fn tenant_file(&self, id: &str) -> std::path::PathBuf {
        self.data.path().join("tenants").join(format!("{id}.db"))
    }

    /// Runs the real binary against this app's data directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
            .args(args)
            .arg("--data")
            .arg(self.data.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("run tenantd")
    }
}

/// The tenant id `GET /api/tenant` answers, or the status when it fails.
pub fn tenant_id_of(reply: &Reply) -> Result<String, u16> {
    if reply.status != 200 {
        return Err(reply.status);
    }
    Ok(reply.json()["id"].as_str().unwrap_or_default().to_string())
}

/// A `tenantd serve` process on port 0 over a data directory; killed when dropped.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// The first lines it printed, the `listening` line first.
    pub lines: Vec<String>,
}

/// How long `spawn_serve` waits for each line before it kills the process and fails.
pub const SERVE_WAIT: Duration = Duration::from_secs(30);

/// Starts the binary and reads its first `lines` lines of output (at least the URL line). A
/// process that prints nothing for [`SERVE_WAIT`] is killed and fails the test rather than
/// hanging it: the lines are read on a thread that hands them over a channel.
pub fn spawn_serve(data: &std::path::Path, extra: &[&str], lines: usize) -> ServeProcess {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(extra)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start tenantd serve");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let wanted = lines.max(1);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..wanted {
            let mut line = String::new();
            out.read_line(&mut line).expect("read server output");
            if tx.send(line.trim_end().to_string()).is_err() {
                return;
            }
        }
    });
    let mut read = Vec::new();
    for _ in 0..wanted {
        match rx.recv_timeout(SERVE_WAIT) {
            Ok(line) => read.push(line),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tenantd serve: no line {} within {SERVE_WAIT:?} ({e}); read {read:?}",
                    read.len() + 1
                );
            }
        }
    }
    let addr = read[0]
        .strip_prefix("tenantd listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {:?}", read[0]));
    ServeProcess {
        child,
        addr,
        lines: read,
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workspace helpers (chats and orders, `workspace.rs`).
// ---------------------------------------------------------------------------------------------

impl TestApp {
    /// A user who is `role` of the tenant, logged in: their id and bearer token.
    pub fn member(&self, email: &str, slug: &str, role: &str) -> (i64, String) {
        let id = self.user(email, "member-password-1");
        self.join(id, slug, role);
        (id, self.token(email, "member-password-1"))
    }

    /// A custom role on a tenant, made by the owner through `POST /api/roles`: its id.
    pub fn create_role(&self, slug: &str, name: &str, permissions: &[&str]) -> i64 {
        let reply = self.on(
            &self.owner_token.clone(),
            slug,
            "POST",
            "/api/roles",
            Some(serde_json::json!({"name": name, "permissions": permissions})),
        );
        assert_eq!(reply.status, 201, "create role {name}: {}", reply.text());
        int(&reply.json()["id"])
    }

    /// A personal token of the bearer's user for a tenant (slug or id): (id, token).
    pub fn personal_token(&self, bearer: &str, name: &str, tenant: &str) -> (i64, String) {
        let reply = self.as_bearer(
            bearer,
            "POST",
            "/api/tokens",
            &[],
            Some(serde_json::json!({"name": name, "tenant": tenant})),
        );
        expect(&reply, 201, "create a personal token");
        let body = reply.json();
        (int(&body["id"]), text(&body["token"]))
    }

    /// A call with a bearer token on a tenant named by the `/t/{slug}` path prefix.
    pub fn on(
        &self,
        token: &str,
        slug: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Reply {
        self.as_bearer(token, method, &format!("/t/{slug}{path}"), &[], body)
    }
}

/// Signs in on any server (a `spawn_serve` process, say): the `Authorization` header value.
pub fn bearer_on(addr: std::net::SocketAddr, email: &str, password: &str) -> String {
    let reply = request_to(
        addr,
        "POST",
        "/api/auth/login",
        &[],
        Some(&serde_json::json!({"email": email, "password": password})),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    format!("Bearer {}", reply.json()["token"].as_str().unwrap())
}

/// One request on a fresh connection to any server (a `spawn_serve` process, say).
pub fn request_to(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> Reply {
    let body = body.map(|b| b.to_string());
    let mut client = Client::connect(addr);
    client.send(raw_request(method, path, headers, body.as_deref()).as_bytes());
    client.reply()
}

/// A whole request that closes its connection: Host is `localhost` unless `headers` name one,
/// and a body is JSON unless they give its Content-Type.
pub fn raw_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> String {
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        raw.push_str("Host: localhost\r\n");
    }
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            raw.push_str("Content-Type: application/json\r\n");
        }
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("Connection: close\r\n\r\n");
    if let Some(body) = body {
        raw.push_str(body);
    }
    raw
}

// ---------------------------------------------------------------------------------------------
// Real-time helpers (`realtime.rs`): a WebSocket client of `/app/{key}` speaking the Pusher
// protocol (tungstenite over a blocking socket with read timeouts), and channel authorization.
// ---------------------------------------------------------------------------------------------

/// How long a WebSocket read waits before the test fails.
pub const WS_WAIT: Duration = Duration::from_secs(5);

/// A Pusher client: one WebSocket, its socket id once `pusher:connection_established` came.
pub struct Ws {
    pub ws: tungstenite::WebSocket<TcpStream>,
    pub socket_id: String,
}

/// The `data` string of a Pusher frame, parsed.
pub fn frame_data(frame: &serde_json::Value) -> serde_json::Value {
    let text = frame["data"]
        .as_str()
        .unwrap_or_else(|| panic!("data is not a string in {frame}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("data is not JSON ({e}) in {frame}"))
}

impl Ws {
    pub fn send(&mut self, frame: serde_json::Value) {
        self.ws
            .send(tungstenite::Message::text(frame.to_string()))
            .expect("send a WebSocket message");
    }

    /// The next text message, or `None` after `wait` without one. Panics on a close.
    pub fn recv_within(&mut self, wait: Duration) -> Option<serde_json::Value> {
        self.ws
            .get_ref()
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        loop {
            match self.ws.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    return Some(
                        serde_json::from_str(text.as_str())
                            .unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
                    )
                }
                Ok(tungstenite::Message::Close(frame)) => panic!("closed by the server: {frame:?}"),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return None
                }
                Err(e) => panic!("WebSocket read failed: {e}"),
            }
        }
    }

    /// The next text message; fails after [`WS_WAIT`].
    pub fn recv(&mut self) -> serde_json::Value {
        self.recv_within(WS_WAIT)
            .unwrap_or_else(|| panic!("socket {}: no message within {WS_WAIT:?}", self.socket_id))
    }

    /// The next message, which must be `event` (on `channel`, when given).
    pub fn recv_event(&mut self, event: &str, channel: Option<&str>) -> serde_json::Value {
        let frame = self.recv();
        assert_eq!(frame["event"], event, "unexpected frame {frame}");
        if let Some(channel) = channel {
            assert_eq!(frame["channel"], channel, "unexpected frame {frame}");
        }
        frame
    }

    /// A round trip: whatever the server sent this socket before the pong arrives first, so
    /// this asserts that nothing did (events published before this call included).
    pub fn assert_nothing_pending(&mut self) {
        self.send(serde_json::json!({"event": "pusher:ping", "data": {}}));
        let next = self.recv();
        assert_eq!(next["event"], "pusher:pong", "unexpected frame {next}");
    }

    /// Sends `pusher:subscribe` and returns the answer.
    pub fn subscribe(
        &mut self,
        channel: &str,
        auth: Option<&str>,
        channel_data: Option<&str>,
    ) -> serde_json::Value {
        let mut data = serde_json::json!({ "channel": channel });
        if let Some(auth) = auth {
            data["auth"] = auth.into();
        }
        if let Some(cd) = channel_data {
            data["channel_data"] = cd.into();
        }
        self.send(serde_json::json!({"event": "pusher:subscribe", "data": data}));
        self.recv()
    }

    /// Subscribes with an answer of `/broadcasting/auth` and expects success; returns the
    /// parsed `data` of `pusher_internal:subscription_succeeded`.
    pub fn subscribe_with(
        &mut self,
        channel: &str,
        answer: &serde_json::Value,
    ) -> serde_json::Value {
        let auth = answer["auth"]
            .as_str()
            .unwrap_or_else(|| panic!("no auth in {answer}"));
        let reply = self.subscribe(channel, Some(auth), answer["channel_data"].as_str());
        assert_eq!(
            (reply["event"].as_str(), reply["channel"].as_str()),
            (
                Some("pusher_internal:subscription_succeeded"),
                Some(channel)
            ),
            "subscribe to {channel}: {reply}"
        );
        frame_data(&reply)
    }
}

/// `socket_id=..&channel_name=..`, form-encoded as pusher-js posts it.
pub fn auth_form(socket_id: &str, channel: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("socket_id", socket_id)
        .append_pair("channel_name", channel)
        .finish()
}

/// A WebSocket on `/app/{key}` of any server (a `spawn_serve` process, say) after
/// `pusher:connection_established`.
pub fn ws_at(addr: SocketAddr, key: &str) -> Ws {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WS_WAIT)).unwrap();
    let url = format!("ws://{addr}/app/{key}?protocol=7&client=js&version=8.4.0");
    let (ws, _) = tungstenite::client::client(url.as_str(), stream).expect("upgrade");
    let mut ws = Ws {
        ws,
        socket_id: String::new(),
    };
    let hello = ws.recv_event("pusher:connection_established", None);
    ws.socket_id = frame_data(&hello)["socket_id"]
        .as_str()
        .expect("a socket_id")
        .to_string();
    ws
}

impl TestApp {
    /// A WebSocket on `/app/{key}` after `pusher:connection_established`.
    pub fn ws(&self) -> Ws {
        let (_, key, _) = self.app.realtime_credentials();
        ws_at(self.server.addr, &key)
    }

    /// `POST {path}` (`/broadcasting/auth`, maybe with a tenant prefix) with a form body and
    /// `headers` (credentials included, if any).
    pub fn auth_request(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        socket_id: &str,
        channel: &str,
    ) -> Reply {
        let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.call("POST", path, &all, Some(&auth_form(socket_id, channel)))
    }

    /// `POST /broadcasting/auth` with a bearer token, as Echo posts it.
    pub fn channel_auth(&self, token: &str, socket_id: &str, channel: &str) -> Reply {
        let bearer = format!("Bearer {token}");
        self.auth_request(
            "/broadcasting/auth",
            &[("Authorization", &bearer)],
            socket_id,
            channel,
        )
    }

    /// Authorizes `channel` for the socket with `token` and subscribes; panics unless both work.
    pub fn join_channel(&self, ws: &mut Ws, token: &str, channel: &str) -> serde_json::Value {
        let reply = self.channel_auth(token, &ws.socket_id, channel);
        assert_eq!(reply.status, 200, "auth {channel}: {}", reply.text());
        ws.subscribe_with(channel, &reply.json())
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions and small readers shared by the identity tests.
// ---------------------------------------------------------------------------------------------

pub fn id(record: &Value) -> String {
    record["id"].as_str().expect("record id").to_string()
}

pub fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("not an integer: {value}"))
}

pub fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_string()
}

/// Asserts the status, showing the body when it differs.
#[track_caller]
pub fn expect(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
}

/// Asserts the status and the error code.
#[track_caller]
pub fn expect_error(reply: &Reply, status: u16, code: &str, what: &str) {
    let got = serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(String::from));
    assert_eq!(
        (reply.status, got.as_deref()),
        (status, Some(code)),
        "{what}: {}",
        reply.text()
    );
}

/// Owned headers, for tables built at run time.
pub fn borrow(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

/// One way of naming a tenant: its name, a path prefix, and headers.
pub type Aim = (&'static str, String, Vec<(String, String)>);

/// Every way of naming a tenant.
pub fn aims(slug: &str, id: &str, domain: &str) -> Vec<Aim> {
    let header = |n: &str, v: &str| vec![(n.to_string(), v.to_string())];
    vec![
        ("path prefix", format!("/t/{slug}"), vec![]),
        ("X-Tenant-ID", String::new(), header("X-Tenant-ID", id)),
        (
            "X-Tenant-Slug",
            String::new(),
            header("X-Tenant-Slug", slug),
        ),
        ("custom domain", String::new(), header("Host", domain)),
        (
            "subdomain",
            String::new(),
            header("Host", &format!("{slug}.localhost")),
        ),
    ]
}
