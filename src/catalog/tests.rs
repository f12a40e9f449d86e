use std::path::Path;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::*;
use crate::db::DbError;

use crate::test_kit::{add_tenant, assert_log_stayed_small, outside, Done, Setup};

#[test]
fn open_creates_the_layout_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(matches!(
        Catalog::open(&data, Create::Never),
        Err(CatalogError::Db(DbError::Missing(_)))
    ));
    assert!(!data.exists());

    let catalog = Catalog::open(&data, Create::IfMissing).unwrap();
    assert!(data.join(CENTRAL_DB).is_file());
    assert!(data.join(TENANTS_DIR).is_dir());
    assert_eq!(
        catalog.schema_version().unwrap(),
        db::central_migrations().last().unwrap().version
    );
    drop(catalog);
    // Existing catalogs open without the create flag.
    let again = Catalog::open(&data, Create::Never).unwrap();
    assert!(again.list().unwrap().is_empty());
}

#[test]
fn insert_and_look_up() {
    let Setup { dir: _dir, catalog } = Setup::new();
    let acme = add_tenant(&catalog, "acme", &["Acme.Test", "shop.acme.test"]);
    assert_eq!(acme.status, TenantStatus::Active);
    assert_eq!(acme.name, "acme Inc");
    assert_eq!(acme.primary_domain(), Some("acme.test"));
    assert_eq!(acme.domains.len(), 2);
    assert!(Uuid::parse_str(&acme.id).is_ok());
    assert_eq!(acme.settings, serde_json::json!({}));
    assert!(acme.deleted_at.is_none());

    assert_eq!(catalog.by_slug("acme").unwrap().unwrap().id, acme.id);
    assert_eq!(catalog.by_id(&acme.id).unwrap().unwrap().slug, "acme");
    assert_eq!(
        catalog.by_domain("ACME.test:8443").unwrap().unwrap().id,
        acme.id
    );
    assert_eq!(
        catalog.by_domain("shop.acme.test.").unwrap().unwrap().id,
        acme.id
    );
    assert!(catalog.by_domain("other.test").unwrap().is_none());
    assert!(catalog.by_slug("nope").unwrap().is_none());

    let json = serde_json::to_value(&*acme).unwrap();
    assert_eq!(json["status"], "active");
    assert_eq!(json["domains"][0]["is_primary"], true);
}

#[test]
fn cache_reloads_only_after_a_change_even_from_another_connection() {
    let Setup { dir, catalog } = Setup::new();
    add_tenant(&catalog, "acme", &["acme.test"]);
    catalog.by_slug("acme").unwrap();
    let before = catalog.snapshot_reloads();
    for _ in 0..100 {
        assert_eq!(catalog.by_slug("acme").unwrap().unwrap().name, "acme Inc");
        catalog.by_domain("acme.test").unwrap().unwrap();
    }
    assert_eq!(catalog.snapshot_reloads(), before, "nothing changed");

    let cli = outside(dir.path());
    cli.execute(
        "UPDATE tenants SET name = 'Renamed' WHERE slug = 'acme'",
        [],
    )
    .unwrap();
    assert_eq!(catalog.by_slug("acme").unwrap().unwrap().name, "Renamed");
    assert_eq!(catalog.snapshot_reloads(), before + 1);
    for _ in 0..100 {
        catalog.by_slug("acme").unwrap();
    }
    assert_eq!(catalog.snapshot_reloads(), before + 1);

    // A tenant inserted from outside appears; one deleted from outside goes.
    cli.execute_batch(
        "INSERT INTO tenants (id, slug, name, created_at, updated_at)
         VALUES ('00000000-0000-4000-8000-000000000001', 'cli', 'From CLI', 'x', 'x');",
    )
    .unwrap();
    assert!(catalog.by_slug("cli").unwrap().is_some());
    cli.execute("DELETE FROM tenants WHERE slug = 'cli'", [])
        .unwrap();
    assert!(catalog.by_slug("cli").unwrap().is_none());

    // Our own writes are seen at once.
    add_tenant(&catalog, "beta", &[]);
    assert!(catalog.by_slug("beta").unwrap().is_some());
}

