//! Tenant lifecycle: create, suspend, activate, delete, restore, purge,
//! rename, domains, listing, and migrating every tenant database. Functions
//! taking the catalog (and the registry where pools are involved); the CLI
//! and the admin API both call these.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{tenant_db_path, uuid_db_path, Registry, TenancyError};
use crate::args;
use crate::catalog::{
    validate_domains, validate_name, validate_slug, Catalog, CatalogError, TenantRecord,
    TenantStatus, TenantStore, ValidationError,
};
use crate::db::{self, Create, DbError, DbKind};
use crate::sqld;
use crate::store::sqld as store_sqld;
use crate::store::{Sql, StoreError};

#[derive(Debug)]
pub enum LifecycleError {
    Validation {
        field: &'static str,
        message: String,
    },
    SlugTaken(String),
    DomainTaken(String),
    /// No tenant with this slug (or id).
    NotFound(String),
    DomainNotFound(String),
    /// Restore or purge of a tenant that is not deleted.
    NotDeleted(String),
    /// The operation does not apply in this status (suspending a deleted
    /// tenant, say).
    WrongStatus {
        slug: String,
        status: TenantStatus,
    },
    /// The tenant's pool is in use, so its file cannot be removed yet.
    InUse(String),
    /// Another operation on the tenant runs (a restore, a purge, a move): try again after it.
    Busy {
        slug: String,
        doing: &'static str,
    },
    /// A move that failed halfway and was undone: the tenant stays where it was.
    MoveFailed {
        slug: String,
        to: TenantStore,
        reason: String,
    },
    /// A move to the store the tenant is already kept in.
    AlreadyThere {
        slug: String,
        store: TenantStore,
    },
    Tenancy(TenancyError),
    Catalog(CatalogError),
    /// A tenant database elsewhere than a local file (sqld) failed or is out of reach.
    Store(StoreError),
    /// The tenant is kept on sqld and this process was given no sqld server.
    NoSqld,
    /// The tenant's namespace is gone from sqld (restore of a deleted tenant).
    NamespaceMissing(String),
    Db(DbError),
    Io {
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for LifecycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifecycleError::Validation { field, message } => {
                write!(f, "invalid {field}: {message}")
            }
            LifecycleError::SlugTaken(slug) => write!(f, "slug {slug} is already taken"),
            LifecycleError::DomainTaken(domain) => {
                write!(f, "domain {domain} is already taken")
            }
            LifecycleError::NotFound(tenant) => write!(f, "no tenant {tenant}"),
            LifecycleError::DomainNotFound(domain) => write!(f, "no domain {domain}"),
            LifecycleError::NotDeleted(slug) => write!(f, "tenant {slug} is not deleted"),
            LifecycleError::WrongStatus { slug, status } => {
                write!(f, "tenant {slug} is {status}")
            }
            LifecycleError::InUse(slug) => write!(f, "tenant {slug} is in use"),
            LifecycleError::Busy { slug, doing } => {
                write!(f, "tenant {slug} is {doing}; try again when that is done")
            }
            LifecycleError::MoveFailed { slug, to, reason } => write!(
                f,
                "moving tenant {slug} to {to} failed and was undone (it stays where it was): \
                 {reason}"
            ),
            LifecycleError::AlreadyThere { slug, store } => {
                write!(f, "tenant {slug} is already kept in {}", store.as_str())
            }
            LifecycleError::Tenancy(e) => e.fmt(f),
            LifecycleError::Catalog(e) => e.fmt(f),
            LifecycleError::Store(e) => e.fmt(f),
            LifecycleError::NoSqld => {
                f.write_str("tenants are kept on sqld, and no --sqld-url was given")
            }
            LifecycleError::NamespaceMissing(slug) => {
                write!(f, "tenant {slug}'s namespace is gone from sqld")
            }
            LifecycleError::Db(e) => e.fmt(f),
            LifecycleError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for LifecycleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LifecycleError::Tenancy(e) => Some(e),
            LifecycleError::Catalog(e) => Some(e),
            LifecycleError::Store(e) => Some(e),
            LifecycleError::Db(e) => Some(e),
            LifecycleError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ValidationError> for LifecycleError {
    fn from(e: ValidationError) -> Self {
        LifecycleError::Validation {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<DbError> for LifecycleError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Io { path, source } => LifecycleError::Io { path, source },
            other => LifecycleError::Db(other),
        }
    }
}

impl From<CatalogError> for LifecycleError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Validation(v) => v.into(),
            CatalogError::SlugTaken(s) => LifecycleError::SlugTaken(s),
            CatalogError::DomainTaken(d) => LifecycleError::DomainTaken(d),
            CatalogError::NotFound(t) => LifecycleError::NotFound(t),
            CatalogError::DomainNotFound(d) => LifecycleError::DomainNotFound(d),
            CatalogError::Db(e) => e.into(),
            CatalogError::Store(e) => LifecycleError::Store(e),
            other => LifecycleError::Catalog(other),
        }
    }
}

