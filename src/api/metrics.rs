//! What an operator's monitoring asks: `/metrics` (the Prometheus text format, on the main
//! address behind `--metrics-token`, or on its own `--metrics-bind` address), `/readyz` (the
//! catalog answers and the data directory has room; on central hosts and that address), and the request accounting every answer
//! goes through (`observe`). The counters themselves live in `crate::metrics`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use crate::catalog::TenantRecord;
use crate::error::Error;
use crate::http::{self, Body, Request, Response};
use crate::metrics::{Metrics, DEFAULT_TOP_TENANTS};

use super::App;

/// `/metrics` and `/readyz` settings.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// A bearer token that `/metrics` requires. On the main address `/metrics` is served only
    /// when one is set (else 404); on `--metrics-bind`'s address it is required when set.
    pub token: Option<String>,
    /// Tenants named in the per-tenant series; the rest are summed under `_other`.
    pub top_tenants: usize,
    /// `/readyz` answers 503 when the data directory's file system has less free space.
    pub ready_min_free_bytes: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            token: None,
            top_tenants: DEFAULT_TOP_TENANTS,
            ready_min_free_bytes: 64 << 20,
        }
    }
}

/// What the app keeps for these routes.
pub(super) struct Observe {
    pub(super) config: MetricsConfig,
    pub(super) data_dir: PathBuf,
}

/// What the pipeline learnt of a request, for its accounting: the route pattern it matched
/// (or a fixed name), and its tenant.
pub(super) struct Seen<'a> {
    pub(super) route: &'a str,
    pub(super) tenant: Option<Arc<TenantRecord>>,
}

impl Default for Seen<'_> {
    fn default() -> Self {
        Seen {
            route: "(unmatched)",
            tenant: None,
        }
    }
}

impl App {
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.registry.metrics()
    }

    /// Counts an answered request, and keeps a 5xx as its tenant's recent error.
    pub(super) fn observe(
        &self,
        req: &Request,
        seen: &Seen,
        started: Instant,
        response: &Response,
    ) {
        let tenant = seen.tenant.as_deref();
        self.metrics().request(
            &req.method,
            seen.route,
            response.status,
            started.elapsed(),
            tenant.map(|t| (t.id.as_str(), t.slug.as_str())),
        );
        if let (Some(tenant), true) = (tenant, response.status >= 500) {
            let said = match &response.body {
                Body::Full(body) => serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(String::from)),
                _ => None,
            };
            self.metrics().recent_error(
                &tenant.id,
                "request",
                format!(
                    "{} {} answered {}{}",
                    req.method,
                    seen.route,
                    response.status,
                    said.map(|s| format!(": {s}")).unwrap_or_default()
                ),
            );
        }
    }
}

/// `/metrics` on the main address: only with a token, and only for its bearer.
pub(super) fn main_address(app: &App, req: &Request) -> Response {
    match &app.observe.config.token {
        None => Error::NotFound.into_response(),
        Some(token) => guarded(app, req, token),
    }
}

fn guarded(app: &App, req: &Request, token: &str) -> Response {
    let given = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Compared as digests: the time taken says nothing of how much of the token matched.
    let digest = |s: &str| crate::auth::token::digest(s);
    if given.is_some_and(|g| digest(g) == digest(token)) {
        scrape(app)
    } else {
        Error::Unauthorized.into_response()
    }
}

/// The handler of `--metrics-bind`'s address: `/metrics` and `/readyz`, nothing else.
pub struct MetricsOnly(pub Arc<App>);

impl http::Handler for MetricsOnly {
    fn handle(&self, req: &Request, _state: &mut dyn std::any::Any) -> Response {
        let app = &self.0;
        if req.path != "/metrics" && req.path != "/readyz" {
            return Error::NotFound.into_response();
        }
        if !matches!(req.method.as_str(), "GET" | "HEAD") {
            return Error::MethodNotAllowed {
                allow: "GET, HEAD".into(),
            }
            .into_response();
        }
        if req.path == "/readyz" {
            return readyz(app);
        }
        match &app.observe.config.token {
            None => scrape(app),
            Some(token) => guarded(app, req, token),
        }
    }
}

