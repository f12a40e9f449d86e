//! The system admin's API, on the central host: login (with TOTP), the tenant lifecycle (the same
//! operations as `tenantd tenants ...`, both on `tenancy::lifecycle`), impersonation, the audit log.

use std::sync::Arc;

use data_encoding::BASE64;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::principal::{self, Via};
use crate::auth::{token, totp};
use crate::catalog::{
    unix_now, ActorType, AuditActor, Catalog, NewSession, TenantRecord, TenantStore,
};
use crate::error::Error;
use crate::http::{Params, Response, Router};
use crate::tenancy::health::health as tenant_health;
use crate::tenancy::lifecycle::{self, LifecycleError, NewTenant, Rename};
use crate::tenancy::moves;

use super::account::admit;
use super::broadcasting::{admin_channel, publish};
use super::job_kinds::{JobFailure, JobRun};
use super::jobs::NewJob;
use super::members::{audit_filter, audit_page};
use super::{json_body, App, RequestCtx, Route, SignedInAdmin};

/// How long an impersonation ticket may wait to be exchanged.
const TICKET_SECS: i64 = 60;

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("POST", "/api/admin/auth/login", Route::Public(login));
    r.add("GET", "/api/admin/me", Route::Admin(me));
    r.add("POST", "/api/admin/totp/enrol", Route::Admin(totp_enrol));
    r.add(
        "POST",
        "/api/admin/totp/confirm",
        Route::Admin(totp_confirm),
    );
    r.add("GET", "/api/admin/audit", Route::Admin(audit));
    r.add("GET", "/api/admin/tenants", Route::Admin(list));
    r.add("POST", "/api/admin/tenants", Route::Admin(create));
    r.add("GET", "/api/admin/tenants/{tenant}", Route::Admin(show));
    r.add("PATCH", "/api/admin/tenants/{tenant}", Route::Admin(rename));
    r.add(
        "DELETE",
        "/api/admin/tenants/{tenant}",
        Route::Admin(delete),
    );
    r.add(
        "POST",
        "/api/admin/tenants/{tenant}/suspend",
        Route::Admin(suspend),
    );
    r.add(
        "POST",
        "/api/admin/tenants/{tenant}/activate",
        Route::Admin(activate),
    );
    r.add(
        "POST",
        "/api/admin/tenants/{tenant}/restore",
        Route::Admin(restore),
    );
    r.add(
        "POST",
        "/api/admin/tenants/{tenant}/purge",
        Route::Admin(purge),
    );
    r.add(
        "POST",
        "/api/admin/tenants/{tenant}/move",
        Route::Admin(move_tenant),
    );
    r.add(
        "POST",
        "/api/admin/tenants/{tenant}/domains",
        Route::Admin(add_domain),
    );
    r.add(
        "DELETE",
        "/api/admin/tenants/{tenant}/domains/{domain}",
        Route::Admin(remove_domain),
    );
    r.add(
        "POST",
        "/api/admin/tenants/{tenant}/impersonate",
        Route::Admin(impersonate),
    );
    r.add(
        "GET",
        "/api/admin/tenants/{tenant}/health",
        Route::Admin(health),
    );
    r.add(
        "GET",
        "/api/admin/tenants/{tenant}/members",
        Route::Admin(members),
    );
}

