//! Moving a tenant's database between stores (`tenantd tenants move`, `POST
//! /api/admin/tenants/{t}/move`): from its local file to an sqld namespace or back, online. The
//! tenant keeps answering reads and writes during the copy; writes pause once, briefly, at the end.
//!
//! How (docs/scale-out.md, piece 6):
//! 1. The tenant is opened through the registry (so migrated), marked as moving (no restore,
//!    purge or second move meanwhile), and the destination made empty at the same migrations: a
//!    new namespace (a leftover of a failed move deleted first) or a new file.
//! 2. Change capture on the source: `_tenantd_move_log(tbl, rid)` and AFTER triggers on every
//!    rowid table that log the rowids written. `WITHOUT ROWID` tables (chat_participants) and
//!    `sqlite_sequence` are not logged: they are small, and copied whole in the pause.
//! 3. The bulk copy, paged by rowid (rowids kept), foreign keys off on the destination; then
//!    rounds of catch-up, each recopying (or deleting) the rows the log names, until it is short.
//! 4. The pause: one write transaction on the source (the tenant's own write path: its turn and
//!    `BEGIN IMMEDIATE`, on a file or on sqld, where every node's writers wait for it). In it the
//!    rest of the log is copied, the whole tables above, and BEFORE triggers installed on every
//!    table that abort any write with [`MOVED_MESSAGE`]; it commits. Then the catalog's
//!    `tenants.store` flips. Committing before the flip (not after it) means no write is ever
//!    acknowledged by the old copy once the new one may be read: a writer that waited for the
//!    lock, or one that still holds the old copy, fails loudly (503 `tenant_moved`, retried)
//!    instead (the price: between the commit and the flip, a few milliseconds, writes are refused
//!    too). If the pause or the flip fails, the source's triggers and log are dropped and the
//!    destination removed: the tenant stays where it was (`409 move_failed` says why).
//! 5. After: the old pool is taken out of this registry, and its last requests get a moment to
//!    finish before the old copy goes (a registry in another process reopens the tenant: its
//!    `Registry::open` retires a pool of another store than the record says, or of a file that
//!    is no longer the one at the tenant's path). The old copy: a
//!    file is kept, renamed `<uuid>.db.moved-<unix seconds>` (with its `-wal`/`-shm`; orphan
//!    sweeps and `migrate --status` only know `<uuid>.db`), for the operator to remove; a
//!    namespace is deleted (sqld keeps no second name for it, and a kept one would be served
//!    to nobody).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::lifecycle::{db_path, find, sqld_client, LifecycleError};
use super::{Registry, TenancyError, Tenant};
use crate::catalog::{unix_now, Catalog, TenantRecord, TenantStatus, TenantStore};
use crate::db::{self, Create, DbKind};
use crate::sqld::{self, Statement};
use crate::store::sqld as store_sqld;
use crate::store::{Sql, StoreError, Value};

/// What the old copy's triggers say to a write after the move; `error.rs` answers it 503.
pub const MOVED_MESSAGE: &str = "tenantd: tenant moved";

const LOG_TABLE: &str = "_tenantd_move_log";
/// Rows per page of the copy, and per statement batch on the destination.
const PAGE: usize = 300;
/// Catch-up rounds before the pause, at most; the pause comes sooner once a round finds
/// fewer logged rows than this.
const CATCH_UP_ROUNDS: usize = 8;
const SHORT_LOG: usize = PAGE;
/// How long the old pool's last requests get to finish before the old copy goes.
const OLD_POOL_WAIT: Duration = Duration::from_secs(10);

/// What a move did.
#[derive(Clone, Debug, Serialize)]
pub struct Moved {
    /// The tenant as the catalog now has it.
    pub tenant: Arc<TenantRecord>,
    pub from: TenantStore,
    pub to: TenantStore,
    /// Rows of the bulk copy, and rows copied again (or deleted) from the change log.
    pub rows_copied: u64,
    pub rows_caught_up: u64,
    /// How long writes paused, in milliseconds.
    pub pause_ms: u64,
    /// Where the old copy is left (a file name in `tenants/`), or `None` when it was deleted.
    pub old_copy: Option<String>,
}

