//! A tenant's display name changed after creation: `PATCH /api/admin/tenants/{t}` with
//! `{slug?, name?}` and `tenantd tenants rename <slug> [<new-slug>] --name`. The name lives in
//! the catalog row and in the tenant file's `tenant_meta`, where `GET /api/tenant` reads it, so
//! the tests open that route's pool (and its kept answer) before the change.

use serde_json::{json, Value};

use crate::support::{expect, expect_error, spawn_app, Reply, TestApp};

const CACHE_STATUS: &str = "cache-status";

/// `GET /t/{slug}/api/tenant` as `token`, asked twice so that the second answer is the one the
/// pool keeps: the pool is open and its answers cache in play before anything changes.
fn tenant_kept(app: &TestApp, slug: &str, token: &str) -> Value {
    let path = format!("/t/{slug}/api/tenant");
    expect(&app.as_bearer(token, "GET", &path, &[], None), 200, &path);
    let kept = app.as_bearer(token, "GET", &path, &[], None);
    expect(&kept, 200, &path);
    assert_eq!(kept.header(CACHE_STATUS), Some("tenantd; hit"), "{path}");
    kept.json()
}

fn tenant_now(app: &TestApp, slug: &str, token: &str) -> Reply {
    app.as_bearer(token, "GET", &format!("/t/{slug}/api/tenant"), &[], None)
}

/// The file's own `tenant_meta` value, read beside the server.
fn file_meta(app: &TestApp, id: &str, key: &str) -> String {
    let conn = rusqlite::Connection::open(app.tenant_file(id)).expect("open tenant file");
    conn.query_row(
        "SELECT value FROM tenant_meta WHERE key = ?1",
        [key],
        |row| row.get(0),
    )
    .expect("tenant_meta row")
}

fn rename(app: &TestApp, slug: &str, body: Value) -> Reply {
    app.admin("PATCH", &format!("/api/admin/tenants/{slug}"), Some(body))
}

