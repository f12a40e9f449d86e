//! The tenancy core through the real server: identification and its conflicts, lifecycle states,
//! first access and migrations, broken tenant files, the pool cap, and hostile slugs.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;
use tenantd::db::Migration;
use tenantd::tenancy::lifecycle::{self, MigrateConfig};

use crate::support::{eventually, spawn_app, spawn_app_with, spawn_serve, tenant_id_of, TestApp};

/// Request headers in a table of cases.
type Headers<'a> = Vec<(&'a str, &'a str)>;

fn id(record: &serde_json::Value) -> String {
    record["id"].as_str().expect("record id").to_string()
}

/// Opens a tenant's file directly, as an operator (or an accident) would.
fn sqlite(app: &TestApp, tenant_id: &str) -> rusqlite::Connection {
    rusqlite::Connection::open(app.tenant_file(tenant_id)).expect("open tenant file")
}

#[test]
fn every_identification_method_reaches_the_tenant() {
    let app = spawn_app();
    let acme = id(&app.create_tenant("acme", &["acme.test"]));
    let globex = id(&app.create_tenant("globex", &[]));
    let upper_id = acme.to_uppercase();
    let cases: Vec<(&str, &str, Headers, &str)> = vec![
        ("path prefix", "/t/acme/api/tenant", vec![], &acme),
        (
            "X-Tenant-ID",
            "/api/tenant",
            vec![("X-Tenant-ID", &acme)],
            &acme,
        ),
        (
            "X-Tenant-ID in upper case",
            "/api/tenant",
            vec![("X-Tenant-ID", &upper_id)],
            &acme,
        ),
        (
            "X-Tenant-Slug",
            "/api/tenant",
            vec![("X-Tenant-Slug", "globex")],
            &globex,
        ),
        (
            "custom domain",
            "/api/tenant",
            vec![("Host", "acme.test")],
            &acme,
        ),
        (
            "custom domain with port",
            "/api/tenant",
            vec![("Host", "ACME.test:8080")],
            &acme,
        ),
        (
            "subdomain",
            "/api/tenant",
            vec![("Host", "globex.localhost")],
            &globex,
        ),
        (
            "subdomain with port",
            "/api/tenant",
            vec![("Host", "globex.localhost:8080")],
            &globex,
        ),
        (
            "path and host agreeing",
            "/t/acme/api/tenant",
            vec![("Host", "acme.localhost")],
            &acme,
        ),
    ];
    for (name, path, headers, want) in cases {
        let reply = app.get(path, &headers);
        assert_eq!(
            tenant_id_of(&reply),
            Ok(want.to_string()),
            "{name}: {}",
            reply.text()
        );
    }
    let reply = app.get("/t/acme/api/tenant", &[]);
    let json = reply.json();
    assert_eq!(json["slug"], "acme");
    assert_eq!(json["name"], "acme Inc");
    assert_eq!(json["status"], "active");
    let binary = tenantd::db::tenant_migrations().last().unwrap().version;
    assert_eq!(json["schema_version"], binary);
}

