//! One tenant's health as an operator sees it: its file's size, its schema version, whether its
//! pool is open and when it was last used, its last backup. Found without opening the pool and without making any
//! file: a health check that migrated, or brought back a missing file, would change what it looks at.

use std::io;
use std::path::Path;

use serde::Serialize;

use super::backup::{latest_backup, BackupSummary};
use super::lifecycle::tenant_target_version;
use super::{tenant_db_path, Registry};
use crate::catalog::{TenantRecord, TenantStatus, TenantStore};
use crate::db::{self, DbError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantHealth {
    pub tenant_id: String,
    pub slug: String,
    pub status: TenantStatus,
    /// Where its database is kept; for `sqld`, the file fields stay empty.
    pub store: TenantStore,
    /// False when the catalog names a tenant whose file is not there.
    pub file_exists: bool,
    /// The database file's size; `None` when it is missing.
    pub file_bytes: Option<u64>,
    /// The size of its `-wal`: 0 when there is none (the file was closed cleanly).
    pub wal_bytes: u64,
    pub schema_version: Option<u32>,
    /// The binary's latest tenant schema: the pool migrates to it when it next opens.
    pub latest_schema_version: u32,
    /// Why the file or its schema version could not be read.
    pub error: Option<String>,
    /// Unix seconds; kept in memory only, so `None` for a tenant unused since the server started.
    pub last_access: Option<i64>,
    pub pool_open: bool,
    /// The newest backup (see [`super::backup::latest_backup`]): when, how big, which file.
    pub last_backup: Option<BackupSummary>,
    /// Its last few server faults (5xx answers, failed jobs), newest first; in memory only.
    pub recent_errors: Vec<crate::metrics::RecentError>,
}

/// The health of `record`'s tenant, whose file lives under `data_dir`.
pub fn health(data_dir: &Path, registry: &Registry, record: &TenantRecord) -> TenantHealth {
    let pool = registry.pool_state(&record.id);
    let mut health = TenantHealth {
        tenant_id: record.id.clone(),
        slug: record.slug.clone(),
        status: record.status,
        store: record.store,
        file_exists: false,
        file_bytes: None,
        wal_bytes: 0,
        schema_version: None,
        latest_schema_version: tenant_target_version(),
        error: None,
        last_access: pool.last_access,
        pool_open: pool.open,
        last_backup: latest_backup(data_dir, &record.id).map(|m| BackupSummary::from(&m)),
        recent_errors: registry.metrics().recent_errors(&record.id),
    };
    if record.store == TenantStore::Sqld {
        match registry.sqld() {
            Some(client) => match crate::store::sqld::schema_version(client, &record.id) {
                Ok(0) => health.error = Some("its namespace is empty or missing".into()),
                Ok(version) => health.schema_version = Some(version),
                Err(e) => health.error = Some(format!("its namespace cannot be read: {e}")),
            },
            None => health.error = Some("kept on sqld, and this server has no --sqld-url".into()),
        }
        return health;
    }
    let Some(path) = tenant_db_path(data_dir, &record.id) else {
        health.error = Some("catalog id is not a canonical UUID".into());
        return health;
    };
    let [file, wal, _] = db::database_files(&path);
    match size_of(&file) {
        Ok(Some(bytes)) => {
            health.file_exists = true;
            health.file_bytes = Some(bytes);
        }
        Ok(None) => {
            health.error = Some("the database file is missing".into());
            return health;
        }
        Err(e) => {
            health.error = Some(format!("the database file cannot be read: {e}"));
            return health;
        }
    }
    health.wal_bytes = size_of(&wal).ok().flatten().unwrap_or(0);
    match db::open_read_only(&path).and_then(|conn| db::schema_version(&conn)) {
        Ok(version) => health.schema_version = Some(version),
        Err(DbError::Empty(_)) => {
            health.error =
                Some("the database file is empty (never provisioned, or truncated)".into())
        }
        Err(e) => health.error = Some(e.to_string()),
    }
    health
}

/// The file's size, `None` when it is not there. Metadata only: no descriptor of the file.
fn size_of(path: &Path) -> io::Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
