//! Per-tenant and per-member rate limits on tenant routes: the `429` past either, its
//! `Retry-After`, the `RateLimit-Policy` / `RateLimit` headers (draft-ietf-httpapi-ratelimit-
//! headers-11) on every tenant-route answer, and limits that stay within their tenant and member.
//! The limiter's clock is frozen and moved by the sessions clock, so no refill depends on speed.

use tenantd::api::rate_limit::Rates;

use crate::support::{spawn_app_with, Reply, TestApp};

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
