//! Jobs and schedules in the catalog: enqueueing (a unique key honoured inside the one
//! `BEGIN IMMEDIATE` transaction), claiming with a lease, finishing, retrying with a later
//! run-at, reclaiming expired leases, pruning, the listings, and schedules with their next due
//! time. Times are Unix milliseconds passed in by the caller, so tests choose the clock.
//!
//! Job writes skip the identity read cache's invalidation (`Catalog::changed`): no cached read
//! depends on a job row.

use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::Serialize;

use super::{Catalog, CatalogError};
use crate::db;

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

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let id: i64 = row.get(0)?;
    let corrupt = |col: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            col,
            rusqlite::types::Type::Text,
            format!("job {id}: {what}").into(),
        )
    };
    let payload: String = row.get(4)?;
    let status: String = row.get(5)?;
    Ok(JobRecord {
        id,
        tenant_id: row.get(1)?,
        queue: row.get(2)?,
        kind: row.get(3)?,
        payload: serde_json::from_str(&payload).map_err(|_| corrupt(4, "payload"))?,
        status: JobStatus::parse(&status).ok_or_else(|| corrupt(5, "status"))?,
        attempts: row.get(6)?,
        max_attempts: row.get(7)?,
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
/// insert are one statement in one `BEGIN IMMEDIATE` transaction, and the partial unique index
/// would refuse a second row anyway: two enqueuers never both win.
pub(crate) fn insert_job(tx: &Transaction<'_>, job: &JobInsert<'_>) -> rusqlite::Result<Enqueued> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO jobs (tenant_id, queue, kind, payload, max_attempts, run_at, unique_key,
                               created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (unique_key)
                 WHERE unique_key IS NOT NULL AND status IN ('pending', 'running')
                 DO NOTHING",
        )?
        .execute(params![
            job.tenant_id,
            job.queue,
            job.kind,
            job.payload.to_string(),
            job.max_attempts.max(1),
            job.run_at,
            job.unique_key,
            job.now,
        ])?;
    if inserted == 1 {
        return Ok(Enqueued::New(tx.last_insert_rowid()));
    }
    let existing: i64 = tx.query_row(
        "SELECT id FROM jobs WHERE unique_key = ?1 AND status IN ('pending', 'running')",
        [job.unique_key],
        |row| row.get(0),
    )?;
    Ok(Enqueued::Duplicate(existing))
}

impl Catalog {
    /// A write that no cached identity read depends on.
    pub(super) fn write_jobs<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let mut conn = self.pool.get()?;
        db::write(&mut conn, f)
    }

    pub fn enqueue_job(&self, job: &JobInsert<'_>) -> Result<Enqueued, CatalogError> {
        self.write_jobs(|tx| Ok(insert_job(tx, job)?))
    }

    pub fn job(&self, id: i64) -> Result<Option<JobRecord>, CatalogError> {
        let conn = self.pool.get()?;
        let job = conn
            .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
            .query_row([id], job_from_row)
            .optional()?;
        Ok(job)
    }

    pub fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, CatalogError> {
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR queue = ?2)
               AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR tenant_id = ?4)
               AND (?5 IS NULL OR id < ?5)
             ORDER BY id DESC LIMIT ?6"
        ))?;
        let rows = stmt.query_map(
            params![
                filter.status.map(JobStatus::as_str),
                filter.queue,
                filter.kind,
                filter.tenant_id,
                filter.before,
                filter.limit.clamp(1, MAX_JOB_LIMIT),
            ],
            job_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
