//! A tenant's archive (data portability): one zip with every table of its file as JSON Lines,
//! beside them the tables' times as the company reads them (its time zone and date format),
//! the file's schema, the catalog's rows about the tenant and a README. Written as it is read,
//! in one read transaction on one of the tenant's connections, to any `Write`: an HTTP
//! response, a file. Nothing holds a whole table or the whole archive in memory. Also the rows
//! of one tenant's file that one person wrote (`personal_rows`), for their own export.

use std::fmt;
use std::fs;
use std::io::{self, Write};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Statement};
use serde::Serialize;
use serde_json::{Map, Value};
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

use crate::catalog::{
    AuditFilter, Catalog, IdentityError, DEFAULT_DATE_FORMAT, DEFAULT_LOCALE, DEFAULT_TIMEZONE,
};
use crate::db::{self, DbError};

use super::Tenant;

/// Audit entries read from the catalog per query (its page limit).
const AUDIT_PAGE: usize = 200;

#[derive(Debug)]
pub enum ExportError {
    Db(DbError),
    Catalog(IdentityError),
    Zip(zip::result::ZipError),
    /// The writer failed: most often the client went away.
    Io(io::Error),
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportError::Db(e) => write!(f, "reading the tenant's file: {e}"),
            ExportError::Catalog(e) => write!(f, "reading the catalog: {e}"),
            ExportError::Zip(e) => write!(f, "writing the archive: {e}"),
            ExportError::Io(e) => write!(f, "writing the archive: {e}"),
        }
    }
}

impl std::error::Error for ExportError {}

impl From<DbError> for ExportError {
    fn from(e: DbError) -> Self {
        ExportError::Db(e)
    }
}

impl From<rusqlite::Error> for ExportError {
    fn from(e: rusqlite::Error) -> Self {
        ExportError::Db(DbError::from(e))
    }
}

impl From<IdentityError> for ExportError {
    fn from(e: IdentityError) -> Self {
        ExportError::Catalog(e)
    }
}

impl From<zip::result::ZipError> for ExportError {
    fn from(e: zip::result::ZipError) -> Self {
        match e {
            zip::result::ZipError::Io(e) => ExportError::Io(e),
            e => ExportError::Zip(e),
        }
    }
}

impl From<io::Error> for ExportError {
    fn from(e: io::Error) -> Self {
        ExportError::Io(e)
    }
}

impl From<serde_json::Error> for ExportError {
    fn from(e: serde_json::Error) -> Self {
        ExportError::Io(io::Error::other(e))
    }
}

/// What an archive holds, written last into it as `manifest.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    pub format: &'static str,
    pub tenant_id: String,
    pub slug: String,
    pub schema_version: u32,
    pub tenantd_version: &'static str,
    /// RFC 3339 UTC.
    pub exported_at: String,
    /// Rows per table of the tenant's file, by table name.
    pub tables: std::collections::BTreeMap<String, u64>,
    pub audit_entries: u64,
    /// Contents under `files/`, and those the `files` table names that were gone.
    pub files: u64,
    pub files_missing: u64,
    /// The company's settings the `local/` files follow (its own or the defaults).
    pub timezone: String,
    pub date_format: String,
    pub locale: String,
}

/// The company's way of writing times, from its settings (`timezone`, `date_format`); a value
/// missing or not understood is the settings' default (UTC, ISO), as the API shows it.
pub struct LocalTimes {
    timezone: chrono_tz::Tz,
    timezone_name: String,
    date_format: String,
    /// The chrono pattern of the date format, then the time and the zone's abbreviation.
    pattern: &'static str,
}

