//! The store contract: what tenant code needs of a database, so that the same SQL runs on a
//! local SQLite file or on a libSQL server (sqld) namespace (docs/scale-out.md). `Sql` is a
//! read or a write transaction: statements with our own `Value` arguments, rows handed out one
//! at a time as `RowRef` (never materialized on the local backend, which keeps rusqlite's
//! statement cache), and the changes a statement made.
//!
//! Code moves onto the contract module by module; until it all has, `rusqlite::Connection`
//! (and so a `Transaction`) is an `Sql` too, so the two mix inside one write.
//!
//! The backend on a libSQL server namespace is `sqld` (beside this file); the catalog and the
//! tenants both sit on the contract, so it lives below them.

pub mod sqld;

use std::fmt;
use std::ops::ControlFlow;

use rusqlite::types::ValueRef as SqliteRef;

/// A value as statements take it: SQLite's five kinds, the same type the sqld client sends
/// (one value type for both backends, defined beside the wire form that needs it most).
pub use crate::sqld::Value;

/// A value as a row holds it, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl ValueRef<'_> {
    pub fn to_owned(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(t.to_string()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ValueRef::Null => "null",
            ValueRef::Integer(_) => "integer",
            ValueRef::Real(_) => "real",
            ValueRef::Text(_) => "text",
            ValueRef::Blob(_) => "blob",
        }
    }
}

/// Arguments for a statement: `args![a, b, c]`.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::Value::from($v)),*][..]
    };
}

/// What a failed statement or transaction says.
#[derive(Debug)]
pub enum StoreError {
    /// The database refused the statement: SQLite's extended code where it is known, and its
    /// message.
    Sql { code: Option<i32>, message: String },
    /// Another writer held the database past the wait.
    Busy(String),
    /// A column held another type than the code reads it as.
    Type {
        column: usize,
        expected: &'static str,
        found: &'static str,
    },
    /// The backend could not be reached or answered out of protocol (sqld).
    Backend(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Sql { message, .. } => f.write_str(message),
            StoreError::Busy(m) => write!(f, "database busy: {m}"),
            StoreError::Type {
                column,
                expected,
                found,
            } => write!(f, "column {column}: expected {expected}, found {found}"),
            StoreError::Backend(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// Whether a constraint (unique, foreign key, check, not null) refused the statement, on
    /// either backend; the message then names the constraint's table and column.
    pub fn is_constraint(&self) -> bool {
        matches!(self, StoreError::Sql { code: Some(code), .. }
            if code & 0xff == rusqlite::ffi::SQLITE_CONSTRAINT)
    }

    /// What the database said.
    pub fn message(&self) -> &str {
        match self {
            StoreError::Sql { message, .. }
            | StoreError::Busy(message)
            | StoreError::Backend(message) => message,
            StoreError::Type { .. } => "a column of another type",
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::DatabaseBusy
                    || f.code == rusqlite::ErrorCode::DatabaseLocked =>
            {
                StoreError::Busy(e.to_string())
            }
            rusqlite::Error::SqliteFailure(f, _) => StoreError::Sql {
                code: Some(f.extended_code),
                message: e.to_string(),
            },
            _ => StoreError::Sql {
                code: None,
                message: e.to_string(),
            },
        }
    }
}

/// One row, as the statement hands it over.
pub trait RowRef {
    fn column_count(&self) -> usize;
    fn value(&self, column: usize) -> Result<ValueRef<'_>, StoreError>;
}

impl dyn RowRef + '_ {
    /// Column `column` as a `T`.
    pub fn get<T: FromValue>(&self, column: usize) -> Result<T, StoreError> {
        let v = self.value(column)?;
        T::from_value(v).ok_or(StoreError::Type {
            column,
            expected: T::KIND,
            found: v.kind(),
        })
    }
}

/// A Rust type a column can be read as.
pub trait FromValue: Sized {
    const KIND: &'static str;
    fn from_value(v: ValueRef<'_>) -> Option<Self>;
}

impl FromValue for i64 {
    const KIND: &'static str = "integer";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Integer(i) => Some(i),
            _ => None,
        }
    }
}

impl FromValue for bool {
    const KIND: &'static str = "integer";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}

impl FromValue for f64 {
    const KIND: &'static str = "real";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Real(f) => Some(f),
            ValueRef::Integer(i) => Some(i as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    const KIND: &'static str = "text";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Text(t) => Some(t.to_string()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    const KIND: &'static str = "blob";
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Blob(b) => Some(b.to_vec()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const KIND: &'static str = T::KIND;
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// What a statement changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Changes {
    pub rows: u64,
    /// The rowid of the last row inserted on this connection: this statement's only when it
    /// was an `INSERT` (prefer `INSERT ... RETURNING`).
    pub last_insert_rowid: i64,
}

/// What `query_each`'s callback says after a row: go on, or stop reading.
pub type Flow = ControlFlow<()>;

/// A read or a write transaction on one database.
pub trait Sql {
    /// Runs a statement and hands each row to `each` in turn, until it says to stop.
    fn query_each(
        &self,
        sql: &str,
        args: &[Value],
        each: &mut dyn FnMut(&dyn RowRef) -> Result<Flow, StoreError>,
    ) -> Result<(), StoreError>;

    /// Runs a statement that returns no rows.
    fn execute(&self, sql: &str, args: &[Value]) -> Result<Changes, StoreError>;
}

impl dyn Sql + '_ {
    /// The first row, read by `f`; `None` without one. The rest are not read.
    pub fn query_row<T>(
        &self,
        sql: &str,
        args: &[Value],
        mut f: impl FnMut(&dyn RowRef) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut first = None;
        self.query_each(sql, args, &mut |row| {
            first = Some(f(row)?);
            Ok(Flow::Break(()))
        })?;
        Ok(first)
    }

    /// The first row, read by `f`, for a statement that always returns one (a count, an
    /// `INSERT ... RETURNING`): its absence is an error.
    pub fn query_one<T>(
        &self,
        sql: &str,
        args: &[Value],
        f: impl FnMut(&dyn RowRef) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.query_row(sql, args, f)?
            .ok_or_else(|| StoreError::Sql {
                code: None,
                message: format!("no row from: {sql}"),
            })
    }

    /// Every row, each read by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        args: &[Value],
        mut f: impl FnMut(&dyn RowRef) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        self.query_each(sql, args, &mut |row| {
            out.push(f(row)?);
            Ok(Flow::Continue(()))
        })?;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The local backend: a rusqlite connection (a pooled one, or the write's transaction).
// ---------------------------------------------------------------------------------------------

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self {
            Value::Null => SqliteRef::Null,
            Value::Integer(i) => SqliteRef::Integer(*i),
            Value::Real(f) => SqliteRef::Real(*f),
            Value::Text(t) => SqliteRef::Text(t.as_bytes()),
            Value::Blob(b) => SqliteRef::Blob(b),
        }))
    }
}

