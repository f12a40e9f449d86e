//! Tenants kept on sqld (`--store sqld`): provisioned as namespaces through the admin API,
//! served through the same routes as a local tenant, isolated by namespace, purged with their
//! namespace. The catalog stays local here; the real libSQL server runs when `SQLD_BIN` names
//! it (see `sqld_support`).

use std::sync::Arc;

use serde_json::{json, Value};
use tenantd::catalog::TenantStore;
use tenantd::sqld::Client;

use crate::backups::{new_order, order_ids};
use crate::sqld_support::{spawn_sqld, Sqld};
use crate::support::{spawn_app_with, TestApp};

/// A server whose new tenants go to `sqld`, or `None` when sqld tests are skipped.
fn app_on_sqld() -> Option<(TestApp, Sqld)> {
    let sqld = spawn_sqld()?;
    let client = Arc::new(sqld.client());
    let test = spawn_app_with(|c| {
        c.registry.sqld = Some(client);
        c.new_tenants = TenantStore::Sqld;
    });
    Some((test, sqld))
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
    let Some((test, sqld)) = app_on_sqld() else {
        return;
    };
    let client = sqld.client();
    let acme = id(&test.create_tenant("acme", &[]));
    let globex = id(&test.create_tenant("globex", &[]));
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
fn the_cli_takes_the_same_options_to_create_list_and_purge_a_tenant_on_sqld() {
    let Some(sqld) = spawn_sqld() else {
        return;
    };
    let test = crate::support::spawn_app();
    let (url, admin) = (sqld.url(), sqld.admin_url());
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--sqld-url", &url, "--sqld-admin-url", &admin, "--json"]);
        let out = test.cli(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let made = run(&[
        "tenants", "create", "acme", "--name", "Acme", "--store", "sqld",
    ]);
    assert_eq!(made["store"], "sqld", "{made}");
    let acme = id(&made);
    assert!(sqld.client().namespace_exists(&acme).unwrap());
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
    // Without the options the tenant's namespace cannot be reached, and that is said.
    let blind = test.cli(&["migrate", "--status", "--json"]);
    let blind: Value = serde_json::from_slice(&blind.stdout).unwrap();
    let error = blind["tenants"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("--sqld-url"), "{blind}");
    run(&["tenants", "delete", "acme"]);
    run(&["tenants", "purge", "acme"]);
    assert!(!sqld.client().namespace_exists(&acme).unwrap());
}
