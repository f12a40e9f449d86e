//! Tenants at run time: the `Tenant` context handed to handlers, and the
//! `Registry` that opens each tenant's pool on first use, migrates it once,
//! and keeps the number of open pools (and so file descriptors) bounded.
//! Creating, deleting and migrating tenants lives in [`lifecycle`].

pub mod identify;
pub mod lifecycle;
mod reads;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{OptionalExtension, Transaction};
use scheduled_thread_pool::{JobHandle, ScheduledThreadPool};

use crate::catalog::{Catalog, CatalogError, TenantRecord, TenantStatus, TENANTS_DIR};
use crate::db::{self, Create, DbError, DbKind, PoolConfig, PooledConn};

pub use reads::{Lookup, Ticket};

/// Where a tenant's database lives: `data_dir/tenants/<uuid>.db`. Only a
/// canonical (hyphenated, lower-case) UUID is accepted, so that no catalog
/// value can name another file or two ids the same file.
pub fn tenant_db_path(data_dir: &Path, id: &str) -> Option<PathBuf> {
    let uuid = uuid::Uuid::parse_str(id).ok()?;
    if uuid.hyphenated().to_string() != id {
        return None;
    }
    Some(uuid_db_path(data_dir, &uuid))
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

#[derive(Debug)]
pub enum TenancyError {
    NotFound,
    Suspended {
        tenant: String,
    },
    Deleted {
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
    /// Two identification methods of one request name different tenants.
    Conflict,
    Catalog(CatalogError),
}

impl fmt::Display for TenancyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenancyError::NotFound => f.write_str("no such tenant"),
            TenancyError::Suspended { tenant } => write!(f, "tenant {tenant} is suspended"),
            TenancyError::Deleted { tenant } => write!(f, "tenant {tenant} is deleted"),
            TenancyError::Unavailable { tenant, reason } => {
                write!(f, "tenant {tenant} is unavailable: {reason}")
            }
            TenancyError::InUse { tenant } => write!(f, "tenant {tenant} is in use"),
            TenancyError::Conflict => f.write_str("the request names two different tenants"),
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

    /// A connection to this tenant's database, and to nothing else.
    pub fn conn(&self) -> Result<PooledConn, DbError> {
        self.pool.touch();
        Ok(self.pool.pool.get()?)
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

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on this tenant's database;
    /// commits on `Ok`, rolls back on `Err`.
    pub fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E>,
        E: From<DbError> + From<rusqlite::Error>,
    {
        // The turn first, then a connection: a queued writer holds none of the few. Waiting
        // is bounded as it was at SQLite's lock, and ends the same way: busy.
        let Some(turn) = self.pool.writer.take(db::BUSY_TIMEOUT) else {
            return Err(E::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some(format!(
                    "tenant {}: no write turn within {:?}",
                    self.record.slug,
                    db::BUSY_TIMEOUT
                )),
            )));
        };
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

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Pools kept open at once. Past it, the least recently used pool that
    /// nobody holds is closed. If every pool is held, the cap is exceeded
    /// (with a warning) rather than failing the request.
    pub max_open_pools: usize,
    /// Connections per tenant pool.
    pub pool_max_size: u32,
    /// A pool unused this long is closed as a whole; `None` keeps pools until
    /// the cap pushes them out.
    pub idle_timeout: Option<Duration>,
    pub connection_timeout: Duration,
    /// A tenant that failed to open is not retried for this long; requests
    /// in between get the same `Unavailable` error at once.
    pub retry_after: Duration,
    /// Threads of the scheduler shared by every tenant pool (r2d2 opens
    /// connections on it).
    pub threads: usize,
    /// How long a request waits for another request that is opening (and
    /// migrating) the same tenant before it gives up with `Unavailable`. A
    /// long migration then costs waiting workers a bounded time, not forever.
    pub open_wait: Duration,
    /// The migrations tenant databases are brought to: the binary's own, or
    /// (in tests of the runner) a set with more.
    pub migrations: &'static [db::Migration],
    /// Bytes of answers all open pools together keep while their files are unchanged (see
    /// [`reads`]); 0 turns the cache off.
    pub read_cache_bytes: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_open_pools: 256,
            pool_max_size: 4,
            idle_timeout: Some(Duration::from_secs(300)),
            connection_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
            threads: 2,
            open_wait: Duration::from_secs(10),
            migrations: db::tenant_migrations(),
            read_cache_bytes: DEFAULT_READ_CACHE_MIB << 20,
        }
    }
}

