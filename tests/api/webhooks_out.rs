//! Outbound webhook endpoints over the API (`/api/webhook-endpoints`): the secret shown once,
//! validation, the address guard when an endpoint is registered, `settings_manage`, and
//! isolation between tenants. Deliveries are in `webhooks_out_delivery.rs`.

use serde_json::{json, Value};

use crate::support::*;

/// A public address that no test ever delivers to (no event is made while it is registered).
const PUBLIC_URL: &str = "https://93.184.215.14/hooks/tenantd";

fn endpoints(
    app: &TestApp,
    token: &str,
    slug: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Reply {
    app.on(
        token,
        slug,
        method,
        &format!("/api/webhook-endpoints{path}"),
        body,
    )
}

fn register(app: &TestApp, slug: &str, url: &str, events: Value) -> Value {
    let reply = endpoints(
        app,
        &app.owner_token.clone(),
        slug,
        "POST",
        "",
        Some(json!({"url": url, "events": events})),
    );
    expect(&reply, 201, "register an endpoint");
    reply.json()
}

#[test]
fn an_endpoint_is_made_read_changed_and_deleted_and_its_secret_shown_once() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let owner = app.owner_token.clone();
    let reply = endpoints(
        &app,
        &owner,
        "acme",
        "POST",
        "",
        Some(
            json!({"url": PUBLIC_URL, "events": ["order.created", "order.created", "member.added"], "description": "ERP"}),
        ),
    );
    expect(&reply, 201, "create");
    let created = reply.json();
    let secret = text(&created["secret"]);
    let key = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    let bytes = data_encoding::BASE64
        .decode(key.as_bytes())
        .expect("base64");
    assert!(bytes.len() >= 24, "{} random bytes", bytes.len());
    assert_eq!(created["events"], json!(["member.added", "order.created"]));
    assert_eq!(created["enabled"], json!(true));
    assert_eq!(created["description"], json!("ERP"));
    let id = int(&created["id"]);

    let list = endpoints(&app, &owner, "acme", "GET", "", None);
    expect(&list, 200, "list");
    let list = list.json();
    assert_eq!(list["endpoints"].as_array().unwrap().len(), 1);
    assert!(list["events"]
        .as_array()
        .unwrap()
        .contains(&json!("order.created")));
    let shown = endpoints(&app, &owner, "acme", "GET", &format!("/{id}"), None);
    expect(&shown, 200, "show");
    for body in [shown.text(), serde_json::to_string(&list).unwrap()] {
        assert!(
            !body.contains(&secret),
            "the secret is answered once only: {body}"
        );
        assert!(!body.contains("whsec_"), "{body}");
    }

    let patched = endpoints(
        &app,
        &owner,
        "acme",
        "PATCH",
        &format!("/{id}"),
        Some(json!({"url": "https://93.184.215.14/other", "events": ["*"], "enabled": false})),
    );
    expect(&patched, 200, "patch");
    let patched = patched.json();
    assert_eq!(patched["url"], json!("https://93.184.215.14/other"));
    assert_eq!(patched["events"], json!(["*"]));
    assert_eq!(patched["enabled"], json!(false));
    assert!(!patched.to_string().contains("whsec_"));

    let deliveries = endpoints(
        &app,
        &owner,
        "acme",
        "GET",
        &format!("/{id}/deliveries"),
        None,
    );
    expect(&deliveries, 200, "empty log");
    assert_eq!(deliveries.json()["deliveries"], json!([]));

    let audit = app.on(
        &owner,
        "acme",
        "GET",
        "/api/audit?action=webhook_endpoint.created",
        None,
    );
    expect(&audit, 200, "audit");
    assert_eq!(audit.json()["entries"].as_array().unwrap().len(), 1);

    expect(
        &endpoints(&app, &owner, "acme", "DELETE", &format!("/{id}"), None),
        200,
        "delete",
    );
    expect_error(
        &endpoints(&app, &owner, "acme", "GET", &format!("/{id}"), None),
        404,
        "not_found",
        "deleted",
    );
    expect_error(
        &endpoints(&app, &owner, "acme", "DELETE", &format!("/{id}"), None),
        404,
        "not_found",
        "deleted twice",
    );
}

