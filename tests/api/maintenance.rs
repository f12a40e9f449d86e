//! Maintenance mode: a tenant (or the whole server) down from the CLI beside a running server
//! and from the admin API; 503 with Retry-After; other tenants and the central host unaffected;
//! the allowed addresses and the secret URL's cookie pass, on that tenant only; jobs wait
//! without spending an attempt; channels take no new subscriptions, and those made before wait
//! it out; bad input refused.

use serde_json::json;
use tenantd::api::jobs;
use tenantd::catalog::JobStatus;

use crate::jobs::{app_with_workers, job, noop};
use crate::support::{
    auth_form, frame_data, id, request_to, spawn_app, spawn_app_full, spawn_serve, Reply, TestApp,
};

const SECRET: &str = "let-me-in-0123456789";

fn tenant(test: &TestApp, slug: &str) -> Reply {
    test.get(&format!("/t/{slug}/api/tenant"), &[])
}

fn assert_maintenance(reply: &Reply, retry_after: Option<&str>) {
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.error_code(), "maintenance");
    assert_eq!(reply.header("retry-after"), retry_after);
}

#[test]
fn a_tenant_down_from_the_admin_api_answers_503_and_others_keep_working() {
    let test = spawn_app();
    test.create_tenant("initech", &[]);
    test.create_tenant("globex", &[]);
    let down = test.admin(
        "POST",
        "/api/admin/tenants/initech/down",
        Some(json!({"retry_after": 120})),
    );
    assert_eq!(down.status, 200, "{}", down.text());
    assert_maintenance(&tenant(&test, "initech"), Some("120"));
    // By subdomain too, and for a write.
    let write = test.as_bearer(
        &test.owner_token.clone(),
        "PATCH",
        "/api/tenant",
        &[("Host", "initech.localhost")],
        Some(json!({"name": "x"})),
    );
    assert_maintenance(&write, Some("120"));
    // Another tenant, the admin API and the user's central routes answer as ever.
    assert_eq!(tenant(&test, "globex").status, 200);
    assert_eq!(
        test.admin("GET", "/api/admin/tenants/initech", None).status,
        200
    );
    assert_eq!(test.get("/api/me", &[]).status, 200);
    // A browser gets the page with the maintenance screen.
    let page = test.call("GET", "/t/initech/chats", &[("Accept", "text/html")], None);
    assert_eq!(page.status, 503);
    assert_eq!(page.header("retry-after"), Some("120"));
    assert!(
        page.text()
            .contains("&quot;area&quot;:&quot;maintenance&quot;"),
        "{}",
        page.text()
    );
    // Audited, and up again.
    let audited = test.central_db().query_row(
        "SELECT count(*) FROM audit_log WHERE action = 'maintenance.down'",
        [],
        |r| r.get::<_, i64>(0),
    );
    assert_eq!(audited.unwrap(), 1);
    assert_eq!(
        test.admin("POST", "/api/admin/tenants/initech/up", None)
            .status,
        200
    );
    assert_eq!(tenant(&test, "initech").status, 200);
}

