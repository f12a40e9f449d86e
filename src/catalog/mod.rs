//! The central catalog (`data/central.db`): which tenants exist, their slugs,
//! domains and status, plus server secrets in `meta`. Lookups are answered
//! from an in-memory snapshot that is reloaded only when the file changed.
//! Identity (users, roles, memberships, admins, sessions, audit) lives in the
//! same file but is never cached: see `identity`, `roles`, `sessions`, `audit`.

mod audit;
mod identity;
mod invitations;
pub(crate) mod permissions;
mod roles;
mod sessions;
mod validate;

#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use crate::db::probe::{self, WalProbe};
use crate::db::{self, Create, DbError, DbKind, Pool, PoolConfig};

pub use audit::{
    ActorType, AuditActor, AuditEntry, AuditFilter, AuditRecord, DEFAULT_AUDIT_LIMIT,
    MAX_AUDIT_LIMIT,
};
pub use identity::{
    normalize_email, normalize_photo_url, IdentityError, NewUser, ProfileUpdate, SystemAdmin, User,
};
pub use invitations::{
    Accepted, Acceptor, Invitation, InvitationStatus, NewInvitation, INVITATION_TTL_SECS,
};
pub use permissions::{BuiltinRole, ADMIN_ROLE, BUILTIN_ROLES, PERMISSIONS};
pub use roles::{
    Member, MemberUser, Membership, MembershipPage, Role, RoleUpdate, TenantMembership,
};
pub use sessions::{
    unix_now, Browser, NewSession, PersonalToken, Session, SessionKind, TOUCH_INTERVAL_SECS,
};
pub use validate::{
    check_email, validate_domain, validate_name, validate_slug, EmailRule, ValidationError,
    MAX_DOMAIN_LEN, MAX_EMAIL_LEN, MAX_NAME_CHARS, MAX_SLUG_LEN, RESERVED_SLUGS,
};

pub const CENTRAL_DB: &str = "central.db";
pub const TENANTS_DIR: &str = "tenants";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
    Deleted,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<TenantStatus> {
        match s {
            "active" => Some(TenantStatus::Active),
            "suspended" => Some(TenantStatus::Suspended),
            "deleted" => Some(TenantStatus::Deleted),
            _ => None,
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DomainRecord {
    pub domain: String,
    pub is_primary: bool,
}

/// One catalog row with its domains. Timestamps are RFC 3339 UTC text.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantRecord {
    /// Hyphenated lower-case UUID; also the tenant's file name.
    pub id: String,
    pub slug: String,
    pub name: String,
    pub status: TenantStatus,
    pub settings: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
    /// Primary first, then by name.
    pub domains: Vec<DomainRecord>,
}

impl TenantRecord {
    pub fn primary_domain(&self) -> Option<&str> {
        self.domains
            .iter()
            .find(|d| d.is_primary)
            .map(|d| d.domain.as_str())
    }
}

/// The whole catalog at one moment. Immutable: a change builds a new one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    by_id: HashMap<String, Arc<TenantRecord>>,
    by_slug: HashMap<String, Arc<TenantRecord>>,
    by_domain: HashMap<String, Arc<TenantRecord>>,
}

impl Snapshot {
    pub fn by_id(&self, id: &str) -> Option<&Arc<TenantRecord>> {
        self.by_id.get(id)
    }

    pub fn by_slug(&self, slug: &str) -> Option<&Arc<TenantRecord>> {
        self.by_slug.get(slug)
    }

    /// `domain` must already be lower-case (see [`normalize_host`]).
    pub fn by_domain(&self, domain: &str) -> Option<&Arc<TenantRecord>> {
        self.by_domain.get(domain)
    }

