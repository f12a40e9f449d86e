//! Inbound webhooks (`POST /api/webhooks/{source}`) and the tenant admins' secrets
//! (`/api/webhook-sources`). Deliveries are signed here with our own few lines of HMAC, apart
//! from the server's code (and in `e2e/` with the npm `standardwebhooks` package).

use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{expect, expect_error, int, spawn_app, text, Reply, TestApp};

/// A Standard Webhooks `v1` signature of `id.timestamp.body` with a `whsec_` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap().as_bytes())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(&mac.finalize().into_bytes()))
}

/// Two companies, both with a secret for `messages`, and a chat in acme.
pub struct Hooks {
    pub app: TestApp,
    pub acme: String,
    pub globex: String,
    pub acme_secret: String,
    pub globex_secret: String,
    pub chat: i64,
}

pub fn hooks() -> Hooks {
    let app = spawn_app();
    let acme = text(&app.create_tenant("acme", &[])["id"]);
    let globex = text(&app.create_tenant("globex", &[])["id"]);
    let acme_secret = new_secret(&app, "acme");
    let globex_secret = new_secret(&app, "globex");
    let owner = app.owner_token.clone();
    let chat = app.on(
        &owner,
        "acme",
        "POST",
        "/api/chats",
        Some(json!({"title": "Bridge", "kind": "group", "participant_ids": []})),
    );
    expect(&chat, 201, "a chat");
    let chat = int(&chat.json()["id"]);
    Hooks {
        app,
        acme,
        globex,
        acme_secret,
        globex_secret,
        chat,
    }
}

fn new_secret(app: &TestApp, slug: &str) -> String {
    let reply = app.on(
        &app.owner_token.clone(),
        slug,
        "POST",
        "/api/webhook-sources/messages/secret",
        None,
    );
    assert!(
        matches!(reply.status, 200 | 201),
        "secret for {slug}: {}",
        reply.text()
    );
    text(&reply.json()["secret"])
}

impl Hooks {
    pub fn now(&self) -> i64 {
        self.app.app.sessions.clock.now()
    }

    /// A message for acme's chat, as JSON text.
    pub fn message(&self, tenant: &str, body: &str) -> String {
        json!({
            "tenantId": tenant,
            "chatId": self.chat,
            "body": body,
            "author": {"name": "Eve Bridge", "externalId": "tg:42"},
        })
        .to_string()
    }

    /// A delivery with exactly these headers and body.
    pub fn raw(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        self.app.call("POST", path, headers, Some(body))
    }

    /// A delivery with these three headers, whatever they sign.
    pub fn with(&self, id: &str, timestamp: i64, signature: &str, body: &str) -> Reply {
        let ts = timestamp.to_string();
        self.raw(
            "/api/webhooks/messages",
            &[
                ("webhook-id", id),
                ("webhook-timestamp", &ts),
                ("webhook-signature", signature),
            ],
            body,
        )
    }

    /// A delivery signed with `secret` at `timestamp`.
    pub fn send(&self, secret: &str, id: &str, timestamp: i64, body: &str) -> Reply {
        self.with(id, timestamp, &sign(secret, id, timestamp, body), body)
    }

    /// Inbound jobs in the catalog.
    pub fn jobs(&self) -> Vec<(i64, String, String)> {
        let db = self.app.central_db();
        let mut stmt = db
            .prepare(
                "SELECT id, tenant_id, queue FROM jobs WHERE kind = 'inbound.messages' ORDER BY id",
            )
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }
}

#[test]
fn a_signed_delivery_is_accepted_and_its_replays_get_the_same_job() {
    let h = hooks();
    let body = h.message(&h.acme, "hello from outside");
    let first = h.send(&h.acme_secret, "msg_1", h.now(), &body);
    expect(&first, 202, "a signed delivery");
    let job = int(&first.json()["job"]);
    assert_eq!(first.json(), json!({"job": job}));
    assert_eq!(h.jobs(), [(job, h.acme.clone(), "inbound".to_string())]);

    // The sender retries: the same id, signed again later, even with another body.
    for (ts, text) in [(h.now(), "hello from outside"), (h.now() + 60, "edited")] {
        let again = h.send(&h.acme_secret, "msg_1", ts, &h.message(&h.acme, text));
        expect(&again, 202, "a replay");
        assert_eq!(again.json(), json!({"job": job, "duplicate": true}));
    }
    assert_eq!(h.jobs().len(), 1, "a replay enqueues nothing");

    // Another id is another delivery; the same id in another company is that company's.
    let other = h.send(&h.acme_secret, "msg_2", h.now(), &body);
    expect(&other, 202, "another delivery");
    assert_ne!(int(&other.json()["job"]), job);
    let theirs = h.send(
        &h.globex_secret,
        "msg_1",
        h.now(),
        &h.message(&h.globex, "hi"),
    );
    expect(&theirs, 202, "globex's own msg_1");
    assert!(theirs.json().get("duplicate").is_none());
    assert_eq!(h.jobs().len(), 3);
}

