//! The identity CLI against a real data directory: users, members and admins that can sign in.

use serde_json::{json, Value};
use tenantd::auth::totp;
use tenantd::catalog::unix_now;

use crate::support::{expect, expect_error, spawn_app, text, Reply, TestApp};

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
    let (bob, _) = app.member("bob@example.test", "acme", "viewer");
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