    /// Every tenant, deleted ones included, by slug.
    pub fn list(&self) -> Vec<Arc<TenantRecord>> {
        let mut all: Vec<_> = self.by_id.values().cloned().collect();
        all.sort_by(|a, b| a.slug.cmp(&b.slug));
        all
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn insert(&mut self, record: Arc<TenantRecord>) {
        for d in &record.domains {
            self.by_domain.insert(d.domain.clone(), Arc::clone(&record));
        }
        self.by_slug
            .insert(record.slug.clone(), Arc::clone(&record));
        self.by_id.insert(record.id.clone(), record);
    }

    /// Takes the tenant out, with the slug and domains that still lead to it (another tenant
    /// may hold them by now).
    fn remove(&mut self, id: &str) {
        let Some(old) = self.by_id.remove(id) else {
            return;
        };
        if self.by_slug.get(&old.slug).is_some_and(|r| r.id == id) {
            self.by_slug.remove(&old.slug);
        }
        for d in &old.domains {
            if self.by_domain.get(&d.domain).is_some_and(|r| r.id == id) {
                self.by_domain.remove(&d.domain);
            }
        }
    }
}

/// A Host header value as a catalog domain: lower-cased, without a `:port`
/// or trailing dot. The result is only a lookup key; it is not validated.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.trim();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // Every request's Host passes here, and is almost always lower-case already.
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[derive(Debug)]
pub enum CatalogError {
    Db(DbError),
    Validation(ValidationError),
    SlugTaken(String),
    DomainTaken(String),
    /// No tenant with this id or slug.
    NotFound(String),
    DomainNotFound(String),
    /// A row the schema should have prevented (unknown status, bad JSON).
    Corrupt {
        id: String,
        message: String,
    },
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogError::Db(e) => write!(f, "catalog: {e}"),
            CatalogError::Validation(e) => e.fmt(f),
            CatalogError::SlugTaken(slug) => write!(f, "slug {slug} is already taken"),
            CatalogError::DomainTaken(domain) => write!(f, "domain {domain} is already taken"),
            CatalogError::NotFound(tenant) => write!(f, "no tenant {tenant}"),
            CatalogError::DomainNotFound(domain) => write!(f, "no domain {domain}"),
            CatalogError::Corrupt { id, message } => {
                write!(f, "catalog row for tenant {id} is corrupt: {message}")
            }
            CatalogError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for CatalogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CatalogError::Db(e) => Some(e),
            CatalogError::Validation(e) => Some(e),
            CatalogError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<DbError> for CatalogError {
    fn from(e: DbError) -> Self {
        CatalogError::Db(e)
    }
}

impl From<rusqlite::Error> for CatalogError {
    fn from(e: rusqlite::Error) -> Self {
        CatalogError::Db(DbError::Sqlite(e))
    }
}

impl From<r2d2::Error> for CatalogError {
    fn from(e: r2d2::Error) -> Self {
        CatalogError::Db(DbError::Pool(e))
    }
}

impl From<ValidationError> for CatalogError {
    fn from(e: ValidationError) -> Self {
        CatalogError::Validation(e)
    }
}

/// The connection that watches `PRAGMA data_version`. It never writes: the
/// pragma only moves for commits made by *other* connections, which is what
/// makes it see both our pool's writes and another process's.
struct Watcher {
    conn: Connection,
    seen: Option<i64>,
    /// The last `tenant_changes.seq` the snapshot includes; `None` before the first load.
    log_seq: Option<i64>,
}

struct Seen {
    header: Option<probe::Header>,
    snapshot: Arc<Snapshot>,
}

pub struct Catalog {
    data_dir: PathBuf,
    pool: Pool,
    watcher: Mutex<Watcher>,
    /// Skips the watcher's `PRAGMA data_version` while the WAL-index header is unchanged.
    probe: Option<WalProbe>,
    /// The snapshot, and the header as read just before the last check that found it
    /// current. One lock for both: every request reads them together.
    seen: RwLock<Seen>,
    reloads: AtomicU64,
    /// Moves on every change to the catalog: a commit through this `Catalog`, or one that
    /// `PRAGMA data_version` reveals (another process, the CLI).
    generation: AtomicU64,
    reads: Mutex<ReadCache>,
}

/// The identity reads every authenticated request makes (its session, its user, its
/// membership), kept until the catalog changes in any way. Any commit clears it, so a revoked
/// session or a changed role counts on the very next request, as if read from the table.
#[derive(Default)]
pub(crate) struct ReadCache {
    generation: u64,
    pub(crate) sessions: HashMap<String, Option<Arc<Session>>>,
    pub(crate) users: HashMap<i64, Option<Arc<User>>>,
    /// By user and the tenant id's 128 bits, so that a lookup allocates nothing.
    pub(crate) memberships: HashMap<(i64, uuid::Uuid), Option<Arc<Membership>>>,
}

/// Entries per map before it is emptied: a bound on what unknown tokens can make us hold.
const READ_CACHE_CAP: usize = 10_000;

/// The catalog checked for changes once, at the start of a request (see [`Catalog::fresh`]).
pub struct Fresh<'a> {
    pub catalog: &'a Catalog,
    pub snapshot: Arc<Snapshot>,
    /// Changes with every commit to the catalog seen so far (by this process or, through the
    /// check that made this `Fresh`, another): what was read under one value may be kept and
    /// trusted for as long as a later `Fresh` has the same.
    pub generation: u64,
}

impl Fresh<'_> {
    pub fn session_by_token_hash(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<Arc<Session>>, IdentityError> {
        self.catalog.cached_session(hash, now)
    }

    pub fn user_by_id(&self, id: i64) -> Result<Option<Arc<User>>, IdentityError> {
        self.catalog.cached_user(id)
    }

    pub fn membership(
        &self,
        user_id: i64,
        tenant_id: &str,
    ) -> Result<Option<Arc<Membership>>, IdentityError> {
        self.catalog.cached_membership(user_id, tenant_id)
    }
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
        db::migrate(&mut conn, db::central_migrations())?;
        let config = PoolConfig {
            max_size: 8,
            idle_timeout: Some(Duration::from_secs(300)),
            connection_timeout: Duration::from_secs(5),
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
        let catalog = Catalog {
            data_dir: data_dir.to_path_buf(),
            pool,
            watcher: Mutex::new(Watcher {
                conn,
                seen: None,
                log_seq: None,
            }),
            probe,
            seen: RwLock::new(Seen {
                header: None,
                snapshot: Arc::new(Snapshot::default()),
            }),
            reloads: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            reads: Mutex::new(ReadCache::default()),
        };
        catalog.snapshot()?;
        Ok(catalog)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn tenants_dir(&self) -> PathBuf {
        self.data_dir.join(TENANTS_DIR)
    }

    /// The current snapshot, reloaded first if the catalog changed since the
    /// last look. Costs a 96-byte copy of the mapped WAL-index header when nothing
    /// changed, and a `PRAGMA data_version` when the header moved.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, CatalogError> {
        // Read before the real check, never after: see `db::probe`.
        let header = self.probe.as_ref().map(WalProbe::read);
        if header.is_some() {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            if seen.header == header {
                return Ok(Arc::clone(&seen.snapshot));
            }
        }
        {
            let mut watcher = lock(&self.watcher);
            let version: i64 = watcher
                .conn
                .prepare_cached("PRAGMA data_version")?
                .query_row([], |row| row.get(0))?;
            let mut current = watcher.seen == Some(version);
            if !current {
                self.generation.fetch_add(1, Ordering::SeqCst);
                // Read after the version: a commit in between only causes
                // one extra refresh later, never a missed one. A refresh that
                // fails keeps the last good snapshot serving (if there is one).
                let base =
                    Arc::clone(&self.seen.read().unwrap_or_else(|e| e.into_inner()).snapshot);
                match refresh(&mut watcher, &base) {
                    Ok(refreshed) => {
                        if let Some(fresh) = refreshed {
                            self.seen
                                .write()
                                .unwrap_or_else(|e| e.into_inner())
                                .snapshot = Arc::new(fresh);
                            self.reloads.fetch_add(1, Ordering::Relaxed);
                        }
                        watcher.seen = Some(version);
                        current = true;
                    }
                    Err(e) if watcher.seen.is_some() => {
                        log::error!("catalog reload failed, serving the previous copy: {e}");
                    }
                    Err(e) => return Err(e),
                }
            }
            if current {
                self.seen.write().unwrap_or_else(|e| e.into_inner()).header = header;
            }
        }
        Ok(Arc::clone(
            &self.seen.read().unwrap_or_else(|e| e.into_inner()).snapshot,
        ))
    }

    /// The catalog as of now: checks `PRAGMA data_version` once and hands out reads that
    /// trust that check. A request takes one at its start, so its identity reads (session,
    /// user, membership) cost no query while nothing changed, and see every change committed
    /// before the request began, by this process or another.
    pub fn fresh(&self) -> Result<Fresh<'_>, CatalogError> {
        let snapshot = self.snapshot()?;
        Ok(Fresh {
            catalog: self,
            snapshot,
            // Read after the check, before any read it vouches for: a commit in between only
            // makes what is kept under it useless sooner.
            generation: self.generation.load(Ordering::SeqCst),
        })
    }

