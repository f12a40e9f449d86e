//! The server's configuration: one struct, filled from flags, then environment variables, then
//! the embedded defaults.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::api::AppConfig;
use crate::http;

/// A setting given wrongly: the message names the flag.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where settings come from: flags, then environment variables. The command line (`cli`)
/// provides it, so that this module decides what each setting means and which source wins
/// without knowing the argument syntax.
pub trait Source {
    /// `--name` given (and taken).
    fn flag(&mut self, name: &str) -> bool;
    /// Every value given for `--name`, in order (and taken).
    fn values(&mut self, name: &str) -> Result<Vec<String>, ConfigError>;
    /// An environment variable; empty counts as unset.
    fn var(&self, name: &str) -> Option<String>;

    /// The last value given for `--name`.
    fn value(&mut self, name: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.values(name)?.pop())
    }
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub bind: String,
    /// Create the demo companies, people, chats and orders (what is missing of them).
    pub demo: bool,
    pub http: http::Config,
    pub app: AppConfig,
    /// `--max-connections` and `--max-websockets` as given; the defaults follow the open-file
    /// limit, known only once the server has raised it (see [`ServeConfig::resolve_limits`]).
    pub max_connections: Option<usize>,
    pub max_websockets: Option<usize>,
    /// A second address that serves `/metrics` alone.
    pub metrics_bind: Option<String>,
    /// `--log-format json`: one JSON object per log line.
    pub log_json: bool,
    /// `--default-plan`: the plan new tenants get (checked against the catalog at start).
    pub default_plan: Option<String>,
    /// `--billing-grace`: seconds a `past_due` subscription keeps writing.
    pub billing_grace: Option<i64>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: "127.0.0.1:8080".into(),
            demo: false,
            max_connections: None,
            max_websockets: None,
            metrics_bind: None,
            log_json: false,
            default_plan: None,
            billing_grace: None,
            http: http::Config::default(),
            app: AppConfig {
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
                ..AppConfig::default()
            },
        }
    }
}

/// Descriptors an open tenant pool holds at rest: the database file, its `-wal` and its `-shm`.
pub(crate) const FDS_PER_OPEN_TENANT: u64 = 3;
/// The rest: the catalog's pool, the listener, the reactor's and the hub's pollers, logs.
pub(crate) const FDS_BESIDE: u64 = 64;

pub const DEFAULT_DATA_DIR: &str = "data";

/// Where tenant databases are kept: `--store`, and the libSQL server from `--sqld-url`,
/// `--sqld-admin-url` and `--sqld-auth-token` (both URLs or neither). `serve` and the commands
/// that reach tenants take the same options.
pub fn tenant_stores(given: &mut impl Source) -> Result<crate::catalog::TenantStores, ConfigError> {
    use crate::catalog::TenantStore;
    let mut pick = |flag: &str, var: &str| -> Result<Option<String>, ConfigError> {
        Ok(given.value(flag)?.or_else(|| given.var(var)))
    };
    let url = pick("--sqld-url", "TENANTD_SQLD_URL")?;
    let admin_url = pick("--sqld-admin-url", "TENANTD_SQLD_ADMIN_URL")?;
    let token = pick("--sqld-auth-token", "TENANTD_SQLD_AUTH_TOKEN")?;
    let sqld = sqld_client(url, admin_url, token)?;
    let new_tenants = match pick("--store", "TENANTD_STORE")? {
        Some(v) => TenantStore::parse(v.trim())
            .ok_or_else(|| ConfigError(format!("--store: expected local or sqld, got {v:?}")))?,
        None => TenantStore::Local,
    };
    if new_tenants == TenantStore::Sqld && sqld.is_none() {
        return Err(ConfigError(
            "--store sqld: give the server with --sqld-url and --sqld-admin-url".into(),
        ));
    }
    Ok(crate::catalog::TenantStores { new_tenants, sqld })
}

