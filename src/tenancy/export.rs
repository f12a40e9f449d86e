//! A tenant's archive (data portability): one zip with every table of its file as JSON Lines,
//! beside them the tables' times as the company reads them (its time zone and date format),
//! the file's schema, the catalog's rows about the tenant and a README. Written as it is read,
//! in one read transaction (`Tenant::read_snapshot`, on a local file or an sqld namespace
//! alike), to any `Write`: an HTTP response, a file. Tables are read a page at a time, so
//! nothing holds a whole table or the whole archive in memory. Also the rows of one tenant's
//! database that one person wrote (`personal_rows`), for their own export.

use std::fmt;
use std::fs;
use std::io::{self, Write};

use serde::Serialize;
use serde_json::{Map, Value};
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

use crate::args;
use crate::catalog::{
    AuditFilter, Catalog, IdentityError, DEFAULT_DATE_FORMAT, DEFAULT_LOCALE, DEFAULT_TIMEZONE,
};
use crate::db::DbError;
use crate::store::{Flow, RowRef, Sql, StoreError, ValueRef};

use super::Tenant;

/// Audit entries read from the catalog per query (its page limit).
const AUDIT_PAGE: usize = 200;

#[derive(Debug)]
pub enum ExportError {
    Db(DbError),
    Store(StoreError),
    Catalog(IdentityError),
    Zip(zip::result::ZipError),
    /// The writer failed: most often the client went away.
    Io(io::Error),
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportError::Db(e) => write!(f, "reading the tenant's file: {e}"),
            ExportError::Store(e) => write!(f, "reading the tenant's database: {e}"),
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

impl From<StoreError> for ExportError {
    fn from(e: StoreError) -> Self {
        ExportError::Store(e)
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

/// A table's columns in order, its key columns (its primary key, else `rowid`) and its time
/// columns.
struct Columns {
    all: Vec<String>,
    keys: Vec<String>,
    times: Vec<String>,
}

fn columns_of(db: &dyn Sql, table: &str) -> Result<Columns, StoreError> {
    let mut all = Vec::new();
    let mut keys: Vec<(i64, String)> = Vec::new();
    let mut times = Vec::new();
    db.query_each(
        "SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid",
        args![table],
        &mut |row| {
            let name: String = row.get(0)?;
            let declared: String = row.get(1)?;
            let pk: i64 = row.get(2)?;
            if pk > 0 {
                keys.push((pk, name.clone()));
            }
            if is_time_column(&name, &declared) {
                times.push(name.clone());
            }
            all.push(name);
            Ok(Flow::Continue(()))
        },
    )?;
    keys.sort();
    let keys = if keys.is_empty() {
        vec!["rowid".to_string()]
    } else {
        keys.into_iter().map(|(_, name)| name).collect()
    };
    Ok(Columns { all, keys, times })
}

/// Rows read per statement: a page of a big table, not the table (on sqld, a statement's
/// answer arrives whole).
const PAGE_ROWS: i64 = 500;

/// Hands every row of `table` (`columns` of it, the key columns first) to `each`, a page at a
/// time in key order: after the last key seen when the key is one column, else by offset.
fn each_page(
    db: &dyn Sql,
    table: &str,
    keys: &[String],
    columns: &[String],
    each: &mut dyn FnMut(&dyn RowRef) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let list: Vec<String> = keys.iter().chain(columns).map(|c| quote(c)).collect();
    let order: Vec<String> = keys.iter().map(|k| quote(k)).collect();
    let (single, order) = (keys.len() == 1, order.join(", "));
    let select = format!("SELECT {} FROM {}", list.join(", "), quote(table));
    let mut after: Option<crate::store::Value> = None;
    let mut offset = 0i64;
    loop {
        let (sql, bound) = match (&after, single) {
            (Some(last), true) => (
                format!("{select} WHERE {order} > ?1 ORDER BY {order} LIMIT {PAGE_ROWS}"),
                vec![last.clone()],
            ),
            (None, true) => (
                format!("{select} ORDER BY {order} LIMIT {PAGE_ROWS}"),
                vec![],
            ),
            (_, false) => (
                format!("{select} ORDER BY {order} LIMIT {PAGE_ROWS} OFFSET ?1"),
                vec![crate::store::Value::Integer(offset)],
            ),
        };
        let mut read = 0;
        let mut failed = None;
        db.query_each(&sql, &bound, &mut |row| {
            read += 1;
            after = Some(row.value(0)?.to_owned());
            match each(row) {
                Ok(()) => Ok(Flow::Continue(())),
                Err(e) => {
                    failed = Some(e);
                    Ok(Flow::Break(()))
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        offset += read;
        if read < PAGE_ROWS {
            return Ok(());
        }
    }
}

/// `local/<table>.jsonl`: per row, its key and each time column as the company reads it.
fn write_local_times(
    db: &dyn Sql,
    table: &str,
    columns: &Columns,
    local: &LocalTimes,
    out: &mut impl Write,
) -> Result<(), ExportError> {
    let keys = &columns.keys;
    each_page(db, table, keys, &columns.times, &mut |row| {
        let mut object = Map::with_capacity(keys.len() + columns.times.len());
        for (i, key) in keys.iter().enumerate() {
            object.insert(key.clone(), json_value(row.value(i)?));
        }
        for (i, time) in columns.times.iter().enumerate() {
            let shown = match row.value(keys.len() + i)? {
                ValueRef::Text(t) => local.format(t).map_or(Value::Null, Value::String),
                _ => Value::Null,
            };
            object.insert(time.clone(), shown);
        }
        json_line(out, &object)
    })
}

/// `tables/<table>.jsonl`: every row as an object of its columns; returns how many.
fn write_table(
    db: &dyn Sql,
    table: &str,
    columns: &Columns,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let mut count = 0;
    let skip = columns.keys.len();
    each_page(db, table, &columns.keys, &columns.all, &mut |row| {
        let mut object = Map::with_capacity(columns.all.len());
        for (i, name) in columns.all.iter().enumerate() {
            object.insert(name.clone(), json_value(row.value(skip + i)?));
        }
        count += 1;
        json_line(out, &object)
    })?;
    Ok(count)
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

    // One read transaction for every table: they agree with each other, whatever writers do
    // meanwhile.
    let hashes = tenant.read_snapshot(|db| -> Result<Vec<String>, ExportError> {
        manifest.schema_version = db
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
                |r| r.get::<i64>(0),
            )
            .map(|v| u32::try_from(v).unwrap_or(0))?;
        zip.start_file("schema.sql", options)?;
        let mut tables = Vec::new();
        let mut schema = Vec::new();
        db.query_each(
            "SELECT type, name, sql FROM sqlite_schema
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
             ORDER BY CASE type WHEN 'table' THEN 0 ELSE 1 END, name",
            &[],
            &mut |row| {
                let kind: String = row.get(0)?;
                let name: String = row.get(1)?;
                schema.push(row.get::<String>(2)?);
                if kind == "table" {
                    tables.push(name);
                }
                Ok(Flow::Continue(()))
            },
        )?;
        for sql in &schema {
            writeln!(zip, "{sql};\n")?;
        }
        let has_files = tables.iter().any(|t| t == "files");
        for table in tables {
            let columns = columns_of(db, &table)?;
            zip.start_file(format!("tables/{table}.jsonl"), options)?;
            let rows = write_table(db, &table, &columns, &mut zip)?;
            // Beside the table, not in it: its rows stay exactly the columns, which is what
            // `tenants import` (of any version) reads back.
            if !columns.times.is_empty() {
                zip.start_file(format!("local/{table}.jsonl"), options)?;
                write_local_times(db, &table, &columns, &local, &mut zip)?;
            }
            manifest.tables.insert(table, rows);
        }
        if !has_files {
            return Ok(Vec::new());
        }
        Ok(db.query_map(
            "SELECT DISTINCT sha256 FROM files ORDER BY sha256",
            &[],
            |r| r.get::<String>(0),
        )?)
    })?;
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

/// One row as an object of `names`, BLOBs as `{"base64": "..."}` (standard alphabet, padded),
/// so that they cannot be taken for text.
fn row_object(names: &[String], row: &dyn RowRef) -> Result<Map<String, Value>, StoreError> {
    let mut object = Map::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        object.insert(name.clone(), json_value(row.value(i)?));
    }
    Ok(object)
}

fn json_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        // Not finite (SQLite can hold infinities): null, as JSON has no such number.
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(t.to_string()),
        ValueRef::Blob(b) => {
            serde_json::json!({ "base64": data_encoding::BASE64.encode(b) })
        }
    }
}

/// What one person wrote in one tenant's database, for their own export: their messages and
/// the orders they created, as rows (the same encoding as the archive's), read in one
/// transaction.
pub fn personal_rows(tenant: &Tenant, user_id: i64) -> Result<(Value, Value), ExportError> {
    tenant.read_snapshot(|db| {
        let messages = rows_of(db, "messages", "user_id", user_id)?;
        let orders = rows_of(db, "orders", "created_by", user_id)?;
        Ok((messages, orders))
    })
}

/// The rows of `table` whose `column` is `user_id`, by id.
fn rows_of(db: &dyn Sql, table: &str, column: &str, user_id: i64) -> Result<Value, ExportError> {
    let names = columns_of(db, table)?.all;
    let list: Vec<String> = names.iter().map(|c| quote(c)).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = ?1 ORDER BY id",
        list.join(", "),
        quote(table),
        quote(column)
    );
    let rows = db.query_map(&sql, args![user_id], |row| {
        row_object(&names, row).map(Value::Object)
    })?;
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
            json_value(ValueRef::Text("AP8Q")),
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
