//! The store contract (`store`) on a libSQL server namespace: reads as autocommit statements,
//! writes as an interactive `BEGIN IMMEDIATE` transaction, and the embedded migrations run the
//! way `db::migrate` runs them on a file (each in its own transaction, checksums checked).
//!
//! What sqld does differently, and why the code here looks as it does (docs/scale-out.md):
//! `db::init`'s pragmas are refused there (sqld sets its own: WAL, foreign keys on), a
//! migration file goes as one Hrana `sequence`, and sqld rolls back a transaction that holds
//! the write lock idle while another writer waits: that comes back as `StoreError::Busy`, a
//! unit of work to run again.

use std::cell::RefCell;

use super::{Changes, Flow, RowRef, Sql, StoreError, Value, ValueRef};
use crate::db::{now_rfc3339, Migration, SCHEMA_MIGRATIONS_TABLE};
use crate::sqld::{self, Client, SqldError};

impl From<SqldError> for StoreError {
    fn from(e: SqldError) -> Self {
        match e {
            SqldError::Sql { message, code } => match code.as_deref() {
                Some("SQLITE_BUSY" | "SQLITE_LOCKED" | "TRANSACTION_TIMEOUT") => {
                    StoreError::Busy(message)
                }
                _ => StoreError::Sql {
                    code: code.as_deref().and_then(sqlite_code),
                    message: match code {
                        Some(code) => format!("{code}: {message}"),
                        None => message,
                    },
                },
            },
            SqldError::TransactionEnded(m) => StoreError::Busy(m),
            SqldError::StreamEnded { message, .. } => StoreError::Busy(message),
            other => StoreError::Backend(format!("sqld: {other}")),
        }
    }
}

/// SQLite's primary result code for sqld's name of it (`SQLITE_CONSTRAINT_UNIQUE` and the like
/// carry the primary code's name first), so that callers tell errors apart the same way on both
/// backends.
fn sqlite_code(name: &str) -> Option<i32> {
    use rusqlite::ffi;
    let primary = [
        ("SQLITE_CONSTRAINT", ffi::SQLITE_CONSTRAINT),
        ("SQLITE_BUSY", ffi::SQLITE_BUSY),
        ("SQLITE_LOCKED", ffi::SQLITE_LOCKED),
        ("SQLITE_CORRUPT", ffi::SQLITE_CORRUPT),
        ("SQLITE_FULL", ffi::SQLITE_FULL),
        ("SQLITE_IOERR", ffi::SQLITE_IOERR),
        ("SQLITE_READONLY", ffi::SQLITE_READONLY),
        ("SQLITE_NOTADB", ffi::SQLITE_NOTADB),
        ("SQLITE_CANTOPEN", ffi::SQLITE_CANTOPEN),
        ("SQLITE_NOMEM", ffi::SQLITE_NOMEM),
    ];
    primary
        .iter()
        .find(|(p, _)| name == *p || name.strip_prefix(p).is_some_and(|r| r.starts_with('_')))
        .map(|(_, code)| *code)
}

struct SqldRow<'a>(&'a [Value]);

impl RowRef for SqldRow<'_> {
    fn column_count(&self) -> usize {
        self.0.len()
    }

    fn value(&self, column: usize) -> Result<ValueRef<'_>, StoreError> {
        let v = self.0.get(column).ok_or(StoreError::Type {
            column,
            expected: "a column",
            found: "none",
        })?;
        Ok(match v {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t),
            Value::Blob(b) => ValueRef::Blob(b),
        })
    }
}

fn hand_out(
    rows: &sqld::Rows,
    each: &mut dyn FnMut(&dyn RowRef) -> Result<Flow, StoreError>,
) -> Result<(), StoreError> {
    for row in &rows.rows {
        if each(&SqldRow(row))?.is_break() {
            break;
        }
    }
    Ok(())
}

fn changes(rows: &sqld::Rows) -> Changes {
    Changes {
        rows: rows.affected_row_count,
        last_insert_rowid: rows.last_insert_rowid.unwrap_or(0),
    }
}

/// Reads of one namespace: each statement on its own, autocommit (the namespace is the one
/// copy, so each sees every write committed before it).
pub struct SqldRead<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
}

impl Sql for SqldRead<'_> {
    fn query_each(
        &self,
        sql: &str,
        args: &[Value],
        each: &mut dyn FnMut(&dyn RowRef) -> Result<Flow, StoreError>,
    ) -> Result<(), StoreError> {
        let rows = self.client.execute(self.namespace, sql, args)?;
        hand_out(&rows, each)
    }

    fn execute(&self, sql: &str, args: &[Value]) -> Result<Changes, StoreError> {
        let rows = self.client.execute(self.namespace, sql, args)?;
        Ok(changes(&rows))
    }
}

/// A write on one namespace: an interactive transaction begun with `BEGIN IMMEDIATE`.
struct SqldWrite {
    tx: RefCell<sqld::Transaction>,
}

impl Sql for SqldWrite {
    fn query_each(
        &self,
        sql: &str,
        args: &[Value],
        each: &mut dyn FnMut(&dyn RowRef) -> Result<Flow, StoreError>,
    ) -> Result<(), StoreError> {
        let rows = self.tx.borrow_mut().execute(sql, args)?;
        hand_out(&rows, each)
    }

