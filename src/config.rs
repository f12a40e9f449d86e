//! The server's configuration: one struct, filled from flags, then environment variables, then
//! the embedded defaults.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::api::AppConfig;
use crate::cli::{Args, CliError, Env};
use crate::http;

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
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: "127.0.0.1:8080".into(),
            demo: false,
            max_connections: None,
            max_websockets: None,
            http: http::Config::default(),
            app: AppConfig {
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
                ..AppConfig::default()
            },
        }
    }
}

pub const DEFAULT_DATA_DIR: &str = "data";

/// `--data DIR`, else `TENANTD_DATA`, else `./data`: every command finds its data the same way.
pub fn data_dir(args: &mut Args, env: &Env) -> Result<PathBuf, CliError> {
    Ok(PathBuf::from(
        args.value("--data")?
            .or_else(|| env.get("TENANTD_DATA"))
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
    ))
}

impl ServeConfig {
    pub fn from_args(args: &mut Args, env: &Env) -> Result<ServeConfig, CliError> {
        let mut c = ServeConfig::default();
        c.app.data_dir = data_dir(args, env)?;
        c.demo = args.flag("--demo");
        c.app.sessions.secure_cookie = args.flag("--secure-cookies")
            || env
                .get("TENANTD_SECURE_COOKIES")
                .is_some_and(|v| v == "1" || v == "true");
        let mut pick = |flag: &str, var: &str| -> Result<Option<String>, CliError> {
            Ok(args.value(flag)?.or_else(|| env.get(var)))
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
        if let Some(v) = pick("--max-open-tenants", "TENANTD_MAX_OPEN_TENANTS")? {
            c.app.registry.max_open_pools = number("--max-open-tenants", &v, 1, 1_000_000)?;
        }
        if let Some(v) = pick("--read-cache-mib", "TENANTD_READ_CACHE_MIB")? {
            let mib: usize = number("--read-cache-mib", &v, 0, 1 << 20)?;
            c.app.registry.read_cache_bytes = mib << 20;
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
        let mut hosts = args.values("--central-host")?;
        if hosts.is_empty() {
            if let Some(v) = env.get("TENANTD_CENTRAL_HOSTS") {
                hosts = v.split(',').map(String::from).collect();
            }
        }
        c.app.identify.central_hosts = hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let mut origins = args.values("--allowed-origin")?;
        if origins.is_empty() {
            if let Some(v) = env.get("TENANTD_ALLOWED_ORIGINS") {
                origins = v.split(',').map(|o| o.trim().to_string()).collect();
            }
        }
        c.app.realtime.allowed_origins = origins.into_iter().filter(|o| !o.is_empty()).collect();
        let mut proxies = args.values("--trusted-proxy")?;
        if proxies.is_empty() {
            if let Some(v) = env.get("TENANTD_TRUSTED_PROXIES") {
                proxies = v.split(',').map(|s| s.trim().to_string()).collect();
            }
        }
        for p in proxies.iter().filter(|p| !p.is_empty()) {
            let ip = IpAddr::from_str(p)
                .map_err(|_| CliError(format!("--trusted-proxy: not an IP address: {p}")))?;
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
        let reserve = crate::serve::FDS_PER_OPEN_TENANT * self.app.registry.max_open_pools as u64
            + crate::serve::FDS_BESIDE;
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
fn bind_address(v: &str) -> Result<String, CliError> {
    let well_formed = v
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if well_formed {
        Ok(v.to_string())
    } else {
        Err(CliError(format!(
            "--bind takes an address with a port, such as 127.0.0.1:8080 or 0.0.0.0:8080 \
             (got {v:?})"
        )))
    }
}

fn number(flag: &str, v: &str, min: usize, max: usize) -> Result<usize, CliError> {
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(CliError(format!(
            "{flag}: expected a whole number from {min} to {max}, got {v:?}"
        ))),
    }
}

/// Seconds up to a year, for session lifetimes.
fn seconds_long(flag: &str, v: &str) -> Result<i64, CliError> {
    match v.parse::<i64>() {
        Ok(s) if (60..=366 * 86_400).contains(&s) => Ok(s),
        _ => Err(CliError(format!(
            "{flag}: expected whole seconds from 60 to a year, got {v:?}"
        ))),
    }
}

fn seconds(flag: &str, v: &str) -> Result<Duration, CliError> {
    match v.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(CliError(format!(
            "{flag}: expected seconds (greater than 0, at most 86400), got {v:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &str, env: &[(&str, &str)]) -> Result<ServeConfig, CliError> {
        let mut args = Args::new(argv.split_whitespace().map(String::from).collect());
        ServeConfig::from_args(&mut args, &Env::from_pairs(env))
    }

    #[test]
    fn flags_beat_environment_beats_defaults() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.bind, "127.0.0.1:8080");
        assert_eq!(c.app.data_dir, PathBuf::from("data"));
        assert_eq!(c.app.identify.base_domain, "localhost");
        assert_eq!(c.http.max_connections, 1024);

        let env = [("TENANTD_BIND", "0.0.0.0:9000"), ("TENANTD_DATA", "/srv/t")];
        let c = parse("", &env).unwrap();
        assert_eq!(c.bind, "0.0.0.0:9000");
        assert_eq!(c.app.data_dir, PathBuf::from("/srv/t"));

        let c = parse("--bind 127.0.0.1:1 --data=x", &env).unwrap();
        assert_eq!(c.bind, "127.0.0.1:1");
        assert_eq!(c.app.data_dir, PathBuf::from("x"));
        let c = parse("--base-domain Example.TEST. --central-host a.test", &[]).unwrap();
        assert_eq!(c.app.identify.base_domain, "example.test");
        assert_eq!(c.app.identify.central_hosts, vec!["a.test"]);

        assert_eq!(
            parse("", &[]).unwrap().app.registry.read_cache_bytes,
            32 << 20
        );
        let env = [("TENANTD_READ_CACHE_MIB", "0")];
        assert_eq!(parse("", &env).unwrap().app.registry.read_cache_bytes, 0);
        let c = parse("--read-cache-mib 8", &env).unwrap();
        assert_eq!(c.app.registry.read_cache_bytes, 8 << 20);
    }

    #[test]
    fn the_connection_caps_follow_the_open_file_limit_unless_given() {
        let mut c = parse("", &[]).unwrap();
        // 20,000 descriptors, less 3 for each of 256 open tenants and 64.
        c.resolve_limits(Some(20_000));
        assert_eq!(c.http.max_connections, 20_000 - 832);
        assert_eq!(c.app.realtime.max_websockets, (20_000 - 832) / 2);
        assert_eq!(
            c.app.realtime.max_websockets_per_client,
            (20_000 - 832) / 16
        );
        c.resolve_limits(Some(1024));
        assert_eq!(c.http.max_connections, 192);
        c.resolve_limits(Some(100));
        assert_eq!(c.http.max_connections, 64);
        c.resolve_limits(Some(1 << 20));
        assert_eq!(c.http.max_connections, 65_536);

        let mut c = parse(
            "--max-connections 5000 --max-websockets 100 --max-client-connections 10 \
             --subscribe-timeout 2.5",
            &[],
        )
        .unwrap();
        c.resolve_limits(Some(20_000));
        assert_eq!(c.http.max_connections, 5000);
        assert_eq!(c.http.max_per_client, Some(10));
        assert_eq!(c.app.realtime.max_websockets, 100);
        assert_eq!(c.app.realtime.max_websockets_per_client, 10);
        assert_eq!(
            c.app.realtime.subscribe_timeout,
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let e = parse("--workers 0", &[]).unwrap_err();
        assert!(e.0.contains("--workers"), "{e}");
        assert!(parse("--head-timeout soon", &[]).is_err());
        assert!(parse("--trusted-proxy nope", &[]).is_err());
        let e = parse("--bind 8080", &[]).unwrap_err();
        assert!(e.0.contains("127.0.0.1:8080"), "{e}");
        assert!(parse("--bind :8080", &[]).is_err());
        assert!(parse("--bind [::1]:0", &[]).is_ok());
        let e = parse("--read-cache-mib lots", &[]).unwrap_err();
        assert!(e.0.contains("--read-cache-mib"), "{e}");
        let c = parse("", &[("TENANTD_TRUSTED_PROXIES", "10.0.0.1, ::1")]).unwrap();
        assert_eq!(c.http.trusted_proxies.len(), 2);
    }
}
