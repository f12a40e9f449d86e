//! The synchronous client of libSQL server (`sqld`): statements, batches and interactive
//! `BEGIN IMMEDIATE` transactions over Hrana 3 on HTTP (`/v3/pipeline`, JSON), and the admin
//! API that creates and deletes namespaces. Every call names its namespace (one SQLite database
//! on the server), sent as `x-namespace`; nothing here knows what a tenant is.
//!
//! One `Client` is shared by every thread: it is a handle on one `ureq` agent, which keeps
//! idle keep-alive connections to the server for the next request. A call without a
//! transaction opens a stream on the server and closes it in the same request (one round
//! trip); a `Transaction` holds its stream's baton between requests (see transaction.rs).

mod admin;
mod error;
mod hrana;
mod transaction;
mod value;

use std::sync::Arc;
use std::time::Duration;

pub use error::SqldError;
pub use transaction::Transaction;
pub use value::Value;

/// Where the server is and how to talk to it.
#[derive(Clone)]
pub struct Config {
    /// The Hrana endpoint's base, like `http://127.0.0.1:8080` (`--http-listen-addr`).
    pub url: String,
    /// The admin API's base, like `http://127.0.0.1:9090` (`--admin-listen-addr`).
    pub admin_url: String,
    /// Sent as `Authorization: Bearer <token>` on Hrana requests (sqld's JWT auth).
    pub auth_token: Option<String>,
    /// Sent as `Authorization: Basic <key>` on admin requests: sqld's `--admin-auth-key`,
    /// which it compares with the header's credentials as they are (not base64 of a pair).
    pub admin_auth_key: Option<String>,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one request may take, from sending it to its last byte. A `BEGIN IMMEDIATE`
    /// waiting for another writer's lock waits inside its request, so this bounds that wait.
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept to the server, for the threads that share the client.
    pub idle_connections: usize,
    /// Namespaces whose autocommit statements reuse streams kept open (see `Idle`): the few
    /// asked on nearly every request. Each kept stream holds a connection on the server, which
    /// keeps its namespace loaded past `--max-active-namespaces`: not for every tenant.
    pub keep_streams: Vec<String>,
}

impl Config {
    pub fn new(url: &str, admin_url: &str) -> Config {
        Config {
            url: url.to_string(),
            admin_url: admin_url.to_string(),
            auth_token: None,
            admin_auth_key: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            idle_connections: 32,
            keep_streams: Vec::new(),
        }
    }
}

/// The credentials stay out of logs.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<hidden>");
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("admin_url", &self.admin_url)
            .field("auth_token", &hidden(&self.auth_token))
            .field("admin_auth_key", &hidden(&self.admin_auth_key))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("idle_connections", &self.idle_connections)
            .finish()
    }
}

/// A statement and its positional arguments (`?`, `?NNN`).
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub args: Vec<Value>,
}

impl Statement {
    pub fn new(sql: &str, args: &[Value]) -> Statement {
        Statement {
            sql: sql.to_string(),
            args: args.to_vec(),
        }
    }
}

/// What a statement returned.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    /// The result's column names (empty for a statement that returns no rows).
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// Rows changed by an INSERT, UPDATE or DELETE (meaningless for other statements).
    pub affected_row_count: u64,
    /// The rowid of the last insert on this stream, when the statement was an insert.
    pub last_insert_rowid: Option<i64>,
}

impl Rows {
    /// The first column of the first row, as most point reads want it.
    pub fn first_value(&self) -> Option<&Value> {
        self.rows.first().and_then(|row| row.first())
    }
}

/// A handle on one sqld server; clones share the agent and its connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// The credentials stay out of logs.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.url)
            .field("admin_url", &self.inner.admin_url)
            .finish_non_exhaustive()
    }
}

struct Inner {
    agent: ureq::Agent,
    url: String,
    admin_url: String,
    /// The whole `Authorization` value of Hrana requests, when there is a token.
    authorization: Option<String>,
    /// The whole `Authorization` value of admin requests, when there is a key.
    admin_authorization: Option<String>,
    /// Streams kept open between autocommit statements, by namespace (see `Client::execute`).
    idle: std::sync::Mutex<Idle>,
    /// `Config::keep_streams`.
    keep_streams: Vec<String>,
}

/// Open autocommit streams of the namespaces in `Config::keep_streams`. sqld opens a SQLite
/// connection for each new stream, which costs it more than the statement: a stream kept open
/// serves the next statement of the same namespace without one. A baton names its stream
/// whatever namespace a request names, so a stream is only ever handed to the namespace it was
/// opened on. Every stream left open on the server is counted, lent ones too, and a stream
/// that is not to be kept is closed: the server holds a connection for each until it expires.
#[derive(Default)]
struct Idle {
    by_namespace: std::collections::HashMap<String, Streams>,
}

