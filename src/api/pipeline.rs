//! The request pipeline: identify the tenant, authenticate, find the route, check what the
//! route needs (a tenant and a membership, a system admin, the central host, the CSRF header),
//! call the handler, through the tenant's answers cache for `TenantRead` routes. Also the
//! values a handler receives: the request (`RequestCtx`) and who makes it (`Member`, `Account`,
//! `SignedInAdmin`).

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use crate::assets;
use crate::auth::principal::{self, Principal, Via};
use crate::auth::token;
use crate::catalog::{CatalogView, Membership, Session, SystemAdmin, TenantRecord, User};
use crate::error::Error;
use crate::http::{self, Match, Params, Request, Response};
use crate::tenancy::identify::{self, Hints};
use crate::tenancy::{Lookup, Tenant};

use super::cookies::check_csrf;
use super::maintenance;
use super::memo::{Memo, RememberedMember};
use super::metrics::{self, Seen};
use super::pages;
use super::rate_limit;
use super::{healthz, App, Route, TenantFn};

/// One request as a handler sees it, whatever the route needs.
pub struct RequestCtx<'a> {
    pub req: &'a Request,
    pub params: &'a Params,
    /// The tenant the request named, if any (before any membership check).
    pub tenant: Option<Arc<TenantRecord>>,
}

/// A member of the request's tenant: what tenant routes receive. The membership is as the
/// catalog has it when the request begins, so a changed role counts at once. Borrowed from
/// the worker's memo or from this request's own lookups.
pub struct Member<'a> {
    pub tenant: Tenant,
    pub user: &'a User,
    pub session: &'a Session,
    pub membership: &'a Membership,
}

impl Member<'_> {
    /// Refuses unless the member's role grants `permission` (`admin` grants all).
    pub fn require(&self, permission: &str) -> Result<(), Error> {
        if self.membership.can(permission) {
            Ok(())
        } else {
            Err(Error::Forbidden(permission.to_string()))
        }
    }

    pub fn can(&self, permission: &str) -> bool {
        self.membership.can(permission)
    }
}

/// A signed-in user anywhere (their own account, their tokens).
pub struct Account {
    pub user: Arc<User>,
    pub session: Arc<Session>,
    pub via: Via,
}

/// A signed-in system admin, on the central host.
pub struct SignedInAdmin {
    pub admin: SystemAdmin,
    pub session: Arc<Session>,
}

