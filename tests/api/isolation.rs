//! Tenant isolation through the real server: a member of one tenant reaches no other tenant by
//! any route, method or way of naming it, and another tenant's ids name nothing on one's own.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::support::{aims, borrow, expect_error, id, spawn_app, text, OWNER_EMAIL};

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
        .replace("{mid}", "1")
        .replace("{source}", "messages");
    assert!(!path.contains('{'), "unknown parameter in {pattern}");
    path
}

#[test]
fn a_member_of_one_tenant_never_reaches_another_by_any_route_or_method() {
    let app = spawn_app();
    let a_id = id(&app.create_tenant("a", &["a.test"]));
    let b_id = id(&app.create_tenant("b", &["b.test"]));
    // Both with a logo: `GET /api/settings/logo` then answers 200 on one's own tenant, and a
    // refusal on the other is not just a missing image.
    let png = format!(
        "data:image/png;base64,{}",
        data_encoding::BASE64.encode(b"\x89PNG\r\n\x1a\nlogo")
    );
    for slug in ["a", "b"] {
        let path = format!("/api/admin/tenants/{slug}/settings");
        let reply = app.admin("PATCH", &path, Some(json!({ "logo": png })));
        assert_eq!(reply.status, 200, "a logo for {slug}: {}", reply.text());
    }
    // An admin of A: no missing permission can explain a refusal.
    let (_, session) = app.member("alice@a.test", "a", "admin");
    let (_, personal) = app.personal_token(&session, "ci", "a");
    let (a_user, _) = app.member("amy@a.test", "a", "viewer");
    let a_role = app.create_role("a", "a-team", &["members_view"]);
    let (b_user, _) = app.member("bob@b.test", "b", "viewer");
    let b_role = app.create_role("b", "b-team", &["members_view"]);

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
    let (_, owners_a_token) = app.personal_token(&app.owner_token, "a only", "a");
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
    let (_, alice) = app.member("alice@a.test", "a", "admin");
    let (bob, _) = app.member("bob@b.test", "b", "admin");
    let b_role = app.create_role("b", "b-team", &["members_view"]);
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