/// The text exposition: what `crate::metrics` keeps, and what is read now (pools, jobs,
/// WebSockets and channels).
pub fn scrape(app: &App) -> Response {
    let now = Registry::new();
    let stats = app.registry.stats();
    gauge(
        &now,
        "tenantd_tenant_pools_open",
        "Tenant pools open now.",
        stats.open_pools as i64,
    );
    count(
        &now,
        "tenantd_tenant_pool_opens_total",
        "Tenant pools opened since the start.",
        stats.pools_opened,
    );
    count(
        &now,
        "tenantd_tenant_pool_closes_total",
        "Tenant pools closed since the start (LRU, idle, eviction).",
        stats.pools_closed,
    );
    gauge(
        &now,
        "tenantd_websockets_open",
        "WebSocket connections open now.",
        app.hub.connection_count() as i64,
    );
    match app.hub.subscriptions() {
        Ok(subs) => {
            let channels: std::collections::HashSet<&str> =
                subs.iter().map(|s| s.channel.as_str()).collect();
            gauge(
                &now,
                "tenantd_realtime_channels",
                "Real-time channels with at least one subscriber.",
                channels.len() as i64,
            );
            gauge(
                &now,
                "tenantd_realtime_subscriptions",
                "Channel subscriptions of open WebSockets.",
                subs.len() as i64,
            );
        }
        Err(e) => log::warn!("metrics: the real-time hub did not answer: {e}"),
    }
    match app.catalog.job_counts() {
        Ok(counts) => {
            let jobs = IntGaugeVec::new(
                Opts::new("tenantd_jobs", "Jobs in the catalog by queue and state."),
                &["queue", "state"],
            )
            .expect("valid metric");
            for (queue, state, n) in counts {
                jobs.with_label_values(&[&queue, &state]).set(n);
            }
            let _ = now.register(Box::new(jobs));
        }
        Err(e) => log::warn!("metrics: cannot count the jobs: {e}"),
    }
    Response::new(200, prometheus::TEXT_FORMAT, app.metrics().render(&now))
        .with_header("Cache-Control", "no-store")
}

fn gauge(registry: &Registry, name: &str, help: &str, value: i64) {
    let g = IntGauge::new(name, help).expect("valid metric");
    g.set(value);
    let _ = registry.register(Box::new(g));
}

fn count(registry: &Registry, name: &str, help: &str, value: u64) {
    let c = IntCounter::new(name, help).expect("valid metric");
    c.inc_by(value);
    let _ = registry.register(Box::new(c));
}

/// `/readyz`: 200 when the catalog answers and the data directory's file system has at least
/// `ready_min_free_bytes` free; else 503, naming the checks that failed. Unauthenticated (an
/// orchestrator probes it), so the body says no more than that: why a check failed, and how
/// much room is left, go to the log. A probe's report, not an error of the request: it is
/// answered here whole.
pub(super) fn readyz(app: &App) -> Response {
    let mut failed = Vec::new();
    if let Err(e) = app.catalog.answers() {
        log::warn!("readyz: the catalog does not answer: {e}");
        failed.push("catalog");
    }
    let min = app.observe.config.ready_min_free_bytes;
    match free_bytes(&app.observe.data_dir) {
        Ok(free) if free >= min => {}
        Ok(free) => {
            log::warn!("readyz: {free} bytes free in the data directory, below {min}");
            failed.push("disk");
        }
        Err(e) => {
            log::warn!("readyz: free space of the data directory: {e}");
            failed.push("disk");
        }
    }
    let body = serde_json::json!({
        "status": if failed.is_empty() { "ready" } else { "not_ready" },
        "failed": failed,
    });
    let status = if failed.is_empty() { 200 } else { 503 };
    Response::json(status, &body).with_header("Cache-Control", "no-store")
}

/// Bytes an unprivileged process may still write on `dir`'s file system.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs with a NUL-terminated path and a pointer to a zeroed local struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The field types differ between platforms.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok(u64::from(st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}
