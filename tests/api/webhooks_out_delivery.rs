//! Outbound webhook deliveries to a receiver on loopback: what is signed and sent, retries with
//! the same `webhook-id`, the delivery log, redirects, the address guard at delivery time,
//! disabling, rotation, deleted endpoints and isolation between tenants. Each test runs the
//! `webhook.deliver` jobs the server enqueued itself, one attempt at a time, through the job
//! kinds table (so no test waits for a backoff); the worker pool's own runs are the e2e test's.
//! Signatures are checked with the `standardwebhooks` crate's verifier, not with our signer.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tenantd::api::job_kinds::{self, JobFailure, JobRun};
use tenantd::catalog::{JobFilter, JobRecord};

use crate::support::*;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
}

/// An HTTP receiver on 127.0.0.1:0 answering from a script (then 200).
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<(u16, String, String)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<VecDeque<(u16, String, String)>>> = Arc::default();
        let (g, s) = (got.clone(), script.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = HashMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                g.lock().unwrap().push(Received {
                    headers,
                    body: String::from_utf8(body).unwrap(),
                });
                let (status, extra, answer) =
                    s.lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or((200, String::new(), "thanks".into()));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        Receiver { port, got, script }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn answer(&self, status: u16, extra_headers: &str, body: &str) {
        self.script
            .lock()
            .unwrap()
            .push_back((status, extra_headers.into(), body.into()));
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

fn on_prem() -> TestApp {
    spawn_app_with(|c| c.webhooks.allow_private = true)
}

fn register(app: &TestApp, slug: &str, url: &str, events: Value) -> (i64, String) {
    let reply = app.on(
        &app.owner_token.clone(),
        slug,
        "POST",
        "/api/webhook-endpoints",
        Some(json!({"url": url, "events": events})),
    );
    expect(&reply, 201, "register an endpoint");
    let body = reply.json();
    (int(&body["id"]), text(&body["secret"]))
}

fn create_order(app: &TestApp, slug: &str, title: &str) -> Value {
    let reply = app.on(
        &app.owner_token.clone(),
        slug,
        "POST",
        "/api/orders",
        Some(
            json!({"title": title, "customer_name": "Ada", "amount_minor": 100, "currency": "EUR"}),
        ),
    );
    expect(&reply, 201, "create an order");
    reply.json()
}

/// The webhook jobs enqueued so far, oldest first.
fn jobs(app: &TestApp) -> Vec<JobRecord> {
    let mut jobs = app
        .app
        .catalog
        .jobs(&JobFilter {
            kind: Some("webhook.deliver".into()),
            limit: 1000,
            ..JobFilter::default()
        })
        .unwrap();
    jobs.sort_by_key(|j| j.id);
    jobs
}

/// Runs one attempt of a job as a worker would: its tenant opened from the job's tenant id.
fn attempt(app: &TestApp, job: &JobRecord, attempt: u32) -> Result<(), JobFailure> {
    let kind = job_kinds::kind(&job.kind).expect("a known kind");
    assert_eq!(kind.queue, "webhooks");
    let tenant = job.tenant_id.as_ref().map(|id| {
        let record = app.app.catalog.by_id(id).unwrap().expect("tenant");
        app.app.registry.open(record).unwrap()
    });
    (kind.run)(
        &app.app,
        &JobRun {
            id: job.id,
            attempt,
            max_attempts: job.max_attempts,
            kind: job.kind.clone(),
            payload: job.payload.clone(),
            tenant,
            deadline: Instant::now() + Duration::from_secs(20),
        },
    )
}

fn verify(secret: &str, got: &Received) -> bool {
    let mut headers = ureq::http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, got.headers[name].parse().unwrap());
    }
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(got.body.as_bytes(), &headers)
        .is_ok()
}

fn log(app: &TestApp, slug: &str, id: i64) -> Vec<Value> {
    let reply = app.on(
        &app.owner_token.clone(),
        slug,
        "GET",
        &format!("/api/webhook-endpoints/{id}/deliveries"),
        None,
    );
    expect(&reply, 200, "delivery log");
    reply.json()["deliveries"].as_array().unwrap().clone()
}

fn endpoint(app: &TestApp, slug: &str, id: i64) -> Value {
    let reply = app.on(
        &app.owner_token.clone(),
        slug,
        "GET",
        &format!("/api/webhook-endpoints/{id}"),
        None,
    );
    expect(&reply, 200, "endpoint");
    reply.json()
}

