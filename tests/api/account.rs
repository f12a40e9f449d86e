//! Login through the real server: the same answer for every failure, throttling per account and
//! address, the hashing pool, stored hash parameters and their upgrade.

use std::sync::Barrier;
use std::time::Duration;

use serde_json::json;
use tenantd::auth::hasher::HasherConfig;
use tenantd::auth::throttle::ThrottleConfig;
use tenantd::catalog::unix_now;

use crate::support::{
    expect, expect_error, int, spawn_app, spawn_app_full, spawn_app_with, text, Reply, TestApp,
    ADMIN_EMAIL, ADMIN_PASSWORD, OWNER_EMAIL, OWNER_PASSWORD,
};

const ARGON2ID_OWASP: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

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
                frozen_clock: true,
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
