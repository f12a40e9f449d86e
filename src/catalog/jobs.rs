//! Jobs and schedules in the catalog: enqueueing (a unique key honoured inside the one
//! `BEGIN IMMEDIATE` transaction), claiming with a lease, finishing, retrying with a later
//! run-at, reclaiming expired leases, pruning, the listings, and schedules with their next due
//! time. Times are Unix milliseconds passed in by the caller, so tests choose the clock.
//!
//! Job writes skip the identity read cache's invalidation (`Catalog::changed`): no cached read
//! depends on a job row.
//!
//! Everything goes through the store contract, so the same code runs on a catalog that several
//! nodes share (an sqld namespace): a job is taken, and a schedule's due time fired, by one
//! statement that checks the row is still as it was read, so one node alone wins either.

use serde::Serialize;

use super::{Catalog, CatalogError};
use crate::args;
use crate::store::{Changes, RowRef, Sql, StoreError};

/// The default number of attempts when the enqueuer names none.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Listings answer at most this many jobs.
pub const MAX_JOB_LIMIT: u32 = 500;

/// What an enqueue did: a new job, or none because a pending or running job has the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "id", rename_all = "lowercase")]
pub enum Enqueued {
    New(i64),
    Duplicate(i64),
}

impl Enqueued {
    pub fn id(self) -> i64 {
        match self {
            Enqueued::New(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// A job row to insert; the caller has checked the kind and its queue.
#[derive(Clone, Debug)]
pub struct JobInsert<'a> {
    pub tenant_id: Option<&'a str>,
    pub queue: &'a str,
    pub kind: &'a str,
    pub payload: &'a serde_json::Value,
    pub unique_key: Option<&'a str>,
    pub run_at: i64,
    pub max_attempts: u32,
    pub now: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Running,
    Done,
    Failed,
    Discarded,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "pending" => JobStatus::Pending,
            "running" => JobStatus::Running,
            "done" => JobStatus::Done,
            "failed" => JobStatus::Failed,
            "discarded" => JobStatus::Discarded,
            _ => return None,
        })
    }
}

/// One job row. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: i64,
    pub tenant_id: Option<String>,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub status: JobStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub last_error: Option<String>,
    pub unique_key: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

const JOB_COLUMNS: &str = "id, tenant_id, queue, kind, payload, status, attempts, max_attempts, \
     run_at, lease_owner, lease_expires_at, last_error, unique_key, created_at, started_at, \
     finished_at";

/// A count column (attempts) as a `u32`, refused out of range as rusqlite refused it.
fn u32_at(row: &dyn RowRef, column: usize) -> Result<u32, StoreError> {
    u32::try_from(row.get::<i64>(column)?).map_err(|_| StoreError::Type {
        column,
        expected: "integer from 0 to 2^32 - 1",
        found: "integer out of range",
    })
}

/// A row the schema should have prevented (a payload that is not JSON, an unknown status).
fn corrupt(message: String) -> StoreError {
    StoreError::Sql {
        code: None,
        message,
    }
}

fn job_from_row(row: &dyn RowRef) -> Result<JobRecord, StoreError> {
    let id: i64 = row.get(0)?;
    let corrupt = |col: usize, what: &str| corrupt(format!("column {col}: job {id}: {what}"));
    let payload: String = row.get(4)?;
    let status: String = row.get(5)?;
    Ok(JobRecord {
        id,
        tenant_id: row.get(1)?,
        queue: row.get(2)?,
        kind: row.get(3)?,
        payload: serde_json::from_str(&payload).map_err(|_| corrupt(4, "payload"))?,
        status: JobStatus::parse(&status).ok_or_else(|| corrupt(5, "status"))?,
        attempts: u32_at(row, 6)?,
        max_attempts: u32_at(row, 7)?,
        run_at: row.get(8)?,
        lease_owner: row.get(9)?,
        lease_expires_at: row.get(10)?,
        last_error: row.get(11)?,
        unique_key: row.get(12)?,
        created_at: row.get(13)?,
        started_at: row.get(14)?,
        finished_at: row.get(15)?,
    })
}

/// Which jobs a listing wants; `None` is any. Newest first.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub tenant_id: Option<String>,
    /// Only jobs with an id below this (the next page).
    pub before: Option<i64>,
    pub limit: u32,
}

