//! Plans and subscriptions over HTTP: system admins list and edit plans and set a tenant's
//! subscription; a tenant's admins see their plan, status, limits, usage and the request rates
//! in force. Also the checks handlers make before a write the plan governs (`writable`,
//! `require_feature`).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::catalog::{
    ActorType, CatalogError, Entitlements, PlanEdit, Subscription, SubscriptionChange,
    SubscriptionStatus, MEMBER_RATE_LIMIT, TENANT_RATE_LIMIT,
};
use crate::error::Error;
use crate::http::{Response, Router};
use crate::tenancy::Tenant;

use super::settings::admin_tenant;
use super::{App, Member, RequestCtx, Route, SignedInAdmin};

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("GET", "/api/subscription", Route::Tenant(show));
    r.add("GET", "/api/subscription/access", Route::Tenant(access));
    r.add("GET", "/api/admin/plans", Route::Admin(list));
    r.add(
        "GET",
        "/api/admin/tenants/{tenant}/subscription",
        Route::Admin(admin_show),
    );
    r.add("PATCH", "/api/admin/plans/{plan}", Route::Admin(edit));
    r.add(
        "PUT",
        "/api/admin/tenants/{tenant}/subscription",
        Route::Admin(subscribe),
    );
}

/// The tenant's entitlements, refusing with `subscription_inactive` when it is read-only now.
pub(super) fn writable(app: &App, tenant_id: &str) -> Result<Entitlements, Error> {
    let e = app.catalog.entitlements(tenant_id)?;
    if !e
        .subscription
        .writable(app.sessions.clock.now(), app.catalog.billing_grace())
    {
        return Err(Error::SubscriptionInactive);
    }
    Ok(e)
}

/// Refuses with `feature_not_in_plan` when the tenant's plan switches `feature` off.
pub(super) fn require_feature(
    app: &App,
    tenant_id: &str,
    feature: &'static str,
) -> Result<(), Error> {
    if app.catalog.entitlements(tenant_id)?.feature(feature) {
        Ok(())
    } else {
        Err(Error::FeatureNotInPlan(feature))
    }
}

pub(super) fn quota_error(q: crate::catalog::QuotaExceeded) -> Error {
    Error::QuotaExceeded {
        limit_name: q.limit_name,
        limit: q.limit,
        usage: q.usage,
    }
}

fn catalog_error(e: CatalogError) -> Error {
    match e {
        CatalogError::PlanNotFound(_) | CatalogError::NotFound(_) => Error::NotFound,
        CatalogError::Validation(v) => Error::validation(v.field, v.message),
        e => e.into(),
    }
}

fn view(app: &App, e: &Entitlements, usage: Option<Value>) -> Value {
    // In force: the plan's, the server's flags where it names none; `null` is off (a flag at 0).
    let rates = app.rate_limit.rates_for(e.plan.rates());
    let on = |per_min: u32| (per_min > 0).then_some(per_min);
    let read_only = e
        .subscription
        .read_only(app.sessions.clock.now(), app.catalog.billing_grace());
    json!({
        "plan": e.plan,
        "subscription": e.subscription,
        "writable": read_only.is_none(),
        "read_only": read_only,
        "usage": usage,
        "rate_limits": {
            TENANT_RATE_LIMIT: on(rates.tenant_per_min),
            MEMBER_RATE_LIMIT: on(rates.member_per_min),
        },
    })
}

/// `GET /api/subscription/access`, for every member: whether the company may write now and,
/// if not, why and since when; the web interface's read-only banner. Nothing of the plan's
/// price, limits or usage, which are the settings managers'.
fn access(app: &App, _ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let e = app.catalog.entitlements(member.tenant.id())?;
    let read_only = e
        .subscription
        .read_only(app.sessions.clock.now(), app.catalog.billing_grace());
    Ok(Response::json(
        200,
        &json!({
            "writable": read_only.is_none(),
            "read_only": read_only,
            "status": e.subscription.status,
            "plan": {"slug": e.plan.slug, "name": e.plan.name},
        }),
    ))
}

