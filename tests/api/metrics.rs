//! `/metrics`, `/readyz`, the tenants' recent errors and JSON log lines, against the real
//! server. The scrape is read by a real Prometheus text parser: Python's `prometheus_client`.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::Arc;

use serde_json::Value;
use tenantd::api::job_kinds::{self, JobFailure, JobRun, Kind};

use crate::support::{spawn_app, spawn_app_with, Client, TestApp, TestServer};

const TOKEN: &str = "metrics-token-0123456789";

fn with_token(config: &mut tenantd::api::AppConfig) {
    config.metrics.token = Some(TOKEN.into());
}

fn scrape(test: &TestApp) -> String {
    let auth = format!("Bearer {TOKEN}");
    let reply = test.call("GET", "/metrics", &[("Authorization", &auth)], None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.header("content-type")
    );
    reply.text()
}

/// One sample as the parser read it.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

const PARSE: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.exit(3)
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// The exposition parsed by `prometheus_client.parser`; `None` (with a note) when Python or
/// the module is missing, except under CI, where that fails the test.
fn parse(text: &str) -> Option<Vec<Sample>> {
    let missing = |why: &str| {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}: CI installs it (python3 -m pip install prometheus_client)");
        }
        eprintln!(
            "note: {why}; the scrape was not parsed (python3 -m pip install prometheus_client)"
        );
        None
    };
    let child = std::process::Command::new("python3")
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return missing("python3 is not installed");
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(3) {
        return missing("Python's prometheus_client is not installed");
    }
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    Some(
        parsed
            .into_iter()
            .map(|s| Sample {
                name: s["name"].as_str().unwrap().to_string(),
                labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                value: s["value"].as_f64().unwrap(),
            })
            .collect(),
    )
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn the_scrape_parses_and_a_routes_series_moves_with_its_requests() {
    let test = spawn_app_with(with_token);
    test.create_tenant("acme", &[]);
    let host = [("Host", "acme.localhost")];
    for _ in 0..3 {
        assert_eq!(test.get("/api/tenant", &host).status, 200);
    }
    let order = test.get("/api/orders/999999", &host);
    assert_eq!(order.status, 404, "{}", order.text());
    let Some(samples) = parse(&scrape(&test)) else {
        return;
    };
    let requests = |route: &str, status: &str| {
        value(
            &samples,
            "tenantd_http_requests_total",
            &[("method", "GET"), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("/api/tenant", "200"), Some(3.0));
    // The router's pattern, never the path asked for.
    assert_eq!(requests("/api/orders/{id}", "404"), Some(1.0));
    let patterns: BTreeSet<String> = test
        .app
        .route_table()
        .into_iter()
        .map(|(_, path, _)| path)
        .collect();
    for s in samples.iter().filter(|s| s.labels.contains_key("route")) {
        let route = &s.labels["route"];
        assert!(
            patterns.contains(route)
                || route.starts_with('(')
                || route.starts_with("/assets/")
                || ["/metrics", "/readyz"].contains(&route.as_str()),
            "a route label that is no pattern: {route}"
        );
    }
    assert_eq!(
        value(
            &samples,
            "tenantd_http_request_duration_seconds_count",
            &[("route", "/api/tenant")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &samples,
            "tenantd_tenant_requests_total",
            &[("tenant", "acme"), ("class", "2xx")]
        ),
        Some(3.0)
    );
    // The answers cache: the first read missed, the next two hit.
    assert_eq!(
        value(
            &samples,
            "tenantd_read_cache_lookups_total",
            &[("result", "hit")]
        ),
        Some(2.0)
    );
    assert_eq!(value(&samples, "tenantd_tenant_pools_open", &[]), Some(1.0));
    assert!(value(&samples, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0));
    assert!(value(&samples, "process_open_fds", &[]).is_some_and(|v| v > 0.0));
    // A failed login is counted in its realm.
    let login = test.login(crate::support::OWNER_EMAIL, "wrong-password");
    assert_eq!(login.status, 401);
    let samples = parse(&scrape(&test)).unwrap();
    assert_eq!(
        value(
            &samples,
            "tenantd_login_failures_total",
            &[("realm", "account")]
        ),
        Some(1.0)
    );
}

#[test]
fn metrics_on_the_main_address_need_the_token_and_are_404_without_one() {
    let open = spawn_app();
    let reply = open.call("GET", "/metrics", &[], None);
    assert_eq!(reply.status, 404, "{}", reply.text());
    let reply = open.get("/metrics", &[]);
    assert_eq!(reply.status, 404, "a user's token is no metrics token");

    let test = spawn_app_with(with_token);
    assert_eq!(test.call("GET", "/metrics", &[], None).status, 401);
    let wrong = test.call(
        "GET",
        "/metrics",
        &[("Authorization", "Bearer not-the-metrics-token")],
        None,
    );
    assert_eq!(wrong.status, 401);
    // A session token of the system admin is not the metrics token either.
    assert_eq!(test.admin("GET", "/metrics", None).status, 401);
    assert!(scrape(&test).contains("tenantd_http_requests_total"));
}

#[test]
fn the_separate_listener_serves_metrics_and_nothing_else() {
    let test = spawn_app();
    let only = TestServer::start(
        tenantd::http::Config {
            workers: 1,
            ..Default::default()
        },
        Arc::new(tenantd::api::metrics::MetricsOnly(Arc::clone(&test.app))),
    );
    let reply = only.request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("tenantd_tenant_pools_open"));
    let other = only.request("GET /api/tenant HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(other.status, 404);
    // Not on the main address: no token is configured.
    assert_eq!(test.call("GET", "/metrics", &[], None).status, 404);
}

#[test]
fn serve_with_metrics_bind_prints_and_serves_the_address() {
    let data = tempfile::tempdir().unwrap();
    let serve = crate::support::spawn_serve(data.path(), &["--metrics-bind", "127.0.0.1:0"], 3);
    let addr: std::net::SocketAddr = serve
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics line in {:?}", serve.lines))
        .parse()
        .unwrap();
    let mut client = Client::connect(addr);
    client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.status, 200);
    let mut main = Client::connect(serve.addr);
    main.send(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(main.reply().status, 404);
}

/// 10,000 tenants in the catalog, traffic to 40 of them: the per-tenant series name the first
/// K asked for and sum the rest, and the whole scrape stays small.
#[test]
fn ten_thousand_tenants_keep_the_series_bounded() {
    const K: usize = 5;
    let test = spawn_app_with(|c| {
        with_token(c);
        c.metrics.top_tenants = K;
    });
    let mut db = test.central_db();
    let tx = db.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO tenants (id, slug, name, created_at, updated_at)
                 VALUES (?1, ?2, ?2, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            )
            .unwrap();
        for i in 0..10_000 {
            let id = format!("00000000-0000-4000-8000-{i:012}");
            insert.execute((id, format!("bulk{i}"))).unwrap();
        }
    }
    tx.commit().unwrap();
    // Unauthenticated requests identify their tenant all the same (401, counted as 4xx);
    // bulk2 gets the most.
    for i in 0..40 {
        let host = format!("bulk{i}.localhost");
        let times = if i == 2 { 5 } else { 1 };
        for _ in 0..times {
            let reply = test.call("GET", "/api/tenant", &[("Host", &host)], None);
            assert_eq!(reply.status, 401, "{}", reply.text());
        }
    }
    let text = scrape(&test);
    let Some(samples) = parse(&text) else {
        return;
    };
    let tenants: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "tenantd_tenant_requests_total")
        .collect();
    let named: BTreeSet<&str> = tenants
        .iter()
        .map(|s| s.labels["tenant"].as_str())
        .collect();
    assert_eq!(named.len(), K + 1, "{named:?}");
    assert!(
        named.contains("_other") && named.contains("bulk2") && !named.contains("bulk7"),
        "{named:?}"
    );
    let sum: f64 = tenants.iter().map(|s| s.value).sum();
    assert_eq!(sum, 44.0, "every request counted once, named or summed");
    assert_eq!(
        value(
            &samples,
            "tenantd_tenant_requests_total",
            &[("tenant", "_other"), ("class", "4xx")]
        ),
        Some(44.0 - 5.0 - (K as f64 - 1.0))
    );
    assert!(
        samples.len() < 1_000,
        "{} samples for 10,000 tenants",
        samples.len()
    );
}

#[test]
fn readyz_is_200_when_ready_and_503_naming_the_failed_check() {
    let test = spawn_app();
    let ready = test.call("GET", "/readyz", &[], None);
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready");

    let full = spawn_app_with(|c| c.metrics.ready_min_free_bytes = u64::MAX);
    let reply = full.call("GET", "/readyz", &[], None);
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({"status": "not_ready", "failed": ["disk"]}),
        "no more than which checks failed"
    );
    // Liveness is not readiness.
    assert_eq!(full.call("GET", "/healthz", &[], None).status, 200);

    // The catalog's file gone from under the server: its open connections still answer,
    // a fresh one does not.
    let moved = test.data.path().join("central.db.moved");
    std::fs::rename(test.data.path().join("central.db"), &moved).unwrap();
    let reply = test.call("GET", "/readyz", &[], None);
    std::fs::rename(&moved, test.data.path().join("central.db")).unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["failed"], serde_json::json!(["catalog"]));
}

