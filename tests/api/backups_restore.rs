//! Restores in place that cannot go ahead (another process holds the file, a damaged live
//! file, a tenant in the wrong state) and what they leave behind: the tenant as it was, served,
//! and no file kept aside for a restore that did not happen.

use std::path::PathBuf;

use serde_json::Value;

use crate::backups::{back_up, backups, new_order, order_ids, restore};
use crate::jobs::app_with_workers;
use crate::support::{id, TestApp};

fn live_file(test: &TestApp, tenant_id: &str) -> PathBuf {
    test.data
        .path()
        .join("tenants")
        .join(format!("{tenant_id}.db"))
}

fn kept_aside(test: &TestApp, tenant: &str) -> Vec<Value> {
    backups(test, tenant)
        .into_iter()
        .filter(|m| m["file"].as_str().unwrap().starts_with("replaced-"))
        .collect()
}

#[test]
fn a_restore_while_another_connection_reads_the_file_is_409_and_leaves_the_tenant_served() {
    let test = app_with_workers(0, 10);
    let acme = id(&test.create_tenant("acme", &[]));
    let order = |n| {
        let made = test.on(
            &test.owner_token,
            "acme",
            "POST",
            "/api/orders",
            Some(new_order(n)),
        );
        assert_eq!(made.status, 201, "{}", made.text());
    };
    order(1);
    let taken = back_up(&test, "acme");
    order(2);
    let served = order_ids(&test, "acme");
    // As Litestream or a `tenantd backup` from the command line would: a read transaction.
    let reader = rusqlite::Connection::open(live_file(&test, &acme)).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM tenant_meta", [], |r| r.get(0))
        .unwrap();
    let reply = restore(&test, "acme", taken["file"].as_str().unwrap());
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.error_code(), "tenant_in_use");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another process"),
        "{}",
        reply.text()
    );
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    assert_eq!(order_ids(&test, "acme"), served);
    assert_eq!(kept_aside(&test, "acme"), Vec::<Value>::new());
    assert_eq!(backups(&test, "acme").len(), 1);
    assert_eq!(replaced_files(&test, &acme), Vec::<String>::new());
    assert!(!live_file(&test, &acme).with_extension("db.tmp").exists());
}

/// The files in the tenant's backups directory whose name starts `replaced-`.
fn replaced_files(test: &TestApp, tenant_id: &str) -> Vec<String> {
    let dir = test.data.path().join("backups").join(tenant_id);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("replaced-"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_tenant_whose_file_is_empty_or_garbage_is_restored_and_the_damaged_file_moved_aside() {
    let test = app_with_workers(0, 10);
    for (slug, damage) in [
        ("empty", &b""[..]),
        ("garbage", &b"not a database at all"[..]),
    ] {
        let tenant = id(&test.create_tenant(slug, &[]));
        let made = test.on(
            &test.owner_token,
            slug,
            "POST",
            "/api/orders",
            Some(new_order(7)),
        );
        assert_eq!(made.status, 201, "{}", made.text());
        let served = order_ids(&test, slug);
        let taken = back_up(&test, slug);
        // Damaged while no pool has it open, as a disk or an operator might leave it.
        test.app.registry.evict(&tenant).unwrap();
        std::fs::write(live_file(&test, &tenant), damage).unwrap();
        assert_ne!(test.get(&format!("/t/{slug}/api/tenant"), &[]).status, 200);
        test.app.registry.evict(&tenant).unwrap();

        let reply = restore(&test, slug, taken["file"].as_str().unwrap());
        assert_eq!(reply.status, 200, "{slug}: {}", reply.text());
        assert_eq!(order_ids(&test, slug), served, "{slug}");
        let aside = replaced_files(&test, &tenant);
        assert_eq!(aside.len(), 1, "{slug}: {aside:?}");
        let moved = test
            .data
            .path()
            .join("backups")
            .join(&tenant)
            .join(&aside[0]);
        assert_eq!(std::fs::read(moved).unwrap(), damage, "{slug}");
    }
}

#[test]
fn a_job_of_a_tenant_being_restored_waits_without_using_an_attempt() {
    let test = app_with_workers(0, 10);
    let acme = id(&test.create_tenant("acme", &[]));
    let guard = test
        .app
        .registry
        .begin_restore(&acme, "acme", std::time::Duration::from_secs(5))
        .unwrap();
    let taken = test.admin("POST", "/api/admin/tenants/acme/backups", None);
    assert_eq!(taken.status, 202);
    assert_eq!(crate::backups::run_jobs(&test), 1);
    let job_id = taken.json()["job"]["id"].as_i64().unwrap();
    let job = test.app.catalog.job(job_id).unwrap().unwrap();
    assert_eq!(job.status.as_str(), "pending", "{:?}", job.last_error);
    assert_eq!(job.attempts, 0, "{:?}", job.last_error);
    assert!(
        job.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("restored"),
        "{:?}",
        job.last_error
    );
    drop(guard);
}

#[test]
fn a_backup_of_all_tenants_enqueues_one_job_per_active_tenant_with_the_retention() {
    let test = app_with_workers(0, 10);
    let acme = id(&test.create_tenant("acme", &[]));
    let globex = id(&test.create_tenant("globex", &[]));
    let mut central = tenantd::api::jobs::NewJob::new(
        None,
        "default",
        "tenant.backup",
        serde_json::json!({"all": true, "keep": 2}),
    );
    central.unique_key = Some("central-all".into());
    let central = test.app.enqueue(central).unwrap().id();
    let mut runner = None;
    assert!(tenantd::api::jobs::run_next(
        &test.app,
        "default",
        "t",
        &mut runner,
        tenantd::api::jobs::now_ms()
    )
    .unwrap());
    let done = test.app.catalog.job(central).unwrap().unwrap();
    assert_eq!(done.status.as_str(), "done", "{:?}", done.last_error);
    // Nothing backed up by the central job itself: a job per tenant, each its own.
    assert!(backups(&test, "acme").is_empty() && backups(&test, "globex").is_empty());
    let filter = tenantd::catalog::JobFilter {
        kind: Some("tenant.backup".into()),
        limit: 100,
        ..Default::default()
    };
    let mut per_tenant: Vec<(String, Value)> = test
        .app
        .catalog
        .jobs(&filter)
        .unwrap()
        .into_iter()
        .filter(|j| j.status.as_str() == "pending")
        .map(|j| (j.tenant_id.unwrap(), j.payload))
        .collect();
    per_tenant.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        (acme.clone(), serde_json::json!({"keep": 2})),
        (globex.clone(), serde_json::json!({"keep": 2})),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(per_tenant, expected);
    assert_eq!(crate::backups::run_jobs(&test), 2);
    assert_eq!(backups(&test, "acme").len(), 1);
    assert_eq!(backups(&test, "globex").len(), 1);
}
