//! Outbound webhooks, as Standard Webhooks 1.0 describes them: the workspace events a tenant's
//! endpoints may ask for, the one call a handler makes after its write committed ([`emit`]:
//! one `webhook.deliver` job per endpoint that wants the event), and that job: sign with the
//! official `standardwebhooks` crate (with the previous secret too while a rotation's grace
//! lasts), POST through the guarded agent (`webhooks_guard`), log the attempt and disable an
//! endpoint that keeps failing. The tenant of a delivery is the job's, passed as a value; the
//! endpoint is read from that tenant's file, so a job can only ever reach its own tenant's.

use std::io::Read;
use std::time::Instant;

use rand::rngs::OsRng;
use rand::RngCore;
use serde_json::{json, Value};

use crate::catalog::{unix_now, ActorType, AuditEntry};
use crate::tenancy::Tenant;

use super::config::WebhooksConfig;
use super::job_kinds::{JobFailure, JobRun};
use super::webhook_endpoints::{self, AfterAttempt, Delivery};
use super::{webhooks_guard, App, NewJob};

/// Every event an endpoint may ask for (`*` asks for all).
pub const EVENTS: &[&str] = &[
    "order.created",
    "order.updated",
    "order.deleted",
    "message.created",
    "message.updated",
    "message.deleted",
    "chat.created",
    "member.added",
    "member.updated",
    "member.removed",
];

pub(super) const QUEUE: &str = "webhooks";
pub(super) const KIND: &str = "webhook.deliver";
/// Attempts of one delivery, spread by the queue's backoff.
const ATTEMPTS: u32 = 8;
/// How much of an answer's body the log keeps.
const EXCERPT_BYTES: usize = 1024;

/// What deliveries share: the settings and the agent (its pool of connections to endpoints).
pub struct Webhooks {
    pub(super) config: WebhooksConfig,
    agent: ureq::Agent,
}

impl Webhooks {
    pub(super) fn new(config: WebhooksConfig) -> Webhooks {
        let agent = webhooks_guard::agent(
            config.allow_private,
            config.connect_timeout,
            config.answer_timeout,
        );
        Webhooks { config, agent }
    }
}

/// `whsec_` and 32 random bytes in base64, as Standard Webhooks spells a secret.
pub(super) fn new_secret() -> String {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    format!("whsec_{}", data_encoding::BASE64.encode(&key))
}

/// After a write committed: a delivery job for each enabled endpoint of the tenant that wants
/// `event`. `data` is built only when one does; the tenant's id is added to it. A failure is
/// logged, never the request's: what it reports has happened.
pub(super) fn emit(app: &App, tenant: &Tenant, event: &'static str, data: impl FnOnce() -> Value) {
    if let Err(e) = try_emit(app, tenant, event, data) {
        log::error!(
            "webhook event {event} of tenant {} not enqueued: {e}",
            tenant.id()
        );
    }
}

fn try_emit(
    app: &App,
    tenant: &Tenant,
    event: &'static str,
    data: impl FnOnce() -> Value,
) -> Result<(), crate::error::Error> {
    let wanting: Vec<i64> = webhook_endpoints::all_endpoints(tenant)?
        .into_iter()
        .filter(|e| e.enabled && e.wants(event))
        .map(|e| e.id)
        .collect();
    if wanting.is_empty() {
        return Ok(());
    }
    let mut data = data();
    if let Value::Object(fields) = &mut data {
        fields.insert("tenant_id".into(), Value::String(tenant.id().to_string()));
    }
    // The body is fixed here, so every attempt signs and sends the very same bytes.
    let body = json!({
        "type": event,
        "timestamp": crate::db::format_unix_ms(super::jobs::now_ms()),
        "data": data,
    })
    .to_string();
    let webhook_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    for endpoint_id in wanting {
        let mut job = NewJob::new(
            Some(tenant.id().to_string()),
            QUEUE,
            KIND,
            json!({
                "endpoint_id": endpoint_id,
                "webhook_id": webhook_id,
                "event": event,
                "body": body,
            }),
        );
        job.unique_key = Some(format!("webhook:{webhook_id}:{endpoint_id}"));
        job.max_attempts = Some(ATTEMPTS);
        app.enqueue(job)?;
    }
    Ok(())
}

