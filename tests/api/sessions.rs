//! Sessions and tokens through the real server: logout, password changes, expiry and idle time,
//! cookies and CSRF, personal tokens bound to their tenant.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use tenantd::auth::token;
use tenantd::catalog::unix_now;

use crate::support::{
    aims, borrow, expect, expect_error, id, int, spawn_app, text, Reply, TestApp, ADMIN_EMAIL,
    ADMIN_PASSWORD, OWNER_EMAIL, OWNER_PASSWORD,
};

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
    let (_, personal) = app.personal_token(&current, "ci", "acme");
    let (_, bystander) = app.member("bystander@example.test", "acme", "viewer");

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
    let (acme_token_id, acme_token) = app.personal_token(&app.owner_token, "acme ci", "acme");
    let (_, globex_token) = app.personal_token(&app.owner_token, "globex ci", &globex);

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
    let (_, outsider) = app.member("outsider@example.test", "initech", "viewer");
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
