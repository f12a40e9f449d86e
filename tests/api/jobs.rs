//! Background jobs in process: every job runs in its own tenant (20 tenants on 4 workers),
//! retries with backoff, timeouts, the failed state, retry, discard, pruning, a suspended
//! tenant's job waiting and a deleted one's failing, driven where time matters by the test's
//! own clock (`jobs::run_next` with a `now`).

use std::time::Duration;

use serde_json::json;
use tenantd::api::jobs::{self, NewJob};
use tenantd::api::{App, Enqueued};
use tenantd::catalog::{JobRecord, JobStatus};

use crate::support::{eventually, spawn_app_with, TestApp};

const WAIT: Duration = Duration::from_secs(30);

/// A test app whose workers the test starts (or drives itself).
pub(crate) fn app_with_workers(workers: usize, backoff_ms: u64) -> TestApp {
    spawn_app_with(|c| {
        c.jobs.workers = vec![("default".into(), workers)];
        c.jobs.backoff = Duration::from_millis(backoff_ms);
        c.jobs.poll = Duration::from_millis(200);
    })
}

pub(crate) fn noop(tenant: Option<&str>, payload: serde_json::Value) -> NewJob {
    NewJob::new(tenant.map(String::from), "default", "noop", payload)
}

pub(crate) fn job(app: &App, id: i64) -> JobRecord {
    app.catalog.job(id).unwrap().expect("job exists")
}

/// Every `noop.<job id>` row of a tenant's file.
pub(crate) fn recorded(test: &TestApp, tenant_id: &str) -> Vec<(i64, String)> {
    recorded_in(test.data.path(), tenant_id)
}

/// The same, in a data directory's tenant file.
pub(crate) fn recorded_in(data: &std::path::Path, tenant_id: &str) -> Vec<(i64, String)> {
    let path = data.join("tenants").join(format!("{tenant_id}.db"));
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn
        .prepare("SELECT key, value FROM tenant_meta WHERE key LIKE 'noop.%' ORDER BY key")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    rows.map(|r| {
        let (k, v) = r.unwrap();
        (k["noop.".len()..].parse().unwrap(), v)
    })
    .collect()
}

