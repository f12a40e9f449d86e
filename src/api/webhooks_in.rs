//! Inbound webhooks: `POST /api/webhooks/{source}` on the central host takes a delivery that
//! names its tenant (`tenantId`), verifies it as Standard Webhooks 1.0 with that tenant's secret
//! for the source, answers `202 {"job": id}` and leaves the work to a job in that tenant; a
//! repeated webhook-id gets the first delivery's job again and enqueues nothing. Beside it the
//! tenant admins' secrets (`/api/webhook-sources`), and the job of the `messages` source, which
//! posts a message from outside into a chat and publishes it like any other.
//!
//! The order of the checks is the point: everything a request can get right without the secret
//! (source, headers, timestamp, a JSON body naming a tenant id) comes before the tenant is
//! looked up, so learning whether a tenant id exists costs a well-formed request; a tenant
//! without a secret for the source is refused exactly as a wrong signature; the rest of the
//! payload is judged only once the signature holds, and nothing is enqueued before that.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::catalog::TenantStatus;
use crate::error::Error;
use crate::http::{Response, Router};
use crate::workspace::{self, ExternalAuthor, WorkspaceError};

use super::broadcasting::{chat_channel, publish};
use super::job_kinds::{JobFailure, JobRun};
use super::jobs::{Enqueued, NewJob};
use super::webhook_verify::{self, Refusal, Secret, Signed};
use super::{json_body, App, Member, RequestCtx, Route};

/// The sources a tenant's admins hold secrets for, each with the job kind that processes its
/// deliveries. Not `billing` (see `billing.rs`): its secret is the server's, never a tenant's.
const SOURCES: &[(&str, &str)] = &[("messages", MESSAGES_KIND)];
pub(super) const QUEUE: &str = "inbound";
pub(super) const MESSAGES_KIND: &str = "inbound.messages";
/// Managing a tenant's secrets.
const PERMISSION: &str = "settings_manage";

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("POST", "/api/webhooks/{source}", Route::Public(receive));
    r.add("GET", "/api/webhook-sources", Route::Tenant(list_sources));
    r.add(
        "POST",
        "/api/webhook-sources/{source}/secret",
        Route::Tenant(rotate_secret),
    );
}

/// The source a path names, with its job kind.
fn source(ctx: &RequestCtx) -> Result<(&'static str, &'static str), Error> {
    let name = ctx.params.get("source").unwrap_or_default();
    SOURCES
        .iter()
        .find(|(s, _)| *s == name)
        .copied()
        .ok_or(Error::UnknownWebhookSource)
}

pub(super) fn unverified(refusal: Refusal) -> Error {
    let (code, message) = match refusal {
        Refusal::BadHeader("webhook-signature") | Refusal::NoMatch => (
            "invalid_signature",
            "no v1 signature in webhook-signature matches the secret for this source".to_string(),
        ),
        Refusal::BadHeader(header) => {
            return Error::BadRequest(format!("the {header} header is missing or malformed"))
        }
        Refusal::TooOld(secs) => (
            "timestamp_out_of_tolerance",
            format!(
                "webhook-timestamp is {secs} s old; at most {} s either way is accepted",
                webhook_verify::TOLERANCE_SECS
            ),
        ),
        Refusal::TooNew(secs) => (
            "timestamp_out_of_tolerance",
            format!(
                "webhook-timestamp is {secs} s ahead; at most {} s either way is accepted",
                webhook_verify::TOLERANCE_SECS
            ),
        ),
    };
    Error::WebhookUnverified { code, message }
}

/// The tenant id a body names: the UUID as the catalog writes it.
fn named_tenant(body: &Value) -> Result<&str, Error> {
    let id = body
        .get("tenantId")
        .ok_or_else(|| Error::validation("tenantId", "is required"))?
        .as_str()
        .ok_or_else(|| Error::validation("tenantId", "must be the tenant's id (a UUID)"))?;
    match uuid::Uuid::try_parse(id) {
        Ok(uuid) if uuid.hyphenated().to_string() == id => Ok(id),
        _ => Err(Error::validation(
            "tenantId",
            "must be the tenant's id (a lower-case UUID)",
        )),
    }
}

