//! The audit log through the real server: every action is recorded with its actor, tenant and
//! target; a tenant sees only its own entries; the admin filters and pages.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use tenantd::catalog::unix_now;

use crate::invitations::accept;
use crate::support::{
    expect, expect_error, id, int, spawn_app, text, TestApp, ADMIN_EMAIL, OWNER_EMAIL,
};

fn admin_audit(app: &TestApp, query: &str) -> Vec<Value> {
    let reply = app.admin("GET", &format!("/api/admin/audit?{query}"), None);
    expect(&reply, 200, &format!("admin audit ?{query}"));
    reply.json()["entries"].as_array().unwrap().clone()
}

/// What `audited_history` did, for the tests to look for in the log.
struct History {
    app: TestApp,
    acme: String,
    globex: String,
    doomed: String,
    initech: String,
    admin_id: i64,
    owner: i64,
    carol: i64,
    owner_s: String,
    carol_s: String,
    role_s: String,
    token_s: String,
    invitation_s: String,
}

/// (action, actor type, actor id, tenant, target id)
type Row<'a> = (
    &'a str,
    &'a str,
    Option<i64>,
    Option<&'a str>,
    Option<&'a str>,
);

/// Every audited action, by users on acme (and one on globex), and by the system admin on
/// tenants of their own.
fn audited_history() -> History {
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

    History {
        acme,
        globex,
        doomed,
        initech,
        admin_id,
        owner,
        carol,
        owner_s: owner.to_string(),
        carol_s: carol.to_string(),
        role_s: role.to_string(),
        token_s: token_id.to_string(),
        invitation_s,
        app,
    }
}

impl History {
    /// The entries the history must have left.
    fn expected(&self) -> Vec<Row<'_>> {
        vec![
            ("auth.login", "user", Some(self.owner), None, None),
            (
                "auth.login_failed",
                "anonymous",
                Some(self.owner),
                None,
                None,
            ),
            ("auth.logout", "user", Some(self.carol), None, None),
            (
                "auth.password_changed",
                "user",
                Some(self.carol),
                None,
                None,
            ),
            (
                "token.created",
                "user",
                Some(self.carol),
                Some(self.acme.as_str()),
                Some(self.token_s.as_str()),
            ),
            (
                "token.revoked",
                "user",
                Some(self.carol),
                None,
                Some(self.token_s.as_str()),
            ),
            (
                "invitation.created",
                "user",
                Some(self.owner),
                Some(self.acme.as_str()),
                Some(self.invitation_s.as_str()),
            ),
            (
                "invitation.accepted",
                "user",
                Some(self.carol),
                Some(self.acme.as_str()),
                Some(self.invitation_s.as_str()),
            ),
            (
                "user.created",
                "user",
                Some(self.carol),
                None,
                Some(self.carol_s.as_str()),
            ),
            (
                "member.role_changed",
                "user",
                Some(self.owner),
                Some(self.acme.as_str()),
                Some(self.carol_s.as_str()),
            ),
            (
                "member.removed",
                "user",
                Some(self.owner),
                Some(self.acme.as_str()),
                Some(self.carol_s.as_str()),
            ),
            (
                "role.created",
                "user",
                Some(self.owner),
                Some(self.acme.as_str()),
                Some(self.role_s.as_str()),
            ),
            (
                "role.updated",
                "user",
                Some(self.owner),
                Some(self.acme.as_str()),
                Some(self.role_s.as_str()),
            ),
            (
                "role.deleted",
                "user",
                Some(self.owner),
                Some(self.acme.as_str()),
                Some(self.role_s.as_str()),
            ),
            (
                "tenant.created",
                "admin",
                Some(self.admin_id),
                Some(self.acme.as_str()),
                Some(self.acme.as_str()),
            ),
            (
                "tenant.suspended",
                "admin",
                Some(self.admin_id),
                Some(self.doomed.as_str()),
                Some(self.doomed.as_str()),
            ),
            (
                "tenant.activated",
                "admin",
                Some(self.admin_id),
                Some(self.doomed.as_str()),
                Some(self.doomed.as_str()),
            ),
            (
                "tenant.deleted",
                "admin",
                Some(self.admin_id),
                Some(self.doomed.as_str()),
                Some(self.doomed.as_str()),
            ),
            (
                "tenant.restored",
                "admin",
                Some(self.admin_id),
                Some(self.doomed.as_str()),
                Some(self.doomed.as_str()),
            ),
            (
                "tenant.purged",
                "admin",
                Some(self.admin_id),
                Some(self.doomed.as_str()),
                Some(self.doomed.as_str()),
            ),
            (
                "tenant.renamed",
                "admin",
                Some(self.admin_id),
                Some(self.initech.as_str()),
                Some(self.initech.as_str()),
            ),
            (
                "impersonation.started",
                "admin",
                Some(self.admin_id),
                Some(self.acme.as_str()),
                Some(self.owner_s.as_str()),
            ),
            (
                "impersonation.exchanged",
                "admin",
                Some(self.admin_id),
                Some(self.acme.as_str()),
                Some(self.owner_s.as_str()),
            ),
            ("admin.login", "admin", Some(self.admin_id), None, None),
            (
                "admin.login_failed",
                "anonymous",
                Some(self.admin_id),
                None,
                None,
            ),
        ]
    }
}