/// Moves the tenant `slug` to `to`, online (see the module's first lines).
pub fn move_tenant(
    catalog: &Catalog,
    registry: &Registry,
    slug: &str,
    to: TenantStore,
) -> Result<Moved, LifecycleError> {
    let record = find(catalog, slug)?;
    if record.status != TenantStatus::Active {
        return Err(LifecycleError::WrongStatus {
            slug: record.slug.clone(),
            status: record.status,
        });
    }
    if record.store == to {
        return Err(LifecycleError::AlreadyThere {
            slug: record.slug.clone(),
            store: to,
        });
    }
    if catalog.stores().sqld.is_none() {
        return Err(LifecycleError::Validation {
            field: "to",
            message: "no sqld server is configured (--sqld-url and --sqld-admin-url)".into(),
        });
    }
    let client = sqld_client(catalog)?;
    let _moving = registry
        .mark_moving(&record.id, &record.slug)
        .map_err(|e| match e {
            TenancyError::Restoring { .. } => LifecycleError::Busy {
                slug: record.slug.clone(),
                doing: "being restored or purged",
            },
            TenancyError::Moving { .. } => LifecycleError::Busy {
                slug: record.slug.clone(),
                doing: "being moved already",
            },
            other => LifecycleError::Tenancy(other),
        })?;
    let tenant = registry
        .open(record.clone())
        .map_err(LifecycleError::Tenancy)?;
    let from = record.store;
    let path = db_path(catalog, &record)?;
    let tables = tenant.read(|db| Ok::<_, LifecycleError>(tables(db)?))?;
    let version = tenant.read(|db| Ok::<_, LifecycleError>(schema_version(db)?))?;

    let mut dest = Dest::make(to, &client, &record.id, &path)?;
    let copied = (|| -> Result<(u64, u64, u64), LifecycleError> {
        let dest_version = dest.schema_version()?;
        if dest_version != version {
            return Err(LifecycleError::Store(StoreError::Backend(format!(
                "the tenant's database is at schema version {version}, a new one at \
                 {dest_version}: run `tenantd migrate` first"
            ))));
        }
        dest.apply(
            tables
                .iter()
                .map(|t| Statement::new(&format!("DELETE FROM {}", ident(&t.name)), &[]))
                .collect(),
        )?;
        tenant.write_sql(|db| Ok::<_, LifecycleError>(install_capture(db, &tables)?))?;
        let mut copied = 0;
        for table in tables.iter().filter(|t| !t.without_rowid) {
            copied += bulk_copy(&tenant, table, &mut dest)?;
        }
        let mut caught_up = 0;
        for _ in 0..CATCH_UP_ROUNDS {
            let n = tenant.read(|db| catch_up(db, &tables, &mut dest))?;
            caught_up += n.rows;
            if let Some(last) = n.last_entry {
                tenant.write_sql(|db| {
                    db.execute(
                        &format!("DELETE FROM {LOG_TABLE} WHERE rowid <= ?1"),
                        &[Value::Integer(last)],
                    )
                    .map_err(LifecycleError::from)
                })?;
            }
            if n.entries < SHORT_LOG {
                break;
            }
        }
        // The pause: the source's write lock, held until the old copy refuses every write.
        let paused = Instant::now();
        caught_up += tenant.write_sql(|db| -> Result<u64, LifecycleError> {
            let n = catch_up(db, &tables, &mut dest)?;
            for table in tables.iter().filter(|t| t.without_rowid) {
                copy_whole(db, table, &mut dest)?;
            }
            copy_sequences(db, &mut dest)?;
            install_refusal(db, &tables)?;
            Ok(n.rows)
        })?;
        Ok((
            copied,
            caught_up,
            u64::try_from(paused.elapsed().as_millis()).unwrap_or(u64::MAX),
        ))
    })();
    let flipped = copied.and_then(|counts| {
        let after = catalog.set_store(&record.id, to)?;
        Ok((counts, after))
    });
    let ((rows_copied, rows_caught_up, pause_ms), after) = match flipped {
        Ok(done) => done,
        Err(e) => {
            log::error!("moving tenant {slug} to {to} failed, it stays in {from}: {e}");
            // Tried a few times: left in place, the refusing triggers would keep every write
            // out of a tenant that stayed where it was (a next move drops them too).
            for attempt in 1..=3 {
                let undone =
                    tenant.write_sql(|db| drop_move_objects(db).map_err(LifecycleError::from));
                match undone {
                    Ok(()) => break,
                    Err(undo) => log::error!(
                        "tenant {slug}: could not drop the move's triggers (attempt {attempt}): \
                         {undo}"
                    ),
                }
            }
            dest.remove();
            return Err(LifecycleError::MoveFailed {
                slug: record.slug.clone(),
                to,
                reason: e.to_string(),
            });
        }
    };
    log::info!(
        "tenant {slug} moved from {from} to {to}: {rows_copied} rows copied, \
         {rows_caught_up} caught up, writes paused {pause_ms} ms"
    );
    drop(dest);
    let old_copy = retire_source(registry, &record, tenant, &client, &path);
    Ok(Moved {
        tenant: after,
        from,
        to,
        rows_copied,
        rows_caught_up,
        pause_ms,
        old_copy,
    })
}