/// [`emit`] for a tenant known by its id alone (a route outside the tenant, such as accepting
/// an invitation).
pub(super) fn emit_in(
    app: &App,
    tenant_id: &str,
    event: &'static str,
    data: impl FnOnce() -> Value,
) {
    let tenant = app
        .catalog
        .by_id(tenant_id)
        .map_err(crate::error::Error::from)
        .and_then(|record| record.ok_or(crate::error::Error::TenantNotFound))
        .and_then(|record| Ok(app.registry.open(record)?));
    match tenant {
        Ok(tenant) => emit(app, &tenant, event, data),
        Err(e) => log::error!("webhook event {event} of tenant {tenant_id} not enqueued: {e}"),
    }
}

/// An order as an endpoint receives it: whole, whoever made the change (the endpoint is the
/// tenant's, registered by someone holding `settings_manage`). Gone meanwhile: its id alone.
pub(super) fn order_data(tenant: &Tenant, id: &Value) -> Value {
    let all = crate::workspace::Reader {
        admin: true,
        ..Default::default()
    };
    id.as_i64()
        .and_then(|id| crate::workspace::get_order(tenant, &all, id).ok())
        .map(|order| json!({ "order": order }))
        .unwrap_or_else(|| json!({ "order": { "id": id } }))
}

/// `webhook-signature`: `v1,<base64 HMAC-SHA256 of id.timestamp.body>` for each secret,
/// separated by spaces.
pub(super) fn signature(
    secrets: &[&str],
    webhook_id: &str,
    timestamp: i64,
    body: &str,
) -> Result<String, String> {
    let mut signed = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let hook = standardwebhooks::Webhook::new(secret).map_err(|e| e.to_string())?;
        signed.push(
            hook.sign(webhook_id, timestamp, body.as_bytes())
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(signed.join(" "))
}

/// The start of an answer's body for the log: at most [`EXCERPT_BYTES`], control characters
/// escaped (`\n`, `\u{1b}`), so that an endpoint cannot write lines or escapes into what an
/// admin reads.
pub(super) fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(EXCERPT_BYTES)];
    let text = String::from_utf8_lossy(cut);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What one attempt's POST came to.
struct Answer {
    status: Option<u16>,
    /// The address guard refused every address of the host: no retry will change that soon.
    refused: bool,
    excerpt: String,
    error: Option<String>,
    duration_ms: u64,
}

