//! The `Registry` of open tenant pools: one slot per tenant, opened on first use (and
//! migrated once) while other callers for it wait, closed by LRU, idleness or `evict`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use scheduled_thread_pool::{JobHandle, ScheduledThreadPool};

use super::checkpoint::{spawn_checkpointer, Checkpoints};
use super::write_turn::WriteTurn;
use super::{
    check_owner, check_tenant_file, lock, reads, tenant_db_path, try_lock, TenancyError, Tenant,
};
use crate::catalog::{TenantRecord, TenantStatus, TenantStore};
use crate::db::{self, Create, DbError, DbKind, PoolConfig};
use crate::store::sqld as store_sqld;

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
    /// Who checkpoints tenant files: the registry's checkpoint thread, or Litestream.
    pub checkpoints: Checkpoints,
    /// The libSQL server that holds the tenants the catalog says are kept on sqld.
    pub sqld: Option<Arc<crate::sqld::Client>>,
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
            checkpoints: Checkpoints::default(),
            sqld: None,
        }
    }
}

/// For all tenants together: about 50,000 single orders, or 1,000 pages of 50. Only answers
/// asked for again are worth keeping, and only until their tenant's next write.
pub const DEFAULT_READ_CACHE_MIB: usize = 32;

/// What the registry knows of one tenant's pool, found without opening it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolState {
    pub open: bool,
    /// Unix seconds of the last time the pool was handed out (or a connection taken), since this
    /// process started: kept in memory only, also after the pool closes.
    pub last_access: Option<i64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryStats {
    pub open_pools: usize,
    /// Pools opened since start (a first access that migrated and opened).
    pub pools_opened: u64,
    /// Pools closed since start (cap, idle, evict).
    pub pools_closed: u64,
}

/// What holds an open tenant's database.
pub(super) enum Db {
    /// Its connections stay open until the pool is dropped: no idle timeout, no lifetime, no
    /// check on checkout, and r2d2_sqlite never reports one broken. `reads` relies on it (its
    /// probe of the file's `-shm` is only safe while a connection is open).
    File(db::Pool),
    /// The namespace named by the tenant's id, on this libSQL server.
    Sqld(Arc<crate::sqld::Client>),
}

pub(super) struct OpenPool {
    pub(super) db: Db,
    pub(super) reads: reads::ReadCache,
    /// See [`WriteTurn`].
    pub(super) writer: WriteTurn,
    /// Writes through this pool, for the checkpoint every `CHECKPOINT_EVERY` of them.
    pub(super) commits: AtomicU64,
    /// Where checkpoints are asked for (none when Litestream does them), and whether one is
    /// already waiting there.
    pub(super) checkpoints: Option<Sender<Weak<OpenPool>>>,
    pub(super) checkpoint_queued: AtomicBool,
    pub(super) checkpoints_done: AtomicU64,
    /// Set, under this lock, when the registry closes the pool: the checkpoint thread may
    /// still upgrade a queued `Weak` afterwards, and must then leave the pool alone (its file
    /// may be on its way out, by purge). The thread holds the lock while it checkpoints, so a
    /// close waits for a running checkpoint.
    pub(super) retired: Mutex<bool>,
    /// For the checkpoint thread's log lines.
    pub(super) path: PathBuf,
    /// The record the pool was opened for, and (a file) which file it opened: a record changed
    /// since may be a move there and back by another process, after which the path names a new
    /// file and this pool's connections the old one (see `replaced`).
    pub(super) opened_for: Option<Arc<TenantRecord>>,
    pub(super) file_id: Option<(u64, u64)>,
    pub(super) clock: Clock,
    /// The `clock`'s nanoseconds at the last use, for LRU and idle closing.
    pub(super) last_used: AtomicU64,
    pub(super) metrics: Arc<crate::metrics::Metrics>,
}