#[test]
fn conflicting_unknown_and_misplaced_requests_are_refused() {
    let app = spawn_app();
    let acme = id(&app.create_tenant("acme", &["acme.test"]));
    app.create_tenant("globex", &["globex.test"]);
    let admin_auth = format!("Bearer {}", app.admin_token);
    let cases: Vec<(&str, &str, Headers, u16, &str)> = vec![
        (
            "path and header differ",
            "/t/acme/api/tenant",
            vec![("X-Tenant-Slug", "globex")],
            400,
            "tenant_conflict",
        ),
        (
            "subdomain and id differ",
            "/api/tenant",
            vec![("Host", "globex.localhost"), ("X-Tenant-ID", &acme)],
            400,
            "tenant_conflict",
        ),
        (
            "domain and path differ",
            "/t/acme/api/tenant",
            vec![("Host", "globex.test")],
            400,
            "tenant_conflict",
        ),
        (
            "unknown slug in path",
            "/t/nope/api/tenant",
            vec![],
            404,
            "tenant_not_found",
        ),
        (
            "unknown slug header",
            "/api/tenant",
            vec![("X-Tenant-Slug", "nope")],
            404,
            "tenant_not_found",
        ),
        (
            "malformed id header",
            "/api/tenant",
            vec![("X-Tenant-ID", "not-a-uuid")],
            404,
            "tenant_not_found",
        ),
        (
            "unknown subdomain",
            "/api/tenant",
            vec![("Host", "nope.localhost")],
            404,
            "tenant_not_found",
        ),
        (
            "two-label subdomain",
            "/api/tenant",
            vec![("Host", "a.acme.localhost")],
            404,
            "tenant_not_found",
        ),
        (
            "tenant route on the central host",
            "/api/tenant",
            vec![],
            404,
            "tenant_required",
        ),
        (
            "admin route on a tenant",
            "/t/acme/api/admin/tenants",
            vec![("Authorization", admin_auth.as_str())],
            404,
            "not_found",
        ),
        (
            "unknown route on a tenant",
            "/t/acme/api/nothing",
            vec![],
            404,
            "not_found",
        ),
        (
            "traversal in the path prefix",
            "/t/..%2F..%2Fcentral/api/tenant",
            vec![],
            404,
            "tenant_not_found",
        ),
    ];
    for (name, path, headers, status, code) in cases {
        let reply = app.get(path, &headers);
        assert_eq!(
            (reply.status, reply.error_code()),
            (status, code.to_string()),
            "{name}"
        );
    }
    // The central host is the base domain, an IP address, or any host that names no tenant.
    for host in ["localhost", "127.0.0.1:9", "example.org"] {
        assert_eq!(app.get("/healthz", &[("Host", host)]).status, 200, "{host}");
    }
}

#[test]
fn suspended_deleted_and_restored_tenants() {
    let app = spawn_app();
    let acme = id(&app.create_tenant("acme", &["acme.test"]));
    let by_every_method = |app: &TestApp| -> Vec<u16> {
        [
            app.get("/t/acme/api/tenant", &[]),
            app.get("/api/tenant", &[("X-Tenant-ID", &acme)]),
            app.get("/api/tenant", &[("X-Tenant-Slug", "acme")]),
            app.get("/api/tenant", &[("Host", "acme.test")]),
            app.get("/api/tenant", &[("Host", "acme.localhost")]),
        ]
        .iter()
        .map(|r| r.status)
        .collect()
    };
    assert_eq!(by_every_method(&app), vec![200; 5]);

    let suspended = app.admin("POST", "/api/admin/tenants/acme/suspend", None);
    assert_eq!(suspended.json()["status"], "suspended");
    assert_eq!(by_every_method(&app), vec![403; 5]);
    assert_eq!(
        app.get("/t/acme/api/tenant", &[]).error_code(),
        "tenant_suspended"
    );

    app.admin("POST", "/api/admin/tenants/acme/activate", None);
    assert_eq!(by_every_method(&app), vec![200; 5]);

    let deleted = app.admin("DELETE", "/api/admin/tenants/acme", None);
    assert_eq!(deleted.json()["status"], "deleted");
    assert_eq!(by_every_method(&app), vec![404; 5]);
    assert!(
        app.tenant_file(&acme).exists(),
        "a soft delete keeps the file"
    );

    // Suspending a deleted tenant makes no sense; restoring does.
    assert_eq!(
        app.admin("POST", "/api/admin/tenants/acme/suspend", None)
            .status,
        409
    );
    let restored = app.admin("POST", &format!("/api/admin/tenants/{acme}/restore"), None);
    assert_eq!(restored.json()["status"], "active");
    assert_eq!(by_every_method(&app), vec![200; 5]);
    assert_eq!(
        app.admin("POST", "/api/admin/tenants/acme/restore", None)
            .error_code(),
        "tenant_not_deleted"
    );
}