#[test]
fn the_cli_takes_a_tenant_and_the_server_down_beside_a_running_server() {
    let test = spawn_app();
    test.create_tenant("initech", &[]);
    let token = test.owner_token.clone();
    let data = test.data.path().to_path_buf();
    // A second server process on the same data directory: it sees the CLI's changes through
    // its catalog snapshot.
    let serve = spawn_serve(&data, &[], 1);
    let auth = format!("Bearer {token}");
    let ask = |path: &str| request_to(serve.addr, "GET", path, &[("Authorization", &auth)], None);
    assert_eq!(ask("/t/initech/api/tenant").status, 200);

    let out = test.cli(&["tenants", "down", "initech", "--retry-after", "60"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_maintenance(&ask("/t/initech/api/tenant"), Some("60"));
    let out = test.cli(&["tenants", "up", "initech"]);
    assert!(out.status.success());
    assert_eq!(ask("/t/initech/api/tenant").status, 200);

    let out = test.cli(&["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_maintenance(&ask("/t/initech/api/tenant"), None);
    // The admin routes keep working, so the operator can bring it up from there.
    let admin = format!("Bearer {}", test.admin_token);
    for (method, path) in [("GET", "/api/admin/tenants"), ("POST", "/api/admin/up")] {
        let reply = request_to(serve.addr, method, path, &[("Authorization", &admin)], None);
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    assert_eq!(ask("/t/initech/api/tenant").status, 200);
}

#[test]
fn server_wide_maintenance_from_the_admin_api_holds_every_tenant_but_not_the_admin_routes() {
    let test = spawn_app();
    test.create_tenant("initech", &[]);
    test.create_tenant("globex", &[]);
    let down = test.admin("POST", "/api/admin/down", Some(json!({"retry_after": 30})));
    assert_eq!(down.status, 200, "{}", down.text());
    assert_maintenance(&tenant(&test, "initech"), Some("30"));
    assert_maintenance(&tenant(&test, "globex"), Some("30"));
    assert_eq!(test.admin("GET", "/api/admin/tenants", None).status, 200);
    assert_eq!(test.admin("POST", "/api/admin/up", None).status, 200);
    assert_eq!(tenant(&test, "globex").status, 200);
}

#[test]
fn an_allowed_address_passes_and_no_other() {
    // Loopback is a trusted proxy here, so each request says its client in X-Forwarded-For.
    let test = spawn_app_full(
        |_| {},
        |h| h.trusted_proxies = vec!["127.0.0.1".parse().unwrap()],
    );
    test.create_tenant("initech", &[]);
    let down = test.admin(
        "POST",
        "/api/admin/tenants/initech/down",
        Some(json!({"allow_ips": ["203.0.113.7"]})),
    );
    assert_eq!(down.status, 200, "{}", down.text());
    let from = |ip: &str| test.get("/t/initech/api/tenant", &[("X-Forwarded-For", ip)]);
    assert_eq!(from("203.0.113.7").status, 200);
    assert_maintenance(&from("203.0.113.8"), None);
}

#[test]
fn the_secret_url_sets_a_cookie_that_passes_on_that_tenant_only() {
    let test = spawn_app();
    test.create_tenant("initech", &[]);
    test.create_tenant("globex", &[]);
    for (slug, secret) in [("initech", SECRET), ("globex", "another-secret-987654321")] {
        let down = test.admin(
            "POST",
            &format!("/api/admin/tenants/{slug}/down"),
            Some(json!({"secret": secret})),
        );
        assert_eq!(down.status, 200, "{}", down.text());
        assert!(!down.text().contains(secret), "the secret is never shown");
    }
    // A wrong secret is just another held request.
    let wrong = test.call(
        "GET",
        "/not-the-secret-at-all",
        &[("Host", "initech.localhost")],
        None,
    );
    assert_eq!(wrong.status, 503);
    let visit = test.call(
        "GET",
        &format!("/{SECRET}"),
        &[("Host", "initech.localhost")],
        None,
    );
    assert_eq!(visit.status, 303, "{}", visit.text());
    assert_eq!(visit.header("location"), Some("/"));
    let set = visit.header("set-cookie").expect("a cookie").to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    assert!(!set.contains(SECRET), "the cookie is not the secret: {set}");
    let pair = set.split(';').next().unwrap().to_string();
    let with_cookie = |host: &str| {
        let auth = format!("Bearer {}", test.owner_token);
        test.call(
            "GET",
            "/api/tenant",
            &[("Host", host), ("Cookie", &pair), ("Authorization", &auth)],
            None,
        )
    };
    assert_eq!(with_cookie("initech.localhost").status, 200);
    assert_maintenance(&with_cookie("globex.localhost"), None);
    // Under a path prefix, home is the tenant's own.
    let visit = test.call("GET", &format!("/t/initech/{SECRET}"), &[], None);
    assert_eq!(visit.header("location"), Some("/t/initech/"));
    // The other tenant's secret does not open this one.
    let cross = test.call(
        "GET",
        "/another-secret-987654321",
        &[("Host", "initech.localhost")],
        None,
    );
    assert_eq!(cross.status, 503);
}

#[test]
fn a_tenants_job_waits_in_maintenance_without_spending_an_attempt() {
    let test = app_with_workers(0, 10);
    let initech = id(&test.create_tenant("initech", &[]));
    let other = id(&test.create_tenant("globex", &[]));
    let waits = test
        .app
        .enqueue(noop(Some(&initech), json!({})))
        .unwrap()
        .id();
    assert_eq!(
        test.admin("POST", "/api/admin/tenants/initech/down", None)
            .status,
        200
    );
    let mut runner = None;
    let now = jobs::now_ms();
    assert!(jobs::run_next(&test.app, "default", "serve:test", &mut runner, now).unwrap());
    let waiting = job(&test.app, waits);
    assert_eq!((waiting.status, waiting.attempts), (JobStatus::Pending, 0));
    assert!(waiting.run_at > now);
    assert!(waiting.last_error.unwrap().contains("maintenance"));
    // Another tenant's job runs.
    let runs = test
        .app
        .enqueue(noop(Some(&other), json!({})))
        .unwrap()
        .id();
    let later = jobs::now_ms();
    assert!(jobs::run_next(&test.app, "default", "serve:test", &mut runner, later).unwrap());
    assert_eq!(job(&test.app, runs).status, JobStatus::Done);
    // Up again: it runs.
    assert_eq!(
        test.admin("POST", "/api/admin/tenants/initech/up", None)
            .status,
        200
    );
    assert!(jobs::run_next(
        &test.app,
        "default",
        "serve:test",
        &mut runner,
        waiting.run_at
    )
    .unwrap());
    assert_eq!(job(&test.app, waits).status, JobStatus::Done);
}

#[test]
fn channel_authorization_is_refused_for_a_tenant_in_maintenance() {
    let test = spawn_app();
    let initech = id(&test.create_tenant("initech", &[]));
    let other = id(&test.create_tenant("globex", &[]));
    assert_eq!(
        test.admin("POST", "/api/admin/tenants/initech/down", None)
            .status,
        200
    );
    let auth = |company: &str| {
        let form = auth_form("1234.5678", &format!("private-company.{company}.orders"));
        let bearer = format!("Bearer {}", test.owner_token);
        test.call(
            "POST",
            "/broadcasting/auth",
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(&form),
        )
    };
    assert_maintenance(&auth(&initech), None);
    assert_eq!(auth(&other).status, 200, "{}", auth(&other).text());
}

/// Real-time waits as jobs do: the subscriptions made before the tenant went down are not ended
/// (clients do not subscribe again after an error, so ending them would leave open pages deaf
/// once maintenance is over); they go on receiving, when it ends, without doing anything.
#[test]
fn subscriptions_made_before_maintenance_stay_through_it_and_receive_after() {
    let test = spawn_app();
    let initech = id(&test.create_tenant("initech", &[]));
    let owner = test.owner_token.clone();
    let (pat_id, pat) = test.member("pat@initech.test", "initech", "agent");
    let channel = format!("private-company.{initech}.orders");
    let mut kept = test.ws();
    test.join_channel(&mut kept, &owner, &channel);
    let mut removed = test.ws();
    test.join_channel(&mut removed, &pat, &channel);

    let down = test.admin("POST", "/api/admin/tenants/initech/down", None);
    assert_eq!(down.status, 200, "{}", down.text());
    // A re-check pass that ends pat's subscription (he left the company) judged the owner's
    // too, with the tenant down: it stays.
    test.app.catalog.remove_member(&initech, pat_id).unwrap();
    let ended = removed.recv_event("pusher:subscription_error", Some(&channel));
    assert_eq!(frame_data(&ended)["status"], 403);
    kept.assert_nothing_pending();
    let held = test.on(&owner, "initech", "GET", "/api/orders", None);
    assert_maintenance(&held, None);

    let up = test.admin("POST", "/api/admin/tenants/initech/up", None);
    assert_eq!(up.status, 200, "{}", up.text());
    let order = test.on(
        &owner,
        "initech",
        "POST",
        "/api/orders",
        Some(json!({"title": "Boxes", "customer_name": "Ada", "amount_minor": 100})),
    );
    assert_eq!(order.status, 201, "{}", order.text());
    let event = kept.recv_event("order.created", Some(&channel));
    assert_eq!(frame_data(&event)["id"], order.json()["id"], "{event}");
}

#[test]
fn bad_input_is_a_clear_cli_error_and_a_422() {
    let test = spawn_app();
    test.create_tenant("initech", &[]);
    for (args, says) in [
        (
            vec!["tenants", "down", "initech", "--retry-after", "-5"],
            "--retry-after",
        ),
        (
            vec!["tenants", "down", "initech", "--retry-after", "soon"],
            "--retry-after",
        ),
        (
            vec!["tenants", "down", "initech", "--allow-ip", "10.0.0.300"],
            "--allow-ip",
        ),
        (vec!["down", "--secret", "short"], "--secret"),
    ] {
        let out = test.cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = test.cli(&["tenants", "down", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    for (body, field) in [
        (json!({"retry_after": -1}), "retry_after"),
        (json!({"allow_ips": ["not-an-ip"]}), "allow_ip"),
        (json!({"secret": "a/b"}), "secret"),
    ] {
        let reply = test.admin("POST", "/api/admin/tenants/initech/down", Some(body));
        assert_eq!(reply.status, 422, "{}", reply.text());
        assert!(reply.text().contains(field), "{}", reply.text());
    }
    assert_eq!(
        test.admin("POST", "/api/admin/tenants/nobody/down", None)
            .status,
        404
    );
    // Nothing was taken down by any of them.
    assert_eq!(tenant(&test, "initech").status, 200);
}