impl OpenPool {
    /// Whether the pool reaches an old copy of the tenant: its file was moved away and another
    /// put in its place (`tenants move` there and back, by another process). Asked only once
    /// the record has changed since the pool opened (the catalog's snapshot makes a new one for
    /// a changed row only), so the request path of an unchanged tenant pays a pointer comparison
    /// for it, no system call.
    fn replaced(&self, record: &Arc<TenantRecord>) -> bool {
        if self
            .opened_for
            .as_ref()
            .is_none_or(|opened| Arc::ptr_eq(opened, record))
        {
            return false;
        }
        match self.file_id {
            Some(opened) => file_id(&self.path) != Some(opened),
            None => false,
        }
    }

    /// Where the database this pool reaches is kept.
    pub(super) fn store(&self) -> TenantStore {
        match self.db {
            Db::File(_) => TenantStore::Local,
            Db::Sqld(_) => TenantStore::Sqld,
        }
    }

    pub(super) fn touch(&self) {
        // Every request of the tenant touches: a store each time would pass the cache line
        // between cores on every one. Idle closing and LRU need no finer time than this.
        let now = self.clock.nanos();
        if now.saturating_sub(self.last_used.load(Ordering::Relaxed)) >= TOUCH_GRAIN_NANOS {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }
}

pub(super) const TOUCH_GRAIN_NANOS: u64 = 1_000_000;

/// The time LRU and idle closing go by, in nanoseconds from the registry's start: the
/// machine's monotonic clock, or in tests one they move by hand, so that idleness is a value
/// a test sets rather than a wait on the machine's speed.
#[derive(Clone)]
pub(crate) enum Clock {
    Monotonic(Instant),
    #[cfg(test)]
    Manual(Arc<AtomicU64>),
}

impl Clock {
    fn nanos(&self) -> u64 {
        match self {
            Clock::Monotonic(epoch) => {
                u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
            }
            #[cfg(test)]
            Clock::Manual(nanos) => nanos.load(Ordering::Relaxed),
        }
    }
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
    match &pool.db {
        Db::File(files) => {
            let state = files.state();
            state.connections == state.idle_connections
        }
        Db::Sqld(_) => true,
    }
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
        /// Where the record said the database was: a failure to open one store says nothing of
        /// the other (a tenant just moved, asked for by a request that read the old record).
        store: TenantStore,
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

/// What the `Registry` handle and its sweeper job share: the slots, the counters and the
/// checkpoint queue. The sweeper holds it weakly and is cancelled when the `Registry` drops.
pub(super) struct Shared {
    data_dir: PathBuf,
    config: RegistryConfig,
    threads: Arc<ScheduledThreadPool>,
    clock: Clock,
    /// Lock order: a slot's lock may be held while taking this one, never
    /// the reverse (other slots are only `try_lock`ed under it).
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    open: AtomicUsize,
    opened_total: AtomicU64,
    closed_total: AtomicU64,
    checkpoints: Option<Sender<Weak<OpenPool>>>,
    pub(super) reads: reads::Budget,
    /// The wall clock when `clock` read 0, in milliseconds: turns its readings into times of day
    /// (for [`PoolState::last_access`]) with no clock read on the requests' way.
    started_unix_ms: i64,
    /// `OpenPool::last_used` of the pools closed since start (evicted ones excepted), by tenant
    /// id: one entry per tenant at most.
    closed_last_used: Mutex<HashMap<String, u64>>,
    /// Tenants being restored from a backup (see [`Registry::begin_restore`]): opening them is
    /// refused meanwhile. `restoring_count` spares every request the lock when it is empty.
    restoring: Mutex<HashSet<String>>,
    restoring_count: AtomicUsize,
    /// Tenants being moved to another store (see [`Registry::mark_moving`]): still served, but
    /// no restore, purge or second move starts meanwhile. Lock order: `restoring` first.
    moving: Mutex<HashSet<String>>,
    /// This server's metrics: the registry's own and those of whatever holds a tenant.
    metrics: Arc<crate::metrics::Metrics>,
}
/// Tenant pools, opened lazily and closed by LRU, idleness or `evict`.
/// Share it between threads (e.g. in an `Arc`).
pub struct Registry {
    pub(super) shared: Arc<Shared>,
    sweeper: Option<JobHandle>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("data_dir", &self.shared.data_dir)
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
        Registry::with_clock(data_dir, config, Clock::Monotonic(Instant::now()))
    }