impl From<StoreError> for LifecycleError {
    fn from(e: StoreError) -> Self {
        LifecycleError::Store(e)
    }
}

impl From<sqld::SqldError> for LifecycleError {
    fn from(e: sqld::SqldError) -> Self {
        StoreError::from(e).into()
    }
}

impl From<rusqlite::Error> for LifecycleError {
    fn from(e: rusqlite::Error) -> Self {
        LifecycleError::Db(DbError::Sqlite(e))
    }
}

#[derive(Clone, Debug, Default)]
pub struct NewTenant {
    pub slug: String,
    pub name: String,
    /// The first one is the primary domain.
    pub domains: Vec<String>,
}

pub(super) fn find(catalog: &Catalog, slug: &str) -> Result<Arc<TenantRecord>, LifecycleError> {
    catalog
        .by_slug(slug)?
        .ok_or_else(|| LifecycleError::NotFound(slug.to_string()))
}

pub(super) fn db_path(catalog: &Catalog, record: &TenantRecord) -> Result<PathBuf, LifecycleError> {
    tenant_db_path(catalog.data_dir(), &record.id).ok_or_else(|| {
        LifecycleError::Catalog(CatalogError::Corrupt {
            id: record.id.clone(),
            message: "id is not a canonical UUID".to_string(),
        })
    })
}

/// Creates a tenant: its database file (migrated and seeded) and then its
/// catalog row with domains. All or nothing: if any step fails, the file is
/// removed and no row is left.
pub fn create(catalog: &Catalog, new: &NewTenant) -> Result<Arc<TenantRecord>, LifecycleError> {
    validate_slug(&new.slug)?;
    let name = validate_name(&new.name)?;
    let domains = validate_domains(&new.domains)?;
    // Fail early with a clear error; the catalog insert checks again inside
    // its transaction, since another process may take a name meanwhile.
    let snapshot = catalog.snapshot()?;
    if snapshot.by_slug(&new.slug).is_some() {
        return Err(LifecycleError::SlugTaken(new.slug.clone()));
    }
    if let Some(taken) = domains.iter().find(|d| snapshot.by_domain(d).is_some()) {
        return Err(LifecycleError::DomainTaken(taken.clone()));
    }
    provision(catalog, &new.slug, &name, &domains)
}

/// The steps after validation: database first, catalog row last, so a tenant in
/// the catalog always has a database. Separate from `create` so tests can
/// make the final insert fail for real.
pub(crate) fn provision(
    catalog: &Catalog,
    slug: &str,
    name: &str,
    domains: &[String],
) -> Result<Arc<TenantRecord>, LifecycleError> {
    let id = Uuid::new_v4();
    let id_text = id.hyphenated().to_string();
    let stores = catalog.stores();
    if stores.new_tenants == TenantStore::Sqld {
        let client = sqld_client(catalog)?;
        make_namespace(&client, &id_text, slug, name)?;
        let inserted = catalog.insert_tenant_row(
            &id,
            slug,
            name,
            domains,
            TenantStatus::Active,
            TenantStore::Sqld,
        );
        if let Err(e) = inserted {
            drop_namespace(&client, &id_text);
            return Err(e.into());
        }
        return catalog
            .by_id(&id_text)?
            .ok_or(LifecycleError::NotFound(id_text));
    }
    let path = uuid_db_path(catalog.data_dir(), &id);
    let result = (|| -> Result<(), LifecycleError> {
        make_file(&path, &id_text, slug, name)?;
        // The file is closed before the row exists: nobody can be using it yet.
        catalog.insert_tenant_row(
            &id,
            slug,
            name,
            domains,
            TenantStatus::Active,
            TenantStore::Local,
        )?;
        Ok(())
    })();
    if let Err(e) = result {
        // A file that was already there is not ours to remove.
        if !matches!(e, LifecycleError::Db(DbError::Exists(_))) {
            if let Err(cleanup) = db::remove_database_files(&path) {
                log::error!(
                    "could not remove {} after a failed create: {cleanup}",
                    path.display()
                );
            }
        }
        return Err(e);
    }
    catalog
        .by_id(&id_text)?
        .ok_or(LifecycleError::NotFound(id_text))
}

