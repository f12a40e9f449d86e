//! `tenantd tenants exec`: one read-only query over tenants' files, a few at a time, one JSON
//! line per tenant. Safe beside a running server: each file is opened read-only (never changing
//! its journal mode, never creating a `-wal`), and only a statement SQLite says does not write
//! is run, on a connection that is itself `query_only`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::{json, Map, Value};

use crate::catalog::{TenantRecord, TenantStatus};
use crate::db;
use crate::tenancy::tenant_db_path;

/// Tenants queried at once: enough to overlap one file's reads with another's, few enough to
/// leave a running server its cores.
const WORKERS: usize = 4;

/// Refuses, before any tenant is touched, what is not one statement that reads: checked on an
/// empty database at this binary's schema, so a misspelt table or a write is caught once, not
/// once per tenant.
pub(super) fn check_query(sql: &str) -> Result<(), String> {
    let mut conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
    db::disable_attach(&conn);
    db::migrate(&mut conn, db::tenant_migrations()).map_err(|e| e.to_string())?;
    prepare_read(&conn, sql).map(drop)
}

/// `sql` prepared as one statement that reads, or why not.
fn prepare_read<'c>(conn: &'c Connection, sql: &str) -> Result<rusqlite::Statement<'c>, String> {
    if sql.trim().is_empty() {
        return Err("the query is empty".into());
    }
    let stmt = conn.prepare(sql).map_err(|e| match e {
        rusqlite::Error::MultipleStatement => {
            "only one statement may run (found more than one)".to_string()
        }
        other => format!("the query is not valid SQL here: {other}"),
    })?;
    if !stmt.readonly() {
        return Err("only a read may run: this statement would write".into());
    }
    // BEGIN, COMMIT, SAVEPOINT and their like count as read-only but return nothing.
    if stmt.column_count() == 0 {
        return Err("the statement returns no rows (only a SELECT or a reading PRAGMA)".into());
    }
    Ok(stmt)
}

/// The query's rows in one tenant's file, each an object of column name to value.
fn query_tenant(data: &Path, record: &TenantRecord, sql: &str) -> Result<Vec<Value>, String> {
    let path = tenant_db_path(data, &record.id).ok_or("the catalog id is not a canonical UUID")?;
    // Not `open_read_only`: its `immutable` open (for a file with no `-wal`) takes no locks, and
    // the server may be writing this file right now.
    let conn = db::open_query_only(&path).map_err(|e| e.to_string())?;
    let mut stmt = prepare_read(&conn, sql)?;
    let names: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
    let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let mut object = Map::new();
        for (i, name) in names.iter().enumerate() {
            let value = row.get_ref(i).map_err(|e| e.to_string())?;
            object.insert(name.clone(), json_value(value));
        }
        out.push(Value::Object(object));
    }
    Ok(out)
}

fn json_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => n.into(),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => hex::encode(b).into(),
    }
}

/// Which tenants `--all` means: those with a file being served or kept for their return.
pub(super) fn queried_by_all(record: &TenantRecord) -> bool {
    matches!(
        record.status,
        TenantStatus::Active | TenantStatus::Suspended
    )
}

/// Runs `sql` over `tenants` on a few threads, printing each tenant's line in the order given
/// as soon as it and those before it are done. The number of tenants that failed.
pub(super) fn run(data: &Path, tenants: Vec<Arc<TenantRecord>>, sql: &str) -> usize {
    let next = AtomicUsize::new(0);
    let (send, receive) = crossbeam_channel::unbounded::<(usize, Value, bool)>();
    let mut failed = 0;
    std::thread::scope(|scope| {
        for _ in 0..WORKERS.min(tenants.len()) {
            let send = send.clone();
            let (next, tenants) = (&next, &tenants);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(record) = tenants.get(i) else { break };
                let (line, ok) = match query_tenant(data, record, sql) {
                    Ok(rows) => (
                        json!({"tenant": record.slug, "tenant_id": record.id, "rows": rows}),
                        true,
                    ),
                    Err(error) => (
                        json!({"tenant": record.slug, "tenant_id": record.id, "error": error}),
                        false,
                    ),
                };
                if send.send((i, line, ok)).is_err() {
                    break;
                }
            });
        }
        drop(send);
        let mut waiting = BTreeMap::new();
        let mut printed = 0;
        for (i, line, ok) in receive {
            failed += usize::from(!ok);
            waiting.insert(i, line);
            while let Some(line) = waiting.remove(&printed) {
                println!("{line}");
                printed += 1;
            }
        }
    });
    failed
}
