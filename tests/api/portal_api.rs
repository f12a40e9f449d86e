//! What the admin portal asks of the API beside the tenant lifecycle: each tenant's health, its
//! members (to choose whom to impersonate), impersonation by cookie, the CSRF token of a cookie
//! session, the QR code of a two-factor enrolment.

use std::fs;

use serde_json::{json, Value};
use tenantd::catalog::unix_now;

use crate::support::{
    expect, expect_error, id, spawn_app, text, Reply, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD,
    OWNER_EMAIL,
};

fn tenant_files(app: &TestApp) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(app.data.path().join("tenants"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn health(app: &TestApp, tenant: &str) -> Value {
    let reply = app.admin("GET", &format!("/api/admin/tenants/{tenant}/health"), None);
    expect(&reply, 200, "health");
    reply.json()
}

/// A call carrying the session cookie (and the CSRF header when given) on `host`.
fn by_cookie(
    app: &TestApp,
    host: &str,
    cookie: &str,
    csrf: Option<&str>,
    method: &str,
    path: &str,
) -> Reply {
    let cookie = format!("tenantd_session={cookie}");
    let mut headers = vec![("Host", host), ("Cookie", cookie.as_str())];
    if let Some(csrf) = csrf {
        headers.push(("X-CSRF-Token", csrf));
    }
    app.call(method, path, &headers, None)
}

#[test]
fn health_of_an_unopened_tenant_opens_no_pool_and_makes_no_file() {
    let app = spawn_app();
    let acme = app.create_tenant("acme", &[]);
    let files = tenant_files(&app);
    let stats = app.app.registry.stats();
    assert_eq!(stats.open_pools, 0);

    for key in ["acme".to_string(), id(&acme)] {
        let health = health(&app, &key);
        assert_eq!(health["tenant_id"], acme["id"]);
        assert_eq!(health["slug"], "acme");
        assert_eq!(health["status"], "active");
        assert_eq!(health["pool_open"], false);
        assert_eq!(health["last_access"], Value::Null);
        assert_eq!(health["file_exists"], true);
        assert!(health["file_bytes"].as_u64().unwrap() > 0, "{health}");
        assert_eq!(health["wal_bytes"], 0, "closed cleanly: no log");
        assert!(health["latest_schema_version"].as_u64().unwrap() > 0);
        assert_eq!(
            health["schema_version"], health["latest_schema_version"],
            "provisioned at the latest: {health}"
        );
        assert_eq!(health["error"], Value::Null);
    }
    assert_eq!(app.app.registry.stats(), stats, "no pool opened by asking");
    assert_eq!(tenant_files(&app), files, "no -wal or -shm made by asking");
}

#[test]
fn health_after_a_request_shows_the_pool_open_and_when_it_was_used() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let before = unix_now();
    expect(
        &app.get("/t/acme/api/tenant", &[]),
        200,
        "a request on acme",
    );
    let after = unix_now();

    let acme = health(&app, "acme");
    assert_eq!(acme["pool_open"], true);
    let used = acme["last_access"].as_i64().expect("last_access set");
    // Whole seconds of a clock read at start and advanced by the monotonic one.
    assert!(
        (before - 1..=after + 1).contains(&used),
        "{used} not within {before}..={after}"
    );
    assert!(acme["file_bytes"].as_u64().unwrap() > 0);
    assert_eq!(acme["schema_version"], acme["latest_schema_version"]);
    // The other tenant is untouched.
    let globex = health(&app, "globex");
    assert_eq!(
        (&globex["pool_open"], &globex["last_access"]),
        (&json!(false), &Value::Null)
    );
    assert_eq!(app.app.registry.stats().open_pools, 1);
}

#[test]
fn health_of_a_missing_file_says_so_and_a_purged_tenant_is_not_found() {
    let app = spawn_app();
    let acme = app.create_tenant("acme", &[]);
    let globex = app.create_tenant("globex", &[]);
    tenantd::db::remove_database_files(&app.tenant_file(&id(&acme))).unwrap();
    let files = tenant_files(&app);

    let gone = health(&app, "acme");
    assert_eq!(gone["file_exists"], false);
    assert_eq!(gone["file_bytes"], Value::Null);
    assert_eq!(gone["schema_version"], Value::Null);
    assert!(
        text(&gone["error"]).contains("missing"),
        "the reason is given: {gone}"
    );
    assert_eq!(gone["pool_open"], false);
    assert_eq!(tenant_files(&app), files, "the file is not made again");
    assert!(!app.tenant_file(&id(&acme)).exists());

    // Deleted, it still has a health; purged, there is no tenant to ask about.
    expect(
        &app.admin("DELETE", "/api/admin/tenants/globex", None),
        200,
        "delete",
    );
    assert_eq!(health(&app, "globex")["status"], "deleted");
    expect(
        &app.admin("POST", "/api/admin/tenants/globex/purge", None),
        200,
        "purge",
    );
    for key in ["globex".to_string(), id(&globex)] {
        expect_error(
            &app.admin("GET", &format!("/api/admin/tenants/{key}/health"), None),
            404,
            "tenant_not_found",
            "a purged tenant",
        );
    }
}

#[test]
fn members_of_a_tenant_with_their_roles_for_a_system_admin() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let (bob, _) = app.member("bob@example.test", "acme", "agent");
    let (gus, _) = app.member("gus@example.test", "globex", "viewer");

    // (id, email, name, role) of each member, as the tenant's members list answers them.
    let people = |tenant: &str| -> Vec<(i64, String, String, String)> {
        let reply = app.admin("GET", &format!("/api/admin/tenants/{tenant}/members"), None);
        expect(&reply, 200, "members");
        reply.json()["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let user = &m["user"];
                let id = user["id"].as_i64().unwrap();
                (
                    id,
                    text(&user["email"]),
                    text(&user["name"]),
                    text(&m["role"]),
                )
            })
            .collect()
    };
    let owner = |role: &str| {
        (
            app.owner_id,
            OWNER_EMAIL.into(),
            "owner".into(),
            role.into(),
        )
    };
    assert_eq!(
        people("acme"),
        [
            (bob, "bob@example.test".into(), "bob".into(), "agent".into()),
            owner("admin"),
        ]
    );
    assert_eq!(
        people("globex"),
        [
            (
                gus,
                "gus@example.test".into(),
                "gus".into(),
                "viewer".into()
            ),
            owner("admin"),
        ],
        "globex's only"
    );
    expect_error(
        &app.admin("GET", "/api/admin/tenants/nope/members", None),
        404,
        "tenant_not_found",
        "no such tenant",
    );
}