#[test]
fn purge_removes_the_file_with_its_wal_and_shm_then_the_row() {
    let app = spawn_app();
    let acme = id(&app.create_tenant("acme", &["acme.test"]));
    // Opened and used, so the -wal and -shm files exist.
    assert_eq!(app.get("/t/acme/api/tenant", &[]).status, 200);
    let files: Vec<_> = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut p = app.tenant_file(&acme).into_os_string();
            p.push(suffix);
            std::path::PathBuf::from(p)
        })
        .collect();
    assert!(files.iter().all(|f| f.exists()), "{files:?}");

    let early = app.admin("POST", "/api/admin/tenants/acme/purge", None);
    assert_eq!(
        (early.status, early.error_code().as_str()),
        (409, "tenant_not_deleted")
    );
    assert!(files[0].exists());

    app.admin("DELETE", "/api/admin/tenants/acme", None);
    let purged = app.admin("POST", "/api/admin/tenants/acme/purge", None);
    assert_eq!(purged.status, 200, "{}", purged.text());
    for f in &files {
        assert!(!f.exists(), "{} still exists", f.display());
    }
    assert_eq!(
        app.admin("GET", "/api/admin/tenants/acme", None).status,
        404
    );
    // The slug and the domain are free again.
    let again = id(&app.create_tenant("acme", &["acme.test"]));
    assert_ne!(again, acme);
}

#[test]
fn rename_and_domains_take_effect_at_once() {
    let app = spawn_app();
    let acme = id(&app.create_tenant("acme", &[]));
    assert_eq!(app.get("/t/acme/api/tenant", &[]).status, 200);

    let renamed = app.admin(
        "PATCH",
        "/api/admin/tenants/acme",
        Some(json!({"slug": "acme2"})),
    );
    assert_eq!(renamed.json()["slug"], "acme2");
    assert_eq!(app.get("/t/acme/api/tenant", &[]).status, 404);
    let reply = app.get("/t/acme2/api/tenant", &[]);
    assert_eq!(tenant_id_of(&reply), Ok(acme.clone()));
    assert_eq!(
        reply.json()["slug"],
        "acme2",
        "the file records the new slug"
    );

    let added = app.admin(
        "POST",
        "/api/admin/tenants/acme2/domains",
        Some(json!({"domain": "shop.acme.test"})),
    );
    assert_eq!(added.status, 200, "{}", added.text());
    assert_eq!(
        tenant_id_of(&app.get("/api/tenant", &[("Host", "shop.acme.test")])),
        Ok(acme.clone())
    );
    let removed = app.admin(
        "DELETE",
        "/api/admin/tenants/acme2/domains/shop.acme.test",
        None,
    );
    assert_eq!(removed.status, 200);
    // The host names no tenant any more: it is central, where /api/tenant does not exist.
    let reply = app.get("/api/tenant", &[("Host", "shop.acme.test")]);
    assert_eq!(reply.error_code(), "tenant_required");
}