impl App {
    fn dispatch<'s>(
        &'s self,
        fresh: &CatalogView,
        req: &Request,
        path: &str,
        tenant: Option<Arc<TenantRecord>>,
        memo: &mut Memo,
        seen: &mut Seen<'s>,
    ) -> Result<Response, Error> {
        let (route, params) = match self.router.find(&req.method, path) {
            Match::Found(route, params) => {
                seen.route = route.path();
                (route.handler, params)
            }
            Match::MethodNotAllowed(allow) => return Err(Error::MethodNotAllowed { allow }),
            Match::NotFound => return Err(Error::NotFound),
        };
        let ctx = RequestCtx {
            req,
            params: &params,
            tenant,
        };
        if let Route::Public(f) = route {
            return f(self, &ctx);
        }
        // A tenant host has no admin routes, whoever asks.
        if matches!(route, Route::Admin(_)) && ctx.tenant.is_some() {
            return Err(Error::CentralOnly);
        }
        let Some((token, via)) =
            principal::credentials(req.header("authorization"), req.header("cookie"))
        else {
            return Err(Error::Unauthorized);
        };
        // Our tokens are 64 hex characters; anything else cannot match and costs no lookup.
        if !token::well_formed(token) {
            return Err(Error::Unauthorized);
        }
        let digest = token::digest(token);
        let now = self.sessions.clock.now();
        // A tenant route's handler, and whether its answer may come from the answers cache.
        let tenant_route = match route {
            Route::Tenant(f) => Some((f, false)),
            Route::TenantRead(f) => Some((f, req.method == "GET")),
            _ => None,
        };
        // Let in before under the same catalog generation: only what time alone can end is
        // looked at again.
        if let (Some((f, cached)), Some(record)) = (tenant_route, &ctx.tenant) {
            if let Some(known) = memo.get(fresh.generation, &digest, &record.id) {
                if known.session.is_live(now) {
                    self.catalog.touch_session(&known.session, now)?;
                    check_csrf(req, via, &known.session)?;
                    return self.in_tenant(&ctx, path, known, f, cached);
                }
            }
        }
        let principal =
            principal::authenticate(fresh, &digest, via, now)?.ok_or(Error::Unauthorized)?;
        check_csrf(req, via, principal.session())?;
        match (route, principal) {
            (Route::Public(_), _) => unreachable!("answered above"),
            (Route::Signed(f), principal) => f(self, &ctx, &principal),
            (Route::Account(f), Principal::User { user, session, via }) => {
                f(self, &ctx, &Account { user, session, via })
            }
            (Route::Admin(f), Principal::Admin { admin, session, .. }) => {
                f(self, &ctx, &SignedInAdmin { admin, session })
            }
            (Route::Tenant(_) | Route::TenantRead(_), Principal::User { user, session, .. }) => {
                let known = self.membership(fresh, &ctx, user, session)?;
                let (f, cached) = tenant_route.expect("matched a tenant route");
                let response = self.in_tenant(&ctx, path, &known, f, cached);
                if let Some(record) = &ctx.tenant {
                    memo.keep(fresh.generation, digest, &record.id, known);
                }
                response
            }
            // A user on an admin route, an admin on a user or tenant route.
            (Route::Admin(_), _) => Err(Error::Refused("this needs a system admin")),
            (
                Route::Account(_) | Route::Tenant(_) | Route::TenantRead(_),
                Principal::Admin { .. },
            ) => Err(Error::Refused(
                "this needs a user account, not a system admin",
            )),
        }
    }

    /// The request's user as a member of its tenant, as the catalog has it now.
    fn membership(
        &self,
        fresh: &CatalogView,
        ctx: &RequestCtx,
        user: Arc<User>,
        session: Arc<Session>,
    ) -> Result<RememberedMember, Error> {
        let record = ctx.tenant.as_ref().ok_or(Error::NoTenant)?;
        // A token bound to one tenant (a personal token, an impersonation) is no key to
        // any other, whatever the user's memberships.
        if session.tenant_id.as_ref().is_some_and(|t| *t != record.id) {
            return Err(Error::NotAMember);
        }
        let membership = fresh
            .membership(user.id, &record.id)?
            .ok_or(Error::NotAMember)?;
        Ok(RememberedMember {
            user,
            session,
            membership,
            rates: fresh.plan_rates(&record.id)?,
        })
    }

    /// Runs a tenant route for a member: counts the request against the tenant's and the
    /// member's rates (its plan's, read with the member under this generation; a `429` past
    /// either), opens the tenant's pool, then calls the handler,
    /// through the answers cache if `cached`. Every answer carries the rate-limit headers.
    fn in_tenant(
        &self,
        ctx: &RequestCtx,
        path: &str,
        known: &RememberedMember,
        f: TenantFn,
        cached: bool,
    ) -> Result<Response, Error> {
        let record = ctx.tenant.as_ref().ok_or(Error::NoTenant)?;
        let verdict = self.rate_limit.check(
            self.rate_limit.rates_for(known.rates),
            &record.id,
            known.user.id,
            self.rate_limit.now_ms(&self.sessions.clock),
        );
        if !verdict.admitted {
            return Ok(rate_limit::refused(&verdict));
        }
        let answer = || {
            let member = Member {
                tenant: self.registry.open(Arc::clone(record))?,
                user: &known.user,
                session: &known.session,
                membership: &known.membership,
            };
            if cached {
                read_through(self, ctx, &member, path, f)
            } else {
                f(self, ctx, &member)
            }
        };
        let response = answer().unwrap_or_else(Error::into_response);
        Ok(rate_limit::with_headers(response, &verdict))
    }
}