/// The sqld server of this catalog's tenants, or why there is none.
pub(crate) fn sqld_client(catalog: &Catalog) -> Result<Arc<sqld::Client>, LifecycleError> {
    catalog.stores().sqld.ok_or(LifecycleError::NoSqld)
}

/// A tenant's namespace on sqld, made, migrated and seeded with who it belongs to. All or
/// nothing for what this call made: a namespace it created is deleted again if a later step
/// fails. One that exists already (an earlier attempt at the same provisioning, perhaps still
/// running beside this one) is completed, never deleted: every step is idempotent, and the
/// namespace must say it is this tenant's.
fn make_namespace(
    client: &sqld::Client,
    id: &str,
    slug: &str,
    name: &str,
) -> Result<(), LifecycleError> {
    if super::canonical_id(id).is_none() {
        return Err(LifecycleError::Catalog(CatalogError::Corrupt {
            id: id.to_string(),
            message: "id is not a canonical UUID".to_string(),
        }));
    }
    let created = match client.create_namespace(id) {
        Ok(()) => true,
        Err(sqld::SqldError::NamespaceExists(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let seeded = (|| -> Result<(), LifecycleError> {
        store_sqld::migrate(client, id, db::tenant_migrations())?;
        store_sqld::write(client, id, |db| seed_meta(db, id, slug, name))?;
        let read = store_sqld::SqldRead {
            client,
            namespace: id,
        };
        let db: &dyn Sql = &read;
        let owner = db.query_row(
            "SELECT value FROM tenant_meta WHERE key = 'id'",
            &[],
            |row| row.get::<String>(0),
        )?;
        match owner {
            Some(owner) if owner == id => Ok(()),
            other => Err(LifecycleError::Store(StoreError::Backend(format!(
                "namespace {id} says it belongs to {other:?}"
            )))),
        }
    })();
    if seeded.is_err() && created {
        drop_namespace(client, id);
    }
    seeded
}

fn seed_meta(db: &dyn Sql, id: &str, slug: &str, name: &str) -> Result<(), LifecycleError> {
    for (key, value) in [
        ("id", id),
        ("slug", slug),
        ("name", name),
        ("created_at", db::now_rfc3339().as_str()),
    ] {
        // An earlier attempt's rows stay: the owner check after says whether they are ours.
        db.execute(
            "INSERT INTO tenant_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            args![key, value],
        )?;
    }
    Ok(())
}

/// Deletes a namespace this process made and could not finish: logged, since the failure
/// that led here is what the caller reports.
fn drop_namespace(client: &sqld::Client, id: &str) {
    if let Err(e) = client.delete_namespace(id) {
        log::error!("could not delete namespace {id} after a failed create: {e}");
    }
}

/// A tenant's new database file, migrated and seeded with who it belongs to; closed again.
fn make_file(
    path: &std::path::Path,
    id: &str,
    slug: &str,
    name: &str,
) -> Result<(), LifecycleError> {
    let mut conn = db::open(path, DbKind::Tenant, Create::New)?;
    db::migrate(&mut conn, db::tenant_migrations())?;
    db::write(&mut conn, |tx| seed_meta(tx, id, slug, name))
}

/// The first half of an asynchronous create: the checks of [`create`] and the catalog row, in
/// status `provisioning` (requests to it are refused as not ready) and with no database yet,
/// to be kept in `store`; [`finish_provisioning`] makes it.
pub fn create_provisioning(
    catalog: &Catalog,
    new: &NewTenant,
    store: TenantStore,
) -> Result<Arc<TenantRecord>, LifecycleError> {
    validate_slug(&new.slug)?;
    let name = validate_name(&new.name)?;
    let domains = validate_domains(&new.domains)?;
    let id = Uuid::new_v4();
    catalog.insert_tenant_row(
        &id,
        &new.slug,
        &name,
        &domains,
        TenantStatus::Provisioning,
        store,
    )?;
    let id = id.hyphenated().to_string();
    catalog.by_id(&id)?.ok_or(LifecycleError::NotFound(id))
}

/// The second half: makes the file of a `provisioning` tenant and makes it active. A file left
/// by an earlier attempt that died halfway is replaced: the tenant was never usable, so
/// nobody wrote to it.
pub fn finish_provisioning(
    catalog: &Catalog,
    id: &str,
) -> Result<Arc<TenantRecord>, LifecycleError> {
    let record = catalog
        .by_id(id)?
        .ok_or_else(|| LifecycleError::NotFound(id.to_string()))?;
    if record.status != TenantStatus::Provisioning {
        return Err(wrong_status(&record.slug, record.status));
    }
    match record.store {
        TenantStore::Local => {
            let path = db_path(catalog, &record)?;
            db::remove_database_files(&path)?;
            make_file(&path, &record.id, &record.slug, &record.name)?;
        }
        TenantStore::Sqld => {
            make_namespace(
                &*sqld_client(catalog)?,
                &record.id,
                &record.slug,
                &record.name,
            )?;
        }
    }
    let made = catalog.transition(
        &record.id,
        &[TenantStatus::Provisioning],
        TenantStatus::Active,
    )?;
    made.ok_or_else(|| {
        // Deleted meanwhile: the file stays for purge, like any deleted tenant's.
        wrong_status(&record.slug, TenantStatus::Deleted)
    })
}

pub fn show(catalog: &Catalog, slug: &str) -> Result<Arc<TenantRecord>, LifecycleError> {
    find(catalog, slug)
}

/// Every tenant, deleted ones included, ordered by slug.
pub fn list(catalog: &Catalog) -> Result<Vec<Arc<TenantRecord>>, LifecycleError> {
    Ok(catalog.list()?)
}

/// Moves a tenant between statuses with the check and the change in one
/// transaction. When the status was not one of `from`: `Ok(record)` if it is
/// already `to` (the operations are idempotent), else `wrong` decides.
fn transition(
    catalog: &Catalog,
    slug: &str,
    from: &[TenantStatus],
    to: TenantStatus,
    wrong: fn(&str, TenantStatus) -> LifecycleError,
) -> Result<Arc<TenantRecord>, LifecycleError> {
    let record = find(catalog, slug)?;
    if let Some(changed) = catalog.transition(&record.id, from, to)? {
        return Ok(changed);
    }
    let now = catalog
        .by_id(&record.id)?
        .ok_or_else(|| LifecycleError::NotFound(slug.to_string()))?;
    if now.status == to {
        Ok(now)
    } else {
        Err(wrong(slug, now.status))
    }
}

fn wrong_status(slug: &str, status: TenantStatus) -> LifecycleError {
    LifecycleError::WrongStatus {
        slug: slug.to_string(),
        status,
    }
}

fn not_deleted(slug: &str, _status: TenantStatus) -> LifecycleError {
    LifecycleError::NotDeleted(slug.to_string())
}

/// Active → suspended (requests are refused; data kept). Idempotent.
pub fn suspend(catalog: &Catalog, slug: &str) -> Result<Arc<TenantRecord>, LifecycleError> {
    use TenantStatus::*;
    transition(catalog, slug, &[Active], Suspended, wrong_status)
}

/// Suspended → active. A deleted tenant needs `restore`. Idempotent.
pub fn activate(catalog: &Catalog, slug: &str) -> Result<Arc<TenantRecord>, LifecycleError> {
    use TenantStatus::*;
    transition(catalog, slug, &[Suspended], Active, wrong_status)
}

/// Soft delete: status `deleted`, `deleted_at` set, file, slug and domains
/// kept until `purge`. Idempotent.
pub fn delete(catalog: &Catalog, slug: &str) -> Result<Arc<TenantRecord>, LifecycleError> {
    use TenantStatus::*;
    transition(
        catalog,
        slug,
        &[Active, Suspended, Provisioning],
        Deleted,
        wrong_status,
    )
}

/// Deleted → active, if its database file is still there.
pub fn restore(catalog: &Catalog, slug: &str) -> Result<Arc<TenantRecord>, LifecycleError> {
    let record = find(catalog, slug)?;
    if record.status != TenantStatus::Deleted {
        return Err(LifecycleError::NotDeleted(slug.to_string()));
    }
    match record.store {
        TenantStore::Local => db::ensure_exists(&db_path(catalog, &record)?)?,
        TenantStore::Sqld => {
            if !sqld_client(catalog)?.namespace_exists(&record.id)? {
                return Err(LifecycleError::NamespaceMissing(slug.to_string()));
            }
        }
    }
    let restored = transition(
        catalog,
        slug,
        &[TenantStatus::Deleted],
        TenantStatus::Active,
        not_deleted,
    );
    // A purge that got there first took the row: the tenant is gone.
    match restored {
        Err(LifecycleError::NotFound(_))
        | Err(LifecycleError::Catalog(CatalogError::NotFound(_))) => {
            Err(LifecycleError::NotFound(slug.to_string()))
        }
        other => other,
    }
}

/// Removes a deleted tenant for good: its catalog row (and domains), then its
/// pool, then the database file with its `-wal` and `-shm`, and its files. The row goes
/// first, in one transaction that re-checks the status, so a restore racing
/// the purge either wins (nothing is removed) or finds no tenant; never a
/// restored tenant whose file then disappears. Should removing the files fail
/// after that, `tenantd migrate --status` lists them as orphans.
pub fn purge(catalog: &Catalog, registry: &Registry, slug: &str) -> Result<(), LifecycleError> {
    let record = find(catalog, slug)?;
    let path = db_path(catalog, &record)?;
    // Not while a restore writes the tenant's files, and no restore starts before they are gone.
    let _guard = registry
        .mark_restoring(&record.id, &record.slug)
        .map_err(LifecycleError::Tenancy)?;
    if !catalog.delete_row_if_deleted(&record.id)? {
        return Err(LifecycleError::NotDeleted(slug.to_string()));
    }
    // A request that identified the tenant before it was deleted may still
    // hold its pool: give it a moment to finish before the files go.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match registry.evict(&record.id) {
            Ok(_) => break,
            Err(TenancyError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                log::warn!(
                    "purging {slug}: its pool is still in use ({e}); removing the files anyway"
                );
                break;
            }
        }
    }
    if record.store == TenantStore::Local {
        db::remove_database_files(&path)?;
    }
    let dir = super::tenant_dir(&path);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("purging {slug}: its files in {} remain: {e}", dir.display());
        }
    }
    if record.store == TenantStore::Sqld {
        // Deleted without asking first whether it exists: sqld may answer that question
        // wrongly while it reloads a namespace. One already gone is purged all the same; any
        // other failure is said, since nothing lists a namespace left behind.
        match sqld_client(catalog)?.delete_namespace(&record.id) {
            Ok(()) | Err(sqld::SqldError::NamespaceMissing(_)) => {}
            Err(e) => {
                log::error!("purging {slug}: its namespace {} remains: {e}", record.id);
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// What a rename changes: the slug (the tenant's address), the display name, or both. Also
/// the body of `PATCH /api/admin/tenants/{t}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Rename {
    pub slug: Option<String>,
    pub name: Option<String>,
}

/// A tenant as it was before a rename and as it is after.
#[derive(Clone, Debug)]
pub struct Renamed {
    pub before: Arc<TenantRecord>,
    pub after: Arc<TenantRecord>,
}

impl Renamed {
    /// For the audit log: `{"slug": {"from", "to"}, "name": {"from", "to"}}`, with only the
    /// fields that changed.
    pub fn changes(&self) -> serde_json::Map<String, serde_json::Value> {
        let (before, after) = (&self.before, &self.after);
        [
            ("slug", &before.slug, &after.slug),
            ("name", &before.name, &after.name),
        ]
        .into_iter()
        .filter(|(_, from, to)| from != to)
        .map(|(field, from, to)| {
            (
                field.to_string(),
                serde_json::json!({ "from": from, "to": to }),
            )
        })
        .collect()
    }
}

/// Changes a tenant's slug, display name or both: the catalog row, then the tenant file's
/// `tenant_meta` (`GET /api/tenant` answers from the file).
///
/// With `registry` (the server), refused as `Restoring` while a restore of the tenant runs, and
/// a restore waits for the rename to finish: the file is written outside the tenant's pool.
pub fn rename(
    catalog: &Catalog,
    registry: Option<&Registry>,
    slug: &str,
    change: &Rename,
) -> Result<Renamed, LifecycleError> {
    match registry {
        Some(registry) => {
            let record = find(catalog, slug)?;
            registry
                .unless_restoring(&record.id, &record.slug, || {
                    rename_now(catalog, slug, change)
                })
                .map_err(LifecycleError::Tenancy)?
        }
        None => rename_now(catalog, slug, change),
    }
}

fn rename_now(catalog: &Catalog, slug: &str, change: &Rename) -> Result<Renamed, LifecycleError> {
    if change.slug.is_none() && change.name.is_none() {
        return Err(LifecycleError::Validation {
            field: "slug",
            message: "nothing to change: give a new slug, a new name, or both".into(),
        });
    }
    if let Some(new_slug) = &change.slug {
        validate_slug(new_slug)?;
    }
    let name = change.name.as_deref().map(validate_name).transpose()?;
    let before = find(catalog, slug)?;
    let after = catalog.rename(&before.id, change.slug.as_deref(), name.as_deref())?;
    let meta: Vec<(&str, &str)> = [
        ("slug", &change.slug, &after.slug),
        ("name", &change.name, &after.name),
    ]
    .into_iter()
    .filter(|(_, given, _)| given.is_some())
    .map(|(key, _, value)| (key, value.as_str()))
    .collect();
    // The file keeps saying whose it is. The catalog is the authority, so a file that cannot be
    // updated now is logged, not a failed rename. This connection is not the server's pool, if
    // one is open: its BEGIN IMMEDIATE takes the file's write lock like any of the pool's
    // writers, and its commit moves the WAL-index header that the pool's answers cache reads,
    // as a commit by the CLI does. A value given as it already was is not written again.
    let set = |db: &dyn Sql| -> Result<(), LifecycleError> {
        for (key, value) in &meta {
            db.execute(
                "UPDATE tenant_meta SET value = ?2 WHERE key = ?1 AND value IS NOT ?2",
                args![*key, *value],
            )?;
        }
        Ok(())
    };
    let update = match after.store {
        TenantStore::Local => db_path(catalog, &after).and_then(|path| {
            let mut conn = db::open(&path, DbKind::Tenant, Create::Never)?;
            db::write(&mut conn, |tx| set(tx))
        }),
        TenantStore::Sqld => {
            sqld_client(catalog).and_then(|client| store_sqld::write(&client, &after.id, set))
        }
    };
    if let Err(e) = update {
        log::warn!(
            "tenant {} renamed in the catalog, but not in its file: {e}",
            after.slug
        );
    }
    Ok(Renamed { before, after })
}

pub fn add_domain(
    catalog: &Catalog,
    slug: &str,
    domain: &str,
) -> Result<Arc<TenantRecord>, LifecycleError> {
    let record = find(catalog, slug)?;
    Ok(catalog.add_domain(&record.id, domain)?)
}

pub fn remove_domain(
    catalog: &Catalog,
    slug: &str,
    domain: &str,
) -> Result<Arc<TenantRecord>, LifecycleError> {
    let record = find(catalog, slug)?;
    Ok(catalog.remove_domain(&record.id, domain)?)
}

#[derive(Clone, Debug)]
pub struct MigrateConfig {
    pub workers: usize,
    /// Only this slug (deleted tenants included when named); otherwise every
    /// active and suspended tenant.
    pub only: Option<String>,
    /// The binary's tenant migrations, or (in tests of the runner) more.
    pub migrations: &'static [db::Migration],
}

impl Default for MigrateConfig {
    fn default() -> Self {
        MigrateConfig {
            workers: 4,
            only: None,
            migrations: db::tenant_migrations(),
        }
    }
}

/// One tenant's outcome. `from`/`to` are `None` when the database could not
/// be read at all; after a failed migration `to` is where it stayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantMigration {
    pub slug: String,
    pub id: String,
    pub from: Option<u32>,
    pub to: Option<u32>,
    pub applied: Vec<u32>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MigrateSummary {
    /// The binary's latest tenant migration.
    pub target: u32,
    /// By slug.
    pub results: Vec<TenantMigration>,
}

impl MigrateSummary {
    pub fn failed(&self) -> impl Iterator<Item = &TenantMigration> {
        self.results.iter().filter(|r| r.error.is_some())
    }

    pub fn failed_count(&self) -> usize {
        self.failed().count()
    }

    pub fn migrated_count(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.error.is_none() && !r.applied.is_empty())
            .count()
    }
}

/// The binary's latest tenant schema version.
pub fn tenant_target_version() -> u32 {
    db::tenant_migrations().last().map_or(0, |m| m.version)
}

/// Migrates tenant databases on `workers` threads, carrying on past failures.
/// Deleted tenants are skipped (they are migrated on first access after a
/// restore) unless named in `only`. Safe while a server runs: each migration
/// takes the database's write lock and re-checks it is still pending.
pub fn migrate_all(
    catalog: &Catalog,
    config: &MigrateConfig,
) -> Result<MigrateSummary, LifecycleError> {
    let records: Vec<Arc<TenantRecord>> = match &config.only {
        Some(slug) => vec![find(catalog, slug)?],
        None => catalog
            .list()?
            .into_iter()
            .filter(|r| r.status != TenantStatus::Deleted)
            .collect(),
    };
    let workers = config.workers.clamp(1, records.len().max(1));
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Arc<TenantRecord>>();
    let (results_tx, results_rx) = crossbeam_channel::unbounded();
    for record in records {
        // The receiver is alive in this scope; a send cannot fail.
        let _ = jobs_tx.send(record);
    }
    drop(jobs_tx);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (jobs, results) = (jobs_rx.clone(), results_tx.clone());
            scope.spawn(move || {
                for record in jobs {
                    let _ = results.send(migrate_one(catalog, &record, config.migrations));
                }
            });
        }
    });
    drop(results_tx);
    let mut results: Vec<TenantMigration> = results_rx.into_iter().collect();
    results.sort_by(|a, b| a.slug.cmp(&b.slug));
    Ok(MigrateSummary {
        target: config.migrations.last().map_or(0, |m| m.version),
        results,
    })
}

