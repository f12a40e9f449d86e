//! Background jobs: enqueueing from any handler (`App::enqueue`), the worker pool (threads per
//! queue, woken through a channel by enqueues in this process and by a slow poll for other
//! processes'), leases, retries with backoff and jitter, timeouts, pruning and schedules; and
//! the HTTP routes over jobs for system admins and for a tenant's admins.

use crate::catalog::{JobInsert, DEFAULT_MAX_ATTEMPTS};
use crate::error::Error;

use super::{job_kinds, App};

pub use crate::catalog::Enqueued;

/// A job to enqueue. `NewJob::new` defaults the rest: no unique key, run now, 3 attempts.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// The tenant the job runs in (its id), or `None` for central work.
    pub tenant_id: Option<String>,
    pub queue: &'static str,
    pub kind: &'static str,
    pub payload: serde_json::Value,
    /// While a pending or running job has this key, another is not enqueued.
    pub unique_key: Option<String>,
    /// Unix milliseconds; `None` is now.
    pub run_at: Option<i64>,
    pub max_attempts: Option<u32>,
}

impl NewJob {
    pub fn new(
        tenant_id: Option<String>,
        queue: &'static str,
        kind: &'static str,
        payload: serde_json::Value,
    ) -> NewJob {
        NewJob {
            tenant_id,
            queue,
            kind,
            payload,
            unique_key: None,
            run_at: None,
            max_attempts: None,
        }
    }
}

/// Now in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl App {
    /// Stores a job in the catalog and wakes a worker of its queue. A kind the binary does not
    /// know, or a queue that is not its kind's, is a bug in the caller: 500.
    pub fn enqueue(&self, job: NewJob) -> Result<Enqueued, Error> {
        let kind = job_kinds::kind(job.kind)
            .ok_or_else(|| Error::Internal(format!("unknown job kind {}", job.kind)))?;
        if kind.queue != job.queue {
            return Err(Error::Internal(format!(
                "job kind {} runs on queue {}, not {}",
                job.kind, kind.queue, job.queue
            )));
        }
        let now = now_ms();
        let enqueued = self.catalog.enqueue_job(&JobInsert {
            tenant_id: job.tenant_id.as_deref(),
            queue: job.queue,
            kind: job.kind,
            payload: &job.payload,
            unique_key: job.unique_key.as_deref(),
            run_at: job.run_at.unwrap_or(now),
            max_attempts: job.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            now,
        })?;
        Ok(enqueued)
    }
}
