//! Identity and access through the real server: the cross-tenant matrix, login (same answer for
//! every failure, throttling, the hashing pool, hash upgrades), sessions and tokens (logout,
//! password changes, expiry, CSRF, tenant binding), roles, TOTP, impersonation, the audit log,
//! the identity CLI, and bad input.

use std::collections::BTreeSet;
use std::sync::Barrier;
use std::time::Duration;

use serde_json::{json, Value};
use tenantd::auth::hasher::HasherConfig;
use tenantd::auth::throttle::ThrottleConfig;
use tenantd::auth::{token, totp};
use tenantd::catalog::unix_now;

use crate::invitations::{accept, invite};
use crate::support::{
    spawn_app, spawn_app_full, spawn_app_with, Reply, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD,
    OWNER_EMAIL, OWNER_PASSWORD,
};

const ARGON2ID_OWASP: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

fn id(record: &Value) -> String {
    record["id"].as_str().expect("record id").to_string()
}

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("not an integer: {value}"))
}

pub(crate) fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_string()
}

/// Asserts the status, showing the body when it differs.
#[track_caller]
pub(crate) fn expect(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
}

/// Asserts the status and the error code.
#[track_caller]
pub(crate) fn expect_error(reply: &Reply, status: u16, code: &str, what: &str) {
    let got = serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(String::from));
    assert_eq!(
        (reply.status, got.as_deref()),
        (status, Some(code)),
        "{what}: {}",
        reply.text()
    );
}

