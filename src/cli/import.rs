//! `tenantd tenants import`: an existing SQLite file with the tenant schema, or an export
//! archive rebuilt into one, brought in as a new tenant, checked and copied as `restore --as`
//! does it (`backup::restore_as`), with a new id written into the copy's `tenant_meta`. Safe beside a running server: nothing it holds is
//! touched, and the new tenant becomes active only once its file is in place.

use std::path::Path;
use std::sync::Arc;

use crate::catalog::{validate_name, Catalog, TenantRecord};
use crate::db::{self, Create, DbKind};
use crate::tenancy::backup::{self, BackupError};
use crate::tenancy::export::FORMAT;
use crate::tenancy::lifecycle::{self, tenant_target_version, Rename};

use super::tenants::CommandError;

/// Imports `from` as the new tenant `slug`, named `name` (else as the file says).
pub(super) fn import(
    catalog: &Catalog,
    slug: &str,
    from: &Path,
    name: Option<&str>,
) -> Result<Arc<TenantRecord>, CommandError> {
    let failed =
        |why: String| CommandError::Operation(format!("import of {}: {why}", from.display()));
    let name = name
        .map(validate_name)
        .transpose()
        .map_err(|e| failed(e.to_string()))?;
    let is_archive = from
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"));
    let copied = if is_archive {
        // Rebuilt into a directory of its own first (the database, its files in `files/`
        // beside it), then brought in as a backup is.
        let work = catalog
            .data_dir()
            .join(format!("import-{}", uuid::Uuid::new_v4().simple()));
        let built = work.join("tenant.db");
        let result = std::fs::create_dir(&work)
            .map_err(|e| BackupError::Refused(format!("cannot make {}: {e}", work.display())))
            .and_then(|()| rebuild(from, &built))
            .and_then(|()| backup::restore_as(catalog, &built, slug));
        if let Err(e) = db::remove_database_files(&built) {
            log::warn!("import: {} not removed: {e}", built.display());
        }
        if let Err(e) = std::fs::remove_dir_all(&work) {
            log::warn!("import: {} not removed: {e}", work.display());
        }
        result
    } else {
        backup::restore_as(catalog, from, slug)
    };
    if let Err(e) = copied {
        return Err(failed(match e {
            BackupError::NotFound(_) => "no such file".into(),
            BackupError::Refused(why) => format!("refused: {why}"),
            other => other.to_string(),
        }));
    }
    match name {
        Some(name) => {
            let change = Rename {
                slug: None,
                name: Some(name),
            };
            Ok(lifecycle::rename(catalog, None, slug, &change)?.after)
        }
        None => Ok(lifecycle::show(catalog, slug)?),
    }
}

/// The most of `manifest.json` read: a real one is a few hundred bytes.
const MAX_MANIFEST: u64 = 1 << 20;
/// The longest row line read: rows hold texts of at most 10,000 characters today.
const MAX_LINE: u64 = 16 << 20;
/// The largest file taken from an archive: the most an upload may be.
const MAX_FILE: u64 = 2 << 30;