#[test]
fn every_action_is_audited_with_its_actor_tenant_and_target() {
    let history = audited_history();
    let app = &history.app;
    let expected = history.expected();
    for (action, actor_type, actor_id, tenant, target) in &expected {
        let entries = admin_audit(app, &format!("action={action}&limit=200"));
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
    let invited = &admin_audit(app, "action=invitation.created")[0];
    assert_eq!(invited["user_agent"], "audit-test/1.0");
    assert_eq!(invited["actor_email"], OWNER_EMAIL);
    assert_eq!(invited["details"]["email"], "carol@example.test");
    let failed = &admin_audit(app, "action=auth.login_failed")[0];
    assert_eq!(failed["actor_email"], OWNER_EMAIL);
    assert!(
        !failed.to_string().contains("wrong-password"),
        "a password in the log: {failed}"
    );
}

#[test]
fn a_tenant_sees_only_its_own_audit_entries() {
    let history = audited_history();
    let (app, acme, globex) = (&history.app, &history.acme, &history.globex);
    let expected = history.expected();
    // A tenant's log: its own entries, all of them.
    let acme_log = app.get("/t/acme/api/audit?limit=200", &[]);
    expect(&acme_log, 200, "acme audit");
    let acme_entries = acme_log.json()["entries"].as_array().unwrap().clone();
    assert!(
        acme_entries.iter().all(|e| e["tenant_id"] == *acme),
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
        globex_entries.iter().all(|e| e["tenant_id"] == *globex),
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
        .all(|e| e["tenant_id"] == *globex));
}

#[test]
fn the_admin_filters_and_pages_the_whole_log() {
    let history = audited_history();
    let (app, globex, doomed, carol) = (
        &history.app,
        &history.globex,
        &history.doomed,
        history.carol,
    );
    // The admin's filters and paging.
    let by_tenant = admin_audit(app, "tenant=globex&limit=200");
    assert!(!by_tenant.is_empty() && by_tenant.iter().all(|e| e["tenant_id"] == *globex));
    let by_id = admin_audit(app, &format!("tenant={globex}&limit=200"));
    assert_eq!(by_tenant, by_id);
    // The log outlives the tenants it names: a purged tenant's history is still there by id.
    let purged: Vec<String> = admin_audit(app, &format!("tenant={doomed}&limit=200"))
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
    let by_user = admin_audit(app, &format!("actor=user:{carol}&limit=200"));
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
    let prefix = admin_audit(app, "action=tenant.&limit=200");
    assert!(
        prefix.len() >= 9
            && prefix
                .iter()
                .all(|e| text(&e["action"]).starts_with("tenant."))
    );
    assert!(admin_audit(app, &format!("since={}", unix_now() + 3600)).is_empty());
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
    let second = admin_audit(app, &format!("limit=2&before={next}"));
    assert_eq!(int(&second[0]["id"]), first[1] - 1);
}

#[test]
fn only_audit_view_reads_a_tenants_log_and_only_an_admin_the_central_one() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    // Only with audit_view; only for the admin centrally.
    let (_, viewer) = app.member("viewer@example.test", "acme", "viewer");
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
