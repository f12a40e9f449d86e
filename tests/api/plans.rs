//! Plans and subscriptions: each counted limit below, at and above its value (also under
//! concurrent writers), feature switches, a tenant made read-only by its subscription, the
//! admin routes and `/api/subscription`, each per tenant.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::{expect, expect_error, spawn_app, TestApp};

fn two_companies() -> TestApp {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    app
}

/// Puts `slug` on plan `free` with the given limits and features.
fn on_free(app: &TestApp, slug: &str, limits: Value, features: Value) {
    let edited = app.admin(
        "PATCH",
        "/api/admin/plans/free",
        Some(json!({"limits": limits, "features": features})),
    );
    expect(&edited, 200, "edit the free plan");
    let put = app.admin(
        "PUT",
        &format!("/api/admin/tenants/{slug}/subscription"),
        Some(json!({"plan": "free", "status": "active"})),
    );
    expect(&put, 200, "put the tenant on free");
}

fn new_order(app: &TestApp, slug: &str) -> crate::support::Reply {
    app.on(
        &app.owner_token,
        slug,
        "POST",
        "/api/orders",
        Some(json!({"title": "Boxes", "customer_name": "Ada", "amount_minor": 100})),
    )
}

fn assert_quota(reply: &crate::support::Reply, name: &str, limit: i64, usage: i64) {
    expect_error(reply, 403, "quota_exceeded", name);
    let error = &reply.json()["error"];
    assert_eq!(
        (&error["limit_name"], &error["limit"], &error["usage"]),
        (&json!(name), &json!(limit), &json!(usage)),
        "{error}"
    );
}

#[test]
fn orders_stop_at_the_limit_reads_go_on_and_other_tenants_are_untouched() {
    let app = two_companies();
    on_free(&app, "acme", json!({"orders": 2}), json!({}));
    expect(&new_order(&app, "acme"), 201, "below the limit");
    let at = new_order(&app, "acme");
    expect(&at, 201, "up to the limit");
    assert_quota(&new_order(&app, "acme"), "orders", 2, 2);
    let list = app.on(&app.owner_token, "acme", "GET", "/api/orders", None);
    expect(&list, 200, "reads keep working");
    assert_eq!(list.json()["orders"].as_array().unwrap().len(), 2);
    // Another tenant on its own plan is not counted with acme.
    for _ in 0..3 {
        expect(&new_order(&app, "globex"), 201, "globex is unlimited");
    }
    // Below the limit again after a delete.
    let id = at.json()["id"].as_i64().unwrap();
    let deleted = app.on(
        &app.owner_token,
        "acme",
        "DELETE",
        &format!("/api/orders/{id}"),
        None,
    );
    assert!(deleted.status < 300, "{}", deleted.text());
    expect(&new_order(&app, "acme"), 201, "room again");
    // Raising the limit lets more in at once.
    on_free(&app, "acme", json!({"orders": 3}), json!({}));
    expect(&new_order(&app, "acme"), 201, "a raised limit");
}

#[test]
fn concurrent_writers_never_pass_the_orders_limit() {
    let app = Arc::new(two_companies());
    on_free(&app, "acme", json!({"orders": 5}), json!({}));
    let threads: Vec<_> = (0..12)
        .map(|_| {
            let app = Arc::clone(&app);
            std::thread::spawn(move || new_order(&app, "acme").status)
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 403).count(),
        7,
        "{statuses:?}"
    );
    let usage = app.on(&app.owner_token, "acme", "GET", "/api/subscription", None);
    expect(&usage, 200, "usage");
    assert_eq!(usage.json()["usage"]["orders"], 5);
}

#[test]
fn chats_and_members_stop_at_their_limits() {
    let app = two_companies();
    // The owner is acme's one member.
    on_free(&app, "acme", json!({"chats": 1, "members": 2}), json!({}));
    let chat = || {
        app.on(
            &app.owner_token,
            "acme",
            "POST",
            "/api/chats",
            Some(json!({"title": "Team", "kind": "group", "participant_ids": []})),
        )
    };
    expect(&chat(), 201, "one chat");
    assert_quota(&chat(), "chats", 1, 1);

    let acme = app.app.catalog.by_slug("acme").unwrap().unwrap();
    let second = app.user("second@acme.test", "member-password-1");
    app.app
        .catalog
        .add_member(&acme.id, second, "agent")
        .expect("the second member fits");
    let third = app.user("third@acme.test", "member-password-1");
    let refused = app.app.catalog.add_member(&acme.id, third, "agent");
    assert!(
        matches!(
            refused,
            Err(tenantd::catalog::IdentityError::Quota { limit: 2, usage: 2 })
        ),
        "{refused:?}"
    );
    // globex, unlimited, takes the same user.
    app.join(third, "globex", "agent");
}