    /// Serves an identity read from memory, loading it on a miss, unless the catalog changed
    /// since it was cached. Commits through this catalog count at once; another process's
    /// are seen by the `PRAGMA data_version` check of `snapshot()`, which the caller ran (the
    /// plain methods run it on every call; `Fresh` ran it once for the request).
    pub(crate) fn cached<K, Q, V, E>(
        &self,
        map: fn(&mut ReadCache) -> &mut HashMap<K, Option<V>>,
        key: &Q,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, E>
    where
        K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
        Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
        V: Clone,
    {
        let generation = self.generation.load(Ordering::SeqCst);
        {
            let mut reads = lock(&self.reads);
            if reads.generation != generation {
                *reads = ReadCache {
                    generation,
                    ..ReadCache::default()
                };
            }
            if let Some(hit) = map(&mut reads).get(key) {
                return Ok(hit.clone());
            }
        }
        let value = load()?;
        let mut reads = lock(&self.reads);
        // A commit while we read may have made the value stale: then it is not kept.
        if reads.generation == generation && self.generation.load(Ordering::SeqCst) == generation {
            let entries = map(&mut reads);
            if entries.len() >= READ_CACHE_CAP {
                entries.clear();
            }
            entries.insert(key.to_owned(), value.clone());
        }
        Ok(value)
    }

    /// After a commit through this catalog: whatever was cached may be stale.
    pub(crate) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times the snapshot was rebuilt (for tests and metrics).
    pub fn snapshot_reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    pub fn by_id(&self, id: &str) -> Result<Option<Arc<TenantRecord>>, CatalogError> {
        Ok(self.snapshot()?.by_id(id).cloned())
    }

    pub fn by_slug(&self, slug: &str) -> Result<Option<Arc<TenantRecord>>, CatalogError> {
        Ok(self.snapshot()?.by_slug(slug).cloned())
    }

    /// Looks up a Host header value (any case, with or without a port).
    pub fn by_domain(&self, host: &str) -> Result<Option<Arc<TenantRecord>>, CatalogError> {
        Ok(self.snapshot()?.by_domain(&normalize_host(host)).cloned())
    }

    /// Every tenant, deleted ones included, by slug.
    pub fn list(&self) -> Result<Vec<Arc<TenantRecord>>, CatalogError> {
        Ok(self.snapshot()?.list())
    }

    pub fn schema_version(&self) -> Result<u32, CatalogError> {
        let conn = self.pool.get()?;
        Ok(db::schema_version(&conn)?)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let mut conn = self.pool.get()?;
        let result = db::write(&mut conn, f);
        self.changed();
        result
    }

    fn fetch(&self, id: &str) -> Result<Arc<TenantRecord>, CatalogError> {
        self.by_id(id)?
            .ok_or_else(|| CatalogError::NotFound(id.to_string()))
    }

    /// Inserts a tenant, its domains (the first one primary) and its built-in
    /// roles in one transaction. The caller picks the id because the tenant's file is
    /// named after it and exists before the row does.
    pub fn insert_tenant(
        &self,
        id: &uuid::Uuid,
        slug: &str,
        name: &str,
        domains: &[String],
    ) -> Result<Arc<TenantRecord>, CatalogError> {
        self.insert_tenant_row(id, slug, name, domains)?;
        self.fetch(&id.hyphenated().to_string())
    }

    /// The insert alone: `Ok` means the row is committed, which provisioning
    /// needs to know exactly before it decides to remove the tenant's file.
    pub(crate) fn insert_tenant_row(
        &self,
        id: &uuid::Uuid,
        slug: &str,
        name: &str,
        domains: &[String],
    ) -> Result<(), CatalogError> {
        let id = id.hyphenated().to_string();
        validate_slug(slug)?;
        let name = validate_name(name)?;
        let domains = validate_domains(domains)?;
        self.write(|tx| {
            if slug_owner(tx, slug)?.is_some() {
                return Err(CatalogError::SlugTaken(slug.to_string()));
            }
            for domain in &domains {
                if domain_owner(tx, domain)?.is_some() {
                    return Err(CatalogError::DomainTaken(domain.clone()));
                }
            }
            let now = db::now_rfc3339();
            tx.execute(
                "INSERT INTO tenants (id, slug, name, status, settings, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'active', '{}', ?4, ?4)",
                params![id, slug, name, now],
            )
            .map_err(|e| unique_violation(e, slug, ""))?;
            for (i, domain) in domains.iter().enumerate() {
                insert_domain(tx, &id, domain, i == 0)?;
            }
            // Same transaction: no tenant is ever seen without its built-in roles.
            permissions::seed_builtin_roles(tx, &id, &now)?;
            Ok(())
        })
    }

    /// Sets the status; `deleted_at` is stamped on deletion (kept if already
    /// deleted) and cleared otherwise.
    pub fn set_status(
        &self,
        id: &str,
        status: TenantStatus,
    ) -> Result<Arc<TenantRecord>, CatalogError> {
        self.write(|tx| {
            let now = db::now_rfc3339();
            let changed = tx.execute(
                "UPDATE tenants
                 SET status = ?2,
                     updated_at = ?3,
                     deleted_at = CASE WHEN ?2 = 'deleted' THEN COALESCE(deleted_at, ?3) END
                 WHERE id = ?1",
                params![id, status.as_str(), now],
            )?;
            if changed == 0 {
                return Err(CatalogError::NotFound(id.to_string()));
            }
            Ok(())
        })?;
        self.fetch(id)
    }

    pub fn rename_slug(&self, id: &str, new_slug: &str) -> Result<Arc<TenantRecord>, CatalogError> {
        validate_slug(new_slug)?;
        self.write(|tx| {
            match slug_owner(tx, new_slug)? {
                Some(owner) if owner == id => return Ok(()),
                Some(_) => return Err(CatalogError::SlugTaken(new_slug.to_string())),
                None => {}
            }
            let changed = tx
                .execute(
                    "UPDATE tenants SET slug = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, new_slug, db::now_rfc3339()],
                )
                .map_err(|e| unique_violation(e, new_slug, ""))?;
            if changed == 0 {
                return Err(CatalogError::NotFound(id.to_string()));
            }
            Ok(())
        })?;
        self.fetch(id)
    }

    /// Adds a domain; it becomes primary if the tenant has none. Adding a
    /// domain the tenant already has changes nothing.
    pub fn add_domain(&self, id: &str, domain: &str) -> Result<Arc<TenantRecord>, CatalogError> {
        let domain = validate_domain(domain)?;
        self.write(|tx| {
            if !tenant_exists(tx, id)? {
                return Err(CatalogError::NotFound(id.to_string()));
            }
            match domain_owner(tx, &domain)? {
                Some(owner) if owner == id => return Ok(()),
                Some(_) => return Err(CatalogError::DomainTaken(domain.clone())),
                None => {}
            }
            let has_primary: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM domains WHERE tenant_id = ?1 AND is_primary = 1)",
                [id],
                |row| row.get(0),
            )?;
            insert_domain(tx, id, &domain, !has_primary)?;
            touch(tx, id)
        })?;
        self.fetch(id)
    }

    /// Removes one of the tenant's domains. If it was the primary one, the
    /// alphabetically first remaining domain becomes primary.
    pub fn remove_domain(&self, id: &str, domain: &str) -> Result<Arc<TenantRecord>, CatalogError> {
        let domain = normalize_host(domain).into_owned();
        self.write(|tx| {
            let was_primary: Option<bool> = tx
                .query_row(
                    "DELETE FROM domains WHERE domain = ?1 AND tenant_id = ?2 RETURNING is_primary",
                    params![domain, id],
                    |row| row.get(0),
                )
                .optional()?;
            match was_primary {
                None => return Err(CatalogError::DomainNotFound(domain.clone())),
                Some(true) => {
                    tx.execute(
                        "UPDATE domains SET is_primary = 1
                         WHERE domain = (SELECT domain FROM domains WHERE tenant_id = ?1
                                         ORDER BY domain LIMIT 1)",
                        [id],
                    )?;
                }
                Some(false) => {}
            }
            touch(tx, id)
        })?;
        self.fetch(id)
    }

    /// Moves a tenant to `to` only if its status is still one of `from`, in one
    /// transaction, so two lifecycle changes racing each other cannot both act
    /// on a status that one of them already changed. `None`: the status was
    /// not one of `from` (the caller re-reads and decides what to say).
    pub fn transition(
        &self,
        id: &str,
        from: &[TenantStatus],
        to: TenantStatus,
    ) -> Result<Option<Arc<TenantRecord>>, CatalogError> {
        let changed = self.write(|tx| {
            let now = db::now_rfc3339();
            let mut changed = 0;
            for status in from {
                changed += tx.execute(
                    "UPDATE tenants
                     SET status = ?2,
                         updated_at = ?3,
                         deleted_at = CASE WHEN ?2 = 'deleted' THEN COALESCE(deleted_at, ?3) END
                     WHERE id = ?1 AND status = ?4",
                    params![id, to.as_str(), now, status.as_str()],
                )?;
            }
            Ok::<_, CatalogError>(changed)
        })?;
        if changed == 0 {
            return Ok(None);
        }
        self.fetch(id).map(Some)
    }

    /// Deletes the row only if the tenant is (still) deleted, in one
    /// transaction: a restore that got there first wins. Its domains, roles,
    /// memberships and tenant-bound sessions go with it; audit rows stay.
    pub fn delete_row_if_deleted(&self, id: &str) -> Result<bool, CatalogError> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM tenants WHERE id = ?1 AND status = 'deleted'",
                [id],
            )? == 1)
        })
    }

    /// Deletes the row; its domains, roles, memberships and tenant-bound
    /// sessions go with it (ON DELETE CASCADE). Audit rows stay.
    pub fn delete_row(&self, id: &str) -> Result<(), CatalogError> {
        self.write(|tx| {
            if tx.execute("DELETE FROM tenants WHERE id = ?1", [id])? == 0 {
                return Err(CatalogError::NotFound(id.to_string()));
            }
            Ok(())
        })
    }

    /// A server-wide value from `meta` (secrets and the like); not cached.
    pub fn meta_get(&self, key: &str) -> Result<Option<String>, CatalogError> {
        let conn = self.pool.get()?;
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), CatalogError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }
}

