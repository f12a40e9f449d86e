//! The central catalog (`data/central.db`): which tenants exist, their slugs,
//! domains and status, plus server secrets in `meta`. Lookups are answered
//! from an in-memory snapshot that is reloaded only when the file changed.
//! Identity (users, roles, memberships, admins, sessions, audit) lives in the
//! same file but is never cached: see `identity`, `roles`, `sessions`, `audit`.
//!
//! This file holds the `Catalog` handle itself (opening, the write path, `meta`); the rest is
//! in `tenants` (records and their writes), `snapshot` (the cached view, its watcher and the
//! per-request `CatalogView`), `read_cache` (identity reads kept per generation) and `error`.

mod audit;
mod error;
mod identity;
mod inbound;
mod invitations;
mod jobs;
mod maintenance;
pub(crate) mod permissions;
mod plans;
mod read_cache;
mod roles;
mod sessions;
mod snapshot;
mod tenants;
mod throttle;
mod validate;

#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod jobs_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use crate::args;
use crate::db::probe::WalProbe;
use crate::db::{self, Create, DbKind, Pool, PoolConfig};
use crate::store::{Sql, StoreError};

use read_cache::ReadCache;
use snapshot::{LastCheck, Watcher};
use tenants::tenant_exists;

pub use audit::{
    ActorType, AuditActor, AuditEntry, AuditFilter, AuditRecord, DEFAULT_AUDIT_LIMIT,
    MAX_AUDIT_LIMIT,
};
pub use error::CatalogError;
pub use identity::{
    normalize_email, normalize_photo_url, IdentityError, NewUser, ProfileUpdate, SystemAdmin, User,
};
pub use inbound::{InboundSecretInfo, DELIVERY_MEMORY_SECS};
pub use invitations::{
    Accepted, Acceptor, Invitation, InvitationStatus, NewInvitation, INVITATION_TTL_SECS,
};
pub use jobs::{
    Enqueued, Firing, JobChange, JobFilter, JobInsert, JobRecord, JobStatus, ScheduleRecord,
    DEFAULT_MAX_ATTEMPTS, MAX_JOB_LIMIT,
};
pub use maintenance::{bypass_value, DownRequest, Maintenance, SERVER as MAINTENANCE_SERVER};
pub use permissions::{BuiltinRole, ADMIN_ROLE, BUILTIN_ROLES, PERMISSIONS};
pub use plans::{
    Entitlements, Plan, PlanEdit, PlanRates, QuotaExceeded, ReadOnly, Subscription,
    SubscriptionChange, SubscriptionStatus, DEFAULT_BILLING_GRACE_SECS, DEFAULT_PLAN, FEATURES,
    LIMITS, MAX_RATE, MEMBER_RATE_LIMIT, TENANT_RATE_LIMIT,
};
pub use roles::{
    Member, MemberUser, Membership, MembershipPage, Role, RoleUpdate, TenantMembership,
};
pub use sessions::{
    unix_now, Browser, NewSession, PersonalToken, Session, SessionKind, TOUCH_INTERVAL_SECS,
};
pub use snapshot::{normalize_host, CatalogView, Snapshot};
pub use tenants::{
    validate_domains, DomainRecord, TenantRecord, TenantStatus, TenantStore, TenantStores,
    DEFAULT_DATE_FORMAT, DEFAULT_LOCALE, DEFAULT_TIMEZONE,
};
pub use throttle::StreakRules;
pub use validate::{
    check_email, validate_domain, validate_name, validate_slug, EmailRule, ValidationError,
    MAX_DOMAIN_LEN, MAX_EMAIL_LEN, MAX_NAME_CHARS, MAX_SLUG_LEN, RESERVED_SLUGS,
};

pub const CENTRAL_DB: &str = "central.db";
/// The catalog's namespace when it is kept on sqld (`serve --store sqld`).
pub const CENTRAL_NAMESPACE: &str = "central";
pub const TENANTS_DIR: &str = "tenants";

/// Where the catalog is kept.
enum Place {
    /// `central.db` in the data directory.
    File(Pool),
    /// The namespace `central` of a libSQL server, shared by every node that names it.
    Sqld(Arc<crate::sqld::Client>),
}

/// The open catalog (`central.db`) and what is kept in memory from it.
pub struct Catalog {
    data_dir: PathBuf,
    place: Place,
    watcher: Mutex<Watcher>,
    /// Skips the watcher's `PRAGMA data_version` while the WAL-index header is unchanged.
    probe: Option<WalProbe>,
    /// One lock for the snapshot and its header: every request reads them together.
    last_check: RwLock<LastCheck>,
    reloads: AtomicU64,
    /// Moves on every change to the catalog: a commit through this `Catalog`, or one that
    /// `PRAGMA data_version` reveals (another process, the CLI).
    generation: AtomicU64,
    reads: Mutex<ReadCache>,
    /// The plan new tenants get (`--default-plan`).
    default_plan: RwLock<String>,
    /// Where new tenants' databases go, and the sqld server if there is one.
    stores: RwLock<TenantStores>,
    /// How long a `past_due` subscription keeps writing (`--billing-grace`), in seconds.
    billing_grace: std::sync::atomic::AtomicI64,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// A poisoned lock only means another thread panicked while holding it; the
/// guarded values here stay consistent, so carry on rather than panic too.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Catalog {
    /// Opens `data_dir/central.db` and brings it to the binary's schema.
    /// With `Create::Never` the catalog must exist; otherwise `data_dir` and
    /// `data_dir/tenants` are created as needed.
    pub fn open(data_dir: &Path, create: Create) -> Result<Catalog, CatalogError> {
        Catalog::open_with(data_dir, create, true)
    }