/// One table of the tenant's schema, as the copy needs it.
struct Table {
    name: String,
    columns: Vec<String>,
    without_rowid: bool,
    /// Its rowid is one of `columns` (an `INTEGER PRIMARY KEY`): not named twice on insert.
    rowid_alias: bool,
}

impl Table {
    /// `rowid` then every column, for a select whose first value is the rowid.
    fn select_list(&self) -> String {
        let mut list = vec!["rowid".to_string()];
        list.extend(self.columns.iter().map(|c| ident(c)));
        list.join(", ")
    }

    /// An upsert of one row as `select_list` read it.
    fn upsert(&self, row: &[Value]) -> Statement {
        let (names, values): (Vec<String>, &[Value]) = if self.rowid_alias || self.without_rowid {
            (
                self.columns.iter().map(|c| ident(c)).collect(),
                if self.without_rowid { row } else { &row[1..] },
            )
        } else {
            let mut names = vec!["rowid".to_string()];
            names.extend(self.columns.iter().map(|c| ident(c)));
            (names, row)
        };
        let marks: Vec<String> = (1..=values.len()).map(|i| format!("?{i}")).collect();
        Statement::new(
            &format!(
                "INSERT OR REPLACE INTO {} ({}) VALUES ({})",
                ident(&self.name),
                names.join(", "),
                marks.join(", ")
            ),
            values,
        )
    }
}

/// `"name"`, quoted for SQL.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, quoted for SQL.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The tenant's own tables: not SQLite's, not the migrations' record (each copy has its own),
/// not the move's, and no virtual tables.
fn tables(db: &dyn Sql) -> Result<Vec<Table>, StoreError> {
    let listed = db.query_map(
        "SELECT name, coalesce(sql, '') FROM sqlite_schema
         WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
           AND name NOT LIKE '\\_tenantd\\_%' ESCAPE '\\' AND name NOT LIKE 'libsql\\_%' ESCAPE '\\'
           AND name <> 'schema_migrations'
         ORDER BY rowid",
        &[],
        |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
    )?;
    let mut out = Vec::new();
    for (name, sql) in listed {
        let sql = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        let sql = sql.to_ascii_uppercase();
        if sql.starts_with("CREATE VIRTUAL") {
            continue;
        }
        let columns = db.query_map(
            "SELECT name, upper(type), pk FROM pragma_table_info(?1) ORDER BY cid",
            &[Value::Text(name.clone())],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<i64>(2)?)),
        )?;
        let without_rowid = sql.contains("WITHOUT ROWID");
        let keys: Vec<_> = columns.iter().filter(|c| c.2 > 0).collect();
        let rowid_alias = !without_rowid && keys.len() == 1 && keys[0].1 == "INTEGER";
        out.push(Table {
            name,
            columns: columns.into_iter().map(|c| c.0).collect(),
            without_rowid,
            rowid_alias,
        });
    }
    Ok(out)
}

fn schema_version(db: &dyn Sql) -> Result<i64, StoreError> {
    db.query_one(
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        &[],
        |r| r.get::<i64>(0),
    )
}

/// The names of the move's triggers in the source (capture and refusal).
fn move_triggers(db: &dyn Sql) -> Result<Vec<String>, StoreError> {
    db.query_map(
        "SELECT name FROM sqlite_schema WHERE type = 'trigger'
           AND name LIKE '\\_tenantd\\_move%' ESCAPE '\\'",
        &[],
        |r| r.get::<String>(0),
    )
}