/// Validates and lower-cases every domain; a domain listed twice is refused.
pub fn validate_domains(domains: &[String]) -> Result<Vec<String>, ValidationError> {
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    for domain in domains {
        let domain = validate_domain(domain)?;
        if out.contains(&domain) {
            return Err(ValidationError {
                field: "domain",
                message: "listed more than once".to_string(),
            });
        }
        out.push(domain);
    }
    Ok(out)
}

fn slug_owner(conn: &Connection, slug: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT id FROM tenants WHERE slug = ?1", [slug], |row| {
        row.get(0)
    })
    .optional()
}

fn domain_owner(conn: &Connection, domain: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT tenant_id FROM domains WHERE domain = ?1",
        [domain],
        |row| row.get(0),
    )
    .optional()
}

fn tenant_exists(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE id = ?1)",
        [id],
        |row| row.get(0),
    )
}

fn touch(conn: &Connection, id: &str) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE tenants SET updated_at = ?2 WHERE id = ?1",
        params![id, db::now_rfc3339()],
    )?;
    Ok(())
}

fn insert_domain(
    conn: &Connection,
    id: &str,
    domain: &str,
    primary: bool,
) -> Result<(), CatalogError> {
    conn.execute(
        "INSERT INTO domains (domain, tenant_id, is_primary) VALUES (?1, ?2, ?3)",
        params![domain, id, primary],
    )
    .map_err(|e| unique_violation(e, "", domain))?;
    Ok(())
}

