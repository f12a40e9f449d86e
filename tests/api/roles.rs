//! Roles and permissions through the real server: the built-in roles, handing out no more than
//! one holds, changes counting on the very next request, roles that cannot be deleted.

use serde_json::{json, Value};

use crate::invitations::{accept, invite};
use crate::support::{expect, expect_error, int, spawn_app, spawn_app_full, text, TestApp};

#[test]
fn each_built_in_role_gets_what_its_permissions_say() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let tokens: Vec<(&str, String)> = ["admin", "manager", "agent", "viewer"]
        .iter()
        .map(|role| {
            (
                *role,
                app.member(&format!("{role}@example.test"), "acme", role).1,
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
    let hr = app.create_role("acme", "hr", &["members_manage", "members_view"]);
    let rolesmith = app.create_role("acme", "rolesmith", &["members_view", "roles_manage"]);
    let helper = app.create_role("acme", "helper", &["members_view"]);
    let (hank, hank_token) = app.member("hank@example.test", "acme", "hr");
    let (_, rita) = app.member("rita@example.test", "acme", "rolesmith");
    let (amy, amy_token) = app.member("amy@example.test", "acme", "admin");
    let (hugo, _) = app.member("hugo@example.test", "acme", "helper");
    let (vic, _) = app.member("vic@example.test", "acme", "viewer");
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
    app.app.sessions.clock.advance(3);
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
    let auditors = app.create_role("acme", "auditors", &["audit_view", "members_view"]);
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

    let (_, carols_key) = app.personal_token(&carol, "carol's key", "acme");
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

    let used = app.create_role("acme", "support", &["members_view"]);
    let (dave, _) = app.member("dave@example.test", "acme", "viewer");
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