    pub(crate) fn with_clock(data_dir: &Path, config: RegistryConfig, clock: Clock) -> Registry {
        let checkpoints = (config.checkpoints == Checkpoints::Tenantd).then(|| {
            let (checkpoints, queue) = crossbeam_channel::unbounded();
            spawn_checkpointer(queue);
            checkpoints
        });
        let reads = reads::Budget::new(config.read_cache_bytes);
        let started_unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            - i64::try_from(clock.nanos() / 1_000_000).unwrap_or(0);
        let shared = Arc::new(Shared {
            data_dir: data_dir.to_path_buf(),
            threads: db::thread_pool(config.threads),
            config,
            clock,
            slots: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            opened_total: AtomicU64::new(0),
            closed_total: AtomicU64::new(0),
            checkpoints,
            reads,
            started_unix_ms,
            closed_last_used: Mutex::new(HashMap::new()),
            restoring: Mutex::new(HashSet::new()),
            restoring_count: AtomicUsize::new(0),
            moving: Mutex::new(HashSet::new()),
            metrics: Default::default(),
        });
        // Idle pools are closed whole by our own sweep instead of r2d2's
        // per-pool reaper: that reaper is a periodic job r2d2 never cancels,
        // so pools that come and go would pile up jobs on the shared
        // scheduler.
        let sweeper = shared.config.idle_timeout.map(|idle| {
            let period = (idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
            let weak: Weak<Shared> = Arc::downgrade(&shared);
            shared
                .threads
                .execute_at_fixed_rate(period, period, move || {
                    if let Some(shared) = weak.upgrade() {
                        shared.sweep();
                    }
                })
        });
        Registry { shared, sweeper }
    }

    /// The tenant's context, opening (and on first use migrating) its
    /// database. Suspended and deleted tenants are refused.
    pub fn open(&self, record: Arc<TenantRecord>) -> Result<Tenant, TenancyError> {
        self.open_with(record, Shared::open_pool)
    }

    /// [`Registry::open`] with the step that opens the pool given: tests pass one that fails
    /// in ways the real one rarely does.
    pub(super) fn open_with(
        &self,
        record: Arc<TenantRecord>,
        open_pool: impl FnOnce(&Shared, &TenantRecord, &Path) -> Result<OpenPool, String>,
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
            TenantStatus::Provisioning => {
                return Err(TenancyError::Provisioning {
                    tenant: record.slug.clone(),
                })
            }
        }
        let shared = &self.shared;
        loop {
            let slot = shared.slot(&record.id);
            let state = shared.wait_while_opening(&slot, &record)?;
            // Checked under the slot's lock, before an open pool is handed out: `begin_restore`
            // marks first and then evicts through this lock, so no pool opens after the mark,
            // and the requests already holding the pool drain instead of being joined by more.
            if shared.restoring_count.load(Ordering::SeqCst) > 0
                && lock(&shared.restoring).contains(&record.id)
            {
                return Err(TenancyError::Restoring {
                    tenant: record.slug.clone(),
                });
            }
            match &*state {
                SlotState::Opening => unreachable!("waited above"),
                SlotState::Retired => continue,
                // The tenant was moved to another store since this pool opened (by this process
                // or another): the pool's database is the old copy, refused for writes. Retired
                // here, so that this request and the next open the new one; requests holding the
                // old pool finish on it.
                SlotState::Open(pool) if pool.store() != record.store || pool.replaced(&record) => {
                    shared.retire_moved(&slot, state, &record.id);
                    continue;
                }
                SlotState::Open(pool) => {
                    pool.touch();
                    return Ok(Tenant {
                        pool: Arc::clone(pool),
                        record,
                    });
                }
                SlotState::Failed { reason, at, store }
                    if *store == record.store && at.elapsed() < shared.config.retry_after =>
                {
                    return Err(TenancyError::Unavailable {
                        tenant: record.slug.clone(),
                        reason: reason.clone(),
                    });
                }
                SlotState::Failed { .. } | SlotState::Empty => {}
            }
            return shared.open_slot(&slot, state, record, open_pool);
        }
    }