#[test]
fn conflicts_are_distinct_errors() {
    let Setup { dir: _dir, catalog } = Setup::new();
    let acme = add_tenant(&catalog, "acme", &["acme.test"]);
    let beta = add_tenant(&catalog, "beta", &["beta.test"]);
    let id = Uuid::new_v4();
    assert!(matches!(
        catalog.insert_tenant(&id, "acme", "Other", &[]),
        Err(CatalogError::SlugTaken(s)) if s == "acme"
    ));
    assert!(matches!(
        catalog.insert_tenant(&id, "gamma", "Gamma", &["new.test".into(), "ACME.test".into()]),
        Err(CatalogError::DomainTaken(d)) if d == "acme.test"
    ));
    // Nothing of the refused tenant was left behind.
    assert!(catalog.by_slug("gamma").unwrap().is_none());
    assert!(catalog.by_domain("new.test").unwrap().is_none());

    assert!(matches!(
        catalog.rename(&beta.id, Some("acme"), None),
        Err(CatalogError::SlugTaken(_))
    ));
    assert!(matches!(
        catalog.add_domain(&beta.id, "acme.test"),
        Err(CatalogError::DomainTaken(_))
    ));
    assert!(matches!(
        catalog.insert_tenant(&id, "Bad Slug", "x", &[]),
        Err(CatalogError::Validation(ValidationError {
            field: "slug",
            ..
        }))
    ));
    assert!(matches!(
        catalog.insert_tenant(&id, "dup", "x", &["a.test".into(), "A.test".into()]),
        Err(CatalogError::Validation(ValidationError {
            field: "domain",
            ..
        }))
    ));
    // Idempotent re-adds and renames to the same slug are fine.
    catalog.add_domain(&acme.id, "acme.test").unwrap();
    catalog.rename(&acme.id, Some("acme"), None).unwrap();
    assert!(matches!(
        catalog.set_status(
            "00000000-0000-4000-8000-000000000000",
            TenantStatus::Deleted
        ),
        Err(CatalogError::NotFound(_))
    ));
}

#[test]
fn status_rename_and_domains() {
    let Setup { dir, catalog } = Setup::new();
    let acme = add_tenant(&catalog, "acme", &["a.acme.test", "b.acme.test"]);

    let deleted = catalog.set_status(&acme.id, TenantStatus::Deleted).unwrap();
    assert_eq!(deleted.status, TenantStatus::Deleted);
    let stamped = deleted.deleted_at.clone().expect("deleted_at set");
    let again = catalog.set_status(&acme.id, TenantStatus::Deleted).unwrap();
    assert_eq!(again.deleted_at.as_deref(), Some(stamped.as_str()));
    let active = catalog.set_status(&acme.id, TenantStatus::Active).unwrap();
    assert!(active.deleted_at.is_none());

    let renamed = catalog.rename(&acme.id, Some("acme-corp"), None).unwrap();
    assert_eq!(renamed.slug, "acme-corp");
    assert!(catalog.by_slug("acme").unwrap().is_none());
    let named = catalog
        .rename(&acme.id, None, Some("  Acme Corporation "))
        .unwrap();
    assert_eq!(
        (named.slug.as_str(), named.name.as_str()),
        ("acme-corp", "Acme Corporation")
    );
    let both = catalog
        .rename(&acme.id, Some("acme"), Some("Acme"))
        .unwrap();
    assert_eq!((both.slug.as_str(), both.name.as_str()), ("acme", "Acme"));
    // Setting what is there is no change: the row is not even written.
    let changes = || -> i64 {
        outside(dir.path())
            .query_row("SELECT count(*) FROM tenant_changes", [], |r| r.get(0))
            .unwrap()
    };
    let logged = changes();
    catalog
        .rename(&acme.id, Some("acme"), Some("Acme"))
        .unwrap();
    assert_eq!(changes(), logged);
    assert!(matches!(
        catalog.rename(&acme.id, None, Some(" ")),
        Err(CatalogError::Validation(ValidationError {
            field: "name",
            ..
        }))
    ));

    // Removing the primary promotes the next domain.
    let after = catalog.remove_domain(&acme.id, "a.acme.test").unwrap();
    assert_eq!(after.primary_domain(), Some("b.acme.test"));
    assert!(catalog.by_domain("a.acme.test").unwrap().is_none());
    assert!(matches!(
        catalog.remove_domain(&acme.id, "a.acme.test"),
        Err(CatalogError::DomainNotFound(_))
    ));
    let after = catalog.remove_domain(&acme.id, "b.acme.test").unwrap();
    assert!(after.domains.is_empty());
    let after = catalog.add_domain(&acme.id, "c.acme.test").unwrap();
    assert_eq!(after.primary_domain(), Some("c.acme.test"));
    let after = catalog.add_domain(&acme.id, "d.acme.test").unwrap();
    assert_eq!(after.primary_domain(), Some("c.acme.test"));
}

