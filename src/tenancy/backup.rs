//! Backups of one tenant's file (and of the catalog) while the server serves it, their
//! manifests, listing and retention; and restoring a tenant from one, in place or as a clone.
//!
//! Layout: `data/backups/<tenant-uuid>/<yyyymmddThhmmssZ>-<6 hex>.db` with the manifest beside
//! it (same name, `.json`); the catalog's under `data/backups/central/`. A restore keeps the file
//! it replaces as `replaced-<stamp>-<6 hex>.db` in the same directory. Files being written end
//! in `.tmp` and are renamed into place only once complete and durable.
//!
//! A tenant's files (attachments) are content-addressed and never change, so a backup keeps
//! them once per content in `files/` of its directory, shared by all the tenant's backups: a
//! hard link to the tenant's own copy where the file system allows, a copy otherwise. A
//! restore brings back those its database names that the tenant no longer has; retention
//! removes those no kept backup names.
//!
//! The copy is SQLite's online backup API from a connection of its own: ATTACH is disabled on
//! every connection (`db::disable_attach`), so `VACUUM INTO` and friends are out. One
//! `step(-1)` runs in a single read transaction, which under WAL is one consistent snapshot
//! while writers carry on.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::lifecycle::{self, tenant_target_version, LifecycleError, NewTenant};
use super::{tenant_db_path, Registry, TenancyError};
use crate::catalog::{Catalog, TenantRecord, TenantStatus, TenantStore, CENTRAL_DB, TENANTS_DIR};
use crate::db::{self, Create, DbError, DbKind};

