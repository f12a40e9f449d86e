//! Per-tenant and per-member rate limits on tenant routes: the `429` past either, its
//! `Retry-After`, the `RateLimit-Policy` / `RateLimit` headers (draft-ietf-httpapi-ratelimit-
//! headers-11) on every tenant-route answer, and limits that stay within their tenant and member.
//! The rates come from the tenant's plan (`api_requests_per_minute`,
//! `api_requests_per_member_per_minute`), the server's flags where it names none; a plan edited
//! or changed counts on the next request, also from the CLI beside the running server.
//! The limiter's clock is frozen and moved by the sessions clock, so no refill depends on speed.

use serde_json::{json, Value};
use tenantd::api::rate_limit::Rates;

use crate::support::{expect, expect_error, spawn_app_with, Reply, TestApp};

fn app_with(tenant_per_min: u32, member_per_min: u32) -> TestApp {
    let app = spawn_app_with(|c| {
        c.rate_limit.rates = Rates {
            tenant_per_min,
            member_per_min,
        };
        c.rate_limit.frozen_clock = true;
    });
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    app
}

fn show(app: &TestApp, token: &str, slug: &str) -> Reply {
    app.on(token, slug, "GET", "/api/tenant", None)
}

/// A structured-field list of `"name";key=int;key=int` items (RFC 9651 strings and integers):
/// the names with their parameters, or a panic naming what is malformed.
fn parse_list(field: &str) -> Vec<(String, Vec<(String, u64)>)> {
    field
        .split(',')
        .map(|item| {
            let mut parts = item.trim().split(';');
            let name = parts.next().unwrap();
            assert!(
                name.len() >= 2 && name.starts_with('"') && name.ends_with('"'),
                "not a string item: {field:?}"
            );
            let params = parts
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("{field:?}"));
                    assert!(k.bytes().all(|b| b.is_ascii_lowercase()), "{field:?}");
                    (
                        k.to_string(),
                        v.parse().unwrap_or_else(|_| panic!("{field:?}")),
                    )
                })
                .collect();
            (name.trim_matches('"').to_string(), params)
        })
        .collect()
}

fn param(list: &[(String, Vec<(String, u64)>)], name: &str, key: &str) -> u64 {
    let (_, params) = list
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {list:?}"));
    params
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {list:?}"))
        .1
}

fn remaining(reply: &Reply, name: &str) -> u64 {
    param(
        &parse_list(reply.header("ratelimit").expect("RateLimit")),
        name,
        "r",
    )
}

#[test]
fn the_request_past_a_members_rate_is_429_with_retry_after_and_the_headers() {
    let app = app_with(100, 3);
    let owner = app.owner_token.clone();
    for left in (0..3).rev() {
        let reply = show(&app, &owner, "acme");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(remaining(&reply, "member"), left);
        assert_eq!(remaining(&reply, "tenant"), 97 + left);
    }
    let refused = show(&app, &owner, "acme");
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.error_code(), "rate_limited");
    // 3 a minute: the next token in 20 s.
    assert_eq!(refused.header("retry-after"), Some("20"));
    let state = parse_list(refused.header("ratelimit").unwrap());
    assert_eq!(param(&state, "member", "r"), 0);
    assert_eq!(param(&state, "member", "t"), 20);
    assert_eq!(
        param(&state, "tenant", "r"),
        97,
        "a refused request costs the tenant nothing"
    );
    assert!(refused.header("ratelimit-policy").is_some());

    // Time refills the bucket continuously: one token after 20 s, not before.
    app.app.sessions.clock.advance(19);
    assert_eq!(show(&app, &owner, "acme").status, 429);
    app.app.sessions.clock.advance(1);
    assert_eq!(show(&app, &owner, "acme").status, 200);
    assert_eq!(show(&app, &owner, "acme").status, 429);
}

#[test]
fn every_tenant_route_answer_carries_headers_that_parse() {
    let app = app_with(6000, 1200);
    let owner = app.owner_token.clone();
    let ok = show(&app, &owner, "acme");
    assert_eq!(ok.status, 200);
    let policy = parse_list(ok.header("ratelimit-policy").expect("RateLimit-Policy"));
    let names: Vec<&str> = policy.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["tenant", "member"]);
    assert_eq!(param(&policy, "tenant", "q"), 6000);
    assert_eq!(param(&policy, "tenant", "w"), 60);
    assert_eq!(param(&policy, "member", "q"), 1200);
    assert_eq!(param(&policy, "member", "w"), 60);
    let state = parse_list(ok.header("ratelimit").unwrap());
    assert_eq!(param(&state, "member", "r"), 1199);
    assert_eq!(param(&state, "member", "t"), 0);
    // An error on a tenant route is counted and says so too.
    let bad = app.call(
        "POST",
        "/t/acme/api/orders",
        &[
            ("Authorization", &format!("Bearer {owner}")),
            ("Content-Type", "application/json"),
        ],
        Some("{"),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(remaining(&bad, "member"), 1198);
}

