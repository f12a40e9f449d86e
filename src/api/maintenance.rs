//! Maintenance mode at the door: while a tenant (or the whole server) is down, its requests
//! answer `503 maintenance` with `Retry-After` (a page for a browser), except from the allowed
//! addresses and with the bypass cookie that visiting the secret URL sets. The central host
//! (admin API, portal) is never held: the operator brings things back up from there. Also the
//! admin API's `down` and `up`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use crate::auth::principal::cookie_value;
use crate::catalog::{
    ActorType, CatalogError, DownRequest, Maintenance, Snapshot, TenantRecord, MAINTENANCE_SERVER,
};
use crate::error::Error;
use crate::http::{Request, Response, Router};
use crate::tenancy::identify::Identified;

use super::{json_body, pages, App, RequestCtx, Route, SignedInAdmin};

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("POST", "/api/admin/down", Route::Admin(server_down));
    r.add("POST", "/api/admin/up", Route::Admin(server_up));
    r.add(
        "POST",
        "/api/admin/tenants/{tenant}/down",
        Route::Admin(tenant_down),
    );
    r.add(
        "POST",
        "/api/admin/tenants/{tenant}/up",
        Route::Admin(tenant_up),
    );
}

/// The bypass cookie of one scope: named per scope, so two tenants under one host (by path)
/// and the server's own never overwrite each other.
fn cookie_name(scope: &str) -> String {
    if scope == MAINTENANCE_SERVER {
        "tenantd_bypass_server".into()
    } else {
        format!("tenantd_bypass_{scope}")
    }
}

/// The maintenance rows that hold a tenant's requests: the server's and its own.
fn holding<'s>(
    snapshot: &'s Snapshot,
    tenant_id: &str,
) -> impl Iterator<Item = &'s Arc<Maintenance>> {
    [
        snapshot.maintenance(MAINTENANCE_SERVER),
        snapshot.maintenance(tenant_id),
    ]
    .into_iter()
    .flatten()
}

/// Whether this request may pass `m`: from an allowed address (the client address as the
/// HTTP layer computed it, trusted proxies considered) or with the bypass cookie.
fn passes(m: &Maintenance, req: &Request) -> bool {
    m.allow_ips.contains(&req.client_ip)
        || cookie_value(req.header("cookie"), &cookie_name(&m.scope))
            .is_some_and(|v| m.cookie_matches(v))
}

/// The refusal for a request to `tenant_id` while it or the server is down, if it does not pass.
pub(super) fn refusal(snapshot: &Snapshot, tenant_id: &str, req: &Request) -> Option<Error> {
    holding(snapshot, tenant_id)
        .find(|m| !passes(m, req))
        .map(|m| Error::Maintenance {
            retry_after: m.retry_after,
        })
}

/// Whether a tenant's jobs and real-time wait (no request to bypass with).
pub(crate) fn is_down(snapshot: &Snapshot, tenant_id: &str) -> bool {
    holding(snapshot, tenant_id).next().is_some()
}

/// The answer for an identified request held by maintenance, or `None` to go on.
pub(super) fn gate(
    app: &App,
    req: &Request,
    snapshot: &Snapshot,
    identified: &Identified,
) -> Option<Response> {
    let (record, _) = identified.tenant.as_ref()?;
    let path = identified.path;
    // The secret URL: one segment, GET only. Sets the cookie and goes home.
    if req.method == "GET" {
        if let Some(secret) = path.strip_prefix('/').filter(|s| !s.contains('/')) {
            if let Some(m) = holding(snapshot, &record.id).find(|m| m.secret_matches(secret)) {
                return Some(bypass_redirect(req, path, m));
            }
        }
    }
    let Error::Maintenance { retry_after } = refusal(snapshot, &record.id, req)? else {
        unreachable!("refusal only says maintenance")
    };
    if pages::wanted(app, req, path) {
        return Some(pages::maintenance(app, req, identified, retry_after));
    }
    Some(Error::Maintenance { retry_after }.into_response())
}

fn bypass_redirect(req: &Request, path: &str, m: &Maintenance) -> Response {
    // Home on the same tenant: under its `/t/{slug}` prefix when the request had one.
    let base = req.path.strip_suffix(path).unwrap_or_default();
    let value = m.bypass.as_deref().unwrap_or_default();
    let cookie = format!(
        "{}={value}; HttpOnly; SameSite=Lax; Path=/",
        cookie_name(&m.scope)
    );
    Response::new(303, "text/plain; charset=utf-8", Vec::new())
        .with_header("Location", format!("{base}/"))
        .with_header("Set-Cookie", cookie)
        .with_header("Cache-Control", "no-store")
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DownBody {
    retry_after: Option<i64>,
    #[serde(default)]
    allow_ips: Vec<String>,
    secret: Option<String>,
}

fn down_request(body: &DownBody) -> DownRequest<'_> {
    DownRequest {
        retry_after: body.retry_after,
        allow_ips: &body.allow_ips,
        secret: body.secret.as_deref(),
    }
}