    fn execute(&self, sql: &str, args: &[Value]) -> Result<Changes, StoreError> {
        let rows = self.tx.borrow_mut().execute(sql, args)?;
        Ok(changes(&rows))
    }
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction on `namespace`; commits on `Ok`, rolls back on
/// `Err` (as `Tenant::write` does on a file).
pub fn write<T, E>(
    client: &Client,
    namespace: &str,
    f: impl FnOnce(&dyn Sql) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<StoreError>,
{
    write_as(client, namespace, E::from, f)
}

/// [`write`] for a caller whose error type takes a store's failure another way than `From`
/// (the catalog's, through `CatalogError`): `lift` turns the transaction's own failures into
/// it.
pub fn write_as<T, E>(
    client: &Client,
    namespace: &str,
    lift: impl Fn(StoreError) -> E,
    f: impl FnOnce(&dyn Sql) -> Result<T, E>,
) -> Result<T, E> {
    let tx = client
        .begin_immediate(namespace)
        .map_err(|e| lift(e.into()))?;
    let write = SqldWrite {
        tx: RefCell::new(tx),
    };
    match f(&write) {
        Ok(value) => {
            write.tx.into_inner().commit().map_err(|e| lift(e.into()))?;
            Ok(value)
        }
        Err(e) => {
            // Rolled back whatever this says: a failed rollback leaves the stream to expire,
            // which rolls back too.
            let _ = write.tx.into_inner().rollback();
            Err(e)
        }
    }
}

/// The last migration applied to `namespace` (0 before any), as `db::schema_version` says of
/// a file.
pub fn schema_version(client: &Client, namespace: &str) -> Result<u32, StoreError> {
    let read = SqldRead { client, namespace };
    let db: &dyn Sql = &read;
    let there = db.query_one(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'",
        &[],
        |r| r.get::<i64>(0),
    )?;
    if there == 0 {
        return Ok(0);
    }
    let version = db.query_one(
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        &[],
        |r| r.get::<i64>(0),
    )?;
    u32::try_from(version).map_err(|_| StoreError::Type {
        column: 0,
        expected: "a migration version",
        found: "integer out of range",
    })
}

/// Runs `f` in one read transaction on `namespace` (a deferred `BEGIN`, rolled back after):
/// every statement of `f` sees the same moment of the database.
pub fn read_snapshot<T, E>(
    client: &Client,
    namespace: &str,
    f: impl FnOnce(&dyn Sql) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<StoreError>,
{
    let tx = client
        .begin_read(namespace)
        .map_err(|e| E::from(e.into()))?;
    let read = SqldWrite {
        tx: RefCell::new(tx),
    };
    let out = f(&read);
    // Nothing to keep: a failed rollback leaves the stream to expire, which ends it too.
    let _ = read.tx.into_inner().rollback();
    out
}

/// Brings `namespace` to the end of `migrations`: each one not yet applied in a transaction of
/// its own with its row in `schema_migrations`; an applied one whose checksum differs, or one
/// the binary does not have, stops it (as `db::migrate` does on a file).
pub fn migrate(
    client: &Client,
    namespace: &str,
    migrations: &[Migration],
) -> Result<Vec<u32>, StoreError> {
    client.execute_script(namespace, SCHEMA_MIGRATIONS_TABLE)?;
    let read = SqldRead { client, namespace };
    let db: &dyn Sql = &read;
    let applied = db.query_map(
        "SELECT version, checksum FROM schema_migrations",
        &[],
        |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?)),
    )?;
    for (version, checksum) in &applied {
        match migrations.iter().find(|m| i64::from(m.version) == *version) {
            None => {
                return Err(StoreError::Sql {
                    code: None,
                    message: format!("applied migration {version} is unknown to this binary"),
                })
            }
            Some(m) if &m.checksum != checksum => {
                return Err(StoreError::Sql {
                    code: None,
                    message: format!("{} differs from the one applied", m.file),
                })
            }
            Some(_) => {}
        }
    }
    let mut done = Vec::new();
    for m in migrations {
        if applied.iter().any(|(v, _)| *v == i64::from(m.version)) {
            continue;
        }
        // As on a file: a migration that rebuilds tables runs with foreign keys off, which
        // must be set before its transaction begins.
        let keys_off = m.sql.starts_with("-- foreign_keys: off");
        let setup: &[&str] = if keys_off {
            &["PRAGMA foreign_keys = OFF"]
        } else {
            &[]
        };
        let mut tx = client.begin_immediate_after(namespace, setup)?;
        // Another node may have applied it since the list above was read.
        let there = tx.execute(
            "SELECT 1 FROM schema_migrations WHERE version = ?1",
            &[Value::Integer(m.version.into())],
        )?;
        if !there.rows.is_empty() {
            tx.rollback()?;
            continue;
        }
        tx.execute_script(&m.sql)?;
        if keys_off {
            let broken = tx.execute("PRAGMA foreign_key_check", &[])?;
            if !broken.rows.is_empty() {
                return Err(StoreError::Sql {
                    code: None,
                    message: format!("{} leaves rows that break foreign keys", m.file),
                });
            }
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at)
             VALUES (?1, ?2, ?3, ?4)",
            &[
                Value::Integer(m.version.into()),
                Value::Text(m.name.clone()),
                Value::Text(m.checksum.clone()),
                Value::Text(now_rfc3339()),
            ],
        )?;
        tx.commit()?;
        done.push(m.version);
    }
    Ok(done)
}
