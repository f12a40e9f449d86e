//! The schema migrations embedded in the binary (`schema/central/*.sql`,
//! `schema/tenant/*.sql`) and the `schema_migrations` table that records
//! which ones a database has.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{now_rfc3339, write, DbError};

#[derive(rust_embed::RustEmbed)]
#[folder = "schema/"]
#[prefix = "schema/"]
struct Schema;

/// One migration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: String,
    /// Path as embedded, e.g. `schema/tenant/0001_init.sql`; errors name it.
    pub file: String,
    pub sql: String,
    /// SHA-256 of `sql`, lower-case hex.
    pub checksum: String,
}

impl Migration {
    /// Parses `file` (`.../NNNN_name.sql`, version > 0, name of `[a-z0-9_]`).
    pub fn new(file: &str, sql: &str) -> Result<Migration, DbError> {
        let bad = || DbError::BadMigrationName {
            file: file.to_string(),
        };
        let base = file.rsplit('/').next().unwrap_or(file);
        let stem = base.strip_suffix(".sql").ok_or_else(bad)?;
        let (digits, name) = stem.split_once('_').ok_or_else(bad)?;
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let version: u32 = digits.parse().map_err(|_| bad())?;
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if version == 0 || !name_ok {
            return Err(bad());
        }
        Ok(Migration {
            version,
            name: name.to_string(),
            file: file.to_string(),
            sql: sql.to_string(),
            checksum: hex::encode(Sha256::digest(sql.as_bytes())),
        })
    }
}

/// The catalog's migrations, sorted by version.
pub fn central_migrations() -> &'static [Migration] {
    static SET: OnceLock<Vec<Migration>> = OnceLock::new();
    SET.get_or_init(|| embedded_set("central"))
}

/// Every tenant database's migrations, sorted by version.
pub fn tenant_migrations() -> &'static [Migration] {
    static SET: OnceLock<Vec<Migration>> = OnceLock::new();
    SET.get_or_init(|| embedded_set("tenant"))
}

fn embedded_set(dir: &str) -> Vec<Migration> {
    // The file set is fixed at build time and a unit test parses every file,
    // so a failure here means the binary itself is broken, not bad input.
    load(dir).unwrap_or_else(|e| panic!("embedded schema/{dir} is invalid: {e}"))
}

/// Every embedded file path, for the test that checks they all parse.
#[cfg(test)]
pub(crate) fn embedded_files() -> Vec<String> {
    Schema::iter().map(|f| f.into_owned()).collect()
}

pub(crate) fn load(dir: &str) -> Result<Vec<Migration>, DbError> {
    let prefix = format!("schema/{dir}/");
    let mut set = Vec::new();
    for file in Schema::iter() {
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let bad = || DbError::BadMigrationName {
            file: file.to_string(),
        };
        if rest.contains('/') {
            return Err(bad());
        }
        let data = Schema::get(&file).ok_or_else(bad)?;
        let sql = std::str::from_utf8(&data.data).map_err(|_| bad())?;
        set.push(Migration::new(&file, sql)?);
    }
    set.sort_by_key(|m| m.version);
    if let Some(pair) = set.windows(2).find(|p| p[0].version == p[1].version) {
        return Err(DbError::BadMigrationName {
            file: pair[1].file.clone(),
        });
    }
    Ok(set)
}

/// What `migrate` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrateReport {
    pub from: u32,
    pub to: u32,
    /// Versions applied by this call (not those another process applied
    /// meanwhile).
    pub applied: Vec<u32>,
}

/// The table of applied migrations, made first on any database, file or sqld namespace.
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TEXT NOT NULL
)";

