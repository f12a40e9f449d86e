//! What every SQLite connection shares: how a file is opened (never created
//! by accident), the pragmas set on every connection, pools, `BEGIN
//! IMMEDIATE` writes, and the embedded schema migrations.

mod migrations;
pub(crate) mod probe;
mod time;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use scheduled_thread_pool::{OnPoolDropBehavior, ScheduledThreadPool};

pub use migrations::{
    central_migrations, migrate, schema_version, tenant_migrations, MigrateReport, Migration,
    CREATE_TABLE as SCHEMA_MIGRATIONS_TABLE,
};
pub use time::{format_unix_ms, now_rfc3339};

pub type Pool = r2d2::Pool<SqliteConnectionManager>;
pub type PooledConn = r2d2::PooledConnection<SqliteConnectionManager>;

/// How long a connection waits for another writer before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Tenant page cache in KiB: hundreds of tenants may be open at once, and
/// SQLite's default (2 MiB per connection) would add up.
const TENANT_CACHE_KIB: i64 = 1024;

/// Prepared statements kept per tenant connection.
const TENANT_STATEMENT_CACHE: usize = 48;

/// Which kind of database a connection is for; it decides durability and
/// memory settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    Catalog,
    Tenant,
}

/// Whether opening may create the file. Only provisioning creates files: a
/// missing tenant database must never come back as a silently empty one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// The file must exist.
    Never,
    /// Create the file if it is missing (the catalog on first start).
    IfMissing,
    /// The file must not exist yet (provisioning a new tenant).
    New,
}

/// Pool sizing. The thread pool is passed separately because it is shared by
/// every pool in the process.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub max_size: u32,
    /// Closes connections idle this long. Note that r2d2 schedules a reaper
    /// job for this that outlives the pool, so pools that come and go should
    /// leave it `None` and be closed as a whole instead.
    pub idle_timeout: Option<Duration>,
    pub connection_timeout: Duration,
    /// SQLite's automatic checkpoint, for the catalog (tenant connections never have it, see
    /// [`init`]); off when Litestream does the checkpoints (`serve --checkpoints litestream`).
    pub autocheckpoint: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 4,
            idle_timeout: Some(Duration::from_secs(300)),
            connection_timeout: Duration::from_secs(5),
            autocheckpoint: true,
        }
    }
}