fn login(app: &App, ctx: &RequestCtx) -> Result<Response, Error> {
    if ctx.tenant.is_some() {
        return Err(Error::CentralOnly);
    }
    #[derive(Deserialize)]
    struct AdminLogin {
        email: String,
        password: String,
        /// From the authenticator app, once two-factor authentication is on.
        code: Option<String>,
    }
    let AdminLogin {
        email,
        password,
        code,
    } = json_body(ctx.req)?;
    let gate = admit(app, ctx, "admin", &email)?;
    // A catalog that cannot answer is our fault: a 5xx, and no failure counted against anyone.
    let admin = app.catalog.admin_by_email(&email)?;
    let verified =
        app.verify_password(&password, admin.as_ref().map(|a| a.password_hash.as_str()))?;
    let fail = |admin_id: Option<i64>| {
        gate.failed(app);
        let mut entry = app.audit_entry(ctx, ActorType::Anonymous, "admin.login_failed");
        entry.actor_email = Some(email.trim().to_ascii_lowercase());
        entry.actor_id = admin_id;
        app.audit(entry);
        Error::InvalidCredentials
    };
    let admin = match admin {
        Some(admin) if verified.ok => admin,
        found => return Err(fail(found.map(|a| a.id))),
    };
    if admin.totp_enabled {
        let secret = admin.totp_secret.as_deref().unwrap_or_default();
        match code {
            // The password was right: say what is missing, without counting a failure.
            None => return Err(Error::TotpRequired),
            Some(code) => match totp::verify_step(secret, code.trim(), unix_now() as u64) {
                Some(step) if app.claim_totp_step(admin.id, step) => {}
                _ => return Err(fail(Some(admin.id))),
            },
        }
    }
    if let Some(stronger) = verified.rehash {
        app.catalog.set_admin_password_hash(admin.id, &stronger)?;
    }
    let mut entry = app.audit_entry(ctx, ActorType::Admin, "admin.login");
    entry.actor_id = Some(admin.id);
    entry.actor_email = Some(admin.email.clone());
    app.audit(entry);
    let response = app.start_session(
        |browser| NewSession::Admin {
            admin_id: admin.id,
            browser,
        },
        json!({ "admin": { "id": admin.id, "email": admin.email, "totp_enabled": admin.totp_enabled } }),
    )?;
    Ok(gate.passed(app, response))
}

fn me(_app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let mut body = json!({ "admin": { "id": signed_in.admin.id, "email": signed_in.admin.email, "totp_enabled": signed_in.admin.totp_enabled } });
    // As `/api/me` does: the portal needs it for the X-CSRF-Token header and cannot read the
    // HttpOnly cookie. The credentials are read as the pipeline read them.
    if let Some((_, Via::Cookie)) =
        principal::credentials(ctx.req.header("authorization"), ctx.req.header("cookie"))
    {
        body["csrf_token"] = json!(signed_in.session.csrf_token);
    }
    Ok(Response::json(200, &body))
}

/// Starts (or restarts) two-factor enrolment: the secret is shown once and enforced only after a
/// code from it is confirmed, so a half-finished enrolment cannot lock the admin out.
fn totp_enrol(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    if signed_in.admin.totp_enabled {
        return Err(Error::Conflict {
            code: "totp_enabled",
            message: "two-factor authentication is already on".into(),
        });
    }
    let secret = totp::new_secret();
    let uri = totp::otpauth_uri(&secret, &signed_in.admin.email, "tenantd");
    let qr = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| Error::Internal(format!("QR code of the otpauth URI: {e}")))?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build();
    app.catalog
        .set_admin_totp(signed_in.admin.id, Some(&secret), false)?;
    app.forget_totp_steps(signed_in.admin.id);
    let mut entry = app.audit_entry(ctx, ActorType::Admin, "admin.totp_enrolment_started");
    entry.actor_id = Some(signed_in.admin.id);
    app.audit(entry);
    Ok(Response::json(
        200,
        &json!({
            "secret": secret,
            "otpauth_uri": uri,
            // Ready for an <img src>: the page's CSP allows data: images and nothing inline.
            "qr_data_url": format!("data:image/svg+xml;base64,{}", BASE64.encode(qr.as_bytes())),
        }),
    ))
}

fn totp_confirm(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    #[derive(Deserialize)]
    struct Code {
        code: String,
    }
    let Code { code } = json_body(ctx.req)?;
    let Some(secret) = signed_in
        .admin
        .totp_secret
        .as_deref()
        .filter(|_| !signed_in.admin.totp_enabled)
    else {
        return Err(Error::Conflict {
            code: "totp_not_enrolling",
            message: "start with POST /api/admin/totp/enrol".into(),
        });
    };
    match totp::verify_step(secret, code.trim(), unix_now() as u64) {
        Some(step) if app.claim_totp_step(signed_in.admin.id, step) => {}
        _ => return Err(Error::validation("code", "does not match")),
    }
    app.catalog
        .set_admin_totp(signed_in.admin.id, Some(secret), true)?;
    let mut entry = app.audit_entry(ctx, ActorType::Admin, "admin.totp_enabled");
    entry.actor_id = Some(signed_in.admin.id);
    app.audit(entry);
    Ok(Response::json(200, &json!({ "totp_enabled": true })))
}

