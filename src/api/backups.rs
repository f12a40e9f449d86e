//! Backups over HTTP, for system admins on the central host: a tenant's backups listed, one
//! taken (a `tenant.backup` job), a tenant restored from one of its own listed backups; the
//! catalog's backups the same way. The `tenant.backup` job, which schedules run too.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::catalog::{unix_now, ActorType, TenantRecord};
use crate::error::Error;
use crate::http::{Response, Router};
use crate::tenancy::backup::{self, BackupError, Retention, CENTRAL};

use super::job_kinds::{JobFailure, JobRun};
use super::jobs::NewJob;
use super::{json_body, tenant_by_key, App, RequestCtx, Route, SignedInAdmin};

pub const KIND: &str = "tenant.backup";

pub(super) fn routes(r: &mut Router<Route>) {
    r.add(
        "GET",
        "/api/admin/tenants/{tenant}/backups",
        Route::Admin(list),
    );
    r.add(
        "POST",
        "/api/admin/tenants/{tenant}/backups",
        Route::Admin(take),
    );
    r.add(
        "POST",
        "/api/admin/tenants/{tenant}/backups/restore",
        Route::Admin(restore),
    );
    r.add(
        "GET",
        "/api/admin/backups/central",
        Route::Admin(list_central),
    );
    r.add(
        "POST",
        "/api/admin/backups/central",
        Route::Admin(take_central),
    );
}

fn record(app: &App, ctx: &RequestCtx) -> Result<std::sync::Arc<TenantRecord>, Error> {
    tenant_by_key(&app.catalog, ctx.params.get("tenant").unwrap_or_default())?
        .ok_or(Error::TenantNotFound)
}

/// [`record`], for what works on a local file alone (taking and restoring a backup).
fn local_record(app: &App, ctx: &RequestCtx) -> Result<std::sync::Arc<TenantRecord>, Error> {
    let record = record(app, ctx)?;
    if record.store != crate::catalog::TenantStore::Local {
        return Err(Error::Conflict {
            code: "not_a_local_file",
            message: format!(
                "tenant {} is kept on sqld: its copies are sqld's, not tenantd's backups",
                record.slug
            ),
        });
    }
    Ok(record)
}

fn audit(
    app: &App,
    ctx: &RequestCtx,
    signed_in: &SignedInAdmin,
    action: &str,
    tenant_id: Option<&str>,
    details: Value,
) {
    let mut entry = app.audit_entry(ctx, ActorType::Admin, action);
    entry.actor_id = Some(signed_in.admin.id);
    entry.actor_email = Some(signed_in.admin.email.clone());
    entry.tenant_id = tenant_id.map(String::from);
    entry.target_type = Some(
        if tenant_id.is_some() {
            "tenant"
        } else {
            "catalog"
        }
        .into(),
    );
    entry.target_id = tenant_id.map(String::from);
    entry.details = details;
    app.audit(entry);
}

fn list(app: &App, ctx: &RequestCtx, _signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let record = record(app, ctx)?;
    let backups = backup::list(app.catalog.data_dir(), &record.id);
    Ok(Response::json(200, &json!({ "backups": backups })))
}

fn list_central(
    app: &App,
    _ctx: &RequestCtx,
    _signed_in: &SignedInAdmin,
) -> Result<Response, Error> {
    let backups = backup::list(app.catalog.data_dir(), CENTRAL);
    Ok(Response::json(200, &json!({ "backups": backups })))
}

/// Enqueues a backup job (one at a time per tenant: a pending one is answered again) and
/// answers 202 with it.
fn enqueue(
    app: &App,
    tenant_id: Option<&str>,
    payload: Value,
    unique: &str,
) -> Result<Response, Error> {
    let mut job = NewJob::new(tenant_id.map(String::from), "default", KIND, payload);
    job.unique_key = Some(format!("{KIND}:{unique}"));
    let id = app.enqueue(job)?.id();
    let job = app.catalog.job(id)?;
    Ok(Response::json(202, &json!({ "job": job })))
}

fn take(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    let record = local_record(app, ctx)?;
    let response = enqueue(
        app,
        Some(&record.id),
        json!({ "admin_id": signed_in.admin.id }),
        &record.id,
    )?;
    audit(
        app,
        ctx,
        signed_in,
        "tenant.backup_requested",
        Some(&record.id),
        json!({ "slug": record.slug }),
    );
    Ok(response)
}