struct LocalRow<'a, 'b>(&'a rusqlite::Row<'b>);

impl RowRef for LocalRow<'_, '_> {
    fn column_count(&self) -> usize {
        self.0.as_ref().column_count()
    }

    fn value(&self, column: usize) -> Result<ValueRef<'_>, StoreError> {
        Ok(match self.0.get_ref(column)? {
            SqliteRef::Null => ValueRef::Null,
            SqliteRef::Integer(i) => ValueRef::Integer(i),
            SqliteRef::Real(f) => ValueRef::Real(f),
            SqliteRef::Text(t) => {
                ValueRef::Text(std::str::from_utf8(t).map_err(|_| StoreError::Type {
                    column,
                    expected: "text",
                    found: "text that is not UTF-8",
                })?)
            }
            SqliteRef::Blob(b) => ValueRef::Blob(b),
        })
    }
}

/// Every statement goes through the connection's statement cache: preparing one (parsing it
/// against the schema) costs more than running these small ones, and a tenant connection serves
/// the same few statements over and over.
impl Sql for rusqlite::Connection {
    fn query_each(
        &self,
        sql: &str,
        args: &[Value],
        each: &mut dyn FnMut(&dyn RowRef) -> Result<Flow, StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(row) = rows.next()? {
            if each(&LocalRow(row))?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn execute(&self, sql: &str, args: &[Value]) -> Result<Changes, StoreError> {
        let mut stmt = self.prepare_cached(sql)?;
        let rows = stmt.execute(rusqlite::params_from_iter(args))?;
        Ok(Changes {
            rows: rows as u64,
            last_insert_rowid: self.last_insert_rowid(),
        })
    }
}

/// A pooled connection and a write's transaction are connections too.
macro_rules! local_sql {
    ($($t:ty),*) => {$(
        impl Sql for $t {
            fn query_each(
                &self,
                sql: &str,
                args: &[Value],
                each: &mut dyn FnMut(&dyn RowRef) -> Result<Flow, StoreError>,
            ) -> Result<(), StoreError> {
                let conn: &rusqlite::Connection = self;
                conn.query_each(sql, args, each)
            }

            fn execute(&self, sql: &str, args: &[Value]) -> Result<Changes, StoreError> {
                let conn: &rusqlite::Connection = self;
                Sql::execute(conn, sql, args)
            }
        }
    )*};
}

local_sql!(rusqlite::Transaction<'_>, crate::db::PooledConn);

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, r REAL, s TEXT, b BLOB)",
        )
        .unwrap();
        conn
    }

    #[test]
    fn values_round_trip_through_the_local_backend() {
        let conn = db();
        let sql: &dyn Sql = &conn;
        let changed = sql
            .execute(
                "INSERT INTO t (n, r, s, b) VALUES (?1, ?2, ?3, ?4)",
                args![i64::MIN, 1.5, "ünï\u{0}x", Value::Blob(vec![0, 255])],
            )
            .unwrap();
        assert_eq!(
            changed,
            Changes {
                rows: 1,
                last_insert_rowid: 1
            }
        );
        sql.execute("INSERT INTO t (n) VALUES (?1)", args![Option::<i64>::None])
            .unwrap();
        let rows = sql
            .query_map("SELECT n, r, s, b FROM t ORDER BY id", &[], |row| {
                Ok((
                    row.get::<Option<i64>>(0)?,
                    row.get::<Option<f64>>(1)?,
                    row.get::<Option<String>>(2)?,
                    row.get::<Option<Vec<u8>>>(3)?,
                ))
            })
            .unwrap();
        assert_eq!(
            rows,
            [
                (
                    Some(i64::MIN),
                    Some(1.5),
                    Some("ünï\u{0}x".to_string()),
                    Some(vec![0, 255])
                ),
                (None, None, None, None),
            ]
        );
    }

    #[test]
    fn a_column_read_as_the_wrong_type_says_so() {
        let conn = db();
        let sql: &dyn Sql = &conn;
        sql.execute("INSERT INTO t (s) VALUES ('x')", &[]).unwrap();
        let e = sql
            .query_row("SELECT s FROM t", &[], |row| row.get::<i64>(0))
            .unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::Type {
                    column: 0,
                    expected: "integer",
                    found: "text"
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            sql.query_row("SELECT s FROM t WHERE id = 99", &[], |row| row
                .get::<String>(0))
                .unwrap(),
            None
        );
        let bad = sql
            .execute("INSERT INTO nowhere VALUES (1)", &[])
            .unwrap_err();
        assert!(matches!(bad, StoreError::Sql { .. }), "{bad:?}");
    }
}