/// Drops what a move put in the source: its triggers and its log (a failed move's, or one that
/// died halfway).
fn drop_move_objects(db: &dyn Sql) -> Result<(), StoreError> {
    for name in move_triggers(db)? {
        db.execute(&format!("DROP TRIGGER IF EXISTS {}", ident(&name)), &[])?;
    }
    db.execute(&format!("DROP TABLE IF EXISTS {LOG_TABLE}"), &[])?;
    Ok(())
}

/// The log and the triggers that fill it: every rowid written (both, when an update changes
/// the rowid).
fn install_capture(db: &dyn Sql, tables: &[Table]) -> Result<(), StoreError> {
    drop_move_objects(db)?;
    db.execute(
        &format!("CREATE TABLE {LOG_TABLE} (tbl TEXT NOT NULL, rid INTEGER NOT NULL)"),
        &[],
    )?;
    for (i, table) in tables.iter().filter(|t| !t.without_rowid).enumerate() {
        let (on, tbl) = (ident(&table.name), literal(&table.name));
        let log = |row: &str| format!("INSERT INTO {LOG_TABLE} (tbl, rid) VALUES ({tbl}, {row});");
        for (kind, event, body) in [
            ("i", "INSERT", log("NEW.rowid")),
            (
                "u",
                "UPDATE",
                format!("{} {}", log("OLD.rowid"), log("NEW.rowid")),
            ),
            ("d", "DELETE", log("OLD.rowid")),
        ] {
            db.execute(
                &format!(
                    "CREATE TRIGGER \"_tenantd_move_{kind}{i}\" AFTER {event} ON {on} \
                     BEGIN {body} END"
                ),
                &[],
            )?;
        }
    }
    Ok(())
}

/// BEFORE triggers on every table that refuse any write with [`MOVED_MESSAGE`].
fn install_refusal(db: &dyn Sql, tables: &[Table]) -> Result<(), StoreError> {
    for (i, table) in tables.iter().enumerate() {
        for (kind, event) in [("i", "INSERT"), ("u", "UPDATE"), ("d", "DELETE")] {
            db.execute(
                &format!(
                    "CREATE TRIGGER \"_tenantd_moved_{kind}{i}\" BEFORE {event} ON {} \
                     BEGIN SELECT RAISE(ABORT, {}); END",
                    ident(&table.name),
                    literal(MOVED_MESSAGE)
                ),
                &[],
            )?;
        }
    }
    Ok(())
}

fn row_values(row: &dyn crate::store::RowRef) -> Result<Vec<Value>, StoreError> {
    (0..row.column_count())
        .map(|i| row.value(i).map(|v| v.to_owned()))
        .collect()
}

/// Copies one rowid table, page by page, each page read on its own (the log catches what
/// changes meanwhile).
fn bulk_copy(tenant: &Tenant, table: &Table, dest: &mut Dest) -> Result<u64, LifecycleError> {
    // Up to the last rowid now: rows written later are in the log, and a copy that chased
    // them would race the tenant's writers.
    let end = tenant.read(|db| {
        db.query_one(
            &format!("SELECT coalesce(max(rowid), 0) FROM {}", ident(&table.name)),
            &[],
            |r| r.get::<i64>(0),
        )
        .map_err(LifecycleError::from)
    })?;
    let sql = format!(
        "SELECT {} FROM {} WHERE rowid > ?1 AND rowid <= ?2 ORDER BY rowid LIMIT {PAGE}",
        table.select_list(),
        ident(&table.name)
    );
    let mut after = i64::MIN;
    let mut copied = 0;
    loop {
        let rows = tenant.read(|db| {
            db.query_map(
                &sql,
                &[Value::Integer(after), Value::Integer(end)],
                row_values,
            )
            .map_err(LifecycleError::from)
        })?;
        let Some(last) = rows.last().and_then(|r| r.first()).and_then(Value::as_i64) else {
            return Ok(copied);
        };
        after = last;
        copied += rows.len() as u64;
        dest.apply(rows.iter().map(|r| table.upsert(r)).collect())?;
    }
}

/// What one catch-up round did.
struct CaughtUp {
    /// Log entries read, and the last one's rowid (to delete up to).
    entries: usize,
    last_entry: Option<i64>,
    /// Rows copied again or deleted.
    rows: u64,
}

