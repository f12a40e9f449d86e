//! Tenants kept on sqld (`--store sqld`): provisioned as namespaces through the admin API,
//! served through the same routes as a local tenant, isolated by namespace, purged with their
//! namespace; the catalog kept there too and shared by two nodes (two apps in this process,
//! each its own HTTP server and data directory). The real libSQL server runs when `SQLD_BIN`
//! names it (see `sqld_support`).

use std::sync::Arc;

use serde_json::{json, Value};
use tenantd::catalog::TenantStore;
use tenantd::sqld::Client;

use crate::backups::{new_order, order_ids};
use crate::sqld_support::{spawn_sqld, Sqld};
use crate::support::{spawn_app_with, spawn_node, TestApp};

/// A server on `sqld` (`--store sqld`: the catalog and new tenants there), or `None` when sqld
/// tests are skipped.
fn app_on_sqld() -> Option<(TestApp, Sqld)> {
    let sqld = spawn_sqld()?;
    let test = spawn_app_with(on(&sqld));
    assert!(test.app.catalog.is_shared());
    Some((test, sqld))
}

/// The configuration of a node on `sqld`.
fn on(sqld: &Sqld) -> impl FnOnce(&mut tenantd::api::AppConfig) {
    let client = Arc::new(sqld.client());
    move |c| {
        c.registry.sqld = Some(client);
        c.new_tenants = TenantStore::Sqld;
        // Frozen: a lock never runs out while a slow machine works through a test.
        c.throttle.frozen_clock = true;
    }
}

fn id(record: &Value) -> String {
    record["id"].as_str().unwrap().to_string()
}

fn count(client: &Client, namespace: &str, sql: &str) -> i64 {
    client
        .execute(namespace, sql, &[])
        .unwrap()
        .first_value()
        .and_then(|v| v.as_i64())
        .unwrap()
}

#[test]
fn a_tenant_on_sqld_is_a_namespace_served_through_the_same_routes_with_no_local_file() {
    let Some((test, sqld)) = app_on_sqld() else {
        return;
    };
    let client = sqld.client();
    let record = test.create_tenant("acme", &[]);
    assert_eq!(record["store"], "sqld", "{record}");
    let acme = id(&record);
    assert!(client.namespace_exists(&acme).unwrap());
    assert!(!test.tenant_file(&acme).exists());
    // Migrated and seeded with whose it is, through the admin API's namespace.
    let owner = client
        .execute(&acme, "SELECT value FROM tenant_meta WHERE key = 'id'", &[])
        .unwrap();
    assert_eq!(owner.first_value().and_then(|v| v.as_str()), Some(&*acme));

    for n in 1..=3 {
        let made = test.on(
            &test.owner_token,
            "acme",
            "POST",
            "/api/orders",
            Some(new_order(n)),
        );
        assert_eq!(made.status, 201, "{}", made.text());
    }
    let ids = order_ids(&test, "acme");
    assert_eq!(ids.len(), 3);
    let one = test.get(&format!("/t/acme/api/orders/{}", ids[0]), &[]);
    assert_eq!(one.status, 200, "{}", one.text());
    // Written where the catalog says the tenant is, and read back from there.
    assert_eq!(count(&client, &acme, "SELECT count(*) FROM orders"), 3);
    client
        .execute(&acme, "DELETE FROM orders WHERE id = ?1", &[ids[0].into()])
        .unwrap();
    assert_eq!(order_ids(&test, "acme").len(), 2, "a read is not kept");

    // A chat and a message: the workspace's other tables live there too.
    let chat = test.on(
        &test.owner_token,
        "acme",
        "POST",
        "/api/chats",
        Some(json!({"title": "general", "kind": "group", "participant_ids": []})),
    );
    assert_eq!(chat.status, 201, "{}", chat.text());
    let chat_id = chat.json()["id"].as_i64().unwrap();
    let said = test.on(
        &test.owner_token,
        "acme",
        "POST",
        &format!("/api/chats/{chat_id}/messages"),
        Some(json!({"body": "hello"})),
    );
    assert_eq!(said.status, 201, "{}", said.text());
    assert_eq!(count(&client, &acme, "SELECT count(*) FROM messages"), 1);
    let tenant = test.get("/t/acme/api/tenant", &[]);
    assert_eq!(tenant.status, 200, "{}", tenant.text());
    assert_eq!(tenant.json()["id"], acme.as_str());
}