impl http::Handler for App {
    fn body_limit(&self, req: &Request) -> Option<http::BodyLimit> {
        // Runs on the reactor thread: a path-only look, no catalog lookup.
        let (_, path) = identify::strip_path_prefix(&req.path);
        match self.router.find(&req.method, path) {
            Match::Found(route, _) => route.body_limit,
            _ => None,
        }
    }

    fn worker_state(&self) -> Box<dyn Any + Send> {
        Box::new(Memo::<RememberedMember>::default())
    }

    fn handle(&self, req: &Request, state: &mut dyn Any) -> Response {
        let started = Instant::now();
        let mut seen = Seen::default();
        let response = self.answer(req, state, &mut seen);
        self.observe(req, &seen, started, &response);
        response
    }
}

impl App {
    fn answer<'s>(&'s self, req: &Request, state: &mut dyn Any, seen: &mut Seen<'s>) -> Response {
        // Health checks answer whatever the catalog's state. Other methods go the usual way,
        // to 405 with `Allow`.
        if matches!(req.method.as_str(), "GET" | "HEAD") {
            match req.path.as_str() {
                "/readyz" => {
                    seen.route = "/readyz";
                    // A tenant's host is the company's public face: it says nothing of the
                    // server's state, like any other central route.
                    let host = req.header("host").map(crate::catalog::normalize_host);
                    if !identify::is_central(&self.identify, host.as_deref().unwrap_or_default()) {
                        return Error::NotFound.into_response();
                    }
                    return metrics::readyz(self);
                }
                "/metrics" => {
                    seen.route = "/metrics";
                    return metrics::main_address(self, req);
                }
                _ => {}
            }
        }
        if req.path == "/healthz" && matches!(req.method.as_str(), "GET" | "HEAD") {
            seen.route = "/healthz";
            return healthz(
                self,
                &RequestCtx {
                    req,
                    params: &Params::default(),
                    tenant: None,
                },
            )
            .unwrap_or_else(Error::into_response);
        }
        // Before identification: a page on an unknown or suspended tenant's host needs its
        // script and style too.
        if req.path.starts_with(assets::PREFIX) && matches!(req.method.as_str(), "GET" | "HEAD") {
            seen.route = "/assets/*";
            return assets::serve(req).unwrap_or_else(|| Error::NotFound.into_response());
        }
        // A proxy that adds its own X-Tenant-* header behind the client's must not lose to it.
        let (mut ids, mut slugs) = (0, 0);
        for h in &req.headers {
            let name = h.name.as_bytes();
            if name.len() > 9 && name[..9].eq_ignore_ascii_case(b"x-tenant-") {
                if name[9..].eq_ignore_ascii_case(b"id") {
                    ids += 1;
                } else if name[9..].eq_ignore_ascii_case(b"slug") {
                    slugs += 1;
                }
            }
        }
        if ids > 1 || slugs > 1 {
            return Error::TenantConflict.into_response();
        }
        // Only a tenant's route (or a page) takes the default tenant: a path-only look, as
        // body_limit does.
        let central_route = self.identify.default_tenant.is_some() && {
            let (_, path) = identify::strip_path_prefix(&req.path);
            match self.router.find(&req.method, path) {
                Match::Found(route, _) => {
                    !matches!(route.handler, Route::Tenant(_) | Route::TenantRead(_))
                }
                _ => false,
            }
        };
        let hints = Hints {
            path: &req.path,
            tenant_id: req.header("x-tenant-id"),
            tenant_slug: req.header("x-tenant-slug"),
            host: req.header("host"),
            central_route,
        };
        // One look at whether the catalog changed, for the whole request.
        let fresh = match self.catalog.view() {
            Ok(fresh) => fresh,
            Err(e) => return Error::from(e).into_response(),
        };
        let identified = match identify::identify(&fresh.snapshot, &self.identify, hints) {
            Ok(identified) => identified,
            Err(e) => {
                return pages::unidentified(self, req, e)
                    .unwrap_or_else(|e| Error::from(e).into_response())
            }
        };
        seen.tenant = identified
            .tenant
            .as_ref()
            .map(|(record, _)| Arc::clone(record));
        if let Some(held) = maintenance::gate(self, req, &fresh.snapshot, &identified) {
            seen.route = "(maintenance)";
            return held;
        }
        if pages::wanted(self, req, identified.path) {
            seen.route = "(page)";
            return pages::page(self, req, &identified);
        }
        let tenant = identified.tenant.map(|(record, _)| record);
        // Only for the access log: not made when it is off.
        let note = tenant
            .as_ref()
            .filter(|_| log::log_enabled!(target: http::ACCESS_LOG, log::Level::Info))
            .map(|t| ["tenant=", t.slug.as_str()].concat());
        // Our worker always passes the state it had us make; anything else gets a memo for
        // this one request.
        let mut own = None;
        let memo = match state.downcast_mut::<Memo<RememberedMember>>() {
            Some(memo) => memo,
            None => own.insert(Memo::default()),
        };
        let mut response = self
            .dispatch(&fresh, req, identified.path, tenant, memo, seen)
            .unwrap_or_else(Error::into_response);
        response.log_note = note;
        if response.header("cache-control").is_none() {
            // Answers are per user, and some carry a token, a password or a secret (logins,
            // token creation, new members, TOTP enrolment, channel signatures): no cache may
            // keep any of them, whichever handler forgets to say so.
            response = response.with_header("Cache-Control", "no-store");
        }
        response
    }
}