impl LocalTimes {
    pub fn from_settings(settings: &Value) -> LocalTimes {
        let text = |key: &str| settings.get(key).and_then(Value::as_str);
        let (timezone, timezone_name) = match text("timezone").map(|t| (t, t.parse())) {
            Some((name, Ok(tz))) => (tz, name.to_string()),
            _ => (chrono_tz::UTC, DEFAULT_TIMEZONE.to_string()),
        };
        let (date_format, pattern) = match text("date_format") {
            Some("dmy") => ("dmy", "%d/%m/%Y %H:%M:%S %Z"),
            Some("mdy") => ("mdy", "%m/%d/%Y %H:%M:%S %Z"),
            _ => (DEFAULT_DATE_FORMAT, "%Y-%m-%d %H:%M:%S %Z"),
        };
        LocalTimes {
            timezone,
            timezone_name,
            date_format: date_format.to_string(),
            pattern,
        }
    }

    /// An RFC 3339 time as the company reads it (`31/03/2026 14:05:09 BST`); `None` for text
    /// that is no such time.
    pub fn format(&self, rfc3339: &str) -> Option<String> {
        let t = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
        Some(
            t.with_timezone(&self.timezone)
                .format(self.pattern)
                .to_string(),
        )
    }
}

/// Whether a column holds the RFC 3339 times the workspace writes: TEXT, named `at` or `*_at`.
/// (The counters kept in Unix seconds, like `failing_since`, are not times for people.)
fn is_time_column(name: &str, declared: &str) -> bool {
    declared.eq_ignore_ascii_case("TEXT") && (name == "at" || name.ends_with("_at"))
}

/// A table's key columns (its primary key, else `rowid`) and its time columns.
fn time_columns(conn: &Connection, table: &str) -> rusqlite::Result<(Vec<String>, Vec<String>)> {
    let mut stmt = conn.prepare("SELECT name, type, pk FROM pragma_table_info(?1)")?;
    let mut keys: Vec<(i64, String)> = Vec::new();
    let mut times = Vec::new();
    let mut rows = stmt.query([table])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let declared: String = row.get(1)?;
        let pk: i64 = row.get(2)?;
        if pk > 0 {
            keys.push((pk, name.clone()));
        }
        if is_time_column(&name, &declared) {
            times.push(name);
        }
    }
    keys.sort();
    let keys = if keys.is_empty() {
        vec!["rowid".to_string()]
    } else {
        keys.into_iter().map(|(_, name)| name).collect()
    };
    Ok((keys, times))
}

/// `local/<table>.jsonl`: per row, its key and each time column as the company reads it.
fn write_local_times(
    conn: &Connection,
    table: &str,
    local: &LocalTimes,
    out: &mut impl Write,
) -> Result<(), ExportError> {
    let (keys, times) = time_columns(conn, table)?;
    let columns: Vec<String> = keys.iter().chain(&times).map(|c| quote(c)).collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM {}",
        columns.join(", "),
        quote(table)
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let mut object = Map::with_capacity(columns.len());
        for (i, key) in keys.iter().enumerate() {
            object.insert(key.clone(), json_value(row.get_ref(i)?));
        }
        for (i, time) in times.iter().enumerate() {
            let shown = match row.get_ref(keys.len() + i)? {
                ValueRef::Text(t) => local
                    .format(&String::from_utf8_lossy(t))
                    .map_or(Value::Null, Value::String),
                _ => Value::Null,
            };
            object.insert(time.clone(), shown);
        }
        json_line(out, &object)?;
    }
    Ok(())
}

pub const FORMAT: &str = "tenantd-export-1";

/// The archive's own description of its format.
pub const ARCHIVE_README: &str = include_str!("export_readme.md");

/// The name a downloaded archive gets: `<slug>-<yyyymmdd>.zip` (UTC).
pub fn file_name(slug: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    format!("{slug}-{}.zip", now.format("%Y%m%d"))
}