#[test]
fn rotating_answers_the_new_secret_once_and_keeps_the_old_one_for_the_grace() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let created = register(&app, "acme", PUBLIC_URL, json!(["*"]));
    let id = int(&created["id"]);
    assert_eq!(created["previous_secret_expires_at"], Value::Null);
    let owner = app.owner_token.clone();
    let rotated = endpoints(
        &app,
        &owner,
        "acme",
        "POST",
        &format!("/{id}/rotate-secret"),
        None,
    );
    expect(&rotated, 200, "rotate");
    let rotated = rotated.json();
    let new = text(&rotated["secret"]);
    assert!(new.starts_with("whsec_"));
    assert_ne!(new, text(&created["secret"]));
    // 24 hours by default.
    let until = text(&rotated["previous_secret_expires_at"]);
    assert!(until.ends_with('Z'), "{until}");
    let shown = endpoints(&app, &owner, "acme", "GET", &format!("/{id}"), None).json();
    assert_eq!(shown["previous_secret_expires_at"], json!(until));
    assert!(!shown.to_string().contains("whsec_"));
    expect_error(
        &endpoints(&app, &owner, "acme", "POST", "/999/rotate-secret", None),
        404,
        "not_found",
        "rotate nothing",
    );
}

#[test]
fn bad_endpoints_are_refused_naming_every_field() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let owner = app.owner_token.clone();
    let post = |body: Value| endpoints(&app, &owner, "acme", "POST", "", Some(body));
    let fields = |reply: &Reply| -> Vec<String> {
        let mut keys: Vec<String> = reply.json()["error"]["fields"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    };
    let missing = post(json!({}));
    expect_error(&missing, 422, "validation_failed", "nothing given");
    assert_eq!(fields(&missing), ["events", "url"]);
    for (what, body, bad) in [
        (
            "ftp",
            json!({"url": "ftp://93.184.215.14/", "events": ["*"]}),
            vec!["url"],
        ),
        (
            "relative",
            json!({"url": "/hook", "events": ["*"]}),
            vec!["url"],
        ),
        (
            "credentials",
            json!({"url": "https://u:p@93.184.215.14/", "events": ["*"]}),
            vec!["url"],
        ),
        (
            "unknown event",
            json!({"url": PUBLIC_URL, "events": ["order.exploded"]}),
            vec!["events"],
        ),
        (
            "no event",
            json!({"url": PUBLIC_URL, "events": []}),
            vec!["events"],
        ),
        (
            "all bad",
            json!({"url": "nope", "events": ["x"], "description": "d".repeat(501)}),
            vec!["description", "events", "url"],
        ),
    ] {
        let reply = post(body);
        expect_error(&reply, 422, "validation_failed", what);
        assert_eq!(fields(&reply), bad, "{what}");
    }
    expect_error(
        &post(json!({"url": 7, "events": ["*"]})),
        422,
        "validation_failed",
        "a number for the url",
    );
    let raw = app.call(
        "POST",
        "/t/acme/api/webhook-endpoints",
        &[("Authorization", &format!("Bearer {owner}"))],
        Some("{not json"),
    );
    expect_error(&raw, 400, "invalid_json", "broken JSON");
    let id = int(&register(&app, "acme", PUBLIC_URL, json!(["*"]))["id"]);
    let reply = endpoints(
        &app,
        &owner,
        "acme",
        "PATCH",
        &format!("/{id}"),
        Some(json!({"url": "http://10.0.0.8/"})),
    );
    expect_error(
        &reply,
        422,
        "validation_failed",
        "patch to a private address",
    );
    assert_eq!(fields(&reply), ["url"]);
    let reply = endpoints(
        &app,
        &owner,
        "acme",
        "GET",
        &format!("/{id}/deliveries?limit=0"),
        None,
    );
    expect_error(&reply, 422, "validation_failed", "limit 0");
}