#[test]
fn delete_row_cascades_to_domains() {
    let Setup { dir, catalog } = Setup::new();
    let acme = add_tenant(&catalog, "acme", &["acme.test", "www.acme.test"]);
    catalog.delete_row(&acme.id).unwrap();
    assert!(catalog.by_id(&acme.id).unwrap().is_none());
    assert!(catalog.by_domain("acme.test").unwrap().is_none());
    let left: i64 = outside(dir.path())
        .query_row("SELECT count(*) FROM domains", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    assert!(matches!(
        catalog.delete_row(&acme.id),
        Err(CatalogError::NotFound(_))
    ));
}

#[test]
fn meta_values() {
    let Setup { dir: _dir, catalog } = Setup::new();
    assert_eq!(catalog.meta_get("secret").unwrap(), None);
    catalog.meta_set("secret", "one").unwrap();
    catalog.meta_set("secret", "two").unwrap();
    assert_eq!(catalog.meta_get("secret").unwrap().as_deref(), Some("two"));
}

#[test]
fn schema_keeps_rows_consistent() {
    let Setup {
        dir,
        catalog: _catalog,
    } = Setup::new();
    let cli = outside(dir.path());
    for bad in [
        // Unknown status.
        "INSERT INTO tenants (id, slug, name, status, created_at, updated_at)
         VALUES ('00000000-0000-4000-8000-000000000001', 'x', 'x', 'gone', 'x', 'x')",
        // Deleted without deleted_at.
        "INSERT INTO tenants (id, slug, name, status, created_at, updated_at)
         VALUES ('00000000-0000-4000-8000-000000000001', 'x', 'x', 'deleted', 'x', 'x')",
        // Settings that are not JSON.
        "INSERT INTO tenants (id, slug, name, settings, created_at, updated_at)
         VALUES ('00000000-0000-4000-8000-000000000001', 'x', 'x', '{', 'x', 'x')",
    ] {
        assert!(cli.execute(bad, []).is_err(), "{bad}");
    }
}

#[test]
fn host_normalization() {
    assert_eq!(normalize_host("Acme.Test"), "acme.test");
    assert_eq!(normalize_host("acme.test:8080"), "acme.test");
    assert_eq!(normalize_host("acme.test."), "acme.test");
    assert_eq!(normalize_host(" acme.test "), "acme.test");
    assert_eq!(normalize_host("acme.test:"), "acme.test:");
}

/// What a server holds against what a fresh open reads: the incremental refresh must never
/// drift from a full load.
fn assert_same_as_a_fresh_load(catalog: &Catalog, dir: &Path) {
    let held = catalog.snapshot().unwrap();
    let fresh = Catalog::open(dir, Create::Never)
        .unwrap()
        .snapshot()
        .unwrap();
    assert_eq!(*held, *fresh);
}

#[test]
fn tenant_changes_are_read_one_tenant_at_a_time_and_others_not_at_all() {
    let Setup { dir, catalog } = Setup::new();
    let acme = add_tenant(&catalog, "acme", &["acme.test", "shop.acme.test"]);
    let beta = add_tenant(&catalog, "beta", &["beta.test"]);
    add_tenant(&catalog, "gamma", &["gamma.test"]);
    assert_same_as_a_fresh_load(&catalog, dir.path());

    // A commit that touches neither tenants nor domains: nothing is rebuilt.
    let before = catalog.snapshot_reloads();
    let cli = outside(dir.path());
    // As the CLI's connections have it: deleting a tenant takes its domains.
    cli.pragma_update(None, "foreign_keys", "ON").unwrap();
    cli.execute(
        "INSERT INTO meta (key, value) VALUES ('unrelated', 'x')",
        [],
    )
    .unwrap();
    let kept = catalog.snapshot().unwrap();
    assert_eq!(catalog.snapshot_reloads(), before);
    assert!(kept.by_slug("acme").is_some());

    // A slug and a domain pass from one tenant to another in one commit, from outside.
    cli.execute_batch(&format!(
        "BEGIN;
         UPDATE tenants SET slug = 'acme-old' WHERE id = '{a}';
         UPDATE tenants SET slug = 'acme' WHERE id = '{b}';
         UPDATE domains SET tenant_id = '{b}', is_primary = 0 WHERE domain = 'shop.acme.test';
         COMMIT;",
        a = acme.id,
        b = beta.id
    ))
    .unwrap();
    let now = catalog.snapshot().unwrap();
    assert_eq!(catalog.snapshot_reloads(), before + 1);
    assert_eq!(now.by_slug("acme").unwrap().id, beta.id);
    assert_eq!(now.by_slug("acme-old").unwrap().id, acme.id);
    assert!(now.by_slug("beta").is_none());
    assert_eq!(now.by_domain("shop.acme.test").unwrap().id, beta.id);
    assert_eq!(now.by_domain("acme.test").unwrap().id, acme.id);
    assert_same_as_a_fresh_load(&catalog, dir.path());

    // Deleted from outside (its domains go with it), then changes made here.
    cli.execute("DELETE FROM tenants WHERE slug = 'gamma'", [])
        .unwrap();
    catalog
        .set_status(&acme.id, TenantStatus::Suspended)
        .unwrap();
    add_tenant(&catalog, "delta", &["delta.test"]);
    let now = catalog.snapshot().unwrap();
    assert!(now.by_slug("gamma").is_none());
    assert!(now.by_domain("gamma.test").is_none());
    assert_eq!(
        now.by_slug("acme-old").unwrap().status,
        TenantStatus::Suspended
    );
    assert_same_as_a_fresh_load(&catalog, dir.path());
}

#[test]
fn a_pruned_or_rewound_change_log_means_a_full_reload() {
    let Setup { dir, catalog } = Setup::new();
    add_tenant(&catalog, "acme", &[]);
    catalog.snapshot().unwrap();
    let cli = outside(dir.path());
    // Entries this server has not read are gone (pruned): it must not trust the rest.
    cli.execute_batch(
        "INSERT INTO tenants (id, slug, name, created_at, updated_at)
         VALUES ('00000000-0000-4000-8000-000000000001', 'lost', 'Lost', 'x', 'x');
         INSERT INTO tenants (id, slug, name, created_at, updated_at)
         VALUES ('00000000-0000-4000-8000-000000000002', 'kept', 'Kept', 'x', 'x');
         DELETE FROM tenant_changes
          WHERE seq < (SELECT max(seq) FROM tenant_changes);",
    )
    .unwrap();
    let now = catalog.snapshot().unwrap();
    assert!(now.by_slug("lost").is_some(), "found by a full reload");
    assert_same_as_a_fresh_load(&catalog, dir.path());

    // The log went back (a catalog restored from an older copy would do this).
    cli.execute_batch(
        "DELETE FROM tenant_changes;
         UPDATE sqlite_sequence SET seq = 0 WHERE name = 'tenant_changes';
         UPDATE tenants SET name = 'Renamed' WHERE slug = 'acme';",
    )
    .unwrap();
    assert_eq!(catalog.by_slug("acme").unwrap().unwrap().name, "Renamed");
    assert_same_as_a_fresh_load(&catalog, dir.path());
}

#[test]
fn the_change_log_prunes_itself() {
    let Setup { dir, catalog } = Setup::new();
    add_tenant(&catalog, "acme", &[]);
    let cli = outside(dir.path());
    cli.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000)
         INSERT INTO tenant_changes (tenant_id) SELECT 'x' FROM n;",
    )
    .unwrap();
    let (rows, last): (i64, i64) = cli
        .query_row("SELECT count(*), max(seq) FROM tenant_changes", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(last > 12000);
    assert!((10_000..=11_000).contains(&rows), "{rows} entries kept");
}

