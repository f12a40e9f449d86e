//! The system admin through the real server: TOTP enrolment and login, impersonation tickets.

use std::sync::Barrier;

use serde_json::{json, Value};
use tenantd::auth::{token, totp};
use tenantd::catalog::unix_now;

use crate::support::{
    expect, expect_error, id, int, spawn_app, spawn_app_with, text, Reply, ADMIN_EMAIL,
};

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
    let (bob, bob_token) = app.member("bob@example.test", "acme", "agent");
    app.join(bob, "globex", "admin");
    let (outsider, _) = app.member("out@example.test", "globex", "viewer");

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