/// A change straight in the tenant's file, through the server's own pool.
fn tenant_sql(app: &TestApp, slug: &str, sql: &str) {
    let record = app.app.catalog.by_slug(slug).unwrap().unwrap();
    let tenant = app.app.registry.open(record).unwrap();
    tenant
        .write(|tx| -> Result<(), tenantd::db::DbError> {
            tx.execute_batch(sql)?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn an_order_is_delivered_signed_with_its_tenant_id() {
    let app = on_prem();
    let acme = id(&app.create_tenant("acme", &[]));
    let receiver = Receiver::start();
    let (endpoint_id, secret) = register(&app, "acme", &receiver.url(), json!(["order.created"]));
    let order = create_order(&app, "acme", "first");
    let jobs = jobs(&app);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].tenant_id.as_deref(), Some(acme.as_str()));
    assert_eq!(jobs[0].queue, "webhooks");
    attempt(&app, &jobs[0], 1).expect("delivered");

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let got = &got[0];
    assert!(verify(&secret, got), "the signature verifies: {got:?}");
    assert!(got.headers["webhook-id"].starts_with("msg_"));
    assert_eq!(got.headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(body["type"], json!("order.created"));
    assert_eq!(body["data"]["tenant_id"], json!(acme));
    assert_eq!(body["data"]["order"]["id"], order["id"]);
    assert_eq!(body["data"]["order"]["amount_minor"], json!(100));
    assert!(text(&body["timestamp"]).ends_with('Z'));

    let log = log(&app, "acme", endpoint_id);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["event"], json!("order.created"));
    assert_eq!(log[0]["webhook_id"], json!(got.headers["webhook-id"]));
    assert_eq!(log[0]["attempt"], json!(1));
    assert_eq!(log[0]["status_code"], json!(200));
    assert_eq!(log[0]["response_excerpt"], json!("thanks"));
    assert!(log[0]["duration_ms"].as_i64().unwrap() >= 0);
}

#[test]
fn a_failed_attempt_is_retried_with_the_same_webhook_id_and_logged() {
    let app = on_prem();
    app.create_tenant("acme", &[]);
    let receiver = Receiver::start();
    let (endpoint_id, secret) = register(&app, "acme", &receiver.url(), json!(["*"]));
    receiver.answer(500, "", &format!("boom\n\x1b[31m{}", "x".repeat(3000)));
    create_order(&app, "acme", "retried");
    let job = jobs(&app).remove(0);
    assert!(matches!(attempt(&app, &job, 1), Err(JobFailure::Retry(_))));
    attempt(&app, &job, 2).expect("the second attempt is delivered");

    let got = receiver.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    assert_eq!(got[0].body, got[1].body, "the same bytes every attempt");
    assert!(got.iter().all(|g| verify(&secret, g)));

    let log = log(&app, "acme", endpoint_id);
    assert_eq!(log.len(), 2);
    assert_eq!(
        (&log[0]["attempt"], &log[0]["status_code"]),
        (&json!(2), &json!(200))
    );
    assert_eq!(
        (&log[1]["attempt"], &log[1]["status_code"]),
        (&json!(1), &json!(500))
    );
    let excerpt = text(&log[1]["response_excerpt"]);
    assert!(excerpt.starts_with("boom\\n\\u{1b}[31m"), "{excerpt}");
    assert!(excerpt.len() <= 1100, "bounded: {}", excerpt.len());
    assert_eq!(
        endpoint(&app, "acme", endpoint_id)["consecutive_failures"],
        json!(0)
    );
}

#[test]
fn redirects_are_not_followed() {
    let app = on_prem();
    app.create_tenant("acme", &[]);
    let first = Receiver::start();
    let elsewhere = Receiver::start();
    first.answer(307, &format!("Location: {}\r\n", elsewhere.url()), "");
    let (endpoint_id, _) = register(&app, "acme", &first.url(), json!(["*"]));
    create_order(&app, "acme", "redirected");
    let job = jobs(&app).remove(0);
    assert!(matches!(attempt(&app, &job, 1), Err(JobFailure::Retry(_))));
    assert_eq!(first.received().len(), 1);
    assert!(elsewhere.received().is_empty(), "the redirect was followed");
    assert_eq!(log(&app, "acme", endpoint_id)[0]["status_code"], json!(307));
}

#[test]
fn private_targets_are_refused_at_delivery_too() {
    // Registered before the guard could see it (as by a host whose name now resolves to
    // loopback): the delivery checks again, on the address it would connect to.
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let receiver = Receiver::start();
    let (endpoint_id, _) = register(&app, "acme", "https://93.184.215.14/hook", json!(["*"]));
    for url in [
        receiver.url(),
        format!("http://localhost:{}/hook", receiver.port),
    ] {
        tenant_sql(
            &app,
            "acme",
            &format!("UPDATE webhook_endpoints SET url = '{url}' WHERE id = {endpoint_id}"),
        );
        let before = jobs(&app).len();
        create_order(&app, "acme", "to loopback");
        let job = jobs(&app).remove(before);
        match attempt(&app, &job, 1) {
            Err(JobFailure::Fatal(e)) => assert!(e.contains("refused"), "{url}: {e}"),
            other => panic!("{url}: {other:?}"),
        }
        let entry = log(&app, "acme", endpoint_id).remove(0);
        assert_eq!(entry["status_code"], Value::Null);
        assert!(text(&entry["error"]).contains("refused"), "{entry}");
    }
    assert!(
        receiver.received().is_empty(),
        "a private target was reached"
    );
}

#[test]
fn an_endpoint_that_keeps_failing_is_disabled_and_the_admin_told() {
    let app = spawn_app_with(|c| {
        c.webhooks.allow_private = true;
        c.webhooks.max_failures = 3;
    });
    app.create_tenant("acme", &[]);
    let receiver = Receiver::start();
    for _ in 0..3 {
        receiver.answer(503, "", "down");
    }
    let (endpoint_id, _) = register(&app, "acme", &receiver.url(), json!(["*"]));
    create_order(&app, "acme", "one");
    create_order(&app, "acme", "two");
    let jobs_now = jobs(&app);
    assert!(matches!(
        attempt(&app, &jobs_now[0], 1),
        Err(JobFailure::Retry(_))
    ));
    assert!(matches!(
        attempt(&app, &jobs_now[1], 1),
        Err(JobFailure::Retry(_))
    ));
    assert_eq!(
        endpoint(&app, "acme", endpoint_id)["consecutive_failures"],
        json!(2)
    );
    match attempt(&app, &jobs_now[0], 2) {
        Err(JobFailure::Fatal(e)) => assert!(e.contains("disabled"), "{e}"),
        other => panic!("{other:?}"),
    }
    let shown = endpoint(&app, "acme", endpoint_id);
    assert_eq!(shown["enabled"], json!(false));
    assert!(
        text(&shown["disabled_reason"]).contains("3 failed"),
        "{shown}"
    );
    let audit = app.on(
        &app.owner_token.clone(),
        "acme",
        "GET",
        "/api/audit?action=webhook_endpoint.disabled",
        None,
    );
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{}", audit.text());
    assert_eq!(entries[0]["target_id"], json!(endpoint_id.to_string()));

    // The other job of the disabled endpoint ends quietly; new events enqueue nothing.
    attempt(&app, &jobs_now[1], 2).expect("nothing to deliver");
    assert_eq!(receiver.received().len(), 3);
    create_order(&app, "acme", "three");
    assert_eq!(jobs(&app).len(), 2);

    // Enabled again: the run of failures starts over, and events flow.
    let reply = app.on(
        &app.owner_token.clone(),
        "acme",
        "PATCH",
        &format!("/api/webhook-endpoints/{endpoint_id}"),
        Some(json!({"enabled": true})),
    );
    expect(&reply, 200, "enable");
    let body = reply.json();
    assert_eq!(body["consecutive_failures"], json!(0));
    assert_eq!(body["disabled_reason"], Value::Null);
    create_order(&app, "acme", "four");
    let latest = jobs(&app).pop().unwrap();
    attempt(&app, &latest, 1).expect("delivered");
}

#[test]
fn an_endpoint_failing_for_too_long_is_disabled() {
    let app = on_prem();
    app.create_tenant("acme", &[]);
    let receiver = Receiver::start();
    receiver.answer(500, "", "");
    let (endpoint_id, _) = register(&app, "acme", &receiver.url(), json!(["*"]));
    // Failing since two days ago (the default limit is 24 hours), one failure so far.
    tenant_sql(
        &app,
        "acme",
        &format!(
            "UPDATE webhook_endpoints SET failures = 1, failing_since = unixepoch() - 172800 \
             WHERE id = {endpoint_id}"
        ),
    );
    create_order(&app, "acme", "late");
    let job = jobs(&app).remove(0);
    assert!(matches!(attempt(&app, &job, 1), Err(JobFailure::Fatal(_))));
    let shown = endpoint(&app, "acme", endpoint_id);
    assert_eq!(shown["enabled"], json!(false));
    assert!(
        text(&shown["disabled_reason"]).contains("48 hours"),
        "{shown}"
    );
}

#[test]
fn a_rotated_secret_signs_beside_the_new_one_until_its_grace_ends() {
    let app = on_prem();
    app.create_tenant("acme", &[]);
    let receiver = Receiver::start();
    let (endpoint_id, old) = register(&app, "acme", &receiver.url(), json!(["*"]));
    let rotated = app.on(
        &app.owner_token.clone(),
        "acme",
        "POST",
        &format!("/api/webhook-endpoints/{endpoint_id}/rotate-secret"),
        None,
    );
    expect(&rotated, 200, "rotate");
    let new = text(&rotated.json()["secret"]);
    create_order(&app, "acme", "during the grace");
    attempt(&app, &jobs(&app)[0], 1).unwrap();
    let got = receiver.received().remove(0);
    assert_eq!(got.headers["webhook-signature"].split(' ').count(), 2);
    assert!(verify(&new, &got) && verify(&old, &got));

    tenant_sql(
        &app,
        "acme",
        "UPDATE webhook_endpoints SET previous_secret_until = unixepoch() - 1",
    );
    create_order(&app, "acme", "after the grace");
    attempt(&app, &jobs(&app)[1], 1).unwrap();
    let got = receiver.received().remove(1);
    assert_eq!(got.headers["webhook-signature"].split(' ').count(), 1);
    assert!(verify(&new, &got));
    assert!(!verify(&old, &got), "the old secret still signs");
}

#[test]
fn a_delivery_to_an_endpoint_deleted_meanwhile_ends_quietly() {
    let app = on_prem();
    app.create_tenant("acme", &[]);
    let receiver = Receiver::start();
    let (endpoint_id, _) = register(&app, "acme", &receiver.url(), json!(["*"]));
    create_order(&app, "acme", "orphan");
    let reply = app.on(
        &app.owner_token.clone(),
        "acme",
        "DELETE",
        &format!("/api/webhook-endpoints/{endpoint_id}"),
        None,
    );
    expect(&reply, 200, "delete");
    attempt(&app, &jobs(&app)[0], 1).expect("ends quietly");
    assert!(receiver.received().is_empty());
}

#[test]
fn events_go_only_to_the_tenants_own_endpoints_that_want_them() {
    let app = on_prem();
    let acme = id(&app.create_tenant("acme", &[]));
    app.create_tenant("globex", &[]);
    let acme_hook = Receiver::start();
    let globex_hook = Receiver::start();
    register(
        &app,
        "acme",
        &acme_hook.url(),
        json!(["order.created", "member.removed"]),
    );
    let (_, _) = register(&app, "acme", &acme_hook.url(), json!(["message.created"]));
    register(&app, "globex", &globex_hook.url(), json!(["*"]));
    create_order(&app, "acme", "acme's");
    let (agent, _) = app.member("agent@acme.test", "acme", "agent");
    let reply = app.on(
        &app.owner_token.clone(),
        "acme",
        "DELETE",
        &format!("/api/members/{agent}"),
        None,
    );
    expect(&reply, 200, "remove a member");
    let jobs = jobs(&app);
    let events: Vec<&str> = jobs
        .iter()
        .map(|j| j.payload["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["order.created", "member.removed"]);
    for job in &jobs {
        assert_eq!(job.tenant_id.as_deref(), Some(acme.as_str()));
        attempt(&app, job, 1).unwrap();
    }
    assert!(
        globex_hook.received().is_empty(),
        "globex got acme's events"
    );
    let got = acme_hook.received();
    assert_eq!(got.len(), 2);
    let removed: Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(
        removed["data"],
        json!({"user_id": agent, "tenant_id": acme})
    );
}