/// Makes the tenant database `out` from an export archive (`tenancy::export`): this binary's
/// own migrations up to the archive's schema version (never the archive's `schema.sql`, which
/// is only SQL someone handed over), then every `tables/<table>.jsonl` row into its table.
/// What comes out is checked as any imported file is.
fn rebuild(archive: &Path, out: &Path) -> Result<(), BackupError> {
    let refused = |why: String| BackupError::Refused(why);
    let file = std::fs::File::open(archive).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BackupError::NotFound(archive.display().to_string()),
        _ => refused(format!("cannot read it: {e}")),
    })?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| refused(format!("not a zip archive: {e}")))?;
    let manifest: serde_json::Value = {
        let entry = zip
            .by_name("manifest.json")
            .map_err(|_| refused("not a tenantd export (no manifest.json)".into()))?;
        // An archive is someone's file: nothing of it is read without a bound.
        serde_json::from_reader(std::io::Read::take(entry, MAX_MANIFEST))
            .map_err(|e| refused(format!("manifest.json cannot be read: {e}")))?
    };
    if manifest["format"] != FORMAT {
        return Err(refused(format!(
            "not a tenantd export of format {FORMAT} (manifest.json says {})",
            manifest["format"]
        )));
    }
    let version = manifest["schema_version"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| refused("manifest.json has no schema_version".into()))?;
    if version > tenant_target_version() {
        return Err(refused(format!(
            "its schema version {version} is newer than this binary's ({})",
            tenant_target_version()
        )));
    }
    let mut conn = db::open(out, DbKind::Tenant, Create::New)?;
    let all = db::tenant_migrations();
    let known = all.iter().take_while(|m| m.version <= version).count();
    db::migrate(&mut conn, &all[..known])?;
    if db::schema_version(&conn)? != version {
        return Err(refused(format!(
            "schema version {version} is not one this binary has"
        )));
    }
    // Tables come in name order, not in the order their references need.
    conn.pragma_update(None, "foreign_keys", false)?;
    let tx = conn.transaction()?;
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .map_err(|e| refused(format!("entry {i}: {e}")))?;
        let name = entry.name().map(|n| n.to_string()).unwrap_or_default();
        if let Some(sha) = name.strip_prefix("files/") {
            // Only the contents the archive's own `files` rows name, and only at the size they
            // say: an archive cannot make the import write more than its table declares.
            let size: Option<i64> = if columns_of(&tx, "files")?.is_empty() {
                None
            } else {
                tx.query_row(
                    "SELECT max(size) FROM files WHERE sha256 = ?1",
                    [sha],
                    |r| r.get(0),
                )?
            };
            let Some(size) = size else {
                continue;
            };
            let store = out.parent().expect("a file in a directory").join("files");
            take_file(entry, sha, size as u64, &store)
                .map_err(|why| refused(format!("{name}: {why}")))?;
            continue;
        }
        let Some(table) = name
            .strip_prefix("tables/")
            .and_then(|n| n.strip_suffix(".jsonl"))
        else {
            continue;
        };
        // The migrations made and filled it, exactly.
        if table == "schema_migrations" {
            continue;
        }
        let columns = columns_of(&tx, table)?;
        if columns.is_empty() {
            return Err(refused(format!(
                "{name}: no table {table} in schema {version}"
            )));
        }
        let mut reader = std::io::BufReader::new(entry);
        let mut line = Vec::new();
        for n in 0.. {
            line.clear();
            let read = std::io::BufRead::read_until(
                &mut std::io::Read::take(&mut reader, MAX_LINE + 1),
                b'\n',
                &mut line,
            )
            .map_err(|e| refused(format!("{name}: {e}")))?;
            if read == 0 {
                break;
            }
            if line.len() as u64 > MAX_LINE {
                return Err(refused(format!(
                    "{name} line {}: longer than {} MiB",
                    n + 1,
                    MAX_LINE >> 20
                )));
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            let row: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&line)
                .map_err(|e| refused(format!("{name} line {}: {e}", n + 1)))?;
            insert_row(&tx, table, &columns, &row)
                .map_err(|why| refused(format!("{name} line {}: {why}", n + 1)))?;
        }
    }
    tx.commit()?;
    let broken: i64 = conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
        r.get(0)
    })?;
    if broken > 0 {
        return Err(refused(format!(
            "{broken} rows refer to rows the archive does not hold"
        )));
    }
    conn.close().map_err(|(_, e)| BackupError::from(e))?;
    Ok(())
}

/// Writes the bytes of an archive's `files/<sha256>` entry under `store`, by that name only if
/// they hash to it and are `size` bytes.
fn take_file(entry: impl std::io::Read, sha: &str, size: u64, store: &Path) -> Result<(), String> {
    use sha2::Digest;
    use std::io::{Read, Write};
    let Some(target) = crate::tenancy::content_path(store, sha) else {
        return Err("not named by a SHA-256".into());
    };
    let dir = target.parent().expect("a content has a directory");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut out = std::fs::File::create(&target).map_err(|e| e.to_string())?;
    let mut hasher = sha2::Sha256::new();
    let expected = size;
    if expected > MAX_FILE {
        return Err(format!("larger than {} MiB", MAX_FILE >> 20));
    }
    let mut reader = std::io::Read::take(entry, expected + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > expected {
            return Err(format!("longer than the {expected} bytes its row says"));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
    out.sync_all().map_err(|e| e.to_string())?;
    if size != expected {
        return Err(format!("{size} bytes, where its row says {expected}"));
    }
    if hex::encode(hasher.finalize()) != sha {
        return Err("its bytes do not hash to its name".into());
    }
    Ok(())
}

fn columns_of(conn: &rusqlite::Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt.query_map([table], |r| r.get(0))?;
    names.collect()
}

/// One row; a seeded row the archive also holds (a counter) takes the archive's values.
fn insert_row(
    conn: &rusqlite::Connection,
    table: &str,
    columns: &[String],
    row: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    use rusqlite::types::Value as Sql;
    let mut names = Vec::with_capacity(row.len());
    let mut values = Vec::with_capacity(row.len());
    for (column, value) in row {
        if !columns.contains(column) {
            return Err(format!("no column {column} in {table}"));
        }
        names.push(quote(column));
        values.push(match value {
            serde_json::Value::Null => Sql::Null,
            serde_json::Value::Bool(b) => Sql::Integer(i64::from(*b)),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Sql::Integer(i),
                (None, Some(f)) => Sql::Real(f),
                _ => return Err(format!("{column}: {n} is out of range")),
            },
            serde_json::Value::String(t) => Sql::Text(t.clone()),
            serde_json::Value::Object(o) => match o.get("base64").and_then(|b| b.as_str()) {
                Some(b) if o.len() == 1 => Sql::Blob(
                    data_encoding::BASE64
                        .decode(b.as_bytes())
                        .map_err(|e| format!("{column}: {e}"))?,
                ),
                _ => {
                    return Err(format!(
                        "{column}: an object other than {{\"base64\": ...}}"
                    ))
                }
            },
            serde_json::Value::Array(_) => return Err(format!("{column}: an array")),
        });
    }
    let sql = format!(
        "INSERT OR REPLACE INTO {} ({}) VALUES ({})",
        quote(table),
        names.join(", "),
        vec!["?"; names.len()].join(", ")
    );
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(values)))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// An SQL identifier: the table and column names checked against the schema above.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
