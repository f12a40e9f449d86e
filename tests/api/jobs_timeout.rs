//! A job that overruns its kind's timeout: the attempt counts as failed and is retried with
//! backoff, or fails the job after its last attempt; the overrunning thread's late outcome
//! changes nothing. The overrunning kind exists only in this test (`jobs::run_next_with`):
//! it blocks until the test releases it, so the timeout fires whatever the machine's speed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tenantd::api::job_kinds::{self, JobFailure, JobRun, Kind};
use tenantd::api::jobs;
use tenantd::api::App;
use tenantd::catalog::{JobInsert, JobStatus};

use crate::jobs::{app_with_workers, job};
use crate::support::eventually;

static RELEASED: AtomicBool = AtomicBool::new(false);
static OVERRUNS_ENDED: AtomicUsize = AtomicUsize::new(0);

/// First attempts hold their thread until the test lets go (a minute at most); later ones
/// succeed at once.
fn overrun(_app: &App, run: &JobRun) -> Result<(), JobFailure> {
    if run.attempt == 1 {
        let give_up = Instant::now() + Duration::from_secs(60);
        while !RELEASED.load(Ordering::SeqCst) && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
        }
        OVERRUNS_ENDED.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

fn kinds(name: &str) -> Option<Kind> {
    match name {
        "test.overrun" => Some(Kind {
            queue: "default",
            timeout: Duration::from_millis(50),
            run: overrun,
        }),
        other => job_kinds::kind(other),
    }
}

fn enqueue_overrun(app: &App, max_attempts: u32, now: i64) -> i64 {
    app.catalog
        .enqueue_job(&JobInsert {
            tenant_id: None,
            queue: "default",
            kind: "test.overrun",
            payload: &json!({}),
            unique_key: None,
            run_at: now,
            max_attempts,
            now,
        })
        .unwrap()
        .id()
}

#[test]
fn an_attempt_that_overruns_its_timeout_fails_and_is_retried() {
    let test = app_with_workers(0, 1000);
    let now = jobs::now_ms();
    let retried = enqueue_overrun(&test.app, 2, now);
    let mut runner = None;
    let step = |runner: &mut _, at| {
        jobs::run_next_with(&test.app, "default", "serve:test", runner, at, kinds).unwrap()
    };
    let t0 = now + 1000;
    assert!(step(&mut runner, t0));
    let after_one = job(&test.app, retried);
    assert_eq!(
        (after_one.status, after_one.attempts),
        (JobStatus::Pending, 1)
    );
    assert_eq!(
        after_one.last_error.as_deref(),
        Some("timed out after 0.05 s")
    );
    assert!(
        (t0 + 500..=t0 + 1000).contains(&after_one.run_at),
        "backed off: {}",
        after_one.run_at - t0
    );
    assert!(!step(&mut runner, t0 + 499), "not before its backoff");
    assert!(step(&mut runner, after_one.run_at));
    let done = job(&test.app, retried);
    assert_eq!((done.status, done.attempts), (JobStatus::Done, 2));

    // One attempt only: the overrun fails the job, with its error.
    let last = enqueue_overrun(&test.app, 1, now);
    assert!(step(&mut runner, after_one.run_at));
    let failed = job(&test.app, last);
    assert_eq!((failed.status, failed.attempts), (JobStatus::Failed, 1));
    assert_eq!(failed.last_error.as_deref(), Some("timed out after 0.05 s"));

    // The abandoned attempts finish late; what they return is not recorded.
    RELEASED.store(true, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(30), || {
        OVERRUNS_ENDED.load(Ordering::SeqCst) == 2
    }));
    assert_eq!(job(&test.app, retried).status, JobStatus::Done);
    assert_eq!(job(&test.app, last).status, JobStatus::Failed);
}