#[test]
fn twenty_tenants_on_four_workers_each_job_sees_only_its_own_tenant() {
    let test = app_with_workers(4, 10);
    let ids: Vec<String> = (0..20)
        .map(|i| {
            test.create_tenant(&format!("jobs{i:02}"), &[])["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut enqueued: Vec<Vec<i64>> = vec![Vec::new(); ids.len()];
    // Interleaved: consecutive jobs belong to different tenants, so a worker's next job is
    // almost always another tenant's.
    for round in 0..8 {
        for (t, id) in ids.iter().enumerate() {
            let payload = json!({"expect_tenant": id, "record": true, "round": round});
            let Enqueued::New(job) = test.app.enqueue(noop(Some(id), payload)).unwrap() else {
                panic!("no unique key, so never a duplicate");
            };
            enqueued[t].push(job);
        }
    }
    // One job told to expect another tenant: the check can fail, and says so.
    let Enqueued::New(wrong) = test
        .app
        .enqueue(noop(Some(&ids[0]), json!({"expect_tenant": ids[1]})))
        .unwrap()
    else {
        panic!()
    };
    jobs::start_workers(&test.app);
    let all: Vec<i64> = enqueued.iter().flatten().copied().chain([wrong]).collect();
    assert!(
        eventually(WAIT, || all.iter().all(|id| {
            matches!(
                job(&test.app, *id).status,
                JobStatus::Done | JobStatus::Failed
            )
        })),
        "every job finished"
    );
    for (t, id) in ids.iter().enumerate() {
        let mut expected = enqueued[t].clone();
        expected.sort();
        let mut seen: Vec<i64> = recorded(&test, id).into_iter().map(|(j, _)| j).collect();
        seen.sort();
        assert_eq!(
            seen, expected,
            "tenant {t} holds exactly its own jobs' rows"
        );
        for j in &enqueued[t] {
            assert_eq!(job(&test.app, *j).status, JobStatus::Done);
        }
    }
    let wrong = job(&test.app, wrong);
    assert_eq!(wrong.status, JobStatus::Failed);
    assert!(
        wrong
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(&format!("ran in tenant {}", ids[0]))),
        "{wrong:?}"
    );
}

/// A failing job with two attempts, on the test's clock: backed off between half and all of
/// the base delay, not run before then, failed with its error after the last attempt; then
/// retried and discarded over HTTP, and pruned only once old enough.
#[test]
fn retries_back_off_then_fail_and_can_be_retried_discarded_and_pruned() {
    let test = app_with_workers(0, 1000);
    let mut failing = noop(None, json!({"fail": "boom"}));
    failing.max_attempts = Some(2);
    let id = test.app.enqueue(failing).unwrap().id();
    let mut runner = None;
    let t0 = jobs::now_ms() + 1000;
    assert!(jobs::run_next(&test.app, "default", "serve:test", &mut runner, t0).unwrap());
    let after_one = job(&test.app, id);
    assert_eq!(after_one.status, JobStatus::Pending);
    assert_eq!(after_one.attempts, 1);
    assert_eq!(after_one.last_error.as_deref(), Some("boom"));
    assert!(
        (t0 + 500..=t0 + 1000).contains(&after_one.run_at),
        "backoff with jitter: {}",
        after_one.run_at - t0
    );
    // Not due yet on this clock.
    assert!(!jobs::run_next(&test.app, "default", "serve:test", &mut runner, t0 + 499).unwrap());
    let t1 = after_one.run_at;
    assert!(jobs::run_next(&test.app, "default", "serve:test", &mut runner, t1).unwrap());
    let failed = job(&test.app, id);
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.last_error.as_deref(), Some("boom"));

    let listed = test.admin("GET", "/api/admin/jobs?status=failed&kind=noop", None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["jobs"][0]["id"], id);
    let retried = test.admin("POST", &format!("/api/admin/jobs/{id}/retry"), None);
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(retried.json()["status"], "pending");
    assert_eq!(retried.json()["attempts"], 0);
    let again = test.admin("POST", &format!("/api/admin/jobs/{id}/retry"), None);
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "job_state")
    );
    let discarded = test.admin("POST", &format!("/api/admin/jobs/{id}/discard"), None);
    assert_eq!(discarded.json()["status"], "discarded");
    let bad = test.admin("GET", "/api/admin/jobs?status=nope", None);
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert_eq!(
        test.admin("GET", "/api/admin/jobs/999999", None).status,
        404
    );

    // Pruning: kept within the retention, gone after it; a failed job is kept.
    let mut keep = noop(None, json!({"fail": "kept"}));
    keep.max_attempts = Some(1);
    let kept = test.app.enqueue(keep).unwrap().id();
    assert!(jobs::run_next(&test.app, "default", "serve:test", &mut runner, t1).unwrap());
    assert_eq!(job(&test.app, kept).status, JobStatus::Failed);
    let finished = job(&test.app, id).finished_at.unwrap();
    assert_eq!(jobs::prune(&test.app, finished + 1000).unwrap(), 0);
    let week = 7 * 24 * 3600 * 1000;
    assert_eq!(jobs::prune(&test.app, finished + week + 1).unwrap(), 1);
    assert!(test.app.catalog.job(id).unwrap().is_none());
    assert!(test.app.catalog.job(kept).unwrap().is_some());
}