/// Copies again (or deletes on the destination) the rows the log names, reading the rows
/// after the log: whatever changes later is logged again.
fn catch_up(db: &dyn Sql, tables: &[Table], dest: &mut Dest) -> Result<CaughtUp, LifecycleError> {
    let entries = db.query_map(
        &format!("SELECT rowid, tbl, rid FROM {LOG_TABLE} ORDER BY rowid"),
        &[],
        |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?, r.get::<i64>(2)?)),
    )?;
    let mut done = CaughtUp {
        entries: entries.len(),
        last_entry: entries.last().map(|e| e.0),
        rows: 0,
    };
    for table in tables.iter().filter(|t| !t.without_rowid) {
        let mut rids: Vec<i64> = entries
            .iter()
            .filter(|e| e.1 == table.name)
            .map(|e| e.2)
            .collect();
        rids.sort_unstable();
        rids.dedup();
        for chunk in rids.chunks(PAGE) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
            let args: Vec<Value> = chunk.iter().map(|r| Value::Integer(*r)).collect();
            let rows = db.query_map(
                &format!(
                    "SELECT {} FROM {} WHERE rowid IN ({})",
                    table.select_list(),
                    ident(&table.name),
                    marks.join(", ")
                ),
                &args,
                row_values,
            )?;
            let present: Vec<i64> = rows
                .iter()
                .filter_map(|r| r.first().and_then(Value::as_i64))
                .collect();
            let mut statements: Vec<Statement> = rows.iter().map(|r| table.upsert(r)).collect();
            statements.extend(chunk.iter().filter(|r| !present.contains(r)).map(|r| {
                Statement::new(
                    &format!("DELETE FROM {} WHERE rowid = ?1", ident(&table.name)),
                    &[Value::Integer(*r)],
                )
            }));
            done.rows += statements.len() as u64;
            dest.apply(statements)?;
        }
    }
    Ok(done)
}

/// A table the log does not follow, replaced whole on the destination.
fn copy_whole(db: &dyn Sql, table: &Table, dest: &mut Dest) -> Result<(), LifecycleError> {
    let columns: Vec<String> = table.columns.iter().map(|c| ident(c)).collect();
    let rows = db.query_map(
        &format!("SELECT {} FROM {}", columns.join(", "), ident(&table.name)),
        &[],
        row_values,
    )?;
    let mut statements = vec![Statement::new(
        &format!("DELETE FROM {}", ident(&table.name)),
        &[],
    )];
    statements.extend(rows.iter().map(|r| table.upsert(r)));
    dest.apply(statements)
}

/// `AUTOINCREMENT`'s counters, when the schema has any: a deleted row's id is not handed out
/// again on the destination either.
fn copy_sequences(db: &dyn Sql, dest: &mut Dest) -> Result<(), LifecycleError> {
    let there = db.query_one(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_sequence'",
        &[],
        |r| r.get::<i64>(0),
    )?;
    if there == 0 {
        return Ok(());
    }
    let rows = db.query_map("SELECT name, seq FROM sqlite_sequence", &[], row_values)?;
    let mut statements = vec![Statement::new("DELETE FROM sqlite_sequence", &[])];
    statements.extend(
        rows.iter()
            .map(|r| Statement::new("INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)", r)),
    );
    dest.apply(statements)
}

/// The new copy, written with foreign keys off (rows arrive in rowid order, not in the order
/// their references need), each batch of statements in one transaction.
enum Dest {
    File {
        path: PathBuf,
        conn: Option<rusqlite::Connection>,
    },
    Sqld {
        client: Arc<sqld::Client>,
        namespace: String,
    },
}