#[derive(Default)]
struct Streams {
    /// Waiting for a statement, the most recent last.
    kept: Vec<IdleStream>,
    /// Open on the server for this client: kept, and lent out to a statement now.
    open: usize,
}

struct IdleStream {
    baton: String,
    base: String,
    since: std::time::Instant,
}

/// A stream idle longer is not used again (sqld drops streams idle for about 10 s): the
/// server ends it, and it stops counting.
const IDLE_STREAM_TTL: Duration = Duration::from_secs(4);
/// Streams kept open per namespace: each holds a connection on the server.
const STREAMS_PER_NAMESPACE: usize = 16;

/// What a statement of a kept namespace runs on.
enum Lease {
    /// A kept stream, lent: it counts as open until handed back or released.
    Kept(IdleStream),
    /// A new stream, counted as open already: kept after the statement if it can be.
    Reserved,
    /// No room: a new stream, closed in the same round trip.
    Closed,
}

impl Idle {
    fn lease(&mut self, ns: &str) -> Lease {
        let streams = self.by_namespace.entry(ns.to_string()).or_default();
        while let Some(stream) = streams.kept.pop() {
            if stream.since.elapsed() < IDLE_STREAM_TTL {
                return Lease::Kept(stream);
            }
            streams.open -= 1;
        }
        if streams.open < STREAMS_PER_NAMESPACE {
            streams.open += 1;
            return Lease::Reserved;
        }
        Lease::Closed
    }

    fn hand_back(&mut self, ns: &str, stream: IdleStream) {
        if let Some(streams) = self.by_namespace.get_mut(ns) {
            streams.kept.push(stream);
        }
    }

    fn release(&mut self, ns: &str) {
        if let Some(streams) = self.by_namespace.get_mut(ns) {
            streams.open = streams.open.saturating_sub(1);
        }
    }
}

