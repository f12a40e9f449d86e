use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;

use rusqlite::Connection;

use super::migrations::{embedded_files, load};
use super::*;

fn pragma_text(conn: &Connection, name: &str) -> String {
    conn.query_row(&format!("PRAGMA {name}"), [], |row| {
        row.get::<_, rusqlite::types::Value>(0)
    })
    .map(|v| match v {
        rusqlite::types::Value::Integer(i) => i.to_string(),
        rusqlite::types::Value::Text(s) => s,
        other => format!("{other:?}"),
    })
    .unwrap()
}

fn assert_attach_refused(conn: &Connection, dir: &Path) {
    let other = dir.join("other.db");
    let err = conn
        .execute_batch(&format!("ATTACH DATABASE '{}' AS other", other.display()))
        .unwrap_err();
    assert!(err.to_string().contains("too many attached"), "{err}");
    assert!(!other.exists());
}

#[test]
fn connection_init_pragmas_are_in_effect() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(&dir.path().join("c.db"), DbKind::Catalog, Create::IfMissing).unwrap();
    assert_eq!(pragma_text(&catalog, "journal_mode"), "wal");
    assert_eq!(pragma_text(&catalog, "foreign_keys"), "1");
    assert_eq!(pragma_text(&catalog, "trusted_schema"), "0");
    assert_eq!(pragma_text(&catalog, "synchronous"), "2"); // FULL
    assert_eq!(pragma_text(&catalog, "busy_timeout"), "5000");
    assert_attach_refused(&catalog, dir.path());

    let path = dir.path().join("t.db");
    let tenant = open(&path, DbKind::Tenant, Create::New).unwrap();
    assert_eq!(pragma_text(&tenant, "journal_mode"), "wal");
    assert_eq!(pragma_text(&tenant, "synchronous"), "1"); // NORMAL
    assert_eq!(pragma_text(&tenant, "cache_size"), "-1024");
    assert_attach_refused(&tenant, dir.path());

    // Pooled connections get the same treatment.
    let threads = thread_pool(1);
    let pool = pool(&path, DbKind::Tenant, &PoolConfig::default(), &threads).unwrap();
    let conn = pool.get().unwrap();
    assert_eq!(pragma_text(&conn, "journal_mode"), "wal");
    assert_eq!(pragma_text(&conn, "foreign_keys"), "1");
    assert_eq!(pragma_text(&conn, "trusted_schema"), "0");
    assert_eq!(pragma_text(&conn, "synchronous"), "1");
    assert_eq!(pragma_text(&conn, "cache_size"), "-1024");
    assert_attach_refused(&conn, dir.path());
}

/// `.cargo/config.toml` builds the bundled SQLite without two process-wide mutexes (see
/// there); a build that lost those settings is slower on every query, in every thread.
#[test]
fn sqlite_is_built_without_process_wide_mutexes() {
    let conn = Connection::open_in_memory().unwrap();
    let options: Vec<String> = conn
        .prepare("PRAGMA compile_options")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
        "{options:?}"
    );
    for wanted in ["DEFAULT_MEMSTATUS=0", "DEFAULT_PCACHE_INITSZ=0"] {
        assert!(options.iter().any(|o| o == wanted), "{wanted}: {options:?}");
    }
}

#[test]
fn missing_file_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.db");
    match open(&path, DbKind::Tenant, Create::Never) {
        Err(DbError::Missing(p)) => assert_eq!(p, path),
        other => panic!("expected Missing, got {other:?}"),
    }
    let threads = thread_pool(1);
    assert!(matches!(
        pool(&path, DbKind::Tenant, &PoolConfig::default(), &threads),
        Err(DbError::Missing(_))
    ));
    assert!(!path.exists());
    // A directory is not a database either.
    assert!(matches!(
        open(dir.path(), DbKind::Tenant, Create::Never),
        Err(DbError::Missing(_))
    ));
}

#[test]
fn create_new_refuses_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        open(&path, DbKind::Tenant, Create::New),
        Err(DbError::Exists(_))
    ));
}

#[test]
fn open_new_on_garbage_cleans_up_nothing_it_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![7u8; 4096]).unwrap();
    assert!(matches!(
        open(&path, DbKind::Tenant, Create::Never),
        Err(DbError::Sqlite(_))
    ));
    assert!(path.exists());
}