    /// `open`, with SQLite's automatic checkpoint on the catalog's connections or (for
    /// `serve --checkpoints litestream`, where Litestream does them) off.
    pub fn open_with(
        data_dir: &Path,
        create: Create,
        autocheckpoint: bool,
    ) -> Result<Catalog, CatalogError> {
        let path = data_dir.join(CENTRAL_DB);
        let mkdir = |dir: &Path| {
            fs::create_dir_all(dir).map_err(|e| CatalogError::Io {
                path: dir.to_path_buf(),
                source: e,
            })
        };
        if create == Create::Never {
            db::ensure_exists(&path)?;
        } else {
            mkdir(data_dir)?;
        }
        mkdir(&data_dir.join(TENANTS_DIR))?;

        let mut conn = db::open(&path, DbKind::Catalog, create)?;
        if !autocheckpoint {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        db::migrate(&mut conn, db::central_migrations())?;
        let config = PoolConfig {
            max_size: 8,
            idle_timeout: Some(Duration::from_secs(300)),
            connection_timeout: Duration::from_secs(5),
            autocheckpoint,
        };
        // One pool for the life of the catalog: its own scheduler thread is
        // cheap, and r2d2's idle reaper is fine for a pool that stays.
        let pool = db::pool(&path, DbKind::Catalog, &config, &db::thread_pool(1))?;
        // Through the watcher's connection, which stays open for the catalog's whole life, as
        // the probe needs (see `db::probe`).
        let probe = WalProbe::attach(&conn);
        if probe.is_none() {
            log::warn!(
                "no WAL index beside {}: checking for catalog changes the slow way",
                path.display()
            );
        }
        Catalog::assemble(data_dir, Place::File(pool), Some(conn), probe)
    }

    /// The catalog kept in the namespace `central` of `client`'s server, made and brought to
    /// the binary's schema there if need be: several nodes opening it share one catalog.
    /// `data_dir` still holds this node's own files (its lock, tenants' files, backups).
    pub fn open_sqld(
        data_dir: &Path,
        client: Arc<crate::sqld::Client>,
    ) -> Result<Catalog, CatalogError> {
        for dir in [data_dir.to_path_buf(), data_dir.join(TENANTS_DIR)] {
            fs::create_dir_all(&dir).map_err(|e| CatalogError::Io {
                path: dir.clone(),
                source: e,
            })?;
        }
        match client.create_namespace(CENTRAL_NAMESPACE) {
            Ok(()) | Err(crate::sqld::SqldError::NamespaceExists(_)) => {}
            Err(e) => return Err(StoreError::from(e).into()),
        }
        // Two nodes starting at once both run this: each migration re-checks, in its own
        // BEGIN IMMEDIATE, that it is still pending.
        crate::store::sqld::migrate(&client, CENTRAL_NAMESPACE, db::central_migrations())?;
        Catalog::assemble(data_dir, Place::Sqld(client), None, None)
    }

    /// The catalog over `place`, its snapshot loaded.
    fn assemble(
        data_dir: &Path,
        place: Place,
        watcher: Option<rusqlite::Connection>,
        probe: Option<WalProbe>,
    ) -> Result<Catalog, CatalogError> {
        let catalog = Catalog {
            data_dir: data_dir.to_path_buf(),
            place,
            watcher: Mutex::new(Watcher::new(watcher)),
            probe,
            last_check: RwLock::new(LastCheck::empty()),
            reloads: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            reads: Mutex::new(ReadCache::default()),
            default_plan: RwLock::new(DEFAULT_PLAN.to_string()),
            stores: RwLock::new(TenantStores::default()),
            billing_grace: std::sync::atomic::AtomicI64::new(DEFAULT_BILLING_GRACE_SECS),
        };
        catalog.snapshot()?;
        Ok(catalog)
    }

    /// Whether the catalog is shared with other nodes (kept on sqld): what is only safe for
    /// the one process that holds the catalog (reclaiming every running job at start, say)
    /// is not done then.
    pub fn is_shared(&self) -> bool {
        matches!(self.place, Place::Sqld(_))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn tenants_dir(&self) -> PathBuf {
        self.data_dir.join(TENANTS_DIR)
    }

    pub fn schema_version(&self) -> Result<u32, CatalogError> {
        match &self.place {
            Place::File(pool) => Ok(db::schema_version(&*pool.get()?)?),
            Place::Sqld(client) => Ok(crate::store::sqld::schema_version(
                client,
                CENTRAL_NAMESPACE,
            )?),
        }
    }

    /// Sets the plan new tenants get; it must exist.
    pub fn set_default_plan(&self, plan: &str) -> Result<(), CatalogError> {
        if self.plan(plan)?.is_none() {
            return Err(CatalogError::PlanNotFound(plan.to_string()));
        }
        *self.default_plan.write().unwrap_or_else(|e| e.into_inner()) = plan.to_string();
        Ok(())
    }

    /// Where new tenants go from now on, and the sqld server (`serve --store sqld`, and the
    /// CLI with the same options). A tenant kept on sqld needs `sqld` whatever `new_tenants` is.
    pub fn set_stores(&self, stores: TenantStores) {
        *self.stores.write().unwrap_or_else(|e| e.into_inner()) = stores;
    }

    pub fn stores(&self) -> TenantStores {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_billing_grace(&self, secs: i64) {
        self.billing_grace
            .store(secs.max(0), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn billing_grace(&self) -> i64 {
        self.billing_grace
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn default_plan(&self) -> String {
        self.default_plan
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `f` on one of the catalog's connections, through the store contract: how catalog
    /// code reads, so that the same code reads the catalog wherever it is kept
    /// (docs/scale-out.md). Each statement sees every write committed before it.
    pub(crate) fn read<T, E>(&self, f: impl FnOnce(&dyn Sql) -> Result<T, E>) -> Result<T, E>
    where
        E: From<CatalogError>,
    {
        match &self.place {
            Place::File(pool) => {
                let conn = pool.get().map_err(|e| E::from(CatalogError::from(e)))?;
                f(&conn)
            }
            Place::Sqld(client) => f(&crate::store::sqld::SqldRead {
                client,
                namespace: CENTRAL_NAMESPACE,
            }),
        }
    }

    /// [`Catalog::write`] through the store contract: a `BEGIN IMMEDIATE` transaction,
    /// committed on `Ok`, counted as a change of what is kept (see [`Catalog::write_uncounted_sql`]).
    pub(crate) fn write_sql<T, E>(&self, f: impl FnOnce(&dyn Sql) -> Result<T, E>) -> Result<T, E>
    where
        E: From<CatalogError>,
    {
        let result = self.write_local(f);
        self.changed();
        result
    }

    /// A write only to tables nothing kept is read from (jobs, schedules, the audit log,
    /// inbound delivery ids; see `0007_catalog_changes.sql`): kept reads stay, here as in
    /// every other process.
    pub(crate) fn write_uncounted_sql<T, E>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<CatalogError>,
    {
        self.write_local(f)
    }

    fn write_local<T, E>(&self, f: impl FnOnce(&dyn Sql) -> Result<T, E>) -> Result<T, E>
    where
        E: From<CatalogError>,
    {
        let pool = match &self.place {
            Place::File(pool) => pool,
            Place::Sqld(client) => {
                return crate::store::sqld::write_as(
                    client,
                    CENTRAL_NAMESPACE,
                    |e| E::from(CatalogError::from(e)),
                    f,
                )
            }
        };
        let mut conn = pool.get().map_err(|e| E::from(CatalogError::from(e)))?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| E::from(CatalogError::from(e)))?;
        let value = f(&tx)?;
        tx.commit().map_err(|e| E::from(CatalogError::from(e)))?;
        Ok(value)
    }

    /// Whether the catalog answers a query on one of the pool's connections, and its file is
    /// still where it was (for readiness, probed often: no new connection per probe). The
    /// file's presence is looked at by name, since the pool's open connections would go on
    /// answering from a file removed under them.
    pub fn answers(&self) -> Result<(), CatalogError> {
        self.read(|db| {
            db.query_one("SELECT count(*) FROM tenants", &[], |row| row.get::<i64>(0))?;
            Ok::<_, CatalogError>(())
        })?;
        if self.is_shared() {
            return Ok(());
        }
        let path = self.data_dir.join(CENTRAL_DB);
        std::fs::metadata(&path).map_err(|source| CatalogError::Io { path, source })?;
        Ok(())
    }

    /// A server-wide value from `meta` (secrets and the like); not cached.
    pub fn meta_get(&self, key: &str) -> Result<Option<String>, CatalogError> {
        self.read(|db| {
            Ok(
                db.query_row("SELECT value FROM meta WHERE key = ?1", args![key], |row| {
                    row.get(0)
                })?,
            )
        })
    }

    /// The value of `key`, made by `make` and stored if there is none yet. Two processes (two
    /// nodes of a shared catalog starting at once) get the same value: the first insert wins
    /// and both read it back.
    pub fn meta_get_or_init(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, CatalogError> {
        if let Some(value) = self.meta_get(key)? {
            return Ok(value);
        }
        let made = make();
        self.write_sql(|db| {
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                args![key, made.as_str()],
            )?;
            Ok(
                db.query_one("SELECT value FROM meta WHERE key = ?1", args![key], |row| {
                    row.get(0)
                })?,
            )
        })
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), CatalogError> {
        self.write_sql(|db| {
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                args![key, value],
            )?;
            Ok(())
        })
    }
}