impl Client {
    /// A client for the server `config` names; nothing is sent until the first call.
    pub fn new(config: Config) -> Result<Client, SqldError> {
        let url = base_url(&config.url)?;
        let admin_url = base_url(&config.admin_url)?;
        let agent_config = ureq::Agent::config_builder()
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.request_timeout))
            // Statuses are answers this client reads (the namespace is missing, the baton
            // expired), not transport failures.
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .max_idle_connections(config.idle_connections)
            .max_idle_connections_per_host(config.idle_connections)
            .user_agent(concat!("tenantd/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            inner: Arc::new(Inner {
                agent: ureq::Agent::new_with_config(agent_config),
                url,
                admin_url,
                authorization: config.auth_token.map(|t| format!("Bearer {t}")),
                admin_authorization: config.admin_auth_key.map(|k| format!("Basic {k}")),
                idle: Default::default(),
                keep_streams: config.keep_streams,
            }),
        })
    }

    /// One statement in `ns`, autocommit: one round trip, on a stream of its own; for the
    /// namespaces of `Config::keep_streams`, on a stream of `ns` kept open from an earlier
    /// statement when there is one (see `Idle`), else on a new one, kept open after if there
    /// is room. A kept stream the server has dropped meanwhile refuses the request before
    /// running anything, and the statement goes on a new stream; any other failure is the
    /// caller's.
    pub fn execute(&self, ns: &str, sql: &str, args: &[Value]) -> Result<Rows, SqldError> {
        check_namespace(ns)?;
        let statement = hrana::execute(sql, args)?;
        let keep = self.inner.keep_streams.iter().any(|kept| kept == ns);
        let mut lease = if keep {
            lock(&self.inner.idle).lease(ns)
        } else {
            Lease::Closed
        };
        if let Lease::Kept(kept) = &lease {
            // The stream is asked whether it is still outside a transaction, in the same round
            // trip: one that is not (the statement began one) is never handed to anyone else.
            let requests = vec![statement.clone(), hrana::get_autocommit()];
            match self.pipeline(&kept.base, ns, Some(&kept.baton), requests) {
                Ok(reply) => return self.answer(ns, &kept.base.clone(), reply),
                // Dropped by the server meanwhile (expired, or lost in a restart), or refused
                // while sqld reloads the namespace: nothing ran; a new stream asks again.
                Err(SqldError::StreamEnded { .. } | SqldError::NamespaceMissing(_)) => {
                    let mut idle = lock(&self.inner.idle);
                    idle.release(ns);
                    lease = idle.lease(ns);
                }
                Err(e) => {
                    lock(&self.inner.idle).release(ns);
                    return Err(e);
                }
            }
        }
        if let Lease::Closed = lease {
            let reply =
                self.pipeline(&self.inner.url, ns, None, vec![statement, hrana::close()])?;
            let mut results = reply.results.into_iter();
            return hrana::rows(hrana::next(&mut results)?, "execute");
        }
        let requests = vec![statement, hrana::get_autocommit()];
        match self.pipeline(&self.inner.url, ns, None, requests) {
            Ok(reply) => self.answer(ns, &self.inner.url, reply),
            Err(e) => {
                lock(&self.inner.idle).release(ns);
                Err(e)
            }
        }
    }

    /// The rows of a one-statement answer on a counted stream of `ns`: the stream handed back
    /// for the next statement when it is outside a transaction, else closed and released.
    fn answer(&self, ns: &str, base: &str, reply: hrana::Reply) -> Result<Rows, SqldError> {
        let mut results = reply.results.into_iter();
        let rows = hrana::next(&mut results).and_then(|first| hrana::rows(first, "execute"));
        let autocommit = hrana::next(&mut results).and_then(hrana::is_autocommit);
        let base = reply.base_url.unwrap_or_else(|| base.to_string());
        match (reply.baton, autocommit) {
            (Some(baton), Ok(true)) => {
                let stream = IdleStream {
                    baton,
                    base,
                    since: std::time::Instant::now(),
                };
                lock(&self.inner.idle).hand_back(ns, stream);
            }
            (Some(baton), _) => {
                // Inside a transaction (or unknown): closed, which rolls it back. A failure to
                // close leaves it to the server's expiry.
                let _ = self.pipeline(&base, ns, Some(&baton), vec![hrana::close()]);
                lock(&self.inner.idle).release(ns);
            }
            (None, _) => lock(&self.inner.idle).release(ns),
        }
        rows
    }

    /// `statements` in one round trip and one `BEGIN IMMEDIATE` transaction: all of them
    /// apply, or (at the first error, which is returned) none.
    pub fn batch(&self, ns: &str, statements: &[Statement]) -> Result<Vec<Rows>, SqldError> {
        check_namespace(ns)?;
        let requests = vec![hrana::atomic_batch(statements)?, hrana::close()];
        let reply = self.pipeline(&self.inner.url, ns, None, requests)?;
        let mut results = reply.results.into_iter();
        hrana::atomic_batch_rows(hrana::next(&mut results)?, statements.len())
    }

    /// Several statements separated by semicolons (a migration file), in autocommit mode:
    /// they stop at the first error, and the ones before it stay applied. Inside a
    /// transaction, use `Transaction::execute_script`.
    pub fn execute_script(&self, ns: &str, sql: &str) -> Result<(), SqldError> {
        check_namespace(ns)?;
        let requests = vec![hrana::sequence(sql), hrana::close()];
        let reply = self.pipeline(&self.inner.url, ns, None, requests)?;
        let mut results = reply.results.into_iter();
        hrana::expect(hrana::next(&mut results)?, "sequence").map(drop)
    }

    /// Opens a stream on `ns` and starts a `BEGIN IMMEDIATE` transaction on it: when this
    /// returns, the namespace's write lock is held (sqld makes a second writer wait for it).
    pub fn begin_immediate(&self, ns: &str) -> Result<Transaction, SqldError> {
        self.begin_immediate_after(ns, &[])
    }

    /// `begin_immediate`, with `setup` run on the stream first in the same round trip: the
    /// connection settings that do nothing inside a transaction, such as the
    /// `PRAGMA foreign_keys = OFF` a table-rebuilding migration needs.
    pub fn begin_immediate_after(
        &self,
        ns: &str,
        setup: &[&str],
    ) -> Result<Transaction, SqldError> {
        check_namespace(ns)?;
        Transaction::begin(self.clone(), ns, setup, "BEGIN IMMEDIATE")
    }

    /// Opens a stream on `ns` and starts a deferred transaction on it: its first read takes a
    /// snapshot that every later read of it sees, whatever writers commit meanwhile (an export
    /// of a whole database). Roll it back when done; it takes no write lock.
    pub fn begin_read(&self, ns: &str) -> Result<Transaction, SqldError> {
        check_namespace(ns)?;
        Transaction::begin(self.clone(), ns, &[], "BEGIN")
    }

    /// Whether the server answers `/health`.
    pub fn health(&self) -> Result<(), SqldError> {
        let url = format!("{}/health", self.inner.url);
        let mut response = self.inner.agent.get(&url).call()?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let body = read_body(&mut response)?;
        Err(SqldError::http(status, &body))
    }

    /// POSTs one pipeline to `base` (the server's URL, or the one a stream was told to use),
    /// and turns failures into the error a caller can act on.
    ///
    /// sqld 0.24 answers "doesn't exist" to some requests for an existing namespace that it
    /// is evicting from the namespaces it keeps open (`--max-active-namespaces`) as the request
    /// loads it again: the request's statements never ran, and asking again finds it. So a
    /// request that opens a stream asks up to `EVICTION_RETRIES` more times before reporting
    /// `NamespaceMissing`; a stream's later requests are never sent twice.
    fn pipeline(
        &self,
        base: &str,
        ns: &str,
        baton: Option<&str>,
        requests: Vec<serde_json::Value>,
    ) -> Result<hrana::Reply, SqldError> {
        let count = requests.len();
        let body = serde_json::json!({ "baton": baton, "requests": requests }).to_string();
        let mut retries = 0;
        loop {
            match self.post_pipeline(base, ns, baton, &body, count) {
                Err(SqldError::NamespaceMissing(_))
                    if baton.is_none() && retries < EVICTION_RETRIES =>
                {
                    retries += 1;
                }
                answer => return answer,
            }
        }
    }

    fn post_pipeline(
        &self,
        base: &str,
        ns: &str,
        baton: Option<&str>,
        body: &str,
        count: usize,
    ) -> Result<hrana::Reply, SqldError> {
        let url = format!("{base}/v3/pipeline");
        let mut request = self
            .inner
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .header("x-namespace", ns);
        if let Some(auth) = &self.inner.authorization {
            request = request.header("authorization", auth);
        }
        let mut response = request.send(body)?;
        let status = response.status().as_u16();
        let text = read_body(&mut response)?;
        if status == 200 {
            return hrana::Reply::parse(&text, count);
        }
        if status == 404 && text.contains("doesn't exist") {
            return Err(SqldError::NamespaceMissing(ns.to_string()));
        }
        // A stream's requests fail with 400 once the server has dropped it (expired, or the
        // baton refused): say so, the caller's transaction is gone.
        if baton.is_some() && status == 400 {
            return Err(SqldError::StreamEnded {
                status: Some(status),
                message: hrana::error_message(&text),
            });
        }
        Err(SqldError::http(status, &text))
    }
}