#[test]
fn a_tenant_on_sqld_sees_only_its_own_namespace_and_a_local_tenant_beside_it_its_file() {
    // The catalog local, tenants on sqld (`--sqld-url` without `--store sqld`, then new
    // tenants sent there).
    let Some(sqld) = spawn_sqld() else {
        return;
    };
    let client = sqld.client();
    let shared = Arc::new(sqld.client());
    let test = spawn_app_with(|c| c.registry.sqld = Some(Arc::clone(&shared)));
    assert!(!test.app.catalog.is_shared());
    test.app.catalog.set_stores(tenantd::catalog::TenantStores {
        new_tenants: TenantStore::Sqld,
        sqld: Some(Arc::clone(&shared)),
    });
    let acme = id(&test.create_tenant("acme", &[]));
    let globex = id(&test.create_tenant("globex", &[]));
    assert!(!client.namespace_exists("central").unwrap());
    // A local tenant on the same server, made while new tenants went to files.
    test.app.catalog.set_stores(tenantd::catalog::TenantStores {
        new_tenants: TenantStore::Local,
        sqld: Some(Arc::new(sqld.client())),
    });
    let initech = test.create_tenant("initech", &[]);
    assert_eq!(initech["store"], "local");
    assert!(test.tenant_file(&id(&initech)).exists());

    let made = test.on(
        &test.owner_token,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order(7)),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let order = made.json()["id"].as_i64().unwrap();
    for other in ["globex", "initech"] {
        assert!(order_ids(&test, other).is_empty(), "{other}");
        let reply = test.get(&format!("/t/{other}/api/orders/{order}"), &[]);
        assert_eq!(reply.status, 404, "{other}: {}", reply.text());
    }
    // Naming the other tenant in a header as well picks neither namespace.
    let reply = test.get(
        &format!("/t/globex/api/orders/{order}"),
        &[("X-Tenant-Id", acme.as_str())],
    );
    assert_ne!(reply.status, 200, "{}", reply.text());
    assert_eq!(count(&client, &acme, "SELECT count(*) FROM orders"), 1);
    assert_eq!(count(&client, &globex, "SELECT count(*) FROM orders"), 0);
}

#[test]
fn a_namespace_that_says_it_is_another_tenants_is_not_served() {
    let Some((test, sqld)) = app_on_sqld() else {
        return;
    };
    let client = sqld.client();
    let acme = id(&test.create_tenant("acme", &[]));
    let globex = id(&test.create_tenant("globex", &[]));
    // globex's namespace claims to be acme's (a copy made under the wrong name, say): never
    // served, to either of them, before anything is written to it.
    client
        .execute(
            &globex,
            "UPDATE tenant_meta SET value = ?1 WHERE key = 'id'",
            &[acme.as_str().into()],
        )
        .unwrap();
    let reply = test.get("/t/globex/api/orders", &[]);
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "tenant_unavailable");
    assert_eq!(test.get("/t/acme/api/orders", &[]).status, 200);
}

#[test]
fn purging_a_tenant_on_sqld_deletes_its_namespace_and_a_failed_create_leaves_none() {
    let Some((test, sqld)) = app_on_sqld() else {
        return;
    };
    let client = sqld.client();
    let acme = id(&test.create_tenant("acme", &[]));
    assert_eq!(
        test.admin("DELETE", "/api/admin/tenants/acme", None).status,
        200
    );
    let purged = test.admin("POST", "/api/admin/tenants/acme/purge", None);
    assert!(purged.status < 300, "{}", purged.text());
    assert!(!client.namespace_exists(&acme).unwrap());

    // A slug already taken fails after nothing was made on sqld.
    test.create_tenant("globex", &[]);
    let before = namespaces(&sqld);
    let again = test.admin(
        "POST",
        "/api/admin/tenants",
        Some(json!({"slug": "globex", "name": "Globex again"})),
    );
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(namespaces(&sqld), before);
}

/// The namespaces sqld holds, by the directories it keeps for them.
fn namespaces(sqld: &Sqld) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sqld.dbs_dir())
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn the_cli_takes_the_same_options_to_create_migrate_and_purge_a_tenant_on_sqld() {
    let Some(sqld) = spawn_sqld() else {
        return;
    };
    // A data directory of a node whose catalog is on sqld: nothing of the catalog is in it.
    let data = tempfile::tempdir().unwrap();
    let (url, admin) = (sqld.url(), sqld.admin_url());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
            .args(args)
            .args([
                "--store",
                "sqld",
                "--sqld-url",
                &url,
                "--sqld-admin-url",
                &admin,
            ])
            .args(["--json", "--data"])
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let made = run(&["tenants", "create", "acme", "--name", "Acme"]);
    assert_eq!(made["store"], "sqld", "{made}");
    let acme = id(&made);
    let client = sqld.client();
    assert!(client.namespace_exists(&acme).unwrap());
    assert!(client.namespace_exists("central").unwrap());
    assert!(!data.path().join("central.db").exists());
    // A server on the same sqld sees the tenant the CLI made.
    let server = spawn_app_with(on(&sqld));
    let shown = server.admin("GET", "/api/admin/tenants/acme", None);
    assert_eq!(shown.status, 200, "{}", shown.text());
    // The identity and real-time commands reach the same catalog.
    let credentials = run(&["realtime", "credentials"]);
    assert_eq!(
        credentials["app_id"].as_str(),
        Some(server.app.realtime_credentials().0.as_str()),
        "{credentials}"
    );
    run(&[
        "users",
        "create",
        "--email",
        "cli@example.test",
        "--name",
        "Cli",
        "--password",
        "cli-password-1",
    ]);
    assert_eq!(
        server.login("cli@example.test", "cli-password-1").status,
        200
    );
    let status = run(&["migrate", "--status"]);
    let listed = &status["tenants"][0];
    assert_eq!(listed["slug"], "acme", "{status}");
    assert_eq!(
        listed["version"].as_u64(),
        Some(u64::from(
            tenantd::tenancy::lifecycle::tenant_target_version()
        )),
        "{status}"
    );
    run(&["tenants", "delete", "acme"]);
    run(&["tenants", "purge", "acme"]);
    assert!(!client.namespace_exists(&acme).unwrap());
}