/// The catalog keeps SQLite's own automatic checkpoint, which the committing connection runs once
/// its write lock is released; a tenant's had to be replaced (see `tenancy::checkpoint`). Under
/// back-to-back writers with readers beside them the catalog's log still starts over: with the
/// automatic checkpoint off, this grew it to about 90 MB.
#[test]
fn the_catalogs_log_starts_over_under_back_to_back_writers() {
    const WRITERS: usize = 4;
    const WRITES_EACH: usize = 1_000;
    let Setup { dir, catalog } = Setup::new();
    let writing = std::sync::atomic::AtomicUsize::new(WRITERS);
    // A page and more per entry, as a burst of audited actions with large details would write.
    let details = serde_json::json!({ "note": "x".repeat(5_000) });
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while writing.load(Ordering::Relaxed) > 0 {
                    catalog.admin_count().unwrap();
                }
            });
        }
        for _ in 0..WRITERS {
            s.spawn(|| {
                let _done = Done(&writing);
                for _ in 0..WRITES_EACH {
                    let mut entry = AuditEntry::new(ActorType::System, "test.burst");
                    entry.details = details.clone();
                    catalog.record_audit(&entry).unwrap();
                }
            });
        }
    });
    let wal = db::database_files(&dir.path().join(CENTRAL_DB))[1].clone();
    assert_log_stayed_small(&wal, WRITERS * WRITES_EACH, 16 << 20);
}