/// A suspended tenant's job waits without spending an attempt; a deleted one's fails, saying so.
#[test]
fn a_suspended_tenants_job_waits_and_a_deleted_ones_fails() {
    let test = app_with_workers(0, 10);
    let id = test.create_tenant("sleepy", &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job_id = test.app.enqueue(noop(Some(&id), json!({}))).unwrap().id();
    assert_eq!(
        test.admin("POST", "/api/admin/tenants/sleepy/suspend", None)
            .status,
        200
    );
    let mut runner = None;
    let now = jobs::now_ms();
    assert!(jobs::run_next(&test.app, "default", "serve:test", &mut runner, now).unwrap());
    let waiting = job(&test.app, job_id);
    assert_eq!((waiting.status, waiting.attempts), (JobStatus::Pending, 0));
    assert!(waiting.run_at > now, "looks again later");
    assert!(waiting.last_error.unwrap().contains("suspended"));
    assert_eq!(
        test.admin("DELETE", "/api/admin/tenants/sleepy", None)
            .status,
        200
    );
    assert!(jobs::run_next(
        &test.app,
        "default",
        "serve:test",
        &mut runner,
        waiting.run_at
    )
    .unwrap());
    let failed = job(&test.app, job_id);
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(
        failed.last_error.unwrap().contains("is deleted"),
        "clear error"
    );
}

/// A tenant's admins see and retry their own tenant's jobs, never another's.
#[test]
fn tenant_admins_see_and_retry_only_their_own_tenants_jobs() {
    let test = app_with_workers(0, 10);
    let a = test.create_tenant("alpha", &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = test.create_tenant("beta", &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut job_a = noop(Some(&a), json!({"fail": "a"}));
    job_a.max_attempts = Some(1);
    let ja = test.app.enqueue(job_a).unwrap().id();
    let mut job_b = noop(Some(&b), json!({"fail": "b"}));
    job_b.max_attempts = Some(1);
    let jb = test.app.enqueue(job_b).unwrap().id();
    let mut runner = None;
    let now = jobs::now_ms();
    while jobs::run_next(&test.app, "default", "serve:test", &mut runner, now).unwrap() {}
    let admin_b = test.member_token("admin-b@example.test", "beta", "admin");
    let listed = test.on(&admin_b, "beta", "GET", "/api/jobs", None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    let ids: Vec<i64> = listed.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![jb]);
    let cross = test.on(
        &admin_b,
        "beta",
        "POST",
        &format!("/api/jobs/{ja}/retry"),
        None,
    );
    assert_eq!(cross.status, 404, "another tenant's job is not found");
    assert_eq!(job(&test.app, ja).status, JobStatus::Failed);
    let own = test.on(
        &admin_b,
        "beta",
        "POST",
        &format!("/api/jobs/{jb}/retry"),
        None,
    );
    assert_eq!(own.status, 200, "{}", own.text());
    // And through the other tenant's address, beta's admin is not a member at all.
    let elsewhere = test.on(&admin_b, "alpha", "GET", "/api/jobs", None);
    assert_eq!(elsewhere.status, 403);
    let member = test.member_token("viewer@example.test", "beta", "viewer");
    let denied = test.on(&member, "beta", "GET", "/api/jobs", None);
    assert_eq!(
        (denied.status, denied.error_code().as_str()),
        (403, "forbidden")
    );
    // A job a system admin discarded stays discarded: the tenant's retry takes failed ones.
    let discarded = test.app.enqueue(noop(Some(&b), json!({}))).unwrap().id();
    test.app
        .catalog
        .discard_job(discarded, None, jobs::now_ms())
        .unwrap();
    let again = test.on(
        &admin_b,
        "beta",
        "POST",
        &format!("/api/jobs/{discarded}/retry"),
        None,
    );
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(job(&test.app, discarded).status, JobStatus::Discarded);
}

/// `"async": true`: 202 with the job, the tenant refused as provisioning until a worker has
/// made its file, then active.
#[test]
fn an_async_tenant_is_provisioning_until_its_job_has_run() {
    let test = app_with_workers(1, 10);
    let reply = test.admin(
        "POST",
        "/api/admin/tenants",
        Some(json!({"slug": "later", "name": "Later Ltd", "async": true})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["tenant"]["status"], "provisioning");
    assert_eq!(body["job"]["kind"], "tenant.provision");
    let id = body["tenant"]["id"].as_str().unwrap().to_string();
    assert!(!test.tenant_file(&id).exists());
    let early = test.get("/t/later/api/tenant", &[]);
    assert_eq!(
        (early.status, early.error_code().as_str()),
        (503, "tenant_provisioning")
    );
    jobs::start_workers(&test.app);
    assert!(eventually(WAIT, || {
        test.admin("GET", "/api/admin/tenants/later", None).json()["status"] == "active"
    }));
    assert!(test.tenant_file(&id).exists());
    let job_id = body["job"]["id"].as_i64().unwrap();
    assert!(eventually(WAIT, || job(&test.app, job_id).status == JobStatus::Done));
}

/// Two catalog handles (as two processes on one data directory would have) tick the same due
/// schedule at once, many times: each due time is enqueued once.
#[test]
fn a_schedule_fires_once_per_due_time_whoever_ticks() {
    let test = app_with_workers(0, 10);
    let added = test.admin(
        "POST",
        "/api/admin/schedules",
        Some(json!({"cron": "* * * * *", "kind": "noop"})),
    );
    assert_eq!(added.status, 201, "{}", added.text());
    let first_due = added.json()["next_run_at"].as_i64().unwrap();
    let bad = test.admin(
        "POST",
        "/api/admin/schedules",
        Some(json!({"cron": "every day", "kind": "noop"})),
    );
    assert_eq!(bad.status, 422);
    let data = test.data.path().to_path_buf();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let data = data.clone();
            std::thread::spawn(move || {
                let catalog =
                    tenantd::catalog::Catalog::open(&data, tenantd::db::Create::Never).unwrap();
                let mut fired = 0;
                // Three due times (a minute apart), each ticked 20 times by each handle.
                for minute in 0..3 {
                    for _ in 0..20 {
                        fired += jobs::fire_schedules(&catalog, first_due + minute * 60_000)
                            .unwrap()
                            .len();
                    }
                }
                fired
            })
        })
        .collect();
    let fired: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(fired, 3, "one job per due time in all");
    let count: i64 = test
        .central_db()
        .query_row("SELECT count(*) FROM jobs WHERE kind = 'noop'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(count, 3);
}