#[test]
fn a_tenants_recent_errors_show_its_faults_and_not_anothers() {
    let test = spawn_app();
    let broken = test.create_tenant("broken", &[]);
    test.create_tenant("fine", &[]);
    let broken_id = broken["id"].as_str().unwrap();
    // Its file gone before its first use: the tenant cannot be opened, a server fault.
    std::fs::remove_file(test.tenant_file(broken_id)).unwrap();
    let reply = test.get("/api/tenant", &[("Host", "broken.localhost")]);
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(
        test.get("/api/tenant", &[("Host", "fine.localhost")])
            .status,
        200
    );
    let health = |slug: &str| {
        let reply = test.admin("GET", &format!("/api/admin/tenants/{slug}/health"), None);
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    };
    let errors = health("broken")["recent_errors"].clone();
    let errors = errors.as_array().expect("recent_errors is a list");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["source"], "request");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("GET /api/tenant answered 503"),
        "{message}"
    );
    assert_eq!(health("fine")["recent_errors"], serde_json::json!([]));
}

#[test]
fn json_log_lines_parse_and_carry_the_tenant() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--demo",
        ])
        .arg("--data")
        .arg(data.path().join("data"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let child = Kill(child);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    let addr: std::net::SocketAddr = first
        .trim()
        .strip_prefix("tenantd listening on http://")
        .unwrap_or_else(|| panic!("{first}"))
        .parse()
        .unwrap();
    let body = serde_json::json!({"email": "alice@acme.test", "password": tenantd::demo::PASSWORD});
    let reply = crate::support::request_to(addr, "POST", "/api/auth/login", &[], Some(&body));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let token = reply.json()["token"].as_str().unwrap().to_string();
    let auth = format!("Bearer {token}");
    let reply = crate::support::request_to(
        addr,
        "GET",
        "/api/tenant",
        &[("Host", "acme.localhost"), ("Authorization", &auth)],
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Both requests' access lines: they are written after the answers, so the second may be
    // there before the first.
    let found = crate::support::eventually(std::time::Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log_path).unwrap();
        text.contains("GET /api/tenant") && text.contains("POST /api/auth/login")
    });
    drop(child);
    assert!(found, "no access line for each request");
    let text = std::fs::read_to_string(&log_path).unwrap();
    let mut lines = 0;
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["time", "level", "target", "message"] {
            assert!(v[field].is_string(), "{field} missing: {line}");
        }
        lines += 1;
    }
    assert!(lines > 1);
    let access = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| {
            v["target"] == "tenantd::access"
                && v["message"].as_str().unwrap().contains("GET /api/tenant")
        })
        .unwrap();
    assert_eq!(access["tenant"], "acme", "{access}");
    assert_eq!(access["level"], "INFO");
}