#[test]
fn a_bad_signature_or_another_tenants_secret_is_401_and_enqueues_nothing() {
    let h = hooks();
    let now = h.now();
    let acme_body = h.message(&h.acme, "hi");
    let globex_body = h.message(&h.globex, "hi");
    let stranger = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let acme_sig = sign(&h.acme_secret, "m", now, &acme_body);
    let cases: Vec<(&str, Reply)> = vec![
        ("a random secret", h.send(stranger, "m", now, &acme_body)),
        (
            "globex's secret naming acme",
            h.send(&h.globex_secret, "m", now, &acme_body),
        ),
        (
            "acme's secret naming globex",
            h.send(&h.acme_secret, "m", now, &globex_body),
        ),
        (
            "a tampered body",
            h.with("m", now, &acme_sig, &h.message(&h.acme, "hi!")),
        ),
        (
            "another id than signed",
            h.with("n", now, &acme_sig, &acme_body),
        ),
        (
            "another time than signed",
            h.with("m", now + 1, &acme_sig, &acme_body),
        ),
        ("no signature header", {
            let ts = now.to_string();
            h.raw(
                "/api/webhooks/messages",
                &[("webhook-id", "m"), ("webhook-timestamp", &ts)],
                &acme_body,
            )
        }),
        (
            "only other versions",
            h.with("m", now, &acme_sig.replace("v1,", "v2,"), &acme_body),
        ),
    ];
    for (what, reply) in cases {
        expect_error(&reply, 401, "invalid_signature", what);
    }
    assert!(h.jobs().is_empty());
    // One good signature among bad ones is enough (a sender rotating its secrets).
    let both = format!("{} {acme_sig}", sign(stranger, "m", now, &acme_body));
    expect(
        &h.with("m", now, &both, &acme_body),
        202,
        "one good signature of two",
    );
}

#[test]
fn a_tenant_without_a_secret_answers_as_a_wrong_signature() {
    let h = hooks();
    let initech = text(&h.app.create_tenant("initech", &[])["id"]);
    // Signed with some secret: the tenant has none for this source.
    let reply = h.send(&h.acme_secret, "m", h.now(), &h.message(&initech, "hi"));
    expect_error(&reply, 401, "invalid_signature", "no secret set");
    let wrong = h.send(&h.globex_secret, "m", h.now(), &h.message(&h.acme, "hi"));
    expect_error(&wrong, 401, "invalid_signature", "a wrong secret");
    assert_eq!(reply.text(), wrong.text(), "the two cannot be told apart");
    assert!(h.jobs().is_empty());
}

#[test]
fn stale_and_future_timestamps_are_401_by_the_servers_clock() {
    let h = hooks();
    let body = h.message(&h.acme, "hi");
    let now = h.now();
    for (what, ts) in [("stale", now - 301), ("future", now + 301)] {
        let reply = h.send(&h.acme_secret, "m", ts, &body);
        expect_error(&reply, 401, "timestamp_out_of_tolerance", what);
    }
    assert!(h.jobs().is_empty());
    // A delivery signed now is stale once the server's clock has moved on six minutes.
    let signed_at = h.now();
    h.app.app.sessions.clock.advance(360);
    let late = h.send(&h.acme_secret, "m", signed_at, &body);
    expect_error(
        &late,
        401,
        "timestamp_out_of_tolerance",
        "six minutes later",
    );
    assert!(h.jobs().is_empty());
    let fresh = h.send(&h.acme_secret, "m", h.now() - 290, &body);
    expect(&fresh, 202, "within the tolerance");
}

