//! The route table and the request pipeline: identify the tenant, authenticate, find the route,
//! check what the route needs (a tenant and a membership, a system admin, the central host, the
//! CSRF header), call the handler. One file per resource.

mod account;
mod admin;
pub mod broadcasting;
mod invitations;
mod members;
mod memo;
mod tenant;
mod workspace;

use std::any::Any;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::device::DeviceKey;
use crate::auth::hasher::{Hasher, HasherConfig};
use crate::auth::principal::{self, Principal, Via};
use crate::auth::throttle::{Throttle, ThrottleConfig};
use crate::auth::{password, token};
use crate::catalog::{
    ActorType, AuditEntry, Catalog, CatalogError, Fresh, IdentityError, Membership, Session,
    SystemAdmin, TenantRecord, User,
};
use crate::db::Create;
use crate::error::Error;
use crate::http::{self, Match, Params, Request, Response, Router};
use crate::realtime::{Credentials, Hub, HubConfig};
use crate::tenancy::identify::{self, Hints, IdentifyConfig};
use crate::tenancy::{Lookup, Registry, RegistryConfig, Tenant};

use memo::{Known, Memo};

/// One request as a handler sees it, whatever the route needs.
pub struct Call<'a> {
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
pub struct Operator {
    pub admin: SystemAdmin,
    pub session: Arc<Session>,
}

type PublicFn = fn(&App, &Call) -> Result<Response, Error>;
type AccountFn = fn(&App, &Call, &Account) -> Result<Response, Error>;
type AdminFn = fn(&App, &Call, &Operator) -> Result<Response, Error>;
type TenantFn = fn(&App, &Call, &Member<'_>) -> Result<Response, Error>;
type AnyPrincipalFn = fn(&App, &Call, &Principal) -> Result<Response, Error>;

/// What a route needs before its handler runs. The handler's signature says what it may touch:
/// only tenant routes receive a [`Tenant`], and only with a membership.
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

/// Session lifetimes and cookie flags.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle_secs: i64,
    /// A session ends this long after login, used or not.
    pub lifetime_secs: i64,
    /// Mark the cookie `Secure` (the server is reached over HTTPS).
    pub secure_cookie: bool,
    /// What sessions' expiry and idle time are judged by.
    pub clock: crate::auth::clock::Clock,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_secs: 12 * 3600,
            lifetime_secs: 7 * 24 * 3600,
            secure_cookie: false,
            clock: Default::default(),
        }
    }
}

/// The real-time channels' settings that are not credentials.
#[derive(Clone, Debug)]
pub struct RealtimeConfig {
    /// Browser origins allowed besides the server's own hosts (exact, e.g.
    /// `https://app.example.com`).
    pub allowed_origins: Vec<String>,
    pub activity_timeout: std::time::Duration,
    pub pong_timeout: std::time::Duration,
    /// A WebSocket with no subscription this long is closed (4202).
    pub subscribe_timeout: std::time::Duration,
    /// WebSockets open at most, and per client address.
    pub max_websockets: usize,
    pub max_websockets_per_client: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            allowed_origins: Vec::new(),
            activity_timeout: std::time::Duration::from_secs(120),
            pong_timeout: std::time::Duration::from_secs(30),
            subscribe_timeout: std::time::Duration::from_secs(30),
            max_websockets: 512,
            max_websockets_per_client: 64,
        }
    }
}

/// Configuration of the application behind the HTTP layer.
#[derive(Clone, Debug, Default)]
pub struct AppConfig {
    pub data_dir: PathBuf,
    pub identify: IdentifyConfig,
    pub registry: RegistryConfig,
    pub sessions: SessionConfig,
    pub hasher: HasherConfig,
    pub throttle: ThrottleConfig,
    pub realtime: RealtimeConfig,
}

/// The key that signs device cookies, made on the first run and kept in the catalog: known
/// devices stay known across restarts.
fn device_key(catalog: &Catalog) -> Result<DeviceKey, CatalogError> {
    const NAME: &str = "device_cookie_key";
    if let Some(key) = catalog
        .meta_get(NAME)?
        .as_deref()
        .and_then(DeviceKey::from_hex)
    {
        return Ok(key);
    }
    let key = DeviceKey::generate();
    catalog.meta_set(NAME, &key.to_hex())?;
    Ok(key)
}