#[test]
fn portal_endpoints_are_for_system_admins_on_the_central_host_only() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    let admin = format!("Bearer {}", app.admin_token);
    let owner = format!("Bearer {}", app.owner_token);
    for path in [
        "/api/admin/tenants/acme/health",
        "/api/admin/tenants/acme/members",
        "/api/admin/tenants/globex/health",
        "/api/admin/tenants/globex/members",
    ] {
        // acme's own admin, on the central host, on acme's host, on its path.
        for (name, reply, status, code) in [
            (
                "a tenant admin",
                app.call("GET", path, &[("Authorization", &owner)], None),
                403,
                "forbidden",
            ),
            (
                "a tenant admin on the tenant's host",
                app.call(
                    "GET",
                    path,
                    &[("Authorization", &owner), ("Host", "acme.localhost")],
                    None,
                ),
                404,
                "not_found",
            ),
            (
                "a system admin on a tenant's host",
                app.call(
                    "GET",
                    path,
                    &[("Authorization", &admin), ("Host", "acme.localhost")],
                    None,
                ),
                404,
                "not_found",
            ),
            (
                "a system admin under a tenant's path",
                app.call(
                    "GET",
                    &format!("/t/acme{path}"),
                    &[("Authorization", &admin)],
                    None,
                ),
                404,
                "not_found",
            ),
            (
                "nobody",
                app.call("GET", path, &[], None),
                401,
                "unauthorized",
            ),
        ] {
            expect_error(&reply, status, code, &format!("{name}: {path}"));
        }
    }
    assert_eq!(app.app.registry.stats().pools_opened, 0);
}

