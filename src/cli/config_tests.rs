//! `serve`'s settings as the command line and the environment give them.

use std::path::PathBuf;
use std::time::Duration;

use super::{Args, CliError, Env, Given};
use crate::config::ServeConfig;

fn parse(argv: &str, env: &[(&str, &str)]) -> Result<ServeConfig, CliError> {
    let mut args = Args::new(argv.split_whitespace().map(String::from).collect());
    Ok(ServeConfig::from_args(&mut Given(
        &mut args,
        &Env::from_pairs(env),
    ))?)
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
    let e = parse("--redis-url http://cache:6379", &[]).unwrap_err();
    assert!(e.0.contains("--redis-url"), "{e}");
    let c = parse("", &[("TENANTD_TRUSTED_PROXIES", "10.0.0.1, ::1")]).unwrap();
    assert_eq!(c.http.trusted_proxies.len(), 2);
}

#[test]
fn checkpoints_are_tenantds_unless_left_to_litestream() {
    use crate::tenancy::Checkpoints;
    let who =
        |argv: &str, env: &[(&str, &str)]| parse(argv, env).map(|c| c.app.registry.checkpoints);
    assert_eq!(who("", &[]).unwrap(), Checkpoints::Tenantd);
    let env = [("TENANTD_CHECKPOINTS", "litestream")];
    assert_eq!(who("", &env).unwrap(), Checkpoints::Litestream);
    assert_eq!(
        who("--checkpoints tenantd", &env).unwrap(),
        Checkpoints::Tenantd
    );
    let e = who("--checkpoints sqlite", &[]).unwrap_err();
    assert!(e.0.contains("--checkpoints"), "{e}");
}

#[test]
fn the_tenant_store_needs_both_sqld_urls_and_names_what_is_missing() {
    use crate::catalog::TenantStore;
    let c = parse("", &[]).unwrap();
    assert_eq!(c.app.new_tenants, TenantStore::Local);
    assert!(c.app.registry.sqld.is_none());
    let e = parse("--store sqld", &[]).unwrap_err();
    assert!(e.0.contains("--sqld-url"), "{e}");
    let e = parse("--sqld-url http://db:8080", &[]).unwrap_err();
    assert!(e.0.contains("--sqld-admin-url"), "{e}");
    let e = parse("--store files", &[]).unwrap_err();
    assert!(e.0.contains("--store"), "{e}");
    let env = [
        ("TENANTD_SQLD_URL", "http://db:8080"),
        ("TENANTD_SQLD_ADMIN_URL", "http://db:9090"),
    ];
    let c = parse("--store sqld", &env).unwrap();
    assert_eq!(c.app.new_tenants, TenantStore::Sqld);
    assert!(c.app.registry.sqld.is_some());
    // Reaching tenants kept on sqld while new ones stay local.
    let c = parse("", &env).unwrap();
    assert_eq!(c.app.new_tenants, TenantStore::Local);
    assert!(c.app.registry.sqld.is_some());
}

#[test]
fn the_redis_url_comes_from_the_flag_or_the_environment() {
    let url = |argv: &str, env: &[(&str, &str)]| {
        parse(argv, env)
            .unwrap()
            .app
            .realtime
            .redis_url
            .map(|u| u.as_str().to_string())
    };
    assert_eq!(url("", &[]), None);
    let env = [("TENANTD_REDIS_URL", "redis://cache:6379")];
    assert_eq!(url("", &env).as_deref(), Some("redis://cache:6379"));
    assert_eq!(
        url("--redis-url redis://other:6380/1", &env).as_deref(),
        Some("redis://other:6380/1")
    );
}

#[test]
fn metrics_readiness_and_log_format_settings() {
    let c = parse("", &[]).unwrap();
    assert_eq!(c.metrics_bind, None);
    assert_eq!(c.app.metrics.token, None);
    assert_eq!(c.app.metrics.top_tenants, 20);
    assert_eq!(c.app.metrics.ready_min_free_bytes, 64 << 20);
    assert!(!c.log_json);
    let env = [
        ("TENANTD_METRICS_TOKEN", "0123456789abcdef"),
        ("TENANTD_METRICS_TENANTS", "5"),
        ("TENANTD_LOG_FORMAT", "json"),
    ];
    let c = parse(
        "--metrics-bind 127.0.0.1:9090 --ready-min-free-mib 1 --log-format text",
        &env,
    )
    .unwrap();
    assert_eq!(c.metrics_bind.as_deref(), Some("127.0.0.1:9090"));
    assert_eq!(c.app.metrics.token.as_deref(), Some("0123456789abcdef"));
    assert_eq!(c.app.metrics.top_tenants, 5);
    assert_eq!(c.app.metrics.ready_min_free_bytes, 1 << 20);
    assert!(!c.log_json, "the flag wins over the environment");
    for wrong in [
        "--log-format yaml",
        "--metrics-token short",
        "--metrics-bind 9090",
        "--metrics-tenants -1",
    ] {
        let e = parse(wrong, &[]).unwrap_err().to_string();
        let flag = wrong.split_whitespace().next().unwrap();
        assert!(e.contains(flag), "{wrong}: {e}");
    }
}

#[test]
fn the_default_tenant_comes_from_the_flag_or_the_environment_and_must_be_a_slug() {
    assert_eq!(parse("", &[]).unwrap().app.identify.default_tenant, None);
    let env = [("TENANTD_DEFAULT_TENANT", "globex")];
    let c = parse("", &env).unwrap();
    assert_eq!(c.app.identify.default_tenant.as_deref(), Some("globex"));
    let c = parse("--default-tenant Acme", &env).unwrap();
    assert_eq!(c.app.identify.default_tenant.as_deref(), Some("acme"));
    let e = parse("--default-tenant a/b", &[]).unwrap_err();
    assert!(e.0.contains("--default-tenant"), "{e}");
}

#[test]
fn rate_limits_come_from_flags_or_the_environment_and_zero_is_off() {
    let rates = |argv: &str, env: &[(&str, &str)]| parse(argv, env).unwrap().app.rate_limit.rates;
    let r = rates("", &[]);
    assert_eq!((r.tenant_per_min, r.member_per_min), (6000, 1200));
    let env = [("TENANTD_TENANT_RATE", "60"), ("TENANTD_MEMBER_RATE", "0")];
    let r = rates("", &env);
    assert_eq!((r.tenant_per_min, r.member_per_min), (60, 0));
    let r = rates("--tenant-rate 0 --member-rate 5", &env);
    assert_eq!((r.tenant_per_min, r.member_per_min), (0, 5));
    let err = parse("--member-rate -1", &[]).unwrap_err().to_string();
    assert!(err.contains("--member-rate"), "{err}");
}

#[test]
fn the_default_plan_and_billing_grace_come_from_flags_or_the_environment() {
    let c = parse("", &[]).unwrap();
    assert_eq!((c.default_plan, c.billing_grace), (None, None));
    let env = [
        ("TENANTD_DEFAULT_PLAN", "free"),
        ("TENANTD_BILLING_GRACE", "3600"),
    ];
    let c = parse("", &env).unwrap();
    assert_eq!(c.default_plan.as_deref(), Some("free"));
    assert_eq!(c.billing_grace, Some(3600));
    let c = parse("--default-plan team --billing-grace 86400", &env).unwrap();
    assert_eq!(c.default_plan.as_deref(), Some("team"));
    assert_eq!(c.billing_grace, Some(86_400));
    for wrong in ["--billing-grace 5", "--billing-grace soon"] {
        let e = parse(wrong, &[]).unwrap_err();
        assert!(e.0.contains("--billing-grace"), "{wrong}: {e}");
    }
}