fn failing_kind(_app: &tenantd::api::App, _run: &JobRun) -> Result<(), JobFailure> {
    Err(JobFailure::Fatal("the test's job fails".into()))
}

fn kinds(name: &str) -> Option<Kind> {
    match name {
        "test.fail" => Some(Kind {
            queue: "default",
            timeout: std::time::Duration::from_secs(30),
            run: failing_kind,
        }),
        other => job_kinds::kind(other),
    }
}

#[test]
fn a_failed_job_is_its_tenants_recent_error_and_is_counted() {
    let test = spawn_app_with(with_token);
    let failing = test.create_tenant("failing", &[]);
    test.create_tenant("quiet", &[]);
    let now = tenantd::api::jobs::now_ms();
    test.app
        .catalog
        .enqueue_job(&tenantd::catalog::JobInsert {
            tenant_id: Some(failing["id"].as_str().unwrap()),
            queue: "default",
            kind: "test.fail",
            payload: &serde_json::json!({}),
            unique_key: None,
            run_at: now,
            max_attempts: 1,
            now,
        })
        .unwrap();
    let mut runner = None;
    assert!(tenantd::api::jobs::run_next_with(
        &test.app,
        "default",
        "serve:test",
        &mut runner,
        now + 1,
        kinds
    )
    .unwrap());
    let health = |slug: &str| {
        let reply = test.admin("GET", &format!("/api/admin/tenants/{slug}/health"), None);
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["recent_errors"].clone()
    };
    let errors = health("failing");
    assert_eq!(errors[0]["source"], "job", "{errors}");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("the test's job fails"),
        "{errors}"
    );
    assert_eq!(health("quiet"), serde_json::json!([]));
    let Some(samples) = parse(&scrape(&test)) else {
        return;
    };
    assert_eq!(
        value(
            &samples,
            "tenantd_job_attempts_total",
            &[("queue", "default"), ("outcome", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "tenantd_jobs",
            &[("queue", "default"), ("state", "failed")]
        ),
        Some(1.0)
    );
}