/// Beside Litestream (`serve --checkpoints litestream`) no catalog connection checkpoints on its
/// own: while Litestream is away, a checkpoint that lets the log start over makes it lose its
/// place (see `tests/api/litestream.rs`).
#[test]
fn the_catalog_leaves_checkpoints_to_litestream_when_told() {
    let dir = tempfile::tempdir().unwrap();
    for (autocheckpoint, expected) in [(true, 1000), (false, 0)] {
        let catalog = Catalog::open_with(dir.path(), Create::IfMissing, autocheckpoint).unwrap();
        let pooled: i64 = catalog
            .read(|db| {
                db.query_one("PRAGMA wal_autocheckpoint", &[], |r| r.get(0))
                    .map_err(CatalogError::from)
            })
            .unwrap();
        assert_eq!(pooled, expected, "{autocheckpoint}");
    }
}

/// One validator, two strictnesses: an account may be on a local host (the first admin is
/// `admin@localhost`); an address to write to needs a dotted domain.
#[test]
fn account_emails_may_be_local_and_mailboxes_may_not() {
    for email in ["admin@localhost", "a@b", "a@-b.co", "a@b..co"] {
        assert_eq!(check_email(email, EmailRule::Account), Ok(()), "{email}");
        assert!(check_email(email, EmailRule::Mailbox).is_err(), "{email}");
    }
    for email in ["a@b.co", "first.last+tag@sub.example.org"] {
        assert_eq!(check_email(email, EmailRule::Account), Ok(()), "{email}");
        assert_eq!(check_email(email, EmailRule::Mailbox), Ok(()), "{email}");
    }
    for email in ["", "@b.co", "a b@c.de", "a@@b.co", "a@"] {
        assert!(check_email(email, EmailRule::Account).is_err(), "{email}");
        assert!(check_email(email, EmailRule::Mailbox).is_err(), "{email}");
    }
    assert_eq!(
        normalize_email(" Admin@LocalHost ").unwrap(),
        "admin@localhost"
    );
}

/// Tables whose changes nothing kept depends on (see `0007_catalog_changes.sql`).
const UNCOUNTED: [&str; 8] = [
    "schema_migrations",
    "audit_log",
    "login_throttle",
    "jobs",
    "schedules",
    "inbound_deliveries",
    "tenant_changes",
    "catalog_changes",
];

/// A new table is counted unless it says otherwise: without its triggers, a change to it would
/// leave the identity reads and the tenant snapshot kept as they were.
#[test]
fn every_catalog_table_counts_its_changes_but_the_listed_ones() {
    let setup = Setup::new();
    let conn = setup.outside();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(tables.len() > UNCOUNTED.len(), "{tables:?}");
    for table in tables.iter().filter(|t| !UNCOUNTED.contains(&t.as_str())) {
        for event in ["insert", "update", "delete"] {
            let trigger = format!("{table}_counted_{event}");
            let found: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?1
                       AND tbl_name = ?2 AND sql LIKE '%catalog_changes%'",
                    [&trigger, table],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(found, 1, "{table} has no trigger {trigger}");
        }
    }
}

/// Another process's job rows and audit entries move `data_version` but leave what is kept
/// alone; its change to a session, a user or `meta` moves the generation, so the next request
/// reads again.
#[test]
fn only_counted_commits_of_another_process_drop_what_is_kept() {
    let setup = Setup::new();
    let before = setup.catalog.view().unwrap().generation;
    let other = setup.outside();
    other
        .execute(
            "INSERT INTO jobs (queue, kind, payload, run_at, created_at)
             VALUES ('default', 'noop', '{}', 0, 0)",
            [],
        )
        .unwrap();
    other
        .execute(
            "INSERT INTO audit_log (at, actor_type, action) VALUES (0, 'system', 'probe')",
            [],
        )
        .unwrap();
    assert_eq!(
        setup.catalog.view().unwrap().generation,
        before,
        "a job row and an audit entry change nothing kept"
    );
    other
        .execute("INSERT INTO meta (key, value) VALUES ('probe', '1')", [])
        .unwrap();
    let after = setup.catalog.view().unwrap().generation;
    assert_ne!(after, before, "a counted table changed");
    other
        .execute(
            "INSERT INTO jobs (queue, kind, payload, run_at, created_at)
             VALUES ('default', 'noop', '{}', 0, 0)",
            [],
        )
        .unwrap();
    assert_eq!(setup.catalog.view().unwrap().generation, after);
    // A migration that rebuilds a counted table fires none of its triggers; it changes the
    // schema, which counts.
    other
        .execute_batch("CREATE TABLE rebuilt_probe (x INTEGER); DROP TABLE rebuilt_probe;")
        .unwrap();
    assert_ne!(setup.catalog.view().unwrap().generation, after);
}
