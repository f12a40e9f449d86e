//! kill -9 of a real `tenantd serve` while its workers run jobs, then a restart on the same
//! data directory: every job is done exactly once in effect (one `noop.<id>` row in its own
//! tenant's file) and none is lost.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tenantd::catalog::{Catalog, Enqueued, JobInsert};
use tenantd::db::Create;

use crate::beside::cli_ok;
use crate::cli::init_data_dir;
use crate::jobs::recorded_in;
use crate::support::{eventually, spawn_serve};

const TENANTS: usize = 6;
const JOBS_PER_TENANT: usize = 150;
const WAIT: Duration = Duration::from_secs(60);

fn count(data: &Path, status: &str) -> i64 {
    let conn = rusqlite::Connection::open(data.join("central.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(
        "SELECT count(*) FROM jobs WHERE status = ?1",
        [status],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn kill_9_while_jobs_run_then_restart_loses_none_and_repeats_none() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    init_data_dir(dir);
    let catalog = Catalog::open(dir, Create::Never).unwrap();
    let mut ids = Vec::new();
    for t in 0..TENANTS {
        let slug = format!("crash{t}");
        cli_ok(dir, &["tenants", "create", &slug, "--name", &slug]);
        ids.push(catalog.by_slug(&slug).unwrap().expect("created").id.clone());
    }
    // Enqueued by another process (this one), interleaved across the tenants.
    let mut enqueued: Vec<Vec<i64>> = vec![Vec::new(); TENANTS];
    let now = tenantd::api::jobs::now_ms();
    for round in 0..JOBS_PER_TENANT {
        for (t, id) in ids.iter().enumerate() {
            let payload = json!({"record": true, "expect_tenant": id, "round": round});
            let job = catalog
                .enqueue_job(&JobInsert {
                    tenant_id: Some(id),
                    queue: "default",
                    kind: "noop",
                    payload: &payload,
                    unique_key: None,
                    run_at: now,
                    max_attempts: 3,
                    now,
                })
                .unwrap();
            let Enqueued::New(job) = job else {
                panic!("no unique key, so never a duplicate")
            };
            enqueued[t].push(job);
        }
    }
    let total = (TENANTS * JOBS_PER_TENANT) as i64;

    let mut first = spawn_serve(dir, &["--job-workers", "default=4"], 1);
    // Killed as soon as some jobs are done and before all are.
    let mut done_at_kill = 0;
    let started = eventually(WAIT, || {
        done_at_kill = count(dir, "done");
        done_at_kill > 0
    });
    assert!(started, "the first server ran no job");
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let done_at_kill = count(dir, "done");
    assert!(
        done_at_kill < total,
        "the kill came after every job was done ({done_at_kill}): nothing was tested"
    );

    let _second = spawn_serve(dir, &["--job-workers", "default=4"], 1);
    assert!(
        eventually(WAIT, || count(dir, "done") == total),
        "every job done after the restart: {} of {total}",
        count(dir, "done")
    );
    assert_eq!(count(dir, "failed"), 0);
    for (t, id) in ids.iter().enumerate() {
        let mut expected = enqueued[t].clone();
        expected.sort();
        let mut seen: Vec<i64> = recorded_in(dir, id).into_iter().map(|(j, _)| j).collect();
        seen.sort();
        assert_eq!(
            seen, expected,
            "tenant {t}: one row per job of its own, none of another tenant's"
        );
    }
}
