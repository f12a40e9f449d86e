use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::lifecycle::{self, LifecycleError, MigrateConfig, NewTenant};
use super::registry::{Clock, OpenPool, Shared, TOUCH_GRAIN_NANOS};
use super::*;
use crate::catalog::{TenantStatus, CENTRAL_DB};
use crate::db::{Create, DbKind};
use crate::test_kit::{assert_log_stayed_small, count, quiet, Done, Setup};

/// The tenancy tests' own readings of a [`Setup`].
trait TenancySetup {
    fn tenant_files(&self) -> Vec<String>;
    fn bare_tenant(&self, slug: &str) -> Arc<TenantRecord>;
}

impl TenancySetup for Setup {
    fn tenant_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.data().join(TENANTS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A catalog row whose file exists but was never migrated, as if made
    /// by an older binary.
    fn bare_tenant(&self, slug: &str) -> Arc<TenantRecord> {
        let id = uuid::Uuid::new_v4();
        let path = tenant_db_path(self.data(), &id.to_string()).unwrap();
        drop(db::open(&path, DbKind::Tenant, Create::New).unwrap());
        self.catalog.insert_tenant(&id, slug, slug, &[]).unwrap()
    }
}

/// A registry whose LRU and idle closing go by a clock the test moves, by hand.
fn registry_at(setup: &Setup, config: RegistryConfig) -> (Registry, ManualClock) {
    let nanos = Arc::new(AtomicU64::new(0));
    let registry = Registry::with_clock(setup.data(), config, Clock::Manual(Arc::clone(&nanos)));
    (registry, ManualClock(nanos))
}

struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap();
        self.0.fetch_add(by, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The binary's tenant migrations plus one, so provisioned tenants have one pending.
fn with_probe() -> &'static [db::Migration] {
    static SET: std::sync::OnceLock<Vec<db::Migration>> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let mut set = db::tenant_migrations().to_vec();
        let next = set.last().map_or(1, |m| m.version + 1);
        set.push(
            db::Migration::new(
                &format!("schema/tenant/{next:04}_probe.sql"),
                "CREATE TABLE probe (id INTEGER PRIMARY KEY);",
            )
            .unwrap(),
        );
        set
    })
}

fn meta(conn: &Connection, key: &str) -> String {
    conn.query_row(
        "SELECT value FROM tenant_meta WHERE key = ?1",
        [key],
        |row| row.get(0),
    )
    .unwrap()
}

#[test]
fn tenant_paths_come_only_from_canonical_uuids() {
    let data = Path::new("data");
    let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    assert_eq!(
        tenant_db_path(data, id).unwrap(),
        Path::new("data/tenants/0f8fad5b-d9cb-469f-a165-70867728950e.db")
    );
    for bad in [
        "",
        "../central",
        "0F8FAD5B-D9CB-469F-A165-70867728950E",
        "0f8fad5bd9cb469fa16570867728950e",
        "{0f8fad5b-d9cb-469f-a165-70867728950e}",
        "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
        "0f8fad5b-d9cb-469f-a165-70867728950e/../x",
    ] {
        assert!(tenant_db_path(data, bad).is_none(), "{bad:?}");
    }
}

#[test]
fn open_gives_a_connection_to_that_tenant_only() {
    let setup = Setup::new();
    let acme = setup.provision("acme", &["acme.test"]);
    let beta = setup.provision("beta", &[]);
    let registry = setup.registry(quiet());

    let tenant = resolve_domain(&setup.catalog, &registry, "ACME.test:443").unwrap();
    assert_eq!(tenant.id(), acme.id);
    assert_eq!(meta(&tenant.conn().unwrap(), "slug"), "acme");
    tenant
        .write(|tx| -> Result<(), DbError> {
            tx.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")?;
            Ok(())
        })
        .unwrap();
    let failed: Result<(), DbError> = tenant.write(|tx| {
        tx.execute("INSERT INTO notes VALUES ('rolled back')", [])?;
        Err(DbError::Missing("stop".into()))
    });
    assert!(failed.is_err());
    assert_eq!(
        count(&tenant.conn().unwrap(), "SELECT count(*) FROM notes"),
        1
    );

    let other = resolve_slug(&setup.catalog, &registry, "beta").unwrap();
    assert_eq!(meta(&other.conn().unwrap(), "id"), beta.id);
    assert!(other
        .conn()
        .unwrap()
        .execute_batch("SELECT * FROM notes")
        .is_err());
    assert!(matches!(
        resolve_domain(&setup.catalog, &registry, "nobody.test"),
        Err(TenancyError::NotFound)
    ));
    assert_eq!(registry.open_count(), 2);
}

#[test]
fn thirty_two_threads_first_access_migrates_once() {
    let setup = Setup::new();
    let record = setup.provision("fresh", &[]);
    let registry = Arc::new(setup.registry(RegistryConfig {
        migrations: with_probe(),
        ..quiet()
    }));
    let threads = 32;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (registry, record, barrier) = (
                Arc::clone(&registry),
                Arc::clone(&record),
                Arc::clone(&barrier),
            );
            thread::spawn(move || {
                barrier.wait();
                let tenant = registry.open(record).unwrap();
                // The schema is in place for every caller, not just the first.
                count(&tenant.conn().unwrap(), "SELECT count(*) FROM tenant_meta")
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), 4, "the seeded tenant_meta rows");
    }
    let stats = registry.stats();
    assert_eq!(stats.pools_opened, 1, "{stats:?}");
    assert_eq!(stats.open_pools, 1);
    let conn = Connection::open(setup.path(&record)).unwrap();
    assert_eq!(
        count(&conn, "SELECT count(*) FROM schema_migrations"),
        with_probe().len() as i64
    );
}