/// Writes the archive of `tenant` to `out` and returns what it holds. The tenant's file is read
/// in one read transaction, so the tables agree with each other; the catalog's rows are read
/// beside it.
pub fn write_archive<W: Write>(
    catalog: &Catalog,
    tenant: &Tenant,
    out: W,
) -> Result<Manifest, ExportError> {
    // A connection of its own rather than one of the pool's few: a download lasts as long as
    // its client reads, and must not keep the company's requests waiting for a connection.
    tenant.pool.touch();
    let conn = db::open(&tenant.pool.path, db::DbKind::Tenant, db::Create::Never)?;
    let mut zip = ZipWriter::new_stream(Fuse {
        inner: out,
        broken: false,
    })
    .set_auto_large_file();
    let now = chrono::Utc::now();
    let mut options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(0o644);
    if let Ok(time) = zip_time(now) {
        options = options.last_modified_time(time);
    }
    // The settings as the catalog holds them now (the tenant's record may be older).
    let settings = match catalog.by_id(tenant.id()) {
        Ok(Some(record)) => record.settings.clone(),
        _ => tenant.record().settings.clone(),
    };
    let local = LocalTimes::from_settings(&settings);
    let mut manifest = Manifest {
        format: FORMAT,
        tenant_id: tenant.id().to_string(),
        slug: tenant.slug().to_string(),
        schema_version: 0,
        tenantd_version: env!("CARGO_PKG_VERSION"),
        exported_at: now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        tables: Default::default(),
        audit_entries: 0,
        files: 0,
        files_missing: 0,
        timezone: local.timezone_name.clone(),
        date_format: local.date_format.clone(),
        locale: settings
            .get("locale")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_LOCALE)
            .to_string(),
    };

    zip.start_file("README.md", options)?;
    zip.write_all(ARCHIVE_README.as_bytes())?;

    let mut hashes: Vec<String> = Vec::new();
    {
        // A deferred transaction rolled back on drop: it takes its snapshot at the first read
        // below and keeps it to the last table, whatever writers do meanwhile.
        let tx = conn.unchecked_transaction()?;
        manifest.schema_version = db::schema_version(&tx)?;
        zip.start_file("schema.sql", options)?;
        let mut tables = Vec::new();
        {
            let mut stmt = tx.prepare(
                "SELECT type, name, sql FROM sqlite_schema
                 WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
                 ORDER BY CASE type WHEN 'table' THEN 0 ELSE 1 END, name",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let kind: String = row.get(0)?;
                let name: String = row.get(1)?;
                let sql: String = row.get(2)?;
                writeln!(zip, "{sql};\n")?;
                if kind == "table" {
                    tables.push(name);
                }
            }
        }
        let has_files = tables.iter().any(|t| t == "files");
        for table in tables {
            zip.start_file(format!("tables/{table}.jsonl"), options)?;
            let mut stmt = tx.prepare(&format!("SELECT * FROM {}", quote(&table)))?;
            let rows = write_rows(&mut stmt, [], &mut zip)?;
            // Beside the table, not in it: its rows stay exactly the columns, which is what
            // `tenants import` (of any version) reads back.
            if !time_columns(&tx, &table)?.1.is_empty() {
                zip.start_file(format!("local/{table}.jsonl"), options)?;
                write_local_times(&tx, &table, &local, &mut zip)?;
            }
            manifest.tables.insert(table, rows);
        }
        if has_files {
            let mut stmt = tx.prepare("SELECT DISTINCT sha256 FROM files ORDER BY sha256")?;
            hashes = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
        }
    }
    drop(conn);
    // After the read transaction: copying files can take long, and the tenant's log could not
    // be checkpointed meanwhile. Contents never change, so the names read above still hold.
    write_files(&hashes, tenant, &mut zip, options, &mut manifest)?;

    write_catalog(catalog, tenant, &mut zip, options, &mut manifest)?;

    zip.start_file("manifest.json", options)?;
    serde_json::to_writer_pretty(&mut zip, &manifest)?;
    zip.write_all(b"\n")?;
    let mut out: StreamWriter<Fuse<W>> = zip.finish()?;
    out.flush()?;
    Ok(manifest)
}