fn sqld_client(
    url: Option<String>,
    admin_url: Option<String>,
    token: Option<String>,
) -> Result<Option<std::sync::Arc<crate::sqld::Client>>, ConfigError> {
    let (url, admin_url) = match (url, admin_url) {
        (None, None) => {
            if token.is_some() {
                return Err(ConfigError(
                    "--sqld-auth-token: give the server with --sqld-url too".into(),
                ));
            }
            return Ok(None);
        }
        (Some(url), Some(admin)) => (url, admin),
        (Some(_), None) => {
            return Err(ConfigError(
                "--sqld-url: give its admin API with --sqld-admin-url too".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError(
                "--sqld-admin-url: give the server with --sqld-url too".into(),
            ))
        }
    };
    let mut config = crate::sqld::Config::new(url.trim(), admin_url.trim());
    // Every request reads the catalog's change counter there.
    config.keep_streams = vec![crate::catalog::CENTRAL_NAMESPACE.to_string()];
    config.auth_token = token.map(|t| t.trim().to_string());
    let client =
        crate::sqld::Client::new(config).map_err(|e| ConfigError(format!("--sqld-url: {e}")))?;
    Ok(Some(std::sync::Arc::new(client)))
}

/// `--data DIR`, else `TENANTD_DATA`, else `./data`: every command finds its data the same way.
pub fn data_dir(given: &mut impl Source) -> Result<PathBuf, ConfigError> {
    Ok(PathBuf::from(
        given
            .value("--data")?
            .or_else(|| given.var("TENANTD_DATA"))
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
    ))
}

impl ServeConfig {
    pub fn from_args(given: &mut impl Source) -> Result<ServeConfig, ConfigError> {
        let mut c = ServeConfig::default();
        c.app.data_dir = data_dir(given)?;
        c.demo = given.flag("--demo");
        let stores = tenant_stores(given)?;
        c.app.registry.sqld = stores.sqld;
        c.app.new_tenants = stores.new_tenants;
        c.app.webhooks.allow_private = given.flag("--webhooks-allow-private")
            || given
                .var("TENANTD_WEBHOOKS_ALLOW_PRIVATE")
                .is_some_and(|v| v == "1" || v == "true");
        c.app.sessions.secure_cookie = given.flag("--secure-cookies")
            || given
                .var("TENANTD_SECURE_COOKIES")
                .is_some_and(|v| v == "1" || v == "true");
        let mut pick = |flag: &str, var: &str| -> Result<Option<String>, ConfigError> {
            Ok(given.value(flag)?.or_else(|| given.var(var)))
        };
        if let Some(v) = pick("--bind", "TENANTD_BIND")? {
            c.bind = bind_address(&v)?;
        }
        if let Some(v) = pick("--session-idle", "TENANTD_SESSION_IDLE")? {
            c.app.sessions.idle_secs = seconds("--session-idle", &v)?.as_secs() as i64;
        }
        if let Some(v) = pick("--session-lifetime", "TENANTD_SESSION_LIFETIME")? {
            c.app.sessions.lifetime_secs = seconds_long("--session-lifetime", &v)?;
        }
        if let Some(v) = pick("--base-domain", "TENANTD_BASE_DOMAIN")? {
            c.app.identify.base_domain = v.trim().trim_end_matches('.').to_ascii_lowercase();
        }
        if let Some(v) = pick("--default-tenant", "TENANTD_DEFAULT_TENANT")? {
            let slug = v.trim().to_ascii_lowercase();
            crate::catalog::validate_slug(&slug)
                .map_err(|e| ConfigError(format!("--default-tenant: {e}")))?;
            c.app.identify.default_tenant = Some(slug);
        }
        if let Some(v) = pick("--default-plan", "TENANTD_DEFAULT_PLAN")? {
            c.default_plan = Some(v.trim().to_string());
        }
        if let Some(v) = pick("--billing-grace", "TENANTD_BILLING_GRACE")? {
            c.billing_grace = Some(seconds_long("--billing-grace", &v)?);
        }
        if let Some(v) = pick("--max-open-tenants", "TENANTD_MAX_OPEN_TENANTS")? {
            c.app.registry.max_open_pools = number("--max-open-tenants", &v, 1, 1_000_000)?;
        }
        if let Some(v) = pick("--read-cache-mib", "TENANTD_READ_CACHE_MIB")? {
            let mib: usize = number("--read-cache-mib", &v, 0, 1 << 20)?;
            c.app.registry.read_cache_bytes = mib << 20;
        }
        if let Some(v) = pick("--checkpoints", "TENANTD_CHECKPOINTS")? {
            c.app.registry.checkpoints =
                crate::tenancy::Checkpoints::parse(&v).ok_or_else(|| {
                    ConfigError(format!(
                        "--checkpoints: expected tenantd or litestream, got {v:?}"
                    ))
                })?;
        }
        if let Some(v) = pick("--workers", "TENANTD_WORKERS")? {
            c.http.workers = number("--workers", &v, 1, 1024)?;
        }
        if let Some(v) = pick("--max-connections", "TENANTD_MAX_CONNECTIONS")? {
            c.max_connections = Some(number("--max-connections", &v, 1, 1_000_000)?);
        }
        if let Some(v) = pick("--max-client-connections", "TENANTD_MAX_CLIENT_CONNECTIONS")? {
            c.http.max_per_client = Some(number("--max-client-connections", &v, 1, 1_000_000)?);
        }
        if let Some(v) = pick("--max-websockets", "TENANTD_MAX_WEBSOCKETS")? {
            c.max_websockets = Some(number("--max-websockets", &v, 0, 1_000_000)?);
        }
        if let Some(v) = pick("--subscribe-timeout", "TENANTD_SUBSCRIBE_TIMEOUT")? {
            c.app.realtime.subscribe_timeout = seconds("--subscribe-timeout", &v)?;
        }
        if let Some(v) = pick("--redis-url", "TENANTD_REDIS_URL")? {
            let url = crate::realtime::RedisUrl::parse(&v)
                .map_err(|e| ConfigError(format!("--redis-url: {e}")))?;
            c.app.realtime.redis_url = Some(url);
        }
        if let Some(v) = pick("--head-timeout", "TENANTD_HEAD_TIMEOUT")? {
            c.http.head_timeout = seconds("--head-timeout", &v)?;
        }
        if let Some(v) = pick("--io-timeout", "TENANTD_IO_TIMEOUT")? {
            c.http.io_timeout = seconds("--io-timeout", &v)?;
        }
        if let Some(v) = pick("--body-timeout", "TENANTD_BODY_TIMEOUT")? {
            c.http.body_timeout = seconds("--body-timeout", &v)?;
        }
        if let Some(v) = pick("--max-body", "TENANTD_MAX_BODY")? {
            c.http.max_body = number("--max-body", &v, 0, 1 << 30)?;
        }
        if let Some(v) = pick("--shutdown-grace", "TENANTD_SHUTDOWN_GRACE")? {
            c.http.shutdown_grace = seconds("--shutdown-grace", &v)?;
        }
        if let Some(v) = pick("--webhooks-max-failures", "TENANTD_WEBHOOKS_MAX_FAILURES")? {
            c.app.webhooks.max_failures =
                number("--webhooks-max-failures", &v, 1, 1_000_000)? as u32;
        }
        if let Some(v) = pick("--webhooks-max-failing", "TENANTD_WEBHOOKS_MAX_FAILING")? {
            c.app.webhooks.max_failing =
                Duration::from_secs(seconds_long("--webhooks-max-failing", &v)? as u64);
        }
        if let Some(v) = pick(
            "--webhooks-rotation-grace",
            "TENANTD_WEBHOOKS_ROTATION_GRACE",
        )? {
            c.app.webhooks.rotation_grace =
                Duration::from_secs(seconds_long("--webhooks-rotation-grace", &v)? as u64);
        }
        if let Some(v) = pick("--job-workers", "TENANTD_JOB_WORKERS")? {
            c.app.jobs.workers = job_workers(&v)?;
        }
        if let Some(v) = pick("--job-poll", "TENANTD_JOB_POLL")? {
            c.app.jobs.poll = seconds("--job-poll", &v)?;
        }
        if let Some(v) = pick("--job-retention", "TENANTD_JOB_RETENTION")? {
            c.app.jobs.retention = Duration::from_secs(seconds_long("--job-retention", &v)? as u64);
        }
        if let Some(v) = pick("--job-backoff", "TENANTD_JOB_BACKOFF")? {
            c.app.jobs.backoff = seconds("--job-backoff", &v)?;
        }
        if let Some(v) = pick("--tenant-rate", "TENANTD_TENANT_RATE")? {
            c.app.rate_limit.rates.tenant_per_min = number("--tenant-rate", &v, 0, 1 << 24)? as u32;
        }
        if let Some(v) = pick("--member-rate", "TENANTD_MEMBER_RATE")? {
            c.app.rate_limit.rates.member_per_min = number("--member-rate", &v, 0, 1 << 24)? as u32;
        }
        if let Some(v) = pick("--metrics-bind", "TENANTD_METRICS_BIND")? {
            c.metrics_bind = Some(
                bind_address(&v)
                    .map_err(|e| ConfigError(e.0.replacen("--bind", "--metrics-bind", 1)))?,
            );
        }
        if let Some(v) = pick("--metrics-token", "TENANTD_METRICS_TOKEN")? {
            if v.trim().len() < 16 {
                return Err(ConfigError(
                    "--metrics-token: use at least 16 characters".into(),
                ));
            }
            c.app.metrics.token = Some(v.trim().to_string());
        }
        if let Some(v) = pick("--metrics-tenants", "TENANTD_METRICS_TENANTS")? {
            c.app.metrics.top_tenants = number("--metrics-tenants", &v, 0, 10_000)?;
        }
        if let Some(v) = pick("--ready-min-free-mib", "TENANTD_READY_MIN_FREE_MIB")? {
            let mib = number("--ready-min-free-mib", &v, 0, 1 << 40)? as u64;
            c.app.metrics.ready_min_free_bytes = mib.saturating_mul(1 << 20);
        }
        if let Some(v) = pick("--log-format", "TENANTD_LOG_FORMAT")? {
            c.log_json = match v.as_str() {
                "text" => false,
                "json" => true,
                _ => {
                    return Err(ConfigError(format!(
                        "--log-format: expected text or json, got {v:?}"
                    )))
                }
            };
        }
        // `serve` holds the data directory's lock: no other server is running its jobs.
        c.app.jobs.reclaim_on_start = true;
        let mut hosts = given.values("--central-host")?;
        if hosts.is_empty() {
            if let Some(v) = given.var("TENANTD_CENTRAL_HOSTS") {
                hosts = v.split(',').map(String::from).collect();
            }
        }
        c.app.identify.central_hosts = hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let mut origins = given.values("--allowed-origin")?;
        if origins.is_empty() {
            if let Some(v) = given.var("TENANTD_ALLOWED_ORIGINS") {
                origins = v.split(',').map(|o| o.trim().to_string()).collect();
            }
        }
        c.app.realtime.allowed_origins = origins.into_iter().filter(|o| !o.is_empty()).collect();
        let mut proxies = given.values("--trusted-proxy")?;
        if proxies.is_empty() {
            if let Some(v) = given.var("TENANTD_TRUSTED_PROXIES") {
                proxies = v.split(',').map(|s| s.trim().to_string()).collect();
            }
        }
        for p in proxies.iter().filter(|p| !p.is_empty()) {
            let ip = IpAddr::from_str(p)
                .map_err(|_| ConfigError(format!("--trusted-proxy: not an IP address: {p}")))?;
            c.http.trusted_proxies.push(ip);
        }
        c.resolve_limits(None);
        Ok(c)
    }

    /// Fills in the connection caps not given, from the open-file limit now in force (`None`:
    /// unknown, as before the server raised it): `--max-connections` is what the limit leaves
    /// after 3 descriptors per open tenant and 64 more, from 64 to 65,536; `--max-websockets`
    /// half of it; each client address a share of either (see [`http::Config::client_share`]).
    pub fn resolve_limits(&mut self, fd_limit: Option<u64>) {
        let reserve = FDS_PER_OPEN_TENANT * self.app.registry.max_open_pools as u64 + FDS_BESIDE;
        self.http.max_connections = self.max_connections.unwrap_or(match fd_limit {
            Some(limit) => limit.saturating_sub(reserve).clamp(64, 65_536) as usize,
            None => 1024,
        });
        let websockets = self.max_websockets.unwrap_or(self.http.max_connections / 2);
        self.app.realtime.max_websockets = websockets;
        self.app.realtime.max_websockets_per_client = self
            .http
            .max_per_client
            .unwrap_or_else(|| http::Config::client_share(websockets));
    }
}

/// `HOST:PORT` (`127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`). Checked here, so that a
/// bare port gets a message that says what is missing rather than "invalid socket address".
fn bind_address(v: &str) -> Result<String, ConfigError> {
    let well_formed = v
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if well_formed {
        Ok(v.to_string())
    } else {
        Err(ConfigError(format!(
            "--bind takes an address with a port, such as 127.0.0.1:8080 or 0.0.0.0:8080 \
             (got {v:?})"
        )))
    }
}

/// `queue=N,queue=N`: worker threads per queue (0 runs none of that queue here).
fn job_workers(v: &str) -> Result<Vec<(String, usize)>, ConfigError> {
    let queues = crate::api::job_kinds::QUEUES;
    v.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (queue, n) = part.trim().split_once('=').unwrap_or(("", ""));
            if !queues.iter().any(|(q, _)| *q == queue) {
                let known: Vec<&str> = queues.iter().map(|(q, _)| *q).collect();
                return Err(ConfigError(format!(
                    "--job-workers: expected queue=N with a queue of {}, got {part:?}",
                    known.join(", ")
                )));
            }
            Ok((queue.to_string(), number("--job-workers", n, 0, 256)?))
        })
        .collect()
}

fn number(flag: &str, v: &str, min: usize, max: usize) -> Result<usize, ConfigError> {
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError(format!(
            "{flag}: expected a whole number from {min} to {max}, got {v:?}"
        ))),
    }
}

/// Seconds up to a year, for session lifetimes.
fn seconds_long(flag: &str, v: &str) -> Result<i64, ConfigError> {
    match v.parse::<i64>() {
        Ok(s) if (60..=366 * 86_400).contains(&s) => Ok(s),
        _ => Err(ConfigError(format!(
            "{flag}: expected whole seconds from 60 to a year, got {v:?}"
        ))),
    }
}

fn seconds(flag: &str, v: &str) -> Result<Duration, ConfigError> {
    match v.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(ConfigError(format!(
            "{flag}: expected seconds (greater than 0, at most 86400), got {v:?}"
        ))),
    }
}
