//! `/api/admin/tenants`: the tenant lifecycle over HTTP, on the central host, for the holder of
//! the admin token. The same operations as `tenantd tenants ...` (both call `tenancy::lifecycle`).

use serde_json::Value;

use crate::error::Error;
use crate::http::{Params, Request, Response, Router};
use crate::tenancy::lifecycle::{self, NewTenant};

use super::{json_body, App, Route};

pub(super) fn routes(r: &mut Router<Route>) {
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
        "/api/admin/tenants/{tenant}/domains",
        Route::Admin(add_domain),
    );
    r.add(
        "DELETE",
        "/api/admin/tenants/{tenant}/domains/{domain}",
        Route::Admin(remove_domain),
    );
}

/// The slug of the tenant a path names, by id (a UUID) or by slug. Slugs never look like UUIDs,
/// so the two cannot be confused.
fn slug_of(app: &App, params: &Params) -> Result<String, Error> {
    let key = params.get("tenant").unwrap_or_default();
    let record = match uuid::Uuid::parse_str(key) {
        Ok(id) => app.catalog.by_id(&id.hyphenated().to_string())?,
        Err(_) => app.catalog.by_slug(key)?,
    };
    Ok(record.ok_or(Error::TenantNotFound)?.slug.clone())
}

/// A required string field of a JSON object.
fn text(body: &Value, field: &str) -> Result<String, Error> {
    match body.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Error::validation(field, "must be a string")),
        None => Err(Error::validation(field, "is required")),
    }
}

fn object(req: &Request) -> Result<Value, Error> {
    match json_body::<Value>(req)? {
        v @ Value::Object(_) => Ok(v),
        _ => Err(Error::InvalidJson("expected a JSON object".into())),
    }
}

fn list(app: &App, _req: &Request, _params: &Params) -> Result<Response, Error> {
    let tenants = lifecycle::list(&app.catalog)?;
    Ok(Response::json(
        200,
        &serde_json::json!({"tenants": tenants}),
    ))
}

fn create(app: &App, req: &Request, _params: &Params) -> Result<Response, Error> {
    let body = object(req)?;
    let domains = match body.get("domains") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|d| match d {
                Value::String(s) => Ok(s.clone()),
                _ => Err(Error::validation("domains", "must be a list of strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Error::validation("domains", "must be a list of strings")),
    };
    let new = NewTenant {
        slug: text(&body, "slug")?,
        name: text(&body, "name")?,
        domains,
    };
    let record = lifecycle::create(&app.catalog, &new)?;
    log::info!("tenant {} created ({})", record.slug, record.id);
    Ok(Response::json(201, &record))
}

fn show(app: &App, _req: &Request, params: &Params) -> Result<Response, Error> {
    let record = lifecycle::show(&app.catalog, &slug_of(app, params)?)?;
    Ok(Response::json(200, &record))
}

fn rename(app: &App, req: &Request, params: &Params) -> Result<Response, Error> {
    let slug = slug_of(app, params)?;
    let new_slug = text(&object(req)?, "slug")?;
    let record = lifecycle::rename(&app.catalog, &slug, &new_slug)?;
    log::info!("tenant {slug} renamed to {}", record.slug);
    Ok(Response::json(200, &record))
}

/// Runs one status change and answers the tenant as it now is.
fn transition(
    app: &App,
    params: &Params,
    what: &str,
    op: fn(
        &crate::catalog::Catalog,
        &str,
    ) -> Result<std::sync::Arc<crate::catalog::TenantRecord>, lifecycle::LifecycleError>,
) -> Result<Response, Error> {
    let slug = slug_of(app, params)?;
    let record = op(&app.catalog, &slug)?;
    log::info!("tenant {slug} {what}");
    Ok(Response::json(200, &record))
}

fn delete(app: &App, _req: &Request, params: &Params) -> Result<Response, Error> {
    transition(app, params, "deleted", lifecycle::delete)
}

fn suspend(app: &App, _req: &Request, params: &Params) -> Result<Response, Error> {
    transition(app, params, "suspended", lifecycle::suspend)
}

fn activate(app: &App, _req: &Request, params: &Params) -> Result<Response, Error> {
    transition(app, params, "activated", lifecycle::activate)
}

fn restore(app: &App, _req: &Request, params: &Params) -> Result<Response, Error> {
    transition(app, params, "restored", lifecycle::restore)
}

fn purge(app: &App, _req: &Request, params: &Params) -> Result<Response, Error> {
    let slug = slug_of(app, params)?;
    lifecycle::purge(&app.catalog, &app.registry, &slug)?;
    log::info!("tenant {slug} purged");
    Ok(Response::json(200, &serde_json::json!({"purged": slug})))
}

fn add_domain(app: &App, req: &Request, params: &Params) -> Result<Response, Error> {
    let slug = slug_of(app, params)?;
    let domain = text(&object(req)?, "domain")?;
    let record = lifecycle::add_domain(&app.catalog, &slug, &domain)?;
    Ok(Response::json(200, &record))
}

fn remove_domain(app: &App, _req: &Request, params: &Params) -> Result<Response, Error> {
    let slug = slug_of(app, params)?;
    let domain = params.get("domain").unwrap_or_default();
    let record = lifecycle::remove_domain(&app.catalog, &slug, domain)?;
    Ok(Response::json(200, &record))
}