    /// Closes the tenant's pool (before purging its file, say). Returns
    /// whether a pool was open; `InUse` if someone still holds it.
    pub fn evict(&self, tenant_id: &str) -> Result<bool, TenancyError> {
        let shared = &self.shared;
        let Some(slot) = lock(&shared.slots).get(tenant_id).cloned() else {
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
            let mut slots = lock(&shared.slots);
            if slots.get(tenant_id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(tenant_id);
            }
        }
        drop(state);
        if let SlotState::Open(pool) = old {
            shared.closed(tenant_id, pool);
        }
        // Evicted to be purged: nothing is left to report an access of.
        lock(&shared.closed_last_used).remove(tenant_id);
        Ok(closed)
    }

    /// Closes the tenant's pool and refuses to open it (`Restoring`) until the guard is
    /// dropped: its file is about to be replaced. Waits up to `wait` for requests holding the
    /// pool to finish; `InUse` if they do not, `Restoring` if a restore already runs.
    pub fn begin_restore(
        &self,
        tenant_id: &str,
        slug: &str,
        wait: Duration,
    ) -> Result<RestoreGuard<'_>, TenancyError> {
        let guard = self.mark_restoring(tenant_id, slug)?;
        let deadline = Instant::now() + wait;
        loop {
            match self.evict(tenant_id) {
                Ok(_) => return Ok(guard),
                Err(TenancyError::InUse { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => {
                    return Err(TenancyError::InUse {
                        tenant: slug.to_string(),
                    })
                }
            }
        }
    }

    /// Refuses to open the tenant (`Restoring`) until the guard is dropped, and any restore of
    /// it meanwhile, without closing its pool: `Restoring` if a restore already runs.
    pub fn mark_restoring(
        &self,
        tenant_id: &str,
        slug: &str,
    ) -> Result<RestoreGuard<'_>, TenancyError> {
        let shared = &self.shared;
        let mut restoring = lock(&shared.restoring);
        if lock(&shared.moving).contains(tenant_id) {
            return Err(TenancyError::Moving {
                tenant: slug.to_string(),
            });
        }
        if !restoring.insert(tenant_id.to_string()) {
            return Err(TenancyError::Restoring {
                tenant: slug.to_string(),
            });
        }
        shared.restoring_count.fetch_add(1, Ordering::SeqCst);
        Ok(RestoreGuard {
            registry: self,
            tenant_id: tenant_id.to_string(),
        })
    }

    /// Marks the tenant as being moved to another store until the guard is dropped: it is
    /// still opened and served, but no restore or purge (`Moving`) and no second move starts
    /// meanwhile. `Restoring` if a restore or purge already runs, `Moving` if a move does.
    pub fn mark_moving(&self, tenant_id: &str, slug: &str) -> Result<MoveGuard<'_>, TenancyError> {
        let shared = &self.shared;
        let restoring = lock(&shared.restoring);
        if restoring.contains(tenant_id) {
            return Err(TenancyError::Restoring {
                tenant: slug.to_string(),
            });
        }
        if !lock(&shared.moving).insert(tenant_id.to_string()) {
            return Err(TenancyError::Moving {
                tenant: slug.to_string(),
            });
        }
        drop(restoring);
        Ok(MoveGuard {
            registry: self,
            tenant_id: tenant_id.to_string(),
        })
    }

