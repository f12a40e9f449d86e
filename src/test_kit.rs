//! Fixtures the unit tests share: a fresh catalog in a temporary directory, tenants in it
//! (a bare catalog row, or a provisioned tenant file), a registry over it, and the few
//! readings the tests take of the files. Test builds only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;
use tempfile::TempDir;

use crate::catalog::{Catalog, TenantRecord, CENTRAL_DB};
use crate::db::Create;
use crate::tenancy::lifecycle::{self, NewTenant};
use crate::tenancy::{tenant_db_path, Registry, RegistryConfig};

/// A made-up Argon2 hash: the catalog stores it and never checks it.
pub(crate) const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
/// The tests' "now", in Unix seconds.
pub(crate) const NOW: i64 = 1_700_000_000;

/// A catalog opened (and created) in its own temporary directory. Fields drop in order: the
/// catalog before its directory.
pub(crate) struct Setup {
    pub catalog: Catalog,
    pub dir: TempDir,
}

impl Setup {
    pub(crate) fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), Create::IfMissing).unwrap();
        Setup { catalog, dir }
    }

    pub(crate) fn data(&self) -> &Path {
        self.dir.path()
    }

    /// What the CLI or a later binary would see: its own connection, in what might as well
    /// be another process.
    pub(crate) fn outside(&self) -> Connection {
        outside(self.data())
    }

    /// One number from the catalog, read from outside.
    pub(crate) fn count(&self, sql: &str) -> i64 {
        count(&self.outside(), sql)
    }

    /// A catalog row named "`slug` Inc", with no tenant file.
    pub(crate) fn add_tenant(&self, slug: &str, domains: &[&str]) -> Arc<TenantRecord> {
        add_tenant(&self.catalog, slug, domains)
    }

    /// A tenant named "`slug` Ltd" as the CLI makes one: the row and its migrated file.
    pub(crate) fn provision(&self, slug: &str, domains: &[&str]) -> Arc<TenantRecord> {
        lifecycle::create(
            &self.catalog,
            &NewTenant {
                slug: slug.to_string(),
                name: format!("{slug} Ltd"),
                domains: domains.iter().map(|d| d.to_string()).collect(),
            },
        )
        .unwrap()
    }

    pub(crate) fn registry(&self, config: RegistryConfig) -> Registry {
        Registry::new(self.data(), config)
    }

    pub(crate) fn path(&self, record: &TenantRecord) -> PathBuf {
        tenant_db_path(self.data(), &record.id).unwrap()
    }
}

/// A catalog row named "`slug` Inc", with no tenant file.
pub(crate) fn add_tenant(catalog: &Catalog, slug: &str, domains: &[&str]) -> Arc<TenantRecord> {
    let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
    catalog
        .insert_tenant(
            &uuid::Uuid::new_v4(),
            slug,
            &format!("{slug} Inc"),
            &domains,
        )
        .unwrap()
}

/// A connection to the catalog in `data` of its own, as the CLI would open one.
pub(crate) fn outside(data: &Path) -> Connection {
    Connection::open(data.join(CENTRAL_DB)).unwrap()
}

pub(crate) fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

/// A registry that never closes an idle tenant, so no background close races a test.
pub(crate) fn quiet() -> RegistryConfig {
    RegistryConfig {
        idle_timeout: None,
        ..RegistryConfig::default()
    }
}

/// The write-ahead log keeps its longest length when it starts over, so its size is its
/// high-water mark: a log that never starts over grows past `limit` bytes. How far below it a
/// working log stays depends on how often the checkpoint thread gets a core, so `limit` must sit
/// well between the two: a loaded machine's log is several times a quiet one's.
pub(crate) fn assert_log_stayed_small(wal: &Path, writes: usize, limit: u64) {
    let longest = std::fs::metadata(wal).unwrap().len();
    assert!(
        longest < limit,
        "the log grew to {longest} bytes over {writes} writes"
    );
}

/// Counts a writer thread down when it ends, also by a panic: readers that run while writers
/// are left must not spin on forever after a writer failed.
pub(crate) struct Done<'a>(pub(crate) &'a std::sync::atomic::AtomicUsize);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
