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
fn app_with_workers(workers: usize, backoff_ms: u64) -> TestApp {
    spawn_app_with(|c| {
        c.jobs.workers = vec![("default".into(), workers)];
        c.jobs.backoff = Duration::from_millis(backoff_ms);
        c.jobs.poll = Duration::from_millis(200);
    })
}

pub(crate) fn noop(tenant: Option<&str>, payload: serde_json::Value) -> NewJob {
    NewJob::new(tenant.map(String::from), "default", "noop", payload)
}

fn job(app: &App, id: i64) -> JobRecord {
    app.catalog.job(id).unwrap().expect("job exists")
}

/// Every `noop.<job id>` row of a tenant's file.
pub(crate) fn recorded(test: &TestApp, tenant_id: &str) -> Vec<(i64, String)> {
    let conn = rusqlite::Connection::open(test.tenant_file(tenant_id)).unwrap();
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