fn take_central(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    if app.catalog.is_shared() {
        return Err(Error::Conflict {
            code: "not_a_local_file",
            message: "the catalog is kept on sqld: its copies are sqld's, not tenantd's backups"
                .into(),
        });
    }
    let response = enqueue(
        app,
        None,
        json!({ "catalog": true, "admin_id": signed_in.admin.id }),
        CENTRAL,
    )?;
    audit(
        app,
        ctx,
        signed_in,
        "catalog.backup_requested",
        None,
        json!({}),
    );
    Ok(response)
}

/// `{"backup": "<file name>"}`: one of this tenant's listed backups, by name; never a path.
fn restore(app: &App, ctx: &RequestCtx, signed_in: &SignedInAdmin) -> Result<Response, Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        backup: String,
    }
    let record = local_record(app, ctx)?;
    let body: Body = json_body(ctx.req)?;
    let data = app.catalog.data_dir();
    let file = backup::listed_file(data, &record, &body.backup)?;
    let restored = backup::restore_in_place(data, Some(&app.registry), &record, &file, unix_now())?;
    log::info!("tenant {} restored from {}", record.slug, body.backup);
    audit(
        app,
        ctx,
        signed_in,
        "tenant.restored_from_backup",
        Some(&record.id),
        json!({
            "backup": body.backup,
            "schema_version": restored.schema_version,
            "replaced": restored.replaced.as_ref().map(|m| &m.file),
        }),
    );
    Ok(Response::json(
        200,
        &json!({
            "tenant": &*record,
            "backup": body.backup,
            "schema_version": restored.schema_version,
            "replaced": restored.replaced,
        }),
    ))
}

/// The `tenant.backup` job. In a tenant: a backup of it. Central: `{"all": true}` enqueues
/// one such job per active tenant (with the payload's retention), `{"catalog": true}` backs up
/// the catalog (both may be given). Then, if the
/// payload has any of `keep`, `daily`, `weekly`, the retention (see `backup::prunable`) is
/// applied to each directory backed up.
pub(super) fn backup_job(app: &App, run: &JobRun) -> Result<(), JobFailure> {
    let p = &run.payload;
    let policy: Retention = serde_json::from_value(p.clone())
        .map_err(|e| JobFailure::Fatal(format!("keep, daily and weekly are counts: {e}")))?;
    let data = app.catalog.data_dir();
    let now = unix_now();
    let one = |record: &TenantRecord| -> Result<(), BackupError> {
        backup::backup_tenant(data, record, None, now)?;
        backup::prune(data, &record.id, policy, now)?;
        Ok(())
    };
    if let Some(tenant) = &run.tenant {
        return one(tenant.record()).map_err(|e| JobFailure::Retry(e.to_string()));
    }
    let all = p.get("all").and_then(Value::as_bool) == Some(true);
    let catalog = p.get("catalog").and_then(Value::as_bool) == Some(true);
    if !all && !catalog {
        return Err(JobFailure::Fatal(
            "a central tenant.backup job needs {\"all\": true} or {\"catalog\": true}".into(),
        ));
    }
    let mut failed = Vec::new();
    if all {
        // One job per tenant rather than the fleet in this one: each has its own timeout,
        // attempts and retention, and goes through the tenant's pool as any tenant job does.
        // Tenants kept on sqld are left to sqld's own copies: this takes local files.
        let records: Vec<_> = backup::active_tenants(&app.catalog)
            .map_err(|e| JobFailure::Retry(e.to_string()))?
            .into_iter()
            .filter(|r| r.store == crate::catalog::TenantStore::Local)
            .collect();
        let retention: serde_json::Map<String, Value> = ["keep", "daily", "weekly"]
            .into_iter()
            .filter_map(|k| p.get(k).map(|v| (k.to_string(), v.clone())))
            .collect();
        for record in &records {
            let mut job = NewJob::new(
                Some(record.id.clone()),
                "default",
                KIND,
                Value::Object(retention.clone()),
            );
            job.unique_key = Some(format!("{KIND}:{}", record.id));
            if let Err(e) = app.enqueue(job) {
                log::error!("enqueueing the backup of tenant {}: {e}", record.slug);
                failed.push(format!("{}: {e}", record.slug));
            }
        }
    }
    if catalog && app.catalog.is_shared() {
        log::warn!("the catalog is kept on sqld: its backups are sqld's, not tenantd's");
    } else if catalog {
        let done = backup::backup_catalog(data, None, now)
            .and_then(|_| backup::prune(data, CENTRAL, policy, now));
        if let Err(e) = done {
            failed.push(format!("the catalog: {e}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        // Not retried: the others are done, and a retry would back them up again. The next
        // run of the schedule tries again.
        Err(JobFailure::Fatal(failed.join("; ")))
    }
}