/// The in-transaction checks already catch conflicts; this maps a unique
/// violation that still gets through to the same errors.
fn unique_violation(e: rusqlite::Error, slug: &str, domain: &str) -> CatalogError {
    if let rusqlite::Error::SqliteFailure(code, Some(message)) = &e {
        if code.code == rusqlite::ErrorCode::ConstraintViolation {
            if message.contains("tenants.slug") {
                return CatalogError::SlugTaken(slug.to_string());
            }
            if message.contains("domains.domain") {
                return CatalogError::DomainTaken(domain.to_string());
            }
        }
    }
    CatalogError::from(e)
}

/// Brings `base` up to the catalog as of now, in one read transaction: `None` if no tenant or
/// domain changed since the last look (a session, an audit entry), the changed tenants alone
/// re-read if `tenant_changes` covers the gap, or everything.
fn refresh(watcher: &mut Watcher, base: &Snapshot) -> Result<Option<Snapshot>, CatalogError> {
    let tx = watcher.conn.transaction()?;
    let (first, last): (Option<i64>, Option<i64>) = tx
        .prepare_cached("SELECT min(seq), max(seq) FROM tenant_changes")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let last = last.unwrap_or(0);
    let snapshot = match watcher.log_seq {
        Some(seen) if seen == last => None,
        // The log is complete after `seen`: it was never pruned past it, nor went back (a
        // catalog restored from a backup).
        Some(seen) if seen < last && first.is_some_and(|first| first <= seen + 1) => {
            let mut changed: Vec<String> = tx
                .prepare_cached("SELECT DISTINCT tenant_id FROM tenant_changes WHERE seq > ?1")?
                .query_map([seen], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            changed.sort();
            let mut next = base.clone();
            // Out first, all of them, then in: a slug or domain may have passed from one
            // changed tenant to another.
            for id in &changed {
                next.remove(id);
            }
            for id in &changed {
                if let Some(record) = load_tenant(&tx, id)? {
                    next.insert(Arc::new(record));
                }
            }
            Some(next)
        }
        _ => Some(load_all(&tx)?),
    };
    tx.finish()?;
    watcher.log_seq = Some(last);
    Ok(snapshot)
}

const TENANT_COLUMNS: &str = "id, slug, name, status, settings, created_at, updated_at, deleted_at";

fn tenant_from_row(
    row: &rusqlite::Row<'_>,
    domains: Vec<DomainRecord>,
) -> Result<TenantRecord, CatalogError> {
    let id: String = row.get(0)?;
    let status: String = row.get(3)?;
    let settings: String = row.get(4)?;
    let status = TenantStatus::parse(&status).ok_or_else(|| CatalogError::Corrupt {
        id: id.clone(),
        message: format!("unknown status {status:?}"),
    })?;
    // Settings do not route requests: one that does not parse (valid for SQLite's
    // json_valid, too deep for serde) must not take every tenant down with it.
    let settings = serde_json::from_str(&settings).unwrap_or_else(|e| {
        log::error!("tenant {id}: settings ignored, they do not parse: {e}");
        serde_json::Value::Object(Default::default())
    });
    Ok(TenantRecord {
        domains,
        id,
        slug: row.get(1)?,
        name: row.get(2)?,
        status,
        settings,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        deleted_at: row.get(7)?,
    })
}

fn domain_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DomainRecord> {
    Ok(DomainRecord {
        domain: row.get(0)?,
        is_primary: row.get(1)?,
    })
}

/// One tenant with its domains, as of the caller's transaction; `None` if it is gone.
fn load_tenant(tx: &Transaction<'_>, id: &str) -> Result<Option<TenantRecord>, CatalogError> {
    let domains = tx
        .prepare_cached(
            "SELECT domain, is_primary FROM domains WHERE tenant_id = ?1
             ORDER BY is_primary DESC, domain",
        )?
        .query_map([id], domain_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"
    ))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(row) => Ok(Some(tenant_from_row(row, domains)?)),
        None => Ok(None),
    }
}

/// Every tenant with its domains, as of the caller's transaction.
fn load_all(tx: &Transaction<'_>) -> Result<Snapshot, CatalogError> {
    let mut domains: HashMap<String, Vec<DomainRecord>> = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT domain, is_primary, tenant_id FROM domains
             ORDER BY tenant_id, is_primary DESC, domain",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            domains
                .entry(row.get(2)?)
                .or_default()
                .push(domain_from_row(row)?);
        }
    }
    let mut snapshot = Snapshot::default();
    let mut stmt = tx.prepare_cached(&format!("SELECT {TENANT_COLUMNS} FROM tenants"))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let own = domains.remove(&id).unwrap_or_default();
        snapshot.insert(Arc::new(tenant_from_row(row, own)?));
    }
    Ok(snapshot)
}