#[test]
fn unknown_tenants_sources_and_malformed_deliveries_get_clear_4xx() {
    let h = hooks();
    let now = h.now();
    let nobody = "00000000-0000-4000-8000-000000000000";
    let reply = h.send(&h.acme_secret, "m", now, &h.message(nobody, "hi"));
    expect_error(&reply, 404, "tenant_not_found", "an unknown tenant");

    // What needs no secret is judged before the tenant is looked up: a request that gets
    // those wrong learns nothing of which tenants exist.
    let ts = now.to_string();
    let body = h.message(nobody, "hi");
    let no_id = h.raw(
        "/api/webhooks/messages",
        &[("webhook-timestamp", &ts), ("webhook-signature", "v1,x")],
        &body,
    );
    expect_error(&no_id, 400, "bad_request", "no webhook-id");
    let stale = h.send(&h.acme_secret, "m", now - 3600, &body);
    expect_error(&stale, 401, "timestamp_out_of_tolerance", "stale, unknown");

    let unknown_source = h.app.call(
        "POST",
        "/api/webhooks/carrier-pigeons",
        &[
            ("webhook-id", "m"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &sign(&h.acme_secret, "m", now, &body)),
        ],
        Some(&body),
    );
    expect_error(&unknown_source, 404, "unknown_source", "an unknown source");

    let not_json = h.send(&h.acme_secret, "m", now, "{not json");
    expect_error(&not_json, 400, "invalid_json", "not JSON");
    let no_tenant = h.send(&h.acme_secret, "m", now, r#"{"chatId": 1}"#);
    expect_error(&no_tenant, 422, "validation_failed", "no tenantId");
    assert!(no_tenant.json()["error"]["fields"]["tenantId"].is_string());
    let slug = h.send(&h.acme_secret, "m", now, &h.message("acme", "hi"));
    expect_error(&slug, 422, "validation_failed", "a slug for tenantId");

    // Signed, so its payload is judged: every field named.
    for (what, payload, field) in [
        (
            "no chatId",
            json!({"tenantId": h.acme, "body": "x", "author": {"name": "E"}}),
            "chatId",
        ),
        (
            "an empty body",
            json!({"tenantId": h.acme, "chatId": h.chat, "body": " ", "author": {"name": "E"}}),
            "body",
        ),
        (
            "an author without a name",
            json!({"tenantId": h.acme, "chatId": h.chat, "body": "x", "author": {"name": ""}}),
            "author.name",
        ),
        (
            "a field we do not know",
            json!({"tenantId": h.acme, "chatId": h.chat, "body": "x", "author": {"name": "E"}, "extra": 1}),
            "extra",
        ),
    ] {
        let reply = h.send(&h.acme_secret, "m", now, &payload.to_string());
        expect_error(&reply, 422, "validation_failed", what);
        let fields = &reply.json()["error"]["fields"];
        assert!(fields.get(field).is_some(), "{what}: {fields}");
    }

    let ts = now.to_string();
    let sig = sign(&h.acme_secret, "m", now, &h.message(&h.acme, "hi"));
    let as_text = h.raw(
        "/api/webhooks/messages",
        &[
            ("Content-Type", "text/plain"),
            ("webhook-id", "m"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &sig),
        ],
        &h.message(&h.acme, "hi"),
    );
    expect_error(&as_text, 415, "unsupported_media_type", "not JSON's type");

    let huge = h.message(&h.acme, &"x".repeat(1024 * 1024 + 1));
    let too_large = h.send(&h.acme_secret, "m", now, &huge);
    expect_error(&too_large, 413, "payload_too_large", "over the body limit");

    // A deleted tenant is as unknown as one that never was, signed or not.
    let deleted = h.app.admin("DELETE", "/api/admin/tenants/globex", None);
    expect(&deleted, 200, "delete globex");
    let gone = h.send(&h.globex_secret, "m", now, &h.message(&h.globex, "hi"));
    expect_error(&gone, 404, "tenant_not_found", "a deleted tenant");
    assert!(h.jobs().is_empty());
}

#[test]
fn a_suspended_tenant_refuses_signed_deliveries_and_tells_only_the_signer() {
    let h = hooks();
    expect(
        &h.app.admin("POST", "/api/admin/tenants/acme/suspend", None),
        200,
        "suspend",
    );
    let body = h.message(&h.acme, "hi");
    let signed = h.send(&h.acme_secret, "m", h.now(), &body);
    expect_error(&signed, 403, "tenant_suspended", "signed");
    let unsigned = h.send(&h.globex_secret, "m", h.now(), &body);
    expect_error(&unsigned, 401, "invalid_signature", "not signed by acme");
    assert!(h.jobs().is_empty());
}

#[test]
fn a_tenants_host_does_not_take_deliveries() {
    let h = hooks();
    let body = h.message(&h.acme, "hi");
    let now = h.now();
    let ts = now.to_string();
    let sig = sign(&h.acme_secret, "m", now, &body);
    let headers = [
        ("webhook-id", "m"),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    let by_path = h.raw("/t/acme/api/webhooks/messages", &headers, &body);
    expect_error(&by_path, 404, "not_found", "under /t/acme");
    let mut on_host = headers.to_vec();
    on_host.push(("Host", "acme.localhost"));
    let by_host = h.raw("/api/webhooks/messages", &on_host, &body);
    expect_error(&by_host, 404, "not_found", "on acme's host");
    assert!(h.jobs().is_empty());
}

#[test]
fn secrets_are_shown_once_need_settings_manage_and_stay_in_their_tenant() {
    let h = hooks();
    let app = &h.app;
    let owner = app.owner_token.clone();
    let list = app.on(&owner, "acme", "GET", "/api/webhook-sources", None);
    expect(&list, 200, "list");
    let sources = list.json()["sources"].clone();
    assert_eq!(sources[0]["source"], "messages");
    assert_eq!(sources[0]["path"], "/api/webhooks/messages");
    assert_eq!(sources[0]["secret_set"], true);
    assert!(sources[0]["created_at"].is_i64());
    assert_eq!(sources[0]["rotated_at"], Value::Null);
    assert!(
        !list.text().contains(&h.acme_secret[6..]) && !list.text().contains("\"secret\""),
        "the list never holds a secret: {}",
        list.text()
    );

    // Rotation replaces the secret at once.
    let rotated = app.on(
        &owner,
        "acme",
        "POST",
        "/api/webhook-sources/messages/secret",
        None,
    );
    expect(&rotated, 200, "rotate");
    let new_secret = text(&rotated.json()["secret"]);
    assert!(new_secret.starts_with("whsec_") && new_secret != h.acme_secret);
    assert!(rotated.json()["rotated_at"].is_i64());
    let body = h.message(&h.acme, "hi");
    let old = h.send(&h.acme_secret, "m", h.now(), &body);
    expect_error(&old, 401, "invalid_signature", "the old secret");
    expect(
        &h.send(&new_secret, "m", h.now(), &body),
        202,
        "the new secret",
    );
    // globex's secret did not move.
    let theirs = h.send(&h.globex_secret, "g", h.now(), &h.message(&h.globex, "hi"));
    expect(&theirs, 202, "globex's secret after acme's rotation");

    // Without settings_manage: refused, listing and rotating.
    let (_, agent) = app.member("agent@acme.test", "acme", "agent");
    let (_, manager) = app.member("manager@acme.test", "acme", "manager");
    for token in [&agent, &manager] {
        let list = app.on(token, "acme", "GET", "/api/webhook-sources", None);
        expect_error(&list, 403, "forbidden", "list without settings_manage");
        let post = app.on(
            token,
            "acme",
            "POST",
            "/api/webhook-sources/messages/secret",
            None,
        );
        expect_error(&post, 403, "forbidden", "rotate without settings_manage");
    }
    // acme's admin is nobody at globex; a token made for acme opens nothing of globex.
    let (_, acme_admin) = app.member("boss@acme.test", "acme", "admin");
    let other = app.on(&acme_admin, "globex", "GET", "/api/webhook-sources", None);
    expect_error(&other, 403, "not_a_member", "another company's sources");
    let (_, bound) = app.personal_token(&owner, "bridge", "acme");
    let post = app.on(
        &bound,
        "globex",
        "POST",
        "/api/webhook-sources/messages/secret",
        None,
    );
    expect_error(&post, 403, "not_a_member", "an acme token on globex");
    let theirs = h.send(&h.globex_secret, "g2", h.now(), &h.message(&h.globex, "hi"));
    expect(&theirs, 202, "globex's secret is still the one it was");

    let unknown = app.on(
        &owner,
        "acme",
        "POST",
        "/api/webhook-sources/pigeons/secret",
        None,
    );
    expect_error(&unknown, 404, "unknown_source", "an unknown source");
    let central = app.as_bearer(&owner, "GET", "/api/webhook-sources", &[], None);
    expect_error(&central, 404, "tenant_required", "no tenant");

    let audit = app.on(&owner, "acme", "GET", "/api/audit", None);
    let actions: Vec<String> = audit.json()["entries"]
        .as_array()
        .map(|a| a.iter().map(|e| text(&e["action"])).collect())
        .unwrap_or_default();
    assert!(
        actions.contains(&"webhook_source.secret_created".to_string())
            && actions.contains(&"webhook_source.secret_rotated".to_string()),
        "{actions:?}"
    );
}
