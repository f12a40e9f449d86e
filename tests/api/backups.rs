//! Backups and restores for system admins over HTTP, and the `tenant.backup` job (by hand and
//! from a schedule): a backup taken under concurrent writes holds every write acknowledged
//! before it started and restores; a restore refuses a tampered, foreign or unlisted file;
//! one tenant's backups are never another's; health shows the last backup.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::{json, Value};
use tenantd::api::jobs;

use crate::jobs::app_with_workers;
use crate::support::{id, TestApp};

/// Runs every due job of the default queue, as a worker would.
pub(crate) fn run_jobs(test: &TestApp) -> usize {
    let mut runner = None;
    let mut ran = 0;
    while jobs::run_next(&test.app, "default", "test", &mut runner, jobs::now_ms()).unwrap() {
        ran += 1;
    }
    ran
}

pub(crate) fn backups(test: &TestApp, tenant: &str) -> Vec<Value> {
    let reply = test.admin("GET", &format!("/api/admin/tenants/{tenant}/backups"), None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["backups"].as_array().unwrap().clone()
}

/// Takes a backup over HTTP (202 and a job) and runs the job: the new backup's manifest.
pub(crate) fn back_up(test: &TestApp, tenant: &str) -> Value {
    let reply = test.admin(
        "POST",
        &format!("/api/admin/tenants/{tenant}/backups"),
        None,
    );
    assert_eq!(reply.status, 202, "{}", reply.text());
    let job = reply.json()["job"].clone();
    assert_eq!(job["kind"], "tenant.backup");
    let before = backups(test, tenant);
    assert_eq!(run_jobs(test), 1);
    let done = test
        .app
        .catalog
        .job(job["id"].as_i64().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(done.status.as_str(), "done", "{:?}", done.last_error);
    // The one that is new: two taken in the same second list in no particular order.
    let mut new: Vec<Value> = backups(test, tenant)
        .into_iter()
        .filter(|m| !before.contains(m))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new.pop().unwrap()
}

pub(crate) fn restore(test: &TestApp, tenant: &str, backup: &str) -> crate::support::Reply {
    test.admin(
        "POST",
        &format!("/api/admin/tenants/{tenant}/backups/restore"),
        Some(json!({ "backup": backup })),
    )
}

pub(crate) fn new_order(n: i64) -> Value {
    json!({"title": format!("order {n}"), "customer_name": "Buyer", "amount_minor": n, "currency": "EUR"})
}

pub(crate) fn order_ids(test: &TestApp, slug: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut path = format!("/t/{slug}/api/orders?limit=100");
    loop {
        let reply = test.get(&path, &[]);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let page = reply.json();
        ids.extend(
            page["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_i64().unwrap()),
        );
        match page["next"].as_str() {
            Some(c) => path = format!("/t/{slug}/api/orders?limit=100&cursor={c}"),
            None => break,
        }
    }
    ids.sort();
    ids
}

fn backup_path(test: &TestApp, tenant_id: &str, file: &str) -> PathBuf {
    test.data.path().join("backups").join(tenant_id).join(file)
}

fn integrity(path: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_backup_under_concurrent_writes_holds_every_acknowledged_write_and_restores() {
    let test = app_with_workers(0, 10);
    let acme = id(&test.create_tenant("acme", &[]));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let addr = test.server.addr;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            let auth = format!("Bearer {}", test.owner_token);
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let auth = [("Authorization", auth.as_str())];
                    let made = crate::support::request_to(
                        addr,
                        "POST",
                        "/t/acme/api/orders",
                        &auth,
                        Some(&new_order(w * 1_000_000 + n)),
                    );
                    assert_eq!(made.status, 201, "{}", made.text());
                    acked
                        .lock()
                        .unwrap()
                        .push(made.json()["id"].as_i64().unwrap());
                }
            })
        })
        .collect();
    let acked_count = || acked.lock().unwrap().len();
    assert!(crate::support::eventually(
        std::time::Duration::from_secs(30),
        || acked_count() >= 50
    ));
    // Three backups while the writers go on; each must hold what was acknowledged before it.
    let mut taken = Vec::new();
    for _ in 0..3 {
        let before: Vec<i64> = acked.lock().unwrap().clone();
        let m = back_up(&test, &acme);
        taken.push((before, m));
        let at = acked_count();
        assert!(crate::support::eventually(
            std::time::Duration::from_secs(30),
            || acked_count() >= at + 20
        ));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    for (before, m) in &taken {
        let path = backup_path(&test, &acme, m["file"].as_str().unwrap());
        assert_eq!(integrity(&path), "ok");
        assert_eq!(m["tenant_id"], acme.as_str());
        assert_eq!(m["slug"], "acme");
        assert_eq!(
            m["bytes"].as_u64().unwrap(),
            std::fs::metadata(&path).unwrap().len()
        );
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let missing: Vec<i64> = before
            .iter()
            .copied()
            .filter(|id| {
                conn.query_row("SELECT count(*) FROM orders WHERE id = ?1", [id], |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap()
                    == 0
            })
            .collect();
        let (count, max): (i64, i64) = conn
            .query_row("SELECT count(*), max(id) FROM orders", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert!(
            missing.is_empty(),
            "acknowledged before the backup, missing: {missing:?}; the backup has {count} \
             orders up to {max}; {} were acknowledged before it",
            before.len()
        );
    }
    // Restored from the second backup: exactly its orders are served.
    let (_, second) = &taken[1];
    let file = second["file"].as_str().unwrap();
    let conn = rusqlite::Connection::open_with_flags(
        backup_path(&test, &acme, file),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut in_backup: Vec<i64> = conn
        .prepare("SELECT id FROM orders ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    in_backup.sort();
    let all_before = order_ids(&test, "acme");
    assert!(all_before.len() > in_backup.len());
    let reply = restore(&test, "acme", file);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["backup"], file);
    let replaced = body["replaced"]["file"].as_str().unwrap().to_string();
    assert!(replaced.starts_with("replaced-"), "{replaced}");
    assert_eq!(order_ids(&test, "acme"), in_backup);
    // The replaced file is kept, listed, whole, and restores what was there before.
    let listed: Vec<String> = backups(&test, "acme")
        .iter()
        .map(|m| m["file"].as_str().unwrap().to_string())
        .collect();
    assert!(listed.contains(&replaced), "{listed:?}");
    let reply = restore(&test, "acme", &replaced);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(order_ids(&test, "acme"), all_before);
    // Audited.
    let audit = test
        .admin("GET", "/api/admin/audit?tenant=acme", None)
        .json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert!(actions.contains(&"tenant.restored_from_backup"), "{audit}");
}

#[test]
fn a_restore_refuses_a_tampered_foreign_or_unlisted_file_and_leaves_the_tenant_as_it_was() {
    let test = app_with_workers(0, 10);
    let acme = id(&test.create_tenant("acme", &[]));
    let globex = id(&test.create_tenant("globex", &[]));
    let order = test.on(
        &test.owner_token,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order(1)),
    );
    assert_eq!(order.status, 201);
    let a = back_up(&test, "acme");
    let g = back_up(&test, "globex");
    let a_file = a["file"].as_str().unwrap().to_string();
    let g_file = g["file"].as_str().unwrap().to_string();
    let order = test.on(
        &test.owner_token,
        "acme",
        "POST",
        "/api/orders",
        Some(new_order(2)),
    );
    assert_eq!(order.status, 201);
    let served = order_ids(&test, "acme");
    assert_eq!(served.len(), 2);
    let refused = |tenant: &str, name: &str, why: &str| {
        let reply = restore(&test, tenant, name);
        assert_eq!(reply.status, 422, "{name} for {tenant}: {}", reply.text());
        let message = reply.json()["error"]["fields"]["backup"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(why), "{name}: {message}");
        assert_eq!(
            order_ids(&test, "acme"),
            served,
            "acme untouched after {name}"
        );
    };

    // Another tenant's backup by name, and names that are paths.
    refused("acme", &g_file, "no backup");
    refused("globex", &a_file, "no backup");
    refused("acme", &format!("../{globex}/{g_file}"), "no backup");
    refused("acme", "../../central.db", "no backup");
    refused("acme", &format!("/{a_file}"), "no backup");
    // Each tenant lists only its own.
    let names = |t: &str| -> Vec<String> {
        backups(&test, t)
            .iter()
            .map(|m| m["file"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("acme"), vec![a_file.clone()]);
    assert_eq!(names("globex"), vec![g_file.clone()]);

    // A checksum mismatch: one byte of the listed file changed.
    let a_path = backup_path(&test, &acme, &a_file);
    let original = std::fs::read(&a_path).unwrap();
    let mut flipped = original.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0xff;
    std::fs::write(&a_path, &flipped).unwrap();
    refused("acme", &a_file, "SHA-256");
    std::fs::write(&a_path, &original).unwrap();

    // A foreign file under a manifest that claims it is acme's: its tenant_meta says globex.
    let acme_dir = test.data.path().join("backups").join(&acme);
    let foreign = "20000101T000000Z-abcdef.db";
    std::fs::copy(backup_path(&test, &globex, &g_file), acme_dir.join(foreign)).unwrap();
    let mut manifest = g.clone();
    manifest["file"] = json!(foreign);
    manifest["tenant_id"] = json!(acme);
    std::fs::write(
        acme_dir.join("20000101T000000Z-abcdef.json"),
        manifest.to_string(),
    )
    .unwrap();
    refused("acme", foreign, "belongs to tenant");

    // A corrupt file whose manifest matches it: integrity_check finds it.
    let corrupt = "20000101T000000Z-bbbbbb.db";
    let bytes = with_a_broken_index(&a_path);
    std::fs::write(acme_dir.join(corrupt), &bytes).unwrap();
    let mut manifest = a.clone();
    manifest["file"] = json!(corrupt);
    manifest["bytes"] = json!(bytes.len());
    manifest["sha256"] = json!(sha256(&bytes));
    std::fs::write(
        acme_dir.join("20000101T000000Z-bbbbbb.json"),
        manifest.to_string(),
    )
    .unwrap();
    refused("acme", corrupt, "integrity_check");

    // The real one still restores.
    let reply = restore(&test, "acme", &a_file);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(order_ids(&test, "acme").len(), 1);
}

/// `dest`: the database `bytes` with a migration from the future recorded, so that its schema
/// version is newer than this binary's.
pub(crate) fn write_with_a_newer_schema(dest: &Path, bytes: &[u8]) {
    std::fs::write(dest, bytes).unwrap();
    let conn = rusqlite::Connection::open(dest).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at)
         VALUES (9999, 'future', 'x', '2099-01-01T00:00:00Z')",
        [],
    )
    .unwrap();
}

/// The bytes of the database at `path` with one index's root page made invalid: a damage only
/// `PRAGMA integrity_check` sees, as no read of the tenant's own rows goes through that index.
pub(crate) fn with_a_broken_index(path: &Path) -> Vec<u8> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let root: i64 = conn
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'orders_by_created'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(path).unwrap();
    // The b-tree page's type byte: 2, 5, 10 or 13 are pages; 0xff is none.
    bytes[usize::try_from((root - 1) * page_size).unwrap()] = 0xff;
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn only_system_admins_on_the_central_host_reach_backups() {
    let test = app_with_workers(0, 10);
    test.create_tenant("acme", &[]);
    test.create_tenant("globex", &[]);
    let a = back_up(&test, "acme");
    let file = a["file"].as_str().unwrap();
    // acme's own admin (the owner), on the central host and on acme's and globex's paths.
    for path in [
        "/api/admin/tenants/acme/backups".to_string(),
        "/t/acme/api/admin/tenants/acme/backups".to_string(),
        "/t/globex/api/admin/tenants/acme/backups".to_string(),
    ] {
        for (method, body) in [("GET", None), ("POST", None)] {
            let reply = test.as_bearer(&test.owner_token, method, &path, &[], body);
            assert!(
                [401, 403, 404].contains(&reply.status),
                "{method} {path}: {} {}",
                reply.status,
                reply.text()
            );
        }
        let restore_path = format!("{path}/restore");
        let reply = test.as_bearer(
            &test.owner_token,
            "POST",
            &restore_path,
            &[],
            Some(json!({ "backup": file })),
        );
        assert!(
            [401, 403, 404].contains(&reply.status),
            "{restore_path}: {}",
            reply.status
        );
    }
    assert_eq!(
        run_jobs(&test),
        0,
        "no job was enqueued by a refused request"
    );
    // Unknown tenant; bad bodies.
    assert_eq!(
        test.admin("GET", "/api/admin/tenants/nope/backups", None)
            .status,
        404
    );
    let bad = test.admin(
        "POST",
        "/api/admin/tenants/acme/backups/restore",
        Some(json!({ "backup": file, "path": "/etc/passwd" })),
    );
    assert_eq!(bad.status, 422, "{}", bad.text());
}

#[test]
fn health_shows_the_last_backup_and_a_schedule_backs_up_with_retention() {
    let test = app_with_workers(0, 10);
    let acme = id(&test.create_tenant("acme", &[]));
    test.create_tenant("globex", &[]);
    let health = test
        .admin("GET", "/api/admin/tenants/acme/health", None)
        .json();
    assert_eq!(health["last_backup"], Value::Null);
    let m = back_up(&test, "acme");
    let health = test
        .admin("GET", "/api/admin/tenants/acme/health", None)
        .json();
    assert_eq!(health["last_backup"]["file"], m["file"]);
    assert_eq!(health["last_backup"]["bytes"], m["bytes"]);
    assert_eq!(health["last_backup"]["created_at"], m["created_at"]);

    // A schedule for acme keeping the last 2, and a central one for every tenant.
    let per_tenant = test.admin(
        "POST",
        "/api/admin/schedules",
        Some(
            json!({"cron": "* * * * *", "kind": "tenant.backup", "tenant": "acme",
                    "payload": {"keep": 2}}),
        ),
    );
    assert_eq!(per_tenant.status, 201, "{}", per_tenant.text());
    let central = test.admin(
        "POST",
        "/api/admin/schedules",
        Some(json!({"cron": "* * * * *", "kind": "tenant.backup", "payload": {"all": true}})),
    );
    assert_eq!(central.status, 201, "{}", central.text());
    let due = |minute: i64| jobs::now_ms() + minute * 60_000 + 1000;
    for minute in 1..=3 {
        let fired = jobs::fire_schedules(&test.app.catalog, due(minute)).unwrap();
        assert_eq!(fired.len(), 2, "minute {minute}");
        // Each run in its own second, so that the names and times differ.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut runner = None;
        let mut ran = 0;
        while jobs::run_next(&test.app, "default", "test", &mut runner, due(minute)).unwrap() {
            ran += 1;
        }
        // acme's own, the central one, and the one it enqueued for each of the two tenants.
        assert_eq!(ran, 4, "minute {minute}");
    }
    let failed = test.app.catalog.jobs(&tenantd::catalog::JobFilter {
        status: Some(tenantd::catalog::JobStatus::Failed),
        queue: None,
        kind: None,
        tenant_id: None,
        before: None,
        limit: 100,
    });
    assert!(failed.unwrap().is_empty());
    // globex: three from the central job, none pruned. acme: the hand-made one, three from
    // the central job and three from its own, pruned to the last two by each of its runs.
    assert_eq!(backups(&test, "globex").len(), 3);
    let acme_backups = backups(&test, "acme");
    assert!(acme_backups.len() <= 3, "{acme_backups:?}");
    assert!(
        !acme_backups.iter().any(|b| b["file"] == m["file"]),
        "the oldest is pruned"
    );
    for b in &acme_backups {
        assert_eq!(
            integrity(&backup_path(&test, &acme, b["file"].as_str().unwrap())),
            "ok"
        );
    }
}

#[test]
fn the_catalog_is_backed_up_over_http() {
    let test = app_with_workers(0, 10);
    let reply = test.admin("POST", "/api/admin/backups/central", None);
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(
        run_jobs(&test),
        1,
        "{:?}",
        test.app
            .catalog
            .job(reply.json()["job"]["id"].as_i64().unwrap())
    );
    let list = test.admin("GET", "/api/admin/backups/central", None).json();
    let m = &list["backups"][0];
    assert_eq!(m["tenant_id"], "central");
    let path = test
        .data
        .path()
        .join("backups/central")
        .join(m["file"].as_str().unwrap());
    assert_eq!(integrity(&path), "ok");
    let conn =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let admins: i64 = conn
        .query_row(
            "SELECT count(*) FROM system_admins WHERE email = ?1",
            [crate::support::ADMIN_EMAIL],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(admins, 1);
}

#[test]
fn while_a_restore_runs_its_tenant_answers_503_tenant_restoring_and_the_others_are_served() {
    let test = app_with_workers(0, 10);
    let acme = id(&test.create_tenant("acme", &[]));
    test.create_tenant("globex", &[]);
    let first = back_up(&test, "acme");
    let get = |slug: &str| test.get(&format!("/t/{slug}/api/tenant"), &[]);
    assert_eq!(get("acme").status, 200);
    let guard = test
        .app
        .registry
        .begin_restore(&acme, "acme", std::time::Duration::from_secs(5))
        .unwrap();
    let refused = get("acme");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.error_code(), "tenant_restoring");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(get("globex").status, 200);
    // A second restore meanwhile is refused as busy; a backup job's attempt waits its turn.
    let second = restore(&test, "acme", first["file"].as_str().unwrap());
    assert_eq!(second.status, 409, "{}", second.text());
    let taken = test.admin("POST", "/api/admin/tenants/acme/backups", None);
    assert_eq!(taken.status, 202);
    assert_eq!(run_jobs(&test), 1);
    let job_id = taken.json()["job"]["id"].as_i64().unwrap();
    let job = test.app.catalog.job(job_id).unwrap().unwrap();
    assert_eq!(
        job.status.as_str(),
        "pending",
        "retried later: {:?}",
        job.last_error
    );
    assert_eq!(backups(&test, "acme").len(), 1);
    drop(guard);
    assert_eq!(get("acme").status, 200);
    let mut runner = None;
    let later = jobs::now_ms() + 3_600_000;
    assert!(jobs::run_next(&test.app, "default", "test", &mut runner, later).unwrap());
    let job = test.app.catalog.job(job_id).unwrap().unwrap();
    assert_eq!(job.status.as_str(), "done", "{:?}", job.last_error);
    assert_eq!(backups(&test, "acme").len(), 2);
}