/// A delivery of the `messages` source.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MessagesPayload {
    #[allow(dead_code)]
    tenant_id: String,
    chat_id: i64,
    body: String,
    author: PayloadAuthor,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PayloadAuthor {
    name: String,
    #[serde(default)]
    external_id: Option<String>,
}

/// What the `inbound.messages` job is given: the delivery's content and the key that makes
/// it post once.
#[derive(Deserialize)]
struct MessagesJob {
    delivery: String,
    chat_id: i64,
    body: String,
    author: ExternalAuthor,
}

fn messages_job(ctx: &RequestCtx, delivery: &str) -> Result<Value, Error> {
    let payload: MessagesPayload = json_body(ctx.req)?;
    let author = ExternalAuthor {
        name: payload.author.name.trim().to_string(),
        external_id: payload.author.external_id,
    };
    if payload.chat_id <= 0 {
        return Err(Error::validation("chatId", "must be a chat's id"));
    }
    workspace::external_message_problems(&payload.body, &author)?;
    Ok(json!({
        "delivery": delivery,
        "chat_id": payload.chat_id,
        "body": payload.body,
        "author": author,
    }))
}

fn receive(app: &App, ctx: &RequestCtx) -> Result<Response, Error> {
    // Like the admin routes: not on a tenant's host, which names its tenant another way.
    if ctx.tenant.is_some() {
        return Err(Error::CentralOnly);
    }
    let billing = ctx.params.get("source") == Some(super::billing::SOURCE);
    let (source, kind) = if billing {
        (super::billing::SOURCE, super::billing::KIND)
    } else {
        source(ctx)?
    };
    let signed: Signed = webhook_verify::signed(|name| ctx.req.header(name)).map_err(unverified)?;
    signed
        .check_time(app.sessions.clock.now())
        .map_err(unverified)?;
    if billing {
        return super::billing::receive(app, ctx, &signed);
    }
    let body: Value = json_body(ctx.req)?;
    let tenant_id = named_tenant(&body)?;
    let tenant = app
        .catalog
        .view()?
        .snapshot
        .by_id(tenant_id)
        // A deleted tenant is as unknown as one that never was; one still being provisioned
        // can have no secret yet.
        .filter(|t| matches!(t.status, TenantStatus::Active | TenantStatus::Suspended))
        .cloned()
        .ok_or(Error::TenantNotFound)?;
    let secret = app
        .catalog
        .inbound_secret(&tenant.id, source)?
        .and_then(|text| Secret::parse(&text));
    signed
        .verify(secret.as_ref(), &ctx.req.body)
        .map_err(unverified)?;
    // Verified: from here on the sender may learn what it asked about.
    if let Some(job) = app
        .catalog
        .inbound_delivery(&tenant.id, source, signed.id)?
    {
        return Ok(accepted(job, true));
    }
    if tenant.status == TenantStatus::Suspended {
        return Err(Error::TenantSuspended);
    }
    let delivery = format!("{source}:{}", signed.id);
    let payload = match kind {
        MESSAGES_KIND => messages_job(ctx, &delivery)?,
        other => return Err(Error::Internal(format!("no payload check for {other}"))),
    };
    let mut job = NewJob::new(Some(tenant.id.clone()), QUEUE, kind, payload);
    job.unique_key = Some(format!("inbound:{}:{delivery}", tenant.id));
    let job_id = match app.enqueue(job)? {
        Enqueued::New(id) | Enqueued::Duplicate(id) => id,
    };
    // A twin delivery that raced this one and was recorded first keeps its job; ours, if it
    // was enqueued at all, posts nothing more (the message's delivery key is unique).
    let kept = app.catalog.record_inbound_delivery(
        &tenant.id,
        source,
        signed.id,
        job_id,
        app.sessions.clock.now(),
    )?;
    Ok(accepted(kept, kept != job_id))
}