/// Says how a `TenantRead` answer was made, in the shape of RFC 9211: `tenantd; hit` (kept),
/// `tenantd; fwd=miss` (read from the file), `tenantd; fwd=request` (the client asked for that).
const CACHE_STATUS: &str = "Cache-Status";

/// Answers a `TenantRead` route from the tenant's answers cache, or computes and keeps it.
/// Only whole `200` JSON answers are kept; errors are computed every time.
/// `Cache-Control: no-cache` on the request skips the kept answer.
fn read_through(
    app: &App,
    ctx: &RequestCtx,
    member: &Member,
    path: &str,
    f: TenantFn,
) -> Result<Response, Error> {
    // Everything the answer depends on besides the file: the reader, then the URL. Each part
    // ends where the next begins: the id at its newline, the scope at its second (permission
    // names hold none), the decoded path (which may hold a '?' or a newline) after its length.
    let scope = member.membership.scope();
    let mut key = String::with_capacity(48 + scope.len() + path.len() + ctx.req.query.len());
    key.push_str(itoa::Buffer::new().format(member.user.id));
    key.push('\n');
    key.push_str(scope);
    key.push('\n');
    key.push_str(itoa::Buffer::new().format(path.len()));
    key.push(':');
    key.push_str(path);
    key.push('?');
    key.push_str(&ctx.req.query);
    // A client may insist on a fresh read (RFC 9111 5.2.1.4): it is kept for the next one.
    let fresh = ctx
        .req
        .header("cache-control")
        .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"));
    let ticket = match member.tenant.cached_read(key, fresh) {
        Lookup::Hit(body) => {
            app.metrics().read_cache(true);
            return Ok(Response::shared(200, "application/json", body)
                .with_header(CACHE_STATUS, "tenantd; hit"));
        }
        Lookup::Miss(ticket) => {
            app.metrics().read_cache(false);
            ticket
        }
    };
    let response = f(app, ctx, member)?;
    if response.status == 200 && response.header("content-type") == Some("application/json") {
        if let http::Body::Full(body) = &response.body {
            member.tenant.keep_read(ticket, body);
        }
    }
    let how = if fresh {
        "tenantd; fwd=request"
    } else {
        "tenantd; fwd=miss"
    };
    Ok(response.with_header(CACHE_STATUS, how))
}