fn migrate_one(
    catalog: &Catalog,
    record: &TenantRecord,
    migrations: &[db::Migration],
) -> TenantMigration {
    let mut out = TenantMigration {
        slug: record.slug.clone(),
        id: record.id.clone(),
        from: None,
        to: None,
        applied: Vec::new(),
        error: None,
    };
    let result = (|| -> Result<(), LifecycleError> {
        if record.store == TenantStore::Sqld {
            let client = sqld_client(catalog)?;
            out.from = Some(store_sqld::schema_version(&client, &record.id)?);
            super::check_owner(
                &store_sqld::SqldRead {
                    client: &client,
                    namespace: &record.id,
                },
                record,
            )
            .map_err(|reason| {
                LifecycleError::Tenancy(TenancyError::Unavailable {
                    tenant: record.slug.clone(),
                    reason,
                })
            })?;
            out.applied = store_sqld::migrate(&client, &record.id, migrations)?;
            out.to = store_sqld::schema_version(&client, &record.id).ok();
            return Ok(());
        }
        let path = db_path(catalog, record)?;
        let mut conn = db::open(&path, DbKind::Tenant, Create::Never)?;
        out.from = Some(db::schema_version(&conn)?);
        super::check_tenant_file(&conn, record).map_err(|reason| {
            LifecycleError::Tenancy(TenancyError::Unavailable {
                tenant: record.slug.clone(),
                reason,
            })
        })?;
        let migrated = db::migrate(&mut conn, migrations);
        out.to = db::schema_version(&conn).ok();
        let report = migrated?;
        out.applied = report.applied;
        Ok(())
    })();
    if let Err(e) = result {
        log::error!("migrating tenant {} ({}): {e}", record.slug, record.id);
        out.error = Some(e.to_string());
    }
    out
}