#[test]
fn every_embedded_schema_file_parses() {
    let files = embedded_files();
    assert!(!files.is_empty());
    for file in &files {
        assert!(
            file.starts_with("schema/central/") || file.starts_with("schema/tenant/"),
            "unexpected embedded file {file}"
        );
    }
    for dir in ["central", "tenant"] {
        let set = load(dir).unwrap();
        assert!(!set.is_empty());
        // Versions run 1, 2, 3, ... with no gaps.
        for (i, m) in set.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.file);
            assert!(m.file.starts_with(&format!("schema/{dir}/")));
            assert_eq!(m.checksum.len(), 64);
        }
    }
    assert_eq!(
        central_migrations()[0].file,
        "schema/central/0001_catalog.sql"
    );
    assert_eq!(tenant_migrations()[0].file, "schema/tenant/0001_init.sql");
}

#[test]
fn migration_file_names() {
    let good = Migration::new("schema/tenant/0012_add_orders.sql", "SELECT 1;").unwrap();
    assert_eq!(good.version, 12);
    assert_eq!(good.name, "add_orders");
    for bad in [
        "schema/tenant/0000_zero.sql",
        "schema/tenant/1_short.sql",
        "schema/tenant/00001_long.sql",
        "schema/tenant/0001.sql",
        "schema/tenant/0001_.sql",
        "schema/tenant/0001_Upper.sql",
        "schema/tenant/0001_name.txt",
        "schema/tenant/abcd_name.sql",
        "schema/tenant/0001_na-me.sql",
    ] {
        assert!(
            matches!(
                Migration::new(bad, ""),
                Err(DbError::BadMigrationName { .. })
            ),
            "{bad} should be refused"
        );
    }
}

fn m(version: u32, sql: &str) -> Migration {
    Migration::new(&format!("schema/test/{version:04}_step.sql"), sql).unwrap()
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

#[test]
fn migrations_apply_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("t.db"), DbKind::Tenant, Create::New).unwrap();
    assert_eq!(schema_version(&conn).unwrap(), 0);
    let set = [m(1, "CREATE TABLE a (x);"), m(2, "CREATE TABLE b (x);")];

    let first = migrate(&mut conn, &set).unwrap();
    assert_eq!(
        first,
        MigrateReport {
            from: 0,
            to: 2,
            applied: vec![1, 2]
        }
    );
    let again = migrate(&mut conn, &set).unwrap();
    assert_eq!(
        again,
        MigrateReport {
            from: 2,
            to: 2,
            applied: vec![]
        }
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM schema_migrations"), 2);
    let stored: String = conn
        .query_row(
            "SELECT checksum FROM schema_migrations WHERE version = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, set[1].checksum);

    // A later binary adds a migration: only that one runs.
    let mut longer = set.to_vec();
    longer.push(m(3, "CREATE TABLE c (x);"));
    let report = migrate(&mut conn, &longer).unwrap();
    assert_eq!((report.from, report.to, report.applied), (2, 3, vec![3]));
}

#[test]
fn checksum_mismatch_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("t.db"), DbKind::Tenant, Create::New).unwrap();
    migrate(&mut conn, &[m(1, "CREATE TABLE a (x);")]).unwrap();
    let edited = [m(1, "CREATE TABLE a (x, y);"), m(2, "CREATE TABLE b (x);")];
    let err = migrate(&mut conn, &edited).unwrap_err();
    match &err {
        DbError::ChecksumMismatch { file } => assert_eq!(file, "schema/test/0001_step.sql"),
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("schema/test/0001_step.sql"));
    // Refused before anything was written.
    assert_eq!(schema_version(&conn).unwrap(), 1);
}

#[test]
fn failing_migration_leaves_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("t.db"), DbKind::Tenant, Create::New).unwrap();
    let set = [
        m(1, "CREATE TABLE a (x);"),
        m(2, "CREATE TABLE b (x); INSERT INTO nowhere VALUES (1);"),
        m(3, "CREATE TABLE c (x);"),
    ];
    let err = migrate(&mut conn, &set).unwrap_err();
    match &err {
        DbError::MigrationFailed { file, message } => {
            assert_eq!(file, "schema/test/0002_step.sql");
            assert!(message.contains("no such table"), "{message}");
        }
        other => panic!("expected MigrationFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("0002_step.sql"));
    assert_eq!(schema_version(&conn).unwrap(), 1);
    // The half-run migration left nothing behind.
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_master WHERE name IN ('b', 'c')"
        ),
        0
    );
}