pub(super) fn accepted(job: i64, duplicate: bool) -> Response {
    if duplicate {
        Response::json(202, &json!({ "job": job, "duplicate": true }))
    } else {
        Response::json(202, &json!({ "job": job }))
    }
}

fn list_sources(app: &App, _ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require(PERMISSION)?;
    let infos = app.catalog.inbound_secret_infos(member.tenant.id())?;
    let sources: Vec<Value> = SOURCES
        .iter()
        .map(|(source, _)| {
            let info = infos.iter().find(|(s, _)| s == source).map(|(_, i)| i);
            json!({
                "source": source,
                "path": format!("/api/webhooks/{source}"),
                "secret_set": info.is_some(),
                "created_at": info.map(|i| i.created_at),
                "rotated_at": info.and_then(|i| i.rotated_at),
            })
        })
        .collect();
    Ok(Response::json(200, &json!({ "sources": sources })))
}

fn rotate_secret(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require(PERMISSION)?;
    let (source, _) = source(ctx)?;
    let secret = Secret::generate().to_text();
    let now = app.sessions.clock.now();
    let info = app
        .catalog
        .set_inbound_secret(member.tenant.id(), source, &secret, now)?;
    let created = info.rotated_at.is_none();
    let action = if created {
        "webhook_source.secret_created"
    } else {
        "webhook_source.secret_rotated"
    };
    let mut entry = super::members::member_entry(app, ctx, member, action);
    entry.target_type = Some("webhook_source".into());
    entry.target_id = Some(source.into());
    app.audit(entry);
    Ok(Response::json(
        if created { 201 } else { 200 },
        &json!({
            "source": source,
            "path": format!("/api/webhooks/{source}"),
            "secret": secret,
            "secret_set": true,
            "created_at": info.created_at,
            "rotated_at": info.rotated_at,
        }),
    ))
}

/// The `inbound.messages` job: posts the delivery's message into its chat in the job's tenant,
/// once per delivery, and publishes `message.created` on the chat's channel. A chat that is
/// missing or archived fails the job for good, saying so; a database that cannot be reached
/// now is tried again.
pub(super) fn run_messages(app: &App, run: &JobRun) -> Result<(), JobFailure> {
    let tenant = run
        .tenant
        .as_ref()
        .ok_or_else(|| JobFailure::Fatal("an inbound message needs its tenant".into()))?;
    let job: MessagesJob = serde_json::from_value(run.payload.clone())
        .map_err(|e| JobFailure::Fatal(format!("malformed job payload: {e}")))?;
    let posted = workspace::post_external_message(
        tenant,
        job.chat_id,
        &job.body,
        &job.author,
        &job.delivery,
    );
    match posted {
        Ok(Some(message)) => {
            publish(
                app,
                vec![chat_channel(tenant.id(), job.chat_id)],
                "message.created",
                json!({ "message": message }),
                None,
            );
            Ok(())
        }
        // Posted by an earlier run of this job (or a twin delivery's).
        Ok(None) => Ok(()),
        Err(WorkspaceError::NotFound) => Err(JobFailure::Fatal(format!(
            "chat {} does not exist in this tenant",
            job.chat_id
        ))),
        Err(WorkspaceError::Validation(fields)) => Err(JobFailure::Fatal(
            fields
                .iter()
                .map(|(field, problem)| format!("{field}: {problem}"))
                .collect::<Vec<_>>()
                .join("; "),
        )),
        Err(WorkspaceError::Forbidden(what)) => Err(JobFailure::Fatal(what)),
        Err(e @ WorkspaceError::Quota { .. }) => Err(JobFailure::Fatal(e.to_string())),
        Err(e @ (WorkspaceError::Db(_) | WorkspaceError::Store(_))) => {
            Err(JobFailure::Retry(e.to_string()))
        }
    }
}