/// Errors from opening, pooling and migrating databases.
#[derive(Debug)]
pub enum DbError {
    Sqlite(rusqlite::Error),
    Pool(r2d2::Error),
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// The database file does not exist and we were not asked to create it.
    Missing(PathBuf),
    /// Provisioning found a file where a new database was to be created.
    Exists(PathBuf),
    /// The file exists but is empty: truncated, or never provisioned.
    Empty(PathBuf),
    /// An applied migration differs from the one embedded in this binary.
    ChecksumMismatch {
        file: String,
    },
    MigrationFailed {
        file: String,
        message: String,
    },
    /// The database has a migration this binary does not know: it is newer.
    UnknownVersion {
        version: u32,
    },
    /// A migration older than the database's version was never applied.
    OutOfOrder {
        file: String,
        db_version: u32,
    },
    BadMigrationName {
        file: String,
    },
    /// The database is not a file on this machine (a tenant kept on sqld): what needs one
    /// (backups, export, health) cannot run on it.
    NotAFile(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Sqlite(e) => write!(f, "sqlite: {e}"),
            DbError::Pool(e) => write!(f, "connection pool: {e}"),
            DbError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            DbError::Missing(path) => write!(f, "database file {} does not exist", path.display()),
            DbError::Exists(path) => write!(f, "database file {} already exists", path.display()),
            DbError::Empty(path) => write!(f, "database file {} is empty", path.display()),
            DbError::ChecksumMismatch { file } => write!(
                f,
                "migration {file} was changed after it was applied (checksum mismatch)"
            ),
            DbError::MigrationFailed { file, message } => {
                write!(f, "migration {file} failed: {message}")
            }
            DbError::UnknownVersion { version } => write!(
                f,
                "database has migration {version} which this binary does not know (database is newer than the binary)"
            ),
            DbError::OutOfOrder { file, db_version } => write!(
                f,
                "migration {file} was never applied but the database is already at version {db_version}"
            ),
            DbError::BadMigrationName { file } => write!(
                f,
                "bad migration file name {file} (expected <dir>/NNNN_name.sql)"
            ),
            DbError::NotAFile(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DbError::Sqlite(e) => Some(e),
            DbError::Pool(e) => Some(e),
            DbError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl From<r2d2::Error> for DbError {
    fn from(e: r2d2::Error) -> Self {
        DbError::Pool(e)
    }
}

/// No `SQLITE_OPEN_CREATE` (creation is explicit) and no URI parsing (paths
/// are paths). NO_MUTEX: a connection is used by one thread at a time.
fn base_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// Opens one connection with the shared settings applied.
pub fn open(path: &Path, kind: DbKind, create: Create) -> Result<Connection, DbError> {
    let flags = match create {
        Create::Never => {
            ensure_exists(path)?;
            // SQLite takes an empty file for an empty database and would write a header into
            // it; a file that must already exist and is empty is damage, left as found.
            if fs::metadata(path).map(|m| m.len() == 0).unwrap_or(false) {
                return Err(DbError::Empty(path.to_path_buf()));
            }
            base_flags()
        }
        Create::IfMissing => base_flags() | OpenFlags::SQLITE_OPEN_CREATE,
        Create::New => {
            // create_new makes "not there yet" atomic; SQLite treats an
            // empty file as an empty database.
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => DbError::Exists(path.to_path_buf()),
                    _ => DbError::Io {
                        path: path.to_path_buf(),
                        source: e,
                    },
                })?;
            base_flags()
        }
    };
    let opened = Connection::open_with_flags(path, flags).and_then(|conn| {
        init(&conn, kind)?;
        Ok(conn)
    });
    match opened {
        Ok(conn) => Ok(conn),
        Err(e) => {
            if create == Create::New {
                remove_database_files(path).ok();
            }
            Err(DbError::Sqlite(e))
        }
    }
}

/// Reads an existing database without writing to it or beside it: for looking at a tenant's
/// file (its schema version, say) without opening its pool. No init: nothing is set that would
/// write. A read-only connection still creates the `-wal` and `-shm` when they are missing, so
/// then (the file was closed cleanly: everything is in the main file) it is opened `immutable`,
/// without locks or companions. A process that starts writing to it at that very moment can
/// make the read fail or come out stale; never wrong in the file.
pub fn open_read_only(path: &Path) -> Result<Connection, DbError> {
    ensure_exists(path)?;
    if fs::metadata(path).map(|m| m.len() == 0).unwrap_or(false) {
        return Err(DbError::Empty(path.to_path_buf()));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let [_, wal, _] = database_files(path);
    let wal_exists = fs::symlink_metadata(&wal).is_ok();
    let conn = match path.to_str() {
        Some(text) if !wal_exists => {
            // In a URI `%`, `?` and `#` mean something; any other byte stands for itself.
            const URI_PATH: &percent_encoding::AsciiSet =
                &percent_encoding::CONTROLS.add(b'%').add(b'?').add(b'#');
            let uri = format!(
                "file:{}?immutable=1",
                percent_encoding::utf8_percent_encode(text, URI_PATH)
            );
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?
        }
        _ => Connection::open_with_flags(path, flags)?,
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    disable_attach(&conn);
    Ok(conn)
}

/// Reads a database that a server may be writing, through SQLite's own locking: opened for
/// reading and writing (WAL readers need the `-shm`, and SQLite makes the `-wal` and `-shm`
/// when they are missing) but never created, `query_only` so no statement can change it, and
/// its journal mode left as it is (no `init`). Unlike [`open_read_only`], never `immutable`:
/// that takes no locks, so a read beside a writer could fail or come out wrong.
pub fn open_query_only(path: &Path) -> Result<Connection, DbError> {
    ensure_exists(path)?;
    if fs::metadata(path).map(|m| m.len() == 0).unwrap_or(false) {
        return Err(DbError::Empty(path.to_path_buf()));
    }
    let conn = Connection::open_with_flags(path, base_flags())?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    disable_attach(&conn);
    conn.pragma_update(None, "trusted_schema", "OFF")?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Fails with `Missing` unless `path` is an existing regular file.
pub fn ensure_exists(path: &Path) -> Result<(), DbError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(DbError::Missing(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(DbError::Missing(path.to_path_buf())),
        Err(e) => Err(DbError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The settings every connection gets, whoever opens it.
pub fn init(conn: &Connection, kind: DbKind) -> rusqlite::Result<()> {
    // First, so that switching to WAL below waits for other writers.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    disable_attach(conn);
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!("could not enable WAL (journal_mode is {mode})")),
        ));
    }
    let synchronous = match kind {
        DbKind::Catalog => "FULL",
        DbKind::Tenant => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "trusted_schema", "OFF")?;
    if kind == DbKind::Tenant {
        conn.pragma_update(None, "cache_size", -TENANT_CACHE_KIB)?;
        // SQLite would checkpoint inside the commit that crosses 1,000 pages, and that commit
        // holds the tenant's write turn (see `Tenant::write`) through the whole copy and its
        // fsyncs. `Tenant::write` has the registry's checkpoint thread do it instead, which
        // holds the turn only for the rest (`tenancy::checkpoint`); closing the last
        // connection to a file checkpoints it as well.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // The workspace routes run a few dozen distinct statements, all cached; rusqlite's
        // default of 16 would evict and re-prepare them as requests alternate.
        conn.set_prepared_statement_cache_capacity(TENANT_STATEMENT_CACHE);
    }
    Ok(())
}

/// A tenant connection must never reach another tenant's file, and ATTACH
/// would let SQL do exactly that. rusqlite only wraps `sqlite3_limit` behind
/// its `limits` feature, which this crate does not enable, so call it
/// directly.
pub fn disable_attach(conn: &Connection) {
    // SAFETY: the handle is valid while `conn` is borrowed, and
    // sqlite3_limit only sets an integer on that open connection.
    unsafe {
        rusqlite::ffi::sqlite3_limit(conn.handle(), rusqlite::ffi::SQLITE_LIMIT_ATTACHED, 0);
    }
}

/// The scheduler shared by every pool: r2d2 would otherwise start three
/// threads per pool. Pending jobs are dropped with it so its threads exit.
pub fn thread_pool(threads: usize) -> Arc<ScheduledThreadPool> {
    Arc::new(
        ScheduledThreadPool::builder()
            .num_threads(threads.max(1))
            .thread_name_pattern("tenantd-db-{}")
            .on_drop_behavior(OnPoolDropBehavior::DiscardPendingScheduled)
            .build(),
    )
}

/// A pool over an existing file: pools never create files.
pub fn pool(
    path: &Path,
    kind: DbKind,
    config: &PoolConfig,
    threads: &Arc<ScheduledThreadPool>,
) -> Result<Pool, DbError> {
    ensure_exists(path)?;
    let manager = SqliteConnectionManager::file(path)
        .with_flags(base_flags())
        .with_init({
            let autocheckpoint = config.autocheckpoint;
            move |conn| {
                init(conn, kind)?;
                if !autocheckpoint {
                    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                }
                Ok(())
            }
        });
    let pool = r2d2::Pool::builder()
        .max_size(config.max_size.max(1))
        .min_idle(Some(0))
        .idle_timeout(config.idle_timeout.filter(|d| !d.is_zero()))
        .max_lifetime(None)
        .connection_timeout(config.connection_timeout.max(Duration::from_millis(1)))
        // A local SQLite connection does not go stale; skip a query per checkout.
        .test_on_check_out(false)
        .thread_pool(Arc::clone(threads))
        .build(manager)?;
    Ok(pool)
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction: the write lock is taken up
/// front, so a read-then-write cannot fail halfway with SQLITE_BUSY. Commits
/// on `Ok`, rolls back on `Err`.
pub fn write<T, E, F>(conn: &mut Connection, f: F) -> Result<T, E>
where
    F: FnOnce(&Transaction<'_>) -> Result<T, E>,
    E: From<rusqlite::Error>,
{
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Removes a database file and its `-wal` and `-shm` companions; files that
/// are already gone are fine.
pub fn remove_database_files(path: &Path) -> Result<(), DbError> {
    for file in database_files(path) {
        match fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(DbError::Io {
                    path: file,
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// The database file followed by its `-wal` and `-shm` files.
pub fn database_files(path: &Path) -> [PathBuf; 3] {
    let with_suffix = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with_suffix("-wal"), with_suffix("-shm")]
}