pub const BACKUPS_DIR: &str = "backups";
/// The catalog's backups' directory under [`BACKUPS_DIR`], and its manifests' `tenant_id`.
pub const CENTRAL: &str = "central";
/// How long a restore waits for requests holding the tenant's pool to finish.
const RESTORE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What is known of one backup file, written beside it as `<name>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// The backup's file name (in its tenant's backups directory), never a path.
    pub file: String,
    /// The tenant's id, or `central` for the catalog.
    pub tenant_id: String,
    pub slug: String,
    pub schema_version: u32,
    pub bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Unix seconds.
    pub created_at: i64,
    pub tenantd_version: String,
    /// The tenant's files this backup names and keeps in `files/` beside it, and those it
    /// names that were gone when it was taken (deleted meanwhile).
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub files_missing: u64,
}

/// What a tenant's health shows of its newest backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    pub created_at: i64,
    pub bytes: u64,
    pub file: String,
}

impl From<&BackupManifest> for BackupSummary {
    fn from(m: &BackupManifest) -> Self {
        BackupSummary {
            created_at: m.created_at,
            bytes: m.bytes,
            file: m.file.clone(),
        }
    }
}

#[derive(Debug)]
pub enum BackupError {
    /// No such backup (of this tenant).
    NotFound(String),
    /// The file was checked and is not one to restore: why.
    Refused(String),
    /// Another restore of the tenant is running, or its pool stayed in use.
    Busy(String),
    Tenancy(TenancyError),
    Lifecycle(LifecycleError),
    Db(DbError),
    Io {
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::NotFound(name) => write!(f, "no backup {name}"),
            BackupError::Refused(why) => write!(f, "the backup cannot be restored: {why}"),
            BackupError::Busy(why) => f.write_str(why),
            BackupError::Tenancy(e) => e.fmt(f),
            BackupError::Lifecycle(e) => e.fmt(f),
            BackupError::Db(e) => e.fmt(f),
            BackupError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for BackupError {}

impl From<DbError> for BackupError {
    fn from(e: DbError) -> Self {
        BackupError::Db(e)
    }
}

impl From<rusqlite::Error> for BackupError {
    fn from(e: rusqlite::Error) -> Self {
        BackupError::Db(DbError::Sqlite(e))
    }
}

impl From<LifecycleError> for BackupError {
    fn from(e: LifecycleError) -> Self {
        BackupError::Lifecycle(e)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `data/backups/<key>`: a tenant's id (checked canonical) or [`CENTRAL`].
pub fn backups_dir(data_dir: &Path, key: &str) -> Option<PathBuf> {
    if key != CENTRAL {
        tenant_db_path(data_dir, key)?;
    }
    Some(data_dir.join(BACKUPS_DIR).join(key))
}

/// Whether `name` is a backup file name as this module makes them: `<stamp>-<6 hex>.db`,
/// optionally `replaced-` first. Anything else (a path, `..`, another extension) is not.
pub fn valid_name(name: &str) -> bool {
    let stem = name.strip_prefix("replaced-").unwrap_or(name);
    let Some(stem) = stem.strip_suffix(".db") else {
        return false;
    };
    let b = stem.as_bytes();
    b.len() == 23
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fn stamp(now: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(now, 0)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

fn new_name(prefix: &str, now: i64) -> String {
    let tag: u32 = rand::random::<u32>() & 0xff_ffff;
    format!("{prefix}{}-{tag:06x}.db", stamp(now))
}

fn with_ext(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(ext);
    PathBuf::from(name)
}

fn manifest_path(db_file: &Path) -> PathBuf {
    db_file.with_extension("json")
}

/// A connection for the other side of a copy: no pool, no WAL (so no `-wal` to lose or to
/// carry along), every commit synced.
fn open_plain(path: &Path, create: bool) -> Result<Connection, BackupError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(db::BUSY_TIMEOUT)?;
    db::disable_attach(&conn);
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// What a restore answers when another process keeps the tenant's file open.
const HELD_ELSEWHERE: &str = "another process holds the tenant's file (Litestream, or a \
     tenantd backup or export from the command line, say): stop it and try again";

/// SQLITE_BUSY and SQLITE_LOCKED are another connection on the file, not a fault: [`BackupError::Busy`].
fn busy_or_db(e: rusqlite::Error) -> BackupError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => BackupError::Busy(HELD_ELSEWHERE.into()),
        _ => e.into(),
    }
}

/// Leaves WAL for the rollback journal: SQLite checkpoints everything into the main file and
/// removes the `-wal` itself. Fails (busy) when another connection has the file open.
fn to_delete_mode(conn: &Connection) -> Result<(), BackupError> {
    let blocked: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        .map_err(busy_or_db)?;
    if blocked != 0 {
        return Err(BackupError::Busy(HELD_ELSEWHERE.into()));
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "DELETE", |row| row.get(0))
        .map_err(busy_or_db)?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(BackupError::Busy(format!(
            "the database is still in use (journal_mode stayed {mode})"
        )));
    }
    Ok(())
}

/// Takes the tenant's file out of WAL (see [`to_delete_mode`]) through a connection in
/// exclusive locking mode, handed back still holding its exclusive lock: until it is closed,
/// no other process (a `tenantd export`, Litestream) can read the file, nor switch it back to
/// WAL and so leave a `-wal` to be replayed onto the file that replaces it.
fn unwall_and_hold(live: &Path) -> Result<Connection, BackupError> {
    let old = open_plain(live, false)?;
    old.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(busy_or_db)?;
    to_delete_mode(&old)?;
    // A write transaction that writes nothing: it takes the exclusive lock, which exclusive
    // locking mode then keeps after the commit.
    old.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
        .map_err(busy_or_db)?;
    Ok(old)
}

/// Copies `src` (the whole main database, one snapshot) into a new file `dest`, durable and in
/// rollback-journal mode, and hands the destination's connection back still open.
fn copy_into(src: &Connection, dest: &Path) -> Result<Connection, BackupError> {
    let mut out = open_plain(dest, true)?;
    out.pragma_update(None, "journal_mode", "DELETE")?;
    {
        let backup = Backup::new(src, &mut out)?;
        // -1: every page in one step, so in one read transaction on `src`. Busy only when a
        // writer holds a lock the read needs for a moment (a WAL reset): then again.
        let mut tries = 0;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                _ => {
                    return Err(BackupError::Busy(
                        "the database stayed locked during the copy".into(),
                    ))
                }
            }
        }
    }
    // The copied header says WAL (bytes 18 and 19 come from the source): set the journal mode
    // again so the file is a rollback-journal database when it is next opened.
    to_delete_mode(&out)?;
    Ok(out)
}

/// Size and SHA-256 of a file. Only for files no SQLite connection of this process holds:
/// the `.tmp` of a copy after its connection closed, or a backup about to be checked before
/// anything opens it (a descriptor closed on a file SQLite holds would drop its locks).
fn digest(path: &Path) -> Result<(u64, String), BackupError> {
    let mut file = fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn rename(from: &Path, to: &Path) -> Result<(), BackupError> {
    fs::rename(from, to).map_err(io_err(from))
}

/// Writes `manifest` beside its file: a `.tmp`, synced, renamed, the directory synced.
fn write_manifest(dir: &Path, manifest: &BackupManifest) -> Result<(), BackupError> {
    let path = manifest_path(&dir.join(&manifest.file));
    let tmp = with_ext(&path, ".tmp");
    let text = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(io_err(&tmp))?;
    drop(file);
    rename(&tmp, &path)?;
    sync_dir(dir)
}

/// Removes `.tmp` files in `dir` older than an hour (`super::remove_stale`): left by a run that
/// was killed.
/// A younger one may be another run's copy in progress, and SQLite may hold it open.
fn remove_stale_tmp(dir: &Path) -> usize {
    super::remove_stale(dir, ".tmp")
}

/// The `.tmp` files killed runs left: in every backups directory, and the `<id>.db.tmp` of a
/// killed restore in `tenants/`. Only those older than an hour, as for the next run's own
/// sweep: a backup or a clone from the command line may be running beside the server. The
/// server calls it at start; returns how many were removed.
pub fn remove_leftovers(data_dir: &Path) -> usize {
    let mut removed = super::remove_stale(&data_dir.join(TENANTS_DIR), ".db.tmp");
    if let Ok(entries) = fs::read_dir(data_dir.join(BACKUPS_DIR)) {
        for entry in entries.flatten() {
            removed += remove_stale_tmp(&entry.path());
        }
    }
    removed
}

/// Who a database file says it belongs to.
fn meta_id(conn: &Connection) -> Result<Option<String>, BackupError> {
    Ok(conn
        .query_row(
            "SELECT value FROM tenant_meta WHERE key = 'id'",
            [],
            |row| row.get(0),
        )
        .optional()?)
}

/// An online copy of the database at `src_path` into `dir` as `<prefix><stamp>-<hex>.db`, with
/// its manifest. `owner`: the tenant id the file must say it is (none for the catalog).
fn take(
    src_path: &Path,
    kind: DbKind,
    dir: &Path,
    prefix: &str,
    who: (&str, &str),
    now: i64,
) -> Result<BackupManifest, BackupError> {
    let (tenant_id, slug) = who;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    // Retention must not judge the shared files while this backup links its own in.
    let _files_lock = lock_files(dir)?;
    remove_stale_tmp(dir);
    let name = new_name(prefix, now);
    let final_path = dir.join(&name);
    let tmp = with_ext(&final_path, ".tmp");
    let result = (|| {
        // A connection of its own, not the pool's: the copy's read transaction then holds no
        // pooled connection. Not `db::open` either: its switch to WAL, on a file a restore has
        // just taken out of WAL, would leave a `-wal` to be replayed onto the restored file.
        let src = open_plain(src_path, false)?;
        let out = copy_into(&src, &tmp)?;
        drop(src);
        let schema_version = db::schema_version(&out)?;
        if kind == DbKind::Tenant && meta_id(&out)?.as_deref() != Some(tenant_id) {
            return Err(BackupError::Refused(format!(
                "{} does not say it is tenant {tenant_id}",
                src_path.display()
            )));
        }
        // Before the backup is renamed into place: a listed backup has its files.
        let (files, files_missing) = if kind == DbKind::Tenant {
            let from = super::tenant_dir(src_path).join("files");
            bring_files(&out, &from, &dir.join("files"))?
        } else {
            (0, 0)
        };
        out.close().map_err(|(_, e)| BackupError::from(e))?;
        // Hashed only now that its connection is closed (see `digest`).
        let (bytes, sha256) = digest(&tmp)?;
        rename(&tmp, &final_path)?;
        sync_dir(dir)?;
        let manifest = BackupManifest {
            file: name.clone(),
            tenant_id: tenant_id.to_string(),
            slug: slug.to_string(),
            schema_version,
            bytes,
            sha256,
            created_at: now,
            tenantd_version: env!("CARGO_PKG_VERSION").to_string(),
            files,
            files_missing,
        };
        write_manifest(dir, &manifest)?;
        Ok(manifest)
    })();
    if result.is_err() {
        // Nothing of ours holds it any more: every connection above is dropped by now.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Backs up a tenant's file into its backups directory (or `to`, if given).
pub fn backup_tenant(
    data_dir: &Path,
    record: &TenantRecord,
    to: Option<&Path>,
    now: i64,
) -> Result<BackupManifest, BackupError> {
    let path = tenant_db_path(data_dir, &record.id)
        .ok_or_else(|| BackupError::Refused("catalog id is not a canonical UUID".into()))?;
    let dir = match to {
        Some(dir) => dir.to_path_buf(),
        None => backups_dir(data_dir, &record.id).expect("checked above"),
    };
    take(
        &path,
        DbKind::Tenant,
        &dir,
        "",
        (&record.id, &record.slug),
        now,
    )
}

/// Backs up the catalog into `backups/central` (or `to`).
pub fn backup_catalog(
    data_dir: &Path,
    to: Option<&Path>,
    now: i64,
) -> Result<BackupManifest, BackupError> {
    let dir = match to {
        Some(dir) => dir.to_path_buf(),
        None => data_dir.join(BACKUPS_DIR).join(CENTRAL),
    };
    take(
        &data_dir.join(CENTRAL_DB),
        DbKind::Catalog,
        &dir,
        "",
        (CENTRAL, CENTRAL),
        now,
    )
}

/// The backups (and files kept aside by restores) of `key` (a tenant id or [`CENTRAL`]),
/// newest first. Only files with a manifest, of a name this module makes.
pub fn list(data_dir: &Path, key: &str) -> Vec<BackupManifest> {
    let Some(dir) = backups_dir(data_dir, key) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<BackupManifest> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let db_name = format!("{}.db", name.strip_suffix(".json")?);
            if !valid_name(&db_name) || !dir.join(&db_name).is_file() {
                return None;
            }
            let manifest: BackupManifest =
                serde_json::from_slice(&fs::read(entry.path()).ok()?).ok()?;
            (manifest.file == db_name && manifest.tenant_id == key).then_some(manifest)
        })
        .collect();
    out.sort_by(|a, b| (b.created_at, &b.file).cmp(&(a.created_at, &a.file)));
    out
}

/// The tenant's newest backup (files kept aside by restores not counted). Reads manifests
/// only: no catalog, no database.
pub fn latest_backup(data_dir: &Path, tenant_id: &str) -> Option<BackupManifest> {
    list(data_dir, tenant_id)
        .into_iter()
        .find(|m| !m.file.starts_with("replaced-"))
}

/// How many backups to keep: the newest `keep`, and the newest of each of the last `daily`
/// days and `weekly` weeks (UTC; weeks from Monday).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Retention {
    #[serde(default)]
    pub keep: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
}

/// The files of `backups` that `policy` no longer keeps as of `now`. Files kept aside by
/// restores are never pruned; nor is a backup from the future (a clock set back).
pub fn prunable(backups: &[BackupManifest], policy: Retention, now: i64) -> Vec<String> {
    if policy == Retention::default() {
        // A policy that keeps nothing is no policy: backups are never all removed.
        return Vec::new();
    }
    let mut regular: Vec<&BackupManifest> = backups
        .iter()
        .filter(|m| !m.file.starts_with("replaced-") && m.created_at <= now)
        .collect();
    regular.sort_by(|a, b| (b.created_at, &b.file).cmp(&(a.created_at, &a.file)));
    let day = |t: i64| t.div_euclid(86_400);
    // 1970-01-01 was a Thursday: three days on, weeks start on Mondays.
    let week = |t: i64| (day(t) + 3).div_euclid(7);
    let mut keep = std::collections::HashSet::new();
    for m in regular.iter().take(policy.keep as usize) {
        keep.insert(m.file.clone());
    }
    for (periods, period) in [
        (policy.daily, &day as &dyn Fn(i64) -> i64),
        (policy.weekly, &week),
    ] {
        let newest = period(now);
        let oldest = newest - i64::from(periods) + 1;
        let mut seen = std::collections::HashSet::new();
        for m in &regular {
            let p = period(m.created_at);
            // Newest first: the first of each period is its newest.
            if periods > 0 && (oldest..=newest).contains(&p) && seen.insert(p) {
                keep.insert(m.file.clone());
            }
        }
    }
    regular
        .into_iter()
        .filter(|m| !keep.contains(&m.file))
        .map(|m| m.file.clone())
        .collect()
}

/// Applies `policy` to `key`'s backups: removes each pruned file and its manifest. Returns the
/// files removed.
pub fn prune(
    data_dir: &Path,
    key: &str,
    policy: Retention,
    now: i64,
) -> Result<Vec<String>, BackupError> {
    let Some(dir) = backups_dir(data_dir, key) else {
        return Ok(Vec::new());
    };
    let _files_lock = lock_files(&dir)?;
    let gone = prunable(&list(data_dir, key), policy, now);
    for name in &gone {
        // The manifest first: a file without one is not listed, so never half-listed.
        for path in [manifest_path(&dir.join(name)), dir.join(name)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
    }
    if !gone.is_empty() {
        drop_unnamed_files(&dir)?;
    }
    Ok(gone)
}

/// Held while a backup brings files into a backups directory's shared `files/` and while
/// retention removes from it: otherwise retention could remove a content a backup being taken
/// (not yet listed) has just linked. An `flock` on a file of our own (`.lock`), dropped by the
/// kernel when the process ends.
fn lock_files(dir: &Path) -> Result<fs::File, BackupError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on a descriptor we own, for as long as the returned file lives.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_err(&path)(io::Error::last_os_error()));
    }
    Ok(file)
}

/// The contents the `files` table of a database names (none before the table existed).
fn named_files(conn: &Connection) -> Result<Vec<String>, BackupError> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'files')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare("SELECT DISTINCT sha256 FROM files")?;
    let hashes = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Only what could be our own name for a content: never a path.
    Ok(hashes
        .into_iter()
        .filter(|h| super::is_content_name(h))
        .collect())
}

/// Makes every content `conn` names that `from` holds present in `to` too (a hard link, or a
/// durable copy), leaving those `to` has. Returns how many it names, and how many of them
/// neither has.
fn bring_files(conn: &Connection, from: &Path, to: &Path) -> Result<(u64, u64), BackupError> {
    let (mut named, mut missing) = (0, 0);
    for sha in named_files(conn)? {
        named += 1;
        let target = super::content_path(to, &sha).expect("named_files gives content names");
        if target.is_file() {
            continue;
        }
        let source = super::content_path(from, &sha).expect("named_files gives content names");
        if !source.is_file() {
            missing += 1;
            continue;
        }
        let parent = target.parent().expect("a content has a directory");
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        if fs::hard_link(&source, &target).is_err() {
            let tmp = with_ext(&target, ".tmp");
            fs::copy(&source, &tmp).map_err(io_err(&source))?;
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&tmp))?;
            rename(&tmp, &target)?;
        }
        sync_dir(parent)?;
    }
    Ok((named, missing))
}

/// Removes from `dir/files/` the contents no backup (nor file kept aside) in `dir` names.
fn drop_unnamed_files(dir: &Path) -> Result<(), BackupError> {
    let store = dir.join("files");
    if !store.is_dir() {
        return Ok(());
    }
    let mut keep = std::collections::HashSet::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "db") {
            let conn = db::open_read_only(&path)?;
            keep.extend(named_files(&conn)?);
        }
    }
    for shard in fs::read_dir(&store).map_err(io_err(&store))?.flatten() {
        let Ok(entries) = fs::read_dir(shard.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

/// What a checked backup holds.
#[derive(Clone, Debug)]
pub struct Verified {
    pub tenant_id: String,
    pub slug: Option<String>,
    pub name: Option<String>,
    pub schema_version: u32,
}

/// Checks `file` before anything is replaced: the manifest's size and checksum if a manifest
/// is beside it, `PRAGMA integrity_check`, whose it is (`expect`, when given), and a schema
/// version this binary knows.
pub fn verify(file: &Path, expect: Option<&str>) -> Result<Verified, BackupError> {
    db::ensure_exists(file).map_err(|_| BackupError::NotFound(file.display().to_string()))?;
    let manifest = manifest_path(file);
    if manifest.is_file() {
        let m: BackupManifest =
            serde_json::from_slice(&fs::read(&manifest).map_err(io_err(&manifest))?)
                .map_err(|e| BackupError::Refused(format!("its manifest cannot be read: {e}")))?;
        // Hashed before SQLite opens it (see `digest`).
        let (bytes, sha256) = digest(file)?;
        if bytes != m.bytes || sha256 != m.sha256 {
            return Err(BackupError::Refused(
                "the file does not match its manifest's size and SHA-256".into(),
            ));
        }
    }
    let refused = |e: &dyn fmt::Display| BackupError::Refused(format!("not a sound database: {e}"));
    let conn = db::open_read_only(file).map_err(|e| refused(&e))?;
    let check: Vec<String> = (|| {
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
    })()
    .map_err(|e| BackupError::Refused(format!("integrity_check: {e}")))?;
    if check.first().map(String::as_str) != Some("ok") {
        return Err(BackupError::Refused(format!(
            "integrity_check: {}",
            check.join("; ")
        )));
    }
    let schema_version = db::schema_version(&conn).map_err(|e| refused(&e))?;
    if schema_version > tenant_target_version() {
        return Err(BackupError::Refused(format!(
            "its schema version {schema_version} is newer than this binary's ({})",
            tenant_target_version()
        )));
    }
    let meta = |key: &str| -> Result<Option<String>, BackupError> {
        conn.query_row(
            "SELECT value FROM tenant_meta WHERE key = ?1",
            [key],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| BackupError::Refused(format!("it is not a tenant database: {e}")))
    };
    let tenant_id =
        meta("id")?.ok_or_else(|| BackupError::Refused("it does not say whose it is".into()))?;
    if let Some(expected) = expect {
        if tenant_id != expected {
            return Err(BackupError::Refused(format!(
                "it belongs to tenant {tenant_id}, not {expected}"
            )));
        }
    }
    Ok(Verified {
        tenant_id,
        slug: meta("slug")?,
        name: meta("name")?,
        schema_version,
    })
}

/// The test hook for "killed at any point": with `TENANTD_FAILPOINT=restore:<step>` in the
/// environment, a restore aborts the process (as `kill -9` would end it) at that step. The
/// steps: `kept_aside`, `prepared`, `old_unwalled`, `renamed`, `synced`.
fn failpoint(step: &str) {
    if std::env::var("TENANTD_FAILPOINT").is_ok_and(|v| v == format!("restore:{step}")) {
        eprintln!("tenantd: failpoint restore:{step}: aborting");
        std::process::abort();
    }
}

/// What a restore did.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    pub tenant_id: String,
    pub slug: String,
    /// The file given, as given (a name or a path).
    pub from: String,
    pub schema_version: u32,
    /// The manifest of the replaced file, kept aside (none for a clone).
    pub replaced: Option<BackupManifest>,
}

/// Renames a tenant's file that cannot be copied, and its `-wal` and `-shm`, into `dir` as
/// `replaced-<stamp>-<hex>.db…`, without a manifest (hashing it would open a descriptor on
/// it). Returns its new path.
fn move_aside(live: &Path, dir: &Path, now: i64) -> Result<PathBuf, BackupError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let aside = dir.join(new_name("replaced-", now));
    for (from, to) in db::database_files(live)
        .iter()
        .zip(db::database_files(&aside))
    {
        match fs::rename(from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(from)(e)),
        }
    }
    sync_dir(dir)?;
    Ok(aside)
}

/// Removes a file kept aside and its manifest (the manifest first, so it is never half-listed).
fn discard(dir: &Path, name: &str) {
    let _ = fs::remove_file(manifest_path(&dir.join(name)));
    let _ = fs::remove_file(dir.join(name));
}

/// Replaces `record`'s file with the verified backup `file`. With `registry` (the server), the
/// tenant is refused (503) for the duration and its pool closed first; without (the CLI), the
/// caller holds the data directory's claim, so no server has it open.
///
/// The live file is switched only by one rename of a complete, durable copy in rollback-journal
/// mode, after SQLite itself has folded the old file's `-wal` in and removed it (a stale `-wal`
/// replayed onto the new file would corrupt it): killed at any point, the tenant's file is the
/// old one or the new one, whole.
pub fn restore_in_place(
    data_dir: &Path,
    registry: Option<&Registry>,
    record: &TenantRecord,
    file: &Path,
    now: i64,
) -> Result<Restored, BackupError> {
    if !matches!(
        record.status,
        TenantStatus::Active | TenantStatus::Suspended
    ) {
        return Err(LifecycleError::WrongStatus {
            slug: record.slug.clone(),
            status: record.status,
        }
        .into());
    }
    let verified = verify(file, Some(&record.id))?;
    // Opened now and kept: retention may remove the file meanwhile (the restore may wait for
    // the tenant's pool below), and this descriptor keeps what was verified readable.
    let src = db::open_read_only(file).map_err(|e| match e {
        DbError::Missing(_) => BackupError::NotFound(file.display().to_string()),
        other => other.into(),
    })?;
    let live = tenant_db_path(data_dir, &record.id)
        .ok_or_else(|| BackupError::Refused("catalog id is not a canonical UUID".into()))?;
    let _guard = match registry {
        Some(registry) => Some(
            registry
                .begin_restore(&record.id, &record.slug, RESTORE_WAIT)
                .map_err(|e| match e {
                    TenancyError::InUse { .. } | TenancyError::Restoring { .. } => {
                        BackupError::Busy(format!("tenant {} is in use; try again", record.slug))
                    }
                    other => BackupError::Tenancy(other),
                })?,
        ),
        None => None,
    };
    // The current file, kept aside first: a restore can itself be undone.
    let dir = backups_dir(data_dir, &record.id).expect("a canonical id");
    let mut damaged_aside = None;
    let replaced = match db::ensure_exists(&live) {
        Ok(()) => match take(
            &live,
            DbKind::Tenant,
            &dir,
            "replaced-",
            (&record.id, &record.slug),
            now,
        ) {
            Ok(kept) => Some(kept),
            Err(e @ BackupError::Busy(_)) => return Err(e),
            // A damaged file (empty, not a database, someone else's) cannot be copied, and is
            // what a restore is for: moved aside whole, by renames only, since the pool is
            // closed and the guard keeps it so.
            Err(e) => {
                log::warn!(
                    "tenant {}: its file cannot be copied ({e}); moving it aside",
                    record.slug
                );
                damaged_aside = Some(move_aside(&live, &dir, now)?);
                None
            }
        },
        // A tenant whose file went missing can be restored too.
        Err(DbError::Missing(_)) => None,
        Err(e) => return Err(e.into()),
    };
    failpoint("kept_aside");
    let tmp = with_ext(&live, ".tmp");
    let tenants = data_dir.join(TENANTS_DIR);
    let result = (|| {
        // Only a restore makes this name, and the guard (or the claim) keeps restores of the
        // tenant one at a time: a leftover is a killed restore's, which nothing holds open.
        let _ = fs::remove_file(&tmp);
        copy_into(&src, &tmp)?
            .close()
            .map_err(|(_, e)| BackupError::from(e))?;
        drop(src);
        failpoint("prepared");
        // The live file's `-wal` folded in and removed by SQLite, through a connection that
        // is alone on the file now (the pool is closed and the server refuses the tenant).
        let old = match db::ensure_exists(&live) {
            Ok(()) => Some(unwall_and_hold(&live)?),
            Err(_) => None,
        };
        failpoint("old_unwalled");
        rename(&tmp, &live)?;
        failpoint("renamed");
        // From here the new file is the tenant's: a failure to sync the directory or to close
        // the old file must not undo the switch nor remove the copy kept aside, which is now
        // the only copy of the old data.
        if let Err(e) = sync_dir(&tenants) {
            log::error!(
                "restore of {}: syncing {}: {e}",
                record.slug,
                tenants.display()
            );
        }
        failpoint("synced");
        // Only now: the old file is no longer at the tenant's path.
        if let Some(old) = old {
            if let Err((_, e)) = old.close() {
                log::error!("restore of {}: closing the old file: {e}", record.slug);
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        // The live file was not replaced: a copy of it kept aside would only pile up, and a
        // damaged file moved aside goes back where it was.
        if let Some(kept) = &replaced {
            discard(&dir, &kept.file);
        }
        if let Some(moved) = &damaged_aside {
            for (from, to) in db::database_files(&live)
                .iter()
                .zip(db::database_files(moved))
            {
                let _ = fs::rename(&to, from);
            }
        }
        return Err(e);
    }
    // Brought to this binary's schema now rather than on first access, so that a failure is
    // this restore's error. `db::open` puts the file back in WAL mode.
    let mut conn = db::open(&live, DbKind::Tenant, Create::Never)?;
    super::check_tenant_file(&conn, record).map_err(BackupError::Refused)?;
    db::migrate(&mut conn, db::tenant_migrations())?;
    // A backup taken before a rename says the old slug and name: the catalog is the authority.
    let mut set =
        conn.prepare("UPDATE tenant_meta SET value = ?2 WHERE key = ?1 AND value IS NOT ?2")?;
    set.execute(["slug", &record.slug])?;
    set.execute(["name", &record.name])?;
    drop(set);
    // The files the restored database names that the tenant lost since, from beside the backup.
    let beside = file.parent().unwrap_or(Path::new(".")).join("files");
    // The database is restored by now: a failure here is told, not the restore's failure.
    match bring_files(&conn, &beside, &super::tenant_dir(&live).join("files")) {
        Ok((_, 0)) => {}
        Ok((_, missing)) => log::warn!(
            "restore of {}: {missing} of its files are in neither the tenant nor the backup",
            record.slug
        ),
        Err(e) => log::error!("restore of {}: bringing back its files: {e}", record.slug),
    }
    drop(conn);
    Ok(Restored {
        tenant_id: record.id.clone(),
        slug: record.slug.clone(),
        from: file.display().to_string(),
        schema_version: verified.schema_version,
        replaced,
    })
}

/// Makes a new tenant `new_slug` from the verified backup `file` of any tenant: a new id, a
/// catalog row made as an asynchronous create makes it (status `provisioning`, no file), the
/// copy's `tenant_meta` rewritten to the new id and slug, renamed into place, then active.
pub fn restore_as(catalog: &Catalog, file: &Path, new_slug: &str) -> Result<Restored, BackupError> {
    let verified = verify(file, None)?;
    let name = verified
        .name
        .clone()
        .unwrap_or_else(|| new_slug.to_string());
    let record = lifecycle::create_provisioning(
        catalog,
        &NewTenant {
            slug: new_slug.to_string(),
            name,
            domains: Vec::new(),
        },
        // Made from a file, into a file: whatever `--store` says of new tenants, this one is
        // local (`tenants move` takes it to sqld).
        TenantStore::Local,
    )?;
    let live = tenant_db_path(catalog.data_dir(), &record.id).expect("a new canonical id");
    let tmp = with_ext(&live, ".tmp");
    let result = (|| {
        let src = db::open_read_only(file)?;
        let out = copy_into(&src, &tmp)?;
        drop(src);
        out.execute(
            "UPDATE tenant_meta SET value = ?1 WHERE key = 'id'",
            [&record.id],
        )?;
        out.execute(
            "UPDATE tenant_meta SET value = ?1 WHERE key = 'slug'",
            [&record.slug],
        )?;
        out.close().map_err(|(_, e)| BackupError::from(e))?;
        rename(&tmp, &live)?;
        sync_dir(&catalog.tenants_dir())?;
        let mut conn = db::open(&live, DbKind::Tenant, Create::Never)?;
        super::check_tenant_file(&conn, &record).map_err(BackupError::Refused)?;
        db::migrate(&mut conn, db::tenant_migrations())?;
        let beside = file.parent().unwrap_or(Path::new(".")).join("files");
        bring_files(&conn, &beside, &super::tenant_dir(&live).join("files"))?;
        Ok::<(), BackupError>(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        // What this clone made, and only that (its own new id): a refused or failed clone
        // leaves no tenant behind.
        let _ = fs::remove_dir_all(super::tenant_dir(&live));
        if let Err(e) = db::remove_database_files(&live) {
            log::warn!(
                "clone as {}: {} not removed: {e}",
                record.slug,
                live.display()
            );
        } else if let Err(e) = catalog.delete_row(&record.id) {
            log::warn!(
                "clone as {}: its unfinished row not removed: {e}",
                record.slug
            );
        }
        return Err(e);
    }
    let active = catalog
        .transition(
            &record.id,
            &[TenantStatus::Provisioning],
            TenantStatus::Active,
        )
        .map_err(LifecycleError::from)?
        .ok_or_else(|| BackupError::Refused("the new tenant was deleted meanwhile".into()))?;
    Ok(Restored {
        tenant_id: active.id.clone(),
        slug: active.slug.clone(),
        from: file.display().to_string(),
        schema_version: verified.schema_version,
        replaced: None,
    })
}

/// A listed backup of `record`, by file name: the name must be one of that tenant's listed
/// backups, never a path.
pub fn listed_file(
    data_dir: &Path,
    record: &TenantRecord,
    name: &str,
) -> Result<PathBuf, BackupError> {
    let listed = valid_name(name) && list(data_dir, &record.id).iter().any(|m| m.file == name);
    if !listed {
        return Err(BackupError::NotFound(name.to_string()));
    }
    Ok(backups_dir(data_dir, &record.id)
        .expect("a canonical id")
        .join(name))
}

/// Every active tenant's record, for `--all` and the central job.
pub fn active_tenants(catalog: &Catalog) -> Result<Vec<Arc<TenantRecord>>, BackupError> {
    Ok(catalog
        .list()
        .map_err(LifecycleError::from)?
        .into_iter()
        .filter(|r| r.status == TenantStatus::Active)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(file: &str, created_at: i64) -> BackupManifest {
        BackupManifest {
            file: file.into(),
            tenant_id: "t".into(),
            slug: "s".into(),
            schema_version: 1,
            bytes: 1,
            sha256: String::new(),
            created_at,
            tenantd_version: "0".into(),
            files: 0,
            files_missing: 0,
        }
    }

    const DAY: i64 = 86_400;
    /// Monday 2026-11-30 00:00 UTC.
    const MONDAY: i64 = 1_795_996_800;

    #[test]
    fn names_are_checked_strictly() {
        assert!(valid_name("20261204T210000Z-0a1b2c.db"));
        assert!(valid_name("replaced-20261204T210000Z-0a1b2c.db"));
        for bad in [
            "../20261204T210000Z-0a1b2c.db",
            "20261204T210000Z-0a1b2c.json",
            "20261204T210000Z-0A1B2C.db",
            "20261204T210000Z-0a1b2.db",
            "x/20261204T210000Z-0a1b2c.db",
            "20261204T210000Z-0a1b2c.db.tmp",
            "",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(stamp(MONDAY), "20261130T000000Z");
    }

    #[test]
    fn retention_keeps_the_last_n_and_the_newest_of_each_day_and_week() {
        // Two backups a day for 21 days before `now` (Monday three weeks on, noon).
        let now = MONDAY + 21 * DAY + DAY / 2;
        let mut all = Vec::new();
        for d in 0..21 {
            for h in [6, 18] {
                let t = MONDAY + d * DAY + h * 3600;
                all.push(m(&format!("{d:02}-{h:02}"), t));
            }
        }
        all.push(m("replaced-x", MONDAY));
        all.push(m("future", now + DAY));
        let policy = Retention {
            keep: 3,
            daily: 2,
            weekly: 3,
        };
        let gone = prunable(&all, policy, now);
        let kept: Vec<&str> = all
            .iter()
            .map(|m| m.file.as_str())
            .filter(|f| !gone.iter().any(|g| g == f))
            .collect();
        // The last 3: 20-18, 20-06, 19-18 (the future one is never pruned nor counted);
        // daily: today has none, yesterday 20-18; weekly: this week none, last week 20-18
        // (a Sunday), the week before 13-18.
        assert_eq!(
            kept,
            ["13-18", "19-18", "20-06", "20-18", "replaced-x", "future"]
        );
        assert!(prunable(&all, Retention::default(), now).is_empty());
        let weekly = Retention {
            weekly: 4,
            ..Retention::default()
        };
        assert_eq!(prunable(&all, weekly, now).len(), 42 - 3);
        assert!(prunable(&all[..1], policy, now).is_empty());
    }

    fn journal_mode(path: &Path) -> String {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_backup_of_a_served_tenant_is_a_checked_journal_mode_delete_copy_that_restores() {
        use crate::test_kit::{quiet, Setup, NOW};
        let setup = Setup::new();
        let acme = setup.provision("acme", &[]);
        let registry = setup.registry(quiet());
        let tenant = registry.open(Arc::clone(&acme)).unwrap();
        let put = |key: &str| {
            tenant
                .write(|tx| -> Result<(), DbError> {
                    tx.execute(
                        "INSERT INTO tenant_meta (key, value) VALUES (?1, 'x')",
                        [key],
                    )?;
                    Ok(())
                })
                .unwrap()
        };
        put("before");
        let taken = backup_tenant(setup.data(), &acme, None, NOW).unwrap();
        put("after");
        let dir = backups_dir(setup.data(), &acme.id).unwrap();
        let file = dir.join(&taken.file);
        assert!(valid_name(&taken.file), "{}", taken.file);
        assert_eq!(journal_mode(&file), "delete");
        assert!(!with_ext(&file, "-wal").exists());
        assert_eq!(digest(&file).unwrap(), (taken.bytes, taken.sha256.clone()));
        assert_eq!(taken.schema_version, tenant_target_version());
        assert_eq!(list(setup.data(), &acme.id), vec![taken.clone()]);
        assert_eq!(latest_backup(setup.data(), &acme.id), Some(taken.clone()));
        assert_eq!(verify(&file, Some(&acme.id)).unwrap().tenant_id, acme.id);

        // Restored with the server's registry: the tenant is refused meanwhile, then serves
        // the backup's data: "before" and not "after".
        drop(tenant);
        let restored =
            restore_in_place(setup.data(), Some(&registry), &acme, &file, NOW + 1).unwrap();
        let kept = restored.replaced.unwrap();
        assert!(kept.file.starts_with("replaced-"), "{}", kept.file);
        let tenant = registry.open(Arc::clone(&acme)).unwrap();
        let has = |key: &str| -> i64 {
            tenant
                .conn()
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM tenant_meta WHERE key = ?1",
                    [key],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!((has("before"), has("after")), (1, 0));
        // The file kept aside has both, and is listed (but is not the latest backup).
        let aside = verify(&dir.join(&kept.file), Some(&acme.id)).unwrap();
        assert_eq!(aside.tenant_id, acme.id);
        assert_eq!(list(setup.data(), &acme.id).len(), 2);
        assert_eq!(latest_backup(setup.data(), &acme.id), Some(taken));
    }

    #[test]
    fn a_restore_refuses_the_tenant_while_it_runs() {
        use crate::test_kit::{quiet, Setup};
        let setup = Setup::new();
        let acme = setup.provision("acme", &[]);
        let registry = setup.registry(quiet());
        let held = registry.open(Arc::clone(&acme)).unwrap();
        // Held past the wait: refused as in use, and the tenant is served again.
        let busy = registry.begin_restore(&acme.id, "acme", std::time::Duration::from_millis(50));
        assert!(
            matches!(busy, Err(TenancyError::InUse { .. })),
            "{:?}",
            busy.err()
        );
        drop(held);
        registry.open(Arc::clone(&acme)).unwrap();
        let guard = registry
            .begin_restore(&acme.id, "acme", std::time::Duration::from_secs(1))
            .unwrap();
        assert!(matches!(
            registry.open(Arc::clone(&acme)),
            Err(TenancyError::Restoring { .. })
        ));
        assert!(matches!(
            registry.begin_restore(&acme.id, "acme", std::time::Duration::ZERO),
            Err(TenancyError::Restoring { .. })
        ));
        drop(guard);
        registry.open(acme).unwrap();
    }

    #[test]
    fn a_waiting_restore_refuses_new_requests_while_the_held_pool_drains() {
        use crate::test_kit::{quiet, Setup};
        let setup = Setup::new();
        let acme = setup.provision("acme", &[]);
        let globex = setup.provision("globex", &[]);
        let registry = setup.registry(quiet());
        let held = registry.open(Arc::clone(&acme)).unwrap();
        let other = registry.open(Arc::clone(&globex)).unwrap();
        std::thread::scope(|s| {
            let restore = s.spawn(|| {
                registry
                    .begin_restore(&acme.id, "acme", std::time::Duration::from_secs(60))
                    .map(drop)
            });
            while !registry.is_restoring(&acme.id) {
                std::thread::yield_now();
            }
            // The pool is still open (held): a new request is refused, not handed it.
            assert!(matches!(
                registry.open(Arc::clone(&acme)),
                Err(TenancyError::Restoring { .. })
            ));
            assert!(registry.open(Arc::clone(&globex)).is_ok());
            drop(held);
            restore.join().unwrap().unwrap();
        });
        drop(other);
        registry.open(acme).unwrap();
    }

    #[test]
    fn a_backup_leaves_a_file_out_of_wal_as_it_found_it() {
        use crate::test_kit::Setup;
        let setup = Setup::new();
        let acme = setup.provision("acme", &[]);
        let live = tenant_db_path(setup.data(), &acme.id).unwrap();
        // As a restore leaves the live file between its fold of the `-wal` and its rename.
        to_delete_mode(&open_plain(&live, false).unwrap()).unwrap();
        backup_tenant(setup.data(), &acme, None, crate::test_kit::NOW).unwrap();
        assert_eq!(journal_mode(&live), "delete");
        assert!(!with_ext(&live, "-wal").exists());
    }

    #[test]
    fn a_rename_is_refused_while_a_restore_runs_and_done_after() {
        use crate::test_kit::{quiet, Setup};
        let setup = Setup::new();
        let acme = setup.provision("acme", &[]);
        let registry = setup.registry(quiet());
        let change = lifecycle::Rename {
            slug: Some("acme-two".into()),
            name: None,
        };
        let guard = registry
            .begin_restore(&acme.id, "acme", std::time::Duration::from_secs(1))
            .unwrap();
        let refused = lifecycle::rename(&setup.catalog, Some(&registry), "acme", &change);
        assert!(
            matches!(
                refused,
                Err(LifecycleError::Tenancy(TenancyError::Restoring { .. }))
            ),
            "{:?}",
            refused.err()
        );
        assert!(setup.catalog.by_slug("acme").unwrap().is_some());
        drop(guard);
        lifecycle::rename(&setup.catalog, Some(&registry), "acme", &change).unwrap();
        assert!(setup.catalog.by_slug("acme-two").unwrap().is_some());
    }

    #[test]
    fn while_a_restore_holds_the_unwalled_file_no_other_connection_reads_it_or_rewals_it() {
        use crate::test_kit::Setup;
        let setup = Setup::new();
        let acme = setup.provision("acme", &[]);
        let live = tenant_db_path(setup.data(), &acme.id).unwrap();
        let held = unwall_and_hold(&live).unwrap();
        let other = Connection::open(&live).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let rewal: rusqlite::Result<String> =
            other.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0));
        assert!(
            busy_or_db(rewal.unwrap_err())
                .to_string()
                .contains("another process"),
            "the held file was switched back to WAL"
        );
        assert!(!with_ext(&live, "-wal").exists());
        drop(other);
        held.close().unwrap();
        assert_eq!(journal_mode(&live), "delete");
    }

    /// A data directory with tenant `acme` and one backup of it.
    fn acme_backed_up() -> (crate::test_kit::Setup, Arc<TenantRecord>, PathBuf) {
        let setup = crate::test_kit::Setup::new();
        let acme = setup.provision("acme", &[]);
        let taken = backup_tenant(setup.data(), &acme, None, crate::test_kit::NOW).unwrap();
        let file = backups_dir(setup.data(), &acme.id)
            .unwrap()
            .join(&taken.file);
        (setup, acme, file)
    }

    #[test]
    fn a_backup_removed_while_its_restore_waits_is_still_restored() {
        use crate::test_kit::{quiet, NOW};
        let (setup, acme, file) = acme_backed_up();
        let registry = setup.registry(quiet());
        let held = registry.open(Arc::clone(&acme)).unwrap();
        std::thread::scope(|s| {
            let restore =
                s.spawn(|| restore_in_place(setup.data(), Some(&registry), &acme, &file, NOW));
            while !registry.is_restoring(&acme.id) {
                std::thread::yield_now();
            }
            // As retention would, while the restore waits for the tenant's pool.
            fs::remove_file(manifest_path(&file)).unwrap();
            fs::remove_file(&file).unwrap();
            drop(held);
            let restored = restore.join().unwrap();
            assert!(restored.is_ok(), "{:?}", restored.err());
        });
        registry.open(acme).unwrap();
    }

    #[test]
    fn a_backup_from_before_a_rename_restores_with_the_catalogs_slug_and_name() {
        use crate::test_kit::{quiet, NOW};
        let (setup, acme, file) = acme_backed_up();
        let registry = setup.registry(quiet());
        let change = lifecycle::Rename {
            slug: Some("acme-two".into()),
            name: Some("Acme Two".into()),
        };
        let after = lifecycle::rename(&setup.catalog, Some(&registry), "acme", &change)
            .unwrap()
            .after;
        restore_in_place(setup.data(), Some(&registry), &after, &file, NOW + 1).unwrap();
        let live = tenant_db_path(setup.data(), &acme.id).unwrap();
        let conn = db::open_read_only(&live).unwrap();
        let meta = |key: &str| -> String {
            conn.query_row("SELECT value FROM tenant_meta WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!(
            (meta("slug"), meta("name")),
            ("acme-two".into(), "Acme Two".into())
        );
    }

    #[test]
    fn only_active_or_suspended_tenants_are_restored_and_a_purge_waits_for_no_restore() {
        use crate::test_kit::{quiet, NOW};
        let (setup, acme, file) = acme_backed_up();
        let registry = setup.registry(quiet());
        let deleted = lifecycle::delete(&setup.catalog, "acme").unwrap();
        let refused = restore_in_place(setup.data(), Some(&registry), &deleted, &file, NOW);
        assert!(
            matches!(
                refused,
                Err(BackupError::Lifecycle(LifecycleError::WrongStatus { .. }))
            ),
            "{:?}",
            refused.err()
        );
        // A purge while a restore runs is refused, and leaves the tenant whole.
        let guard = registry
            .begin_restore(&acme.id, "acme", std::time::Duration::from_secs(1))
            .unwrap();
        let purge = lifecycle::purge(&setup.catalog, &registry, "acme");
        assert!(
            matches!(
                purge,
                Err(LifecycleError::Tenancy(TenancyError::Restoring { .. }))
            ),
            "{:?}",
            purge.err()
        );
        assert!(tenant_db_path(setup.data(), &acme.id).unwrap().exists());
        assert!(setup.catalog.by_slug("acme").unwrap().is_some());
        drop(guard);
        lifecycle::purge(&setup.catalog, &registry, "acme").unwrap();
        assert!(!tenant_db_path(setup.data(), &acme.id).unwrap().exists());
    }

    #[test]
    fn leftovers_older_than_an_hour_are_removed_and_younger_ones_kept() {
        let data = tempfile::tempdir().unwrap();
        let tenants = data.path().join(TENANTS_DIR);
        let backups = data.path().join(BACKUPS_DIR).join(CENTRAL);
        fs::create_dir_all(&tenants).unwrap();
        fs::create_dir_all(&backups).unwrap();
        let hours_ago =
            |h: u64| std::time::SystemTime::now() - std::time::Duration::from_secs(h * 3600);
        let make = |path: PathBuf, modified| {
            fs::File::create(&path)
                .unwrap()
                .set_modified(modified)
                .unwrap();
            path
        };
        let old_restore = make(tenants.join("x.db.tmp"), hours_ago(2));
        let old_other = make(tenants.join("x.tmp"), hours_ago(2));
        let old_backup = make(backups.join("a.db.tmp"), hours_ago(2));
        let young_backup = make(backups.join("b.db.tmp"), hours_ago(0));
        assert_eq!(remove_leftovers(data.path()), 2);
        assert!(!old_restore.exists() && !old_backup.exists());
        assert!(old_other.exists() && young_backup.exists());
    }
}