#[test]
fn features_off_answer_feature_not_in_plan_and_endpoints_count() {
    let app = two_companies();
    on_free(
        &app,
        "acme",
        json!({"webhook_endpoints": 0}),
        json!({"webhooks": false, "exports": false}),
    );
    let endpoint = |slug: &str| {
        app.on(
            &app.owner_token,
            slug,
            "POST",
            "/api/webhook-endpoints",
            Some(json!({"url": "https://93.184.215.14/hook", "events": ["*"]})),
        )
    };
    expect_error(
        &endpoint("acme"),
        403,
        "feature_not_in_plan",
        "webhooks off",
    );
    let export = app.on(&app.owner_token, "acme", "GET", "/api/export", None);
    expect_error(&export, 403, "feature_not_in_plan", "exports off");
    expect(&endpoint("globex"), 201, "globex has webhooks");

    on_free(
        &app,
        "acme",
        json!({"webhook_endpoints": 1}),
        json!({"webhooks": true}),
    );
    expect(&endpoint("acme"), 201, "one endpoint");
    assert_quota(&endpoint("acme"), "webhook_endpoints", 1, 1);
}

fn refused_inactive(app: &TestApp, what: &str) {
    expect_error(&new_order(app, "acme"), 403, "subscription_inactive", what);
}

#[test]
fn an_ended_trial_and_past_due_beyond_grace_leave_the_tenant_read_only() {
    let app = two_companies();
    let now = app.app.sessions.clock.now();
    let put = app.admin(
        "PUT",
        "/api/admin/tenants/acme/subscription",
        Some(json!({"plan": "team", "status": "trialing", "trial_end": now + 100})),
    );
    expect(&put, 200, "a trial");
    assert_eq!(put.json()["writable"], true);
    expect(&new_order(&app, "acme"), 201, "during the trial");
    app.app.sessions.clock.advance(200);
    refused_inactive(&app, "trial over");
    for (method, path, body) in [
        (
            "POST",
            "/api/chats",
            json!({"title": "T", "kind": "group", "participant_ids": []}),
        ),
        ("PATCH", "/api/settings", json!({"locale": "de-DE"})),
        (
            "POST",
            "/api/members",
            json!({"email": "new@acme.test", "role": "agent"}),
        ),
    ] {
        let refused = app.on(&app.owner_token, "acme", method, path, Some(body));
        expect_error(&refused, 403, "subscription_inactive", path);
    }
    let settings = app.on(&app.owner_token, "acme", "GET", "/api/settings", None);
    expect(&settings, 200, "settings still read");
    let list = app.on(&app.owner_token, "acme", "GET", "/api/orders", None);
    expect(&list, 200, "reads go on");
    assert_eq!(
        list.json()["orders"].as_array().unwrap().len(),
        1,
        "nothing deleted"
    );
    expect(&new_order(&app, "globex"), 201, "globex is not acme");

    app.app.catalog.set_billing_grace(3600);
    let now = app.app.sessions.clock.now();
    let put = app.admin(
        "PUT",
        "/api/admin/tenants/acme/subscription",
        Some(json!({"status": "past_due", "current_period_end": now})),
    );
    expect(&put, 200, "past due");
    expect(&new_order(&app, "acme"), 201, "within the grace period");
    app.app.sessions.clock.advance(3600);
    refused_inactive(&app, "past grace");
    let put = app.admin(
        "PUT",
        "/api/admin/tenants/acme/subscription",
        Some(json!({"status": "active"})),
    );
    expect(&put, 200, "paid");
    expect(&new_order(&app, "acme"), 201, "writable again");
}