/// A poisoned lock only means a thread panicked while holding it; the idle streams are
/// whole at every moment.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many more times a stream's first request is sent when sqld says its namespace does
/// not exist (see `Client::pipeline`).
const EVICTION_RETRIES: usize = 2;

/// sqld's answers are small JSON; this bounds one far above its own 32 MB response cap.
const BODY_LIMIT: u64 = 64 * 1024 * 1024;

fn read_body(response: &mut ureq::http::Response<ureq::Body>) -> Result<String, SqldError> {
    Ok(response
        .body_mut()
        .with_config()
        .limit(BODY_LIMIT)
        .read_to_string()?)
}

/// An absolute http(s) URL without its trailing slashes, to append paths to.
fn base_url(url: &str) -> Result<String, SqldError> {
    let trimmed = url.trim_end_matches('/');
    let scheme_ok = trimmed.starts_with("http://") || trimmed.starts_with("https://");
    let host_ok = trimmed
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.contains(['?', '#', ' ']));
    if !scheme_ok || !host_ok {
        return Err(SqldError::BadArgument(format!(
            "not an http(s) base URL: {url:?}"
        )));
    }
    Ok(trimmed.to_string())
}

/// The names this client sends: they go into an admin URL path and a header, so only
/// characters that need no escaping in either (a tenant's UUID, `central`).
fn check_namespace(ns: &str) -> Result<(), SqldError> {
    let ok = !ns.is_empty()
        && ns.len() <= 64
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SqldError::BadNamespace(ns.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_out_of_debug_output() {
        let mut config = Config::new("http://a", "http://b");
        config.auth_token = Some("token-secret".into());
        config.admin_auth_key = Some("key-secret".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<hidden>"), "{shown}");
    }

    #[test]
    fn only_plain_namespace_names_are_sent() {
        for good in ["central", "3f2a-9c", "a_b", "A1"] {
            assert!(check_namespace(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in ["", "a/b", "../x", "a b", "é", "a.b", "a\nb", long.as_str()] {
            assert!(
                matches!(check_namespace(bad), Err(SqldError::BadNamespace(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn base_urls_are_http_and_lose_their_trailing_slash() {
        assert_eq!(
            base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base_url("https://db.example").unwrap(),
            "https://db.example"
        );
        for bad in ["127.0.0.1:8080", "ftp://x", "http://", "http://x?y=1"] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }
}
