//! `tenantd serve`: bind, start the HTTP layer with the API, and stop cleanly on SIGINT/SIGTERM.

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::api::App;
use crate::config::{ServeConfig, FDS_BESIDE, FDS_PER_OPEN_TENANT};
use crate::http;

/// Runs the server until a signal stops it; returns the exit status.
pub fn run(mut config: ServeConfig) -> i32 {
    init_logging(config.log_json);
    let limit = raise_fd_limit();
    config.resolve_limits(limit);
    if let Some(warning) = fd_shortfall(
        limit,
        config.http.max_connections,
        config.app.registry.max_open_pools,
    ) {
        log::warn!("{warning}");
    }
    let listener = match TcpListener::bind(&config.bind) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tenantd: cannot listen on {}: {e}", config.bind);
            return 1;
        }
    };
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tenantd: cannot install signal handlers: {e}");
            return 1;
        }
    };
    let data_dir = config.app.data_dir.clone();
    // Before the catalog is opened: a second server, or a directory we cannot write, would
    // otherwise start and fail on every write.
    let _claim = match crate::data_dir::claim(&data_dir) {
        Ok(claim) => claim,
        Err(e) => {
            eprintln!("tenantd: {e}");
            return 1;
        }
    };
    let (app, first_admin) = match App::open(config.app.clone()) {
        Ok(opened) => opened,
        Err(crate::api::OpenError::Catalog(e)) => {
            eprintln!(
                "tenantd: cannot open the catalog in {}: {e}",
                data_dir.display()
            );
            return 1;
        }
        Err(e) => {
            eprintln!("tenantd: {e}");
            return 1;
        }
    };
    // A server that cannot reach its sqld would answer 503 for every tenant kept there: say so
    // at once instead.
    if let Some(sqld) = &config.app.registry.sqld {
        if let Err(e) = sqld.health() {
            eprintln!("tenantd: cannot reach sqld ({sqld:?}): {e}");
            return 1;
        }
    }
    if let Some(plan) = &config.default_plan {
        if let Err(e) = app.catalog.set_default_plan(plan) {
            eprintln!("tenantd: --default-plan: {e}");
            return 1;
        }
    }
    if let Some(secs) = config.billing_grace {
        app.catalog.set_billing_grace(secs);
    }
    // Reported, never removed here: a catalog that is missing (moved, or a wrong --data) has
    // just been made anew and empty, and an old one restored from a backup lacks the newer
    // tenants; either would make every tenant file look like an orphan. `tenants gc` removes
    // them when an operator asks.
    match crate::tenancy::lifecycle::orphans(
        &app.catalog,
        crate::tenancy::lifecycle::ORPHAN_MIN_AGE,
        std::time::SystemTime::now(),
    ) {
        Ok(found) => {
            for orphan in found.iter().filter(|o| o.removable) {
                log::warn!(
                    "{} has no catalog row (a create that did not finish?): `tenantd tenants \
                     gc` removes it with its -wal and -shm",
                    orphan.file
                );
            }
        }
        Err(e) => log::warn!("could not look for orphan tenant files: {e}"),
    }
    let leftovers = crate::tenancy::backup::remove_leftovers(&data_dir);
    if leftovers > 0 {
        log::info!("removed {leftovers} .tmp files left by killed backups or restores");
    }
    let demo = if config.demo {
        match crate::demo::ensure(&app) {
            Ok(text) => Some(text),
            Err(e) => {
                eprintln!("tenantd: cannot set up the demo: {e}");
                return 1;
            }
        }
    } else {
        None
    };
    let admin_note = admin_note(&app, first_admin.as_ref(), &data_dir);
    let app = Arc::new(app);
    crate::api::broadcasting::spawn_watcher(&app);
    crate::api::jobs::start_workers(&app);
    // Its own small server: a scrape never waits behind the API's connections or workers.
    let metrics_server = match &config.metrics_bind {
        None => None,
        Some(addr) => {
            let small = http::Config {
                workers: 2,
                max_connections: 64,
                ..config.http.clone()
            };
            let only = Arc::new(crate::api::metrics::MetricsOnly(Arc::clone(&app)));
            match TcpListener::bind(addr).and_then(|l| http::serve(l, small, only)) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("tenantd: cannot serve metrics on {addr}: {e}");
                    return 1;
                }
            }
        }
    };
    let server = match http::serve(listener, config.http.clone(), app) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tenantd: cannot start the server: {e}");
            return 1;
        }
    };
    let mut banner = format!(
        "tenantd listening on http://{}\ndata directory: {}\n",
        server.local_addr(),
        data_dir.display()
    );
    if let Some(m) = &metrics_server {
        banner.push_str(&format!("metrics on http://{}/metrics\n", m.local_addr()));
    }
    banner.push_str(&admin_note);
    let mut companies = Vec::new();
    if let Some(demo) = demo {
        let port = server.local_addr().port();
        banner.push_str(&demo.summary);
        companies = demo.companies;
        if let Some((email, slug)) = demo.try_as {
            banner.push_str(&format!(
                "  try: curl -s -H 'Content-Type: application/json' \\\n    \
                 -d '{{\"email\":\"{email}\",\"password\":\"{}\"}}' \\\n    \
                 http://127.0.0.1:{port}/api/auth/login\n  \
                 then: curl -H 'Authorization: Bearer <token>' \
                 http://{slug}.localhost:{port}/api/orders\n",
                crate::demo::PASSWORD
            ));
        }
    }
    banner.push_str(&web_urls(
        server.local_addr(),
        &config.app.identify.base_domain,
        &companies,
    ));
    // Whoever started us may have stopped reading (a closed pipe): that is no reason to die.
    let mut stdout = std::io::stdout();
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    let stopper = server.stopper();
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            log::info!("signal {signal} received: shutting down");
            stopper.stop();
        }
    });
    let stopped_cleanly = server.wait();
    // Scrapes are answered until the API has stopped.
    drop(metrics_server);
    if stopped_cleanly {
        log::info!("stopped");
    } else {
        log::warn!("stopped with requests still in flight after the grace period");
    }
    0
}

