//! The in-memory snapshot of every tenant record, the watcher that reloads it when the catalog
//! file changed (by this process or another), and `CatalogView`, the per-request view that checks
//! for changes once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::Connection;

use super::{
    lock, Catalog, CatalogError, DomainRecord, IdentityError, Maintenance, Membership, PlanRates,
    Session, TenantRecord, TenantStatus, TenantStore, User,
};
use crate::args;
use crate::db::probe::{self, WalProbe};
use crate::store::{Flow, RowRef, Sql, StoreError};

/// The whole catalog at one moment. Immutable: a change builds a new one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    by_id: HashMap<String, Arc<TenantRecord>>,
    by_slug: HashMap<String, Arc<TenantRecord>>,
    by_domain: HashMap<String, Arc<TenantRecord>>,
    /// The scopes in maintenance, by tenant id ([`super::MAINTENANCE_SERVER`] for the server).
    maintenance: HashMap<String, Arc<Maintenance>>,
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

    /// The maintenance of a tenant (by id) or of the server ([`super::MAINTENANCE_SERVER`]).
    pub fn maintenance(&self, scope: &str) -> Option<&Arc<Maintenance>> {
        self.maintenance.get(scope)
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

/// The connection that watches `PRAGMA data_version`. It never writes: the
/// pragma only moves for commits made by *other* connections, which is what
/// makes it see both our pool's writes and another process's.
pub(super) struct Watcher {
    /// `None` when the catalog is kept on sqld: there, only `catalog_changes.n` tells.
    conn: Option<Connection>,
    /// The `PRAGMA data_version` the snapshot was last brought up to.
    data_version: Option<i64>,
    /// The last `tenant_changes.seq` the snapshot includes; `None` before the first load.
    log_seq: Option<i64>,
    /// `catalog_changes.n` and the schema's version when the snapshot and the generation were
    /// last brought up to date: a commit that leaves both (a job, an audit entry) changes
    /// nothing kept.
    counted: Option<(i64, i64)>,
}

impl Watcher {
    /// Nothing seen yet: the first check loads everything.
    pub(super) fn new(conn: Option<Connection>) -> Watcher {
        Watcher {
            conn,
            data_version: None,
            log_seq: None,
            counted: None,
        }
    }
}

/// The snapshot, and the WAL-index header as read just before the last check that found it
/// current: while the header reads the same, the snapshot is still current.
pub(super) struct LastCheck {
    header: Option<probe::Header>,
    snapshot: Arc<Snapshot>,
}

impl LastCheck {
    pub(super) fn empty() -> LastCheck {
        LastCheck {
            header: None,
            snapshot: Arc::new(Snapshot::default()),
        }
    }
}

/// A request's view of the catalog: checked for changes once, when the request began (see
/// [`Catalog::view`]), then trusted for the request's whole life. `snapshot` answers tenant
/// lookups and the methods answer identity reads through the read cache, so while the catalog
/// is unchanged they cost no query.
pub struct CatalogView<'a> {
    pub catalog: &'a Catalog,
    pub snapshot: Arc<Snapshot>,
    /// Changes with every commit to the catalog seen so far (by this process or, through the
    /// check that made this `CatalogView`, another): what was read under one value may be kept and
    /// trusted for as long as a later `CatalogView` has the same.
    pub generation: u64,
}

impl CatalogView<'_> {
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

    /// The request rates the tenant's plan names (`None`: the server's flag).
    pub fn plan_rates(&self, tenant_id: &str) -> Result<PlanRates, CatalogError> {
        self.catalog.cached_plan_rates(tenant_id)
    }
}

