//! The `billing` inbound webhook (`POST /api/webhooks/billing`): a payment provider, signing
//! with the server's secret that only system admins make, sets a tenant's plan and status.
//! Signed as the other inbound tests sign (`webhooks_in::sign`, apart from the server's code).

use std::time::Duration;

use serde_json::{json, Value};
use tenantd::api::jobs;
use tenantd::catalog::JobStatus;

use crate::support::{eventually, expect, expect_error, int, text, Reply};
use crate::webhooks_in::{hooks, sign, Hooks};

const WAIT: Duration = Duration::from_secs(30);

fn billing_secret(h: &Hooks) -> String {
    let made = h.app.admin("POST", "/api/admin/billing/secret", None);
    assert!(
        matches!(made.status, 200 | 201),
        "billing secret: {}",
        made.text()
    );
    text(&made.json()["secret"])
}

fn deliver(h: &Hooks, secret: &str, id: &str, body: &Value) -> Reply {
    deliver_at(h, secret, id, h.now(), body)
}

fn deliver_at(h: &Hooks, secret: &str, id: &str, ts: i64, body: &Value) -> Reply {
    let body = body.to_string();
    let stamp = ts.to_string();
    h.raw(
        "/api/webhooks/billing",
        &[
            ("webhook-id", id),
            ("webhook-timestamp", &stamp),
            ("webhook-signature", &sign(secret, id, ts, &body)),
        ],
        &body,
    )
}