/// For all tenants together: about 50,000 single orders, or 1,000 pages of 50. Only answers
/// asked for again are worth keeping, and only until their tenant's next write.
pub const DEFAULT_READ_CACHE_MIB: usize = 32;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryStats {
    pub open_pools: usize,
    /// Pools opened since start (a first access that migrated and opened).
    pub pools_opened: u64,
    /// Pools closed since start (cap, idle, evict).
    pub pools_closed: u64,
}

/// This process's writers to one tenant file take turns here instead of at SQLite's write
/// lock, where a writer that finds the lock taken sleeps in the busy handler (1 ms, then 2, 5,
/// 10, ... however soon the lock frees): that put hundreds of milliseconds into the tail of
/// busy tenants. A condition variable wakes the next writer as soon as the last one commits.
/// Other processes (`tenantd migrate`, the CLI) still meet the busy timeout.
#[derive(Default)]
struct WriteTurn {
    state: Mutex<TurnState>,
    /// Writers wait here.
    freed: Condvar,
    /// The one `take_first` caller waits here.
    freed_first: Condvar,
}

#[derive(Default)]
struct TurnState {
    taken: bool,
    /// Someone waits in `take_first`: writers let them go ahead.
    first_waiting: bool,
}

struct Turn<'a>(&'a WriteTurn);

impl WriteTurn {
    /// The turn, or `None` after `wait`.
    fn take(&self, wait: Duration) -> Option<Turn<'_>> {
        let (mut state, _) = self
            .freed
            .wait_timeout_while(lock(&self.state), wait, |s| s.taken || s.first_waiting)
            .unwrap_or_else(|e| e.into_inner());
        if state.taken || state.first_waiting {
            return None;
        }
        state.taken = true;
        Some(Turn(self))
    }

    /// The turn ahead of every waiting writer, or `None` after `wait`. A writer that just gave
    /// the turn back is often first to take it again, so a plain `take` among busy writers
    /// can wait out its whole `wait`. For one caller at a time (the checkpoint thread).
    fn take_first(&self, wait: Duration) -> Option<Turn<'_>> {
        let mut state = lock(&self.state);
        state.first_waiting = true;
        let (mut state, _) = self
            .freed_first
            .wait_timeout_while(state, wait, |s| s.taken)
            .unwrap_or_else(|e| e.into_inner());
        state.first_waiting = false;
        if state.taken {
            // Writers may sleep only because of the flag.
            self.freed.notify_all();
            return None;
        }
        state.taken = true;
        Some(Turn(self))
    }
}

/// Also on a panic in the writer's closure: the turn is never lost.
impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.taken = false;
        if state.first_waiting {
            self.0.freed_first.notify_one();
        } else {
            self.0.freed.notify_one();
        }
    }
}

/// Writes between two checkpoints of a tenant file, in place of SQLite's automatic one (see
/// `db::init`). A created order puts about 13 pages into the log, so this is close to SQLite's
/// default of 1,000 pages for the busiest writes, and more often for smaller ones.
const CHECKPOINT_EVERY: u64 = 64;