/// What the tenant uses of each counted limit.
fn usage(app: &App, tenant: &Tenant) -> Result<Value, Error> {
    let members = app.catalog.member_count(tenant.id())?;
    tenant.read(|db| {
        let count = |sql: &str| -> Result<i64, Error> { Ok(db.query_one(sql, &[], |r| r.get(0))?) };
        Ok(json!({
            "members": members,
            "orders": count("SELECT count(*) FROM orders")?,
            "chats": count("SELECT count(*) FROM chats")?,
            // In MiB as the limit, rounded up.
            "storage_mb": (crate::workspace::files::storage_used(db)? + (1 << 20) - 1) >> 20,
        }))
    })
}

fn show(app: &App, _ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("settings_manage")?;
    let e = app.catalog.entitlements(member.tenant.id())?;
    let usage = usage(app, &member.tenant)?;
    Ok(Response::json(200, &view(app, &e, Some(usage))))
}

fn admin_show(app: &App, ctx: &RequestCtx, _signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let record = admin_tenant(app, ctx)?;
    let e = app.catalog.entitlements(&record.id)?;
    let usage = usage(app, &app.registry.open(record)?)?;
    Ok(Response::json(200, &view(app, &e, Some(usage))))
}

fn list(app: &App, _ctx: &RequestCtx, _signed_in: &SignedInAdmin) -> Result<Response, Error> {
    Ok(Response::json(
        200,
        &json!({ "plans": app.catalog.plans()? }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    #[serde(default)]
    limits: std::collections::BTreeMap<String, Option<i64>>,
    #[serde(default)]
    features: std::collections::BTreeMap<String, bool>,
    active: Option<bool>,
}

fn admin_entry(
    app: &App,
    ctx: &RequestCtx,
    signed_in: &SignedInAdmin,
) -> crate::catalog::AuditEntry {
    let mut entry = app.audit_entry(ctx, ActorType::Admin, "plan.edited");
    entry.actor_id = Some(signed_in.admin.id);
    entry.actor_email = Some(signed_in.admin.email.clone());
    entry
}

fn edit(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let body: EditBody = super::json_body(ctx.req)?;
    let edit = PlanEdit {
        limits: body.limits.into_iter().collect(),
        features: body.features.into_iter().collect(),
        active: body.active,
    };
    let plan = app
        .catalog
        .edit_plan(
            ctx.params.get("plan").unwrap_or_default(),
            &edit,
            admin_entry(app, ctx, signed_in),
        )
        .map_err(catalog_error)?;
    Ok(Response::json(200, &plan))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionBody {
    plan: Option<String>,
    status: Option<String>,
    trial_end: Option<i64>,
    current_period_start: Option<i64>,
    current_period_end: Option<i64>,
    external_ref: Option<String>,
    metadata: Option<Value>,
}

fn subscribe(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let tenant = admin_tenant(app, ctx)?;
    let body: SubscriptionBody = super::json_body(ctx.req)?;
    let change = SubscriptionChange {
        plan: body.plan,
        status: parse_status(body.status.as_deref(), "status")?,
        trial_end: body.trial_end,
        current_period_start: body.current_period_start,
        current_period_end: body.current_period_end,
        external_ref: body.external_ref,
        metadata: body.metadata,
    };
    let s = change_subscription(app, &tenant.id, &change, admin_entry(app, ctx, signed_in))?;
    let e = app.catalog.entitlements(&s.tenant_id)?;
    Ok(Response::json(200, &view(app, &e, None)))
}

/// A status as the API spells it; `field` names it in the `422`.
pub(super) fn parse_status(
    status: Option<&str>,
    field: &'static str,
) -> Result<Option<SubscriptionStatus>, Error> {
    status
        .map(|s| {
            SubscriptionStatus::parse(s).ok_or_else(|| {
                Error::validation(field, "must be trialing, active, past_due or canceled")
            })
        })
        .transpose()
}

/// Applies a change as the admin route does (the billing webhook's job too): an unknown plan
/// is a `422` naming `plan`, an unknown tenant `404`.
pub(super) fn change_subscription(
    app: &App,
    tenant_id: &str,
    change: &SubscriptionChange,
    audit: crate::catalog::AuditEntry,
) -> Result<Subscription, Error> {
    app.catalog
        .change_subscription(tenant_id, change, app.sessions.clock.now(), audit)
        .map_err(|e| match e {
            CatalogError::PlanNotFound(p) => Error::validation("plan", format!("no plan {p}")),
            e => catalog_error(e),
        })
}
