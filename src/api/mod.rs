//! The API: the route table here, one file per resource beside it. The request pipeline is in
//! `pipeline`, `App` and its construction in `app`, the configuration in `config`, the session
//! cookie and CSRF in `cookies`, the JSON body in `body`, path parameters in `params`, TOTP step
//! state in `totp`, audit entries in `audit`.

mod account;
mod admin;
mod app;
mod audit;
mod backups;
mod billing;
mod body;
pub mod broadcasting;
mod config;
mod cookies;
mod export;
mod files;
mod invitations;
pub mod job_kinds;
pub mod jobs;
mod maintenance;
mod members;
mod memo;
pub mod metrics;
mod pages;
mod params;
mod pipeline;
mod plans;
pub mod rate_limit;
mod settings;
mod tenant;
mod totp;
mod webhook_endpoints;
pub mod webhook_verify;
mod webhooks_guard;
mod webhooks_in;
pub mod webhooks_out;
mod workspace;

use crate::auth::principal::Principal;
use crate::error::Error;
use crate::http::{Response, Router};

pub use app::{App, FirstAdmin, OpenError, FIRST_ADMIN_EMAIL};
use body::json_body;
pub use config::{AppConfig, JobsConfig, RealtimeConfig, SessionConfig, WebhooksConfig};
use cookies::check_csrf;
pub use jobs::{Enqueued, NewJob};
use params::{id_param, tenant_by_key};
pub use pipeline::{Account, Member, RequestCtx, SignedInAdmin};

type PublicFn = fn(&App, &RequestCtx) -> Result<Response, Error>;
type AccountFn = fn(&App, &RequestCtx, &Account) -> Result<Response, Error>;
type AdminFn = fn(&App, &RequestCtx, &SignedInAdmin) -> Result<Response, Error>;
type TenantFn = fn(&App, &RequestCtx, &Member<'_>) -> Result<Response, Error>;
type AnyPrincipalFn = fn(&App, &RequestCtx, &Principal) -> Result<Response, Error>;

/// What a route needs before its handler runs. The handler's signature says what it may touch:
/// only tenant routes receive a [`Tenant`](crate::tenancy::Tenant), and only with a membership.
#[derive(Clone, Copy)]
enum Route {
    /// No credentials needed (health, login).
    Public(PublicFn),
    /// Any signed-in principal (logout).
    Signed(AnyPrincipalFn),
    /// A signed-in user, on any host.
    Account(AccountFn),
    /// A system admin, on the central host only.
    Admin(AdminFn),
    /// A member of the identified, active tenant; its pool opened (and migrated) on demand.
    Tenant(TenantFn),
    /// A tenant route whose answer is a function of the tenant's file, the URL and the reader
    /// (user id and permissions) alone: no catalog data in it, nothing written. Its answers are
    /// kept while the file is unchanged (see `tenancy::reads`).
    TenantRead(TenantFn),
}

fn routes() -> Router<Route> {
    let mut r = Router::new();
    r.add("GET", "/healthz", Route::Public(healthz));
    r.add("GET", "/api/tenant", Route::TenantRead(tenant::show));
    account::routes(&mut r);
    members::routes(&mut r);
    invitations::routes(&mut r);
    workspace::routes(&mut r);
    files::routes(&mut r);
    webhook_endpoints::routes(&mut r);
    broadcasting::routes(&mut r);
    admin::routes(&mut r);
    maintenance::routes(&mut r);
    backups::routes(&mut r);
    jobs::routes(&mut r);
    webhooks_in::routes(&mut r);
    billing::routes(&mut r);
    export::routes(&mut r);
    settings::routes(&mut r);
    plans::routes(&mut r);
    r
}

fn healthz(_app: &App, _ctx: &RequestCtx) -> Result<Response, Error> {
    Ok(Response::json(200, &serde_json::json!({"status": "ok"})))
}
