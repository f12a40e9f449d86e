//! `App`, everything a handler may reach, and its construction: `App::open` (the catalog, the
//! first system admin, the device key, the real-time hub), `OpenError` when that fails, and
//! the password helpers that run on the hashing pool.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::auth::device::DeviceKey;
use crate::auth::hasher::Hasher;
use crate::auth::password;
use crate::auth::throttle::Throttle;
use crate::catalog::{Catalog, CatalogError, IdentityError};
use crate::db::Create;
use crate::error::Error;
use crate::http::Router;
use crate::realtime::{Credentials, Hub, HubConfig};
use crate::tenancy::identify::IdentifyConfig;
use crate::tenancy::Registry;

use super::{broadcasting, routes, AppConfig, RealtimeConfig, Route, SessionConfig};

/// The key that signs device cookies, made on the first run and kept in the catalog: known
/// devices stay known across restarts.
fn device_key(catalog: &Catalog) -> Result<DeviceKey, CatalogError> {
    const NAME: &str = "device_cookie_key";
    let stored = catalog.meta_get_or_init(NAME, || DeviceKey::generate().to_hex())?;
    if let Some(key) = DeviceKey::from_hex(&stored) {
        return Ok(key);
    }
    // A value that is no key (edited by hand): replaced, as on a first run.
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
    /// Shared, so that a streamed answer can keep reading it after its handler returned.
    pub catalog: std::sync::Arc<Catalog>,
    pub registry: Registry,
    pub hasher: Hasher,
    pub throttle: Throttle,
    pub(super) device_key: DeviceKey,
    pub sessions: SessionConfig,
    pub hub: Hub,
    pub(super) realtime: RealtimeConfig,
    pub(super) credentials: Credentials,
    pub(super) identify: IdentifyConfig,
    pub(super) router: Router<Route>,
    /// Per system admin, the last TOTP step a code was accepted for: a code is good once.
    /// In memory, so a restart forgets it; a code stays valid for 90 s at most.
    pub(super) totp_steps: Mutex<HashMap<i64, u64>>,
    /// Outbound webhooks' settings and HTTP agent.
    pub(super) webhooks: super::webhooks_out::Webhooks,
    /// The job queues' wake-up channels and the workers' configuration.
    pub jobs: super::jobs::Jobs,
    /// Company archives being streamed now (see `export`): each holds a worker thread.
    pub(super) export_streams: super::export::Streams,
    /// `/metrics` and `/readyz`.
    pub(super) observe: super::metrics::Observe,
    /// Requests per minute per tenant and per member, on tenant routes.
    pub(super) rate_limit: super::rate_limit::Limiter,
}

pub const FIRST_ADMIN_EMAIL: &str = "admin@localhost";

impl App {
    /// Opens (or creates) the catalog under the data directory. With no system admin yet, it makes
    /// `admin@localhost` with a random password and returns it so the caller can show it once.
    pub fn open(config: AppConfig) -> Result<(App, Option<FirstAdmin>), OpenError> {
        // `--store sqld`: the catalog too is kept on sqld, shared by every node that names it.
        let catalog = match (&config.registry.sqld, config.new_tenants) {
            (Some(sqld), crate::catalog::TenantStore::Sqld) => {
                Catalog::open_sqld(&config.data_dir, std::sync::Arc::clone(sqld))?
            }
            _ => Catalog::open_with(
                &config.data_dir,
                Create::IfMissing,
                config.registry.checkpoints == crate::tenancy::Checkpoints::Tenantd,
            )?,
        };
        catalog.set_stores(crate::catalog::TenantStores {
            new_tenants: config.new_tenants,
            sqld: config.registry.sqld.clone(),
        });
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
        hub_config.redis_url = config.realtime.redis_url.clone();
        let hub = Hub::start(hub_config).map_err(OpenError::Hub)?;
        let catalog = std::sync::Arc::new(catalog);
        // Several nodes on one catalog count a client's failed logins together.
        let throttle = if catalog.is_shared() {
            Throttle::shared(config.throttle.clone(), std::sync::Arc::clone(&catalog))
        } else {
            Throttle::new(config.throttle.clone())
        };
        let app = App {
            registry: Registry::new(&config.data_dir, config.registry.clone()),
            catalog,
            hasher: Hasher::new(config.hasher.clone()),
            throttle,
            device_key,
            sessions: config.sessions.clone(),
            hub,
            realtime: config.realtime.clone(),
            credentials,
            identify: config.identify,
            router: routes(),
            totp_steps: Mutex::new(HashMap::new()),
            webhooks: super::webhooks_out::Webhooks::new(config.webhooks.clone()),
            jobs: super::jobs::Jobs::new(config.jobs.clone()),
            export_streams: super::export::Streams::new(config.exports.clone()),
            observe: super::metrics::Observe {
                config: config.metrics.clone(),
                data_dir: config.data_dir.clone(),
            },
            rate_limit: super::rate_limit::Limiter::new(config.rate_limit.clone()),
        };
        app.metrics().set_top_tenants(config.metrics.top_tenants);
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
    match catalog.create_admin(FIRST_ADMIN_EMAIL, &hash) {
        Ok(_) => {}
        // Another node of a shared catalog made it a moment ago, and showed its password.
        Err(IdentityError::EmailTaken) => return Ok(None),
        Err(e) => return Err(OpenError::FirstAdmin(e)),
    }
    Ok(Some(FirstAdmin {
        email: FIRST_ADMIN_EMAIL.into(),
        password,
    }))
}