/// Owned headers, for tables built at run time.
fn borrow(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

/// A personal token of the bearer's user for a tenant (slug or id): (id, token).
fn personal_token(app: &TestApp, bearer: &str, name: &str, tenant: &str) -> (i64, String) {
    let reply = app.as_bearer(
        bearer,
        "POST",
        "/api/tokens",
        &[],
        Some(json!({"name": name, "tenant": tenant})),
    );
    expect(&reply, 201, "create a personal token");
    let body = reply.json();
    (int(&body["id"]), text(&body["token"]))
}

/// A request authenticated by the session cookie, with an `X-CSRF-Token` when given.
fn with_cookie(
    app: &TestApp,
    token: &str,
    csrf: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let cookie = format!("theme=dark; tenantd_session={token}");
    let mut headers = vec![("Cookie", cookie.as_str())];
    if let Some(csrf) = csrf {
        headers.push(("X-CSRF-Token", csrf));
    }
    let body = body.map(|b| b.to_string());
    app.call(method, path, &headers, body.as_deref())
}

/// A user who is `role` of `slug`, with their own password: (id, bearer token).
fn member(app: &TestApp, email: &str, slug: &str, role: &str) -> (i64, String) {
    let id = app.user(email, "member-password-1");
    app.join(id, slug, role);
    (id, app.token(email, "member-password-1"))
}

/// A custom role on a tenant, made by the owner: its id.
fn custom_role(app: &TestApp, slug: &str, name: &str, permissions: &[&str]) -> i64 {
    let reply = app.as_bearer(
        &app.owner_token,
        "POST",
        &format!("/t/{slug}/api/roles"),
        &[],
        Some(json!({"name": name, "permissions": permissions})),
    );
    expect(&reply, 201, "create a role");
    int(&reply.json()["id"])
}

/// One way of naming a tenant: its name, a path prefix, and headers.
type Aim = (&'static str, String, Vec<(String, String)>);

/// Every way of naming a tenant.
fn aims(slug: &str, id: &str, domain: &str) -> Vec<Aim> {
    let header = |n: &str, v: &str| vec![(n.to_string(), v.to_string())];
    vec![
        ("path prefix", format!("/t/{slug}"), vec![]),
        ("X-Tenant-ID", String::new(), header("X-Tenant-ID", id)),
        (
            "X-Tenant-Slug",
            String::new(),
            header("X-Tenant-Slug", slug),
        ),
        ("custom domain", String::new(), header("Host", domain)),
        (
            "subdomain",
            String::new(),
            header("Host", &format!("{slug}.localhost")),
        ),
    ]
}

/// A body that the route would accept from a member allowed to use it.
fn valid_body(method: &str, pattern: &str) -> Option<Value> {
    match (method, pattern) {
        ("POST", "/api/members" | "/api/invitations") => {
            Some(json!({"email": "intruder@example.test", "role": "viewer"}))
        }
        ("PATCH", "/api/members/{user_id}") => Some(json!({"role": "manager"})),
        ("POST", "/api/roles") => Some(json!({"name": "intruders", "permissions": ["audit_view"]})),
        ("PATCH", "/api/roles/{id}") => {
            Some(json!({"permissions": ["audit_view", "members_manage"]}))
        }
        ("POST" | "PUT" | "PATCH", _) => Some(json!({})),
        _ => None,
    }
}

/// The route's pattern with its ids filled in.
fn fill(pattern: &str, user_id: i64, role_id: i64) -> String {
    let path = pattern
        .replace("{user_id}", &user_id.to_string())
        .replace("{id}", &role_id.to_string())
        // Message ids: the workspace tests aim real ones at other tenants; here any id will do,
        // since the answer must be a refusal before the id is ever looked at.
        .replace("{mid}", "1");
    assert!(!path.contains('{'), "unknown parameter in {pattern}");
    path
}

fn admin_audit(app: &TestApp, query: &str) -> Vec<Value> {
    let reply = app.admin("GET", &format!("/api/admin/audit?{query}"), None);
    expect(&reply, 200, &format!("admin audit ?{query}"));
    reply.json()["entries"].as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------------------------
// 1. The cross-tenant matrix

#[test]
fn a_member_of_one_tenant_never_reaches_another_by_any_route_or_method() {
    let app = spawn_app();
    let a_id = id(&app.create_tenant("a", &["a.test"]));
    let b_id = id(&app.create_tenant("b", &["b.test"]));
    // An admin of A: no missing permission can explain a refusal.
    let (_, session) = member(&app, "alice@a.test", "a", "admin");
    let (_, personal) = personal_token(&app, &session, "ci", "a");
    let (a_user, _) = member(&app, "amy@a.test", "a", "viewer");
    let a_role = custom_role(&app, "a", "a-team", &["members_view"]);
    let (b_user, _) = member(&app, "bob@b.test", "b", "viewer");
    let b_role = custom_role(&app, "b", "b-team", &["members_view"]);

    let routes: Vec<(String, String)> = app
        .app
        .route_table()
        .into_iter()
        .filter(|(_, _, tenant)| *tenant)
        .map(|(method, pattern, _)| (method, pattern))
        .collect();
    // The matrix is only as good as the table: it must hold the tenant routes we know of.
    for known in [
        ("GET", "/api/tenant"),
        ("POST", "/api/members"),
        ("DELETE", "/api/members/{user_id}"),
        ("DELETE", "/api/invitations/{id}"),
        ("PATCH", "/api/roles/{id}"),
        ("GET", "/api/audit"),
    ] {
        assert!(
            routes
                .iter()
                .any(|(m, p)| (m.as_str(), p.as_str()) == known),
            "{known:?} missing from {routes:?}"
        );
    }

    // The owner is an admin of both tenants: their token for A must still be refused on B.
    let (_, owners_a_token) = personal_token(&app, &app.owner_token, "a only", "a");
    let credentials = [
        ("A's session", session.as_str()),
        ("A's personal token", personal.as_str()),
        ("A-bound token of a member of both", owners_a_token.as_str()),
    ];
    let mut failures = Vec::new();
    for (method, pattern) in &routes {
        let path = fill(pattern, b_user, b_role);
        for (how, prefix, headers) in aims("b", &b_id, "b.test") {
            let target = format!("{prefix}{path}");
            for (kind, token) in credentials {
                let reply = app.as_bearer(
                    token,
                    method,
                    &target,
                    &borrow(&headers),
                    valid_body(method, pattern),
                );
                let code = serde_json::from_slice::<Value>(&reply.body)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(String::from));
                if (reply.status, code.as_deref()) != (403, Some("not_a_member")) {
                    failures.push(format!(
                        "{method} {target} via {how} with {kind}: {} {}",
                        reply.status,
                        reply.text()
                    ));
                }
            }
            let body = valid_body(method, pattern).map(|b| b.to_string());
            let anonymous = app.call(method, &target, &borrow(&headers), body.as_deref());
            if anonymous.status != 401 {
                failures.push(format!(
                    "{method} {target} via {how} without credentials: {}",
                    anonymous.status
                ));
            }
            // A system admin is no member either: impersonation is the way in.
            let admin = app.as_bearer(
                &app.admin_token,
                method,
                &target,
                &borrow(&headers),
                valid_body(method, pattern),
            );
            if admin.status != 403 {
                failures.push(format!(
                    "{method} {target} via {how} as the system admin: {}",
                    admin.status
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // B is as it was.
    let members = app.get("/t/b/api/members", &[]).json();
    let emails: BTreeSet<String> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| text(&m["user"]["email"]))
        .collect();
    assert_eq!(
        emails,
        BTreeSet::from([OWNER_EMAIL.to_string(), "bob@b.test".to_string()])
    );
    let roles = app.get("/t/b/api/roles", &[]).json();
    let b_team = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "b-team")
        .expect("b-team still there");
    assert_eq!(b_team["permissions"], json!(["members_view"]));
    assert!(!roles.to_string().contains("intruders"));

    // The same member and tokens on their own tenant, by every method: never refused. (Were
    // identification or the tokens broken, the matrix above would pass for the wrong reason.)
    let mut failures = Vec::new();
    for (method, pattern) in &routes {
        let path = fill(pattern, a_user, a_role);
        for (how, prefix, headers) in aims("a", &a_id, "a.test") {
            let target = format!("{prefix}{path}");
            for (kind, token) in credentials {
                let reply = app.as_bearer(
                    token,
                    method,
                    &target,
                    &borrow(&headers),
                    valid_body(method, pattern),
                );
                // A GET of a collection must succeed; one of an object may name an id that
                // only means something to another route's table (a role id as a chat id).
                let ok = if method == "GET" && !pattern.contains('{') {
                    reply.status == 200
                } else {
                    !matches!(reply.status, 401 | 403) && reply.status < 500
                };
                if !ok {
                    failures.push(format!(
                        "{method} {target} via {how} with {kind} on A: {} {}",
                        reply.status,
                        reply.text()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Ids of another tenant's objects name nothing on one's own tenant.
#[test]
fn another_tenants_ids_name_nothing_on_ones_own_tenant() {
    let app = spawn_app();
    app.create_tenant("a", &[]);
    app.create_tenant("b", &[]);
    let (_, alice) = member(&app, "alice@a.test", "a", "admin");
    let (bob, _) = member(&app, "bob@b.test", "b", "admin");
    let b_role = custom_role(&app, "b", "b-team", &["members_view"]);
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        (
            "PATCH",
            format!("/t/a/api/members/{bob}"),
            Some(json!({"role": "viewer"})),
        ),
        ("DELETE", format!("/t/a/api/members/{bob}"), None),
        (
            "PATCH",
            format!("/t/a/api/roles/{b_role}"),
            Some(json!({"permissions": []})),
        ),
        ("DELETE", format!("/t/a/api/roles/{b_role}"), None),
    ];
    for (method, path, body) in cases {
        let reply = app.as_bearer(&alice, method, &path, &[], body);
        expect_error(&reply, 404, "not_found", &format!("{method} {path}"));
    }
    let members = app.get("/t/b/api/members", &[]).json();
    assert!(members.to_string().contains("bob@b.test"));
    let roles = app.get("/t/b/api/roles", &[]).json();
    let b_team = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == b_role)
        .cloned()
        .expect("b-team kept");
    assert_eq!(b_team["permissions"], json!(["members_view"]));
}

// ---------------------------------------------------------------------------------------------
// 2. Login

#[test]
fn every_failed_login_gets_the_same_answer_and_a_good_one_gets_a_session() {
    let app = spawn_app_with(|c| c.throttle.free_failures = 100);
    let disabled = app.user("gone@example.test", "gone-password-1");
    app.app.catalog.set_disabled(disabled, true).unwrap();
    let cases = [
        ("unknown email", "nobody@example.test", OWNER_PASSWORD),
        ("wrong password", OWNER_EMAIL, "wrong-password"),
        ("empty password", OWNER_EMAIL, ""),
        ("password of another case", OWNER_EMAIL, "OWNER-PASSWORD-1"),
        ("not an email", "owner", OWNER_PASSWORD),
        (
            "disabled user, right password",
            "gone@example.test",
            "gone-password-1",
        ),
    ];
    let mut answers = Vec::new();
    for (name, email, password) in cases {
        let reply = app.login(email, password);
        expect_error(&reply, 401, "invalid_credentials", name);
        assert!(reply.header("set-cookie").is_none(), "{name}: a cookie");
        let content_type = reply.header("content-type").map(String::from);
        answers.push((name, reply.body, content_type));
    }
    for (name, body, content_type) in &answers[1..] {
        assert_eq!(
            (body, content_type),
            (&answers[0].1, &answers[0].2),
            "{name} differs from {}",
            answers[0].0
        );
    }

    // Any case and surrounding spaces of the email.
    let reply = app.login("  Owner@Example.TEST ", OWNER_PASSWORD);
    expect(&reply, 200, "login");
    let body = reply.json();
    let token = text(&body["token"]);
    assert_eq!(token.len(), 64);
    assert_eq!(text(&body["csrf_token"]).len(), 64);
    assert_ne!(body["csrf_token"], body["token"]);
    let expires_at = int(&body["expires_at"]);
    assert!(expires_at > unix_now() + 3600, "{expires_at}");
    assert_eq!(body["user"]["email"], OWNER_EMAIL);
    assert_eq!(int(&body["user"]["id"]), app.owner_id);
    assert!(
        !reply.text().contains("argon2") && body["user"].get("password_hash").is_none(),
        "the hash leaked: {}",
        reply.text()
    );
    let cookie = reply.header("set-cookie").expect("a session cookie");
    let parts: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert_eq!(parts[0], format!("tenantd_session={token}"));
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(parts.contains(&flag), "{flag} missing from {cookie}");
    }
    expect(
        &app.as_bearer(&token, "GET", "/api/me", &[], None),
        200,
        "me",
    );
}

/// Several client addresses through a trusted proxy, so that per-account and per-address
/// throttling can be told apart.
fn throttled_app(free_failures: u32, max_backoff_secs: u64) -> TestApp {
    spawn_app_full(
        |c| {
            c.throttle = ThrottleConfig {
                free_failures,
                max_backoff: Duration::from_secs(max_backoff_secs),
                ..ThrottleConfig::default()
            }
        },
        |h| h.trusted_proxies = vec!["127.0.0.1".parse().unwrap()],
    )
}

fn login_from(app: &TestApp, ip: &str, path: &str, email: &str, password: &str) -> Reply {
    let body = json!({"email": email, "password": password}).to_string();
    app.call("POST", path, &[("X-Forwarded-For", ip)], Some(&body))
}

#[test]
fn failed_logins_are_throttled_per_account_and_address_and_locks_double() {
    let app = throttled_app(2, 2);
    app.user("eve@example.test", "eve-password-1");
    let login = |ip: &str, email: &str, password: &str| {
        login_from(&app, ip, "/api/auth/login", email, password)
    };
    let owner_wrong = |ip: &str| login(ip, OWNER_EMAIL, "wrong-password");

    // Two free failures, the third locks the account and the address for 1 s.
    for attempt in 1..=3 {
        expect_error(
            &owner_wrong("192.0.2.1"),
            401,
            "invalid_credentials",
            &format!("failure {attempt}"),
        );
    }
    let locked = owner_wrong("192.0.2.1");
    expect_error(&locked, 429, "too_many_requests", "locked");
    assert_eq!(locked.header("retry-after"), Some("1"));
    let cases = [
        (
            "the right password while locked",
            "192.0.2.1",
            OWNER_EMAIL,
            OWNER_PASSWORD,
            429,
        ),
        (
            "the locked account from elsewhere",
            "192.0.2.2",
            OWNER_EMAIL,
            OWNER_PASSWORD,
            429,
        ),
        (
            "another account from the locked address",
            "192.0.2.1",
            "eve@example.test",
            "eve-password-1",
            429,
        ),
        (
            "another account from elsewhere",
            "192.0.2.2",
            "eve@example.test",
            "eve-password-1",
            200,
        ),
    ];
    for (name, ip, email, password, status) in cases {
        expect(&login(ip, email, password), status, name);
    }

    // The lock runs out. A success from a client the account does not know leaves the
    // streak of its unknown clients as it was (a guesser shares it): the next failure locks
    // again, for twice as long (see tests/api/throttle.rs for known devices).
    app.app.throttle.advance(Duration::from_secs(1));
    expect(
        &login("192.0.2.2", OWNER_EMAIL, OWNER_PASSWORD),
        200,
        "the lock is over",
    );
    expect_error(
        &owner_wrong("192.0.2.3"),
        401,
        "invalid_credentials",
        "the failure after the success",
    );
    let doubled = owner_wrong("192.0.2.4");
    expect(&doubled, 429, "doubled lock");
    assert_eq!(doubled.header("retry-after"), Some("2"));

    // System admins are throttled the same way, on their own keys.
    for attempt in 1..=3 {
        expect(
            &login_from(
                &app,
                "192.0.2.9",
                "/api/admin/auth/login",
                ADMIN_EMAIL,
                "nope",
            ),
            401,
            &format!("admin failure {attempt}"),
        );
    }
    let admin_locked = login_from(
        &app,
        "192.0.2.10",
        "/api/admin/auth/login",
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
    );
    expect_error(&admin_locked, 429, "too_many_requests", "admin locked");
    assert!(admin_locked.header("retry-after").is_some());
}

/// The per-account key must be the account, not the spelling of its email.
#[test]
fn spelling_an_email_differently_does_not_escape_the_account_throttle() {
    let app = throttled_app(2, 60);
    app.user("josé@example.test", "jose-password-1");
    let spellings = [
        "JOSÉ@example.test",
        "JoSÉ@example.test",
        "josÉ@EXAMPLE.TEST",
    ];
    for (i, email) in spellings.iter().enumerate() {
        let reply = login_from(
            &app,
            &format!("198.51.100.{}", i + 1),
            "/api/auth/login",
            email,
            "wrong-password",
        );
        expect(&reply, 401, email);
    }
    let reply = login_from(
        &app,
        "198.51.100.50",
        "/api/auth/login",
        "josé@example.test",
        "jose-password-1",
    );
    expect_error(
        &reply,
        429,
        "too_many_requests",
        "three failures on one account",
    );
    // Likewise for system admins.
    let hash = tenantd::auth::password::hash("ops-password-1").unwrap();
    app.app
        .catalog
        .create_admin("öps@example.test", &hash)
        .unwrap();
    for (i, email) in ["ÖPS@example.test", " Öps@example.test ", "Öps@EXAMPLE.TEST"]
        .iter()
        .enumerate()
    {
        let reply = login_from(
            &app,
            &format!("198.51.100.{}", i + 10),
            "/api/admin/auth/login",
            email,
            "wrong-password",
        );
        expect(&reply, 401, email);
    }
    let reply = login_from(
        &app,
        "198.51.100.60",
        "/api/admin/auth/login",
        "öps@example.test",
        "ops-password-1",
    );
    expect_error(
        &reply,
        429,
        "too_many_requests",
        "three failures on one admin",
    );
}

#[test]
fn a_full_hashing_pool_answers_429_at_once_and_counts_no_failure() {
    let app = spawn_app_with(|c| {
        c.hasher = HasherConfig {
            threads: 1,
            queue: 1,
        };
        c.throttle.free_failures = 0;
    });
    let mut busy = None;
    for _round in 0..20 {
        let barrier = Barrier::new(6);
        let replies: Vec<Reply> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        app.login(OWNER_EMAIL, OWNER_PASSWORD)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for reply in &replies {
            assert!(
                matches!(reply.status, 200 | 429),
                "{} {}",
                reply.status,
                reply.text()
            );
        }
        if let Some(reply) = replies.into_iter().find(|r| r.status == 429) {
            busy = Some(reply);
            break;
        }
    }
    let busy = busy.expect("six logins at once never filled a pool of one thread and one slot");
    expect_error(&busy, 429, "too_many_requests", "pool full");
    let retry: u64 = busy
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // With no free failures, a single counted failure would lock the account: the pool's
    // refusals are not failures.
    expect(
        &app.login(OWNER_EMAIL, OWNER_PASSWORD),
        200,
        "after the burst",
    );
}

#[test]
fn stored_hashes_are_argon2id_with_owasp_parameters() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    // A user made by the API, one whose password was changed through it, one from the CLI, and
    // an admin from the CLI.
    let added = app.as_bearer(
        &app.owner_token,
        "POST",
        "/t/acme/api/members",
        &[],
        Some(json!({"email": "new@example.test", "role": "viewer"})),
    );
    expect(&added, 201, "add a new user");
    let changed = app.as_bearer(
        &app.owner_token,
        "POST",
        "/api/me/password",
        &[],
        Some(json!({"current_password": OWNER_PASSWORD, "new_password": "owner-password-2"})),
    );
    expect(&changed, 200, "change password");
    for args in [
        &[
            "users",
            "create",
            "--email",
            "cli@example.test",
            "--name",
            "Cli",
        ][..],
        &["admin", "create", "--email", "ops@example.test"][..],
    ] {
        let out = app.cli(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let conn = app.central_db();
    for table in ["users", "system_admins"] {
        let mut stmt = conn
            .prepare(&format!("SELECT email, password_hash FROM {table}"))
            .unwrap();
        let rows: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(rows.len() >= 2, "{table}: {rows:?}");
        for (email, hash) in rows {
            assert!(hash.starts_with(ARGON2ID_OWASP), "{table} {email}: {hash}");
        }
    }
}

fn weak_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use argon2::{Algorithm, Argon2, Params, Version};
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(8, 1, 1, None).unwrap(),
    )
    .hash_password(
        password.as_bytes(),
        &SaltString::encode_b64(b"0123456789abcdef").unwrap(),
    )
    .unwrap()
    .to_string()
}

#[test]
fn a_weaker_stored_hash_is_upgraded_at_the_next_good_login() {
    let app = spawn_app();
    let cases = [
        ("users", "/api/auth/login", OWNER_EMAIL, OWNER_PASSWORD),
        (
            "system_admins",
            "/api/admin/auth/login",
            ADMIN_EMAIL,
            ADMIN_PASSWORD,
        ),
    ];
    let conn = app.central_db();
    let stored = |table: &str, email: &str| -> String {
        conn.query_row(
            &format!("SELECT password_hash FROM {table} WHERE email = ?1"),
            [email],
            |r| r.get(0),
        )
        .unwrap()
    };
    for (table, path, email, password) in cases {
        let weak = weak_hash(password);
        assert!(weak.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{weak}");
        conn.execute(
            &format!("UPDATE {table} SET password_hash = ?2 WHERE email = ?1"),
            [email, &weak],
        )
        .unwrap();
        let login = |password: &str| {
            let body = json!({"email": email, "password": password}).to_string();
            app.call("POST", path, &[], Some(&body))
        };
        // A wrong password upgrades nothing.
        expect(&login("wrong-password"), 401, table);
        assert_eq!(stored(table, email), weak, "{table}");
        expect(&login(password), 200, table);
        let upgraded = stored(table, email);
        assert!(upgraded.starts_with(ARGON2ID_OWASP), "{table}: {upgraded}");
        // And the new hash is of the same password.
        expect(&login(password), 200, table);
        assert_eq!(stored(table, email), upgraded, "{table}: hashed again");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Sessions and tokens

#[test]
fn logout_ends_the_session_and_only_that_one() {
    let app = spawn_app();
    let first = app.login(OWNER_EMAIL, OWNER_PASSWORD).json();
    let (token, csrf) = (text(&first["token"]), text(&first["csrf_token"]));
    let other = app.token(OWNER_EMAIL, OWNER_PASSWORD);

    // By cookie, logging out changes state: it needs the CSRF header.
    let refused = with_cookie(&app, &token, None, "POST", "/api/auth/logout", None);
    expect_error(&refused, 403, "csrf_failed", "logout without the header");
    expect(
        &app.as_bearer(&token, "GET", "/api/me", &[], None),
        200,
        "still in",
    );

    let out = with_cookie(&app, &token, Some(&csrf), "POST", "/api/auth/logout", None);
    expect(&out, 200, "logout");
    let cleared = out.header("set-cookie").expect("the cookie is cleared");
    assert!(
        cleared.starts_with("tenantd_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    for (name, reply) in [
        (
            "me by bearer",
            app.as_bearer(&token, "GET", "/api/me", &[], None),
        ),
        (
            "me by cookie",
            with_cookie(&app, &token, None, "GET", "/api/me", None),
        ),
        (
            "logout again",
            app.as_bearer(&token, "POST", "/api/auth/logout", &[], None),
        ),
    ] {
        expect_error(&reply, 401, "unauthorized", name);
    }
    expect(
        &app.as_bearer(&other, "GET", "/api/me", &[], None),
        200,
        "the other session",
    );

    // A system admin logs out the same way.
    let admin = app.admin("POST", "/api/auth/logout", None);
    expect(&admin, 200, "admin logout");
    expect(
        &app.admin("GET", "/api/admin/me", None),
        401,
        "admin after logout",
    );
}

#[test]
fn a_password_change_ends_the_other_sessions_but_not_the_current_one() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let current = app.token(OWNER_EMAIL, OWNER_PASSWORD);
    let others = [
        app.owner_token.clone(),
        app.token(OWNER_EMAIL, OWNER_PASSWORD),
    ];
    let (_, personal) = personal_token(&app, &current, "ci", "acme");
    let (_, bystander) = member(&app, "bystander@example.test", "acme", "viewer");

    let change = |body: Value| app.as_bearer(&current, "POST", "/api/me/password", &[], Some(body));
    let refused = [
        (
            "wrong current password",
            json!({"current_password": "nope", "new_password": "brand-new-pw-1"}),
            "current_password",
        ),
        (
            "too short",
            json!({"current_password": OWNER_PASSWORD, "new_password": "short"}),
            "new_password",
        ),
        (
            "too long",
            json!({"current_password": OWNER_PASSWORD, "new_password": "x".repeat(257)}),
            "new_password",
        ),
        (
            "missing",
            json!({"current_password": OWNER_PASSWORD}),
            "new_password",
        ),
    ];
    for (name, body, field) in refused {
        let reply = change(body);
        expect_error(&reply, 422, "validation_failed", name);
        assert!(
            reply.json()["error"]["fields"][field].is_string(),
            "{name}: {}",
            reply.text()
        );
    }
    // Nothing was revoked by the refusals.
    expect(
        &app.as_bearer(&others[0], "GET", "/api/me", &[], None),
        200,
        "before",
    );

    let reply =
        change(json!({"current_password": OWNER_PASSWORD, "new_password": "brand-new-pw-1"}));
    expect(&reply, 200, "change");
    assert_eq!(reply.json()["sessions_revoked"], 2);
    expect(
        &app.as_bearer(&current, "GET", "/api/me", &[], None),
        200,
        "the current session",
    );
    for other in &others {
        expect_error(
            &app.as_bearer(other, "GET", "/api/me", &[], None),
            401,
            "unauthorized",
            "another session",
        );
    }
    // Personal tokens are kept (revoked one by one); other users are untouched.
    expect(
        &app.as_bearer(&personal, "GET", "/t/acme/api/tenant", &[], None),
        200,
        "personal token",
    );
    expect(
        &app.as_bearer(&bystander, "GET", "/api/me", &[], None),
        200,
        "another user",
    );
    expect(
        &app.login(OWNER_EMAIL, OWNER_PASSWORD),
        401,
        "the old password",
    );
    expect(
        &app.login(OWNER_EMAIL, "brand-new-pw-1"),
        200,
        "the new password",
    );
}

#[test]
fn expired_and_idle_tokens_are_refused() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let conn = app.central_db();
    let now = unix_now();
    let session = || app.token(OWNER_EMAIL, OWNER_PASSWORD);
    let personal = || {
        let reply = app.as_bearer(
            &app.owner_token,
            "POST",
            "/api/tokens",
            &[],
            Some(json!({"name": "ci", "tenant": "acme", "expires_in_days": 1})),
        );
        expect(&reply, 201, "token");
        let body = reply.json();
        assert!(int(&body["expires_at"]) >= now + 86_400 - 5, "{body}");
        text(&body["token"])
    };
    let admin_session = || {
        let body = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).to_string();
        let reply = app.call("POST", "/api/admin/auth/login", &[], Some(&body));
        text(&reply.json()["token"])
    };
    type Make<'a> = &'a dyn Fn() -> String;
    let cases: Vec<(&str, Make, &str, Option<&str>)> = vec![
        ("untouched session", &session, "/api/me", None),
        (
            "session past its expiry",
            &session,
            "/api/me",
            Some("expires_at = ?2 - 1"),
        ),
        (
            "session idle too long",
            &session,
            "/api/me",
            Some("last_used_at = ?2 - idle_timeout_secs - 1"),
        ),
        (
            "untouched personal token",
            &personal,
            "/t/acme/api/tenant",
            None,
        ),
        (
            "personal token past its expiry",
            &personal,
            "/t/acme/api/tenant",
            Some("expires_at = ?2 - 1"),
        ),
        (
            "untouched admin session",
            &admin_session,
            "/api/admin/me",
            None,
        ),
        (
            "admin session past its expiry",
            &admin_session,
            "/api/admin/me",
            Some("expires_at = ?2 - 1"),
        ),
        (
            "revoked session",
            &session,
            "/api/me",
            Some("revoked_at = ?2"),
        ),
    ];
    for (name, make, path, change) in cases {
        let token = make();
        if let Some(set) = change {
            let changed = conn
                .execute(
                    &format!("UPDATE sessions SET {set} WHERE token_hash = ?1"),
                    rusqlite::params![token::digest(&token).as_str(), unix_now()],
                )
                .unwrap();
            assert_eq!(changed, 1, "{name}");
        }
        let reply = app.as_bearer(&token, "GET", path, &[], None);
        match change {
            None => expect(&reply, 200, name),
            Some(_) => expect_error(&reply, 401, "unauthorized", name),
        }
    }
}

#[test]
fn cookie_sessions_need_the_csrf_header_to_change_state() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let login = app.login(OWNER_EMAIL, OWNER_PASSWORD).json();
    let (token, csrf) = (text(&login["token"]), text(&login["csrf_token"]));
    let other_csrf = text(&app.login(OWNER_EMAIL, OWNER_PASSWORD).json()["csrf_token"]);

    // The page learns its token from /api/me (the cookie is HttpOnly); a bearer caller is not
    // shown one.
    let me = with_cookie(&app, &token, None, "GET", "/api/me", None);
    expect(&me, 200, "me by cookie");
    assert_eq!(text(&me.json()["csrf_token"]), csrf);
    let me = app.as_bearer(&token, "GET", "/api/me", &[], None).json();
    assert!(me.get("csrf_token").is_none(), "{me}");

    let rename = |name: &str| Some(json!({"name": name}));
    let role = |name: &str| Some(json!({"name": name, "permissions": ["members_view"]}));
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        bool,
        &'a str,
        &'a str,
        Option<Value>,
        u16,
    );
    let cases: Vec<Case> = vec![
        (
            "cookie, safe method, no header",
            None,
            false,
            "GET",
            "/t/acme/api/members",
            None,
            200,
        ),
        (
            "cookie, PATCH, no header",
            None,
            false,
            "PATCH",
            "/api/me",
            rename("a"),
            403,
        ),
        (
            "cookie, PATCH, another session's token",
            Some(other_csrf.as_str()),
            false,
            "PATCH",
            "/api/me",
            rename("b"),
            403,
        ),
        (
            "cookie, PATCH, the session token itself",
            Some(token.as_str()),
            false,
            "PATCH",
            "/api/me",
            rename("c"),
            403,
        ),
        (
            "cookie, PATCH, empty header",
            Some(""),
            false,
            "PATCH",
            "/api/me",
            rename("d"),
            403,
        ),
        (
            "cookie, PATCH, right header",
            Some(csrf.as_str()),
            false,
            "PATCH",
            "/api/me",
            rename("Owner"),
            200,
        ),
        (
            "cookie, tenant POST, no header",
            None,
            false,
            "POST",
            "/t/acme/api/roles",
            role("forged"),
            403,
        ),
        (
            "cookie, tenant POST, right header",
            Some(csrf.as_str()),
            false,
            "POST",
            "/t/acme/api/roles",
            role("genuine"),
            201,
        ),
        (
            "bearer, PATCH, no header",
            None,
            true,
            "PATCH",
            "/api/me",
            rename("Owner"),
            200,
        ),
        (
            "bearer, tenant POST, no header",
            None,
            true,
            "POST",
            "/t/acme/api/roles",
            role("scripted"),
            201,
        ),
    ];
    for (name, header, bearer, method, path, body, status) in cases {
        let reply = if bearer {
            app.as_bearer(&token, method, path, &[], body)
        } else {
            with_cookie(&app, &token, header, method, path, body)
        };
        if status == 403 {
            expect_error(&reply, 403, "csrf_failed", name);
        } else {
            expect(&reply, status, name);
        }
    }
    // What was refused did not happen.
    let me = app.as_bearer(&token, "GET", "/api/me", &[], None).json();
    assert_eq!(me["user"]["name"], "Owner");
    let roles = app.get("/t/acme/api/roles", &[]).json();
    let names: BTreeSet<String> = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| text(&r["name"]))
        .collect();
    assert!(
        names.contains("genuine") && names.contains("scripted"),
        "{names:?}"
    );
    assert!(!names.contains("forged"), "{names:?}");
}

#[test]
fn personal_tokens_open_their_own_tenant_only() {
    let app = spawn_app();
    let acme = id(&app.create_tenant("acme", &["acme.test"]));
    let globex = id(&app.create_tenant("globex", &["globex.test"]));
    app.create_tenant("initech", &[]);
    // The owner is an admin of all three; the token is for acme alone.
    let (acme_token_id, acme_token) = personal_token(&app, &app.owner_token, "acme ci", "acme");
    let (_, globex_token) = personal_token(&app, &app.owner_token, "globex ci", &globex);

    for (how, prefix, headers) in aims("acme", &acme, "acme.test") {
        let reply = app.as_bearer(
            &acme_token,
            "GET",
            &format!("{prefix}/api/tenant"),
            &borrow(&headers),
            None,
        );
        expect(&reply, 200, &format!("acme via {how}"));
    }
    for (how, prefix, headers) in aims("globex", &globex, "globex.test") {
        let reply = app.as_bearer(
            &acme_token,
            "GET",
            &format!("{prefix}/api/tenant"),
            &borrow(&headers),
            None,
        );
        expect_error(&reply, 403, "not_a_member", &format!("globex via {how}"));
    }
    expect(
        &app.as_bearer(&globex_token, "GET", "/t/globex/api/tenant", &[], None),
        200,
        "globex token",
    );

    // The token sees its tenant only, and cannot mint a key to another one.
    let me = app
        .as_bearer(&acme_token, "GET", "/api/me", &[], None)
        .json();
    let slugs: Vec<String> = me["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| text(&m["slug"]))
        .collect();
    assert_eq!(slugs, vec!["acme"]);
    for tenant in ["globex", "initech", globex.as_str()] {
        let reply = app.as_bearer(
            &acme_token,
            "POST",
            "/api/tokens",
            &[],
            Some(json!({"name": "escape", "tenant": tenant})),
        );
        expect_error(
            &reply,
            403,
            "not_a_member",
            &format!("acme token minting one for {tenant}"),
        );
    }
    expect(
        &app.as_bearer(
            &acme_token,
            "POST",
            "/api/tokens",
            &[],
            Some(json!({"name": "same", "tenant": "acme"})),
        ),
        201,
        "a token for its own tenant",
    );

    // Listing shows what the tokens are, never the secret.
    let listed = app.get("/api/tokens", &[]);
    expect(&listed, 200, "list");
    let tokens = listed.json()["tokens"].as_array().unwrap().clone();
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    assert_eq!(tokens[0]["name"], "acme ci");
    assert_eq!(tokens[0]["tenant_id"], acme);
    assert!(
        !listed.text().contains(&acme_token)
            && !listed.text().contains(token::digest(&acme_token).as_str())
    );
    // A credential bound to acme sees and revokes acme's tokens only.
    let seen = app.as_bearer(&acme_token, "GET", "/api/tokens", &[], None);
    expect(&seen, 200, "list with the acme token");
    let seen: Vec<Value> = seen.json()["tokens"].as_array().unwrap().clone();
    assert!(
        seen.len() == 2 && seen.iter().all(|t| t["tenant_id"] == acme),
        "{seen:?}"
    );
    let globex_token_id = tokens.iter().find(|t| t["tenant_id"] == globex).unwrap()["id"].clone();
    let reply = app.as_bearer(
        &acme_token,
        "DELETE",
        &format!("/api/tokens/{globex_token_id}"),
        &[],
        None,
    );
    expect_error(
        &reply,
        404,
        "not_found",
        "revoke globex's token with acme's",
    );
    expect(
        &app.as_bearer(&globex_token, "GET", "/t/globex/api/tenant", &[], None),
        200,
        "globex token kept",
    );

    // Not a member, no such tenant: no token.
    let (_, outsider) = member(&app, "outsider@example.test", "initech", "viewer");
    for (tenant, name) in [("acme", "not a member"), ("nope", "no such tenant")] {
        let reply = app.as_bearer(
            &outsider,
            "POST",
            "/api/tokens",
            &[],
            Some(json!({"name": "x", "tenant": tenant})),
        );
        expect_error(&reply, 422, "validation_failed", name);
        assert!(reply.json()["error"]["fields"]["tenant"].is_string());
    }

    // Revoked: refused at once; someone else's id cannot be revoked.
    let reply = app.as_bearer(
        &outsider,
        "DELETE",
        &format!("/api/tokens/{acme_token_id}"),
        &[],
        None,
    );
    expect_error(&reply, 404, "not_found", "someone else's token");
    expect(
        &app.as_bearer(&acme_token, "GET", "/t/acme/api/tenant", &[], None),
        200,
        "still valid",
    );
    expect(
        &app.as_bearer(
            &app.owner_token,
            "DELETE",
            &format!("/api/tokens/{acme_token_id}"),
            &[],
            None,
        ),
        200,
        "revoke",
    );
    expect_error(
        &app.as_bearer(&acme_token, "GET", "/t/acme/api/tenant", &[], None),
        401,
        "unauthorized",
        "revoked",
    );
    expect(
        &app.as_bearer(
            &app.owner_token,
            "DELETE",
            &format!("/api/tokens/{acme_token_id}"),
            &[],
            None,
        ),
        404,
        "revoke again",
    );
    assert_eq!(
        app.get("/api/tokens", &[]).json()["tokens"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Roles and permissions

#[test]
fn each_built_in_role_gets_what_its_permissions_say() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let tokens: Vec<(&str, String)> = ["admin", "manager", "agent", "viewer"]
        .iter()
        .map(|role| {
            (
                *role,
                member(&app, &format!("{role}@example.test"), "acme", role).1,
            )
        })
        .collect();
    let token = |role: &str| tokens.iter().find(|(r, _)| *r == role).unwrap().1.clone();
    // (role, method, path, body, status)
    let cases: Vec<(&str, &str, &str, Option<Value>, u16)> = vec![
        ("viewer", "GET", "/api/tenant", None, 200),
        ("viewer", "GET", "/api/members", None, 403),
        ("viewer", "GET", "/api/audit", None, 403),
        ("agent", "GET", "/api/members", None, 200),
        (
            "agent",
            "POST",
            "/api/members",
            Some(json!({"email": "x@example.test", "role": "viewer"})),
            403,
        ),
        ("agent", "GET", "/api/roles", None, 403),
        ("manager", "GET", "/api/audit", None, 200),
        ("manager", "GET", "/api/roles", None, 403),
        (
            "manager",
            "POST",
            "/api/roles",
            Some(json!({"name": "m", "permissions": []})),
            403,
        ),
        ("admin", "GET", "/api/roles", None, 200),
        (
            "admin",
            "POST",
            "/api/roles",
            Some(json!({"name": "a", "permissions": []})),
            201,
        ),
        (
            "admin",
            "POST",
            "/api/members",
            Some(json!({"email": "y@example.test", "role": "viewer"})),
            201,
        ),
    ];
    for (role, method, path, body, status) in cases {
        let reply = app.as_bearer(&token(role), method, &format!("/t/acme{path}"), &[], body);
        let name = format!("{role} {method} {path}");
        if status == 403 {
            expect_error(&reply, 403, "forbidden", &name);
        } else {
            expect(&reply, status, &name);
        }
    }
}

#[test]
fn a_member_can_hand_out_no_more_than_they_hold() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let hr = custom_role(&app, "acme", "hr", &["members_manage", "members_view"]);
    let rolesmith = custom_role(&app, "acme", "rolesmith", &["members_view", "roles_manage"]);
    let helper = custom_role(&app, "acme", "helper", &["members_view"]);
    let (hank, hank_token) = member(&app, "hank@example.test", "acme", "hr");
    let (_, rita) = member(&app, "rita@example.test", "acme", "rolesmith");
    let (amy, amy_token) = member(&app, "amy@example.test", "acme", "admin");
    let (hugo, _) = member(&app, "hugo@example.test", "acme", "helper");
    let (vic, _) = member(&app, "vic@example.test", "acme", "viewer");
    let add = |email: &str, role: &str| Some(json!({"email": email, "role": role}));
    let to = |role: &str| Some(json!({"role": role}));
    let perms = |list: &[&str]| Some(json!({"permissions": list}));
    // (who, method, path, body, status)
    let cases: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        (
            "hank",
            "POST",
            "/api/members".into(),
            add("new1@example.test", "helper"),
            201,
        ),
        (
            "hank",
            "POST",
            "/api/members".into(),
            add("new2@example.test", "admin"),
            403,
        ),
        (
            "hank",
            "POST",
            "/api/members".into(),
            add("new3@example.test", "manager"),
            403,
        ),
        (
            "hank",
            "PATCH",
            format!("/api/members/{hank}"),
            to("admin"),
            403,
        ),
        (
            "hank",
            "PATCH",
            format!("/api/members/{hugo}"),
            to("hr"),
            200,
        ),
        (
            "hank",
            "PATCH",
            format!("/api/members/{amy}"),
            to("helper"),
            403,
        ),
        ("hank", "DELETE", format!("/api/members/{amy}"), None, 403),
        ("hank", "DELETE", format!("/api/members/{vic}"), None, 403),
        (
            "rita",
            "POST",
            "/api/roles".into(),
            Some(json!({"name": "r1", "permissions": ["members_view"]})),
            201,
        ),
        (
            "rita",
            "POST",
            "/api/roles".into(),
            Some(json!({"name": "r2", "permissions": ["audit_view"]})),
            403,
        ),
        (
            "rita",
            "PATCH",
            format!("/api/roles/{rolesmith}"),
            perms(&["members_manage", "members_view", "roles_manage"]),
            403,
        ),
        (
            "rita",
            "PATCH",
            format!("/api/roles/{hr}"),
            perms(&["members_view"]),
            403,
        ),
        (
            "rita",
            "PATCH",
            format!("/api/roles/{helper}"),
            perms(&[]),
            200,
        ),
        // Unknown permissions are still a validation error, whoever asks.
        (
            "rita",
            "POST",
            "/api/roles".into(),
            Some(json!({"name": "r3", "permissions": ["fly"]})),
            422,
        ),
        (
            "amy",
            "PATCH",
            format!("/api/roles/{hr}"),
            perms(&["audit_view", "members_manage", "members_view"]),
            200,
        ),
        (
            "amy",
            "PATCH",
            format!("/api/members/{hank}"),
            to("admin"),
            200,
        ),
    ];
    for (who, method, path, body, status) in cases {
        let token = match who {
            "hank" => &hank_token,
            "rita" => &rita,
            _ => &amy_token,
        };
        let reply = app.as_bearer(token, method, &format!("/t/acme{path}"), &[], body);
        let name = format!("{who} {method} {path}");
        if status == 403 {
            expect_error(&reply, 403, "forbidden", &name);
        } else {
            expect(&reply, status, &name);
        }
    }
    let members = app.get("/t/acme/api/members", &[]).json();
    let role_of = |email: &str| {
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user"]["email"] == email)
            .map(|m| text(&m["role"]))
    };
    assert_eq!(role_of("amy@example.test").as_deref(), Some("admin"));
    assert_eq!(role_of("vic@example.test").as_deref(), Some("viewer"));
    assert_eq!(role_of("hugo@example.test").as_deref(), Some("hr"));
    assert_eq!(role_of("new2@example.test"), None);
}

#[test]
fn role_and_membership_changes_count_on_the_very_next_request() {
    // With one HTTP worker every request after a token's first in a tenant is let in by that
    // worker's memo of members; with four, by whichever worker has seen it, or the catalog.
    for workers in [1, 4] {
        role_and_membership_changes(spawn_app_full(|_| {}, |h| h.workers = workers));
    }
}

#[test]
fn a_remembered_member_whose_session_timed_out_is_refused() {
    let app = spawn_app_full(|c| c.sessions.idle_secs = 2, |h| h.workers = 1);
    app.create_tenant("acme", &[]);
    let token = app.member_token("eve@example.test", "acme", "viewer");
    let get = || app.as_bearer(&token, "GET", "/t/acme/api/tenant", &[], None);
    // The second is answered from the worker's memo: nothing in the catalog changes after.
    expect(&get(), 200, "first");
    expect(&get(), 200, "remembered");
    std::thread::sleep(Duration::from_millis(3100));
    expect_error(&get(), 401, "unauthorized", "idle past the timeout");
}

#[test]
fn a_remembered_member_removed_by_another_process_is_refused() {
    let app = spawn_app_full(|_| {}, |h| h.workers = 1);
    app.create_tenant("acme", &[]);
    let token = app.member_token("eve@example.test", "acme", "viewer");
    let get = || app.as_bearer(&token, "GET", "/t/acme/api/tenant", &[], None);
    expect(&get(), 200, "first");
    expect(&get(), 200, "remembered");
    // Another connection to the catalog, as the CLI would have.
    let removed = app
        .central_db()
        .execute(
            "DELETE FROM memberships WHERE user_id = (SELECT id FROM users WHERE email = ?1)",
            ["eve@example.test"],
        )
        .unwrap();
    assert_eq!(removed, 1);
    expect_error(&get(), 403, "not_a_member", "removed elsewhere");
}

fn role_and_membership_changes(app: TestApp) {
    app.create_tenant("acme", &[]);
    let auditors = custom_role(&app, "acme", "auditors", &["audit_view", "members_view"]);
    // A new user is invited by email and sets her own password.
    let invitation = invite(
        &app,
        &app.owner_token,
        "acme",
        "Carol@Example.test",
        "auditors",
    );
    assert_eq!(invitation["role"], "auditors");
    let joined = accept(&app, &invitation, Some("carol-password-1"), None);
    expect(&joined, 200, "carol accepts");
    let joined = joined.json();
    let carol_id = int(&joined["user"]["id"]);
    let carol = text(&joined["token"]);
    let audit = || app.as_bearer(&carol, "GET", "/t/acme/api/audit", &[], None);
    let members = || app.as_bearer(&carol, "GET", "/t/acme/api/members", &[], None);
    expect(&audit(), 200, "audit with audit_view");

    let patch = |body: Value| {
        app.as_bearer(
            &app.owner_token,
            "PATCH",
            &format!("/t/acme/api/roles/{auditors}"),
            &[],
            Some(body),
        )
    };
    let reply = patch(json!({"permissions": ["members_view"]}));
    expect(&reply, 200, "remove audit_view");
    assert_eq!(reply.json()["permissions"], json!(["members_view"]));
    expect_error(&audit(), 403, "forbidden", "audit right after the removal");
    expect(&members(), 200, "members_view kept");
    expect(&patch(json!({"permissions": ["audit_view"]})), 200, "swap");
    expect(&audit(), 200, "audit_view back");
    expect_error(&members(), 403, "forbidden", "members_view gone");

    let (_, carols_key) = personal_token(&app, &carol, "carol's key", "acme");
    expect(
        &app.as_bearer(&carols_key, "GET", "/t/acme/api/tenant", &[], None),
        200,
        "her key",
    );

    // A role change and a removal, likewise.
    let member_path = format!("/t/acme/api/members/{carol_id}");
    let reply = app.as_bearer(
        &app.owner_token,
        "PATCH",
        &member_path,
        &[],
        Some(json!({"role": "viewer"})),
    );
    expect(&reply, 200, "to viewer");
    expect_error(&audit(), 403, "forbidden", "as viewer");
    expect(
        &app.as_bearer(&app.owner_token, "DELETE", &member_path, &[], None),
        200,
        "remove",
    );
    expect_error(&audit(), 403, "not_a_member", "removed");
    expect(
        &app.as_bearer(&carol, "GET", "/api/me", &[], None),
        200,
        "still a user",
    );
    // Her keys to acme went with her: taken back in, she starts afresh.
    expect_error(
        &app.as_bearer(&carols_key, "GET", "/t/acme/api/tenant", &[], None),
        401,
        "unauthorized",
        "key after removal",
    );
    let again = invite(
        &app,
        &app.owner_token,
        "acme",
        "carol@example.test",
        "viewer",
    );
    expect_error(
        &app.as_bearer(&carol, "GET", "/t/acme/api/tenant", &[], None),
        403,
        "not_a_member",
        "invited, not yet accepted",
    );
    expect(
        &accept(&app, &again, None, Some(&carol)),
        200,
        "carol accepts with her session",
    );
    expect(
        &app.as_bearer(&carol, "GET", "/t/acme/api/tenant", &[], None),
        200,
        "her session, back in",
    );
    expect_error(
        &app.as_bearer(&carols_key, "GET", "/t/acme/api/tenant", &[], None),
        401,
        "unauthorized",
        "the old key, back in",
    );

    // The tenant keeps an admin.
    let owner = format!("/t/acme/api/members/{}", app.owner_id);
    let reply = app.as_bearer(
        &app.owner_token,
        "PATCH",
        &owner,
        &[],
        Some(json!({"role": "viewer"})),
    );
    expect_error(&reply, 409, "last_admin", "demote the last admin");
    let reply = app.as_bearer(&app.owner_token, "DELETE", &owner, &[], None);
    expect_error(&reply, 409, "last_admin", "remove the last admin");
}

#[test]
fn built_in_and_used_roles_cannot_be_deleted() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let roles = app.get("/t/acme/api/roles", &[]).json()["roles"]
        .as_array()
        .unwrap()
        .clone();
    let builtins: Vec<(String, i64)> = roles
        .iter()
        .filter(|r| r["builtin"] == true)
        .map(|r| (text(&r["name"]), int(&r["id"])))
        .collect();
    let names: Vec<&str> = builtins.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["admin", "manager", "agent", "viewer"]);
    for (name, role_id) in &builtins {
        let path = format!("/t/acme/api/roles/{role_id}");
        let cases = [
            ("DELETE", None),
            ("PATCH", Some(json!({"permissions": ["audit_view"]}))),
            ("PATCH", Some(json!({"name": "renamed"}))),
        ];
        for (method, body) in cases {
            let reply = app.as_bearer(&app.owner_token, method, &path, &[], body);
            expect_error(&reply, 409, "role_builtin", &format!("{method} {name}"));
        }
    }
    let after = app.get("/t/acme/api/roles", &[]).json()["roles"].clone();
    assert_eq!(json!(roles), after, "built-ins changed");

    let used = custom_role(&app, "acme", "support", &["members_view"]);
    let (dave, _) = member(&app, "dave@example.test", "acme", "viewer");
    let change = |role: &str| {
        app.as_bearer(
            &app.owner_token,
            "PATCH",
            &format!("/t/acme/api/members/{dave}"),
            &[],
            Some(json!({"role": role})),
        )
    };
    expect(&change("support"), 200, "into support");
    let delete = || {
        app.as_bearer(
            &app.owner_token,
            "DELETE",
            &format!("/t/acme/api/roles/{used}"),
            &[],
            None,
        )
    };
    expect_error(&delete(), 409, "role_in_use", "delete a used role");
    let listed = app.get("/t/acme/api/roles", &[]).json();
    let support = listed["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == used)
        .cloned()
        .unwrap();
    assert_eq!(support["member_count"], 1);
    expect(&change("viewer"), 200, "out of support");
    expect(&delete(), 200, "delete an unused role");
    expect_error(&delete(), 404, "not_found", "delete again");
    expect_error(
        &change("support"),
        422,
        "validation_failed",
        "a deleted role",
    );
}

// ---------------------------------------------------------------------------------------------
// 5. TOTP and impersonation

/// A six-digit code valid at no step near now.
fn wrong_code(secret: &str) -> String {
    let now = unix_now() as u64;
    let valid: Vec<String> = (0..=4)
        .map(|i| totp::code_at(secret, now + i * 30 - 60).unwrap())
        .collect();
    (0..10)
        .map(|d| d.to_string().repeat(6))
        .find(|c| !valid.contains(c))
        .unwrap()
}

#[test]
fn totp_enrolment_then_every_admin_login_needs_the_code() {
    let app = spawn_app_with(|c| c.throttle.free_failures = 100);
    let hash = tenantd::auth::password::hash("ops-password-1").unwrap();
    app.app
        .catalog
        .create_admin("ops@example.test", &hash)
        .unwrap();
    let login = |code: Option<&str>, password: &str| {
        let mut body = json!({"email": "ops@example.test", "password": password});
        if let Some(code) = code {
            body["code"] = json!(code);
        }
        app.call(
            "POST",
            "/api/admin/auth/login",
            &[],
            Some(&body.to_string()),
        )
    };
    let first = login(None, "ops-password-1");
    expect(&first, 200, "login before enrolment");
    assert_eq!(first.json()["admin"]["totp_enabled"], false);
    let ops = text(&first.json()["token"]);
    let call = |method: &str, path: &str, body: Option<Value>| {
        app.as_bearer(&ops, method, path, &[], body)
    };

    expect_error(
        &call(
            "POST",
            "/api/admin/totp/confirm",
            Some(json!({"code": "123456"})),
        ),
        409,
        "totp_not_enrolling",
        "confirm first",
    );
    let enrol = call("POST", "/api/admin/totp/enrol", None);
    expect(&enrol, 200, "enrol");
    let secret = text(&enrol.json()["secret"]);
    let uri = text(&enrol.json()["otpauth_uri"]);
    assert!(
        uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={secret}")),
        "{uri}"
    );
    assert!(
        uri.contains("ops%40example.test") || uri.contains("ops@example.test"),
        "{uri}"
    );
    // Not enforced until confirmed: a half-done enrolment locks nobody out.
    expect(&login(None, "ops-password-1"), 200, "login while enrolling");

    expect_error(
        &call(
            "POST",
            "/api/admin/totp/confirm",
            Some(json!({"code": wrong_code(&secret)})),
        ),
        422,
        "validation_failed",
        "wrong code",
    );
    let now = || totp::code_at(&secret, unix_now() as u64).unwrap();
    // The code of the next step: valid now (one step of skew), and later than any used yet.
    let next = || totp::code_at(&secret, unix_now() as u64 + totp::PERIOD).unwrap();
    let confirm_code = now();
    let confirmed = call(
        "POST",
        "/api/admin/totp/confirm",
        Some(json!({"code": confirm_code})),
    );
    expect(&confirmed, 200, "confirm");
    assert_eq!(confirmed.json()["totp_enabled"], true);
    assert_eq!(
        call("GET", "/api/admin/me", None).json()["admin"]["totp_enabled"],
        true
    );
    expect_error(
        &call("POST", "/api/admin/totp/enrol", None),
        409,
        "totp_enabled",
        "enrol again",
    );

    let wrong = wrong_code(&secret);
    let cases: Vec<(&str, Option<String>, &str, u16, &str)> = vec![
        ("no code", None, "ops-password-1", 401, "totp_required"),
        (
            "wrong code",
            Some(wrong.clone()),
            "ops-password-1",
            401,
            "invalid_credentials",
        ),
        (
            "not digits",
            Some("abcdef".into()),
            "ops-password-1",
            401,
            "invalid_credentials",
        ),
        (
            "too long",
            Some(format!("{}0", now())),
            "ops-password-1",
            401,
            "invalid_credentials",
        ),
        // A wrong password says nothing about the second factor.
        (
            "wrong password, no code",
            None,
            "wrong-password",
            401,
            "invalid_credentials",
        ),
        (
            "wrong password, right code",
            Some(next()),
            "wrong-password",
            401,
            "invalid_credentials",
        ),
        // A code is good once: the one that confirmed the enrolment is spent.
        (
            "the confirmation's code again",
            Some(confirm_code.clone()),
            "ops-password-1",
            401,
            "invalid_credentials",
        ),
    ];
    for (name, code, password, status, error) in cases {
        expect_error(&login(code.as_deref(), password), status, error, name);
    }
    let code = next();
    let ok = login(Some(&format!(" {code} ")), "ops-password-1");
    expect(&ok, 200, "right code, with spaces");
    let replayed = login(Some(&code), "ops-password-1");
    expect_error(&replayed, 401, "invalid_credentials", "the same code again");
    let token = text(&ok.json()["token"]);
    expect(
        &app.as_bearer(&token, "GET", "/api/admin/me", &[], None),
        200,
        "new session",
    );
}

#[test]
fn an_impersonation_ticket_works_once_within_a_minute_on_its_tenant_only() {
    let app = spawn_app();
    let acme = id(&app.create_tenant("acme", &[]));
    app.create_tenant("globex", &[]);
    let (bob, bob_token) = member(&app, "bob@example.test", "acme", "agent");
    app.join(bob, "globex", "admin");
    let (outsider, _) = member(&app, "out@example.test", "globex", "viewer");

    let ticket_for = |tenant: &str| {
        let reply = app.admin(
            "POST",
            &format!("/api/admin/tenants/{tenant}/impersonate"),
            Some(json!({"user_id": bob})),
        );
        expect(&reply, 201, "impersonate");
        let body = reply.json();
        let expires = int(&body["expires_at"]);
        let now = unix_now();
        assert!(
            (now + 55..=now + 61).contains(&expires),
            "expires_at {expires}, now {now}"
        );
        text(&body["ticket"])
    };
    let exchange = |path: &str, ticket: &str| {
        app.call(
            "POST",
            path,
            &[],
            Some(&json!({"ticket": ticket}).to_string()),
        )
    };

    // Who may ask, and for whom.
    let refused: Vec<(&str, Reply, u16)> = vec![
        (
            "a user asking",
            app.as_bearer(
                &bob_token,
                "POST",
                "/api/admin/tenants/acme/impersonate",
                &[],
                Some(json!({"user_id": bob})),
            ),
            403,
        ),
        (
            "a non-member",
            app.admin(
                "POST",
                "/api/admin/tenants/acme/impersonate",
                Some(json!({"user_id": outsider})),
            ),
            422,
        ),
        (
            "no such user",
            app.admin(
                "POST",
                "/api/admin/tenants/acme/impersonate",
                Some(json!({"user_id": 999_999})),
            ),
            422,
        ),
        (
            "no such tenant",
            app.admin(
                "POST",
                "/api/admin/tenants/nope/impersonate",
                Some(json!({"user_id": bob})),
            ),
            404,
        ),
    ];
    for (name, reply, status) in refused {
        expect(&reply, status, name);
    }

    // Once, on its tenant (named by id here).
    let ticket = ticket_for(&acme);
    expect_error(
        &app.as_bearer(&ticket, "GET", "/api/me", &[], None),
        401,
        "unauthorized",
        "a ticket is no credential",
    );
    expect_error(
        &exchange("/api/auth/impersonate", &ticket),
        404,
        "tenant_required",
        "on the central host",
    );
    let session = exchange("/t/acme/api/auth/impersonate", &ticket);
    expect(&session, 200, "exchange");
    assert!(session.header("set-cookie").is_some());
    let token = text(&session.json()["token"]);
    expect_error(
        &exchange("/t/acme/api/auth/impersonate", &ticket),
        401,
        "unauthorized",
        "a second exchange",
    );

    let me = app.as_bearer(&token, "GET", "/api/me", &[], None);
    expect(&me, 200, "me");
    let me = me.json();
    assert_eq!(me["impersonated"], true);
    assert_eq!(me["user"]["email"], "bob@example.test");
    assert_eq!(me["impersonated_by"]["email"], ADMIN_EMAIL);
    assert!(me["impersonated_by"]["admin_id"].is_i64());
    let slugs: Vec<String> = me["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| text(&m["slug"]))
        .collect();
    assert_eq!(slugs, ["acme"]);
    // An impersonation mints no lasting credentials: they would outlive it and its revocation.
    expect_error(
        &app.as_bearer(
            &token,
            "POST",
            "/api/tokens",
            &[],
            Some(json!({"name": "kept", "tenant": "acme"})),
        ),
        403,
        "forbidden",
        "a personal token made while impersonating",
    );
    let own = app
        .as_bearer(&bob_token, "GET", "/api/me", &[], None)
        .json();
    assert_eq!(
        (own["impersonated"].clone(), own["impersonated_by"].clone()),
        (json!(false), Value::Null)
    );

    // The session acts as bob on acme, and nowhere else.
    expect(
        &app.as_bearer(&token, "GET", "/t/acme/api/members", &[], None),
        200,
        "acme as bob",
    );
    expect_error(
        &app.as_bearer(&token, "GET", "/t/acme/api/roles", &[], None),
        403,
        "forbidden",
        "bob's permissions only",
    );
    for path in ["/t/globex/api/members", "/t/globex/api/tenant"] {
        expect_error(
            &app.as_bearer(&token, "GET", path, &[], None),
            403,
            "not_a_member",
            path,
        );
    }
    let minted = app.as_bearer(
        &token,
        "POST",
        "/api/tokens",
        &[],
        Some(json!({"name": "keep", "tenant": "globex"})),
    );
    // Refused before the tenant is even looked at: an impersonation mints no tokens at all.
    expect_error(&minted, 403, "forbidden", "a token for another tenant");
    let password = app.as_bearer(
        &token,
        "POST",
        "/api/me/password",
        &[],
        Some(json!({"current_password": "member-password-1", "new_password": "taken-over-1"})),
    );
    expect_error(&password, 403, "forbidden", "change bob's password");

    // On another tenant: refused, and the ticket is spent.
    let ticket = ticket_for("acme");
    expect_error(
        &exchange("/t/globex/api/auth/impersonate", &ticket),
        403,
        "not_a_member",
        "on globex",
    );
    expect_error(
        &exchange("/t/acme/api/auth/impersonate", &ticket),
        401,
        "unauthorized",
        "spent",
    );

    // Past its minute.
    let ticket = ticket_for("acme");
    let changed = app
        .central_db()
        .execute(
            "UPDATE sessions SET expires_at = ?2 WHERE token_hash = ?1 AND kind = 'impersonation_ticket'",
            rusqlite::params![token::digest(&ticket).as_str(), unix_now() - 1],
        )
        .unwrap();
    assert_eq!(changed, 1);
    expect_error(
        &exchange("/t/acme/api/auth/impersonate", &ticket),
        401,
        "unauthorized",
        "expired",
    );
    // Many exchanges of one ticket at once: exactly one wins.
    let ticket = ticket_for("acme");
    let barrier = Barrier::new(6);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    exchange("/t/acme/api/auth/impersonate", &ticket).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, [200, 401, 401, 401, 401, 401], "{statuses:?}");
    // Junk is refused the same way.
    for junk in ["", "abc", &"g".repeat(64), &token::generate()] {
        expect_error(
            &exchange("/t/acme/api/auth/impersonate", junk),
            401,
            "unauthorized",
            junk,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The audit log

#[test]
fn every_action_is_audited_and_a_tenant_sees_only_its_own_entries() {
    let app = spawn_app();
    let acme = id(&app.create_tenant("acme", &[]));
    let globex = id(&app.create_tenant("globex", &[]));
    let admin_id = int(&app.admin("GET", "/api/admin/me", None).json()["admin"]["id"]);
    let owner = app.owner_id;
    let ua = [("User-Agent", "audit-test/1.0")];

    // Logins, good and bad.
    expect(
        &app.login(OWNER_EMAIL, "wrong-password"),
        401,
        "failed login",
    );
    let body = json!({"email": ADMIN_EMAIL, "password": "wrong"}).to_string();
    expect(
        &app.call("POST", "/api/admin/auth/login", &[], Some(&body)),
        401,
        "failed admin login",
    );
    // Members and roles on acme.
    let call = |method: &str, path: &str, body: Option<Value>| {
        app.as_bearer(&app.owner_token, method, path, &ua, body)
    };
    let invited = call(
        "POST",
        "/t/acme/api/members",
        Some(json!({"email": "carol@example.test", "role": "agent"})),
    );
    expect(&invited, 201, "invitation.created");
    let invitation = invited.json()["invitation"].clone();
    let invitation_s = int(&invitation["id"]).to_string();
    let temporary = "carol-password-1";
    let joined = accept(&app, &invitation, Some(temporary), None);
    expect(&joined, 200, "invitation.accepted");
    let carol = int(&joined.json()["user"]["id"]);
    expect(
        &call(
            "PATCH",
            &format!("/t/acme/api/members/{carol}"),
            Some(json!({"role": "viewer"})),
        ),
        200,
        "member.role_changed",
    );
    let role = call(
        "POST",
        "/t/acme/api/roles",
        Some(json!({"name": "temp", "permissions": []})),
    );
    expect(&role, 201, "role.created");
    let role = int(&role.json()["id"]);
    expect(
        &call(
            "PATCH",
            &format!("/t/acme/api/roles/{role}"),
            Some(json!({"permissions": ["audit_view"]})),
        ),
        200,
        "role.updated",
    );
    expect(
        &call("DELETE", &format!("/t/acme/api/roles/{role}"), None),
        200,
        "role.deleted",
    );
    // Carol's own account: password, token, logout; then she leaves.
    let carol_token = app.token("carol@example.test", temporary);
    let as_carol = |method: &str, path: &str, body: Option<Value>| {
        app.as_bearer(&carol_token, method, path, &[], body)
    };
    expect(
        &as_carol(
            "POST",
            "/api/me/password",
            Some(json!({"current_password": temporary, "new_password": "carol-password-2"})),
        ),
        200,
        "auth.password_changed",
    );
    let created = as_carol(
        "POST",
        "/api/tokens",
        Some(json!({"name": "ci", "tenant": "acme"})),
    );
    expect(&created, 201, "token.created");
    let token_id = int(&created.json()["id"]);
    expect(
        &as_carol("DELETE", &format!("/api/tokens/{token_id}"), None),
        200,
        "token.revoked",
    );
    expect(
        &as_carol("POST", "/api/auth/logout", None),
        200,
        "auth.logout",
    );
    expect(
        &call("DELETE", &format!("/t/acme/api/members/{carol}"), None),
        200,
        "member.removed",
    );
    // Globex's own business, which acme must not see.
    let g_role = call(
        "POST",
        "/t/globex/api/roles",
        Some(json!({"name": "globex-only", "permissions": []})),
    );
    expect(&g_role, 201, "globex role");
    // Impersonation on acme.
    let ticket = app.admin(
        "POST",
        "/api/admin/tenants/acme/impersonate",
        Some(json!({"user_id": owner})),
    );
    expect(&ticket, 201, "impersonation.started");
    let ticket = text(&ticket.json()["ticket"]);
    let body = json!({"ticket": ticket}).to_string();
    expect(
        &app.call("POST", "/t/acme/api/auth/impersonate", &[], Some(&body)),
        200,
        "impersonation.exchanged",
    );
    // The lifecycle, on tenants of their own.
    let doomed = id(&app.create_tenant("doomed", &[]));
    let initech = id(&app.create_tenant("initech", &[]));
    for (method, path, body) in [
        ("POST", "/api/admin/tenants/doomed/suspend", None),
        ("POST", "/api/admin/tenants/doomed/activate", None),
        ("DELETE", "/api/admin/tenants/doomed", None),
        ("POST", "/api/admin/tenants/doomed/restore", None),
        ("DELETE", "/api/admin/tenants/doomed", None),
        ("POST", "/api/admin/tenants/doomed/purge", None),
        (
            "PATCH",
            "/api/admin/tenants/initech",
            Some(json!({"slug": "initrode"})),
        ),
    ] {
        let reply = app.admin(method, path, body);
        expect(&reply, 200, &format!("{method} {path}"));
    }

    // (action, actor type, actor id, tenant, target id)
    let carol_s = carol.to_string();
    let owner_s = owner.to_string();
    let role_s = role.to_string();
    let token_s = token_id.to_string();
    type Row<'a> = (
        &'a str,
        &'a str,
        Option<i64>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let expected: Vec<Row> = vec![
        ("auth.login", "user", Some(owner), None, None),
        ("auth.login_failed", "anonymous", Some(owner), None, None),
        ("auth.logout", "user", Some(carol), None, None),
        ("auth.password_changed", "user", Some(carol), None, None),
        (
            "token.created",
            "user",
            Some(carol),
            Some(acme.as_str()),
            Some(token_s.as_str()),
        ),
        (
            "token.revoked",
            "user",
            Some(carol),
            None,
            Some(token_s.as_str()),
        ),
        (
            "invitation.created",
            "user",
            Some(owner),
            Some(acme.as_str()),
            Some(invitation_s.as_str()),
        ),
        (
            "invitation.accepted",
            "user",
            Some(carol),
            Some(acme.as_str()),
            Some(invitation_s.as_str()),
        ),
        (
            "user.created",
            "user",
            Some(carol),
            None,
            Some(carol_s.as_str()),
        ),
        (
            "member.role_changed",
            "user",
            Some(owner),
            Some(acme.as_str()),
            Some(carol_s.as_str()),
        ),
        (
            "member.removed",
            "user",
            Some(owner),
            Some(acme.as_str()),
            Some(carol_s.as_str()),
        ),
        (
            "role.created",
            "user",
            Some(owner),
            Some(acme.as_str()),
            Some(role_s.as_str()),
        ),
        (
            "role.updated",
            "user",
            Some(owner),
            Some(acme.as_str()),
            Some(role_s.as_str()),
        ),
        (
            "role.deleted",
            "user",
            Some(owner),
            Some(acme.as_str()),
            Some(role_s.as_str()),
        ),
        (
            "tenant.created",
            "admin",
            Some(admin_id),
            Some(acme.as_str()),
            Some(acme.as_str()),
        ),
        (
            "tenant.suspended",
            "admin",
            Some(admin_id),
            Some(doomed.as_str()),
            Some(doomed.as_str()),
        ),
        (
            "tenant.activated",
            "admin",
            Some(admin_id),
            Some(doomed.as_str()),
            Some(doomed.as_str()),
        ),
        (
            "tenant.deleted",
            "admin",
            Some(admin_id),
            Some(doomed.as_str()),
            Some(doomed.as_str()),
        ),
        (
            "tenant.restored",
            "admin",
            Some(admin_id),
            Some(doomed.as_str()),
            Some(doomed.as_str()),
        ),
        (
            "tenant.purged",
            "admin",
            Some(admin_id),
            Some(doomed.as_str()),
            Some(doomed.as_str()),
        ),
        (
            "tenant.renamed",
            "admin",
            Some(admin_id),
            Some(initech.as_str()),
            Some(initech.as_str()),
        ),
        (
            "impersonation.started",
            "admin",
            Some(admin_id),
            Some(acme.as_str()),
            Some(owner_s.as_str()),
        ),
        (
            "impersonation.exchanged",
            "admin",
            Some(admin_id),
            Some(acme.as_str()),
            Some(owner_s.as_str()),
        ),
        ("admin.login", "admin", Some(admin_id), None, None),
        (
            "admin.login_failed",
            "anonymous",
            Some(admin_id),
            None,
            None,
        ),
    ];
    for (action, actor_type, actor_id, tenant, target) in &expected {
        let entries = admin_audit(&app, &format!("action={action}&limit=200"));
        let found = entries.iter().any(|e| {
            e["action"] == *action
                && e["actor_type"] == *actor_type
                && e["actor_id"].as_i64() == *actor_id
                && e["tenant_id"].as_str() == *tenant
                && target.is_none_or(|t| e["target_id"].as_str() == Some(t))
                && e["ip"] == "127.0.0.1"
        });
        assert!(
            found,
            "no {action} by {actor_type} {actor_id:?} on {tenant:?} for {target:?}: {entries:#?}"
        );
    }
    let invited = &admin_audit(&app, "action=invitation.created")[0];
    assert_eq!(invited["user_agent"], "audit-test/1.0");
    assert_eq!(invited["actor_email"], OWNER_EMAIL);
    assert_eq!(invited["details"]["email"], "carol@example.test");
    let failed = &admin_audit(&app, "action=auth.login_failed")[0];
    assert_eq!(failed["actor_email"], OWNER_EMAIL);
    assert!(
        !failed.to_string().contains("wrong-password"),
        "a password in the log: {failed}"
    );

    // A tenant's log: its own entries, all of them.
    let acme_log = app.get("/t/acme/api/audit?limit=200", &[]);
    expect(&acme_log, 200, "acme audit");
    let acme_entries = acme_log.json()["entries"].as_array().unwrap().clone();
    assert!(
        acme_entries.iter().all(|e| e["tenant_id"] == acme),
        "{acme_entries:#?}"
    );
    let acme_actions: BTreeSet<String> = acme_entries.iter().map(|e| text(&e["action"])).collect();
    let want: BTreeSet<String> = expected
        .iter()
        .filter(|(_, _, _, tenant, _)| *tenant == Some(acme.as_str()))
        .map(|(action, ..)| action.to_string())
        .collect();
    assert_eq!(acme_actions, want);
    let globex_entries = app.get("/t/globex/api/audit?limit=200", &[]).json()["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        globex_entries.iter().all(|e| e["tenant_id"] == globex),
        "{globex_entries:#?}"
    );
    assert!(globex_entries.iter().any(|e| e["action"] == "role.created"));
    assert!(!acme_log.text().contains("globex-only"));
    // The tenant's own filters stay inside the tenant.
    let filtered = app.get("/t/acme/api/audit?action=role.created", &[]).json();
    assert_eq!(
        filtered["entries"].as_array().unwrap().len(),
        1,
        "{filtered}"
    );
    let by_actor = app
        .get(&format!("/t/globex/api/audit?actor={OWNER_EMAIL}"), &[])
        .json();
    assert!(by_actor["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["tenant_id"] == globex));

    // The admin's filters and paging.
    let by_tenant = admin_audit(&app, "tenant=globex&limit=200");
    assert!(!by_tenant.is_empty() && by_tenant.iter().all(|e| e["tenant_id"] == globex));
    let by_id = admin_audit(&app, &format!("tenant={globex}&limit=200"));
    assert_eq!(by_tenant, by_id);
    // The log outlives the tenants it names: a purged tenant's history is still there by id.
    let purged: Vec<String> = admin_audit(&app, &format!("tenant={doomed}&limit=200"))
        .iter()
        .map(|e| text(&e["action"]))
        .collect();
    assert_eq!(
        purged,
        [
            "tenant.purged",
            "tenant.deleted",
            "tenant.restored",
            "tenant.deleted",
            "tenant.activated",
            "tenant.suspended",
            "tenant.created"
        ]
    );
    let unknown = app.admin("GET", "/api/admin/audit?tenant=nope", None);
    expect_error(&unknown, 404, "tenant_not_found", "an unknown slug");
    let by_user = admin_audit(&app, &format!("actor=user:{carol}&limit=200"));
    let carol_actions: BTreeSet<String> = by_user.iter().map(|e| text(&e["action"])).collect();
    let carol_want = [
        "auth.login",
        "auth.logout",
        "auth.password_changed",
        "invitation.accepted",
        "token.created",
        "token.revoked",
        "user.created",
    ];
    assert_eq!(
        carol_actions,
        carol_want.iter().map(|a| a.to_string()).collect()
    );
    let prefix = admin_audit(&app, "action=tenant.&limit=200");
    assert!(
        prefix.len() >= 9
            && prefix
                .iter()
                .all(|e| text(&e["action"]).starts_with("tenant."))
    );
    assert!(admin_audit(&app, &format!("since={}", unix_now() + 3600)).is_empty());
    let page = app.admin("GET", "/api/admin/audit?limit=2", None).json();
    let first: Vec<i64> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| int(&e["id"]))
        .collect();
    assert_eq!(first.len(), 2);
    assert!(first[0] > first[1], "newest first: {first:?}");
    let next = int(&page["next"]);
    let second = admin_audit(&app, &format!("limit=2&before={next}"));
    assert_eq!(int(&second[0]["id"]), first[1] - 1);

    // Only with audit_view; only for the admin centrally.
    let (_, viewer) = member(&app, "viewer@example.test", "acme", "viewer");
    expect_error(
        &app.as_bearer(&viewer, "GET", "/t/acme/api/audit", &[], None),
        403,
        "forbidden",
        "viewer",
    );
    expect(
        &app.as_bearer(&viewer, "GET", "/api/admin/audit", &[], None),
        403,
        "a user on the admin log",
    );
}

// ---------------------------------------------------------------------------------------------
// 7. The CLI

fn run_ok(app: &TestApp, args: &[&str]) -> String {
    let out = app.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn shown_password(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .unwrap_or_else(|| panic!("no password in {stdout:?}"))
        .trim()
        .to_string()
}

fn admin_login_with_code(app: &TestApp, email: &str, password: &str, code: &str) -> String {
    let body = json!({"email": email, "password": password, "code": code}).to_string();
    let reply = app.call("POST", "/api/admin/auth/login", &[], Some(&body));
    expect(&reply, 200, "admin login with a code");
    text(&reply.json()["token"])
}

fn admin_login(app: &TestApp, email: &str, password: &str) -> Reply {
    let body = json!({"email": email, "password": password}).to_string();
    app.call("POST", "/api/admin/auth/login", &[], Some(&body))
}

#[test]
fn the_identity_cli_makes_users_members_and_admins_that_can_sign_in() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);

    let out = run_ok(
        &app,
        &[
            "users",
            "create",
            "--email",
            "Carol@Example.test",
            "--name",
            "Carol",
            "--surname",
            "Doe",
        ],
    );
    let password = shown_password(&out);
    assert!(password.len() >= 16, "{password}");
    let carol = app.login("carol@example.test", &password);
    expect(&carol, 200, "carol with the printed password");
    assert_eq!(carol.json()["user"]["surname"], "Doe");
    let carol = text(&carol.json()["token"]);

    let out = run_ok(
        &app,
        &[
            "users",
            "create",
            "--email",
            "dave@example.test",
            "--name",
            "Dave",
            "--password",
            "dave-password-1",
            "--json",
        ],
    );
    let json: Value = serde_json::from_str(&out).unwrap();
    assert!(
        json.get("password").is_none() && !out.contains("dave-password-1"),
        "{out}"
    );
    expect(
        &app.login("dave@example.test", "dave-password-1"),
        200,
        "dave",
    );

    // Refusals exit non-zero and change nothing.
    for args in [
        &[
            "users",
            "create",
            "--email",
            "carol@example.test",
            "--name",
            "Again",
        ][..],
        &[
            "users",
            "create",
            "--email",
            "short@example.test",
            "--name",
            "S",
            "--password",
            "short",
        ][..],
        &[
            "members",
            "add",
            "--tenant",
            "nope",
            "--email",
            "carol@example.test",
            "--role",
            "manager",
        ][..],
        &[
            "members",
            "add",
            "--tenant",
            "acme",
            "--email",
            "nobody@example.test",
            "--role",
            "manager",
        ][..],
        &[
            "members",
            "add",
            "--tenant",
            "acme",
            "--email",
            "carol@example.test",
            "--role",
            "overlord",
        ][..],
        &["admin", "reset-password", "--email", "nobody@example.test"][..],
    ] {
        let out = app.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
    }
    expect_error(
        &app.as_bearer(&carol, "GET", "/t/acme/api/members", &[], None),
        403,
        "not_a_member",
        "before members add",
    );

    run_ok(
        &app,
        &[
            "members",
            "add",
            "--tenant",
            "acme",
            "--email",
            "carol@example.test",
            "--role",
            "manager",
        ],
    );
    expect(
        &app.as_bearer(&carol, "GET", "/t/acme/api/members", &[], None),
        200,
        "a manager sees members",
    );
    expect_error(
        &app.as_bearer(&carol, "GET", "/t/acme/api/roles", &[], None),
        403,
        "forbidden",
        "but not roles",
    );
    assert!(!app
        .cli(&[
            "members",
            "add",
            "--tenant",
            "acme",
            "--email",
            "carol@example.test",
            "--role",
            "viewer"
        ])
        .status
        .success());

    let out = run_ok(&app, &["admin", "create", "--email", "ops@example.test"]);
    let old = shown_password(&out);
    let session = admin_login(&app, "ops@example.test", &old);
    expect(&session, 200, "the new admin");
    let session = text(&session.json()["token"]);
    // Two-factor on, then reset: a new password, the old one and the sessions gone, TOTP off.
    let secret = text(
        &app.as_bearer(&session, "POST", "/api/admin/totp/enrol", &[], None)
            .json()["secret"],
    );
    let code = totp::code_at(&secret, unix_now() as u64).unwrap();
    expect(
        &app.as_bearer(
            &session,
            "POST",
            "/api/admin/totp/confirm",
            &[],
            Some(json!({"code": code})),
        ),
        200,
        "totp on",
    );
    expect_error(
        &admin_login(&app, "ops@example.test", &old),
        401,
        "totp_required",
        "totp on",
    );

    // What the admin started as someone else ends with the reset too.
    let (bob, _) = member(&app, "bob@example.test", "acme", "viewer");
    let ticket = |admin: &str| {
        let reply = app.as_bearer(
            admin,
            "POST",
            "/api/admin/tenants/acme/impersonate",
            &[],
            Some(json!({"user_id": bob})),
        );
        expect(&reply, 201, "impersonate");
        json!({"ticket": text(&reply.json()["ticket"])}).to_string()
    };
    let exchange =
        |ticket: &str| app.call("POST", "/t/acme/api/auth/impersonate", &[], Some(ticket));
    let code = totp::code_at(&secret, unix_now() as u64 + totp::PERIOD).unwrap();
    let second = admin_login_with_code(&app, "ops@example.test", &old, &code);
    let acting = exchange(&ticket(&session));
    expect(&acting, 200, "exchange");
    let acting = text(&acting.json()["token"]);
    let pending = ticket(&second);
    let roots = exchange(&ticket(&app.admin_token));
    expect(&roots, 200, "root's impersonation");
    let roots = text(&roots.json()["token"]);

    let out = run_ok(
        &app,
        &["admin", "reset-password", "--email", "ops@example.test"],
    );
    let new = shown_password(&out);
    assert_ne!(new, old);
    expect_error(
        &admin_login(&app, "ops@example.test", &old),
        401,
        "invalid_credentials",
        "the old password",
    );
    expect_error(
        &app.as_bearer(&session, "GET", "/api/admin/me", &[], None),
        401,
        "unauthorized",
        "the old session",
    );
    let after = admin_login(&app, "ops@example.test", &new);
    expect(&after, 200, "the new password, no code");
    assert_eq!(after.json()["admin"]["totp_enabled"], false);
    // Enrolling again starts afresh: the current code of the new secret confirms it, though a
    // later step of the old secret was used above.
    let after = text(&after.json()["token"]);
    let enrol = app.as_bearer(&after, "POST", "/api/admin/totp/enrol", &[], None);
    let secret = text(&enrol.json()["secret"]);
    let code = totp::code_at(&secret, unix_now() as u64).unwrap();
    let confirm = app.as_bearer(
        &after,
        "POST",
        "/api/admin/totp/confirm",
        &[],
        Some(json!({"code": code})),
    );
    expect(&confirm, 200, "re-enrolment");
    for (name, token) in [
        ("the old session", &session),
        ("another old session", &second),
        ("its impersonation", &acting),
    ] {
        expect_error(
            &app.as_bearer(token, "GET", "/api/me", &[], None),
            401,
            "unauthorized",
            name,
        );
    }
    expect_error(
        &exchange(&pending),
        401,
        "unauthorized",
        "its pending ticket",
    );
    // The other admin is untouched.
    expect(&app.admin("GET", "/api/admin/me", None), 200, "root");
    expect(
        &app.as_bearer(&roots, "GET", "/api/me", &[], None),
        200,
        "root's impersonation",
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Bad input

#[test]
fn bad_input_gets_400_415_or_422_and_never_a_500() {
    let app = spawn_app_with(|c| c.throttle.free_failures = 1000);
    app.create_tenant("acme", &[]);
    let role = custom_role(&app, "acme", "support", &[]);
    let (victim, _) = member(&app, "victim@example.test", "acme", "viewer");
    let owner = app.owner_token.clone();
    let admin = app.admin_token.clone();
    let nobody = String::new();
    let member_path = format!("/t/acme/api/members/{victim}");
    let role_path = format!("/t/acme/api/roles/{role}");
    // (method, path, credentials, a body with a field of the wrong type, that field)
    let endpoints: Vec<(&str, &str, &str, Value, &str)> = vec![
        (
            "POST",
            "/api/auth/login",
            nobody.as_str(),
            json!({"email": 1, "password": "x"}),
            "email",
        ),
        (
            "POST",
            "/api/auth/login",
            nobody.as_str(),
            json!({"email": "a@b.test"}),
            "password",
        ),
        (
            "POST",
            "/t/acme/api/auth/impersonate",
            nobody.as_str(),
            json!({"ticket": 1}),
            "ticket",
        ),
        (
            "PATCH",
            "/api/me",
            owner.as_str(),
            json!({"name": 1}),
            "name",
        ),
        (
            "PATCH",
            "/api/me",
            owner.as_str(),
            json!({"photo_url": "javascript:alert(1)"}),
            "photo_url",
        ),
        (
            "POST",
            "/api/me/password",
            owner.as_str(),
            json!({"current_password": 1, "new_password": "x"}),
            "current_password",
        ),
        (
            "POST",
            "/api/tokens",
            owner.as_str(),
            json!({"name": 1, "tenant": "acme"}),
            "name",
        ),
        (
            "POST",
            "/api/tokens",
            owner.as_str(),
            json!({"name": "x", "tenant": "acme", "expires_in_days": "7"}),
            "expires_in_days",
        ),
        (
            "POST",
            "/api/tokens",
            owner.as_str(),
            json!({"name": "\u{7}", "tenant": "acme"}),
            "name",
        ),
        (
            "POST",
            "/t/acme/api/members",
            owner.as_str(),
            json!({"email": 1, "role": "viewer"}),
            "email",
        ),
        (
            "POST",
            "/t/acme/api/members",
            owner.as_str(),
            json!({"email": "nope", "role": "viewer"}),
            "email",
        ),
        (
            "POST",
            "/t/acme/api/members",
            owner.as_str(),
            json!({"email": "n@example.test", "role": "overlord"}),
            "role",
        ),
        (
            "PATCH",
            member_path.as_str(),
            owner.as_str(),
            json!({"role": 1}),
            "role",
        ),
        (
            "POST",
            "/t/acme/api/roles",
            owner.as_str(),
            json!({"name": 1}),
            "name",
        ),
        (
            "POST",
            "/t/acme/api/roles",
            owner.as_str(),
            json!({"name": "Bad Name"}),
            "name",
        ),
        (
            "POST",
            "/t/acme/api/roles",
            owner.as_str(),
            json!({"name": "x", "permissions": ["*"]}),
            "permissions",
        ),
        (
            "PATCH",
            role_path.as_str(),
            owner.as_str(),
            json!({"permissions": "audit_view"}),
            "permissions",
        ),
        (
            "POST",
            "/api/admin/auth/login",
            nobody.as_str(),
            json!({"email": "x@y.test", "password": 1}),
            "password",
        ),
        (
            "POST",
            "/api/admin/totp/confirm",
            admin.as_str(),
            json!({"code": 123456}),
            "code",
        ),
        (
            "POST",
            "/api/admin/tenants/acme/impersonate",
            admin.as_str(),
            json!({"user_id": "1"}),
            "user_id",
        ),
    ];
    let send = |method: &str, path: &str, auth: &str, content_type: &str, body: &str| {
        let bearer = format!("Bearer {auth}");
        let mut headers = vec![("Content-Type", content_type)];
        if !auth.is_empty() {
            headers.push(("Authorization", bearer.as_str()));
        }
        app.call(method, path, &headers, Some(body))
    };
    let mut failures = Vec::new();
    let check = |what: String, reply: Reply, status: u16, code: &str, field: Option<&str>| {
        let json: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let ok = reply.status == status
            && json["error"]["code"] == code
            && field.is_none_or(|f| json["error"]["fields"][f].is_string());
        (!ok).then(|| format!("{what}: {} {}", reply.status, reply.text()))
    };
    for (method, path, auth, wrong, field) in &endpoints {
        for body in [
            "{",
            "{\"email\": ",
            "nul",
            "",
            "[]",
            "[{}]",
            "\"text\"",
            "42",
            "null",
            "{\"a\":1}x",
        ] {
            let reply = send(method, path, auth, "application/json", body);
            failures.extend(check(
                format!("{method} {path} {body:?}"),
                reply,
                400,
                "invalid_json",
                None,
            ));
        }
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
        ] {
            let reply = send(method, path, auth, content_type, &wrong.to_string());
            failures.extend(check(
                format!("{method} {path} as {content_type}"),
                reply,
                415,
                "unsupported_media_type",
                None,
            ));
        }
        for content_type in ["application/json", "Application/JSON; charset=utf-8"] {
            let reply = send(method, path, auth, content_type, &wrong.to_string());
            failures.extend(check(
                format!("{method} {path} {wrong} as {content_type}"),
                reply,
                422,
                "validation_failed",
                Some(field),
            ));
        }
        // Whatever the values, an answer of ours, not a crash.
        let odd = [
            json!(null),
            json!([]),
            json!({}),
            json!(true),
            json!(-1),
            json!(1e300),
            json!("x".repeat(5000)),
            json!("\u{0}"),
        ];
        for value in odd {
            let mut body = wrong.clone();
            body[*field] = value;
            let reply = send(method, path, auth, "application/json", &body.to_string());
            if reply.status >= 500 || serde_json::from_slice::<Value>(&reply.body).is_err() {
                failures.push(format!(
                    "{method} {path} {body}: {} {}",
                    reply.status,
                    reply.text()
                ));
            }
        }
    }
    // Ids and query parameters that name nothing.
    let bad_targets = [
        ("PATCH", "/t/acme/api/members/abc", 404),
        ("DELETE", "/t/acme/api/members/99999999999999999999999", 404),
        ("PATCH", "/t/acme/api/roles/-1", 404),
        ("DELETE", "/api/tokens/x", 404),
        ("GET", "/t/acme/api/audit?limit=abc", 422),
        ("GET", "/t/acme/api/audit?limit=0", 422),
        ("GET", "/t/acme/api/audit?limit=201", 422),
        ("GET", "/t/acme/api/audit?since=yesterday", 422),
        ("GET", "/t/acme/api/audit?before=1.5", 422),
    ];
    for (method, path, status) in bad_targets {
        let reply = app.as_bearer(
            &owner,
            method,
            path,
            &[],
            Some(json!({"role": "viewer"})).filter(|_| method == "PATCH"),
        );
        if reply.status != status {
            failures.push(format!(
                "{method} {path}: {} {}",
                reply.status,
                reply.text()
            ));
        }
    }
    for query in ["actor=user:abc", "limit=-5", "tenant=nope"] {
        let reply = app.admin("GET", &format!("/api/admin/audit?{query}"), None);
        if !matches!(reply.status, 404 | 422) {
            failures.push(format!(
                "admin audit ?{query}: {} {}",
                reply.status,
                reply.text()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The refusals changed nothing.
    let me = app.as_bearer(&owner, "GET", "/api/me", &[], None);
    expect(&me, 200, "owner still in");
    expect(
        &app.login(OWNER_EMAIL, OWNER_PASSWORD),
        200,
        "owner's password unchanged",
    );
}
