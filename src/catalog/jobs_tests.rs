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
