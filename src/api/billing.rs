//! The `billing` inbound webhook source: a payment provider sets a tenant's plan and
//! subscription status through `POST /api/webhooks/billing`, signed as the other sources are but
//! with the server's own secret, which only system admins make and see
//! (`/api/admin/billing/secret`, `tenantd billing secret`). A tenant's admins never hold it, nor
//! can they make one: otherwise they could sign their own upgrade. Beside it the
//! `inbound.billing` job, which applies the change through the same catalog function, checks
//! and audit entry as the admin route.
//!
//! Unlike `messages`, the secret is not the tenant's, so the signature is checked first and the
//! body (which names the tenant) only then: a sender without the secret learns nothing, not even
//! whether the body would parse. What can be judged at the door (the tenant, the plan, the
//! status, the times) is answered there, as a 4xx; the job fails, saying why, only if the
//! catalog changed in between (a plan no longer offered).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog::{ActorType, AuditEntry, CatalogError, SubscriptionChange, TenantStatus};
use crate::error::Error;
use crate::http::{Response, Router};

use super::job_kinds::{JobFailure, JobRun};
use super::jobs::{Enqueued, NewJob};
use super::webhook_verify::{Secret, Signed};
use super::webhooks_in::{accepted, unverified, QUEUE};
use super::{json_body, App, RequestCtx, Route, SignedInAdmin};

pub(super) const SOURCE: &str = "billing";
pub(super) const KIND: &str = "inbound.billing";
const PATH: &str = "/api/webhooks/billing";

pub(super) fn routes(r: &mut Router<Route>) {
    r.add(
        "GET",
        "/api/admin/billing/secret",
        Route::Admin(show_secret),
    );
    r.add(
        "POST",
        "/api/admin/billing/secret",
        Route::Admin(rotate_secret),
    );
}

fn show_secret(
    app: &App,
    _ctx: &RequestCtx,
    _signed_in: &SignedInAdmin,
) -> Result<Response, Error> {
    let info = app.catalog.billing_secret_info()?;
    Ok(Response::json(
        200,
        &json!({
            "source": SOURCE,
            "path": PATH,
            "secret_set": info.is_some(),
            "created_at": info.as_ref().map(|i| i.created_at),
            "rotated_at": info.and_then(|i| i.rotated_at),
        }),
    ))
}

/// Makes the billing secret, or a new one (the old one stops working at once); shown only here.
fn rotate_secret(
    app: &App,
    ctx: &RequestCtx,
    signed_in: &SignedInAdmin,
) -> Result<Response, Error> {
    let secret = Secret::generate().to_text();
    let info = app
        .catalog
        .set_billing_secret(&secret, app.sessions.clock.now())?;
    let created = info.rotated_at.is_none();
    let mut entry = app.audit_entry(ctx, ActorType::Admin, secret_action(created));
    entry.actor_id = Some(signed_in.admin.id);
    entry.actor_email = Some(signed_in.admin.email.clone());
    entry.target_type = Some("webhook_source".into());
    entry.target_id = Some(SOURCE.into());
    app.audit(entry);
    Ok(Response::json(
        if created { 201 } else { 200 },
        &json!({
            "source": SOURCE,
            "path": PATH,
            "secret": secret,
            "secret_set": true,
            "created_at": info.created_at,
            "rotated_at": info.rotated_at,
        }),
    ))
}

/// The audit action of making (`true`) or replacing the billing secret.
fn secret_action(created: bool) -> &'static str {
    if created {
        "billing.secret_created"
    } else {
        "billing.secret_rotated"
    }
}

/// A delivery of the `billing` source. Times are Unix seconds.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Payload {
    #[allow(dead_code)]
    tenant_id: Option<String>,
    #[allow(dead_code)]
    tenant_slug: Option<String>,
    plan: Option<String>,
    status: Option<String>,
    current_period_start: Option<i64>,
    current_period_end: Option<i64>,
    trial_end: Option<i64>,
    external_ref: Option<String>,
    metadata: Option<Value>,
}