#[test]
fn two_nodes_on_one_sqld_share_the_catalog_tenants_sessions_and_writes_at_once() {
    let Some((a, sqld)) = app_on_sqld() else {
        return;
    };
    let b = spawn_node(&a, on(&sqld));
    // A tenant made through A is served by B from B's next request.
    let acme = id(&a.create_tenant("acme", &[]));
    assert_eq!(b.get("/t/acme/api/tenant", &[]).json()["id"], acme.as_str());
    // Written through one node, read through the other at once, both ways.
    let made = a.on(
        &a.owner_token,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order(1)),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let order = made.json()["id"].as_i64().unwrap();
    let read = b.get(&format!("/t/acme/api/orders/{order}"), &[]);
    assert_eq!(read.status, 200, "{}", read.text());
    let made = b.on(
        &b.owner_token,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order(2)),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(order_ids(&a, "acme").len(), 2);

    // A member removed through B is refused by A on A's next request.
    let (member, token) = a.member("m@example.test", "acme", "viewer");
    assert_eq!(a.on(&token, "acme", "GET", "/api/orders", None).status, 200);
    let removed = b.as_bearer(
        &b.owner_token,
        "DELETE",
        &format!("/t/acme/api/members/{member}"),
        &[],
        None,
    );
    assert!(removed.status < 300, "{}", removed.text());
    let refused = a.on(&token, "acme", "GET", "/api/orders", None);
    assert_eq!(refused.status, 403, "{}", refused.text());

    // A session ended through A is unknown to B at once.
    let login = b.login(crate::support::OWNER_EMAIL, crate::support::OWNER_PASSWORD);
    let token = login.json()["token"].as_str().unwrap().to_string();
    assert_eq!(a.as_bearer(&token, "GET", "/api/me", &[], None).status, 200);
    let out = a.as_bearer(&token, "POST", "/api/auth/logout", &[], None);
    assert!(out.status < 300, "{}", out.text());
    assert_eq!(b.as_bearer(&token, "GET", "/api/me", &[], None).status, 401);
}

#[test]
fn failed_logins_on_one_node_count_on_the_other() {
    let Some((a, sqld)) = app_on_sqld() else {
        return;
    };
    let b = spawn_node(&a, on(&sqld));
    let email = crate::support::OWNER_EMAIL;
    // The free failures on A, then one more on B locks the account's unknown clients on both.
    let free = tenantd::auth::throttle::ThrottleConfig::default().free_failures;
    for _ in 0..free {
        assert_eq!(a.login(email, "wrong-password").status, 401);
    }
    assert_eq!(b.login(email, "wrong-password").status, 401);
    for node in [&a, &b] {
        let locked = node.login(email, crate::support::OWNER_PASSWORD);
        assert_eq!(locked.status, 429, "{}", locked.text());
    }
}

#[test]
fn a_tenant_on_sqld_exports_its_archive_shows_its_health_and_refuses_file_backups() {
    let Some((test, _sqld)) = app_on_sqld() else {
        return;
    };
    test.create_tenant("acme", &[]);
    for n in 1..=3 {
        let made = test.on(
            &test.owner_token,
            "acme",
            "POST",
            "/api/orders",
            Some(new_order(n)),
        );
        assert_eq!(made.status, 201, "{}", made.text());
    }
    // The archive is read from the namespace in one read transaction, as from a file.
    let export = test.get("/t/acme/api/export", &[]);
    assert_eq!(export.status, 200);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(export.body.clone())).unwrap();
    let mut orders = String::new();
    std::io::Read::read_to_string(
        &mut zip.by_name("tables/orders.jsonl").unwrap(),
        &mut orders,
    )
    .unwrap();
    assert_eq!(orders.lines().count(), 3, "{orders}");
    let mut meta = String::new();
    std::io::Read::read_to_string(
        &mut zip.by_name("tables/tenant_meta.jsonl").unwrap(),
        &mut meta,
    )
    .unwrap();
    assert!(meta.contains(
        test.app
            .catalog
            .by_slug("acme")
            .unwrap()
            .unwrap()
            .id
            .as_str()
    ));

    let health = test.admin("GET", "/api/admin/tenants/acme/health", None);
    assert_eq!(health.status, 200, "{}", health.text());
    let health = health.json();
    assert_eq!(health["store"], "sqld", "{health}");
    assert_eq!(health["error"], Value::Null, "{health}");
    assert_eq!(
        health["schema_version"], health["latest_schema_version"],
        "{health}"
    );
    let backup = test.admin("POST", "/api/admin/tenants/acme/backups", None);
    assert_eq!(backup.status, 409, "{}", backup.text());
    assert_eq!(backup.json()["error"]["code"], "not_a_local_file");
}

