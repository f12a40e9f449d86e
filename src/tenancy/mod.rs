//! Tenants at run time: the `Tenant` context handed to handlers, and the
//! `Registry` that opens each tenant's pool on first use, migrates it once,
//! and keeps the number of open pools (and so file descriptors) bounded.
//! Creating, deleting and migrating tenants lives in [`lifecycle`]; the
//! registry's slots and LRU in `registry`, writers' turns in `write_turn`, the
//! checkpoint thread in `checkpoint`, an operator's view of one tenant in `health`, backups
//! and restores of a tenant's file in `backup`, its archive (data portability) in `export`, its
//! online move between a local file and an sqld namespace in `moves`.

pub mod backup;
mod checkpoint;
pub mod export;
pub mod health;
pub mod identify;
pub mod lifecycle;
pub mod moves;
mod reads;
mod registry;
mod write_turn;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use rusqlite::{OptionalExtension, Transaction};

use crate::catalog::{Catalog, CatalogError, TenantRecord, TenantStore, TENANTS_DIR};
use crate::db::{self, DbError, PooledConn};

use crate::store::{self, sqld as store_sqld};
pub use checkpoint::Checkpoints;
use checkpoint::CHECKPOINT_EVERY;
pub use reads::{Lookup, Ticket};
use registry::{Db, OpenPool};
pub use registry::{
    MoveGuard, PoolState, Registry, RegistryConfig, RegistryStats, RestoreGuard,
    DEFAULT_READ_CACHE_MIB,
};

/// Where a tenant's database lives: `data_dir/tenants/<uuid>.db`. Only a
/// canonical (hyphenated, lower-case) UUID is accepted, so that no catalog
/// value can name another file or two ids the same file.
pub fn tenant_db_path(data_dir: &Path, id: &str) -> Option<PathBuf> {
    canonical_id(id).map(|uuid| uuid_db_path(data_dir, &uuid))
}

/// `id` as a UUID if it is one in canonical form (hyphenated, lower-case): the only names a
/// tenant's file or namespace ever has.
pub fn canonical_id(id: &str) -> Option<uuid::Uuid> {
    let uuid = uuid::Uuid::parse_str(id).ok()?;
    (uuid.hyphenated().to_string() == id).then_some(uuid)
}

/// A tenant's directory beside its database, `tenants/<uuid>/`: its files are in `files/`.
pub fn tenant_dir(db_path: &Path) -> PathBuf {
    db_path.with_extension("")
}