/// What the `inbound.billing` job is given: the tenant and the change, as the catalog spells
/// it. The job is the server's, not the tenant's (no `tenant_id` of its own): a tenant's admins
/// list and retry their tenant's jobs, and must neither see a billing change nor run an old one
/// again.
#[derive(Serialize, Deserialize)]
struct Job {
    tenant_id: String,
    webhook_id: String,
    plan: Option<String>,
    status: Option<String>,
    current_period_start: Option<i64>,
    current_period_end: Option<i64>,
    trial_end: Option<i64>,
    external_ref: Option<String>,
    metadata: Option<Value>,
}

impl Job {
    fn change(&self) -> Result<SubscriptionChange, String> {
        let status = self
            .status
            .as_deref()
            .map(|s| {
                crate::catalog::SubscriptionStatus::parse(s)
                    .ok_or_else(|| format!("status: {s:?} is not a status"))
            })
            .transpose()?;
        Ok(SubscriptionChange {
            plan: self.plan.clone(),
            status,
            trial_end: self.trial_end,
            current_period_start: self.current_period_start,
            current_period_end: self.current_period_end,
            external_ref: self.external_ref.clone(),
            metadata: self.metadata.clone(),
        })
    }
}

/// The payload's name for a field the catalog names.
fn payload_field(field: &str) -> &str {
    match field {
        "trial_end" => "trialEnd",
        "current_period_start" => "currentPeriodStart",
        "current_period_end" => "currentPeriodEnd",
        "external_ref" => "externalRef",
        other => other,
    }
}