fn audit(app: &App, ctx: &RequestCtx, _signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let mut filter = audit_filter(ctx)?;
    if let Some(tenant) = ctx.req.query_param("tenant") {
        // The log outlives the tenants it names: an id is taken as it is, so that a purged
        // tenant's history can still be read. A slug must name a tenant that exists.
        filter.tenant_id = Some(match uuid::Uuid::parse_str(&tenant) {
            Ok(id) => id.hyphenated().to_string(),
            Err(_) => tenant_by_key(&app.catalog, &tenant)?.id.clone(),
        });
    }
    if let Some(actor) = ctx.req.query_param("actor") {
        filter.actor =
            Some(match actor.split_once(':') {
                Some(("user", id)) => AuditActor::User(id.parse().map_err(|_| {
                    Error::validation("actor", "user:<id>, admin:<id> or an email")
                })?),
                Some(("admin", id)) => AuditActor::Admin(id.parse().map_err(|_| {
                    Error::validation("actor", "user:<id>, admin:<id> or an email")
                })?),
                _ => AuditActor::Email(actor),
            });
    }
    audit_page(app, &filter)
}

/// A tenant by id (a UUID) or by slug. Slugs never look like UUIDs, so the two cannot be confused.
fn tenant_by_key(catalog: &Catalog, key: &str) -> Result<Arc<TenantRecord>, Error> {
    super::tenant_by_key(catalog, key)?.ok_or(Error::TenantNotFound)
}

fn slug_of(app: &App, params: &Params) -> Result<String, Error> {
    Ok(
        tenant_by_key(&app.catalog, params.get("tenant").unwrap_or_default())?
            .slug
            .clone(),
    )
}

/// Records a lifecycle change by this admin.
fn lifecycle_entry(
    app: &App,
    ctx: &RequestCtx,
    signed_in: &SignedInAdmin,
    action: &str,
    record: &TenantRecord,
    details: Value,
) {
    let mut entry = app.audit_entry(ctx, ActorType::Admin, action);
    entry.actor_id = Some(signed_in.admin.id);
    entry.actor_email = Some(signed_in.admin.email.clone());
    entry.tenant_id = Some(record.id.clone());
    entry.target_type = Some("tenant".into());
    entry.target_id = Some(record.id.clone());
    entry.details = details;
    app.audit(entry);
}

fn list(app: &App, _ctx: &RequestCtx, _signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let tenants = lifecycle::list(&app.catalog)?;
    Ok(Response::json(200, &json!({ "tenants": tenants })))
}

fn create(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    #[derive(Deserialize)]
    struct Body {
        slug: String,
        name: String,
        domains: Option<Vec<String>>,
        /// Answer 202 at once and make the tenant's file in a job.
        #[serde(rename = "async", default)]
        asynchronous: bool,
    }
    let body: Body = json_body(ctx.req)?;
    let new = NewTenant {
        slug: body.slug,
        name: body.name,
        domains: body.domains.unwrap_or_default(),
    };
    if body.asynchronous {
        return create_async(app, ctx, signed_in, &new);
    }
    let record = lifecycle::create(&app.catalog, &new)?;
    log::info!("tenant {} created ({})", record.slug, record.id);
    lifecycle_entry(
        app,
        ctx,
        signed_in,
        "tenant.created",
        &record,
        json!({ "slug": record.slug }),
    );
    Ok(Response::json(201, &record))
}

/// File size, schema version, pool and last access of one tenant, without opening its pool.
fn health(app: &App, ctx: &RequestCtx, _signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let record = tenant_by_key(&app.catalog, ctx.params.get("tenant").unwrap_or_default())?;
    let health = tenant_health(app.catalog.data_dir(), &app.registry, &record);
    Ok(Response::json(200, &health))
}

/// The tenant's people and their roles, for choosing whom to impersonate.
fn members(app: &App, ctx: &RequestCtx, _signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let record = tenant_by_key(&app.catalog, ctx.params.get("tenant").unwrap_or_default())?;
    let members = app.catalog.members(&record.id)?;
    Ok(Response::json(200, &json!({ "members": members })))
}

fn show(app: &App, ctx: &RequestCtx, _signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let record = lifecycle::show(&app.catalog, &slug_of(app, ctx.params)?)?;
    Ok(Response::json(200, &record))
}