#[test]
fn a_member_at_their_limit_does_not_stop_another_member() {
    let app = app_with(100, 2);
    let owner = app.owner_token.clone();
    let agent = app.member_token("agent@example.test", "acme", "agent");
    for _ in 0..2 {
        assert_eq!(show(&app, &owner, "acme").status, 200);
    }
    assert_eq!(show(&app, &owner, "acme").status, 429);
    let other = show(&app, &agent, "acme");
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(remaining(&other, "member"), 1);
}

#[test]
fn a_tenant_at_its_limit_does_not_stop_another_tenant() {
    let app = app_with(3, 100);
    let owner = app.owner_token.clone();
    let agent = app.member_token("agent@example.test", "acme", "agent");
    for _ in 0..3 {
        assert_eq!(show(&app, &owner, "acme").status, 200);
    }
    // The tenant's limit holds for all its members...
    let refused = show(&app, &agent, "acme");
    assert_eq!(refused.status, 429);
    assert_eq!(remaining(&refused, "tenant"), 0);
    assert_eq!(refused.header("retry-after"), Some("20"));
    // ...and for none of another tenant's, the same user included.
    let other = show(&app, &owner, "globex");
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(remaining(&other, "tenant"), 2);
}

#[test]
fn central_and_admin_routes_are_not_limited() {
    let app = app_with(1, 1);
    let owner = app.owner_token.clone();
    assert_eq!(show(&app, &owner, "acme").status, 200);
    assert_eq!(show(&app, &owner, "acme").status, 429);
    for _ in 0..5 {
        let admin = app.admin("GET", "/api/admin/tenants", None);
        assert_eq!(admin.status, 200, "{}", admin.text());
        assert!(admin.header("ratelimit").is_none());
        let me = app.as_bearer(&owner, "GET", "/api/me", &[], None);
        assert_eq!(me.status, 200, "{}", me.text());
        assert!(me.header("ratelimit").is_none());
    }
}

#[test]
fn zero_turns_the_limits_and_their_headers_off() {
    let app = app_with(0, 0);
    let owner = app.owner_token.clone();
    for _ in 0..20 {
        let reply = show(&app, &owner, "acme");
        assert_eq!(reply.status, 200);
        assert!(reply.header("ratelimit").is_none());
        assert!(reply.header("ratelimit-policy").is_none());
    }
}

/// Sets plan `plan`'s rates (`null`: not named, the server's flag).
fn plan_rates(app: &TestApp, plan: &str, tenant: Value, member: Value) {
    let edited = app.admin(
        "PATCH",
        &format!("/api/admin/plans/{plan}"),
        Some(json!({"limits": {
            "api_requests_per_minute": tenant,
            "api_requests_per_member_per_minute": member,
        }})),
    );
    expect(&edited, 200, "edit the plan's rates");
}

fn subscribe(app: &TestApp, slug: &str, plan: &str) {
    let put = app.admin(
        "PUT",
        &format!("/api/admin/tenants/{slug}/subscription"),
        Some(json!({ "plan": plan })),
    );
    expect(&put, 200, "change the tenant's plan");
}

/// The quota of each policy in force: (tenant, member), 0 for one not there.
fn quotas(reply: &Reply) -> (u64, u64) {
    let policy = parse_list(reply.header("ratelimit-policy").expect("RateLimit-Policy"));
    let q = |name: &str| {
        if policy.iter().any(|(n, _)| n == name) {
            param(&policy, name, "q")
        } else {
            0
        }
    };
    (q("tenant"), q("member"))
}

#[test]
fn a_tenant_gets_its_plans_rate_then_429_and_another_plans_tenant_is_untouched() {
    let app = app_with(6000, 1200);
    let owner = app.owner_token.clone();
    // The member rate is not named: the server's flag.
    plan_rates(&app, "team", json!(3), Value::Null);
    subscribe(&app, "acme", "team");
    for left in (0..3).rev() {
        let ok = show(&app, &owner, "acme");
        expect(&ok, 200, "within the plan's rate");
        assert_eq!(quotas(&ok), (3, 1200));
        assert_eq!(remaining(&ok, "tenant"), left);
    }
    let refused = show(&app, &owner, "acme");
    expect_error(&refused, 429, "rate_limited", "past the plan's rate");
    // 3 a minute: one token every 20 s.
    assert_eq!(refused.header("retry-after"), Some("20"));
    assert_eq!(quotas(&refused), (3, 1200));
    // globex is on `unlimited`, which names no rate: the server's flags, its own buckets, the
    // same user included.
    for _ in 0..5 {
        let other = show(&app, &owner, "globex");
        expect(&other, 200, "another tenant on another plan");
        assert_eq!(quotas(&other), (6000, 1200));
    }
    assert_eq!(show(&app, &owner, "acme").status, 429, "acme still waits");
    app.app.sessions.clock.advance(20);
    expect(&show(&app, &owner, "acme"), 200, "a token 20 s later");
}