/// The tenant a delivery names: `tenantId` (its UUID) or `tenantSlug`, exactly one. A deleted
/// tenant, or one still being provisioned, is as unknown as one that never was.
fn named_tenant(
    app: &App,
    body: &Value,
) -> Result<std::sync::Arc<crate::catalog::TenantRecord>, Error> {
    let text = |field: &'static str| -> Result<Option<&str>, Error> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::validation(field, "must be a string")),
        }
    };
    let record = match (text("tenantId")?, text("tenantSlug")?) {
        (Some(id), None) => {
            let uuid = uuid::Uuid::try_parse(id)
                .map_err(|_| Error::validation("tenantId", "must be the tenant's id (a UUID)"))?;
            app.catalog.by_id(&uuid.hyphenated().to_string())?
        }
        (None, Some(slug)) => app.catalog.by_slug(slug)?,
        (None, None) => {
            return Err(Error::validation(
                "tenantId",
                "is required (or tenantSlug, the tenant's slug)",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(Error::validation(
                "tenantSlug",
                "name the tenant once: tenantId or tenantSlug, not both",
            ))
        }
    };
    record
        .filter(|t| matches!(t.status, TenantStatus::Active | TenantStatus::Suspended))
        .ok_or(Error::TenantNotFound)
}

/// `POST /api/webhooks/billing`, its headers and timestamp already checked by the caller.
pub(super) fn receive(app: &App, ctx: &RequestCtx, signed: &Signed) -> Result<Response, Error> {
    let secret = app
        .catalog
        .billing_secret()?
        .and_then(|text| Secret::parse(&text));
    signed
        .verify(secret.as_ref(), &ctx.req.body)
        .map_err(unverified)?;
    // Signed with the server's secret: the sender is the payment provider.
    let body: Value = json_body(ctx.req)?;
    let tenant = named_tenant(app, &body)?;
    if let Some(job) = app
        .catalog
        .inbound_delivery(&tenant.id, SOURCE, signed.id)?
    {
        return Ok(accepted(job, true));
    }
    if tenant.status == TenantStatus::Suspended {
        return Err(Error::TenantSuspended);
    }
    let payload: Payload = json_body(ctx.req)?;
    let job = Job {
        tenant_id: tenant.id.clone(),
        webhook_id: signed.id.to_string(),
        plan: payload.plan,
        status: payload.status,
        current_period_start: payload.current_period_start,
        current_period_end: payload.current_period_end,
        trial_end: payload.trial_end,
        external_ref: payload.external_ref,
        metadata: payload.metadata,
    };
    check(app, &tenant.id, &job)?;
    let payload = serde_json::to_value(&job).map_err(|e| Error::Internal(e.to_string()))?;
    let mut new_job = NewJob::new(None, QUEUE, KIND, payload);
    new_job.unique_key = Some(format!("inbound:{}:{SOURCE}:{}", tenant.id, signed.id));
    let job_id = match app.enqueue(new_job)? {
        Enqueued::New(id) | Enqueued::Duplicate(id) => id,
    };
    let kept = app.catalog.record_inbound_delivery(
        &tenant.id,
        SOURCE,
        signed.id,
        job_id,
        app.sessions.clock.now(),
    )?;
    Ok(accepted(kept, kept != job_id))
}

/// What the catalog would refuse, refused now with the payload's field names: a status that
/// is none, a plan that does not exist or is not offered, times and references out of shape.
fn check(app: &App, tenant_id: &str, job: &Job) -> Result<(), Error> {
    super::plans::parse_status(job.status.as_deref(), "status")?;
    let change = job.change().map_err(|e| Error::validation("status", e))?;
    if change.plan.is_none()
        && change.status.is_none()
        && change.trial_end.is_none()
        && change.current_period_start.is_none()
        && change.current_period_end.is_none()
        && change.external_ref.is_none()
        && change.metadata.is_none()
    {
        return Err(Error::validation(
            "plan",
            "a change names at least one of plan, status, currentPeriodStart, currentPeriodEnd, \
             trialEnd, externalRef, metadata",
        ));
    }
    change.check().map_err(|e| match e {
        CatalogError::Validation(v) => Error::validation(payload_field(v.field), v.message),
        e => e.into(),
    })?;
    if let Some(slug) = &change.plan {
        let current = app.catalog.entitlements(tenant_id)?.subscription.plan;
        match app.catalog.plan(slug)? {
            None => return Err(Error::validation("plan", format!("no plan {slug}"))),
            Some(p) if !p.active && p.slug != current => {
                return Err(Error::validation(
                    "plan",
                    format!("plan {slug} is not offered"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The `inbound.billing` job: applies the delivery's change to the job's tenant, audited as
/// `subscription.changed` by the billing source. Applying it twice sets the same values, so a
/// retried attempt is harmless. A change the catalog refuses (the plan withdrawn since the
/// delivery) fails the job for good, saying why.
pub(super) fn run(app: &App, run: &JobRun) -> Result<(), JobFailure> {
    let job: Job = serde_json::from_value(run.payload.clone())
        .map_err(|e| JobFailure::Fatal(format!("malformed job payload: {e}")))?;
    let change = job.change().map_err(JobFailure::Fatal)?;
    let mut audit = AuditEntry::new(ActorType::System, "subscription.changed");
    audit.details = json!({"via": "webhook", "source": SOURCE, "webhook_id": job.webhook_id});
    match app
        .catalog
        .change_subscription(&job.tenant_id, &change, app.sessions.clock.now(), audit)
    {
        Ok(_) => Ok(()),
        Err(CatalogError::PlanNotFound(plan)) => {
            Err(JobFailure::Fatal(format!("plan {plan} does not exist")))
        }
        Err(CatalogError::Validation(v)) => Err(JobFailure::Fatal(format!(
            "{}: {}",
            payload_field(v.field),
            v.message
        ))),
        Err(CatalogError::NotFound(id)) => {
            Err(JobFailure::Fatal(format!("tenant {id} does not exist")))
        }
        Err(e) => Err(JobFailure::Retry(e.to_string())),
    }
}