#[test]
fn broken_tenant_is_unavailable_alone_and_retried_later() {
    let setup = Setup::new();
    let good = setup.provision("good", &[]);
    let broken = setup.provision("broken", &[]);
    let path = setup.path(&broken);
    let saved = path.with_extension("saved");
    fs::rename(&path, &saved).unwrap();
    let registry = setup.registry(RegistryConfig {
        retry_after: Duration::ZERO,
        ..quiet()
    });

    // Missing: refused, and not recreated.
    match registry.open(Arc::clone(&broken)) {
        Err(TenancyError::Unavailable { tenant, reason }) => {
            assert_eq!(tenant, "broken");
            assert!(reason.contains("does not exist"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(!path.exists());
    // Others are unaffected.
    registry.open(Arc::clone(&good)).unwrap();

    // Corrupt.
    fs::write(&path, vec![0x5a; 8192]).unwrap();
    assert!(matches!(
        registry.open(Arc::clone(&broken)),
        Err(TenancyError::Unavailable { .. })
    ));

    // Fixed: the next access retries and succeeds.
    fs::remove_file(&path).unwrap();
    fs::rename(&saved, &path).unwrap();
    let tenant = registry.open(Arc::clone(&broken)).unwrap();
    assert_eq!(meta(&tenant.conn().unwrap(), "slug"), "broken");
}

#[test]
fn failed_tenant_waits_retry_after_before_trying_again() {
    let setup = Setup::new();
    let record = setup.provision("later", &[]);
    let path = setup.path(&record);
    let saved = path.with_extension("saved");
    fs::rename(&path, &saved).unwrap();
    let registry = setup.registry(RegistryConfig {
        retry_after: Duration::from_secs(3600),
        ..quiet()
    });
    assert!(registry.open(Arc::clone(&record)).is_err());
    fs::rename(&saved, &path).unwrap();
    // Still within retry_after: the remembered failure, no new attempt.
    assert!(matches!(
        registry.open(Arc::clone(&record)),
        Err(TenancyError::Unavailable { .. })
    ));
    assert_eq!(registry.stats().pools_opened, 0);
}

#[test]
fn a_panic_while_opening_leaves_the_tenant_to_be_tried_again() {
    let setup = Setup::new();
    let record = setup.provision("shaky", &[]);
    let registry = setup.registry(RegistryConfig {
        retry_after: Duration::ZERO,
        // A slot left `Opening` would make the next open wait this long, then fail.
        open_wait: Duration::from_millis(100),
        ..quiet()
    });
    let panicking = |_: &Shared, _: &TenantRecord, _: &Path| -> Result<OpenPool, String> {
        panic!("a bug while opening")
    };
    match registry.open_with(Arc::clone(&record), panicking) {
        Err(TenancyError::Unavailable { reason, .. }) => {
            assert!(reason.contains("a bug while opening"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let tenant = registry.open(record).expect("opened on the next try");
    assert_eq!(tenant.record.slug, "shaky");
}

#[test]
fn checksum_mismatch_makes_the_tenant_unavailable() {
    let setup = Setup::new();
    let record = setup.provision("tampered", &[]);
    Connection::open(setup.path(&record))
        .unwrap()
        .execute(
            "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1",
            [],
        )
        .unwrap();
    let registry = setup.registry(quiet());
    match registry.open(record) {
        Err(TenancyError::Unavailable { reason, .. }) => {
            assert!(reason.contains("schema/tenant/0001_init.sql"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn file_of_another_tenant_is_refused() {
    let setup = Setup::new();
    let a = setup.provision("aaa", &[]);
    let b = setup.provision("bbb", &[]);
    fs::copy(setup.path(&a), setup.path(&b)).unwrap();
    let registry = setup.registry(quiet());
    match registry.open(b) {
        Err(TenancyError::Unavailable { reason, .. }) => {
            assert!(reason.contains(&a.id), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn suspended_and_deleted_tenants_are_refused() {
    let setup = Setup::new();
    setup.provision("acme", &["acme.test"]);
    let registry = setup.registry(quiet());
    lifecycle::suspend(&setup.catalog, "acme").unwrap();
    assert!(matches!(
        resolve_domain(&setup.catalog, &registry, "acme.test"),
        Err(TenancyError::Suspended { tenant }) if tenant == "acme"
    ));
    lifecycle::activate(&setup.catalog, "acme").unwrap();
    resolve_domain(&setup.catalog, &registry, "acme.test").unwrap();
    lifecycle::delete(&setup.catalog, "acme").unwrap();
    assert!(matches!(
        resolve_slug(&setup.catalog, &registry, "acme"),
        Err(TenancyError::Deleted { .. })
    ));
    assert!(matches!(
        lifecycle::suspend(&setup.catalog, "acme"),
        Err(LifecycleError::WrongStatus {
            status: TenantStatus::Deleted,
            ..
        })
    ));
}

/// Descriptors this process holds on files under `dir`.
fn fds_under(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .count()
}

#[test]
fn open_pools_and_descriptors_stay_under_the_cap() {
    let setup = Setup::new();
    let cap = 8;
    let records: Vec<_> = (0..3 * cap)
        .map(|i| setup.provision(&format!("t{i}"), &[]))
        .collect();
    let registry = setup.registry(RegistryConfig {
        max_open_pools: cap,
        ..quiet()
    });
    let baseline = fds_under(setup.data()); // the catalog's own
                                            // Held the whole time: must survive every eviction.
    let held = registry.open(Arc::clone(&records[0])).unwrap();
    held.conn().unwrap();
    for record in &records[1..] {
        let tenant = registry.open(Arc::clone(record)).unwrap();
        tenant
            .write(|tx| -> Result<(), DbError> {
                tx.execute_batch("CREATE TABLE IF NOT EXISTS t (x); INSERT INTO t VALUES (1);")?;
                Ok(())
            })
            .unwrap();
        drop(tenant);
        assert!(registry.open_count() <= cap);
        let fds = fds_under(setup.data()) - baseline;
        assert!(fds <= 3 * cap, "{fds} descriptors for {cap} pools");
    }
    let stats = registry.stats();
    assert_eq!(stats.open_pools, cap);
    assert_eq!(stats.pools_opened, 3 * cap as u64);
    assert_eq!(stats.pools_closed, 2 * cap as u64);
    assert!(matches!(
        registry.evict(held.id()),
        Err(TenancyError::InUse { .. })
    ));
    assert_eq!(
        count(&held.conn().unwrap(), "SELECT count(*) FROM tenant_meta"),
        4
    );
}

#[test]
fn the_least_recently_used_pool_goes_first() {
    let setup = Setup::new();
    let [a, b, c, d] = ["a1", "b1", "c1", "d1"].map(|s| setup.provision(s, &[]));
    let (registry, clock) = registry_at(
        &setup,
        RegistryConfig {
            max_open_pools: 3,
            ..quiet()
        },
    );
    // Touches count to a grain; pools used within one of each other are equally recent.
    let grain = Duration::from_nanos(2 * TOUCH_GRAIN_NANOS);
    for record in [&a, &b, &c] {
        registry.open(Arc::clone(record)).unwrap();
        clock.advance(grain);
    }
    registry.open(Arc::clone(&a)).unwrap().conn().unwrap(); // a is now the most recent
    registry.open(Arc::clone(&d)).unwrap(); // pushes out b
    let opened = registry.stats().pools_opened;
    for record in [&a, &c, &d] {
        registry.open(Arc::clone(record)).unwrap();
    }
    assert_eq!(
        registry.stats().pools_opened,
        opened,
        "a, c, d were still open"
    );
    registry.open(Arc::clone(&b)).unwrap();
    assert_eq!(
        registry.stats().pools_opened,
        opened + 1,
        "b had been closed"
    );
}

#[test]
fn pool_in_use_is_not_evicted() {
    let setup = Setup::new();
    let record = setup.provision("busy", &[]);
    let registry = setup.registry(quiet());
    assert!(!registry.evict(&record.id).unwrap(), "nothing open yet");
    let tenant = registry.open(Arc::clone(&record)).unwrap();
    let conn = tenant.conn().unwrap();
    drop(tenant);
    // The connection outlives the Tenant value: still in use.
    assert!(matches!(
        registry.evict(&record.id),
        Err(TenancyError::InUse { .. })
    ));
    drop(conn);
    assert!(registry.evict(&record.id).unwrap());
    assert_eq!(registry.open_count(), 0);
    // And it opens again on demand.
    registry.open(record).unwrap();
    assert_eq!(registry.open_count(), 1);
}

#[test]
fn idle_pools_are_closed() {
    let setup = Setup::new();
    let idle = setup.provision("idle", &[]);
    let busy = setup.provision("busy", &[]);
    let idle_timeout = Duration::from_millis(50);
    let (registry, clock) = registry_at(
        &setup,
        RegistryConfig {
            idle_timeout: Some(idle_timeout),
            ..RegistryConfig::default()
        },
    );
    registry.open(Arc::clone(&idle)).unwrap().conn().unwrap();
    let held = registry.open(Arc::clone(&busy)).unwrap();
    // Nothing is idle until the clock says so, however long the sweep has had.
    assert_eq!(registry.close_idle(), 0);
    assert_eq!(registry.open_count(), 2);
    clock.advance(idle_timeout);
    // The background sweep closes the idle pool, never the held one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while registry.open_count() > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(registry.open_count(), 1);
    held.conn().unwrap();
    assert!(matches!(
        registry.evict(&busy.id),
        Err(TenancyError::InUse { .. })
    ));
    drop(held);
    clock.advance(idle_timeout);
    registry.close_idle();
    assert_eq!(registry.open_count(), 0);
}

#[test]
fn create_makes_a_migrated_seeded_file_and_a_row() {
    let setup = Setup::new();
    let record = setup.provision("acme", &["acme.test", "www.acme.test"]);
    assert_eq!(record.status, TenantStatus::Active);
    assert_eq!(record.primary_domain(), Some("acme.test"));
    let conn = Connection::open(setup.path(&record)).unwrap();
    assert_eq!(
        db::schema_version(&conn).unwrap(),
        lifecycle::tenant_target_version()
    );
    assert_eq!(meta(&conn, "id"), record.id);
    assert_eq!(meta(&conn, "slug"), "acme");
    assert_eq!(meta(&conn, "name"), "acme Ltd");
    assert_eq!(
        lifecycle::show(&setup.catalog, "acme").unwrap().id,
        record.id
    );
}

#[test]
fn create_refuses_bad_or_taken_names_without_leaving_files() {
    let setup = Setup::new();
    setup.provision("acme", &["acme.test"]);
    let files = setup.tenant_files();
    let attempt = |slug: &str, name: &str, domains: &[&str]| {
        lifecycle::create(
            &setup.catalog,
            &NewTenant {
                slug: slug.to_string(),
                name: name.to_string(),
                domains: domains.iter().map(|d| d.to_string()).collect(),
            },
        )
        .unwrap_err()
    };
    assert!(matches!(
        attempt("../x", "X", &[]),
        LifecycleError::Validation { field: "slug", .. }
    ));
    assert!(matches!(
        attempt("ok", " ", &[]),
        LifecycleError::Validation { field: "name", .. }
    ));
    assert!(matches!(
        attempt("ok", "X", &["bad domain"]),
        LifecycleError::Validation {
            field: "domain",
            ..
        }
    ));
    assert!(matches!(
        attempt("acme", "X", &[]),
        LifecycleError::SlugTaken(_)
    ));
    assert!(matches!(
        attempt("other", "X", &["ACME.test"]),
        LifecycleError::DomainTaken(d) if d == "acme.test"
    ));
    assert_eq!(setup.tenant_files(), files);
    assert_eq!(setup.catalog.list().unwrap().len(), 1);
}

#[test]
fn create_is_all_or_nothing_when_the_final_insert_fails() {
    let setup = Setup::new();
    setup.provision("first", &["x.test"]);
    let files = setup.tenant_files();
    assert_eq!(files.len(), 1);
    // Past the pre-checks (as if another process took x.test in between):
    // the file gets made and migrated, then the catalog insert conflicts.
    let err =
        lifecycle::provision(&setup.catalog, "second", "Second", &["x.test".into()]).unwrap_err();
    assert!(matches!(err, LifecycleError::DomainTaken(d) if d == "x.test"));
    assert_eq!(setup.tenant_files(), files, "no file, -wal or -shm left");
    assert!(setup.catalog.by_slug("second").unwrap().is_none());

    let err = lifecycle::provision(&setup.catalog, "first", "Again", &[]).unwrap_err();
    assert!(matches!(err, LifecycleError::SlugTaken(_)));
    assert_eq!(setup.tenant_files(), files);
    assert_eq!(setup.catalog.list().unwrap().len(), 1);
}

#[test]
fn purge_needs_deleted_then_removes_files_and_row() {
    let setup = Setup::new();
    let record = setup.provision("gone", &["gone.test"]);
    let registry = setup.registry(quiet());
    assert!(matches!(
        lifecycle::purge(&setup.catalog, &registry, "gone"),
        Err(LifecycleError::NotDeleted(_))
    ));

    // An open pool keeps -wal and -shm around.
    let tenant = registry.open(Arc::clone(&record)).unwrap();
    tenant
        .write(|tx| -> Result<(), DbError> {
            tx.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")?;
            Ok(())
        })
        .unwrap();
    lifecycle::delete(&setup.catalog, "gone").unwrap();
    let files = db::database_files(&setup.path(&record));
    for file in &files {
        assert!(file.exists(), "{}", file.display());
    }
    // A request still holding the pool gets a moment to finish before the files go: the
    // holder lets go only once the purge has begun (the row is gone).
    thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while setup.catalog.by_slug("gone").unwrap().is_some() {
                assert!(Instant::now() < deadline, "the purge never began");
                thread::sleep(Duration::from_millis(1));
            }
            drop(tenant);
        });
        lifecycle::purge(&setup.catalog, &registry, "gone").unwrap();
    });
    for file in &files {
        assert!(!file.exists(), "{}", file.display());
    }
    assert!(setup.catalog.by_slug("gone").unwrap().is_none());
    assert!(setup.catalog.by_domain("gone.test").unwrap().is_none());
    assert_eq!(registry.open_count(), 0);
    let domains = count(
        &Connection::open(setup.data().join(CENTRAL_DB)).unwrap(),
        "SELECT count(*) FROM domains",
    );
    assert_eq!(domains, 0);
    assert!(matches!(
        lifecycle::purge(&setup.catalog, &registry, "gone"),
        Err(LifecycleError::NotFound(_))
    ));
    // The slug and domain are free again.
    setup.provision("gone", &["gone.test"]);
}

#[test]
fn delete_and_restore() {
    let setup = Setup::new();
    let record = setup.provision("back", &[]);
    assert!(matches!(
        lifecycle::restore(&setup.catalog, "back"),
        Err(LifecycleError::NotDeleted(_))
    ));
    let deleted = lifecycle::delete(&setup.catalog, "back").unwrap();
    assert_eq!(deleted.status, TenantStatus::Deleted);
    assert!(deleted.deleted_at.is_some());
    assert!(setup.path(&record).exists(), "soft delete keeps the file");
    let restored = lifecycle::restore(&setup.catalog, "back").unwrap();
    assert_eq!(restored.status, TenantStatus::Active);
    assert!(restored.deleted_at.is_none());

    // No file, no restore.
    lifecycle::delete(&setup.catalog, "back").unwrap();
    db::remove_database_files(&setup.path(&record)).unwrap();
    assert!(matches!(
        lifecycle::restore(&setup.catalog, "back"),
        Err(LifecycleError::Db(DbError::Missing(_)))
    ));
}

#[test]
fn rename_and_domains() {
    let setup = Setup::new();
    setup.provision("before", &["before.test"]);
    setup.provision("other", &[]);
    let to = |slug: Option<&str>, name: Option<&str>| lifecycle::Rename {
        slug: slug.map(str::to_string),
        name: name.map(str::to_string),
    };
    let renamed =
        lifecycle::rename(&setup.catalog, None, "before", &to(Some("after"), None)).unwrap();
    assert_eq!(renamed.after.slug, "after");
    assert_eq!(
        serde_json::Value::Object(renamed.changes()),
        serde_json::json!({"slug": {"from": "before", "to": "after"}})
    );
    // The file says the same as the catalog.
    let file = || db::open(&setup.path(&renamed.after), DbKind::Tenant, Create::Never).unwrap();
    assert_eq!(meta(&file(), "slug"), "after");
    let named = lifecycle::rename(
        &setup.catalog,
        None,
        "after",
        &to(None, Some(" After Ltd ")),
    )
    .unwrap();
    assert_eq!(
        (named.after.slug.as_str(), named.after.name.as_str()),
        ("after", "After Ltd")
    );
    assert_eq!(
        serde_json::Value::Object(named.changes()),
        serde_json::json!({"name": {"from": "before Ltd", "to": "After Ltd"}})
    );
    assert_eq!(
        (meta(&file(), "slug"), meta(&file(), "name")),
        ("after".into(), "After Ltd".into())
    );
    // The other tenant's file is untouched.
    let other = setup.catalog.by_slug("other").unwrap().unwrap();
    let other_file = db::open(&setup.path(&other), DbKind::Tenant, Create::Never).unwrap();
    assert_eq!(
        (meta(&other_file, "slug"), meta(&other_file, "name")),
        ("other".into(), "other Ltd".into())
    );
    assert!(matches!(
        lifecycle::rename(&setup.catalog, None, "after", &to(Some("other"), None)),
        Err(LifecycleError::SlugTaken(_))
    ));
    assert!(matches!(
        lifecycle::rename(&setup.catalog, None, "after", &to(Some("admin"), None)),
        Err(LifecycleError::Validation { field: "slug", .. })
    ));
    assert!(matches!(
        lifecycle::rename(&setup.catalog, None, "after", &to(None, Some("\u{7}"))),
        Err(LifecycleError::Validation { field: "name", .. })
    ));
    assert!(matches!(
        lifecycle::rename(&setup.catalog, None, "after", &to(None, None)),
        Err(LifecycleError::Validation { field: "slug", .. })
    ));
    assert!(matches!(
        lifecycle::rename(&setup.catalog, None, "before", &to(Some("later"), None)),
        Err(LifecycleError::NotFound(_))
    ));
    let with = lifecycle::add_domain(&setup.catalog, "after", "after.test").unwrap();
    assert_eq!(with.domains.len(), 2);
    assert!(matches!(
        lifecycle::add_domain(&setup.catalog, "other", "after.test"),
        Err(LifecycleError::DomainTaken(_))
    ));
    let without = lifecycle::remove_domain(&setup.catalog, "after", "before.test").unwrap();
    assert_eq!(without.primary_domain(), Some("after.test"));
    assert!(matches!(
        lifecycle::remove_domain(&setup.catalog, "other", "after.test"),
        Err(LifecycleError::DomainNotFound(_))
    ));
    let slugs: Vec<String> = lifecycle::list(&setup.catalog)
        .unwrap()
        .iter()
        .map(|r| r.slug.clone())
        .collect();
    assert_eq!(slugs, ["after", "other"]);
}

#[test]
fn migrate_all_carries_on_past_failures() {
    let setup = Setup::new();
    let current = setup.provision("current", &[]);
    let mut conn = db::open(&setup.path(&current), DbKind::Tenant, Create::Never).unwrap();
    db::migrate(&mut conn, with_probe()).unwrap();
    drop(conn);
    let behind = setup.provision("behind", &[]);
    setup.bare_tenant("bare");
    let broken = setup.provision("broken", &[]);
    fs::write(setup.path(&broken), vec![0x5a; 8192]).unwrap();
    setup.provision("deleted", &[]);
    lifecycle::delete(&setup.catalog, "deleted").unwrap();
    let target = with_probe().last().unwrap().version;

    let config = |workers, only: Option<&str>| MigrateConfig {
        workers,
        only: only.map(String::from),
        migrations: with_probe(),
    };
    let summary = lifecycle::migrate_all(&setup.catalog, &config(3, None)).unwrap();
    assert_eq!(summary.target, target);
    let slugs: Vec<&str> = summary.results.iter().map(|r| r.slug.as_str()).collect();
    assert_eq!(
        slugs,
        ["bare", "behind", "broken", "current"],
        "deleted is skipped"
    );
    let by = |slug: &str| summary.results.iter().find(|r| r.slug == slug).unwrap();
    assert_eq!(by("behind").id, behind.id);
    assert_eq!(
        (by("behind").from, by("behind").to),
        (Some(target - 1), Some(target))
    );
    assert_eq!(by("behind").applied, vec![target]);
    assert_eq!(
        (by("current").from, by("current").to),
        (Some(target), Some(target))
    );
    assert!(by("current").applied.is_empty());
    assert!(by("broken").error.is_some());
    // An empty file is never set up from nothing outside provisioning.
    assert!(by("bare").error.is_some());
    assert_eq!(summary.failed_count(), 2);
    assert_eq!(summary.migrated_count(), 1);

    let one = lifecycle::migrate_all(&setup.catalog, &config(8, Some("deleted"))).unwrap();
    assert_eq!(one.results.len(), 1);
    assert!(one.results[0].error.is_none());
    assert!(matches!(
        lifecycle::migrate_all(&setup.catalog, &config(1, Some("nobody"))),
        Err(LifecycleError::NotFound(_))
    ));

    let status = lifecycle::status(&setup.catalog).unwrap();
    assert_eq!(status.tenant_target, lifecycle::tenant_target_version());
    assert_eq!(status.central, status.central_target);
    let versions: Vec<(&str, Option<u32>, bool)> = status
        .tenants
        .iter()
        .map(|t| (t.slug.as_str(), t.version, t.error.is_some()))
        .collect();
    assert_eq!(
        versions,
        [
            ("bare", Some(0), false),
            ("behind", Some(target), false),
            ("broken", None, true),
            ("current", Some(target), false),
            ("deleted", Some(target), false),
        ]
    );
    assert!(status.orphans.is_empty());
    let stray = setup
        .data()
        .join(TENANTS_DIR)
        .join(format!("{}.db", uuid::Uuid::new_v4()));
    fs::write(&stray, b"").unwrap();
    let status = lifecycle::status(&setup.catalog).unwrap();
    let files: Vec<&str> = status.orphans.iter().map(|o| o.file.as_str()).collect();
    assert_eq!(files, [stray.file_name().unwrap().to_string_lossy()]);
}

#[test]
fn shared_types_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Catalog>();
    send_sync::<Registry>();
    send_sync::<Tenant>();
    send_sync::<TenancyError>();
    send_sync::<LifecycleError>();
}

/// SQLite's own checkpoint is off on tenant connections (it would run inside a writer's turn);
/// `Tenant::write` must have the checkpoint thread do it, or the log would only ever grow while
/// the server runs.
#[test]
fn writes_checkpoint_the_log_outside_the_write_turn() {
    let setup = Setup::new();
    let acme = setup.provision("acme", &[]);
    let registry = setup.registry(quiet());
    let tenant = resolve_slug(&setup.catalog, &registry, "acme").unwrap();
    let autocheckpoint: i64 = tenant
        .conn()
        .unwrap()
        .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
        .unwrap();
    assert_eq!(autocheckpoint, 0);
    tenant
        .write(|tx| -> Result<(), DbError> {
            tx.execute_batch("CREATE TABLE notes (n INTEGER)")?;
            Ok(())
        })
        .unwrap();
    for n in 1..CHECKPOINT_EVERY {
        tenant
            .write(|tx| -> Result<(), DbError> {
                tx.execute("INSERT INTO notes VALUES (?1)", [n as i64])?;
                Ok(())
            })
            .unwrap();
    }
    // The database file alone (no -wal beside it) holds what was checkpointed.
    let copy = setup.data().join("copy.db");
    let notes_in_file_alone = || {
        fs::copy(setup.path(&acme), &copy).unwrap();
        let _ = fs::remove_file(setup.data().join("copy.db-wal"));
        let conn = Connection::open(&copy).unwrap();
        let n = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'notes'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap();
        let rows = if n == 0 {
            0
        } else {
            count(&conn, "SELECT count(*) FROM notes")
        };
        drop(conn);
        for f in db::database_files(&copy) {
            let _ = fs::remove_file(f);
        }
        rows
    };
    // CHECKPOINT_EVERY writes so far (the table, then the rows): the last one asked the
    // checkpoint thread for one, which runs after the write returned.
    let asked = Instant::now();
    while tenant.checkpoints_done() == 0 {
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "no checkpoint after {CHECKPOINT_EVERY} writes"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(notes_in_file_alone(), (CHECKPOINT_EVERY - 1) as i64);
    tenant
        .write(|tx| -> Result<(), DbError> {
            tx.execute("INSERT INTO notes VALUES (0)", [])?;
            Ok(())
        })
        .unwrap();
    assert_eq!(
        notes_in_file_alone(),
        (CHECKPOINT_EVERY - 1) as i64,
        "the next write is in the log only"
    );
}

/// `--checkpoints litestream`: tenantd asks for no checkpoint however many writes (Litestream,
/// beside it, copies the log into the file itself), so the file alone holds none of them.
#[test]
fn no_checkpoints_of_its_own_when_litestream_does_them() {
    let setup = Setup::new();
    let acme = setup.provision("acme", &[]);
    let registry = setup.registry(RegistryConfig {
        checkpoints: Checkpoints::Litestream,
        ..quiet()
    });
    let tenant = resolve_slug(&setup.catalog, &registry, "acme").unwrap();
    assert!(tenant.pool.checkpoints.is_none(), "a checkpoint queue");
    tenant
        .write(|tx| -> Result<(), DbError> {
            tx.execute_batch("CREATE TABLE notes (n INTEGER)")?;
            Ok(())
        })
        .unwrap();
    for n in 0..3 * CHECKPOINT_EVERY {
        tenant
            .write(|tx| -> Result<(), DbError> {
                tx.execute("INSERT INTO notes VALUES (?1)", [n as i64])?;
                Ok(())
            })
            .unwrap();
    }
    assert!(!tenant.pool.checkpoint_queued.load(Ordering::Acquire));
    assert_eq!(tenant.checkpoints_done(), 0);
    // The file without its log: the table is not in it.
    let copy = setup.data().join("copy.db");
    fs::copy(setup.path(&acme), &copy).unwrap();
    let conn = Connection::open(&copy).unwrap();
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'notes'"
        ),
        0
    );
}

/// Counts a writer out however its thread ends, so the readers stop.
/// The log starts over from its beginning only once a checkpoint has copied all of it with no
/// writer in between. Writers queued back to back leave no such gap for the checkpoint thread,
/// so without a writer finishing the checkpoint in its own turn the log grows as long as the
/// writes go on (gigabytes in a minute of order creates).
#[test]
fn the_log_starts_over_under_back_to_back_writers() {
    const WRITERS: usize = 4;
    const WRITES_EACH: usize = 1_500;
    const BLOB: usize = 4_000;
    let setup = Setup::new();
    let acme = setup.provision("acme", &[]);
    let registry = setup.registry(quiet());
    let tenant = resolve_slug(&setup.catalog, &registry, "acme").unwrap();
    tenant
        .write(|tx| -> Result<(), DbError> {
            tx.execute_batch("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")?;
            Ok(())
        })
        .unwrap();
    let writing = std::sync::atomic::AtomicUsize::new(WRITERS);
    thread::scope(|s| {
        // Readers beside the writers, as a tenant's list and order reads are: a reader holding
        // an old snapshot when the log could start over must not keep it from starting over.
        for _ in 0..2 {
            s.spawn(|| {
                while writing.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                    let conn = tenant.conn().unwrap();
                    let n: i64 = conn
                        .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
                        .unwrap();
                    assert!(n >= 0);
                }
            });
        }
        for _ in 0..WRITERS {
            s.spawn(|| {
                let _done = Done(&writing);
                for _ in 0..WRITES_EACH {
                    tenant
                        .write(|tx| -> Result<(), DbError> {
                            // A row of a page and more, the oldest rows deleted: the file
                            // stays small, every write puts several pages into the log.
                            tx.execute(
                                "INSERT INTO blobs (data) VALUES (zeroblob(?1))",
                                [BLOB as i64],
                            )?;
                            tx.execute(
                                "DELETE FROM blobs WHERE id < (SELECT max(id) FROM blobs) - 16",
                                [],
                            )?;
                            Ok(())
                        })
                        .unwrap();
                }
            });
        }
    });
    let wal = db::database_files(&setup.path(&acme))[1].clone();
    // The writes put more than 50 MB into the log in all.
    // Without checkpoints the log holds every write: 148 MB (measured with them turned off).
    // Seen on a quiet machine: a few MB; with other builds on both cores: 35 MB.
    assert_log_stayed_small(&wal, WRITERS * WRITES_EACH, 64 << 20);
}
/// The write turn is released however a writer ends: a lost turn would leave every later
/// writer of the tenant waiting out the busy timeout and failing.
#[test]
fn a_writer_that_panics_gives_the_turn_back() {
    let setup = Setup::new();
    setup.provision("acme", &[]);
    let registry = setup.registry(quiet());
    let tenant = resolve_slug(&setup.catalog, &registry, "acme").unwrap();
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tenant.write(|_tx| -> Result<(), DbError> { panic!("a bug in a handler") })
    }));
    assert!(crashed.is_err());
    let started = Instant::now();
    tenant
        .write(|tx| -> Result<(), DbError> {
            tx.execute_batch("CREATE TABLE after_the_panic (x INTEGER)")?;
            Ok(())
        })
        .unwrap();
    assert!(
        started.elapsed() < db::BUSY_TIMEOUT,
        "waited for a lost turn"
    );
}

/// Reads the tenant's name the way a cached route would: from the cache, or from the file and
/// then kept. Returns the answer and whether it came from the cache.
fn cached_name(tenant: &Tenant, key: &str) -> (String, bool) {
    match tenant.cached_read(key.to_string(), false) {
        Lookup::Hit(body) => (String::from_utf8(body.to_vec()).unwrap(), true),
        Lookup::Miss(ticket) => {
            let name = meta(&tenant.conn().unwrap(), "name");
            tenant.keep_read(ticket, name.as_bytes());
            (name, false)
        }
    }
}

#[test]
fn kept_answers_last_exactly_as_long_as_the_file_is_unchanged() {
    let setup = Setup::new();
    let record = setup.provision("acme", &[]);
    let registry = setup.registry(quiet());
    let tenant = registry.open(Arc::clone(&record)).unwrap();

    // The first read keeps its answer; the next is served from it.
    assert_eq!(cached_name(&tenant, "k"), ("acme Ltd".into(), false));
    assert_eq!(cached_name(&tenant, "k"), ("acme Ltd".into(), true));
    assert_eq!(cached_name(&tenant, "k"), ("acme Ltd".into(), true));
    assert!(!cached_name(&tenant, "other key").1);

    // A commit through the tenant's own pool.
    tenant
        .write(|tx| -> Result<(), DbError> {
            tx.execute(
                "UPDATE tenant_meta SET value = 'Acme One' WHERE key = 'name'",
                [],
            )?;
            Ok(())
        })
        .unwrap();
    assert_eq!(cached_name(&tenant, "k"), ("Acme One".into(), false));
    assert_eq!(cached_name(&tenant, "k"), ("Acme One".into(), true));

    // A commit by another connection to the file (another process: the CLI, `sqlite3`),
    // which this process hears nothing of.
    let other = Connection::open(setup.path(&record)).unwrap();
    other
        .execute(
            "UPDATE tenant_meta SET value = 'Acme Two' WHERE key = 'name'",
            [],
        )
        .unwrap();
    assert_eq!(cached_name(&tenant, "k"), ("Acme Two".into(), false));

    // A checkpoint that empties the log (it may move the header: one more miss, no harm),
    // then a commit into the restarted log: the header moves again.
    other
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    cached_name(&tenant, "k");
    assert_eq!(cached_name(&tenant, "k"), ("Acme Two".into(), true));
    other
        .execute(
            "UPDATE tenant_meta SET value = 'Acme Three' WHERE key = 'name'",
            [],
        )
        .unwrap();
    assert_eq!(cached_name(&tenant, "k"), ("Acme Three".into(), false));
}

#[test]
fn an_answer_computed_across_a_commit_is_never_served() {
    let setup = Setup::new();
    let record = setup.provision("acme", &[]);
    let registry = setup.registry(quiet());
    let tenant = registry.open(Arc::clone(&record)).unwrap();
    let Lookup::Miss(ticket) = tenant.cached_read("k".into(), false) else {
        panic!("nothing was kept yet");
    };
    let stale = meta(&tenant.conn().unwrap(), "name");
    // The file changes after the answer was read, before it is kept.
    Connection::open(setup.path(&record))
        .unwrap()
        .execute(
            "UPDATE tenant_meta SET value = 'Renamed' WHERE key = 'name'",
            [],
        )
        .unwrap();
    tenant.keep_read(ticket, stale.as_bytes());
    assert_eq!(cached_name(&tenant, "k"), ("Renamed".into(), false));
}

#[test]
fn the_read_cache_keeps_to_its_budget_and_can_be_off() {
    let setup = Setup::new();
    let record = setup.provision("acme", &[]);
    let registry = setup.registry(RegistryConfig {
        read_cache_bytes: 16 * 1024,
        ..quiet()
    });
    let tenant = registry.open(Arc::clone(&record)).unwrap();
    let keep = |key: &str, len: usize| {
        let Lookup::Miss(ticket) = tenant.cached_read(key.to_string(), false) else {
            panic!("{key} was not kept before");
        };
        tenant.keep_read(ticket, &vec![b'x'; len]);
    };
    for i in 0..40 {
        keep(&format!("k{i}"), 500);
        if i == 20 {
            // Read since it was kept: the clock passes over it once.
            assert!(matches!(
                tenant.cached_read("k1".into(), false),
                Lookup::Hit(_)
            ));
        }
    }
    let (entries, bytes) = tenant.pool.reads.len();
    assert!(bytes <= 16 * 1024, "{bytes} bytes kept");
    assert_eq!(registry.shared.reads.used(), bytes);
    assert!((16..40).contains(&entries), "{entries} entries");
    // The most recent stay, the oldest went, but for the one read.
    assert!(matches!(
        tenant.cached_read("k39".into(), false),
        Lookup::Hit(_)
    ));
    assert!(matches!(
        tenant.cached_read("k1".into(), false),
        Lookup::Hit(_)
    ));
    assert!(matches!(
        tenant.cached_read("k0".into(), false),
        Lookup::Miss(_)
    ));
    // One answer may not take more than a sixteenth.
    keep("big", 1500);
    assert!(matches!(
        tenant.cached_read("big".into(), false),
        Lookup::Miss(_)
    ));
    // A commit: the next answer kept drops every other, and their bytes.
    tenant
        .write(|tx| -> Result<(), DbError> {
            tx.execute("UPDATE tenant_meta SET value = 'x' WHERE key = 'name'", [])?;
            Ok(())
        })
        .unwrap();
    keep("after", 10);
    assert_eq!(tenant.pool.reads.len().0, 1);
    // Closing the pool gives the budget back.
    drop(tenant);
    registry.evict(&record.id).unwrap();
    assert_eq!(registry.shared.reads.used(), 0);

    let off = setup.registry(RegistryConfig {
        read_cache_bytes: 0,
        ..quiet()
    });
    let tenant = off.open(record).unwrap();
    for _ in 0..3 {
        assert!(!cached_name(&tenant, "k").1);
    }
    assert_eq!(tenant.pool.reads.len(), (0, 0));
}

#[test]
fn pool_state_tells_open_and_last_access_without_opening_and_keeps_it_past_close() {
    let setup = Setup::new();
    let acme = setup.provision("acme", &[]);
    let globex = setup.provision("globex", &[]);
    let (registry, clock) = registry_at(
        &setup,
        RegistryConfig {
            idle_timeout: Some(Duration::from_secs(300)),
            ..RegistryConfig::default()
        },
    );
    let files = setup.tenant_files();
    let never = PoolState {
        open: false,
        last_access: None,
    };
    assert_eq!(registry.pool_state(&acme.id), never);
    assert_eq!(registry.pool_state("not-a-tenant"), never);
    assert_eq!(registry.stats(), RegistryStats::default(), "nothing opened");
    assert_eq!(setup.tenant_files(), files);

    clock.advance(Duration::from_secs(3600));
    let started = registry.shared_started_unix_secs();
    drop(registry.open(Arc::clone(&acme)).unwrap());
    let after_open = registry.pool_state(&acme.id);
    assert!(after_open.open);
    assert_eq!(after_open.last_access, Some(started + 3600));
    assert_eq!(registry.pool_state(&globex.id), never, "per tenant");

    // Closed for idleness, its last access stays known; a later use moves it.
    clock.advance(Duration::from_secs(300));
    assert_eq!(registry.close_idle(), 1);
    assert_eq!(
        registry.pool_state(&acme.id),
        PoolState {
            open: false,
            last_access: Some(started + 3600),
        }
    );
    clock.advance(Duration::from_secs(10));
    drop(registry.open(Arc::clone(&acme)).unwrap());
    assert_eq!(
        registry.pool_state(&acme.id).last_access,
        Some(started + 3910)
    );
    // Evicted (to be purged): forgotten.
    assert!(registry.evict(&acme.id).unwrap());
    assert_eq!(registry.pool_state(&acme.id), never);
}