/// The bytes of every file the `files` table names, once per content, as `files/<sha256>`
/// (stored, not compressed again: most are compressed formats already). A file deleted since
/// its row was read is no longer there and is left out, as the manifest's `files_missing`
/// says.
fn write_files<W: Write>(
    hashes: &[String],
    tenant: &Tenant,
    zip: &mut ZipWriter<StreamWriter<Fuse<W>>>,
    options: SimpleFileOptions,
    manifest: &mut Manifest,
) -> Result<(), ExportError> {
    let dir = tenant.files_dir();
    let stored = options.compression_method(CompressionMethod::Stored);
    for sha in hashes {
        let opened = super::content_path(&dir, sha).and_then(|path| fs::File::open(path).ok());
        let Some(mut file) = opened else {
            manifest.files_missing += 1;
            continue;
        };
        zip.start_file(format!("files/{sha}"), stored)?;
        io::copy(&mut file, zip)?;
        manifest.files += 1;
    }
    Ok(())
}

/// The archive's writer: after its first error (a client gone) it takes and drops everything,
/// so that the zip writer, which finishes the archive when dropped, does so quietly into
/// nothing rather than failing again and saying so on standard error.
struct Fuse<W> {
    inner: W,
    broken: bool,
}

impl<W: Write> Write for Fuse<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.broken {
            return Ok(buf.len());
        }
        self.inner.write(buf).inspect_err(|_| self.broken = true)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.broken {
            return Ok(());
        }
        self.inner.flush().inspect_err(|_| self.broken = true)
    }
}

/// Zip entries carry a local date and time without a zone: ours are UTC, like everything else.
fn zip_time(
    t: chrono::DateTime<chrono::Utc>,
) -> Result<zip::DateTime, zip::result::DateTimeRangeError> {
    use chrono::{Datelike, Timelike};
    let small = |n: u32| u8::try_from(n).unwrap_or(0);
    zip::DateTime::from_date_and_time(
        u16::try_from(t.year()).unwrap_or(1980),
        small(t.month()),
        small(t.day()),
        small(t.hour()),
        small(t.minute()),
        small(t.second()),
    )
}

fn write_catalog<W: Write>(
    catalog: &Catalog,
    tenant: &Tenant,
    zip: &mut ZipWriter<StreamWriter<Fuse<W>>>,
    options: SimpleFileOptions,
    manifest: &mut Manifest,
) -> Result<(), ExportError> {
    let record = tenant.record();
    zip.start_file("catalog/tenant.json", options)?;
    let mut shown = serde_json::to_value(record.as_ref())?;
    if let Some(object) = shown.as_object_mut() {
        object.remove("domains");
    }
    serde_json::to_writer_pretty(&mut *zip, &shown)?;
    zip.write_all(b"\n")?;

    zip.start_file("catalog/domains.jsonl", options)?;
    for domain in &record.domains {
        json_line(zip, domain)?;
    }

    zip.start_file("catalog/members.jsonl", options)?;
    for member in catalog.members(tenant.id())? {
        json_line(zip, &member)?;
    }

    zip.start_file("catalog/roles.jsonl", options)?;
    for role in catalog.roles(tenant.id())? {
        json_line(zip, &role)?;
    }

    // Newest first, a page at a time: the log of a busy tenant is long.
    zip.start_file("catalog/audit.jsonl", options)?;
    let mut filter = AuditFilter {
        tenant_id: Some(tenant.id().to_string()),
        limit: AUDIT_PAGE,
        ..AuditFilter::default()
    };
    loop {
        let page = catalog.audit_query(&filter)?;
        for entry in &page {
            json_line(zip, entry)?;
        }
        manifest.audit_entries += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == AUDIT_PAGE => filter.before_id = Some(last.id),
            _ => break,
        }
    }
    Ok(())
}