fn entry(
    app: &App,
    ctx: &RequestCtx,
    signed_in: &SignedInAdmin,
    action: &str,
    tenant: Option<&TenantRecord>,
    details: serde_json::Value,
) {
    let mut entry = app.audit_entry(ctx, ActorType::Admin, action);
    entry.actor_id = Some(signed_in.admin.id);
    entry.actor_email = Some(signed_in.admin.email.clone());
    if let Some(record) = tenant {
        entry.tenant_id = Some(record.id.clone());
        entry.target_type = Some("tenant".into());
        entry.target_id = Some(record.id.clone());
    }
    entry.details = details;
    app.audit(entry);
}

fn tenant_of(app: &App, ctx: &RequestCtx) -> Result<Arc<TenantRecord>, Error> {
    super::tenant_by_key(&app.catalog, ctx.params.get("tenant").unwrap_or_default())?
        .ok_or(Error::TenantNotFound)
}

fn down(
    app: &App,
    ctx: &RequestCtx,
    signed_in: &SignedInAdmin,
    tenant: Option<&TenantRecord>,
) -> Result<Response, Error> {
    // No body: down with no options, as `tenantd down` with none.
    let body: DownBody = if ctx.req.body.is_empty() {
        DownBody::default()
    } else {
        json_body(ctx.req)?
    };
    let scope = tenant.map_or(MAINTENANCE_SERVER, |t| t.id.as_str());
    let m = app
        .catalog
        .maintenance_down(scope, &down_request(&body))
        .map_err(|e| match e {
            CatalogError::Validation(v) => Error::validation(v.field, v.message),
            e => e.into(),
        })?;
    let shown = json!({
        "maintenance": m,
        "secret": m.bypass.is_some(),
    });
    entry(
        app,
        ctx,
        signed_in,
        "maintenance.down",
        tenant,
        shown.clone(),
    );
    Ok(Response::json(200, &shown))
}

fn up(
    app: &App,
    ctx: &RequestCtx,
    signed_in: &SignedInAdmin,
    tenant: Option<&TenantRecord>,
) -> Result<Response, Error> {
    let scope = tenant.map_or(MAINTENANCE_SERVER, |t| t.id.as_str());
    let was_down = app.catalog.maintenance_up(scope)?;
    let shown = json!({ "up": true, "was_down": was_down });
    entry(app, ctx, signed_in, "maintenance.up", tenant, shown.clone());
    Ok(Response::json(200, &shown))
}

fn tenant_down(app: &App, ctx: &RequestCtx, s: &SignedInAdmin) -> Result<Response, Error> {
    down(app, ctx, s, Some(&*tenant_of(app, ctx)?))
}

fn tenant_up(app: &App, ctx: &RequestCtx, s: &SignedInAdmin) -> Result<Response, Error> {
    up(app, ctx, s, Some(&*tenant_of(app, ctx)?))
}

fn server_down(app: &App, ctx: &RequestCtx, s: &SignedInAdmin) -> Result<Response, Error> {
    down(app, ctx, s, None)
}

fn server_up(app: &App, ctx: &RequestCtx, s: &SignedInAdmin) -> Result<Response, Error> {
    up(app, ctx, s, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secret URL's redirect is a `303`: its status line must say so, not leave it blank.
    #[test]
    fn the_bypass_redirect_is_a_named_see_other() {
        let m = Maintenance {
            scope: "t".into(),
            retry_after: None,
            allow_ips: vec![],
            bypass: Some("v".into()),
            since: String::new(),
        };
        let req = Request {
            method: "GET".into(),
            target: "/t/acme/s".into(),
            path: "/t/acme/s".into(),
            query: String::new(),
            version: crate::http::Version::Http11,
            headers: Vec::new(),
            body: Vec::new(),
            body_stream: None,
            peer: "127.0.0.1:1".parse().unwrap(),
            client_ip: "127.0.0.1".parse().unwrap(),
        };
        let reply = bypass_redirect(&req, "/s", &m);
        assert_eq!(reply.status, 303);
        assert_eq!(reply.header("location"), Some("/t/acme/"));
        assert_eq!(crate::http::reason(reply.status), "See Other");
    }
}