#[test]
fn changes_made_by_the_cli_reach_the_running_server() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    assert_eq!(app.get("/t/acme/api/tenant", &[]).status, 200);

    let out = app.cli(&["tenants", "suspend", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The very next request: no polling, no delay.
    assert_eq!(app.get("/t/acme/api/tenant", &[]).status, 403);

    let out = app.cli(&["tenants", "activate", "acme"]);
    assert!(out.status.success());
    assert_eq!(app.get("/t/acme/api/tenant", &[]).status, 200);

    let out = app.cli(&[
        "tenants", "create", "initech", "--name", "Initech", "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    app.join(app.owner_id, "initech", "admin");
    assert_eq!(
        tenant_id_of(&app.get("/t/initech/api/tenant", &[])),
        Ok(id(&created))
    );

    let out = app.cli(&["tenants", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let slugs: Vec<&str> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, vec!["acme", "initech"]);
}

/// The binary's tenant migrations plus one more, so that tenants provisioned at the binary's
/// version have a real migration pending on their first access.
fn with_pending_migration() -> &'static [Migration] {
    static SET: OnceLock<Vec<Migration>> = OnceLock::new();
    SET.get_or_init(|| {
        let mut set = tenantd::db::tenant_migrations().to_vec();
        let next = set.last().map_or(1, |m| m.version + 1);
        let file = format!("schema/tenant/{next:04}_probe.sql");
        set.push(
            Migration::new(
                &file,
                "CREATE TABLE probe (id INTEGER PRIMARY KEY, note TEXT);",
            )
            .unwrap(),
        );
        set
    })
}

fn latest() -> u32 {
    with_pending_migration().last().unwrap().version
}

fn applied_versions(app: &TestApp, tenant_id: &str) -> Vec<u32> {
    let conn = sqlite(app, tenant_id);
    let mut stmt = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn all_versions() -> Vec<u32> {
    with_pending_migration().iter().map(|m| m.version).collect()
}

#[test]
fn many_first_requests_at_once_migrate_a_tenant_exactly_once() {
    let app = spawn_app_with(|c| c.registry.migrations = with_pending_migration());
    let acme = id(&app.create_tenant("acme", &[]));
    assert_eq!(
        applied_versions(&app, &acme),
        (1..latest()).collect::<Vec<u32>>()
    );

    // A second run of the migration would fail ("table probe already exists") and answer 503.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|_| s.spawn(|| app.get("/t/acme/api/tenant", &[]).status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses, vec![200; 32]);
    assert_eq!(applied_versions(&app, &acme), all_versions());
    let reply = app.get("/t/acme/api/tenant", &[]);
    assert_eq!(reply.json()["schema_version"], latest());
}

#[test]
fn migrate_beside_a_live_server_applies_each_migration_once() {
    let app = spawn_app_with(|c| c.registry.migrations = with_pending_migration());
    let tenants: Vec<String> = (0..6)
        .map(|i| id(&app.create_tenant(&format!("t{i}"), &[])))
        .collect();
    // What `tenantd migrate` runs, on its own connections, while requests open the same tenants.
    let (summary, statuses) = std::thread::scope(|s| {
        let migrate = s.spawn(|| {
            let config = MigrateConfig {
                workers: 3,
                migrations: with_pending_migration(),
                ..MigrateConfig::default()
            };
            lifecycle::migrate_all(&app.app.catalog, &config).unwrap()
        });
        let requests: Vec<_> = (0..6)
            .flat_map(|i| [i, i])
            .map(|i| {
                let app = &app;
                s.spawn(move || app.get(&format!("/t/t{i}/api/tenant"), &[]).status)
            })
            .collect();
        (
            migrate.join().unwrap(),
            requests
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    assert_eq!(summary.failed_count(), 0, "{summary:?}");
    assert_eq!(statuses, vec![200; 12]);
    for t in &tenants {
        assert_eq!(applied_versions(&app, t), all_versions());
    }
}

#[test]
fn a_broken_tenant_answers_503_while_the_others_work() {
    let app = spawn_app_with(|c| c.registry.migrations = with_pending_migration());
    let healthy = id(&app.create_tenant("healthy", &[]));
    let failing = id(&app.create_tenant("failing", &[]));
    let corrupt = id(&app.create_tenant("corrupt", &[]));
    let altered = id(&app.create_tenant("altered", &[]));
    let missing = id(&app.create_tenant("missing", &[]));
    let empty = id(&app.create_tenant("empty", &[]));
    let foreign = id(&app.create_tenant("foreign", &[]));

    // The pending migration fails here: its table is already there.
    sqlite(&app, &failing)
        .execute_batch("CREATE TABLE probe (x);")
        .unwrap();
    // A file that is not a database at all.
    std::fs::write(
        app.tenant_file(&corrupt),
        b"this is not a SQLite database, not at all",
    )
    .unwrap();
    // An applied migration that no longer matches the binary's.
    sqlite(&app, &altered)
        .execute_batch("UPDATE schema_migrations SET checksum = 'edited';")
        .unwrap();
    // No file.
    std::fs::remove_file(app.tenant_file(&missing)).unwrap();
    // A truncated file: it must not come back as a fresh, empty tenant.
    std::fs::write(app.tenant_file(&empty), b"").unwrap();
    // Another tenant's file restored under this one's name.
    std::fs::copy(app.tenant_file(&healthy), app.tenant_file(&foreign)).unwrap();

    let broken = [
        "failing", "corrupt", "altered", "missing", "empty", "foreign",
    ];
    for slug in broken {
        let reply = app.get(&format!("/t/{slug}/api/tenant"), &[]);
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (503, "tenant_unavailable"),
            "{slug}"
        );
        assert_eq!(
            tenant_id_of(&app.get("/t/healthy/api/tenant", &[])),
            Ok(healthy.clone())
        );
    }
    // The failed migration left the tenant where it was; nothing was recreated or written.
    assert_eq!(
        applied_versions(&app, &failing),
        (1..latest()).collect::<Vec<u32>>()
    );
    assert!(!app.tenant_file(&missing).exists());
    assert_eq!(std::fs::metadata(app.tenant_file(&empty)).unwrap().len(), 0);
    assert_eq!(
        applied_versions(&app, &foreign),
        (1..latest()).collect::<Vec<u32>>()
    );
}

#[test]
fn migrate_reports_each_broken_tenant_and_exits_1() {
    let app = spawn_app();
    let healthy = id(&app.create_tenant("healthy", &[]));
    let corrupt = id(&app.create_tenant("corrupt", &[]));
    let altered = id(&app.create_tenant("altered", &[]));
    let missing = id(&app.create_tenant("missing", &[]));
    let empty = id(&app.create_tenant("empty", &[]));
    let foreign = id(&app.create_tenant("foreign", &[]));
    std::fs::write(app.tenant_file(&corrupt), b"not a database").unwrap();
    sqlite(&app, &altered)
        .execute_batch("UPDATE schema_migrations SET checksum = 'edited';")
        .unwrap();
    std::fs::remove_file(app.tenant_file(&missing)).unwrap();
    std::fs::write(app.tenant_file(&empty), b"").unwrap();
    std::fs::copy(app.tenant_file(&healthy), app.tenant_file(&foreign)).unwrap();

    let out = app.cli(&["migrate"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for slug in ["corrupt", "altered", "missing", "empty", "foreign"] {
        assert!(
            stdout.contains(&format!("FAILED {slug}")),
            "{slug}: {stdout}"
        );
    }
    assert!(!stdout.contains("FAILED healthy"), "{stdout}");
    assert!(stdout.contains("5 failed"), "{stdout}");
    assert!(
        stdout.contains("schema/tenant/0001_init.sql"),
        "the altered file is named: {stdout}"
    );
    assert!(app
        .cli(&["migrate", "--tenant", "healthy"])
        .status
        .success());
    let status = app.cli(&["migrate", "--status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    let binary = tenantd::db::tenant_migrations().last().unwrap().version;
    assert!(
        status.contains("healthy")
            && status.contains(&format!("version {binary} (binary {binary})")),
        "{status}"
    );
}

#[test]
fn create_is_all_or_nothing() {
    let app = spawn_app();
    app.create_tenant("acme", &["acme.test"]);
    let files = || {
        std::fs::read_dir(app.data.path().join("tenants"))
            .unwrap()
            .count()
    };
    assert_eq!(files(), 1);

    // The second domain is taken: no row, no file.
    let reply = app.admin(
        "POST",
        "/api/admin/tenants",
        Some(json!({"slug": "globex", "name": "Globex", "domains": ["globex.test", "acme.test"]})),
    );
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (409, "domain_taken")
    );
    assert_eq!(
        app.admin("GET", "/api/admin/tenants/globex", None).status,
        404
    );
    assert_eq!(files(), 1);

    // Racing creates of one slug: one wins; the losers fail early or at the final catalog
    // insert, after their file was made, and leave nothing behind either way.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    app.admin(
                        "POST",
                        "/api/admin/tenants",
                        Some(json!({"slug": "race", "name": "Race"})),
                    )
                    .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 201 || s == 409),
        "{statuses:?}"
    );
    assert_eq!(files(), 2);
}

#[test]
fn hostile_slugs_and_names_are_refused_and_write_nothing() {
    let app = spawn_app();
    let before = std::fs::read_dir(app.data.path()).unwrap().count();
    let long = "a".repeat(64);
    let slugs = [
        "../x",
        "..",
        "%2e%2e",
        "a/b",
        "a\u{0}b",
        long.as_str(),
        "Acme",
        "café",
        "ñ",
        "",
        "-acme",
        "acme-",
        "ac me",
        "admin",
        "api",
        "www",
        "6f1c2a7e-0b3d-4c5e-8f9a-1b2c3d4e5f60",
    ];
    for slug in slugs {
        let reply = app.admin(
            "POST",
            "/api/admin/tenants",
            Some(json!({"slug": slug, "name": "X"})),
        );
        assert_eq!(reply.status, 422, "{slug:?}: {}", reply.text());
        assert!(
            reply.json()["error"]["fields"]["slug"].is_string(),
            "{slug:?}: {}",
            reply.text()
        );
    }
    for name in ["", "   ", "a\u{0}b", &"n".repeat(101)] {
        let reply = app.admin(
            "POST",
            "/api/admin/tenants",
            Some(json!({"slug": "fine", "name": name})),
        );
        assert_eq!(reply.status, 422, "{name:?}");
        assert!(reply.json()["error"]["fields"]["name"].is_string());
    }
    // Nothing was created anywhere: not in tenants/, not beside it.
    assert_eq!(
        std::fs::read_dir(app.data.path().join("tenants"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(std::fs::read_dir(app.data.path()).unwrap().count(), before);
    assert!(!app.data.path().join("x.db").exists());
    // The CLI refuses the same way.
    let out = app.cli(&["tenants", "create", "../x", "--name", "X"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_dir(app.data.path().join("tenants"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn the_admin_api_needs_its_token_and_well_formed_json() {
    let app = spawn_app();
    let admin_auth = format!("Bearer {}", app.admin_token);
    let cases: Vec<(&str, Headers, Option<&str>, u16, &str)> = vec![
        ("no token", vec![], None, 401, "unauthorized"),
        (
            "wrong token",
            vec![("Authorization", "Bearer wrong")],
            None,
            401,
            "unauthorized",
        ),
        (
            "not JSON",
            vec![("Authorization", admin_auth.as_str())],
            Some("{slug"),
            400,
            "invalid_json",
        ),
        (
            "not an object",
            vec![("Authorization", admin_auth.as_str())],
            Some("[1]"),
            400,
            "invalid_json",
        ),
        (
            "a form, not JSON",
            vec![
                ("Authorization", admin_auth.as_str()),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some("slug=a"),
            415,
            "unsupported_media_type",
        ),
        (
            "no name",
            vec![("Authorization", admin_auth.as_str())],
            Some(r#"{"slug":"ok"}"#),
            422,
            "validation_failed",
        ),
        (
            "domains not a list",
            vec![("Authorization", admin_auth.as_str())],
            Some(r#"{"slug":"ok","name":"Ok","domains":"a.test"}"#),
            422,
            "validation_failed",
        ),
    ];
    for (name, headers, body, status, code) in cases {
        let method = if body.is_some() { "POST" } else { "GET" };
        let reply = app.call(method, "/api/admin/tenants", &headers, body);
        assert_eq!(
            (reply.status, reply.error_code()),
            (status, code.to_string()),
            "{name}"
        );
    }
    let listed = app.admin("GET", "/api/admin/tenants", None);
    assert_eq!(listed.json(), json!({"tenants": []}));
}

#[test]
fn open_descriptors_stay_bounded_by_the_pool_cap() {
    use std::process::Command;

    // A server of its own, so that only its descriptors are counted.
    let data = tempfile::tempdir().unwrap();
    crate::cli::init_data_dir(data.path());
    let cap = 8;
    for i in 0..(cap * 4) {
        let out = Command::new(env!("CARGO_BIN_EXE_tenantd"))
            .args([
                "tenants",
                "create",
                &format!("t{i}"),
                "--name",
                "T",
                "--data",
            ])
            .arg(data.path())
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tenantd"))
            .args(args)
            .arg("--data")
            .arg(data.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(&[
        "users",
        "create",
        "--email",
        "fd@example.test",
        "--name",
        "Fd",
        "--password",
        "fd-password-1",
    ]);
    for i in 0..(cap * 4) {
        cli(&[
            "members",
            "add",
            "--tenant",
            &format!("t{i}"),
            "--email",
            "fd@example.test",
            "--role",
            "viewer",
        ]);
    }
    let server = spawn_serve(data.path(), &["--max-open-tenants", &cap.to_string()], 1);
    let addr = server.addr;
    let mut login = crate::support::Client::connect(addr);
    let body = r#"{"email":"fd@example.test","password":"fd-password-1"}"#;
    login.send(
        format!(
            "POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let token = login.reply().json()["token"].as_str().unwrap().to_string();
    drop(login);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
            .unwrap()
            .count()
    };
    let mut max_seen = 0;
    for round in 0..2 {
        for i in 0..(cap * 4) {
            let mut c = crate::support::Client::connect(addr);
            c.send(format!("GET /t/t{i}/api/tenant HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes());
            assert_eq!(c.reply().status, 200, "round {round}, tenant {i}");
            drop(c);
            max_seen = max_seen.max(fds());
        }
    }
    drop(server);
    // Each open tenant pool holds about three descriptors (db, -wal, -shm) per connection.
    assert!(
        max_seen < 3 * cap + 64,
        "{max_seen} descriptors open with a cap of {cap} pools"
    );
}

#[test]
fn serve_on_an_empty_directory_creates_what_it_needs() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("fresh");
    let server = spawn_serve(&dir, &[], 6);
    let lines = server.lines.clone();
    assert!(
        lines[0].starts_with("tenantd listening on http://127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(lines[4], "  email:    admin@localhost", "{lines:?}");
    let password = lines[5]
        .strip_prefix("  password: ")
        .unwrap_or_else(|| panic!("no first admin password line: {lines:?}"));
    assert_eq!(password.len(), 20);
    assert!(dir.join("central.db").exists());
    assert!(dir.join("tenants").is_dir());
    // The printed password works, and only its hash is kept.
    let mut c = crate::support::Client::connect(server.addr);
    let body = json!({"email": "admin@localhost", "password": password}).to_string();
    c.send(
        format!(
            "POST /api/admin/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.reply().status, 200);
    drop(server);
    let conn = rusqlite::Connection::open(dir.join("central.db")).unwrap();
    let stored: String = conn
        .query_row(
            "SELECT password_hash FROM system_admins WHERE email = 'admin@localhost'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    // A second start makes no second admin.
    drop(spawn_serve(&dir, &[], 2));
    let admins: i64 = conn
        .query_row("SELECT count(*) FROM system_admins", [], |r| r.get(0))
        .unwrap();
    assert_eq!(admins, 1);
}

#[test]
fn idle_pools_are_reopened_after_the_cap_pushed_them_out() {
    let app = spawn_app_with(|c| c.registry.max_open_pools = 2);
    let ids: Vec<String> = (0..5)
        .map(|i| id(&app.create_tenant(&format!("t{i}"), &[])))
        .collect();
    for round in 0..3 {
        for (i, want) in ids.iter().enumerate() {
            let reply = app.get(&format!("/t/t{i}/api/tenant"), &[]);
            assert_eq!(tenant_id_of(&reply), Ok(want.clone()), "round {round}");
        }
    }
    assert!(eventually(Duration::from_secs(5), || app
        .app
        .registry
        .open_count()
        <= 2));
}

#[test]
fn a_custom_domain_cannot_capture_another_tenants_subdomain() {
    let app = spawn_app();
    let globex = id(&app.create_tenant("globex", &[]));
    let acme = id(&app.create_tenant("acme", &["globex.localhost", "acme.test"]));
    assert_eq!(
        tenant_id_of(&app.get("/api/tenant", &[("Host", "globex.localhost")])),
        Ok(globex)
    );
    assert_eq!(
        tenant_id_of(&app.get("/api/tenant", &[("Host", "acme.test")])),
        Ok(acme)
    );
}

#[test]
fn a_repeated_tenant_header_is_a_conflict() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    for headers in [
        vec![("X-Tenant-Slug", "acme"), ("X-Tenant-Slug", "globex")],
        vec![("X-Tenant-Slug", "acme"), ("X-Tenant-Slug", "acme")],
        // Refused before any lookup, in any spelling of the name.
        vec![
            ("X-Tenant-ID", "00000000-0000-4000-8000-000000000001"),
            ("x-TENANT-id", "00000000-0000-4000-8000-000000000001"),
        ],
    ] {
        let reply = app.get("/api/tenant", &headers);
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (400, "tenant_conflict")
        );
    }
}

#[test]
fn purge_then_restore_finds_no_tenant() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.admin("DELETE", "/api/admin/tenants/acme", None);
    assert_eq!(
        app.admin("POST", "/api/admin/tenants/acme/purge", None)
            .status,
        200
    );
    let reply = app.admin("POST", "/api/admin/tenants/acme/restore", None);
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (404, "tenant_not_found")
    );
}

#[test]
fn the_cli_reads_options_anywhere_and_never_invents_a_data_directory() {
    let app = spawn_app();
    let out = app.cli(&["tenants", "create", "--name", "shop", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = app.cli(&["tenants", "show", "acme", "--json"]);
    let record: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        (record["slug"].as_str(), record["name"].as_str()),
        (Some("acme"), Some("shop"))
    );

    let nowhere = app.data.path().join("typo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["tenants", "list", "--data"])
        .arg(&nowhere)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!nowhere.exists());
}

/// Each request's access-log line names the tenant it reached (and only that one).
#[test]
fn the_access_log_names_each_requests_tenant() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    crate::cli::init_data_dir(data.path());
    let bin = env!("CARGO_BIN_EXE_tenantd");
    for slug in ["acme", "globex"] {
        let out = std::process::Command::new(bin)
            .args(["tenants", "create", slug, "--name", slug, "--data"])
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("tenantd listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    for path in ["/t/acme/api/tenant", "/t/globex/api/orders", "/healthz"] {
        crate::support::request_to(addr, "GET", path, &[], None);
    }
    // A line is written once its answer went out: read until all three are there.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&String| l.contains(" GET "))
        .count()
        < 3
    {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = |target: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!(" GET {target} ")))
            .unwrap_or_else(|| panic!("no access line for {target} in {lines:#?}"))
            .clone()
    };
    assert!(line("/t/acme/api/tenant").contains("tenant=acme"));
    assert!(line("/t/globex/api/orders").contains("tenant=globex"));
    assert!(!line("/healthz").contains("tenant="));
}