/// The `tenant.renamed` entries of one tenant, newest first: their details.
fn renamed_details(app: &TestApp, tenant_id: &str) -> Vec<Value> {
    let reply = app.admin(
        "GET",
        &format!("/api/admin/audit?tenant={tenant_id}&action=tenant.renamed"),
        None,
    );
    expect(&reply, 200, "audit");
    reply.json()["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["details"].clone())
        .collect()
}

/// Acme and globex, each with its pool open and its `GET /api/tenant` kept, for the owner (a
/// member of both): the records and the owner's token.
fn two_tenants_kept(app: &TestApp) -> (Value, Value, String) {
    let acme = app.create_tenant("acme", &[]);
    let globex = app.create_tenant("globex", &[]);
    let token = app.owner_token.clone();
    assert_eq!(tenant_kept(app, "acme", &token)["name"], "acme Inc");
    assert_eq!(tenant_kept(app, "globex", &token)["name"], "globex Inc");
    (acme, globex, token)
}

/// The CLI against the app's data directory; it must succeed.
fn cli_ok(app: &TestApp, args: &[&str]) -> Vec<u8> {
    let out = app.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_new_name_reaches_the_catalog_and_the_file_that_an_open_pool_answers_from() {
    let app = spawn_app();
    let (acme, globex, token) = two_tenants_kept(&app);

    let reply = rename(&app, "acme", json!({"name": "  Acme Corporation "}));
    expect(&reply, 200, "rename");
    assert_eq!(reply.json()["name"], "Acme Corporation", "trimmed");
    assert_eq!(reply.json()["slug"], "acme", "the slug stays");

    let shown = app.admin("GET", "/api/admin/tenants/acme", None);
    assert_eq!(shown.json()["name"], "Acme Corporation");
    let listed = app.admin("GET", "/api/admin/tenants", None).json();
    let names: Vec<&str> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Acme Corporation", "globex Inc"]);

    // The member's view comes from the file, through the pool that was open all along: its
    // kept answer must not outlive the commit another connection made.
    let seen = tenant_now(&app, "acme", &token);
    expect(&seen, 200, "GET /api/tenant after the rename");
    assert_ne!(seen.header(CACHE_STATUS), Some("tenantd; hit"));
    assert_eq!(seen.json()["name"], "Acme Corporation");
    assert_eq!(seen.json()["slug"], "acme");
    assert_eq!(
        file_meta(&app, acme["id"].as_str().unwrap(), "name"),
        "Acme Corporation"
    );

    // Globex's file was not written at all: its kept answer is still served.
    let other = tenant_now(&app, "globex", &token);
    assert_eq!(other.header(CACHE_STATUS), Some("tenantd; hit"));
    assert_eq!(other.json()["name"], "globex Inc");
    let globex_id = globex["id"].as_str().unwrap();
    assert_eq!(file_meta(&app, globex_id, "name"), "globex Inc");
    assert_eq!(file_meta(&app, globex_id, "slug"), "globex");
    assert_eq!(
        app.admin("GET", "/api/admin/tenants/globex", None).json()["name"],
        "globex Inc"
    );

    assert_eq!(
        renamed_details(&app, acme["id"].as_str().unwrap()),
        [json!({"name": {"from": "acme Inc", "to": "Acme Corporation"}})]
    );
    assert!(renamed_details(&app, globex_id).is_empty());
}

#[test]
fn slug_and_name_change_together_in_one_call() {
    let app = spawn_app();
    let acme = app.create_tenant("acme", &[]);
    let id = acme["id"].as_str().unwrap();
    let token = app.owner_token.clone();
    tenant_kept(&app, "acme", &token);

    let reply = rename(
        &app,
        "acme",
        json!({"slug": "acme-co", "name": "Acme & Co"}),
    );
    expect(&reply, 200, "rename");
    assert_eq!(
        (reply.json()["slug"].clone(), reply.json()["name"].clone()),
        (json!("acme-co"), json!("Acme & Co"))
    );
    expect_error(
        &tenant_now(&app, "acme", &token),
        404,
        "tenant_not_found",
        "the old slug",
    );
    let seen = tenant_now(&app, "acme-co", &token).json();
    assert_eq!(
        (seen["slug"].clone(), seen["name"].clone()),
        (json!("acme-co"), json!("Acme & Co"))
    );
    assert_eq!(seen["id"], id);
    assert_eq!(
        renamed_details(&app, id),
        [json!({
            "slug": {"from": "acme", "to": "acme-co"},
            "name": {"from": "acme Inc", "to": "Acme & Co"},
        })]
    );

    // The tenant is found by its id too; giving what is there changes nothing and logs nothing.
    let same = rename(&app, id, json!({"slug": "acme-co", "name": "Acme & Co"}));
    expect(&same, 200, "the same again");
    assert_eq!(renamed_details(&app, id).len(), 1);
    // The slug alone, as before: the name stays.
    let back = rename(&app, "acme-co", json!({"slug": "acme"}));
    assert_eq!(back.json()["name"], "Acme & Co");
    assert_eq!(tenant_now(&app, "acme", &token).json()["name"], "Acme & Co");
}

#[test]
fn a_bad_or_missing_name_is_a_422_naming_the_field_and_changes_nothing() {
    let app = spawn_app();
    let acme = app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let long = "x".repeat(101);
    for (body, field) in [
        (json!({}), "slug"),
        (json!({"slug": null, "name": null}), "slug"),
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "Acme\u{7}"}), "name"),
        (json!({"name": long}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"slug": "Not A Slug", "name": "Fine"}), "slug"),
        (json!({"slug": "acme-2", "name": "Acme\nTwo"}), "name"),
    ] {
        let reply = rename(&app, "acme", body.clone());
        expect_error(&reply, 422, "validation_failed", &body.to_string());
        let fields = &reply.json()["error"]["fields"];
        assert!(fields[field].is_string(), "{body}: {}", reply.text());
    }
    let nothing = rename(&app, "acme", json!({})).json();
    assert_eq!(
        nothing["error"]["fields"]["slug"],
        "nothing to change: give a new slug, a new name, or both"
    );
    expect_error(
        &rename(&app, "acme", json!({"slug": "globex", "name": "Taken"})),
        409,
        "slug_taken",
        "a slug another tenant has",
    );
    expect_error(
        &rename(&app, "nope", json!({"name": "Nobody"})),
        404,
        "tenant_not_found",
        "an unknown tenant",
    );

    let shown = app.admin("GET", "/api/admin/tenants/acme", None).json();
    assert_eq!(
        (shown["slug"].clone(), shown["name"].clone()),
        (json!("acme"), json!("acme Inc"))
    );
    assert_eq!(
        file_meta(&app, acme["id"].as_str().unwrap(), "name"),
        "acme Inc"
    );
    assert!(renamed_details(&app, acme["id"].as_str().unwrap()).is_empty());
}