/// The first system admin, made on a first run: shown once.
pub struct FirstAdmin {
    pub email: String,
    pub password: String,
}

/// Why [`App::open`] failed: the catalog, the first system admin, or the real-time hub.
#[derive(Debug)]
pub enum OpenError {
    Catalog(CatalogError),
    /// Reading or creating the first system admin.
    FirstAdmin(IdentityError),
    /// Hashing the first system admin's password.
    Hash(password::PasswordError),
    /// The real-time hub's thread did not start.
    Hub(std::io::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Catalog(e) => e.fmt(f),
            OpenError::FirstAdmin(e) => write!(f, "cannot create the first system admin: {e}"),
            OpenError::Hash(e) => write!(f, "cannot create the first system admin: {e}"),
            OpenError::Hub(e) => write!(f, "cannot start the real-time hub: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Catalog(e) => Some(e),
            OpenError::FirstAdmin(e) => Some(e),
            OpenError::Hash(e) => Some(e),
            OpenError::Hub(e) => Some(e),
        }
    }
}

impl From<CatalogError> for OpenError {
    fn from(e: CatalogError) -> Self {
        OpenError::Catalog(e)
    }
}

/// Everything a handler may reach, shared by every worker thread.
pub struct App {
    pub catalog: Catalog,
    pub registry: Registry,
    pub hasher: Hasher,
    pub throttle: Throttle,
    device_key: DeviceKey,
    pub sessions: SessionConfig,
    pub hub: Hub,
    realtime: RealtimeConfig,
    credentials: Credentials,
    identify: IdentifyConfig,
    router: Router<Route>,
    /// Per system admin, the last TOTP step a code was accepted for: a code is good once.
    /// In memory, so a restart forgets it; a code stays valid for 90 s at most.
    totp_steps: Mutex<HashMap<i64, u64>>,
}

pub const FIRST_ADMIN_EMAIL: &str = "admin@localhost";

impl App {
    /// Opens (or creates) the catalog under the data directory. With no system admin yet, it makes
    /// `admin@localhost` with a random password and returns it so the caller can show it once.
    pub fn open(config: AppConfig) -> Result<(App, Option<FirstAdmin>), OpenError> {
        let catalog = Catalog::open(&config.data_dir, Create::IfMissing)?;
        let first = first_admin(&catalog)?;
        let credentials = Credentials::load_or_create(&catalog)?;
        let device_key = device_key(&catalog)?;
        let mut hub_config = HubConfig::new(
            credentials.app_id.clone(),
            credentials.key.clone(),
            credentials.secret.clone(),
        );
        hub_config.activity_timeout = config.realtime.activity_timeout;
        hub_config.pong_timeout = config.realtime.pong_timeout;
        hub_config.subscribe_timeout = config.realtime.subscribe_timeout;
        hub_config.max_connections = config.realtime.max_websockets;
        hub_config.max_per_client = config.realtime.max_websockets_per_client;
        hub_config.reserved_public = broadcasting::reserved_public_name;
        // Origins are checked by the API (which knows the tenants' domains) before upgrading.
        hub_config.allowed_origins = None;
        // Every private or presence subscription goes through /broadcasting/auth, which records
        // it: a replayed signature (after a revocation, say) finds no grant and is refused.
        hub_config.require_recorded_grant = true;
        let hub = Hub::start(hub_config).map_err(OpenError::Hub)?;
        let app = App {
            registry: Registry::new(&config.data_dir, config.registry.clone()),
            catalog,
            hasher: Hasher::new(config.hasher.clone()),
            throttle: Throttle::new(config.throttle.clone()),
            device_key,
            sessions: config.sessions.clone(),
            hub,
            realtime: config.realtime.clone(),
            credentials,
            identify: config.identify,
            router: routes(),
            totp_steps: Mutex::new(HashMap::new()),
        };
        Ok((app, first))
    }