struct OpenPool {
    /// Its connections stay open until the pool is dropped: no idle timeout, no lifetime, no
    /// check on checkout, and r2d2_sqlite never reports one broken. `reads` relies on it (its
    /// probe of the file's `-shm` is only safe while a connection is open).
    pool: db::Pool,
    reads: reads::ReadCache,
    /// See [`WriteTurn`].
    writer: WriteTurn,
    /// Writes through this pool, for the checkpoint every `CHECKPOINT_EVERY` of them.
    commits: AtomicU64,
    /// Where checkpoints are asked for, and whether one is already waiting there.
    checkpoints: Sender<Weak<OpenPool>>,
    checkpoint_queued: AtomicBool,
    checkpoints_done: AtomicU64,
    /// Set, under this lock, when the registry closes the pool: the checkpoint thread may
    /// still upgrade a queued `Weak` afterwards, and must then leave the pool alone (its file
    /// may be on its way out, by purge). The thread holds the lock while it checkpoints, so a
    /// close waits for a running checkpoint.
    retired: Mutex<bool>,
    /// For the checkpoint thread's log lines.
    path: PathBuf,
    epoch: Instant,
    /// Nanoseconds since `epoch` of the last use, for LRU and idle closing.
    last_used: AtomicU64,
}

impl OpenPool {
    /// Hands a checkpoint of this file to the registry's checkpoint thread, once: no writer
    /// copies the log in its own commit, writers wait only for the short rest of one (see
    /// [`checkpoint`]), and one file's checkpoints never queue up.
    fn queue_checkpoint(self: &Arc<Self>) {
        if !self.checkpoint_queued.swap(true, Ordering::AcqRel) {
            // The thread lives as long as any pool can send; a failed send means the registry
            // is going away, and closing the last connection checkpoints anyway.
            let _ = self.checkpoints.send(Arc::downgrade(self));
        }
    }