impl Dest {
    /// An empty database at the binary's migrations, where `to` keeps tenant `id`. What a
    /// failed move left there is replaced: the catalog says the tenant is elsewhere, so
    /// nobody uses it.
    fn make(
        to: TenantStore,
        client: &Arc<sqld::Client>,
        id: &str,
        path: &Path,
    ) -> Result<Dest, LifecycleError> {
        match to {
            TenantStore::Sqld => {
                if client.namespace_exists(id)? {
                    client.delete_namespace(id)?;
                }
                client.create_namespace(id)?;
                let dest = Dest::Sqld {
                    client: Arc::clone(client),
                    namespace: id.to_string(),
                };
                if let Err(e) = store_sqld::migrate(client, id, db::tenant_migrations()) {
                    dest.remove();
                    return Err(e.into());
                }
                Ok(dest)
            }
            TenantStore::Local => {
                db::remove_database_files(path)?;
                let made = (|| -> Result<rusqlite::Connection, LifecycleError> {
                    let mut conn = db::open(path, DbKind::Tenant, Create::New)?;
                    db::migrate(&mut conn, db::tenant_migrations())?;
                    conn.execute_batch("PRAGMA foreign_keys = OFF")?;
                    Ok(conn)
                })();
                match made {
                    Ok(conn) => Ok(Dest::File {
                        path: path.to_path_buf(),
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        let _ = db::remove_database_files(path);
                        Err(e)
                    }
                }
            }
        }
    }

    fn schema_version(&self) -> Result<i64, LifecycleError> {
        Ok(match self {
            Dest::File { conn, .. } => match conn {
                Some(conn) => schema_version(conn)?,
                None => 0,
            },
            Dest::Sqld { client, namespace } => {
                i64::from(store_sqld::schema_version(client, namespace)?)
            }
        })
    }

    /// `statements` in one transaction: all of them, or none.
    fn apply(&mut self, statements: Vec<Statement>) -> Result<(), LifecycleError> {
        if statements.is_empty() {
            return Ok(());
        }
        match self {
            Dest::File { conn, .. } => {
                let conn = conn.as_mut().ok_or_else(|| {
                    LifecycleError::Store(StoreError::Backend("the new file is closed".into()))
                })?;
                db::write(conn, |tx| -> Result<(), LifecycleError> {
                    for s in &statements {
                        Sql::execute(&**tx, &s.sql, &s.args)?;
                    }
                    Ok(())
                })
            }
            Dest::Sqld { client, namespace } => {
                let mut tx =
                    client.begin_immediate_after(namespace, &["PRAGMA foreign_keys = OFF"])?;
                tx.execute_many(&statements)?;
                tx.commit()?;
                Ok(())
            }
        }
    }

    /// Removes the new copy of a move that failed.
    fn remove(self) {
        match self {
            Dest::File { path, conn } => {
                drop(conn);
                if let Err(e) = db::remove_database_files(&path) {
                    log::error!(
                        "could not remove {} after a failed move: {e}",
                        path.display()
                    );
                }
            }
            Dest::Sqld { client, namespace } => {
                if let Err(e) = client.delete_namespace(&namespace) {
                    log::error!("could not delete namespace {namespace} after a failed move: {e}");
                }
            }
        }
    }
}

/// After the flip: the old pool closed (waiting a little for requests that hold it), and the
/// old copy renamed (a file) or deleted (a namespace). Returns where the old copy is left.
fn retire_source(
    registry: &Registry,
    record: &TenantRecord,
    tenant: Tenant,
    client: &sqld::Client,
    path: &Path,
) -> Option<String> {
    // Requests that hold the old pool finish on the old copy, whose writes now fail. Its
    // connections must be closed before the file is renamed: SQLite's last close removes the
    // `-wal` by its name, which may by then be a new copy's.
    if !registry.retire_moved(tenant, OLD_POOL_WAIT) {
        log::warn!(
            "tenant {}: its old pool is still in use after {OLD_POOL_WAIT:?}",
            record.slug
        );
    }
    match record.store {
        TenantStore::Local => {
            let kept = format!(
                "{}.moved-{}",
                path.file_name()?.to_string_lossy(),
                unix_now()
            );
            for suffix in ["", "-wal", "-shm"] {
                let from = PathBuf::from(format!("{}{suffix}", path.display()));
                let to = path.with_file_name(format!("{kept}{suffix}"));
                match std::fs::rename(&from, &to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => log::error!(
                        "tenant {}: its old file {} stays under its name: {e}",
                        record.slug,
                        from.display()
                    ),
                }
            }
            Some(kept)
        }
        TenantStore::Sqld => {
            if let Err(e) = client.delete_namespace(&record.id) {
                log::error!(
                    "tenant {}: its old namespace remains on sqld: {e}",
                    record.slug
                );
                return Some(format!("namespace {}", record.id));
            }
            None
        }
    }
}