/// One tenant's schema version next to the binary's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantSchema {
    pub slug: String,
    pub id: String,
    pub status: TenantStatus,
    pub version: Option<u32>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SchemaStatus {
    /// The binary's latest central and tenant migrations.
    pub central_target: u32,
    pub tenant_target: u32,
    pub central: u32,
    /// Every tenant, deleted ones included, by slug.
    pub tenants: Vec<TenantSchema>,
    /// Tenant files that no catalog row names (see [`orphans`]).
    pub orphans: Vec<Orphan>,
}

/// Schema versions of the catalog and of every tenant database; migrates
/// nothing.
pub fn status(catalog: &Catalog) -> Result<SchemaStatus, LifecycleError> {
    let records = catalog.list()?;
    let tenants = records
        .iter()
        .map(|record| {
            let version = match record.store {
                TenantStore::Local => db_path(catalog, record).and_then(|path| {
                    let conn = db::open(&path, DbKind::Tenant, Create::Never)?;
                    Ok(db::schema_version(&conn)?)
                }),
                TenantStore::Sqld => sqld_client(catalog)
                    .and_then(|client| Ok(store_sqld::schema_version(&client, &record.id)?)),
            };
            TenantSchema {
                slug: record.slug.clone(),
                id: record.id.clone(),
                status: record.status,
                version: version.as_ref().ok().copied(),
                error: version.err().map(|e| e.to_string()),
            }
        })
        .collect();
    Ok(SchemaStatus {
        central_target: db::central_migrations().last().map_or(0, |m| m.version),
        tenant_target: tenant_target_version(),
        central: catalog.schema_version()?,
        tenants,
        orphans: orphans(catalog, ORPHAN_MIN_AGE, SystemTime::now())?,
    })
}