    /// The Pusher app id, key and secret of the real-time channels.
    pub fn realtime_credentials(&self) -> (String, String, String) {
        let c = &self.credentials;
        (c.app_id.clone(), c.key.clone(), c.secret.clone())
    }

    /// Whether a browser page from `origin` may open a WebSocket: the server's own hosts (the
    /// base domain and its subdomains, central hosts, a tenant's domain, loopback) and the
    /// configured extra origins.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        if self.realtime.allowed_origins.iter().any(|o| o == origin) {
            return true;
        }
        let Some(host) = origin
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
        else {
            return false;
        };
        let host = crate::catalog::normalize_host(host);
        let base = &self.identify.base_domain;
        host == *base
            || host.ends_with(&format!(".{base}"))
            || host == "localhost"
            || host.parse::<std::net::IpAddr>().is_ok()
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| h.parse::<std::net::IpAddr>().is_ok())
            || self.identify.central_hosts.iter().any(|h| *h == host)
            || self.catalog.by_domain(&host).ok().flatten().is_some()
    }

    /// Every route as (method, pattern, needs a tenant): for listings and the cross-tenant tests.
    pub fn route_table(&self) -> Vec<(String, String, bool)> {
        self.router
            .routes()
            .map(|r| {
                let tenant = matches!(r.handler, Route::Tenant(_) | Route::TenantRead(_));
                (r.method().to_string(), r.path().to_string(), tenant)
            })
            .collect()
    }

    fn dispatch(
        &self,
        fresh: &Fresh,
        req: &Request,
        path: &str,
        tenant: Option<Arc<TenantRecord>>,
        memo: &mut Memo,
    ) -> Result<Response, Error> {
        let (route, params) = match self.router.find(&req.method, path) {
            Match::Found(route, params) => (route.handler, params),
            Match::MethodNotAllowed(allow) => return Err(Error::MethodNotAllowed { allow }),
            Match::NotFound => return Err(Error::NotFound),
        };
        let call = Call {
            req,
            params: &params,
            tenant,
        };
        if let Route::Public(f) = route {
            return f(self, &call);
        }
        // A tenant host has no admin routes, whoever asks.
        if matches!(route, Route::Admin(_)) && call.tenant.is_some() {
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
        if let (Some((f, cached)), Some(record)) = (tenant_route, &call.tenant) {
            if let Some(known) = memo.get(fresh.generation, &digest, &record.id) {
                if known.session.is_live(now) {
                    self.catalog.touch_session(&known.session, now)?;
                    check_csrf(req, via, &known.session)?;
                    return self.in_tenant(&call, path, known, f, cached);
                }
            }
        }
        let principal =
            principal::authenticate(fresh, &digest, via, now)?.ok_or(Error::Unauthorized)?;
        check_csrf(req, via, principal.session())?;
        match (route, principal) {
            (Route::Public(_), _) => unreachable!("answered above"),
            (Route::Signed(f), principal) => f(self, &call, &principal),
            (Route::Account(f), Principal::User { user, session, via }) => {
                f(self, &call, &Account { user, session, via })
            }
            (Route::Admin(f), Principal::Admin { admin, session, .. }) => {
                f(self, &call, &Operator { admin, session })
            }
            (Route::Tenant(_) | Route::TenantRead(_), Principal::User { user, session, .. }) => {
                let known = self.membership(fresh, &call, user, session)?;
                let (f, cached) = tenant_route.expect("matched a tenant route");
                let response = self.in_tenant(&call, path, &known, f, cached);
                if let Some(record) = &call.tenant {
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
        fresh: &Fresh,
        call: &Call,
        user: Arc<User>,
        session: Arc<Session>,
    ) -> Result<Known, Error> {
        let record = call.tenant.as_ref().ok_or(Error::NoTenant)?;
        // A token bound to one tenant (a personal token, an impersonation) is no key to
        // any other, whatever the user's memberships.
        if session.tenant_id.as_ref().is_some_and(|t| *t != record.id) {
            return Err(Error::NotAMember);
        }
        let membership = fresh
            .membership(user.id, &record.id)?
            .ok_or(Error::NotAMember)?;
        Ok(Known {
            user,
            session,
            membership,
        })
    }

    /// Runs a tenant route for a member: opens the tenant's pool, then calls the handler,
    /// through the answers cache if `cached`.
    fn in_tenant(
        &self,
        call: &Call,
        path: &str,
        known: &Known,
        f: TenantFn,
        cached: bool,
    ) -> Result<Response, Error> {
        let record = call.tenant.clone().ok_or(Error::NoTenant)?;
        let member = Member {
            tenant: self.registry.open(record)?,
            user: &known.user,
            session: &known.session,
            membership: &known.membership,
        };
        if cached {
            read_through(self, call, &member, path, f)
        } else {
            f(self, call, &member)
        }
    }

    /// Records an audit entry; a failure to record is logged, never fatal to the request.
    pub fn audit(&self, entry: AuditEntry) {
        if let Err(e) = self.catalog.record_audit(&entry) {
            log::error!("audit entry {} not recorded: {e}", entry.action);
        }
    }

    /// An audit entry with the request's client address and user agent filled in.
    pub fn entry(&self, call: &Call, actor: ActorType, action: &str) -> AuditEntry {
        let mut e = AuditEntry::new(actor, action);
        e.ip = Some(call.req.client_ip.to_string());
        e.user_agent = call.req.header("user-agent").map(String::from);
        e.tenant_id = call.tenant.as_ref().map(|t| t.id.clone());
        e
    }

    /// Starts a session: stores the token's digest, and answers the token once with a cookie.
    /// `new` makes the session of the given kind from the browser's part.
    pub fn start_session(
        &self,
        new: impl FnOnce(crate::catalog::Browser) -> crate::catalog::NewSession,
        body: Value,
    ) -> Result<Response, Error> {
        let token = token::generate();
        let csrf = token::generate();
        let now = self.sessions.clock.now();
        let expires_at = now + self.sessions.lifetime_secs;
        let new = new(crate::catalog::Browser {
            token_hash: token::digest(&token).to_string(),
            csrf_token: Some(csrf.clone()),
            expires_at,
            idle_timeout_secs: Some(self.sessions.idle_secs),
        });
        self.catalog.create_session(&new, now)?;
        let mut body = body;
        body["token"] = Value::String(token.clone());
        body["csrf_token"] = Value::String(csrf);
        body["expires_at"] = Value::from(expires_at);
        let cookie = format!(
            "{}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{}",
            principal::COOKIE,
            self.sessions.lifetime_secs,
            if self.sessions.secure_cookie {
                "; Secure"
            } else {
                ""
            }
        );
        Ok(Response::json(200, &body).with_header("Set-Cookie", cookie))
    }

    /// Takes the TOTP step an admin's code matched; false when that step or a later one was
    /// taken already (a replayed code, RFC 6238 section 5.2).
    fn claim_totp_step(&self, admin_id: i64, step: u64) -> bool {
        let mut steps = self
            .totp_steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match steps.get(&admin_id) {
            Some(last) if *last >= step => false,
            _ => {
                steps.insert(admin_id, step);
                true
            }
        }
    }

    /// Forgets the steps taken with an admin's previous secret (a new enrolment).
    fn forget_totp_steps(&self, admin_id: i64) {
        self.totp_steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&admin_id);
    }

    /// Runs a password check on the hashing pool; a full pool is 429, not a stall.
    pub fn verify_password(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<crate::auth::hasher::Verified, Error> {
        self.hasher
            .verify(password.to_string(), stored.map(String::from))
            .map_err(|_| Error::TooManyRequests {
                retry_after_secs: 1,
            })
    }

    pub fn hash_password(&self, password: &str) -> Result<String, Error> {
        self.hasher.hash(password.to_string()).map_err(|e| match e {
            crate::auth::hasher::HashError::Busy => Error::TooManyRequests {
                retry_after_secs: 1,
            },
            other => Error::Internal(other.to_string()),
        })
    }
}

/// Creates the first system admin when there is none.
fn first_admin(catalog: &Catalog) -> Result<Option<FirstAdmin>, OpenError> {
    if catalog.admin_count().map_err(OpenError::FirstAdmin)? > 0 {
        return Ok(None);
    }
    let password = password::random();
    let hash = password::hash(&password).map_err(OpenError::Hash)?;
    catalog
        .create_admin(FIRST_ADMIN_EMAIL, &hash)
        .map_err(OpenError::FirstAdmin)?;
    Ok(Some(FirstAdmin {
        email: FIRST_ADMIN_EMAIL.into(),
        password,
    }))
}

/// A cookie-authenticated request that changes state must echo the session's CSRF token: a page on
/// another site can make the browser send the cookie, but cannot read the token.
fn check_csrf(req: &Request, via: Via, session: &Session) -> Result<(), Error> {
    let safe = matches!(req.method.as_str(), "GET" | "HEAD" | "OPTIONS");
    if safe || via == Via::Bearer {
        return Ok(());
    }
    let expected = session.csrf_token.as_deref().unwrap_or_default();
    let given = req.header("x-csrf-token").unwrap_or_default();
    if !expected.is_empty() && token::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        Ok(())
    } else {
        Err(Error::CsrfFailed)
    }
}

fn routes() -> Router<Route> {
    let mut r = Router::new();
    r.add("GET", "/healthz", Route::Public(healthz));
    r.add("GET", "/api/tenant", Route::TenantRead(tenant::show));
    account::routes(&mut r);
    members::routes(&mut r);
    invitations::routes(&mut r);
    workspace::routes(&mut r);
    broadcasting::routes(&mut r);
    admin::routes(&mut r);
    r
}

impl http::Handler for App {
    fn body_limit(&self, req: &Request) -> Option<usize> {
        // Runs on the reactor thread: a path-only look, no catalog lookup.
        let (_, path) = identify::strip_path_prefix(&req.path);
        match self.router.find(&req.method, path) {
            Match::Found(route, _) => route.body_limit,
            _ => None,
        }
    }

    fn worker_state(&self) -> Box<dyn Any + Send> {
        Box::new(Memo::<Known>::default())
    }

    fn handle(&self, req: &Request, state: &mut dyn Any) -> Response {
        // Health checks answer whatever the catalog's state. Other methods go the usual way,
        // to 405 with `Allow`.
        if req.path == "/healthz" && matches!(req.method.as_str(), "GET" | "HEAD") {
            return healthz(
                self,
                &Call {
                    req,
                    params: &Params::default(),
                    tenant: None,
                },
            )
            .unwrap_or_else(Error::into_response);
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
        let hints = Hints {
            path: &req.path,
            tenant_id: req.header("x-tenant-id"),
            tenant_slug: req.header("x-tenant-slug"),
            host: req.header("host"),
        };
        // One look at whether the catalog changed, for the whole request.
        let fresh = match self.catalog.fresh() {
            Ok(fresh) => fresh,
            Err(e) => return Error::from(e).into_response(),
        };
        let identified = match identify::identify(&fresh.snapshot, &self.identify, hints) {
            Ok(identified) => identified,
            Err(e) => return Error::from(e).into_response(),
        };
        let tenant = identified.tenant.map(|(record, _)| record);
        // Only for the access log: not made when it is off.
        let note = tenant
            .as_ref()
            .filter(|_| log::log_enabled!(target: http::ACCESS_LOG, log::Level::Info))
            .map(|t| ["tenant=", t.slug.as_str()].concat());
        // Our worker always passes the state it had us make; anything else gets a memo for
        // this one request.
        let mut own = None;
        let memo = match state.downcast_mut::<Memo<Known>>() {
            Some(memo) => memo,
            None => own.insert(Memo::default()),
        };
        let mut response = self
            .dispatch(&fresh, req, identified.path, tenant, memo)
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
    call: &Call,
    member: &Member,
    path: &str,
    f: TenantFn,
) -> Result<Response, Error> {
    // Everything the answer depends on besides the file: the reader, then the URL. Each part
    // ends where the next begins: the id at its newline, the scope at its second (permission
    // names hold none), the decoded path (which may hold a '?' or a newline) after its length.
    let scope = member.membership.scope();
    let mut key = String::with_capacity(48 + scope.len() + path.len() + call.req.query.len());
    key.push_str(itoa::Buffer::new().format(member.user.id));
    key.push('\n');
    key.push_str(scope);
    key.push('\n');
    key.push_str(itoa::Buffer::new().format(path.len()));
    key.push(':');
    key.push_str(path);
    key.push('?');
    key.push_str(&call.req.query);
    // A client may insist on a fresh read (RFC 9111 5.2.1.4): it is kept for the next one.
    let fresh = call
        .req
        .header("cache-control")
        .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"));
    let ticket = match member.tenant.cached_read(key, fresh) {
        Lookup::Hit(body) => {
            return Ok(Response::shared(200, "application/json", body)
                .with_header(CACHE_STATUS, "tenantd; hit"))
        }
        Lookup::Miss(ticket) => ticket,
    };
    let response = f(app, call, member)?;
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

fn healthz(_app: &App, _call: &Call) -> Result<Response, Error> {
    Ok(Response::json(200, &serde_json::json!({"status": "ok"})))
}

/// The request body as JSON of the expected shape. It must say it is JSON: a body sent
/// without `Content-Type` is refused like any other type, not guessed at. Malformed JSON, or
/// JSON that is not an object, is a 400; a missing or wrongly typed field is a 422 naming it.
fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, Error> {
    let Some(ct) = req.header("content-type") else {
        return Err(Error::UnsupportedMediaType(
            "send the body as Content-Type: application/json".into(),
        ));
    };
    if !is_json_media_type(ct) {
        return Err(Error::UnsupportedMediaType(format!(
            "expected Content-Type: application/json, got {ct}"
        )));
    }
    let body = match serde_json::from_slice::<Value>(&req.body) {
        Ok(body @ Value::Object(_)) => body,
        Ok(_) => return Err(Error::InvalidJson("expected a JSON object".into())),
        Err(e) => return Err(Error::InvalidJson(e.to_string())),
    };
    serde_path_to_error::deserialize(body).map_err(|e| {
        let top = e.path().iter().next().and_then(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
        let (field, message) = field_error(e.inner());
        Error::validation(&top.or(field).unwrap_or_else(|| "body".into()), message)
    })
}

/// The field a serde error names itself (only a missing one does: its path ends at the object
/// holding it), and what to tell the client, without echoing the value it sent.
fn field_error(e: &serde_json::Error) -> (Option<String>, String) {
    let text = e.to_string();
    if let Some(rest) = text.strip_prefix("missing field `") {
        let field = rest.split('`').next().map(String::from);
        return (field, "is required".into());
    }
    let Some((_, expected)) = text.split_once(", expected ") else {
        return (None, text);
    };
    let expected = match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number",
        "f32" | "f64" => "a number",
        "a sequence" => "a list",
        other => other,
    };
    (None, format!("must be {expected}"))
}

/// `application/json`, any case, with optional parameters (RFC 9110 8.3.1); a `charset`, if
/// given, must be UTF-8, the only encoding JSON has (RFC 8259 8.1).
fn is_json_media_type(value: &str) -> bool {
    let is_json = crate::http::media_type(value)
        .is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"));
    if !is_json {
        return false;
    }
    value
        .split(';')
        .skip(1)
        .all(|param| match param.split_once('=') {
            Some((name, v)) if name.trim().eq_ignore_ascii_case("charset") => {
                v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            }
            Some((name, _)) => !name.trim().is_empty(),
            // `application/json;` is tolerated; a bare word is not a parameter.
            None => param.trim().is_empty(),
        })
}

/// A tenant named by its id (a UUID, any spelling) or its slug. Slugs never look like UUIDs, so
/// the two cannot be confused.
fn tenant_by_key(catalog: &Catalog, key: &str) -> Result<Option<Arc<TenantRecord>>, Error> {
    Ok(match uuid::Uuid::parse_str(key) {
        Ok(id) => catalog.by_id(&id.hyphenated().to_string())?,
        Err(_) => catalog.by_slug(key)?,
    })
}

/// A numeric path parameter; anything else names nothing.
fn id_param(params: &Params, name: &str) -> Result<i64, Error> {
    params
        .get(name)
        .and_then(|v| v.parse().ok())
        .ok_or(Error::NotFound)
}