impl Catalog {
    /// The current snapshot, reloaded first if the catalog changed since the
    /// last look. Costs a 96-byte copy of the mapped WAL-index header when nothing
    /// changed, and a `PRAGMA data_version` when the header moved.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, CatalogError> {
        if self.is_shared() {
            return self.shared_snapshot();
        }
        // Read before the real check, never after: see `db::probe`.
        let header = self.probe.as_ref().map(WalProbe::read);
        if header.is_some() {
            let last = self.last_check.read().unwrap_or_else(|e| e.into_inner());
            if last.header == header {
                return Ok(Arc::clone(&last.snapshot));
            }
        }
        {
            let mut watcher = lock(&self.watcher);
            let Some(conn) = &watcher.conn else {
                return Err(no_watcher());
            };
            let version: i64 = conn
                .prepare_cached("PRAGMA data_version")?
                .query_row([], |row| row.get(0))?;
            let mut current = watcher.data_version == Some(version);
            // Read after the version, like the log below: a commit in between is seen again.
            let counted = if current { None } else { counted_changes(conn) };
            if !current && counted.is_some() && counted == watcher.counted {
                // Only tables nothing kept is read from (jobs, the audit log) changed.
                watcher.data_version = Some(version);
                current = true;
            }
            if !current {
                self.generation.fetch_add(1, Ordering::SeqCst);
                // Read after the version: a commit in between only causes
                // one extra refresh later, never a missed one. A refresh that
                // fails keeps the last good snapshot serving (if there is one).
                let base = Arc::clone(
                    &self
                        .last_check
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .snapshot,
                );
                match refresh(&mut watcher, &base) {
                    Ok(refreshed) => {
                        self.install(refreshed);
                        watcher.data_version = Some(version);
                        watcher.counted = counted;
                        current = true;
                    }
                    Err(e) if watcher.data_version.is_some() => {
                        log::error!("catalog reload failed, serving the previous copy: {e}");
                    }
                    Err(e) => return Err(e),
                }
            }
            if current {
                self.last_check
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .header = header;
            }
        }
        Ok(Arc::clone(
            &self
                .last_check
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .snapshot,
        ))
    }

    /// Serves `fresh` from now on, if a reload made one.
    fn install(&self, fresh: Option<Snapshot>) {
        if let Some(fresh) = fresh {
            self.last_check
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .snapshot = Arc::new(fresh);
            self.reloads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`Catalog::snapshot`] of a catalog kept on sqld, which other nodes write: no local file
    /// shows their commits, so every call reads `catalog_changes.n` (one round trip), and
    /// reloads what changed when it moved. That read is what makes a change made through
    /// another node seen by this node's next request.
    fn shared_snapshot(&self) -> Result<Arc<Snapshot>, CatalogError> {
        self.read(|db| {
            let counted = shared_counted(db)?;
            let mut watcher = lock(&self.watcher);
            if watcher.counted != Some(counted) {
                self.generation.fetch_add(1, Ordering::SeqCst);
                let base = Arc::clone(
                    &self
                        .last_check
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .snapshot,
                );
                let maintenance = load_maintenance(db)?;
                match refresh_from(db, &mut watcher.log_seq, &base, maintenance) {
                    Ok(fresh) => {
                        self.install(fresh);
                        watcher.counted = Some(counted);
                    }
                    Err(e) if watcher.counted.is_some() => {
                        log::error!("catalog reload failed, serving the previous copy: {e}");
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(Arc::clone(
                &self
                    .last_check
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .snapshot,
            ))
        })
    }

    /// The catalog as of now: checks `PRAGMA data_version` once and hands out reads that
    /// trust that check. A request takes one at its start, so its identity reads (session,
    /// user, membership) cost no query while nothing changed, and see every change committed
    /// before the request began, by this process or another.
    pub fn view(&self) -> Result<CatalogView<'_>, CatalogError> {
        let snapshot = self.snapshot()?;
        Ok(CatalogView {
            catalog: self,
            snapshot,
            // Read after the check, before any read it vouches for: a commit in between only
            // makes what is kept under it useless sooner.
            generation: self.generation.load(Ordering::SeqCst),
        })
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
}

/// Brings `base` up to the catalog as of now, in one read transaction: `None` if no tenant or
/// domain changed since the last look (a session, an audit entry), the changed tenants alone
/// re-read if `tenant_changes` covers the gap, or everything.
/// `catalog_changes.n` (see its migration) and the schema's version, or `None` when they cannot
/// be read (a catalog not yet migrated that far): then every commit counts, as before the
/// counter. The schema's version counts because a migration that rebuilds a counted table
/// (copy, drop, rename) fires none of its triggers.
fn counted_changes(conn: &Connection) -> Option<(i64, i64)> {
    conn.prepare_cached(
        "SELECT n, (SELECT schema_version FROM pragma_schema_version) FROM catalog_changes
         WHERE id = 1",
    )
    .and_then(|mut st| st.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
    .ok()
}

/// A catalog file is always opened with its watcher's connection; only one kept on sqld has
/// none, and it never asks for it.
fn no_watcher() -> CatalogError {
    CatalogError::Db(crate::db::DbError::NotAFile(
        "the catalog's watcher has no connection".into(),
    ))
}

/// `catalog_changes.n` and the last migration's version, as one value read in one statement:
/// on sqld, `pragma_schema_version` is not to be relied on, and a migration adds its row to
/// `schema_migrations` in the transaction that changes the tables.
fn shared_counted(db: &dyn Sql) -> Result<(i64, i64), CatalogError> {
    Ok(db.query_one(
        "SELECT n, (SELECT coalesce(max(version), 0) FROM schema_migrations)
         FROM catalog_changes WHERE id = 1",
        &[],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?)
}

/// A small table, read again on every counted change: maintenance moves no tenant row.
fn load_maintenance(db: &dyn Sql) -> Result<HashMap<String, Arc<Maintenance>>, CatalogError> {
    Ok(super::maintenance::load(db)?
        .into_iter()
        .map(|m| (m.scope.clone(), Arc::new(m)))
        .collect())
}

fn refresh(watcher: &mut Watcher, base: &Snapshot) -> Result<Option<Snapshot>, CatalogError> {
    let Some(conn) = watcher.conn.as_mut() else {
        return Err(no_watcher());
    };
    let tx = conn.transaction()?;
    let maintenance = load_maintenance(&tx)?;
    let fresh = refresh_from(&tx, &mut watcher.log_seq, base, maintenance)?;
    tx.finish()?;
    Ok(fresh)
}

/// [`refresh`]'s reads, on one read transaction of the catalog (or, on sqld, statements that
/// each see every commit before them: a commit between two of them is only read again at the
/// next change, never missed, since `log_seq` is read first).
fn refresh_from(
    db: &dyn Sql,
    log_seq: &mut Option<i64>,
    base: &Snapshot,
    maintenance: HashMap<String, Arc<Maintenance>>,
) -> Result<Option<Snapshot>, CatalogError> {
    let (first, last): (Option<i64>, Option<i64>) = db.query_one(
        "SELECT min(seq), max(seq) FROM tenant_changes",
        &[],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let last = last.unwrap_or(0);
    let snapshot = match *log_seq {
        Some(seen) if seen == last => None,
        // The log is complete after `seen`: it was never pruned past it, nor went back (a
        // catalog restored from a backup).
        Some(seen) if seen < last && first.is_some_and(|first| first <= seen + 1) => {
            let mut changed: Vec<String> = db.query_map(
                "SELECT DISTINCT tenant_id FROM tenant_changes WHERE seq > ?1",
                args![seen],
                |row| row.get(0),
            )?;
            changed.sort();
            let mut next = base.clone();
            // Out first, all of them, then in: a slug or domain may have passed from one
            // changed tenant to another.
            for id in &changed {
                next.remove(id);
            }
            for id in &changed {
                if let Some(record) = load_tenant(db, id)? {
                    next.insert(Arc::new(record));
                }
            }
            Some(next)
        }
        _ => Some(load_all(db)?),
    };
    let snapshot = match snapshot {
        Some(mut s) => {
            s.maintenance = maintenance;
            Some(s)
        }
        None if base.maintenance != maintenance => {
            let mut s = base.clone();
            s.maintenance = maintenance;
            Some(s)
        }
        None => None,
    };
    *log_seq = Some(last);
    Ok(snapshot)
}

const TENANT_COLUMNS: &str =
    "id, slug, name, status, settings, created_at, updated_at, deleted_at, store";

fn tenant_from_row(
    row: &dyn RowRef,
    domains: Vec<DomainRecord>,
) -> Result<TenantRecord, CatalogError> {
    let id: String = row.get(0)?;
    let status: String = row.get(3)?;
    let settings: String = row.get(4)?;
    let store: String = row.get(8)?;
    let status = TenantStatus::parse(&status).ok_or_else(|| CatalogError::Corrupt {
        id: id.clone(),
        message: format!("unknown status {status:?}"),
    })?;
    let store = TenantStore::parse(&store).ok_or_else(|| CatalogError::Corrupt {
        id: id.clone(),
        message: format!("unknown store {store:?}"),
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
        store,
        settings,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        deleted_at: row.get(7)?,
    })
}

fn domain_from_row(row: &dyn RowRef) -> Result<DomainRecord, StoreError> {
    Ok(DomainRecord {
        domain: row.get(0)?,
        is_primary: row.get(1)?,
    })
}

/// One tenant with its domains, as of the caller's transaction; `None` if it is gone.
fn load_tenant(db: &dyn Sql, id: &str) -> Result<Option<TenantRecord>, CatalogError> {
    let mut domains = Some(db.query_map(
        "SELECT domain, is_primary FROM domains WHERE tenant_id = ?1
         ORDER BY is_primary DESC, domain",
        args![id],
        domain_from_row,
    )?);
    let mut found = None;
    db.query_each(
        &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"),
        args![id],
        &mut |row| {
            found = Some(tenant_from_row(row, domains.take().unwrap_or_default()));
            Ok(Flow::Break(()))
        },
    )?;
    found.transpose()
}

/// Every tenant with its domains, as of the caller's transaction.
fn load_all(db: &dyn Sql) -> Result<Snapshot, CatalogError> {
    let mut domains: HashMap<String, Vec<DomainRecord>> = HashMap::new();
    db.query_each(
        "SELECT domain, is_primary, tenant_id FROM domains
         ORDER BY tenant_id, is_primary DESC, domain",
        &[],
        &mut |row| {
            domains
                .entry(row.get(2)?)
                .or_default()
                .push(domain_from_row(row)?);
            Ok(Flow::Continue(()))
        },
    )?;
    let mut snapshot = Snapshot::default();
    let mut corrupt = None;
    db.query_each(
        &format!("SELECT {TENANT_COLUMNS} FROM tenants"),
        &[],
        &mut |row| {
            let id: String = row.get(0)?;
            let own = domains.remove(&id).unwrap_or_default();
            match tenant_from_row(row, own) {
                Ok(record) => snapshot.insert(Arc::new(record)),
                Err(e) => {
                    corrupt = Some(e);
                    return Ok(Flow::Break(()));
                }
            }
            Ok(Flow::Continue(()))
        },
    )?;
    match corrupt {
        Some(e) => Err(e),
        None => Ok(snapshot),
    }
}
