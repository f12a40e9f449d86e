//! The catalog's job rows: enqueue with unique keys, and (below) claims, leases and schedules.

use super::*;
use crate::test_kit::Setup;

const T0: i64 = 1_700_000_000_000;

fn job<'a>(payload: &'a serde_json::Value, key: Option<&'a str>) -> JobInsert<'a> {
    JobInsert {
        tenant_id: None,
        queue: "default",
        kind: "noop",
        payload,
        unique_key: key,
        run_at: T0,
        max_attempts: 3,
        now: T0,
    }
}

#[test]
fn a_unique_key_enqueues_once_while_pending() {
    let s = Setup::new();
    let payload = serde_json::json!({});
    let first = s.catalog.enqueue_job(&job(&payload, Some("k"))).unwrap();
    let second = s.catalog.enqueue_job(&job(&payload, Some("k"))).unwrap();
    assert!(matches!(first, Enqueued::New(_)));
    assert_eq!(second, Enqueued::Duplicate(first.id()));
    let other = s
        .catalog
        .enqueue_job(&job(&payload, Some("other")))
        .unwrap();
    assert!(matches!(other, Enqueued::New(id) if id != first.id()));
    let keyless = s.catalog.enqueue_job(&job(&payload, None)).unwrap();
    let keyless2 = s.catalog.enqueue_job(&job(&payload, None)).unwrap();
    assert_ne!(keyless.id(), keyless2.id());
    assert_eq!(s.count("SELECT count(*) FROM jobs"), 4);
}

/// A retry that would make a second live job with the same key is refused by the partial
/// unique index; the refusal comes back through the store contract as a constraint, and the
/// job is left as it was.
#[test]
fn a_retry_onto_a_live_key_is_refused_as_taken() {
    let s = Setup::new();
    let payload = serde_json::json!({});
    let first = s
        .catalog
        .enqueue_job(&job(&payload, Some("k")))
        .unwrap()
        .id();
    let claimed = s
        .catalog
        .claim_job("default", "w1", T0, |_| T0 + 1)
        .unwrap();
    assert_eq!(claimed.map(|j| j.id), Some(first));
    assert!(s
        .catalog
        .fail_job_attempt(first, "w1", "boom", None, T0)
        .unwrap());
    let second = s.catalog.enqueue_job(&job(&payload, Some("k"))).unwrap();
    assert!(matches!(second, Enqueued::New(id) if id != first));
    assert_eq!(
        s.catalog.retry_job(first, None, T0).unwrap(),
        JobChange::KeyTaken
    );
    assert_eq!(
        s.catalog.job(first).unwrap().unwrap().status,
        JobStatus::Failed
    );
    assert!(matches!(
        s.catalog.discard_job(second.id(), None, T0).unwrap(),
        JobChange::Done(_)
    ));
    let JobChange::Done(retried) = s.catalog.retry_job(first, None, T0).unwrap() else {
        panic!("the key is free again");
    };
    assert_eq!((retried.status, retried.attempts), (JobStatus::Pending, 0));
}