/// Whether `sha256` is a name we give a file's content: 64 lower-case hex digits, so that no
/// value from a table or an archive can name a path.
pub fn is_content_name(sha256: &str) -> bool {
    sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where a content's bytes live in a files directory (a tenant's, or a backups directory's):
/// `<first two hex digits>/<sha256>`. `None` for a name that is not a content's.
pub fn content_path(files_dir: &Path, sha256: &str) -> Option<PathBuf> {
    is_content_name(sha256).then(|| files_dir.join(&sha256[..2]).join(sha256))
}

/// A leftover older than this (a `.tmp` copy, an upload in receipt) is a run that died, not one
/// in progress.
const STALE_SECS: u64 = 3600;

/// Removes the files of `dir` whose names end in `suffix` and that are older than an hour:
/// what killed runs left. A younger one may be a copy in progress, which SQLite or a worker
/// may hold open. Returns how many went.
pub fn remove_stale(dir: &Path, suffix: &str) -> usize {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().ends_with(suffix) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age.as_secs() >= STALE_SECS);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn uuid_db_path(data_dir: &Path, id: &uuid::Uuid) -> PathBuf {
    data_dir
        .join(TENANTS_DIR)
        .join(format!("{}.db", id.hyphenated()))
}

/// Whether an existing tenant file may be migrated and served for `record`.
/// Only provisioning starts a tenant database from nothing: an empty or
/// truncated file is damage, not a tenant to set up again. And the file must
/// say it is this tenant's, checked before anything is written to it, so a
/// file restored or copied under the wrong name is never served to another.
pub(crate) fn check_tenant_file(
    conn: &rusqlite::Connection,
    record: &TenantRecord,
) -> Result<(), String> {
    if db::schema_version(conn).map_err(|e| e.to_string())? == 0 {
        return Err("the database file is empty (never provisioned, or truncated)".into());
    }
    let owner: Option<String> = conn
        .query_row(
            "SELECT value FROM tenant_meta WHERE key = 'id'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    match owner {
        Some(owner) if owner == record.id => Ok(()),
        Some(owner) => Err(format!("database file belongs to tenant {owner}")),
        None => Err("database file does not say whose it is".into()),
    }
}

/// [`check_tenant_file`] through the store contract, for a database that is not a local file
/// (an sqld namespace): it must say it is this tenant's before anything is written to it.
pub(crate) fn check_owner(db: &dyn store::Sql, record: &TenantRecord) -> Result<(), String> {
    let owner = db
        .query_row(
            "SELECT value FROM tenant_meta WHERE key = 'id'",
            &[],
            |row| row.get::<String>(0),
        )
        .map_err(|e| format!("the database does not say whose it is ({e})"))?;
    match owner {
        Some(owner) if owner == record.id => Ok(()),
        Some(owner) => Err(format!("database belongs to tenant {owner}")),
        None => Err("database does not say whose it is".into()),
    }
}

#[derive(Debug)]
pub enum TenancyError {
    NotFound,
    Suspended {
        tenant: String,
    },
    Deleted {
        tenant: String,
    },
    /// Created asynchronously and not ready yet.
    Provisioning {
        tenant: String,
    },
    /// The tenant's database cannot be used right now (missing, corrupt,
    /// failed migration). Other tenants are unaffected; it is retried later.
    Unavailable {
        tenant: String,
        reason: String,
    },
    /// The tenant's pool is held (a `Tenant` value or a connection is alive).
    InUse {
        tenant: String,
    },
    /// Being restored from a backup: refused until the restore ends.
    Restoring {
        tenant: String,
    },
    /// Being moved to another store: no restore, purge or second move meanwhile.
    Moving {
        tenant: String,
    },
    /// Two identification methods of one request name different tenants.
    Conflict,
    /// `serve --default-tenant` names a tenant the catalog does not have (or has deleted).
    DefaultMissing {
        tenant: String,
    },
    Catalog(CatalogError),
}

impl fmt::Display for TenancyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenancyError::NotFound => f.write_str("no such tenant"),
            TenancyError::Suspended { tenant } => write!(f, "tenant {tenant} is suspended"),
            TenancyError::Deleted { tenant } => write!(f, "tenant {tenant} is deleted"),
            TenancyError::Provisioning { tenant } => {
                write!(f, "tenant {tenant} is still being provisioned")
            }
            TenancyError::Unavailable { tenant, reason } => {
                write!(f, "tenant {tenant} is unavailable: {reason}")
            }
            TenancyError::InUse { tenant } => write!(f, "tenant {tenant} is in use"),
            TenancyError::Restoring { tenant } => {
                write!(f, "tenant {tenant} is being restored from a backup")
            }
            TenancyError::Moving { tenant } => {
                write!(f, "tenant {tenant} is being moved to another store")
            }
            TenancyError::Conflict => f.write_str("the request names two different tenants"),
            TenancyError::DefaultMissing { tenant } => {
                write!(f, "the default tenant {tenant} does not exist")
            }
            TenancyError::Catalog(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TenancyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TenancyError::Catalog(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CatalogError> for TenancyError {
    fn from(e: CatalogError) -> Self {
        TenancyError::Catalog(e)
    }
}

/// One tenant for the length of a request: its catalog record and its pool.
/// Cheap to clone. While any clone is alive the pool stays open.
#[derive(Clone)]
pub struct Tenant {
    record: Arc<TenantRecord>,
    pool: Arc<OpenPool>,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.record.id)
            .field("slug", &self.record.slug)
            .finish_non_exhaustive()
    }
}

impl Tenant {
    pub fn record(&self) -> &Arc<TenantRecord> {
        &self.record
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    pub fn slug(&self) -> &str {
        &self.record.slug
    }

    /// Where this tenant's files live: `tenants/<uuid>/files/`, beside its database and
    /// named, as it is, by the catalog's UUID.
    pub fn files_dir(&self) -> PathBuf {
        tenant_dir(&self.pool.path).join("files")
    }

    /// Where this tenant's database is kept.
    pub fn store(&self) -> TenantStore {
        self.pool.store()
    }

    /// A connection to this tenant's database file, and to nothing else: for what only a
    /// local file has (backups, export, health). A tenant kept on sqld has none.
    pub fn conn(&self) -> Result<PooledConn, DbError> {
        self.pool.touch();
        match &self.pool.db {
            Db::File(pool) => Ok(pool.get()?),
            Db::Sqld(_) => Err(DbError::NotAFile(format!(
                "tenant {} is kept on sqld: it has no local file",
                self.record.slug
            ))),
        }
    }

    /// The answer kept under `key` if this tenant's file has not changed since it was
    /// computed; on a miss, compute it and hand it to [`Tenant::keep_read`] with the ticket.
    /// `key` must hold everything besides the file that the answer depends on (see [`reads`]).
    /// `fresh`: skip what is kept (the new answer is kept all the same).
    pub fn cached_read(&self, key: String, fresh: bool) -> Lookup {
        self.pool.reads.lookup(key, fresh)
    }

    pub fn keep_read(&self, ticket: Ticket, body: &[u8]) {
        self.pool.reads.keep(ticket, body);
    }

    /// Checkpoints the checkpoint thread finished on this pool (for tests and metrics).
    pub fn checkpoints_done(&self) -> u64 {
        self.pool.checkpoints_done.load(Ordering::Relaxed)
    }

    /// Runs `f` with a connection to this tenant's database, through the store contract: what
    /// tenant code uses to read, so that the same code reads whatever holds the tenant
    /// (docs/scale-out.md; today a local file).
    pub fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&dyn store::Sql) -> Result<T, E>,
        E: From<DbError> + From<store::StoreError>,
    {
        match &self.pool.db {
            Db::File(_) => {
                let conn = self.conn()?;
                f(&conn)
            }
            Db::Sqld(client) => {
                self.pool.touch();
                f(&store_sqld::SqldRead {
                    client,
                    namespace: &self.record.id,
                })
            }
        }
    }

    /// Runs `f` in one read transaction of its own, which sees one moment of the database
    /// whatever writers do meanwhile: for a read that takes long (an export). Locally on a
    /// connection of its own rather than one of the pool's few (a download lasts as long as
    /// its client reads); on sqld on a stream of its own.
    pub fn read_snapshot<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&dyn store::Sql) -> Result<T, E>,
        E: From<DbError> + From<store::StoreError> + From<rusqlite::Error>,
    {
        self.pool.touch();
        match &self.pool.db {
            Db::File(_) => {
                let conn = db::open(&self.pool.path, db::DbKind::Tenant, db::Create::Never)?;
                // Deferred and rolled back on drop: the snapshot is taken at the first read.
                let tx = conn.unchecked_transaction()?;
                f(&tx)
            }
            Db::Sqld(client) => store_sqld::read_snapshot(client, &self.record.id, f),
        }
    }

    /// [`Tenant::write`] through the store contract: what tenant code uses to write.
    pub fn write_sql<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&dyn store::Sql) -> Result<T, E>,
        E: From<DbError> + From<rusqlite::Error> + From<store::StoreError>,
    {
        let Db::Sqld(client) = &self.pool.db else {
            return self.write(|tx| f(tx));
        };
        self.pool.touch();
        // This node's writers take turns here too, so that sqld's lock sees one of them at a
        // time; other nodes' writers meet at sqld's `BEGIN IMMEDIATE`.
        let turn = self.take_turn::<E>()?;
        let result = store_sqld::write(client, &self.record.id, f);
        drop(turn);
        result
    }

    /// The tenant's write turn on this node, or busy past the wait.
    fn take_turn<E: From<rusqlite::Error>>(&self) -> Result<write_turn::Turn<'_>, E> {
        let waiting = std::time::Instant::now();
        let turn = self.pool.writer.take(db::BUSY_TIMEOUT);
        self.pool.metrics.write_turn_waited(waiting.elapsed());
        turn.ok_or_else(|| {
            E::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some(format!(
                    "tenant {}: no write turn within {:?}",
                    self.record.slug,
                    db::BUSY_TIMEOUT
                )),
            ))
        })
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on this tenant's database;
    /// commits on `Ok`, rolls back on `Err`. The local file's own connection: for what only a
    /// file has (tests, backups); tenant code writes with [`Tenant::write_sql`].
    pub fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E>,
        E: From<DbError> + From<rusqlite::Error>,
    {
        // The turn first, then a connection: a queued writer holds none of the few. Waiting
        // is bounded as it was at SQLite's lock, and ends the same way: busy.
        let turn = self.take_turn::<E>()?;
        let mut conn = self.conn()?;
        let result = db::write(&mut conn, f);
        drop(turn);
        drop(conn);
        let commits = self.pool.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if commits.is_multiple_of(CHECKPOINT_EVERY) {
            self.pool.queue_checkpoint();
        }
        result
    }
}

/// A poisoned lock only means a thread panicked while holding it; slot states
/// are replaced whole, so they are never half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// The tenant serving `host` (a Host header value; case and port ignored).
pub fn resolve_domain(
    catalog: &Catalog,
    registry: &Registry,
    host: &str,
) -> Result<Tenant, TenancyError> {
    let record = catalog.by_domain(host)?.ok_or(TenancyError::NotFound)?;
    registry.open(record)
}

/// The tenant with this slug (path-based routing, CLI).
pub fn resolve_slug(
    catalog: &Catalog,
    registry: &Registry,
    slug: &str,
) -> Result<Tenant, TenancyError> {
    let record = catalog.by_slug(slug)?.ok_or(TenancyError::NotFound)?;
    registry.open(record)
}