/// Inserts a job unless a pending or running one has the same unique key. The check and the
/// insert are one statement, and the partial unique index would refuse a second row anyway:
/// two enqueuers never both win, on one node or several sharing the catalog.
pub(crate) fn insert_job(db: &dyn Sql, job: &JobInsert<'_>) -> Result<Enqueued, StoreError> {
    let inserted = db.query_row(
        "INSERT INTO jobs (tenant_id, queue, kind, payload, max_attempts, run_at, unique_key,
                           created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (unique_key)
             WHERE unique_key IS NOT NULL AND status IN ('pending', 'running')
             DO NOTHING
         RETURNING id",
        args![
            job.tenant_id,
            job.queue,
            job.kind,
            job.payload.to_string(),
            job.max_attempts.max(1),
            job.run_at,
            job.unique_key,
            job.now,
        ],
        |row| row.get::<i64>(0),
    )?;
    if let Some(id) = inserted {
        return Ok(Enqueued::New(id));
    }
    let existing: i64 = db.query_one(
        "SELECT id FROM jobs WHERE unique_key = ?1 AND status IN ('pending', 'running')",
        args![job.unique_key],
        |row| row.get(0),
    )?;
    Ok(Enqueued::Duplicate(existing))
}

impl Catalog {
    /// Job and schedule rows: nothing kept is read from them.
    pub(super) fn write_jobs<T>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        self.write_uncounted_sql(f)
    }

    pub fn enqueue_job(&self, job: &JobInsert<'_>) -> Result<Enqueued, CatalogError> {
        self.write_jobs(|db| Ok(insert_job(db, job)?))
    }

    pub fn job(&self, id: i64) -> Result<Option<JobRecord>, CatalogError> {
        self.read(|db| {
            Ok(db.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                args![id],
                job_from_row,
            )?)
        })
    }

    pub fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, CatalogError> {
        self.read(|db| {
            Ok(db.query_map(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs
                     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR queue = ?2)
                       AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR tenant_id = ?4)
                       AND (?5 IS NULL OR id < ?5)
                     ORDER BY id DESC LIMIT ?6"
                ),
                args![
                    filter.status.map(JobStatus::as_str),
                    filter.queue.as_deref(),
                    filter.kind.as_deref(),
                    filter.tenant_id.as_deref(),
                    filter.before,
                    filter.limit.clamp(1, MAX_JOB_LIMIT),
                ],
                job_from_row,
            )?)
        })
    }
}

/// Why a change to a job was refused.
#[derive(Debug, PartialEq)]
pub enum JobChange {
    Done(Box<JobRecord>),
    NotFound,
    /// The job is in a state that does not allow it (running, already done...).
    WrongState(JobStatus),
    /// Retrying would make a second live job with the same unique key.
    KeyTaken,
}

/// One schedule row. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduleRecord {
    pub id: i64,
    pub tenant_id: Option<String>,
    pub cron: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub next_run_at: i64,
    pub created_at: i64,
}

const SCHEDULE_COLUMNS: &str = "id, tenant_id, cron, kind, payload, next_run_at, created_at";

fn schedule_from_row(row: &dyn RowRef) -> Result<ScheduleRecord, StoreError> {
    let id: i64 = row.get(0)?;
    let payload: String = row.get(4)?;
    Ok(ScheduleRecord {
        id,
        tenant_id: row.get(1)?,
        cron: row.get(2)?,
        kind: row.get(3)?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| corrupt(format!("column 4: schedule {id}: payload: {e}")))?,
        next_run_at: row.get(5)?,
        created_at: row.get(6)?,
    })
}

/// What firing a due schedule needs from above: the job to enqueue for it (its queue and
/// attempts come from the kind), and its next due time after `now`.
pub struct Firing<'a> {
    pub queue: &'a str,
    pub max_attempts: u32,
    /// `None`: the expression has no later time; the schedule is removed.
    pub next_run_at: Option<i64>,
}