#[test]
fn impersonation_exchanged_by_a_browser_sets_the_cookie_and_logout_ends_it() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let (bob, _) = app.member("bob@example.test", "acme", "agent");
    let ticket = app.admin(
        "POST",
        "/api/admin/tenants/acme/impersonate",
        Some(json!({"user_id": bob})),
    );
    expect(&ticket, 201, "ticket");
    let ticket = text(&ticket.json()["ticket"]);

    // The tenant's page posts the ticket, with no credentials of its own.
    let host = "acme.localhost";
    let exchanged = app.call(
        "POST",
        "/api/auth/impersonate",
        &[("Host", host)],
        Some(&json!({"ticket": ticket}).to_string()),
    );
    expect(&exchanged, 200, "exchange");
    let body = exchanged.json();
    let csrf = text(&body["csrf_token"]);
    let cookie = exchanged.header("set-cookie").expect("a session cookie");
    let session = cookie
        .strip_prefix("tenantd_session=")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("{cookie}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert_eq!(session, text(&body["token"]));

    let me = by_cookie(&app, host, session, None, "GET", "/api/me");
    expect(&me, 200, "me by cookie");
    let me = me.json();
    assert_eq!(me["impersonated"], true);
    assert_eq!(me["user"]["email"], "bob@example.test");
    assert_eq!(me["impersonated_by"]["email"], ADMIN_EMAIL);
    assert_eq!(me["csrf_token"], csrf.as_str());
    expect(
        &by_cookie(&app, host, session, None, "GET", "/api/tenant"),
        200,
        "the workspace as bob",
    );

    let out = by_cookie(&app, host, session, Some(&csrf), "POST", "/api/auth/logout");
    expect(&out, 200, "logout ends the impersonation");
    let cleared = out.header("set-cookie").expect("the cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    expect_error(
        &by_cookie(&app, host, session, None, "GET", "/api/me"),
        401,
        "unauthorized",
        "after logout",
    );
    // The admin's own session is untouched.
    expect(
        &app.admin("GET", "/api/admin/me", None),
        200,
        "admin still in",
    );
}

#[test]
fn admin_me_answers_the_csrf_token_to_a_cookie_session_only() {
    let app = spawn_app();
    let login = app.call(
        "POST",
        "/api/admin/auth/login",
        &[],
        Some(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).to_string()),
    );
    expect(&login, 200, "admin login");
    let login = login.json();
    let (token, csrf) = (text(&login["token"]), text(&login["csrf_token"]));

    let me = by_cookie(&app, "localhost", &token, None, "GET", "/api/admin/me");
    expect(&me, 200, "admin me by cookie");
    assert_eq!(me.json()["admin"]["email"], ADMIN_EMAIL);
    assert_eq!(me.json()["csrf_token"], csrf.as_str());
    // What the portal then sends is accepted.
    let enrol = by_cookie(
        &app,
        "localhost",
        &token,
        Some(&text(&me.json()["csrf_token"])),
        "POST",
        "/api/admin/totp/enrol",
    );
    expect(&enrol, 200, "a write with the token from me");

    let bearer = app.as_bearer(&token, "GET", "/api/admin/me", &[], None);
    expect(&bearer, 200, "admin me by bearer");
    assert_eq!(
        bearer.json()["csrf_token"],
        Value::Null,
        "no cookie, no token"
    );
}

#[test]
fn totp_enrolment_answers_a_qr_code_of_its_uri_as_an_svg_data_url() {
    let app = spawn_app();
    let reply = app.admin("POST", "/api/admin/totp/enrol", None);
    expect(&reply, 200, "enrol");
    let body = reply.json();
    assert!(text(&body["otpauth_uri"]).starts_with("otpauth://totp/"));
    let url = text(&body["qr_data_url"]);
    let encoded = url
        .strip_prefix("data:image/svg+xml;base64,")
        .unwrap_or_else(|| panic!("not an SVG data URL: {url}"));
    let svg = data_encoding::BASE64
        .decode(encoded.as_bytes())
        .expect("base64");
    let svg = String::from_utf8(svg).expect("UTF-8 text");
    assert!(
        svg.starts_with("<?xml") || svg.starts_with("<svg"),
        "{svg:.80}"
    );
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    // A new enrolment, a new secret, a new picture.
    let again = app.admin("POST", "/api/admin/totp/enrol", None).json();
    assert_ne!(again["qr_data_url"], body["qr_data_url"]);
}