#[test]
fn database_newer_than_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("t.db"), DbKind::Tenant, Create::New).unwrap();
    let set = [m(1, "CREATE TABLE a (x);"), m(2, "CREATE TABLE b (x);")];
    migrate(&mut conn, &set).unwrap();
    assert!(matches!(
        migrate(&mut conn, &set[..1]),
        Err(DbError::UnknownVersion { version: 2 })
    ));
}

#[test]
fn skipped_old_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("t.db"), DbKind::Tenant, Create::New).unwrap();
    migrate(
        &mut conn,
        &[m(1, "CREATE TABLE a (x);"), m(3, "CREATE TABLE c (x);")],
    )
    .unwrap();
    let set = [
        m(1, "CREATE TABLE a (x);"),
        m(2, "CREATE TABLE b (x);"),
        m(3, "CREATE TABLE c (x);"),
    ];
    assert!(matches!(
        migrate(&mut conn, &set),
        Err(DbError::OutOfOrder { db_version: 3, .. })
    ));
}

#[test]
fn concurrent_migrators_apply_each_migration_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    // Bookkeeping table first, so that no thread's CREATE TABLE IF NOT
    // EXISTS queues it behind the first migrator.
    migrate(&mut open(&path, DbKind::Tenant, Create::New).unwrap(), &[]).unwrap();
    // Plain CREATE TABLE: running any of these twice would fail. The first
    // is slow so that every thread has read "nothing applied" before the
    // first commit lands.
    let slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
                INSERT INTO t1 SELECT i FROM n;";
    let set: Arc<Vec<Migration>> = Arc::new(
        (1..=5)
            .map(|v| {
                let fill = if v == 1 {
                    slow.to_string()
                } else {
                    format!("INSERT INTO t{v} VALUES ({v});")
                };
                m(v, &format!("CREATE TABLE t{v} (x); {fill}"))
            })
            .collect(),
    );
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (path, set, barrier) = (path.clone(), Arc::clone(&set), Arc::clone(&barrier));
            thread::spawn(move || {
                let mut conn = open(&path, DbKind::Tenant, Create::Never).unwrap();
                barrier.wait();
                migrate(&mut conn, &set).unwrap()
            })
        })
        .collect();
    let mut applied: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap().applied)
        .collect();
    applied.sort_unstable();
    assert_eq!(applied, vec![1, 2, 3, 4, 5]);
    let conn = open(&path, DbKind::Tenant, Create::Never).unwrap();
    assert_eq!(count(&conn, "SELECT count(*) FROM schema_migrations"), 5);
    assert_eq!(count(&conn, "SELECT count(*) FROM t1"), 100_000);
    assert_eq!(count(&conn, "SELECT count(*) FROM t3"), 1);
}

#[test]
fn write_commits_or_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("t.db"), DbKind::Tenant, Create::New).unwrap();
    conn.execute_batch("CREATE TABLE a (x)").unwrap();
    write(&mut conn, |tx| {
        tx.execute("INSERT INTO a VALUES (1)", []).map(|_| ())
    })
    .unwrap();
    let failed: Result<(), DbError> = write(&mut conn, |tx| {
        tx.execute("INSERT INTO a VALUES (2)", [])?;
        Err(DbError::Missing("stop".into()))
    });
    assert!(failed.is_err());
    assert_eq!(count(&conn, "SELECT count(*) FROM a"), 1);
    assert!(conn.is_autocommit());
}

#[test]
fn remove_database_files_takes_all_three() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = open(&path, DbKind::Tenant, Create::New).unwrap();
    conn.execute_batch("CREATE TABLE a (x); INSERT INTO a VALUES (1);")
        .unwrap();
    for file in database_files(&path) {
        assert!(file.exists(), "{}", file.display());
    }
    drop(conn);
    remove_database_files(&path).unwrap();
    for file in database_files(&path) {
        assert!(!file.exists(), "{}", file.display());
    }
    // Already gone is fine.
    remove_database_files(&path).unwrap();
}

