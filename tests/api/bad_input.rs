//! Bad input to the identity routes gets 400, 415 or 422 with a clear code, never a 500.

use serde_json::{json, Value};

use crate::support::{expect, spawn_app_with, Reply, OWNER_EMAIL, OWNER_PASSWORD};

#[test]
fn bad_input_gets_400_415_or_422_and_never_a_500() {
    let app = spawn_app_with(|c| c.throttle.free_failures = 1000);
    app.create_tenant("acme", &[]);
    let role = app.create_role("acme", "support", &[]);
    let (victim, _) = app.member("victim@example.test", "acme", "viewer");
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