/// Where a browser finds the web interface: the admin portal on the bound address (loopback
/// when bound to every address), and each company's workspace on its subdomain and under
/// `/t/{slug}/`. A subdomain of `localhost` reaches this machine only if we listen on
/// loopback, so it is left out when we are bound to another address.
fn web_urls(addr: std::net::SocketAddr, base_domain: &str, companies: &[String]) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let portal = format!("http://{}/", std::net::SocketAddr::new(ip, addr.port()));
    let subdomains = base_domain != "localhost" || ip.is_loopback();
    let mut out = format!(
        "web interface, open in a browser:\n  {:<14}{portal}\n",
        "admin portal"
    );
    for slug in companies {
        out.push_str(&format!("  {slug:<14}"));
        if subdomains {
            out.push_str(&format!("http://{slug}.{base_domain}:{}/ or ", addr.port()));
        }
        out.push_str(&format!("{portal}t/{slug}/\n"));
    }
    out
}

/// How to get in as a system admin: the first admin's password in a block of its own on the
/// first start (it is shown only this once), and on later starts, while no admin has ever
/// logged in, the command that makes a new password.
fn admin_note(
    app: &crate::api::App,
    first: Option<&crate::api::FirstAdmin>,
    data_dir: &std::path::Path,
) -> String {
    let reset = |email: &str| {
        format!(
            "`tenantd admin reset-password --email {email} --data {}` makes a new password",
            data_dir.display()
        )
    };
    if let Some(first) = first {
        let rule = "=".repeat(72);
        return format!(
            "{rule}\n\
             first system admin, shown this once (only its hash is stored):\n  \
             email:    {}\n  \
             password: {}\n\
             log in with POST /api/admin/auth/login; {}\n\
             {rule}\n",
            first.email,
            first.password,
            reset(&first.email)
        );
    }
    let never_logged_in = app
        .catalog
        .audit_query(&crate::catalog::AuditFilter {
            action: Some("admin.login".into()),
            limit: 1,
            ..Default::default()
        })
        .is_ok_and(|found| found.is_empty());
    if never_logged_in {
        format!(
            "no system admin has logged in yet: {}\n",
            reset(crate::api::FIRST_ADMIN_EMAIL)
        )
    } else {
        String::new()
    }
}

fn init_logging(json: bool) {
    let env = env_logger::Env::default().default_filter_or("info");
    let mut builder = env_logger::Builder::from_env(env);
    if json {
        builder.format(json_line);
    }
    let _ = builder.try_init();
}