/// How long a tenant file with no catalog row is left alone. A `tenants create` in another
/// process makes its file first and inserts the row last, a few milliseconds later; a file
/// that has not changed for this long is no create in progress but one that crashed (or was
/// killed) between the two.
pub const ORPHAN_MIN_AGE: Duration = Duration::from_secs(10 * 60);

/// A tenant file (with its `-wal` and `-shm`) that no catalog row names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Orphan {
    /// `<uuid>.db`, in `tenants/`.
    pub file: String,
    /// Seconds since any of its files last changed.
    pub age_secs: u64,
    /// Old enough for [`remove_orphans`] to remove.
    pub removable: bool,
}

/// Files in `tenants/` named as provisioning names them (`<uuid>.db`, `-wal`, `-shm`) whose
/// UUID no catalog row has, deleted tenants' rows included. Anything else in the directory is
/// not ours to judge and is left out.
pub fn orphans(
    catalog: &Catalog,
    min_age: Duration,
    now: SystemTime,
) -> Result<Vec<Orphan>, LifecycleError> {
    let dir = catalog.tenants_dir();
    let entries = fs::read_dir(&dir).map_err(|source| LifecycleError::Io {
        path: dir.clone(),
        source,
    })?;
    // The directory before the catalog: a create that finishes in between then shows as
    // named, never the other way round.
    let mut newest: BTreeMap<Uuid, Option<SystemTime>> = BTreeMap::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(stem) = ["", "-wal", "-shm"]
            .iter()
            .find_map(|suffix| name.strip_suffix(&format!(".db{suffix}")))
        else {
            continue;
        };
        let Some(id) = Uuid::parse_str(stem)
            .ok()
            .filter(|id| id.hyphenated().to_string() == stem)
        else {
            continue;
        };
        // A file whose time cannot be read counts as changed just now.
        let modified = entry.metadata().and_then(|m| m.modified()).ok();
        let slot = newest.entry(id).or_insert(Some(SystemTime::UNIX_EPOCH));
        *slot = match (*slot, modified) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    let known: HashSet<String> = catalog.list()?.iter().map(|r| r.id.clone()).collect();
    Ok(newest
        .into_iter()
        .filter(|(id, _)| !known.contains(&id.hyphenated().to_string()))
        .map(|(id, modified)| {
            let age = modified.map_or(Duration::ZERO, |m| {
                now.duration_since(m).unwrap_or_default()
            });
            Orphan {
                file: format!("{}.db", id.hyphenated()),
                age_secs: age.as_secs(),
                removable: age >= min_age,
            }
        })
        .collect())
}

/// Removes the orphans at least `min_age` old: each file with its `-wal` and `-shm`, after
/// asking the catalog once more whether a row names it. Returns those removed. Call it only
/// where no connection to them can be open in this process: the CLI opens no tenant, and the
/// server calls it at start, before it opens any.
pub fn remove_orphans(
    catalog: &Catalog,
    min_age: Duration,
    now: SystemTime,
) -> Result<Vec<Orphan>, LifecycleError> {
    let mut removed = Vec::new();
    for orphan in orphans(catalog, min_age, now)? {
        let id = orphan.file.trim_end_matches(".db");
        if !orphan.removable || catalog.by_id(id)?.is_some() {
            continue;
        }
        db::remove_database_files(&catalog.tenants_dir().join(&orphan.file))?;
        removed.push(orphan);
    }
    Ok(removed)
}