#[test]
fn two_nodes_starting_together_on_a_new_catalog_make_one_app_one_key_and_one_first_admin() {
    let Some(sqld) = spawn_sqld() else {
        return;
    };
    let opened: Vec<_> = (0..2)
        .map(|i| {
            let configure = on(&sqld);
            std::thread::spawn(move || {
                let data = tempfile::tempdir().unwrap();
                let mut config = tenantd::api::AppConfig {
                    data_dir: data.path().to_path_buf(),
                    ..Default::default()
                };
                configure(&mut config);
                let (app, first) = tenantd::api::App::open(config)
                    .unwrap_or_else(|e| panic!("node {i} did not open: {e}"));
                (app.realtime_credentials(), first.is_some(), data)
            })
        })
        .collect();
    let opened: Vec<_> = opened.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(opened[0].0, opened[1].0, "one real-time app for both nodes");
    let firsts = opened.iter().filter(|(_, first, _)| *first).count();
    assert_eq!(firsts, 1, "one node shows the first admin's password");
}

#[test]
fn a_catalog_on_sqld_out_of_reach_is_a_503_and_serving_resumes_when_it_is_back() {
    let Some((test, mut sqld)) = app_on_sqld() else {
        return;
    };
    test.create_tenant("acme", &[]);
    assert_eq!(test.get("/t/acme/api/orders", &[]).status, 200);
    sqld.stop();
    for path in ["/t/acme/api/orders", "/api/me"] {
        let reply = test.get(path, &[]);
        assert_eq!(reply.status, 503, "{path}: {}", reply.text());
        assert_eq!(
            reply.json()["error"]["code"],
            "catalog_unavailable",
            "{path}"
        );
        assert!(reply.header("retry-after").is_some(), "{path}");
    }
    sqld.restart();
    assert_eq!(test.get("/t/acme/api/orders", &[]).status, 200);
}

#[test]
fn finishing_a_provisioning_again_completes_what_an_earlier_attempt_left_and_deletes_nothing() {
    let Some((test, sqld)) = app_on_sqld() else {
        return;
    };
    let catalog = &test.app.catalog;
    let new = tenantd::tenancy::lifecycle::NewTenant {
        slug: "acme".into(),
        name: "Acme".into(),
        domains: vec![],
    };
    let record =
        tenantd::tenancy::lifecycle::create_provisioning(catalog, &new, TenantStore::Sqld).unwrap();
    // An earlier attempt that died after making the namespace.
    sqld.client().create_namespace(&record.id).unwrap();
    let done = tenantd::tenancy::lifecycle::finish_provisioning(catalog, &record.id).unwrap();
    assert_eq!(done.status, tenantd::catalog::TenantStatus::Active);
    test.join(test.owner_id, "acme", "admin");
    let made = test.on(
        &test.owner_token,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order(1)),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    // A second attempt running late: refused, and the tenant's data stays.
    assert!(tenantd::tenancy::lifecycle::finish_provisioning(catalog, &record.id).is_err());
    assert_eq!(order_ids(&test, "acme").len(), 1);
}

#[test]
fn restoring_a_tenant_whose_namespace_is_gone_and_backing_up_a_shared_catalog_are_conflicts() {
    let Some((test, sqld)) = app_on_sqld() else {
        return;
    };
    let acme = id(&test.create_tenant("acme", &[]));
    assert_eq!(
        test.admin("DELETE", "/api/admin/tenants/acme", None).status,
        200
    );
    sqld.client().delete_namespace(&acme).unwrap();
    let restored = test.admin("POST", "/api/admin/tenants/acme/restore", None);
    assert_eq!(restored.status, 409, "{}", restored.text());
    assert_eq!(restored.json()["error"]["code"], "tenant_namespace_missing");
    let central = test.admin("POST", "/api/admin/backups/central", None);
    assert_eq!(central.status, 409, "{}", central.text());
    assert_eq!(central.json()["error"]["code"], "not_a_local_file");
}