#[test]
fn private_and_loopback_targets_are_refused_unless_allowed() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let owner = app.owner_token.clone();
    for url in [
        "http://127.0.0.1/",
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/",
        "http://172.16.5.4/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0:80/",
        "http://[::1]:8080/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:9000/",
    ] {
        let reply = endpoints(
            &app,
            &owner,
            "acme",
            "POST",
            "",
            Some(json!({"url": url, "events": ["*"]})),
        );
        expect_error(&reply, 422, "validation_failed", url);
        assert!(
            text(&reply.json()["error"]["fields"]["url"]).contains("--webhooks-allow-private"),
            "{url}: {}",
            reply.text()
        );
    }

    let on_prem = spawn_app_with(|c| c.webhooks.allow_private = true);
    on_prem.create_tenant("acme", &[]);
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://[::1]:8080/",
        "http://localhost:9000/",
    ] {
        register(&on_prem, "acme", url, json!(["*"]));
    }
}

#[test]
fn only_settings_manage_reaches_endpoints() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let id = int(&register(&app, "acme", PUBLIC_URL, json!(["*"]))["id"]);
    let manager = app.member_token("manager@acme.test", "acme", "manager");
    app.create_role("acme", "integrator", &["settings_manage"]);
    let integrator = app.member_token("integrator@acme.test", "acme", "integrator");
    let calls = [
        ("GET", String::new(), None),
        (
            "POST",
            String::new(),
            Some(json!({"url": PUBLIC_URL, "events": ["*"]})),
        ),
        ("GET", format!("/{id}"), None),
        ("PATCH", format!("/{id}"), Some(json!({"enabled": false}))),
        ("GET", format!("/{id}/deliveries"), None),
        ("POST", format!("/{id}/rotate-secret"), None),
        ("DELETE", format!("/{id}"), None),
    ];
    for (method, path, body) in &calls {
        let reply = endpoints(&app, &manager, "acme", method, path, body.clone());
        expect_error(
            &reply,
            403,
            "forbidden",
            &format!("manager {method} {path}"),
        );
    }
    for (method, path, body) in &calls {
        let reply = endpoints(&app, &integrator, "acme", method, path, body.clone());
        assert!(
            reply.status == 200 || reply.status == 201,
            "integrator {method} {path}: {}",
            reply.text()
        );
    }
}

#[test]
fn one_tenants_admin_never_reaches_anothers_endpoints() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let acme_admin = app.member_token("admin@acme.test", "acme", "admin");
    let globex_admin = app.member_token("admin@globex.test", "globex", "admin");
    // globex holds ids 1 and 2; acme only 1, so acme's 2 names nothing of acme's.
    let post = json!({"url": PUBLIC_URL, "events": ["*"]});
    for _ in 0..2 {
        expect(
            &endpoints(
                &app,
                &globex_admin,
                "globex",
                "POST",
                "",
                Some(post.clone()),
            ),
            201,
            "globex",
        );
    }
    expect(
        &endpoints(&app, &acme_admin, "acme", "POST", "", Some(post.clone())),
        201,
        "acme",
    );

    for (method, path, body) in [
        ("GET", "/2", None),
        ("PATCH", "/2", Some(json!({"enabled": false}))),
        ("GET", "/2/deliveries", None),
        ("POST", "/2/rotate-secret", None),
        ("DELETE", "/2", None),
    ] {
        let reply = endpoints(&app, &acme_admin, "acme", method, path, body.clone());
        expect_error(&reply, 404, "not_found", &format!("acme {method} {path}"));
        let reply = endpoints(&app, &acme_admin, "globex", method, path, body);
        expect_error(
            &reply,
            403,
            "not_a_member",
            &format!("acme on globex {method} {path}"),
        );
    }
    let acme_list = endpoints(&app, &acme_admin, "acme", "GET", "", None).json();
    assert_eq!(acme_list["endpoints"].as_array().unwrap().len(), 1);
    // globex's are untouched: both there, enabled, never rotated.
    let globex_list = endpoints(&app, &globex_admin, "globex", "GET", "", None).json();
    let list = globex_list["endpoints"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list
        .iter()
        .all(|e| e["enabled"] == json!(true) && e["previous_secret_expires_at"].is_null()));
}