    /// Runs `f` unless a restore of the tenant runs (`Restoring`), holding off any restore's
    /// start until `f` returns: for whoever opens the tenant's file without its pool.
    pub fn unless_restoring<T>(
        &self,
        tenant_id: &str,
        slug: &str,
        f: impl FnOnce() -> T,
    ) -> Result<T, TenancyError> {
        let restoring = lock(&self.shared.restoring);
        if restoring.contains(tenant_id) {
            return Err(TenancyError::Restoring {
                tenant: slug.to_string(),
            });
        }
        let out = f();
        drop(restoring);
        Ok(out)
    }

    /// After a move: takes `tenant`'s pool (the old copy's) out of its slot if it is still
    /// there, and waits up to `wait` for whoever else holds it to finish, so that its
    /// connections are closed before the old copy is renamed or deleted. Whether it closed.
    pub fn retire_moved(&self, tenant: Tenant, wait: Duration) -> bool {
        let shared = &self.shared;
        let slot = lock(&shared.slots).get(tenant.id()).cloned();
        if let Some(slot) = slot {
            let state = lock(&slot.state);
            if matches!(&*state, SlotState::Open(pool) if Arc::ptr_eq(pool, &tenant.pool)) {
                shared.retire_moved(&slot, state, tenant.id());
            }
        }
        let pool = Arc::downgrade(&tenant.pool);
        drop(tenant);
        let deadline = Instant::now() + wait;
        while pool.strong_count() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Whether a restore of the tenant is running.
    pub fn is_restoring(&self, tenant_id: &str) -> bool {
        self.shared.restoring_count.load(Ordering::SeqCst) > 0
            && lock(&self.shared.restoring).contains(tenant_id)
    }

    /// Whether the tenant's pool is open and when it was last used; opens nothing, waits for
    /// no opening, and creates no slot.
    pub fn pool_state(&self, tenant_id: &str) -> PoolState {
        let shared = &self.shared;
        let slot = lock(&shared.slots).get(tenant_id).cloned();
        let open = slot.and_then(|slot| match &*lock(&slot.state) {
            SlotState::Open(pool) => Some(pool.last_used()),
            _ => None,
        });
        let last_used = open.or_else(|| lock(&shared.closed_last_used).get(tenant_id).copied());
        PoolState {
            open: open.is_some(),
            last_access: last_used.map(|nanos| {
                let ms = i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX);
                shared.started_unix_ms.saturating_add(ms) / 1000
            }),
        }
    }

    /// Closes pools unused for `idle_timeout` and forgets failures older than
    /// `retry_after`. Runs periodically on its own; returns pools closed.
    pub fn close_idle(&self) -> usize {
        self.shared.sweep()
    }

    /// The wall clock, in whole seconds, when the registry's clock read 0.
    #[cfg(test)]
    pub(super) fn shared_started_unix_secs(&self) -> i64 {
        self.shared.started_unix_ms / 1000
    }

    /// The libSQL server of the tenants kept on sqld, if this registry has one.
    pub fn sqld(&self) -> Option<&Arc<crate::sqld::Client>> {
        self.shared.config.sqld.as_ref()
    }