    fn touch(&self) {
        // Every request of the tenant touches: a store each time would pass the cache line
        // between cores on every one. Idle closing and LRU need no finer time than this.
        let now = nanos_since(self.epoch);
        if now.saturating_sub(self.last_used.load(Ordering::Relaxed)) >= TOUCH_GRAIN_NANOS {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }
}

const TOUCH_GRAIN_NANOS: u64 = 1_000_000;

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// True when closing the pool cannot pull anything from under anyone: no
/// `Tenant` holds it (only the slot's reference) and no connection is out.
/// Stable while the slot is locked: new `Tenant`s are only made under it,
/// and connections only through a `Tenant`; the one exception, the checkpoint
/// thread, backs off once the pool is marked retired (see `OpenPool::retired`).
fn unheld(pool: &Arc<OpenPool>) -> bool {
    if Arc::strong_count(pool) != 1 {
        return false;
    }
    let state = pool.pool.state();
    state.connections == state.idle_connections
}

enum SlotState {
    /// Not opened yet in this process.
    Empty,
    /// A request is opening it (and migrating): others wait on the slot's
    /// condition variable, for at most `open_wait`.
    Opening,
    Open(Arc<OpenPool>),
    Failed {
        reason: String,
        at: Instant,
    },
    /// Closed and removed from the map; whoever still holds this slot must
    /// look the tenant up again.
    Retired,
}

/// Per-tenant state. Its mutex is what makes the first access (migration,
/// opening) happen once while concurrent callers wait, without blocking any
/// other tenant.
struct Slot {
    state: Mutex<SlotState>,
    /// Signalled when an `Opening` slot becomes `Open` or `Failed`.
    settled: Condvar,
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

struct Inner {
    data_dir: PathBuf,
    config: RegistryConfig,
    threads: Arc<ScheduledThreadPool>,
    epoch: Instant,
    /// Lock order: a slot's lock may be held while taking this one, never
    /// the reverse (other slots are only `try_lock`ed under it).
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    open: AtomicUsize,
    opened_total: AtomicU64,
    closed_total: AtomicU64,
    checkpoints: Sender<Weak<OpenPool>>,
    reads: reads::Budget,
}

/// The thread that checkpoints tenant files for their writers, one file at a time (they all
/// fsync, and a disk does those best one after another). It ends when every sender is gone:
/// the registry and all its pools.
fn spawn_checkpointer(queue: Receiver<Weak<OpenPool>>) {
    let spawned = std::thread::Builder::new()
        .name("tenantd-checkpoint".into())
        .spawn(move || {
            for pool in queue {
                // A pool closed meanwhile was checkpointed by closing its last connection.
                let Some(pool) = pool.upgrade() else {
                    continue;
                };
                let retired = lock(&pool.retired);
                if *retired {
                    continue;
                }
                // A request made stale by the end of the last checkpoint (see `checkpoint`).
                // Cleared first: a write landing during this checkpoint may ask for another.
                if !pool.checkpoint_queued.swap(false, Ordering::AcqRel) {
                    continue;
                }
                match checkpoint(&pool) {
                    Ok(()) => {
                        pool.checkpoints_done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => log::warn!("checkpoint of {} failed: {e}", pool.path.display()),
                }
                drop(retired);
            }
        });
    if let Err(e) = spawned {
        // Without the thread, logs grow until a pool closes (which checkpoints): degraded,
        // not broken.
        log::error!("could not start the checkpoint thread: {e}");
    }
}

/// Copies the log of a pool's file into the file, so that the log can start over.
///
/// SQLite starts the log over from its beginning only after a checkpoint that copied all of it,
/// and only when no reader still reads the old log. Writers queued back to back leave a
/// checkpoint beside them no moment at which it has copied everything, and readers keep
/// slots of the old log: the log grows for as long as the writes go on (gigabytes in a minute
/// of order creates). So the bulk is copied beside the writers, with its fsyncs; then, in a
/// write turn taken ahead of them, a RESTART checkpoint copies what they added meanwhile,
/// waits a moment for the readers of the old log, and starts it over itself. Writers wait for
/// that rest: a few writes' pages, two fsyncs and the readers' last microseconds, once every
/// `CHECKPOINT_EVERY` writes.
fn checkpoint(pool: &OpenPool) -> Result<(), String> {
    // PASSIVE: copies what no reader still needs, never waits for anyone. Answers the frames
    // the log had when it began (not those added since). The connection goes back before the
    // turn is taken: writers take the turn first, then a connection.
    let logged: i64 = {
        let conn = pool.pool.get().map_err(|e| e.to_string())?;
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
            .map_err(|e| e.to_string())?
    };
    if logged == 0 {
        return Ok(());
    }
    let Some(turn) = pool.writer.take_first(db::BUSY_TIMEOUT) else {
        return Err(format!("no write turn within {:?}", db::BUSY_TIMEOUT));
    };
    let busy = pool.pool.get().map_err(|e| e.to_string()).and_then(|conn| {
        // Every writer waits meanwhile: a reader that holds on is waited for this long, and
        // the log starts over at a later checkpoint instead.
        conn.busy_timeout(RESTART_WAIT).map_err(|e| e.to_string())?;
        let busy = conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
                row.get::<_, i64>(0)
            })
            .map_err(|e| e.to_string());
        conn.busy_timeout(db::BUSY_TIMEOUT)
            .map_err(|e| e.to_string())?;
        busy
    });
    // Whatever was asked for meanwhile, this checkpoint did; a busy one is asked for again
    // after the next `CHECKPOINT_EVERY` writes.
    pool.checkpoint_queued.store(false, Ordering::Release);
    drop(turn);
    if busy? != 0 {
        log::debug!(
            "{}: readers kept the log from starting over",
            pool.path.display()
        );
    }
    Ok(())
}

/// How long a checkpoint that would start a log over waits for its last readers.
const RESTART_WAIT: Duration = Duration::from_millis(20);

/// Tenant pools, opened lazily and closed by LRU, idleness or `evict`.
/// Share it between threads (e.g. in an `Arc`).
pub struct Registry {
    inner: Arc<Inner>,
    sweeper: Option<JobHandle>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("data_dir", &self.inner.data_dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(sweeper) = &self.sweeper {
            sweeper.cancel();
        }
    }
}

impl Registry {
    pub fn new(data_dir: &Path, config: RegistryConfig) -> Registry {
        let (checkpoints, queue) = crossbeam_channel::unbounded();
        spawn_checkpointer(queue);
        let reads = reads::Budget::new(config.read_cache_bytes);
        let inner = Arc::new(Inner {
            data_dir: data_dir.to_path_buf(),
            threads: db::thread_pool(config.threads),
            config,
            epoch: Instant::now(),
            slots: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            opened_total: AtomicU64::new(0),
            closed_total: AtomicU64::new(0),
            checkpoints,
            reads,
        });
        // Idle pools are closed whole by our own sweep instead of r2d2's
        // per-pool reaper: that reaper is a periodic job r2d2 never cancels,
        // so pools that come and go would pile up jobs on the shared
        // scheduler.
        let sweeper = inner.config.idle_timeout.map(|idle| {
            let period = (idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
            let weak: Weak<Inner> = Arc::downgrade(&inner);
            inner
                .threads
                .execute_at_fixed_rate(period, period, move || {
                    if let Some(inner) = weak.upgrade() {
                        inner.sweep();
                    }
                })
        });
        Registry { inner, sweeper }
    }

    /// The tenant's context, opening (and on first use migrating) its
    /// database. Suspended and deleted tenants are refused.
    pub fn open(&self, record: Arc<TenantRecord>) -> Result<Tenant, TenancyError> {
        self.open_with(record, Inner::open_pool)
    }

    /// [`Registry::open`] with the step that opens the pool given: tests pass one that fails
    /// in ways the real one rarely does.
    fn open_with(
        &self,
        record: Arc<TenantRecord>,
        open_pool: impl FnOnce(&Inner, &TenantRecord, &Path) -> Result<OpenPool, String>,
    ) -> Result<Tenant, TenancyError> {
        match record.status {
            TenantStatus::Active => {}
            TenantStatus::Suspended => {
                return Err(TenancyError::Suspended {
                    tenant: record.slug.clone(),
                })
            }
            TenantStatus::Deleted => {
                return Err(TenancyError::Deleted {
                    tenant: record.slug.clone(),
                })
            }
        }
        let inner = &self.inner;
        loop {
            let slot = {
                let mut slots = lock(&inner.slots);
                // Looked up before inserting: the hot path allocates no key.
                match slots.get(&record.id) {
                    Some(slot) => Arc::clone(slot),
                    None => Arc::clone(slots.entry(record.id.clone()).or_insert_with(|| {
                        Arc::new(Slot {
                            state: Mutex::new(SlotState::Empty),
                            settled: Condvar::new(),
                        })
                    })),
                }
            };
            let mut state = lock(&slot.state);
            // The clock only when there is a wait: this runs on every tenant request.
            let mut deadline = None;
            while matches!(*state, SlotState::Opening) {
                let deadline =
                    *deadline.get_or_insert_with(|| Instant::now() + inner.config.open_wait);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(TenancyError::Unavailable {
                        tenant: record.slug.clone(),
                        reason: "still being opened (a long migration?)".into(),
                    });
                }
                state = slot
                    .settled
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            match &*state {
                SlotState::Opening => unreachable!("waited above"),
                SlotState::Retired => continue,
                SlotState::Open(pool) => {
                    pool.touch();
                    return Ok(Tenant {
                        pool: Arc::clone(pool),
                        record,
                    });
                }
                SlotState::Failed { reason, at } if at.elapsed() < inner.config.retry_after => {
                    return Err(TenancyError::Unavailable {
                        tenant: record.slug.clone(),
                        reason: reason.clone(),
                    });
                }
                SlotState::Failed { .. } | SlotState::Empty => {}
            }
            let Some(path) = tenant_db_path(&inner.data_dir, &record.id) else {
                let reason = "catalog id is not a canonical UUID".to_string();
                log::error!(
                    "tenant {} ({:?}) unavailable: {reason}",
                    record.slug,
                    record.id
                );
                // Failed, like any tenant that cannot open: retried later, swept when stale.
                *state = SlotState::Failed {
                    reason: reason.clone(),
                    at: Instant::now(),
                };
                return Err(TenancyError::Unavailable {
                    tenant: record.slug.clone(),
                    reason,
                });
            };
            // First use in this process, or a retry. The slot says so and is
            // unlocked while we work: callers for the same tenant wait on its
            // condition variable (bounded), others are not held up.
            *state = SlotState::Opening;
            drop(state);
            inner.make_room();
            // A panic while opening must not leave the slot `Opening`, where every later
            // request for the tenant would wait out `open_wait` and fail, forever.
            let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                open_pool(inner, &record, &path)
            }))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(format!("opening panicked: {what}"))
            });
            let mut state = lock(&slot.state);
            slot.settled.notify_all();
            return match opened {
                Ok(pool) => {
                    let pool = Arc::new(pool);
                    *state = SlotState::Open(Arc::clone(&pool));
                    inner.open.fetch_add(1, Ordering::SeqCst);
                    inner.opened_total.fetch_add(1, Ordering::Relaxed);
                    Ok(Tenant { record, pool })
                }
                Err(reason) => {
                    log::error!(
                        "tenant {} ({}) unavailable: {reason}",
                        record.slug,
                        record.id
                    );
                    *state = SlotState::Failed {
                        reason: reason.clone(),
                        at: Instant::now(),
                    };
                    Err(TenancyError::Unavailable {
                        tenant: record.slug.clone(),
                        reason,
                    })
                }
            };
        }
    }

    /// Closes the tenant's pool (before purging its file, say). Returns
    /// whether a pool was open; `InUse` if someone still holds it.
    pub fn evict(&self, tenant_id: &str) -> Result<bool, TenancyError> {
        let inner = &self.inner;
        let Some(slot) = lock(&inner.slots).get(tenant_id).cloned() else {
            return Ok(false);
        };
        let mut state = lock(&slot.state);
        let closed = match &*state {
            SlotState::Retired => return Ok(false),
            SlotState::Opening => {
                return Err(TenancyError::InUse {
                    tenant: tenant_id.to_string(),
                })
            }
            SlotState::Open(pool) if !unheld(pool) => {
                return Err(TenancyError::InUse {
                    tenant: tenant_id.to_string(),
                })
            }
            SlotState::Open(pool) => {
                *lock(&pool.retired) = true;
                true
            }
            SlotState::Empty | SlotState::Failed { .. } => false,
        };
        let old = std::mem::replace(&mut *state, SlotState::Retired);
        {
            let mut slots = lock(&inner.slots);
            if slots.get(tenant_id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(tenant_id);
            }
        }
        drop(state);
        if let SlotState::Open(pool) = old {
            inner.closed(pool);
        }
        Ok(closed)
    }

    /// Closes pools unused for `idle_timeout` and forgets failures older than
    /// `retry_after`. Runs periodically on its own; returns pools closed.
    pub fn close_idle(&self) -> usize {
        self.inner.sweep()
    }

    pub fn open_count(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            open_pools: self.open_count(),
            pools_opened: self.inner.opened_total.load(Ordering::Relaxed),
            pools_closed: self.inner.closed_total.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    /// Opens the file (never creating it), applies pending migrations, checks
    /// the file is this tenant's, then builds the pool. The check connection
    /// is separate so a corrupt file fails here at once, not after r2d2's
    /// connection retries time out. An error is the reason reported in
    /// `Unavailable`.
    fn open_pool(&self, record: &TenantRecord, path: &Path) -> Result<OpenPool, String> {
        let reason = |e: DbError| e.to_string();
        let mut conn = db::open(path, DbKind::Tenant, Create::Never).map_err(reason)?;
        check_tenant_file(&conn, record)?;
        db::migrate(&mut conn, self.config.migrations).map_err(reason)?;
        drop(conn);
        let config = PoolConfig {
            max_size: self.config.pool_max_size,
            idle_timeout: None,
            connection_timeout: self.config.connection_timeout,
        };
        let pool = db::pool(path, DbKind::Tenant, &config, &self.threads).map_err(reason)?;
        // One connection now, which stays for the pool's life (see `OpenPool::pool`): the
        // answers cache reads the file's WAL index where this connection's SQLite maps it,
        // which is only safe while it is open.
        let first = pool.get().map_err(|e| reason(e.into()))?;
        let reads = reads::ReadCache::new(self.reads.clone(), &first);
        drop(first);
        let open = OpenPool {
            reads,
            pool,
            writer: WriteTurn::default(),
            commits: AtomicU64::new(0),
            checkpoints: self.checkpoints.clone(),
            checkpoint_queued: AtomicBool::new(false),
            checkpoints_done: AtomicU64::new(0),
            retired: Mutex::new(false),
            path: path.to_path_buf(),
            epoch: self.epoch,
            last_used: AtomicU64::new(0),
        };
        open.touch();
        Ok(open)
    }

    /// Before opening one more pool: close LRU unheld pools until there is
    /// room. Concurrent first opens may overshoot by a few; the next open or
    /// sweep brings the count back down.
    fn make_room(&self) {
        while self.open.load(Ordering::SeqCst) >= self.config.max_open_pools.max(1) {
            if !self.close_one(|_| true) {
                log::warn!(
                    "{} tenant pools open, over the cap of {}: every pool is in use",
                    self.open.load(Ordering::SeqCst),
                    self.config.max_open_pools
                );
                return;
            }
        }
    }

    /// Closes the least recently used unheld pool that `eligible` accepts.
    fn close_one(&self, eligible: impl Fn(&OpenPool) -> bool) -> bool {
        let victim = {
            let mut slots = lock(&self.slots);
            let mut best: Option<(u64, &String)> = None;
            for (id, slot) in slots.iter() {
                let Some(state) = try_lock(&slot.state) else {
                    continue;
                };
                if let SlotState::Open(pool) = &*state {
                    let used = pool.last_used();
                    if unheld(pool) && eligible(pool) && best.is_none_or(|(b, _)| used < b) {
                        best = Some((used, id));
                    }
                }
            }
            let Some(id) = best.map(|(_, id)| id.clone()) else {
                return false;
            };
            self.retire(&mut slots, &id)
        };
        match victim {
            Some(pool) => {
                self.closed(pool);
                true
            }
            None => false,
        }
    }

    /// Takes an unheld open pool out of the map, to be dropped by the caller
    /// after the map lock is released.
    fn retire(&self, slots: &mut HashMap<String, Arc<Slot>>, id: &str) -> Option<Arc<OpenPool>> {
        let slot = slots.get(id)?;
        let mut state = try_lock(&slot.state)?;
        match &*state {
            // Never waits for a running checkpoint while the map is locked: that pool is in use.
            SlotState::Open(pool) if unheld(pool) => *try_lock(&pool.retired)? = true,
            SlotState::Failed { .. } => {}
            _ => return None,
        }
        let old = std::mem::replace(&mut *state, SlotState::Retired);
        drop(state);
        slots.remove(id);
        match old {
            SlotState::Open(pool) => Some(pool),
            _ => None,
        }
    }

    fn closed(&self, pool: Arc<OpenPool>) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.closed_total.fetch_add(1, Ordering::Relaxed);
        // The last reference: dropping it closes the connections.
        drop(pool);
    }

    fn sweep(&self) -> usize {
        let mut closed = 0;
        if let Some(idle) = self.config.idle_timeout {
            let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
            let now = nanos_since(self.epoch);
            while self.close_one(|pool| now.saturating_sub(pool.last_used()) >= idle) {
                closed += 1;
            }
        }
        while self.open.load(Ordering::SeqCst) > self.config.max_open_pools.max(1)
            && self.close_one(|_| true)
        {
            closed += 1;
        }
        // Forget old failures so the map only holds tenants in play.
        let mut slots = lock(&self.slots);
        let stale: Vec<String> = slots
            .iter()
            .filter(|(_, slot)| {
                try_lock(&slot.state).is_some_and(|state| {
                    matches!(&*state, SlotState::Failed { at, .. }
                        if at.elapsed() >= self.config.retry_after)
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.retire(&mut slots, &id);
        }
        closed
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