#[test]
fn only_a_system_admin_may_rename_and_only_on_the_central_host() {
    let app = spawn_app();
    let acme = app.create_tenant("acme", &[]);
    let body = json!({"name": "Hijacked"});
    let member = app.as_bearer(
        &app.owner_token.clone(),
        "PATCH",
        "/api/admin/tenants/acme",
        &[],
        Some(body.clone()),
    );
    assert_eq!(member.status, 403, "a tenant's admin: {}", member.text());
    let anonymous = app.call(
        "PATCH",
        "/api/admin/tenants/acme",
        &[("Content-Type", "application/json")],
        Some(&body.to_string()),
    );
    assert_eq!(
        anonymous.status,
        401,
        "no credentials: {}",
        anonymous.text()
    );
    // The system admin's own token, but on a tenant: admin routes are not there.
    let on_tenant = app.as_bearer(
        &app.admin_token.clone(),
        "PATCH",
        "/t/acme/api/admin/tenants/acme",
        &[],
        Some(body),
    );
    assert_eq!(on_tenant.status, 404, "{}", on_tenant.text());
    assert_eq!(
        app.admin("GET", "/api/admin/tenants/acme", None).json()["name"],
        "acme Inc"
    );
    assert_eq!(
        file_meta(&app, acme["id"].as_str().unwrap(), "name"),
        "acme Inc"
    );
}

#[test]
fn the_cli_renames_with_name_beside_the_running_server() {
    let app = spawn_app();
    let (acme, globex, token) = two_tenants_kept(&app);

    let out = cli_ok(
        &app,
        &[
            "tenants",
            "rename",
            "acme",
            "--name",
            "Acme From The Shell",
            "--json",
        ],
    );
    let printed: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(
        (printed["slug"].clone(), printed["name"].clone()),
        (json!("acme"), json!("Acme From The Shell"))
    );
    // Another process's commit, seen by the server on its next request.
    assert_eq!(
        tenant_now(&app, "acme", &token).json()["name"],
        "Acme From The Shell"
    );
    assert_eq!(
        app.admin("GET", "/api/admin/tenants/acme", None).json()["name"],
        "Acme From The Shell"
    );
    let other = tenant_now(&app, "globex", &token);
    assert_eq!(other.header(CACHE_STATUS), Some("tenantd; hit"));
    assert_eq!(
        file_meta(&app, globex["id"].as_str().unwrap(), "name"),
        "globex Inc"
    );

    // Both at once, the option before the arguments; then the audit says what changed.
    cli_ok(
        &app,
        &[
            "tenants", "rename", "--name", "Acme Two", "acme", "acme-two",
        ],
    );
    let seen = tenant_now(&app, "acme-two", &token).json();
    assert_eq!(
        (seen["slug"].clone(), seen["name"].clone()),
        (json!("acme-two"), json!("Acme Two"))
    );
    let id = acme["id"].as_str().unwrap();
    assert_eq!(
        renamed_details(&app, id),
        [
            json!({"via": "cli", "slug": {"from": "acme", "to": "acme-two"}, "name": {"from": "Acme From The Shell", "to": "Acme Two"}}),
            json!({"via": "cli", "name": {"from": "acme Inc", "to": "Acme From The Shell"}}),
        ]
    );

    // Nothing to change is a usage error; a bad name the same error as the API's.
    for (args, code, says) in [
        (&["tenants", "rename", "acme-two"][..], 2, "--name"),
        (
            &["tenants", "rename", "acme-two", "--name", " "],
            1,
            "invalid name",
        ),
    ] {
        let out = app.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(file_meta(&app, id, "name"), "Acme Two");

    let help = app.cli(&["tenants", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout)
        .contains("rename <slug> [<new-slug>] [--name <name>]"));
}