    pub fn open_count(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.shared.metrics
    }

    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            open_pools: self.open_count(),
            pools_opened: self.shared.opened_total.load(Ordering::Relaxed),
            pools_closed: self.shared.closed_total.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    /// The tenant's slot, made `Empty` on first sight.
    fn slot(&self, id: &str) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        // Looked up before inserting: the hot path allocates no key.
        match slots.get(id) {
            Some(slot) => Arc::clone(slot),
            None => Arc::clone(slots.entry(id.to_string()).or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::new(SlotState::Empty),
                    settled: Condvar::new(),
                })
            })),
        }
    }

    /// The slot's state once nobody is opening it, or `Unavailable` after `open_wait`.
    fn wait_while_opening<'s>(
        &self,
        slot: &'s Slot,
        record: &TenantRecord,
    ) -> Result<MutexGuard<'s, SlotState>, TenancyError> {
        let mut state = lock(&slot.state);
        // The clock only when there is a wait: this runs on every tenant request.
        let mut deadline = None;
        while matches!(*state, SlotState::Opening) {
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.config.open_wait);
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
        Ok(state)
    }

    /// First use in this process, or a retry: opens the pool of an `Empty` or `Failed` slot,
    /// whose lock `state` is, and settles the slot `Open` or `Failed`.
    fn open_slot(
        &self,
        slot: &Slot,
        mut state: MutexGuard<'_, SlotState>,
        record: Arc<TenantRecord>,
        open_pool: impl FnOnce(&Shared, &TenantRecord, &Path) -> Result<OpenPool, String>,
    ) -> Result<Tenant, TenancyError> {
        let Some(path) = tenant_db_path(&self.data_dir, &record.id) else {
            let reason = "catalog id is not a canonical UUID".to_string();
            log::error!(
                "tenant {} ({:?}) unavailable: {reason}",
                record.slug,
                record.id
            );
            // Failed, like any tenant that cannot open: retried later, swept when stale.
            return Err(failed(&mut state, &record, reason));
        };
        // The slot says so and is unlocked while we work: callers for the same tenant wait on
        // its condition variable (bounded), others are not held up.
        *state = SlotState::Opening;
        drop(state);
        // A panic while opening must not leave the slot `Opening`, where every later request
        // for the tenant would wait out `open_wait` and fail, forever.
        let opened = catch_panic(|| {
            self.make_room();
            open_pool(self, &record, &path)
        });
        let mut state = lock(&slot.state);
        slot.settled.notify_all();
        match opened {
            Ok(mut pool) => {
                pool.opened_for = Some(Arc::clone(&record));
                let pool = Arc::new(pool);
                *state = SlotState::Open(Arc::clone(&pool));
                self.open.fetch_add(1, Ordering::SeqCst);
                self.opened_total.fetch_add(1, Ordering::Relaxed);
                Ok(Tenant { record, pool })
            }
            Err(reason) => {
                log::error!(
                    "tenant {} ({}) unavailable: {reason}",
                    record.slug,
                    record.id
                );
                Err(failed(&mut state, &record, reason))
            }
        }
    }

    /// Opens the file (never creating it), applies pending migrations, checks
    /// the file is this tenant's, then builds the pool. The check connection
    /// is separate so a corrupt file fails here at once, not after r2d2's
    /// connection retries time out. An error is the reason reported in
    /// `Unavailable`.
    fn open_pool(&self, record: &TenantRecord, path: &Path) -> Result<OpenPool, String> {
        if record.store == TenantStore::Sqld {
            return self.open_namespace(record, path);
        }
        let reason = |e: DbError| e.to_string();
        let mut conn = db::open(path, DbKind::Tenant, Create::Never).map_err(reason)?;
        // The file this pool's connections will have open: the one just opened, before any
        // move could put another in its place (its id is read after the open).
        let opened_file = file_id(path);
        check_tenant_file(&conn, record)?;
        db::migrate(&mut conn, self.config.migrations).map_err(reason)?;
        drop(conn);
        let config = PoolConfig {
            max_size: self.config.pool_max_size,
            idle_timeout: None,
            connection_timeout: self.config.connection_timeout,
            autocheckpoint: false,
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
            db: Db::File(pool),
            writer: WriteTurn::default(),
            commits: AtomicU64::new(0),
            checkpoints: self.checkpoints.clone(),
            checkpoint_queued: AtomicBool::new(false),
            checkpoints_done: AtomicU64::new(0),
            retired: Mutex::new(false),
            path: path.to_path_buf(),
            opened_for: None,
            file_id: opened_file,
            clock: self.clock.clone(),
            last_used: AtomicU64::new(0),
            metrics: Arc::clone(&self.metrics),
        };
        open.touch();
        Ok(open)
    }

    /// A tenant kept on sqld: its namespace checked to be this tenant's, then migrated (as a
    /// file is on first access). Nothing is kept of its answers: another node may write to it
    /// at any time, and no local file would show it.
    fn open_namespace(&self, record: &TenantRecord, path: &Path) -> Result<OpenPool, String> {
        let client = self.config.sqld.as_ref().ok_or_else(|| {
            "the tenant is kept on sqld, and this server has no --sqld-url".to_string()
        })?;
        let read = store_sqld::SqldRead {
            client,
            namespace: &record.id,
        };
        check_owner(&read, record)?;
        store_sqld::migrate(client, &record.id, self.config.migrations)
            .map_err(|e| format!("migrating its namespace: {e}"))?;
        let open = OpenPool {
            reads: reads::ReadCache::off(self.reads.clone()),
            db: Db::Sqld(Arc::clone(client)),
            writer: WriteTurn::default(),
            commits: AtomicU64::new(0),
            // sqld checkpoints its own files.
            checkpoints: None,
            checkpoint_queued: AtomicBool::new(false),
            checkpoints_done: AtomicU64::new(0),
            retired: Mutex::new(false),
            path: path.to_path_buf(),
            // A namespace is reached by its name: one made again under it is the one reached.
            opened_for: None,
            file_id: None,
            clock: self.clock.clone(),
            last_used: AtomicU64::new(0),
            metrics: Arc::clone(&self.metrics),
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
            self.retire(&mut slots, &id).map(|pool| (id, pool))
        };
        match victim {
            Some((id, pool)) => {
                self.closed(&id, pool);
                true
            }
            None => false,
        }
    }

    /// Takes the open pool of a moved tenant out of its slot, held or not (whoever holds it
    /// finishes on it), and the slot out of the map: the next open makes a new one.
    fn retire_moved(&self, slot: &Arc<Slot>, mut state: MutexGuard<'_, SlotState>, id: &str) {
        let old = std::mem::replace(&mut *state, SlotState::Retired);
        {
            let mut slots = lock(&self.slots);
            if slots.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                slots.remove(id);
            }
        }
        drop(state);
        if let SlotState::Open(pool) = old {
            // The checkpoint thread leaves a retired pool alone.
            *lock(&pool.retired) = true;
            self.closed(id, pool);
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

    fn closed(&self, id: &str, pool: Arc<OpenPool>) {
        lock(&self.closed_last_used).insert(id.to_string(), pool.last_used());
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.closed_total.fetch_add(1, Ordering::Relaxed);
        // The last reference: dropping it closes the connections.
        drop(pool);
    }

    fn sweep(&self) -> usize {
        let mut closed = 0;
        if let Some(idle) = self.config.idle_timeout {
            let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
            let now = self.clock.nanos();
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

/// While alive, the tenant is refused (see [`Registry::begin_restore`]).
pub struct RestoreGuard<'r> {
    registry: &'r Registry,
    tenant_id: String,
}

impl Drop for RestoreGuard<'_> {
    fn drop(&mut self) {
        let shared = &self.registry.shared;
        if lock(&shared.restoring).remove(&self.tenant_id) {
            shared.restoring_count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// While alive, the tenant is being moved (see [`Registry::mark_moving`]).
pub struct MoveGuard<'r> {
    registry: &'r Registry,
    tenant_id: String,
}

impl Drop for MoveGuard<'_> {
    fn drop(&mut self) {
        lock(&self.registry.shared.moving).remove(&self.tenant_id);
    }
}

/// Which file `path` names now (device and inode), if it names one.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// `open()`'s result, or the panic's message as the reason the tenant is unavailable.
fn catch_panic(open: impl FnOnce() -> Result<OpenPool, String>) -> Result<OpenPool, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(format!("opening panicked: {what}"))
    })
}

/// Marks the slot `Failed` (retried after `retry_after`) and says so.
fn failed(state: &mut SlotState, record: &TenantRecord, reason: String) -> TenancyError {
    *state = SlotState::Failed {
        reason: reason.clone(),
        at: Instant::now(),
        store: record.store,
    };
    TenancyError::Unavailable {
        tenant: record.slug.clone(),
        reason,
    }
}
