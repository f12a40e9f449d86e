//! The route table and the request pipeline: identify the tenant, find the route, check what the
//! route needs (a tenant, the central host, an admin), call the handler. One file per resource.

mod admin;
mod tenant;

use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, CatalogError, TenantRecord};
use crate::db::Create;
use crate::error::Error;
use crate::http::{self, Match, Params, Request, Response, Router};
use crate::tenancy::identify::{self, Hints, IdentifyConfig};
use crate::tenancy::{Registry, RegistryConfig, Tenant};

type AnyFn = fn(&App, &Request, &Params) -> Result<Response, Error>;
type TenantFn = fn(&App, &Tenant, &Request, &Params) -> Result<Response, Error>;

/// What a route needs before its handler runs. The handler's signature says what it may touch:
/// only tenant routes receive a [`Tenant`].
#[derive(Clone, Copy)]
enum Route {
    /// Anywhere (health checks).
    Any(AnyFn),
    /// Central host only, with the admin token.
    Admin(AnyFn),
    /// A resolved, active tenant; its pool is opened (and migrated) on demand.
    Tenant(TenantFn),
}

/// Configuration of the application behind the HTTP layer.
#[derive(Clone, Debug, Default)]
pub struct AppConfig {
    pub data_dir: PathBuf,
    pub identify: IdentifyConfig,
    pub registry: RegistryConfig,
    /// Use this admin token instead of the stored one (its hash replaces the stored hash).
    pub admin_token: Option<String>,
}

/// Everything a handler may reach, shared by every worker thread.
pub struct App {
    pub catalog: Catalog,
    pub registry: Registry,
    identify: IdentifyConfig,
    admin_token_sha256: String,
    router: Router<Route>,
}

/// Where the admin token's hash is kept in the catalog.
const ADMIN_TOKEN_KEY: &str = "admin_token_sha256";

impl App {
    /// Opens (or creates) the catalog under the data directory. On first run it makes an admin
    /// token, stores its hash, and returns the token so the caller can show it once.
    pub fn open(config: AppConfig) -> Result<(App, Option<String>), CatalogError> {
        let catalog = Catalog::open(&config.data_dir, Create::IfMissing)?;
        let mut new_token = None;
        let hash = match (&config.admin_token, catalog.meta_get(ADMIN_TOKEN_KEY)?) {
            (Some(token), _) => {
                let hash = sha256_hex(token);
                catalog.meta_set(ADMIN_TOKEN_KEY, &hash)?;
                hash
            }
            (None, Some(hash)) => hash,
            (None, None) => {
                let token = random_token();
                let hash = sha256_hex(&token);
                catalog.meta_set(ADMIN_TOKEN_KEY, &hash)?;
                new_token = Some(token);
                hash
            }
        };
        let registry = Registry::new(&config.data_dir, config.registry.clone());
        let app = App {
            catalog,
            registry,
            identify: config.identify,
            admin_token_sha256: hash,
            router: routes(),
        };
        Ok((app, new_token))
    }

    fn dispatch(
        &self,
        req: &Request,
        path: &str,
        tenant: Option<Arc<TenantRecord>>,
    ) -> Result<Response, Error> {
        let (route, params) = match self.router.find(&req.method, path) {
            Match::Found(route, params) => (route.handler, params),
            Match::MethodNotAllowed(allow) => return Err(Error::MethodNotAllowed { allow }),
            Match::NotFound => return Err(Error::NotFound),
        };
        match route {
            Route::Any(f) => f(self, req, &params),
            Route::Admin(f) => {
                if tenant.is_some() {
                    return Err(Error::CentralOnly);
                }
                self.check_admin(req)?;
                f(self, req, &params)
            }
            Route::Tenant(f) => {
                let record = tenant.ok_or(Error::NoTenant)?;
                let tenant = self.registry.open(record)?;
                f(self, &tenant, req, &params)
            }
        }
    }

    fn check_admin(&self, req: &Request) -> Result<(), Error> {
        let token = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Error::Unauthorized)?;
        let given = sha256_hex(token.trim());
        // Both are hex digests of equal length: compare every byte, whatever differs first.
        let same = given.len() == self.admin_token_sha256.len()
            && given
                .bytes()
                .zip(self.admin_token_sha256.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(Error::Unauthorized)
        }
    }
}

fn routes() -> Router<Route> {
    let mut r = Router::new();
    r.add("GET", "/healthz", Route::Any(healthz));
    r.add("GET", "/api/tenant", Route::Tenant(tenant::show));
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

    fn handle(&self, req: &Request) -> Response {
        // Health checks answer whatever the catalog's state.
        if req.path == "/healthz" {
            return self
                .dispatch(req, &req.path, None)
                .unwrap_or_else(Error::into_response);
        }
        // A proxy that adds its own X-Tenant-* header behind the client's must not lose to it.
        for name in ["x-tenant-id", "x-tenant-slug"] {
            if req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .count()
                > 1
            {
                return Error::TenantConflict.into_response();
            }
        }
        let hints = Hints {
            path: &req.path,
            tenant_id: req.header("x-tenant-id"),
            tenant_slug: req.header("x-tenant-slug"),
            host: req.header("host"),
        };
        let identified = match identify::identify(&self.catalog, &self.identify, hints) {
            Ok(identified) => identified,
            Err(e) => return Error::from(e).into_response(),
        };
        let tenant = identified.tenant.map(|(record, _)| record);
        let note = tenant.as_ref().map(|t| format!("tenant={}", t.slug));
        let mut response = self
            .dispatch(req, &identified.path, tenant)
            .unwrap_or_else(Error::into_response);
        response.log_note = note;
        response
    }
}

fn healthz(_app: &App, _req: &Request, _params: &Params) -> Result<Response, Error> {
    Ok(Response::json(200, &serde_json::json!({"status": "ok"})))
}

/// The request body as JSON of the expected shape.
fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, Error> {
    if let Some(ct) = req.header("content-type") {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(Error::UnsupportedMediaType(format!(
                "expected an application/json body, got {essence}"
            )));
        }
    }
    serde_json::from_slice(&req.body).map_err(|e| Error::InvalidJson(e.to_string()))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}