#[test]
fn the_wal_probe_moves_with_every_commit_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let writer = open(&path, DbKind::Tenant, Create::IfMissing).unwrap();
    writer.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    let probe = probe::WalProbe::attach(&writer).expect("a WAL database has a wal-index");
    // A second process would see the same file; a second connection is the same test.
    let reader = open(&path, DbKind::Tenant, Create::Never).unwrap();

    let before = probe.read();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(probe.read(), before, "reads leave the header alone");

    for i in 0..3 {
        let seen = probe.read();
        writer.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        assert_ne!(probe.read(), seen, "commit {i} moved the header");
    }
    // A checkpoint that restarts the log, then one more commit: still seen.
    writer
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let seen = probe.read();
    writer.execute("INSERT INTO t VALUES (9)", []).unwrap();
    assert_ne!(probe.read(), seen);
    // Commits by a connection that opens and closes around them, as another process's would.
    for i in 0..3 {
        let seen = probe.read();
        let other = open(&path, DbKind::Tenant, Create::Never).unwrap();
        other.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        drop(other);
        assert_ne!(probe.read(), seen, "commit {i} of a passing connection");
    }

    let memory = rusqlite::Connection::open_in_memory().unwrap();
    assert!(
        probe::WalProbe::attach(&memory).is_none(),
        "no WAL, no probe"
    );
}

/// Whether this process holds a POSIX lock on `byte` of `file`, as `/proc/locks` lists its
/// locks: `N: POSIX ADVISORY READ|WRITE PID MAJOR:MINOR:INODE START END`.
fn holds_lock_on(file: &Path, byte: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(file).unwrap().ino().to_string();
    let pid = std::process::id().to_string();
    // In one read(2): the kernel lists the locks under its lock, while a read in pieces (as
    // read_to_string does) may skip or repeat lines when other processes' locks change between
    // the pieces.
    let mut buf = vec![0u8; 4 << 20];
    let n =
        std::io::Read::read(&mut std::fs::File::open("/proc/locks").unwrap(), &mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8 && f[1] == "POSIX" && f[4] == pid)
        .filter(|f| f[5].rsplit(':').next() == Some(inode.as_str()))
        .any(|f| {
            let start: u64 = f[6].parse().unwrap_or(u64::MAX);
            let end: u64 = f[7].parse().unwrap_or(0);
            start <= byte && byte <= end
        })
}

/// The byte of the `-shm` file on which every connection of a process holds a shared lock
/// (SQLite's "DMS" lock): a process that can take it exclusively believes it is the only one
/// and rebuilds the WAL index.
const SHM_DMS_BYTE: u64 = 128;

#[test]
fn attaching_a_probe_leaves_sqlites_locks_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let conn = open(&path, DbKind::Tenant, Create::IfMissing).unwrap();
    conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    let mut shm = path.as_os_str().to_os_string();
    shm.push("-shm");
    let shm = std::path::PathBuf::from(shm);
    assert!(
        holds_lock_on(&shm, SHM_DMS_BYTE),
        "SQLite holds its lock on the -shm while connected"
    );
    let probe = probe::WalProbe::attach(&conn).expect("a probe");
    let _ = probe.read();
    assert!(holds_lock_on(&shm, SHM_DMS_BYTE), "the probe dropped it");
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn reading_a_closed_file_leaves_no_companions_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Characters a URI would read as its own.
    let dir = dir.path().join("a%20b?c#d");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("t.db");
    let mut conn = open(&path, DbKind::Tenant, Create::New).unwrap();
    migrate(
        &mut conn,
        &[m(1, "CREATE TABLE a (x);"), m(2, "CREATE TABLE b (y);")],
    )
    .unwrap();
    drop(conn);
    assert_eq!(files_in(&dir), ["t.db"]);
    let before = std::fs::read(&path).unwrap();

    let conn = open_read_only(&path).unwrap();
    assert_eq!(schema_version(&conn).unwrap(), 2);
    assert!(conn.execute_batch("CREATE TABLE c (z)").is_err());
    drop(conn);
    assert_eq!(files_in(&dir), ["t.db"], "no -wal or -shm made");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    match open_read_only(&dir.join("nope.db")) {
        Err(DbError::Missing(_)) => {}
        other => panic!("expected Missing, got {other:?}"),
    }
    assert_eq!(files_in(&dir), ["t.db"]);
}