fn post(
    webhooks: &Webhooks,
    url: &str,
    headers: [(&str, &str); 3],
    body: &str,
    deadline: Instant,
) -> Answer {
    let started = Instant::now();
    let left = deadline.saturating_duration_since(started);
    let mut request = webhooks
        .agent
        .post(url)
        .config()
        .timeout_global(Some(left))
        .build()
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let result = request.send(body);
    let refused = matches!(&result, Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied);
    let (status, excerpt, error) = match result {
        Ok(mut response) => {
            let mut head = Vec::new();
            let read = response
                .body_mut()
                .as_reader()
                .take(EXCERPT_BYTES as u64)
                .read_to_end(&mut head);
            let status = response.status().as_u16();
            let error = match read {
                Err(e) if !head.is_empty() || status >= 300 => {
                    Some(format!("reading the answer: {e}"))
                }
                _ => None,
            };
            (Some(status), excerpt(&head), error)
        }
        Err(e) => (None, String::new(), Some(e.to_string())),
    };
    Answer {
        status,
        refused,
        excerpt,
        error,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// The `webhook.deliver` job: one attempt of one event to one endpoint.
pub(crate) fn deliver_job(app: &App, run: &JobRun) -> Result<(), JobFailure> {
    let tenant = run
        .tenant
        .as_ref()
        .ok_or_else(|| JobFailure::Fatal("a webhook delivery needs its tenant".into()))?;
    let field = |name: &str| {
        run.payload
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| JobFailure::Fatal(format!("payload without {name}")))
    };
    let (webhook_id, event, body) = (field("webhook_id")?, field("event")?, field("body")?);
    let endpoint_id = run
        .payload
        .get("endpoint_id")
        .and_then(Value::as_i64)
        .ok_or_else(|| JobFailure::Fatal("payload without endpoint_id".into()))?;
    let retry = |e: &dyn std::fmt::Display| JobFailure::Retry(e.to_string());
    let endpoint = webhook_endpoints::endpoint(tenant, endpoint_id).map_err(|e| retry(&e))?;
    // Deleted or disabled since the event: nothing to deliver, and nothing failed.
    let Some(endpoint) = endpoint.filter(|e| e.enabled) else {
        return Ok(());
    };
    let now = unix_now();
    let signature = signature(&endpoint.signing_secrets(now), webhook_id, now, body)
        .map_err(JobFailure::Fatal)?;
    let timestamp = now.to_string();
    let answer = post(
        &app.webhooks,
        &endpoint.url,
        [
            ("webhook-id", webhook_id),
            ("webhook-timestamp", &timestamp),
            ("webhook-signature", &signature),
        ],
        body,
        run.deadline,
    );
    let config = &app.webhooks.config;
    let after = webhook_endpoints::record_attempt(
        tenant,
        &Delivery {
            endpoint_id,
            event,
            webhook_id,
            attempt: run.attempt,
            status_code: answer.status,
            duration_ms: answer.duration_ms,
            response_excerpt: &answer.excerpt,
            error: answer.error.as_deref(),
        },
        now,
        config.max_failures,
        config.max_failing.as_secs() as i64,
    )
    .map_err(|e| retry(&e))?;
    let delivered = answer.status.is_some_and(|s| (200..300).contains(&s));
    app.metrics().webhook_delivery(delivered);
    let failure = match (answer.status, &answer.error) {
        (Some(s), _) if (200..300).contains(&s) => return Ok(()),
        (Some(s), _) => format!("the endpoint answered {s}"),
        (None, Some(e)) => e.clone(),
        (None, None) => "no answer".into(),
    };
    match after {
        AfterAttempt::Gone => Ok(()),
        AfterAttempt::Kept if answer.refused => Err(JobFailure::Fatal(failure)),
        AfterAttempt::Kept => Err(JobFailure::Retry(failure)),
        AfterAttempt::Disabled(reason) => {
            disabled(app, tenant, endpoint_id, &endpoint.url, &reason);
            Err(JobFailure::Fatal(format!(
                "{failure}; the endpoint is disabled: {reason}"
            )))
        }
    }
}

/// The tenant's admins learn of a disabled endpoint from its `disabled_reason` (in the API) and
/// from the audit log, where this entry is.
fn disabled(app: &App, tenant: &Tenant, endpoint_id: i64, url: &str, reason: &str) {
    log::warn!(
        "webhook endpoint {endpoint_id} of tenant {} disabled: {reason}",
        tenant.id()
    );
    let mut entry = AuditEntry::new(ActorType::System, "webhook_endpoint.disabled");
    entry.tenant_id = Some(tenant.id().to_string());
    entry.target_type = Some("webhook_endpoint".into());
    entry.target_id = Some(endpoint_id.to_string());
    entry.details = json!({ "url": url, "reason": reason });
    app.audit(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_spec_and_sign_with_every_secret() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&[secret], id, 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let both = signature(&[&new_secret(), secret], id, 1614265330, body).unwrap();
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_whsec_and_32_random_bytes() {
        let s = new_secret();
        let key = data_encoding::BASE64
            .decode(s.strip_prefix("whsec_").unwrap().as_bytes())
            .unwrap();
        assert_eq!(key.len(), 32);
        assert_ne!(s, new_secret());
    }

    #[test]
    fn excerpts_are_bounded_and_escape_control_characters() {
        assert_eq!(excerpt(b"ok\n\x1b[31mred\r"), "ok\\n\\u{1b}[31mred\\r");
        let long = vec![b'a'; 5000];
        assert_eq!(excerpt(&long).len(), EXCERPT_BYTES);
    }
}