#[test]
fn admin_routes_check_their_input_and_tenants_see_only_their_subscription() {
    let app = two_companies();
    let plans = app.admin("GET", "/api/admin/plans", None);
    expect(&plans, 200, "plans");
    let slugs: Vec<Value> = plans.json()["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].clone())
        .collect();
    assert_eq!(slugs, ["free", "unlimited", "team"]);
    let path = "/api/admin/tenants/acme/subscription";
    expect_error(
        &app.admin("PUT", path, Some(json!({"plan": "gold"}))),
        422,
        "validation_failed",
        "unknown plan",
    );
    expect_error(
        &app.admin("PUT", path, Some(json!({"status": "paid"}))),
        422,
        "validation_failed",
        "unknown status",
    );
    for (body, field) in [
        (json!({"metadata": [1]}), "metadata"),
        (json!({"external_ref": ""}), "external_ref"),
        (
            json!({"current_period_start": 10, "current_period_end": 5}),
            "current_period_end",
        ),
    ] {
        let reply = app.admin("PUT", path, Some(body.clone()));
        expect_error(&reply, 422, "validation_failed", field);
        assert!(
            reply.json()["error"]["fields"].get(field).is_some(),
            "{body}"
        );
    }
    let kept = app.admin(
        "PUT",
        path,
        Some(json!({"current_period_start": 10, "metadata": {"note": "x"}})),
    );
    expect(&kept, 200, "period start and metadata");
    assert_eq!(kept.json()["subscription"]["current_period_start"], 10);
    assert_eq!(
        kept.json()["subscription"]["metadata"],
        json!({"note": "x"})
    );
    expect_error(
        &app.admin(
            "PUT",
            "/api/admin/tenants/nope/subscription",
            Some(json!({})),
        ),
        404,
        "tenant_not_found",
        "unknown tenant",
    );
    expect_error(
        &app.admin("PATCH", "/api/admin/plans/gold", Some(json!({}))),
        404,
        "not_found",
        "unknown plan",
    );
    expect_error(
        &app.admin(
            "PATCH",
            "/api/admin/plans/free",
            Some(json!({"limits": {"orders": -1}})),
        ),
        422,
        "validation_failed",
        "a negative limit",
    );
    let by_owner = app.as_bearer(
        &app.owner_token.clone(),
        "GET",
        "/api/admin/plans",
        &[],
        None,
    );
    assert_eq!(by_owner.status, 403, "{}", by_owner.text());

    expect(
        &app.admin("PUT", path, Some(json!({"plan": "free"}))),
        200,
        "acme on free",
    );
    expect(&new_order(&app, "acme"), 201, "an order");
    let seen_by_admin = app.admin("GET", path, None);
    expect(&seen_by_admin, 200, "the admin's view");
    assert_eq!(seen_by_admin.json()["plan"]["slug"], "free");
    assert_eq!(seen_by_admin.json()["usage"]["orders"], 1);
    let globex_usage = app.admin("GET", "/api/admin/tenants/globex/subscription", None);
    assert_eq!(globex_usage.json()["usage"]["orders"], 0);
    let acme = app.on(&app.owner_token, "acme", "GET", "/api/subscription", None);
    expect(&acme, 200, "acme's subscription");
    assert_eq!(acme.json()["plan"]["slug"], "free");
    assert_eq!(acme.json()["usage"]["members"], 1);
    let globex = app.on(&app.owner_token, "globex", "GET", "/api/subscription", None);
    assert_eq!(globex.json()["plan"]["slug"], "unlimited");
    // An agent (no settings_manage) does not see it.
    let (_, agent) = app.member("agent@acme.test", "acme", "agent");
    let seen = app.on(&agent, "acme", "GET", "/api/subscription", None);
    assert_eq!(seen.status, 403, "{}", seen.text());
}

#[test]
fn the_cli_lists_and_edits_plans_and_sets_a_tenants_plan_beside_a_running_server() {
    let app = two_companies();
    let ok = |args: &[&str]| {
        let out = app.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed: Value = serde_json::from_str(&ok(&["plans", "list", "--json"])).unwrap();
    assert_eq!(listed["plans"][0]["slug"], "free");
    assert!(ok(&["plans", "list"]).contains("unlimited"));

    ok(&[
        "plans",
        "edit",
        "team",
        "--limit",
        "orders=1",
        "--feature",
        "exports=off",
    ]);
    let shown = ok(&["tenants", "plan", "acme", "team", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&shown).unwrap()["plan"],
        "team"
    );
    expect(&new_order(&app, "acme"), 201, "the first order");
    assert_quota(&new_order(&app, "acme"), "orders", 1, 1);
    let export = app.on(&app.owner_token, "acme", "GET", "/api/export", None);
    expect_error(&export, 403, "feature_not_in_plan", "exports off on team");
    expect(&new_order(&app, "globex"), 201, "globex stays unlimited");

    ok(&["tenants", "plan", "acme", "team", "--status", "canceled"]);
    expect_error(
        &new_order(&app, "acme"),
        403,
        "subscription_inactive",
        "canceled",
    );

    for bad in [
        &["plans", "edit", "team", "--limit", "orders"][..],
        &["plans", "edit", "team", "--limit", "orders=-2"],
        &["plans", "edit", "team", "--feature", "exports=maybe"],
        &["plans", "edit", "gold", "--limit", "orders=1"],
        &["tenants", "plan", "acme", "gold"],
        &["tenants", "plan", "acme", "free", "--status", "paid"],
        &["tenants", "plan", "nope", "free"],
    ] {
        let out = app.cli(bad);
        assert!(!out.status.success(), "{bad:?} succeeded");
        assert!(!out.stderr.is_empty(), "{bad:?} said nothing");
    }
    let audit = app.central_db().query_row(
        "SELECT count(*) FROM audit_log WHERE action IN ('plan.edited', 'subscription.changed')",
        [],
        |r| r.get::<_, i64>(0),
    );
    assert_eq!(audit.unwrap(), 3);
}

#[test]
fn messages_per_day_count_todays_messages_only() {
    let app = two_companies();
    on_free(&app, "acme", json!({"messages_per_day": 2}), json!({}));
    let chat = app.on(
        &app.owner_token,
        "acme",
        "POST",
        "/api/chats",
        Some(json!({"title": "Team", "kind": "group", "participant_ids": []})),
    );
    expect(&chat, 201, "a chat");
    let path = format!("/api/chats/{}/messages", chat.json()["id"]);
    // Yesterday's messages, as if posted then: they do not count today.
    let acme = app.app.catalog.by_slug("acme").unwrap().unwrap();
    let file = rusqlite::Connection::open(app.tenant_file(&acme.id)).unwrap();
    for _ in 0..3 {
        file.execute(
            "INSERT INTO messages (chat_id, user_id, body, created_at)
             VALUES (?1, ?2, 'old', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day'))",
            rusqlite::params![chat.json()["id"].as_i64().unwrap(), app.owner_id],
        )
        .unwrap();
    }
    drop(file);
    let post = || {
        app.on(
            &app.owner_token,
            "acme",
            "POST",
            &path,
            Some(json!({"body": "hi"})),
        )
    };
    expect(&post(), 201, "below the limit");
    expect(&post(), 201, "at the limit");
    assert_quota(&post(), "messages_per_day", 2, 2);
    let list = app.on(&app.owner_token, "acme", "GET", &path, None);
    expect(&list, 200, "reading the chat");
}

#[test]
fn concurrent_member_additions_never_pass_the_members_limit() {
    let app = Arc::new(two_companies());
    // The owner is one of the three.
    on_free(&app, "acme", json!({"members": 3}), json!({}));
    let acme = app.app.catalog.by_slug("acme").unwrap().unwrap();
    let users: Vec<i64> = (0..6)
        .map(|i| app.user(&format!("m{i}@acme.test"), "member-password-1"))
        .collect();
    let threads: Vec<_> = users
        .into_iter()
        .map(|user| {
            let (app, tenant) = (Arc::clone(&app), acme.id.clone());
            std::thread::spawn(move || app.app.catalog.add_member(&tenant, user, "agent").is_ok())
        })
        .collect();
    let added = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&ok| ok)
        .count();
    assert_eq!(added, 2);
    assert_eq!(app.app.catalog.member_count(&acme.id).unwrap(), 3);
}

#[test]
fn every_member_reads_whether_the_company_is_read_only_and_why_in_its_own_company() {
    let app = two_companies();
    let (_, agent) = app.member("agent@acme.test", "acme", "agent");
    let access =
        |token: &str, slug: &str| app.on(token, slug, "GET", "/api/subscription/access", None);
    let open = access(&agent, "acme");
    expect(&open, 200, "an agent reads it");
    assert_eq!(open.json()["writable"], true);
    assert_eq!(open.json()["read_only"], Value::Null);
    assert_eq!(open.json()["plan"]["slug"], "unlimited");
    assert!(
        open.json().get("usage").is_none() && open.json()["plan"].get("limits").is_none(),
        "nothing for settings managers only: {}",
        open.text()
    );
    // The full subscription stays the settings managers'.
    let full = app.on(&agent, "acme", "GET", "/api/subscription", None);
    expect_error(&full, 403, "forbidden", "an agent and /api/subscription");

    let now = app.app.sessions.clock.now();
    app.app.catalog.set_billing_grace(3600);
    for (body, reason, since) in [
        (
            json!({"status": "trialing", "trial_end": now - 10}),
            "trial_ended",
            json!(now - 10),
        ),
        (
            json!({"status": "past_due", "current_period_end": now - 7200}),
            "past_due",
            json!(now - 3600),
        ),
        (json!({"status": "canceled"}), "canceled", json!(now)),
    ] {
        let put = app.admin("PUT", "/api/admin/tenants/acme/subscription", Some(body));
        expect(&put, 200, reason);
        assert_eq!(put.json()["read_only"]["reason"], reason);
        // A cancellation is dated by the server's clock when the PUT ran, a moment after the
        // test read it: the same second or a later one.
        let since = if reason == "canceled" {
            let at = put.json()["read_only"]["since"].clone();
            assert!(at.as_i64().unwrap() >= since.as_i64().unwrap(), "{at}");
            at
        } else {
            since
        };
        let shown = access(&agent, "acme");
        assert_eq!(shown.json()["writable"], false, "{reason}");
        assert_eq!(
            shown.json()["read_only"],
            json!({"reason": reason, "since": since})
        );
        // globex is another company, untouched; acme's agent reads nothing of it.
        let theirs = access(&app.owner_token, "globex");
        assert_eq!(theirs.json()["writable"], true, "{reason}");
        expect_error(&access(&agent, "globex"), 403, "not_a_member", "globex");
    }
}