#[test]
fn reading_beside_a_writer_sees_its_commits_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut writer = open(&path, DbKind::Tenant, Create::New).unwrap();
    migrate(&mut writer, &[m(1, "CREATE TABLE a (x);")]).unwrap();
    migrate(
        &mut writer,
        &[m(1, "CREATE TABLE a (x);"), m(2, "CREATE TABLE b (y);")],
    )
    .unwrap();
    // Committed to the log, not yet copied into the file (tenant connections never
    // checkpoint on their own).
    let conn = open_read_only(&path).unwrap();
    assert_eq!(schema_version(&conn).unwrap(), 2);
    drop(conn);
    // The writer's connection still works and still holds its file.
    writer.execute_batch("INSERT INTO a VALUES (1)").unwrap();
    assert!(database_files(&path).iter().all(|f| f.exists()));
}

/// The jobs migration rebuilds `tenants` (to widen its status CHECK): a catalog made before it
/// keeps its tenants, their domains and memberships, and the rebuilt table is still the parent
/// those rows cascade from.
#[test]
fn rebuilding_the_tenants_table_keeps_what_hangs_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("central.db"), DbKind::Catalog, Create::New).unwrap();
    let all = central_migrations();
    let before = all
        .iter()
        .position(|m| m.file.contains("jobs"))
        .expect("the jobs migration");
    migrate(&mut conn, &all[..before]).unwrap();
    conn.execute_batch(
        "INSERT INTO tenants (id, slug, name, created_at, updated_at)
             VALUES ('00000000-0000-4000-8000-000000000001', 'acme', 'Acme', 'now', 'now');
         INSERT INTO domains (domain, tenant_id, is_primary)
             VALUES ('acme.test', '00000000-0000-4000-8000-000000000001', 1);
         INSERT INTO users (email, name, surname, password_hash, created_at, updated_at)
             VALUES ('a@acme.test', 'A', 'B', 'x', 'now', 'now');
         INSERT INTO roles (tenant_id, name, permissions, builtin, created_at, updated_at)
             VALUES ('00000000-0000-4000-8000-000000000001', 'admin', '[\"*\"]', 1, 'now', 'now');
         INSERT INTO memberships (user_id, tenant_id, role_id, created_at)
             SELECT u.id, r.tenant_id, r.id, 'now' FROM users u, roles r;",
    )
    .unwrap();
    let count =
        |conn: &Connection, sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let memberships = count(&conn, "SELECT count(*) FROM memberships");
    assert_eq!(memberships, 1, "the fixture holds a membership");
    migrate(&mut conn, all).unwrap();
    assert_eq!(count(&conn, "SELECT count(*) FROM tenants"), 1);
    assert_eq!(count(&conn, "SELECT count(*) FROM domains"), 1);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM memberships"),
        memberships
    );
    let fk: i64 = count(&conn, "SELECT foreign_keys FROM pragma_foreign_keys");
    assert_eq!(fk, 1, "foreign keys are on again after the migration");
    conn.execute(
        "UPDATE tenants SET status = 'provisioning' WHERE slug = 'acme'",
        [],
    )
    .unwrap();
    conn.execute("DELETE FROM tenants WHERE slug = 'acme'", [])
        .unwrap();
    assert_eq!(
        count(&conn, "SELECT count(*) FROM domains"),
        0,
        "domains cascade from the rebuilt table"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM memberships"), 0);
    assert_eq!(count(&conn, "SELECT count(*) FROM roles"), 0);
}

/// `open_query_only` reads a file a writer changes after it was opened cleanly closed (no
/// `-wal`), through SQLite's locks: it sees every commit, checkpointed or not, and can write
/// nothing. An `immutable` open of the same file would keep answering from what it first read.
#[test]
fn a_query_only_reader_follows_a_writer_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let setup = open(&path, DbKind::Tenant, Create::IfMissing).unwrap();
    setup
        .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(setup);
    assert!(!path.with_extension("db-wal").exists(), "closed cleanly");

    let reader = open_query_only(&path).unwrap();
    assert_eq!(count(&reader, "SELECT count(*) FROM t"), 1);
    assert_eq!(pragma_text(&reader, "journal_mode"), "wal");
    let writer = open(&path, DbKind::Tenant, Create::Never).unwrap();
    writer.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(count(&reader, "SELECT count(*) FROM t"), 2);
    writer
        .execute_batch("INSERT INTO t VALUES (3); PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    assert_eq!(count(&reader, "SELECT count(*) FROM t"), 3);
    let refused = reader.execute("INSERT INTO t VALUES (4)", []).unwrap_err();
    assert!(refused.to_string().contains("readonly"), "{refused}");
    assert_attach_refused(&reader, dir.path());
    assert_eq!(count(&writer, "SELECT count(*) FROM t"), 3);
}