#[test]
fn a_plans_member_rate_holds_each_member_and_falls_back_to_the_flag_for_the_tenant() {
    let app = app_with(100, 1200);
    let owner = app.owner_token.clone();
    let agent = app.member_token("agent@example.test", "acme", "agent");
    plan_rates(&app, "free", Value::Null, json!(2));
    subscribe(&app, "acme", "free");
    for _ in 0..2 {
        let ok = show(&app, &owner, "acme");
        expect(&ok, 200, "within the member's rate");
        assert_eq!(quotas(&ok), (100, 2));
    }
    let refused = show(&app, &owner, "acme");
    expect_error(&refused, 429, "rate_limited", "past the member's rate");
    assert_eq!(refused.header("retry-after"), Some("30"));
    expect(&show(&app, &agent, "acme"), 200, "another member");
}

#[test]
fn a_plan_edited_or_changed_counts_on_the_next_request_without_a_restart() {
    let app = app_with(6000, 1200);
    let owner = app.owner_token.clone();
    plan_rates(&app, "team", json!(1000), json!(1000));
    subscribe(&app, "acme", "team");
    let first = show(&app, &owner, "acme");
    assert_eq!(quotas(&first), (1000, 1000));
    assert_eq!(remaining(&first, "tenant"), 999);

    // Lowered: the burst is the new rate's at once (999 tokens left become 2).
    plan_rates(&app, "team", json!(2), json!(1000));
    for _ in 0..2 {
        let ok = show(&app, &owner, "acme");
        expect(&ok, 200, "within the lowered rate");
        assert_eq!(quotas(&ok), (2, 1000));
    }
    expect_error(
        &show(&app, &owner, "acme"),
        429,
        "rate_limited",
        "past the lowered rate",
    );

    // The limit taken out of the plan: the server's flag again.
    plan_rates(&app, "team", Value::Null, Value::Null);
    app.app.sessions.clock.advance(1);
    let flag = show(&app, &owner, "acme");
    expect(&flag, 200, "the server's rate");
    assert_eq!(quotas(&flag), (6000, 1200));

    // Another plan for the tenant: its rates (free's are 0010's, 600 and 300).
    subscribe(&app, "acme", "free");
    let free = show(&app, &owner, "acme");
    expect(&free, 200, "on free");
    assert_eq!(quotas(&free), (600, 300));

    // From the CLI, another process, beside the running server.
    let out = app.cli(&[
        "plans",
        "edit",
        "free",
        "--limit",
        "api_requests_per_minute=5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_cli = show(&app, &owner, "acme");
    expect(&by_cli, 200, "after the CLI's edit");
    assert_eq!(quotas(&by_cli), (5, 300));
    assert_eq!(quotas(&show(&app, &owner, "globex")), (6000, 1200));
}

#[test]
fn plan_rates_out_of_range_are_refused_and_plans_show_theirs() {
    let app = app_with(6000, 1200);
    for bad in [json!(0), json!(-5), json!(16_777_217), json!("fast")] {
        let reply = app.admin(
            "PATCH",
            "/api/admin/plans/team",
            Some(json!({"limits": {"api_requests_per_minute": bad}})),
        );
        assert_eq!(reply.status / 100, 4, "{bad}: {}", reply.text());
        assert!(
            reply.json()["error"]["code"].is_string(),
            "{}",
            reply.text()
        );
    }
    for bad in [
        "api_requests_per_member_per_minute=0",
        "api_requests_per_minute=99999999",
    ] {
        let out = app.cli(&["plans", "edit", "team", "--limit", bad]);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(!out.stderr.is_empty(), "{bad}: nothing said");
    }

    let plans = app.admin("GET", "/api/admin/plans", None);
    expect(&plans, 200, "the plans");
    let team = plans.json()["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == "team")
        .cloned()
        .unwrap();
    assert_eq!(team["limits"]["api_requests_per_minute"], 3000);
    assert_eq!(team["limits"]["api_requests_per_member_per_minute"], 600);
    let listed = app.cli(&["plans", "list"]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains("api_requests_per_minute=600"), "{listed}");

    // The rates in force, the server's flags filled in, in the subscription's answers.
    plan_rates(&app, "team", json!(50), Value::Null);
    subscribe(&app, "acme", "team");
    let owner = app.owner_token.clone();
    let mine = app.on(&owner, "acme", "GET", "/api/subscription", None);
    expect(&mine, 200, "acme's subscription");
    assert_eq!(
        mine.json()["rate_limits"],
        json!({"api_requests_per_minute": 50, "api_requests_per_member_per_minute": 1200})
    );
    let globex = app.admin("GET", "/api/admin/tenants/globex/subscription", None);
    expect(&globex, 200, "globex's subscription");
    assert_eq!(
        globex.json()["rate_limits"],
        json!({"api_requests_per_minute": 6000, "api_requests_per_member_per_minute": 1200})
    );
}