/// Changes the slug, the display name or both (`{slug?, name?}`).
fn rename(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let slug = slug_of(app, ctx.params)?;
    let change: Rename = json_body(ctx.req)?;
    let renamed = lifecycle::rename(&app.catalog, Some(&app.registry), &slug, &change)?;
    let changes = renamed.changes();
    if !changes.is_empty() {
        lifecycle_entry(
            app,
            ctx,
            signed_in,
            "tenant.renamed",
            &renamed.after,
            Value::Object(changes),
        );
    }
    Ok(Response::json(200, &renamed.after))
}

/// Runs one status change and answers the tenant as it now is.
fn transition(
    app: &App,
    ctx: &RequestCtx,
    signed_in: &SignedInAdmin,
    action: &str,
    change: fn(&Catalog, &str) -> Result<Arc<TenantRecord>, LifecycleError>,
) -> Result<Response, Error> {
    let slug = slug_of(app, ctx.params)?;
    let record = change(&app.catalog, &slug)?;
    log::info!("tenant {slug}: {action}");
    lifecycle_entry(
        app,
        ctx,
        signed_in,
        action,
        &record,
        json!({ "status": record.status }),
    );
    Ok(Response::json(200, &record))
}

fn delete(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    transition(app, ctx, signed_in, "tenant.deleted", lifecycle::delete)
}

fn suspend(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    transition(app, ctx, signed_in, "tenant.suspended", lifecycle::suspend)
}

fn activate(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    transition(app, ctx, signed_in, "tenant.activated", lifecycle::activate)
}

fn restore(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    transition(app, ctx, signed_in, "tenant.restored", lifecycle::restore)
}

fn purge(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let record = tenant_by_key(&app.catalog, ctx.params.get("tenant").unwrap_or_default())?;
    lifecycle::purge(&app.catalog, &app.registry, &record.slug)?;
    log::info!("tenant {} purged", record.slug);
    lifecycle_entry(
        app,
        ctx,
        signed_in,
        "tenant.purged",
        &record,
        json!({ "slug": record.slug }),
    );
    Ok(Response::json(200, &json!({ "purged": record.slug })))
}

/// Moves the tenant's database to another store (`{"to": "local" | "sqld"}`), online: the
/// tenant answers throughout, its writes pause briefly at the end (`tenancy::moves`).
fn move_tenant(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let record = tenant_by_key(&app.catalog, ctx.params.get("tenant").unwrap_or_default())?;
    #[derive(Deserialize)]
    struct Body {
        to: String,
    }
    let Body { to } = json_body(ctx.req)?;
    let to = TenantStore::parse(&to)
        .ok_or_else(|| Error::validation("to", "must be \"local\" or \"sqld\""))?;
    let moved = moves::move_tenant(&app.catalog, &app.registry, &record.slug, to)?;
    lifecycle_entry(
        app,
        ctx,
        signed_in,
        "tenant.moved",
        &moved.tenant,
        json!({ "from": moved.from, "to": moved.to }),
    );
    Ok(Response::json(200, &moved))
}

fn add_domain(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let slug = slug_of(app, ctx.params)?;
    #[derive(Deserialize)]
    struct Domain {
        domain: String,
    }
    let Domain { domain } = json_body(ctx.req)?;
    let record = lifecycle::add_domain(&app.catalog, &slug, &domain)?;
    lifecycle_entry(
        app,
        ctx,
        signed_in,
        "tenant.domain_added",
        &record,
        json!({ "domain": domain }),
    );
    Ok(Response::json(200, &record))
}

fn remove_domain(
    app: &App,
    ctx: &RequestCtx,
    signed_in: &SignedInAdmin,
) -> Result<Response, Error> {
    let slug = slug_of(app, ctx.params)?;
    let domain = ctx.params.get("domain").unwrap_or_default();
    let record = lifecycle::remove_domain(&app.catalog, &slug, domain)?;
    lifecycle_entry(
        app,
        ctx,
        signed_in,
        "tenant.domain_removed",
        &record,
        json!({ "domain": domain }),
    );
    Ok(Response::json(200, &record))
}