/// One log record as one JSON object: time, level, target, message, and the record's fields
/// (`tenant` on request lines of a tenant and on its jobs' lines).
fn json_line(out: &mut env_logger::fmt::Formatter, record: &log::Record) -> std::io::Result<()> {
    use std::io::Write as _;
    struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);
    impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
        fn visit_pair(
            &mut self,
            key: log::kv::Key<'kvs>,
            value: log::kv::Value<'kvs>,
        ) -> Result<(), log::kv::Error> {
            let value = value.to_string();
            if !value.is_empty() {
                self.0
                    .insert(key.as_str().to_string(), serde_json::Value::String(value));
            }
            Ok(())
        }
    }
    let mut line = serde_json::Map::new();
    line.insert(
        "time".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    line.insert("level".into(), record.level().as_str().into());
    line.insert("target".into(), record.target().into());
    line.insert("message".into(), record.args().to_string().into());
    let _ = record.key_values().visit(&mut Fields(&mut line));
    writeln!(out, "{}", serde_json::Value::Object(line))
}

/// Lifts the soft open-file limit to the hard one: the default soft limit (often 1024) is below
/// the connection cap plus the tenant files we keep open. Returns the limit now in force, if it
/// could be read.
fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    // rlim_t is u64 on Linux but not on every platform.
    #[allow(clippy::unnecessary_cast)]
    Some(lim.rlim_cur as u64)
}

/// A warning when the open-file limit is below what the configured caps can use: past it,
/// accepts and tenant opens fail with EMFILE under load instead of answering 503 by design.
fn fd_shortfall(
    limit: Option<u64>,
    max_connections: usize,
    max_open_tenants: usize,
) -> Option<String> {
    let limit = limit?;
    let need = max_connections as u64 + FDS_PER_OPEN_TENANT * max_open_tenants as u64 + FDS_BESIDE;
    (limit < need).then(|| {
        format!(
            "the open-file limit is {limit}, below the {need} descriptors this configuration can \
             use (--max-connections {max_connections}, plus {FDS_PER_OPEN_TENANT} for each of \
             --max-open-tenants {max_open_tenants}, plus {FDS_BESIDE}): raise it (ulimit -n, \
             LimitNOFILE= in a systemd unit) or lower those caps"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_interface_is_shown_where_a_browser_reaches_it() {
        let demo = ["acme".to_string(), "globex".to_string()];
        assert_eq!(
            web_urls("127.0.0.1:8080".parse().unwrap(), "localhost", &demo),
            "web interface, open in a browser:\n  \
             admin portal  http://127.0.0.1:8080/\n  \
             acme          http://acme.localhost:8080/ or http://127.0.0.1:8080/t/acme/\n  \
             globex        http://globex.localhost:8080/ or http://127.0.0.1:8080/t/globex/\n"
        );
        assert_eq!(
            web_urls("0.0.0.0:80".parse().unwrap(), "localhost", &[]),
            "web interface, open in a browser:\n  admin portal  http://127.0.0.1:80/\n"
        );
        let v6 = web_urls("[::]:8080".parse().unwrap(), "localhost", &demo[..1]);
        assert!(v6.contains("http://[::1]:8080/t/acme/"), "{v6}");
        // Bound elsewhere, acme.localhost would not reach us; a real base domain would.
        let lan = web_urls("192.0.2.7:8080".parse().unwrap(), "localhost", &demo[..1]);
        assert!(
            lan.ends_with("  acme          http://192.0.2.7:8080/t/acme/\n"),
            "{lan}"
        );
        let named = web_urls(
            "192.0.2.7:8080".parse().unwrap(),
            "example.test",
            &demo[..1],
        );
        assert!(
            named.contains("http://acme.example.test:8080/ or "),
            "{named}"
        );
    }

    #[test]
    fn a_low_open_file_limit_is_reported_with_the_caps_that_need_more() {
        // The defaults: 1,024 connections and 256 open tenants need 1,856.
        let warning = fd_shortfall(Some(1024), 1024, 256).expect("1,024 is too low");
        assert!(warning.contains("1024"), "{warning}");
        assert!(warning.contains("1856"), "{warning}");
        assert!(warning.contains("--max-open-tenants 256"), "{warning}");
        assert_eq!(fd_shortfall(Some(1856), 1024, 256), None);
        assert_eq!(fd_shortfall(Some(524_288), 1024, 256), None);
        assert!(fd_shortfall(Some(1855), 1024, 256).is_some());
        // A limit we could not read is not a reason to warn.
        assert_eq!(fd_shortfall(None, 1024, 256), None);
    }
}