fn json_line(out: &mut impl Write, value: &impl Serialize) -> Result<(), ExportError> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// An SQL identifier, quoted.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Writes each row of `stmt` as one JSON object per line, column names as keys; returns how
/// many. BLOBs become `{"base64": "..."}` (standard alphabet, padded), so that they cannot be
/// taken for text.
pub fn write_rows<P: rusqlite::Params>(
    stmt: &mut Statement<'_>,
    params: P,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let mut rows = stmt.query(params)?;
    let mut count = 0;
    while let Some(row) = rows.next()? {
        json_line(out, &row_object(&names, row)?)?;
        count += 1;
    }
    Ok(count)
}

fn row_object(names: &[String], row: &rusqlite::Row<'_>) -> rusqlite::Result<Map<String, Value>> {
    let mut object = Map::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        object.insert(name.clone(), json_value(row.get_ref(i)?));
    }
    Ok(object)
}

fn json_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        // Not finite (SQLite can hold infinities): null, as JSON has no such number.
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => {
            serde_json::json!({ "base64": data_encoding::BASE64.encode(b) })
        }
    }
}

/// What one person wrote in one tenant's file, for their own export: their messages and the
/// orders they created, as rows (the same encoding as the archive's), read in one transaction.
pub fn personal_rows(tenant: &Tenant, user_id: i64) -> Result<(Value, Value), ExportError> {
    let conn = tenant.conn()?;
    let tx = conn.unchecked_transaction()?;
    let messages = rows_of(
        &tx,
        "SELECT * FROM messages WHERE user_id = ?1 ORDER BY id",
        user_id,
    )?;
    let orders = rows_of(
        &tx,
        "SELECT * FROM orders WHERE created_by = ?1 ORDER BY id",
        user_id,
    )?;
    Ok((messages, orders))
}

fn rows_of(conn: &Connection, sql: &str, user_id: i64) -> Result<Value, ExportError> {
    let mut stmt = conn.prepare(sql)?;
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let rows = stmt
        .query_map([user_id], |row| row_object(&names, row).map(Value::Object))?
        .collect::<rusqlite::Result<Vec<Value>>>()?;
    Ok(Value::Array(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BLOBs cannot be taken for text; numbers, text and null are as SQLite holds them.
    #[test]
    fn values_become_json_and_blobs_base64_objects() {
        assert_eq!(
            json_value(ValueRef::Blob(&[0, 255, 16])),
            serde_json::json!({"base64": "AP8Q"})
        );
        assert_eq!(
            json_value(ValueRef::Text(b"AP8Q")),
            serde_json::json!("AP8Q")
        );
        assert_eq!(json_value(ValueRef::Integer(-3)), serde_json::json!(-3));
        assert_eq!(json_value(ValueRef::Real(1.5)), serde_json::json!(1.5));
        assert_eq!(json_value(ValueRef::Real(f64::INFINITY)), Value::Null);
        assert_eq!(json_value(ValueRef::Null), Value::Null);
    }

    /// Times in the company's zone (summer time included) and date format; defaults otherwise.
    #[test]
    fn times_follow_the_companys_time_zone_and_date_format() {
        let at = "2026-07-31T23:30:05.123Z";
        let local = |settings: Value| LocalTimes::from_settings(&settings).format(at);
        assert_eq!(
            local(serde_json::json!({"timezone": "Europe/London", "date_format": "dmy"})),
            Some("01/08/2026 00:30:05 BST".into())
        );
        assert_eq!(
            local(serde_json::json!({"timezone": "America/New_York", "date_format": "mdy"})),
            Some("07/31/2026 19:30:05 EDT".into())
        );
        assert_eq!(
            local(serde_json::json!({})),
            Some("2026-07-31 23:30:05 UTC".into())
        );
        let odd = LocalTimes::from_settings(&serde_json::json!({"timezone": "Mars/Olympus"}));
        assert_eq!(odd.timezone_name, "UTC");
        assert_eq!(odd.format("yesterday"), None);
        assert!(is_time_column("created_at", "TEXT") && is_time_column("at", "TEXT"));
        assert!(!is_time_column("failing_since", "INTEGER") && !is_time_column("cat", "TEXT"));
    }
}