impl Catalog {
    /// Jobs by queue and status (queue, status, count), for the metrics.
    pub fn job_counts(&self) -> Result<Vec<(String, String, i64)>, CatalogError> {
        self.read(|db| {
            Ok(db.query_map(
                "SELECT queue, status, count(*) FROM jobs GROUP BY queue, status",
                &[],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?)
        })
    }

    /// Takes the oldest due pending job of `queue`: it becomes running under `owner`'s lease
    /// until `lease_until`, and its attempt is counted. The taking is one statement that asks
    /// again for `status = 'pending'`, so it does not lean on the transaction having held the
    /// write lock since the read: with a catalog several nodes share too, two workers (of this
    /// process or another node) never take the same job; one that loses looks again.
    pub fn claim_job(
        &self,
        queue: &str,
        owner: &str,
        now: i64,
        lease_until: impl Fn(&str) -> i64,
    ) -> Result<Option<JobRecord>, CatalogError> {
        // On a shared catalog every idle worker of every node polls: a read first, so that
        // only a due job takes the catalog's one write lock, which sessions and logins need.
        if self.is_shared()
            && !self.any_due(
                "SELECT 1 FROM jobs WHERE status = 'pending' AND queue = ?1 AND run_at <= ?2
                 LIMIT 1",
                args![queue, now],
            )?
        {
            return Ok(None);
        }
        self.write_jobs(|db| loop {
            let next: Option<(i64, String)> = db.query_row(
                "SELECT id, kind FROM jobs WHERE status = 'pending' AND queue = ?1
                   AND run_at <= ?2 ORDER BY run_at, id LIMIT 1",
                args![queue, now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let Some((id, kind)) = next else {
                return Ok(None);
            };
            // The claim: this statement alone decides who runs the job.
            let job = db.query_row(
                &format!(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1,
                         lease_owner = ?2, lease_expires_at = ?3, started_at = ?4
                     WHERE id = ?1 AND status = 'pending' RETURNING {JOB_COLUMNS}"
                ),
                args![id, owner, lease_until(&kind), now],
                job_from_row,
            )?;
            if let Some(job) = job {
                return Ok(Some(job));
            }
        })
    }

    /// The attempt succeeded. False when the lease was lost meanwhile (reclaimed after it
    /// expired): the row is left to whoever holds it now.
    pub fn finish_job(&self, id: i64, owner: &str, now: i64) -> Result<bool, CatalogError> {
        self.write_jobs(|db| {
            let changed = db.execute(
                "UPDATE jobs SET status = 'done', finished_at = ?3, lease_owner = NULL,
                     lease_expires_at = NULL
                 WHERE id = ?1 AND status = 'running' AND lease_owner = ?2",
                args![id, owner, now],
            )?;
            Ok(changed.rows == 1)
        })
    }

    /// The attempt failed: again at `retry_at`, or (`None`) the job fails for good. False when
    /// the lease was lost meanwhile.
    pub fn fail_job_attempt(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<bool, CatalogError> {
        self.write_jobs(|db| {
            let changed = db.execute(
                "UPDATE jobs SET last_error = ?3, lease_owner = NULL, lease_expires_at = NULL,
                     status = CASE WHEN ?4 IS NULL THEN 'failed' ELSE 'pending' END,
                     run_at = coalesce(?4, run_at),
                     finished_at = CASE WHEN ?4 IS NULL THEN ?5 END
                 WHERE id = ?1 AND status = 'running' AND lease_owner = ?2",
                args![id, owner, error, retry_at, now],
            )?;
            Ok(changed.rows == 1)
        })
    }

    /// The job could not start (its tenant is suspended): back to pending at `run_at`, the
    /// attempt not counted.
    pub fn postpone_job(
        &self,
        id: i64,
        owner: &str,
        run_at: i64,
        why: &str,
    ) -> Result<bool, CatalogError> {
        self.write_jobs(|db| {
            let changed = db.execute(
                "UPDATE jobs SET status = 'pending', attempts = max(attempts - 1, 0),
                     run_at = ?3, last_error = ?4, lease_owner = NULL,
                     lease_expires_at = NULL, started_at = NULL
                 WHERE id = ?1 AND status = 'running' AND lease_owner = ?2",
                args![id, owner, run_at, why],
            )?;
            Ok(changed.rows == 1)
        })
    }

    /// Whether `sql` finds a row: the read a shared catalog's pollers make before they write.
    fn any_due(&self, sql: &str, args: &[crate::store::Value]) -> Result<bool, CatalogError> {
        self.read(|db| Ok::<_, CatalogError>(db.query_row(sql, args, |_| Ok(()))?.is_some()))
    }

    /// Running jobs whose lease ended before `now` (their worker died, or gave up on a handler
    /// that overran): pending again, or failed when that was their last attempt. With
    /// `owner_prefix`, also every running job whose owner starts with it, whatever its lease:
    /// a server starting on a data directory it holds the lock of knows no earlier server of
    /// it is still running.
    pub fn reclaim_jobs(
        &self,
        now: i64,
        owner_prefix: Option<&str>,
    ) -> Result<usize, CatalogError> {
        if self.is_shared()
            && owner_prefix.is_none()
            && !self.any_due(
                "SELECT 1 FROM jobs WHERE status = 'running' AND lease_expires_at <= ?1 LIMIT 1",
                args![now],
            )?
        {
            return Ok(0);
        }
        self.write_jobs(|db| {
            let changed = db.execute(
                "UPDATE jobs SET
                     last_error = 'the worker stopped before the attempt finished (lease of '
                         || lease_owner || ' ended)',
                     status = CASE WHEN attempts >= max_attempts THEN 'failed'
                                   ELSE 'pending' END,
                     finished_at = CASE WHEN attempts >= max_attempts THEN ?1 END,
                     lease_owner = NULL, lease_expires_at = NULL
                 WHERE status = 'running'
                   AND (lease_expires_at <= ?1
                        OR (?2 IS NOT NULL AND substr(lease_owner, 1, length(?2)) = ?2))",
                args![now, owner_prefix],
            )?;
            Ok(changed.rows as usize)
        })
    }

    /// Removes done and discarded jobs that finished before `before`. Failed jobs stay until
    /// someone retries or discards them.
    pub fn prune_jobs(&self, before: i64) -> Result<usize, CatalogError> {
        self.write_jobs(|db| {
            let changed = db.execute(
                "DELETE FROM jobs WHERE status IN ('done', 'discarded') AND finished_at < ?1",
                args![before],
            )?;
            Ok(changed.rows as usize)
        })
    }

    /// A failed or discarded job runs again from its first attempt at `now`. A tenant's own
    /// retry (`tenant_id` given) takes failed jobs only: one a system admin discarded stays so.
    pub fn retry_job(
        &self,
        id: i64,
        tenant_id: Option<&str>,
        now: i64,
    ) -> Result<JobChange, CatalogError> {
        let from: &[JobStatus] = if tenant_id.is_some() {
            &[JobStatus::Failed]
        } else {
            &[JobStatus::Failed, JobStatus::Discarded]
        };
        self.change_job(id, tenant_id, from, |db| {
            db.execute(
                "UPDATE jobs SET status = 'pending', attempts = 0, run_at = ?2,
                     finished_at = NULL, started_at = NULL
                 WHERE id = ?1",
                args![id, now],
            )
        })
    }

    /// A pending or failed job is kept but never run.
    pub fn discard_job(
        &self,
        id: i64,
        tenant_id: Option<&str>,
        now: i64,
    ) -> Result<JobChange, CatalogError> {
        self.change_job(
            id,
            tenant_id,
            &[JobStatus::Pending, JobStatus::Failed],
            |db| {
                db.execute(
                    "UPDATE jobs SET status = 'discarded', finished_at = ?2 WHERE id = ?1",
                    args![id, now],
                )
            },
        )
    }

    /// Applies `update` to job `id` if it is in one of `from` (and, with `tenant_id`, belongs
    /// to that tenant: another tenant's job is not found).
    fn change_job(
        &self,
        id: i64,
        tenant_id: Option<&str>,
        from: &[JobStatus],
        update: impl FnOnce(&dyn Sql) -> Result<Changes, StoreError>,
    ) -> Result<JobChange, CatalogError> {
        let select = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        self.write_jobs(|db| {
            let Some(job) = db
                .query_row(&select, args![id], job_from_row)?
                .filter(|j| tenant_id.is_none() || j.tenant_id.as_deref() == tenant_id)
            else {
                return Ok(JobChange::NotFound);
            };
            if !from.contains(&job.status) {
                return Ok(JobChange::WrongState(job.status));
            }
            match update(db) {
                Ok(_) => {}
                // The partial unique index on live jobs' keys refused it, whichever backend
                // said so.
                Err(e) if e.is_constraint() => return Ok(JobChange::KeyTaken),
                Err(e) => return Err(e.into()),
            }
            Ok(JobChange::Done(Box::new(db.query_one(
                &select,
                args![id],
                job_from_row,
            )?)))
        })
    }

    pub fn add_schedule(
        &self,
        tenant_id: Option<&str>,
        cron: &str,
        kind: &str,
        payload: &serde_json::Value,
        next_run_at: i64,
        now: i64,
    ) -> Result<ScheduleRecord, CatalogError> {
        self.write_jobs(|db| {
            Ok(db.query_one(
                &format!(
                    "INSERT INTO schedules (tenant_id, cron, kind, payload, next_run_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     RETURNING {SCHEDULE_COLUMNS}"
                ),
                args![tenant_id, cron, kind, payload.to_string(), next_run_at, now],
                schedule_from_row,
            )?)
        })
    }

    pub fn remove_schedule(&self, id: i64) -> Result<bool, CatalogError> {
        self.write_jobs(|db| {
            Ok(db
                .execute("DELETE FROM schedules WHERE id = ?1", args![id])?
                .rows
                == 1)
        })
    }

    pub fn schedules(&self) -> Result<Vec<ScheduleRecord>, CatalogError> {
        self.read(|db| {
            Ok(db.query_map(
                &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY id"),
                &[],
                schedule_from_row,
            )?)
        })
    }

    /// Enqueues one job for every schedule due at `now` and moves the schedule to its next due
    /// time, in one `BEGIN IMMEDIATE` transaction: whoever runs this (a server, the CLI, two
    /// at once) enqueues each due time once. The job's unique key, `schedule:<id>:<due>`,
    /// says which. `plan` gives what the kind and the expression decide. Returns the jobs
    /// enqueued.
    ///
    /// A due time is claimed by the one statement that moves (or removes) the schedule only if
    /// it still holds the due time read, so this does not lean on the transaction having held
    /// the write lock since the read: with a catalog several nodes share too, a node whose
    /// statement changes no row enqueues nothing, and each due time fires once.
    pub fn fire_schedules(
        &self,
        now: i64,
        mut plan: impl FnMut(&ScheduleRecord) -> Option<Firing<'static>>,
    ) -> Result<Vec<(i64, &'static str)>, CatalogError> {
        if self.is_shared()
            && !self.any_due(
                "SELECT 1 FROM schedules WHERE next_run_at <= ?1 LIMIT 1",
                args![now],
            )?
        {
            return Ok(Vec::new());
        }
        self.write_jobs(|db| {
            let due: Vec<ScheduleRecord> = db.query_map(
                &format!(
                    "SELECT {SCHEDULE_COLUMNS}
                     FROM schedules WHERE next_run_at <= ?1 ORDER BY next_run_at, id"
                ),
                args![now],
                schedule_from_row,
            )?;
            let mut enqueued = Vec::new();
            for s in due {
                let Some(firing) = plan(&s) else {
                    log::error!(
                        "schedule {} names kind {} or expression {:?} this binary cannot run; \
                         it is left as it is",
                        s.id,
                        s.kind,
                        s.cron
                    );
                    continue;
                };
                // The claim: this statement alone decides who fires this due time.
                let claimed = match firing.next_run_at {
                    Some(next) => db.execute(
                        "UPDATE schedules SET next_run_at = ?3
                         WHERE id = ?1 AND next_run_at = ?2",
                        args![s.id, s.next_run_at, next],
                    )?,
                    None => db.execute(
                        "DELETE FROM schedules WHERE id = ?1 AND next_run_at = ?2",
                        args![s.id, s.next_run_at],
                    )?,
                };
                if claimed.rows != 1 {
                    continue;
                }
                let key = format!("schedule:{}:{}", s.id, s.next_run_at);
                let job = insert_job(
                    db,
                    &JobInsert {
                        tenant_id: s.tenant_id.as_deref(),
                        queue: firing.queue,
                        kind: &s.kind,
                        payload: &s.payload,
                        unique_key: Some(&key),
                        run_at: now,
                        max_attempts: firing.max_attempts,
                        now,
                    },
                )?;
                if let Enqueued::New(id) = job {
                    enqueued.push((id, firing.queue));
                }
            }
            Ok(enqueued)
        })
    }
}