/// Brings the database up to the last of `migrations`.
///
/// Applied migrations are checked first, so a database whose history differs
/// from the binary's is refused before anything is written. Each pending
/// migration then runs in its own `BEGIN IMMEDIATE` transaction that first
/// re-checks the version is still missing: the write lock serialises
/// concurrent migrators (a live server and `tenantd migrate`), and the loser
/// finds the row and skips. A failure leaves the database at the previous
/// version.
pub fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<MigrateReport, DbError> {
    conn.execute_batch(CREATE_TABLE)?;
    let applied = applied_checksums(conn)?;
    for (version, checksum) in &applied {
        match migrations.iter().find(|m| m.version == *version) {
            None => return Err(DbError::UnknownVersion { version: *version }),
            Some(m) if m.checksum != *checksum => {
                return Err(DbError::ChecksumMismatch {
                    file: m.file.clone(),
                })
            }
            Some(_) => {}
        }
    }
    let from = applied.keys().next_back().copied().unwrap_or(0);

    let mut applied_now = Vec::new();
    for m in migrations {
        if applied.contains_key(&m.version) {
            continue;
        }
        if m.version < from {
            return Err(DbError::OutOfOrder {
                file: m.file.clone(),
                db_version: from,
            });
        }
        if apply_one(conn, m)? {
            applied_now.push(m.version);
        }
    }
    Ok(MigrateReport {
        from,
        to: schema_version(conn)?,
        applied: applied_now,
    })
}

/// Applies `m` unless someone else already has; true if we did.
///
/// A migration whose first line is `-- foreign_keys: off` runs with foreign keys off, as
/// SQLite's way of rebuilding a table needs (dropping the old table must not cascade), and is
/// checked with `PRAGMA foreign_key_check` before it commits.
fn apply_one(conn: &mut Connection, m: &Migration) -> Result<bool, DbError> {
    let keys_off = m.sql.starts_with(FOREIGN_KEYS_OFF);
    if keys_off {
        // Outside the transaction: the pragma is a no-op inside one.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
    }
    let result = apply_in_transaction(conn, m, keys_off);
    if keys_off {
        conn.pragma_update(None, "foreign_keys", "ON")?;
    }
    result
}

const FOREIGN_KEYS_OFF: &str = "-- foreign_keys: off";

fn apply_in_transaction(
    conn: &mut Connection,
    m: &Migration,
    keys_off: bool,
) -> Result<bool, DbError> {
    let result = write(conn, |tx| -> Result<bool, DbError> {
        let existing: Option<String> = tx
            .query_row(
                "SELECT checksum FROM schema_migrations WHERE version = ?1",
                [m.version],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(checksum) = existing {
            return if checksum == m.checksum {
                Ok(false)
            } else {
                Err(DbError::ChecksumMismatch {
                    file: m.file.clone(),
                })
            };
        }
        tx.execute_batch(&m.sql)?;
        if keys_off {
            let broken: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
                .optional()?;
            if let Some(table) = broken {
                return Err(DbError::MigrationFailed {
                    file: m.file.clone(),
                    message: format!("it leaves rows of {table} with no parent"),
                });
            }
        }
        if tx.is_autocommit() {
            return Err(DbError::MigrationFailed {
                file: m.file.clone(),
                message: "the migration ended our transaction (no BEGIN/COMMIT in migration files)"
                    .to_string(),
            });
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![m.version, m.name, m.checksum, now_rfc3339()],
        )?;
        Ok(true)
    });
    result.map_err(|e| match e {
        DbError::ChecksumMismatch { .. } | DbError::MigrationFailed { .. } => e,
        other => DbError::MigrationFailed {
            file: m.file.clone(),
            message: match other {
                DbError::Sqlite(e) => e.to_string(),
                other => other.to_string(),
            },
        },
    })
}

fn applied_checksums(conn: &Connection) -> Result<BTreeMap<u32, String>, DbError> {
    let mut stmt = conn.prepare("SELECT version, checksum FROM schema_migrations")?;
    let rows = stmt.query_map([], |row| Ok((row.get::<_, u32>(0)?, row.get(1)?)))?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (version, checksum) = row?;
        out.insert(version, checksum);
    }
    Ok(out)
}

/// The highest applied migration, 0 for a database that has none.
pub fn schema_version(conn: &Connection) -> Result<u32, DbError> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master
                        WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    let version: u32 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )?;
    Ok(version)
}