/// A one-time ticket to act as a member of one tenant, exchanged on that tenant within a minute.
fn impersonate(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let record = tenant_by_key(&app.catalog, ctx.params.get("tenant").unwrap_or_default())?;
    #[derive(Deserialize)]
    struct Impersonate {
        user_id: i64,
    }
    let Impersonate { user_id } = json_body(ctx.req)?;
    if app.catalog.membership(user_id, &record.id)?.is_none() {
        return Err(Error::validation(
            "user_id",
            "is not a member of this tenant",
        ));
    }
    let ticket = token::generate();
    let now = unix_now();
    app.catalog.create_session(
        &NewSession::ImpersonationTicket {
            token_hash: token::digest(&ticket).to_string(),
            user_id,
            tenant_id: record.id.clone(),
            impersonated_by: signed_in.admin.id,
            expires_at: now + TICKET_SECS,
        },
        now,
    )?;
    let mut entry = app.audit_entry(ctx, ActorType::Admin, "impersonation.started");
    entry.actor_id = Some(signed_in.admin.id);
    entry.actor_email = Some(signed_in.admin.email.clone());
    entry.tenant_id = Some(record.id.clone());
    entry.target_type = Some("user".into());
    entry.target_id = Some(user_id.to_string());
    app.audit(entry);
    Ok(Response::json(
        201,
        &json!({
            "ticket": ticket,
            "expires_at": now + TICKET_SECS,
            "tenant_id": record.id,
            "user_id": user_id,
            "exchange": "POST /api/auth/impersonate {\"ticket\": ...} on the tenant",
        }),
    ))
}

/// `"async": true`: the row now, in status `provisioning`; the file in a `tenant.provision`
/// job. Central work (no tenant in the job): the tenant cannot be opened until it is done.
fn create_async(
    app: &App,
    ctx: &RequestCtx,
    signed_in: &SignedInAdmin,
    new: &NewTenant,
) -> Result<Response, Error> {
    let record =
        lifecycle::create_provisioning(&app.catalog, new, app.catalog.stores().new_tenants)?;
    let mut job = NewJob::new(
        None,
        "default",
        "tenant.provision",
        json!({ "tenant_id": record.id, "admin_id": signed_in.admin.id }),
    );
    job.unique_key = Some(format!("tenant.provision:{}", record.id));
    let job = app.enqueue(job)?;
    log::info!(
        "tenant {} ({}) is being provisioned",
        record.slug,
        record.id
    );
    lifecycle_entry(
        app,
        ctx,
        signed_in,
        "tenant.created",
        &record,
        json!({ "slug": record.slug, "async": true }),
    );
    let job = app.catalog.job(job.id())?;
    Ok(Response::json(
        202,
        &json!({ "tenant": record, "job": job }),
    ))
}

/// The `tenant.provision` job: makes the file of a tenant recorded as `provisioning` and makes
/// it active, then tells the admin who asked on their channel. The last failed attempt tells
/// them too; the tenant stays `provisioning` (retry the job, or delete the tenant).
pub(super) fn provision_job(app: &App, run: &JobRun) -> Result<(), JobFailure> {
    let tenant_id = run.payload["tenant_id"]
        .as_str()
        .ok_or_else(|| JobFailure::Fatal("the payload names no tenant_id".into()))?;
    let admin = run.payload["admin_id"].as_i64();
    let tell = |event: &str, data: Value| {
        if let Some(admin) = admin {
            publish(app, vec![admin_channel(admin)], event, data, None);
        }
    };
    match lifecycle::finish_provisioning(&app.catalog, tenant_id) {
        Ok(record) => {
            log::info!("tenant {} ({}) provisioned", record.slug, record.id);
            tell(
                "tenant.provisioned",
                json!({ "tenant": &*record, "job_id": run.id }),
            );
            Ok(())
        }
        Err(e) => {
            let last = run.attempt >= run.max_attempts
                || matches!(
                    e,
                    LifecycleError::WrongStatus { .. } | LifecycleError::NotFound(_)
                );
            if last {
                tell(
                    "tenant.provision_failed",
                    json!({ "tenant_id": tenant_id, "job_id": run.id, "error": e.to_string() }),
                );
                return Err(JobFailure::Fatal(e.to_string()));
            }
            Err(JobFailure::Retry(e.to_string()))
        }
    }
}