/// Billing jobs: (id, the tenant their payload names). The jobs are the server's own: no
/// tenant_id column, so no tenant admin lists or retries them.
fn billing_jobs(h: &Hooks) -> Vec<(i64, String)> {
    let db = h.app.central_db();
    let mut stmt = db
        .prepare(
            "SELECT id, json_extract(payload, '$.tenant_id') FROM jobs
             WHERE kind = 'inbound.billing' AND tenant_id IS NULL ORDER BY id",
        )
        .unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

fn wait_done(h: &Hooks, reply: &Reply) {
    expect(reply, 202, "accepted");
    let job = int(&reply.json()["job"]);
    assert!(
        eventually(WAIT, || {
            let record = h.app.app.catalog.job(job).unwrap().unwrap();
            assert_ne!(record.status, JobStatus::Failed, "{:?}", record.last_error);
            record.status == JobStatus::Done
        }),
        "job {job} done"
    );
}

fn subscription(h: &Hooks, slug: &str) -> Value {
    let path = format!("/api/admin/tenants/{slug}/subscription");
    let reply = h.app.admin("GET", &path, None);
    expect(&reply, 200, "subscription");
    reply.json()
}

fn new_order(h: &Hooks, slug: &str) -> Reply {
    h.app.on(
        &h.app.owner_token,
        slug,
        "POST",
        "/api/orders",
        Some(json!({"title": "Boxes", "customer_name": "Ada", "amount_minor": 100})),
    )
}

#[test]
fn a_signed_delivery_sets_plan_and_status_audited_and_past_due_beyond_grace_is_read_only() {
    let h = hooks();
    jobs::start_workers(&h.app.app);
    let secret = billing_secret(&h);
    let now = h.now();
    let change = json!({
        "tenantId": h.acme,
        "plan": "team",
        "status": "active",
        "currentPeriodStart": now - 10,
        "currentPeriodEnd": now + 30 * 86400,
        "externalRef": "sub_123",
        "metadata": {"customer": "cus_9"},
    });
    wait_done(&h, &deliver(&h, &secret, "evt_1", &change));
    let shown = subscription(&h, "acme");
    let s = &shown["subscription"];
    assert_eq!(shown["plan"]["slug"], "team");
    assert_eq!(s["status"], "active");
    assert_eq!(s["current_period_start"], now - 10);
    assert_eq!(s["current_period_end"], now + 30 * 86400);
    assert_eq!(s["external_ref"], "sub_123");
    assert_eq!(s["metadata"], json!({"customer": "cus_9"}));
    assert_eq!(subscription(&h, "globex")["plan"]["slug"], "unlimited");

    // Audited as the admin route's changes are, its actor the billing source.
    let audit = h
        .app
        .admin("GET", "/api/admin/audit?action=subscription.changed", None);
    expect(&audit, 200, "audit");
    let entry = audit.json()["entries"][0].clone();
    assert_eq!(entry["tenant_id"], json!(h.acme));
    assert_eq!(entry["actor_type"], "system");
    assert_eq!(entry["details"]["via"], "webhook");
    assert_eq!(entry["details"]["source"], "billing");
    assert_eq!(entry["details"]["webhook_id"], "evt_1");
    assert_eq!(entry["details"]["plan"], "team");

    // Past due, its period ended longer ago than the grace: read-only (by slug this time).
    h.app.app.catalog.set_billing_grace(3600);
    expect(&new_order(&h, "acme"), 201, "while active");
    let overdue = json!({
        "tenantSlug": "acme",
        "status": "past_due",
        "currentPeriodStart": now - 40 * 86400,
        "currentPeriodEnd": now - 7200,
    });
    wait_done(&h, &deliver(&h, &secret, "evt_2", &overdue));
    assert_eq!(subscription(&h, "acme")["writable"], false);
    expect_error(
        &new_order(&h, "acme"),
        403,
        "subscription_inactive",
        "past due beyond grace",
    );
    expect(&new_order(&h, "globex"), 201, "globex is not acme");
    let paid = json!({"tenantId": h.acme, "status": "active"});
    wait_done(&h, &deliver(&h, &secret, "evt_3", &paid));
    expect(&new_order(&h, "acme"), 201, "paid again");
}

#[test]
fn only_the_servers_secret_signs_billing_and_no_tenant_can_hold_one() {
    let h = hooks();
    let change = json!({"tenantId": h.acme, "plan": "team"});
    // No billing secret made yet: any signature is wrong, the tenant's own included.
    let reply = deliver(&h, &h.acme_secret, "e1", &change);
    expect_error(&reply, 401, "invalid_signature", "no billing secret yet");

    let secret = billing_secret(&h);
    let stranger = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    for (what, key) in [
        ("a random secret", stranger),
        ("acme's messages secret", h.acme_secret.as_str()),
        ("globex's messages secret", h.globex_secret.as_str()),
    ] {
        let reply = deliver(&h, key, "e1", &change);
        expect_error(&reply, 401, "invalid_signature", what);
    }

    // A tenant's admin can neither list, make nor use a billing secret of the tenant's own.
    let owner = h.app.owner_token.clone();
    let list = h
        .app
        .on(&owner, "acme", "GET", "/api/webhook-sources", None);
    expect(&list, 200, "sources");
    let sources: Vec<String> = list.json()["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| text(&s["source"]))
        .collect();
    assert_eq!(sources, ["messages"]);
    let make = h.app.on(
        &owner,
        "acme",
        "POST",
        "/api/webhook-sources/billing/secret",
        None,
    );
    expect_error(&make, 404, "unknown_source", "a tenant's billing secret");
    // Even a row for `billing` among the tenant's secrets (put there by hand) signs nothing.
    let planted = "whsec_dGhpcyBpcyBhIHBsYW50ZWQgc2VjcmV0IQ==";
    h.app
        .central_db()
        .execute(
            "INSERT INTO inbound_secrets (tenant_id, source, secret, created_at)
             VALUES (?1, 'billing', ?2, 0)",
            rusqlite::params![h.acme, planted],
        )
        .unwrap();
    let reply = deliver(&h, planted, "e2", &change);
    expect_error(&reply, 401, "invalid_signature", "a tenant row for billing");
    // The admin routes are the system admins'.
    let theirs = h
        .app
        .as_bearer(&owner, "POST", "/api/admin/billing/secret", &[], None);
    assert!(
        matches!(theirs.status, 401 | 403),
        "a member at the admin route: {} {}",
        theirs.status,
        theirs.text()
    );
    assert!(billing_jobs(&h).is_empty());
    expect(
        &deliver(&h, &secret, "e3", &change),
        202,
        "the server's secret",
    );
    assert_eq!(billing_jobs(&h).len(), 1);
}

#[test]
fn the_secret_is_shown_once_rotated_by_system_admins_and_by_the_cli() {
    let h = hooks();
    let shown = h.app.admin("GET", "/api/admin/billing/secret", None);
    expect(&shown, 200, "show");
    assert_eq!(shown.json()["secret_set"], false);
    let made = h.app.admin("POST", "/api/admin/billing/secret", None);
    expect(&made, 201, "made");
    let first = text(&made.json()["secret"]);
    assert!(first.starts_with("whsec_"));
    let shown = h.app.admin("GET", "/api/admin/billing/secret", None);
    assert_eq!(shown.json()["secret_set"], true);
    assert_eq!(shown.json()["path"], "/api/webhooks/billing");
    assert!(!shown.text().contains(&first[6..]), "{}", shown.text());

    let rotated = h.app.admin("POST", "/api/admin/billing/secret", None);
    expect(&rotated, 200, "rotated");
    let second = text(&rotated.json()["secret"]);
    assert!(rotated.json()["rotated_at"].is_i64());
    let change = json!({"tenantId": h.acme, "status": "active"});
    expect_error(
        &deliver(&h, &first, "r1", &change),
        401,
        "invalid_signature",
        "the old secret",
    );
    expect(&deliver(&h, &second, "r1", &change), 202, "the new secret");

    // The CLI, beside the running server: no secret printed unless it makes one.
    let cli = |args: &[&str]| {
        let out = h.app.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let info: Value = serde_json::from_str(&cli(&["billing", "secret", "--json"])).unwrap();
    assert_eq!(info["secret_set"], true);
    assert!(info.get("secret").is_none(), "{info}");
    let third: Value =
        serde_json::from_str(&cli(&["billing", "secret", "--rotate", "--json"])).unwrap();
    let third = text(&third["secret"]);
    assert!(third.starts_with("whsec_") && third != second);
    expect_error(
        &deliver(&h, &second, "r2", &change),
        401,
        "invalid_signature",
        "replaced by the CLI",
    );
    expect(&deliver(&h, &third, "r2", &change), 202, "the CLI's secret");
    let bad = h.app.cli(&["billing", "secrets"]);
    assert_eq!(bad.status.code(), Some(2), "a usage error");

    let audit = h.app.admin("GET", "/api/admin/audit", None);
    let actions: Vec<String> = audit.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| text(&e["action"]))
        .collect();
    assert!(
        actions.contains(&"billing.secret_created".to_string())
            && actions
                .iter()
                .filter(|a| *a == "billing.secret_rotated")
                .count()
                == 2,
        "{actions:?}"
    );
}

#[test]
fn replays_get_the_first_job_and_stale_deliveries_are_refused() {
    let h = hooks();
    let secret = billing_secret(&h);
    let change = json!({"tenantId": h.acme, "plan": "free"});
    let first = deliver(&h, &secret, "evt_1", &change);
    expect(&first, 202, "first");
    let job = int(&first.json()["job"]);
    // Retried later, even with another body: the same job, nothing enqueued.
    let other = json!({"tenantId": h.acme, "plan": "team"});
    let again = deliver_at(&h, &secret, "evt_1", h.now() + 60, &other);
    expect(&again, 202, "a replay");
    assert_eq!(again.json(), json!({"job": job, "duplicate": true}));
    assert_eq!(billing_jobs(&h).len(), 1);
    for (what, ts) in [("stale", h.now() - 301), ("future", h.now() + 301)] {
        let reply = deliver_at(&h, &secret, "evt_2", ts, &change);
        expect_error(&reply, 401, "timestamp_out_of_tolerance", what);
    }
    assert_eq!(billing_jobs(&h).len(), 1);
}

#[test]
fn a_delivery_naming_one_tenant_changes_that_tenant_alone() {
    let h = hooks();
    jobs::start_workers(&h.app.app);
    let secret = billing_secret(&h);
    let acme = json!({"tenantId": h.acme, "plan": "free", "status": "canceled"});
    let reply = deliver(&h, &secret, "evt_x", &acme);
    wait_done(&h, &reply);
    let job = int(&reply.json()["job"]);
    assert_eq!(billing_jobs(&h), [(job, h.acme.clone())]);
    // acme's admins neither see the change among their jobs nor run it again.
    let listed = h
        .app
        .on(&h.app.owner_token, "acme", "GET", "/api/jobs", None);
    expect(&listed, 200, "acme's jobs");
    assert!(
        !listed.text().contains("inbound.billing"),
        "{}",
        listed.text()
    );
    let retry = h.app.on(
        &h.app.owner_token,
        "acme",
        "POST",
        &format!("/api/jobs/{job}/retry"),
        None,
    );
    assert_eq!(retry.status, 404, "{}", retry.text());
    let s = subscription(&h, "acme");
    assert_eq!(
        (&s["plan"]["slug"], &s["subscription"]["status"]),
        (&json!("free"), &json!("canceled"))
    );
    let g = subscription(&h, "globex");
    assert_eq!(
        (&g["plan"]["slug"], &g["subscription"]["status"]),
        (&json!("unlimited"), &json!("active"))
    );
    expect(&new_order(&h, "globex"), 201, "globex writes on");

    // The same webhook-id naming globex is globex's own delivery, not a replay of acme's.
    let globex = json!({"tenantId": h.globex, "plan": "team"});
    let theirs = deliver(&h, &secret, "evt_x", &globex);
    assert!(
        theirs.json().get("duplicate").is_none(),
        "{}",
        theirs.text()
    );
    wait_done(&h, &theirs);
    assert_eq!(subscription(&h, "globex")["plan"]["slug"], "team");
    assert_eq!(subscription(&h, "acme")["plan"]["slug"], "free");
}

#[test]
fn bad_deliveries_get_clear_4xx_and_enqueue_nothing() {
    let h = hooks();
    let secret = billing_secret(&h);
    let nobody = "00000000-0000-4000-8000-000000000000";
    let unknown = deliver(
        &h,
        &secret,
        "b",
        &json!({"tenantId": nobody, "plan": "free"}),
    );
    expect_error(&unknown, 404, "tenant_not_found", "an unknown tenant id");
    let unknown = deliver(
        &h,
        &secret,
        "b",
        &json!({"tenantSlug": "nope", "plan": "free"}),
    );
    expect_error(&unknown, 404, "tenant_not_found", "an unknown slug");
    for (what, body, field) in [
        ("no tenant", json!({"plan": "free"}), "tenantId"),
        (
            "two names",
            json!({"tenantId": h.acme, "tenantSlug": "acme", "plan": "free"}),
            "tenantSlug",
        ),
        (
            "a slug as the id",
            json!({"tenantId": "acme", "plan": "free"}),
            "tenantId",
        ),
        (
            "an unknown plan",
            json!({"tenantId": h.acme, "plan": "gold"}),
            "plan",
        ),
        (
            "an unknown status",
            json!({"tenantId": h.acme, "status": "paid"}),
            "status",
        ),
        ("no change", json!({"tenantId": h.acme}), "plan"),
        (
            "a field we do not know",
            json!({"tenantId": h.acme, "plan": "free", "extra": 1}),
            "extra",
        ),
        (
            "metadata not an object",
            json!({"tenantId": h.acme, "metadata": [1]}),
            "metadata",
        ),
        (
            "a period ending before it starts",
            json!({"tenantId": h.acme, "currentPeriodStart": 100, "currentPeriodEnd": 50}),
            "currentPeriodEnd",
        ),
        (
            "a time that is not a number",
            json!({"tenantId": h.acme, "trialEnd": "tomorrow"}),
            "trialEnd",
        ),
        (
            "an empty reference",
            json!({"tenantId": h.acme, "externalRef": ""}),
            "externalRef",
        ),
    ] {
        let reply = deliver(&h, &secret, "b", &body);
        expect_error(&reply, 422, "validation_failed", what);
        let fields = &reply.json()["error"]["fields"];
        assert!(fields.get(field).is_some(), "{what}: {fields}");
    }
    // A plan no longer offered is refused to a tenant not already on it.
    let off = h.app.admin(
        "PATCH",
        "/api/admin/plans/team",
        Some(json!({"active": false})),
    );
    expect(&off, 200, "withdraw team");
    let reply = deliver(
        &h,
        &secret,
        "b",
        &json!({"tenantId": h.acme, "plan": "team"}),
    );
    expect_error(&reply, 422, "validation_failed", "a withdrawn plan");
    assert_eq!(subscription(&h, "acme")["plan"]["slug"], "unlimited");

    // Not on a tenant's host.
    let body = json!({"tenantId": h.acme, "plan": "free"}).to_string();
    let now = h.now();
    let ts = now.to_string();
    let sig = sign(&secret, "b", now, &body);
    let on_host = h.raw(
        "/api/webhooks/billing",
        &[
            ("webhook-id", "b"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &sig),
            ("Host", "acme.localhost"),
        ],
        &body,
    );
    expect_error(&on_host, 404, "not_found", "on acme's host");
    expect(
        &h.app.admin("POST", "/api/admin/tenants/acme/suspend", None),
        200,
        "suspend",
    );
    let reply = deliver(
        &h,
        &secret,
        "b",
        &json!({"tenantId": h.acme, "plan": "free"}),
    );
    expect_error(&reply, 403, "tenant_suspended", "a suspended tenant");
    expect(
        &h.app.admin("DELETE", "/api/admin/tenants/globex", None),
        200,
        "delete globex",
    );
    let reply = deliver(
        &h,
        &secret,
        "b",
        &json!({"tenantId": h.globex, "plan": "free"}),
    );
    expect_error(&reply, 404, "tenant_not_found", "a deleted tenant");

    assert!(billing_jobs(&h).is_empty());
}
