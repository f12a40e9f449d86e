//! Background jobs: enqueueing from any handler (`App::enqueue`), the worker pool (threads per
//! queue, woken through a channel by enqueues in this process and by a slow poll for other
//! processes'), leases, retries with backoff and jitter, timeouts, pruning and schedules; and
//! the HTTP routes over jobs for system admins and for a tenant's admins.

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Deserialize;
use serde_json::json;

use crate::catalog::{
    Catalog, CatalogError, Firing, JobChange, JobFilter, JobInsert, JobRecord, JobStatus,
    ScheduleRecord, TenantStatus, DEFAULT_MAX_ATTEMPTS, MAX_JOB_LIMIT,
};
use crate::error::Error;
use crate::http::{Response, Router};
use crate::tenancy::{TenancyError, Tenant};

use super::job_kinds::{self, JobFailure, JobRun, Kind};
use super::{
    id_param, json_body, tenant_by_key, App, JobsConfig, Member, RequestCtx, Route, SignedInAdmin,
};

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
        if let Enqueued::New(_) = enqueued {
            self.jobs.wake(job.queue);
        }
        Ok(enqueued)
    }
}

/// The wake-up channels of the queues, and the configuration the workers run by. Lives in
/// `App`, so an enqueue anywhere wakes a worker of this process at once.
pub struct Jobs {
    config: JobsConfig,
    /// Per queue: a token wakes one idle worker. Bounded: when it is full the workers are
    /// already awake and will find the job when they look again.
    wake: Vec<(&'static str, Sender<()>, Receiver<()>)>,
}

impl Jobs {
    pub(super) fn new(config: JobsConfig) -> Jobs {
        let wake = job_kinds::QUEUES
            .iter()
            .map(|(queue, _)| {
                let (tx, rx) = crossbeam_channel::bounded(WAKE_TOKENS);
                (*queue, tx, rx)
            })
            .collect();
        Jobs { config, wake }
    }

    fn wake(&self, queue: &str) {
        if let Some((_, tx, _)) = self.wake.iter().find(|(q, _, _)| *q == queue) {
            let _ = tx.try_send(());
        }
    }

    fn receiver(&self, queue: &str) -> Option<Receiver<()>> {
        self.wake
            .iter()
            .find(|(q, _, _)| *q == queue)
            .map(|(_, _, rx)| rx.clone())
    }

    /// How many workers `queue` gets.
    pub fn workers(&self, queue: &str) -> usize {
        self.config
            .workers
            .iter()
            .find(|(q, _)| q == queue)
            .map(|(_, n)| *n)
            .or_else(|| {
                job_kinds::QUEUES
                    .iter()
                    .find(|(q, _)| *q == queue)
                    .map(|(_, n)| *n)
            })
            .unwrap_or(0)
    }
}

const WAKE_TOKENS: usize = 1024;
/// A suspended (or still provisioning) tenant's job looks again this much later.
const WAIT_FOR_TENANT_MS: i64 = 30_000;
/// The lease outlasts the kind's timeout by this much: the worker gives up on the attempt
/// first, so only a dead worker's lease ever runs out.
const LEASE_GRACE_MS: i64 = 10_000;
/// Backoff stops doubling here.
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// Pruning runs at most this often.
const PRUNE_EVERY_MS: i64 = 60_000;

/// The owner name of this process's leases: servers reclaim every `serve:` lease on starting.
pub const SERVER_OWNER_PREFIX: &str = "serve:";

/// The delay before attempt `attempt + 1`, after `attempt` failed: `base` doubled per earlier
/// attempt up to an hour, then between half of it and all of it (`jitter` in `0.0..1.0`), so
/// jobs that failed together do not all come back together.
pub fn backoff_ms(base_ms: i64, attempt: u32, jitter: f64) -> i64 {
    let doublings = attempt.saturating_sub(1).min(30);
    let full = base_ms
        .max(1)
        .saturating_mul(1i64 << doublings)
        .min(MAX_BACKOFF_MS);
    full / 2 + ((full - full / 2) as f64 * jitter.clamp(0.0, 1.0)) as i64
}

/// Starts the worker threads of every queue and the jobs' clock thread (leases, schedules,
/// pruning). They stop when the app is dropped.
pub fn start_workers(app: &Arc<App>) {
    let now = now_ms();
    // Only the one server of a catalog may take back every running job at start: with a
    // catalog shared by several nodes, the others' running jobs are theirs, and a dead node's
    // come back when their leases run out.
    if app.jobs.config.reclaim_on_start && !app.catalog.is_shared() {
        match app.catalog.reclaim_jobs(now, Some(SERVER_OWNER_PREFIX)) {
            Ok(0) => {}
            Ok(n) => log::warn!("{n} jobs of an earlier server were running: queued again"),
            Err(e) => log::error!("cannot take back the jobs of an earlier server: {e}"),
        }
    }
    let token: u32 = rand::random();
    for (queue, _) in job_kinds::QUEUES {
        let Some(wake) = app.jobs.receiver(queue) else {
            continue;
        };
        for i in 0..app.jobs.workers(queue) {
            let owner = format!(
                "{SERVER_OWNER_PREFIX}{}:{queue}-{i}:{token:08x}",
                std::process::id()
            );
            let weak = Arc::downgrade(app);
            let wake = wake.clone();
            let poll = app.jobs.config.poll;
            let started = std::thread::Builder::new()
                .name(format!("job-{queue}-{i}"))
                .spawn(move || work(weak, queue, owner, wake, poll));
            if let Err(e) = started {
                log::error!("cannot start a worker of queue {queue}: {e}");
            }
        }
    }
    let weak = Arc::downgrade(app);
    let poll = app.jobs.config.poll;
    let started = std::thread::Builder::new()
        .name("job-clock".into())
        .spawn(move || {
            let mut last_prune = 0;
            loop {
                std::thread::sleep(poll);
                let Some(app) = weak.upgrade() else {
                    return;
                };
                let now = now_ms();
                if let Err(e) = clock_tick(&app, now, &mut last_prune) {
                    log::warn!("jobs: {e}");
                }
            }
        });
    if let Err(e) = started {
        log::error!("cannot start the jobs' clock: {e}");
    }
}

/// What the clock thread does once a poll: leases, schedules, pruning.
fn clock_tick(app: &App, now: i64, last_prune: &mut i64) -> Result<(), CatalogError> {
    let reclaimed = app.catalog.reclaim_jobs(now, None)?;
    if reclaimed > 0 {
        log::warn!("{reclaimed} jobs whose worker stopped answering are queued again");
    }
    for (_, queue) in fire_schedules(&app.catalog, now)? {
        app.jobs.wake(queue);
    }
    if reclaimed > 0 {
        for (queue, _) in job_kinds::QUEUES {
            app.jobs.wake(queue);
        }
    }
    if now - *last_prune >= PRUNE_EVERY_MS {
        *last_prune = now;
        prune(app, now)?;
        super::export::prune_exports(app.catalog.data_dir(), std::time::SystemTime::now());
    }
    Ok(())
}

/// Removes done and discarded jobs older than the retention.
pub fn prune(app: &App, now: i64) -> Result<usize, CatalogError> {
    let retention = i64::try_from(app.jobs.config.retention.as_millis()).unwrap_or(i64::MAX);
    app.catalog.prune_jobs(now.saturating_sub(retention))
}

/// Enqueues the jobs of every schedule due at `now` (see `Catalog::fire_schedules`); returns
/// their ids and queues. The server's clock thread calls it, and so does `tenantd jobs tick`.
pub fn fire_schedules(
    catalog: &Catalog,
    now: i64,
) -> Result<Vec<(i64, &'static str)>, CatalogError> {
    catalog.fire_schedules(now, |s| {
        let kind = job_kinds::kind(&s.kind)?;
        let expr = parse_cron(&s.cron).ok()?;
        Some(Firing {
            queue: kind.queue,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            next_run_at: next_due(&expr, now),
        })
    })
}

/// A cron expression: five fields (minute to weekday) or the `cron` crate's six or seven
/// (seconds first, years last). Times are UTC.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let expr = expr.trim();
    let full = if expr.split_whitespace().count() == 5 {
        format!("0 {expr}")
    } else {
        expr.to_string()
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("not a cron expression: {e}"))
}

/// The first time of `schedule` after `now` (Unix ms).
pub fn next_due(schedule: &cron::Schedule, now: i64) -> Option<i64> {
    let now = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now)?;
    schedule.after(&now).next().map(|t| t.timestamp_millis())
}

/// One worker: claims the oldest due job of its queue, runs it, records the outcome, and
/// sleeps until woken (an enqueue in this process) or the poll interval passes (another
/// process's enqueue).
fn work(weak: Weak<App>, queue: &'static str, owner: String, wake: Receiver<()>, poll: Duration) {
    let mut runner = None;
    loop {
        let Some(app) = weak.upgrade() else {
            return;
        };
        let ran = match run_next(&app, queue, &owner, &mut runner, now_ms()) {
            Ok(ran) => ran,
            Err(e) => {
                log::warn!("jobs: queue {queue}: {e}");
                false
            }
        };
        drop(app);
        if !ran {
            if let Err(RecvTimeoutError::Disconnected) = wake.recv_timeout(poll) {
                return;
            }
        }
    }
}

/// Claims and runs one job of `queue` as of `now`; false when none was due. Public for the
/// tests, which drive a worker step by step with their own clock.
pub fn run_next(
    app: &Arc<App>,
    queue: &str,
    owner: &str,
    runner: &mut Option<Runner>,
    now: i64,
) -> Result<bool, CatalogError> {
    run_next_with(app, queue, owner, runner, now, job_kinds::kind)
}

/// `run_next` with the kinds looked up in `kinds` instead of `job_kinds::kind`: the tests'
/// way to run kinds of their own (one that overruns a short timeout, say). A function, not
/// data, so no client can reach such a kind: only code linked into the process can.
pub fn run_next_with(
    app: &Arc<App>,
    queue: &str,
    owner: &str,
    runner: &mut Option<Runner>,
    now: i64,
    kinds: fn(&str) -> Option<Kind>,
) -> Result<bool, CatalogError> {
    let lease = |kind: &str| {
        let timeout = kinds(kind).map_or(Duration::ZERO, |k| k.timeout);
        now + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2) + LEASE_GRACE_MS
    };
    // The attempt's time runs from the claim, as its lease does: opening a slow tenant counts.
    let claimed = Instant::now();
    let Some(job) = app.catalog.claim_job(queue, owner, now, lease)? else {
        return Ok(false);
    };
    let outcome = attempt(app, &job, runner, kinds, claimed);
    let outcome_name = match &outcome {
        Outcome::Done => "done",
        Outcome::Wait(_) => "waiting",
        Outcome::Failed(_) => "failed",
    };
    app.metrics().job_attempt(queue, outcome_name);
    let recorded = match outcome {
        Outcome::Done => app.catalog.finish_job(job.id, owner, now_ms())?,
        Outcome::Wait(why) => {
            app.catalog
                .postpone_job(job.id, owner, now + WAIT_FOR_TENANT_MS, &why)?
        }
        Outcome::Failed(failure) => {
            let (message, again) = match failure {
                JobFailure::Retry(m) => (m, job.attempts < job.max_attempts),
                JobFailure::Fatal(m) => (m, false),
            };
            let retry_at = again.then(|| {
                let base = i64::try_from(app.jobs.config.backoff.as_millis()).unwrap_or(1000);
                // From when the attempt ended, not when it was claimed: an attempt that ran
                // longer than its backoff would otherwise be due again at once.
                now.max(now_ms()) + backoff_ms(base, job.attempts, rand::random::<f64>())
            });
            if let Some(tenant) = &job.tenant_id {
                let note = format!("job {} ({}) failed: {message}", job.id, job.kind);
                app.metrics().recent_error(tenant, "job", note);
            }
            if retry_at.is_none() {
                let tenant = job_slug(app, job.tenant_id.as_deref());
                log::warn!(tenant = tenant.as_deref().unwrap_or_default(); "job {} ({}) failed: {message}", job.id, job.kind);
            }
            app.catalog
                .fail_job_attempt(job.id, owner, &message, retry_at, now_ms())?
        }
    };
    if !recorded {
        let tenant = job_slug(app, job.tenant_id.as_deref());
        log::warn!(
            tenant = tenant.as_deref().unwrap_or_default();
            "job {} ({}): its lease ended before the attempt did; the outcome is not recorded",
            job.id,
            job.kind
        );
    }
    Ok(true)
}

/// The slug of a job's tenant, for its log lines.
fn job_slug(app: &App, id: Option<&str>) -> Option<String> {
    Some(app.catalog.by_id(id?).ok()??.slug.clone())
}

enum Outcome {
    Done,
    /// Not attempted: the tenant cannot be used now.
    Wait(String),
    Failed(JobFailure),
}

/// One attempt of `job`: its tenant opened from the job's tenant id (and nothing else), its
/// kind's function run on the runner thread until the kind's timeout.
fn attempt(
    app: &Arc<App>,
    job: &JobRecord,
    runner: &mut Option<Runner>,
    kinds: fn(&str) -> Option<Kind>,
    claimed: Instant,
) -> Outcome {
    let Some(kind) = kinds(&job.kind) else {
        return Outcome::Failed(JobFailure::Fatal(format!(
            "this server knows no job kind {}",
            job.kind
        )));
    };
    let tenant = match &job.tenant_id {
        None => None,
        Some(id) => match job_tenant(app, id) {
            Ok(tenant) => Some(tenant),
            Err(outcome) => return outcome,
        },
    };
    let run = JobRun {
        id: job.id,
        attempt: job.attempts,
        max_attempts: job.max_attempts,
        kind: job.kind.clone(),
        payload: job.payload.clone(),
        tenant,
        deadline: claimed + kind.timeout,
    };
    let left = (claimed + kind.timeout).saturating_duration_since(Instant::now());
    let result = runner
        .get_or_insert_with(Runner::start)
        .run(Arc::clone(app), kind.run, run, left);
    if result.is_err() {
        // The thread cannot be stopped: it is left to finish on its own, and this worker
        // starts a fresh one for its next job. Recording the failure releases the lease, so
        // a retry may overlap the overrunning attempt: handlers must be idempotent.
        *runner = None;
    }
    match result {
        Ok(Ok(())) => Outcome::Done,
        Ok(Err(failure)) => Outcome::Failed(failure),
        Err(RunError::TimedOut) => Outcome::Failed(JobFailure::Retry(format!(
            "timed out after {} s",
            kind.timeout.as_secs_f64()
        ))),
        Err(RunError::Panicked) => {
            Outcome::Failed(JobFailure::Retry("the job's function panicked".into()))
        }
    }
}

/// The tenant of a job, opened from the id stored in the job: a suspended (or still
/// provisioning) tenant's job waits; a deleted or unknown one's fails.
fn job_tenant(app: &App, id: &str) -> Result<Tenant, Outcome> {
    let retry = |e: &dyn std::fmt::Display| Outcome::Failed(JobFailure::Retry(e.to_string()));
    // A fresh look: the snapshot is reloaded when the catalog changed.
    let record = app
        .catalog
        .by_id(id)
        .map_err(|e| retry(&e))?
        .ok_or_else(|| Outcome::Failed(JobFailure::Fatal(format!("tenant {id} does not exist"))))?;
    match record.status {
        TenantStatus::Active => {}
        TenantStatus::Deleted => {
            return Err(Outcome::Failed(JobFailure::Fatal(format!(
                "tenant {} ({id}) is deleted",
                record.slug
            ))))
        }
        other => {
            return Err(Outcome::Wait(format!(
                "tenant {} is {other}: waiting",
                record.slug
            )))
        }
    }
    let snapshot = app.catalog.snapshot().map_err(|e| retry(&e))?;
    if super::maintenance::is_down(&snapshot, id) {
        return Err(Outcome::Wait(format!(
            "tenant {} is in maintenance: waiting",
            record.slug
        )));
    }
    app.registry.open(record).map_err(|e| match e {
        // As for a suspended tenant: a restore ends, and waiting for it is no failed attempt.
        TenancyError::Restoring { tenant } => {
            Outcome::Wait(format!("tenant {tenant} is being restored: waiting"))
        }
        e => retry(&e),
    })
}

type JobFn = fn(&App, &JobRun) -> Result<(), JobFailure>;
type Task = (Arc<App>, JobFn, JobRun);

#[derive(Debug)]
enum RunError {
    TimedOut,
    Panicked,
}

/// The thread a worker runs its jobs' functions on, so that it can stop waiting for one that
/// overruns its timeout.
pub struct Runner {
    tasks: Sender<Task>,
    results: Receiver<std::thread::Result<Result<(), JobFailure>>>,
}

impl Runner {
    fn start() -> Runner {
        let (tasks, task_rx) = crossbeam_channel::bounded::<Task>(1);
        let (result_tx, results) = crossbeam_channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name("job-run".into())
            .spawn(move || {
                for (app, run_fn, run) in task_rx {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_fn(&app, &run)
                    }));
                    drop(app);
                    if result_tx.send(result).is_err() {
                        // The worker gave up on this attempt and on this thread.
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start a job runner thread: {e}");
        }
        Runner { tasks, results }
    }

    fn run(
        &self,
        app: Arc<App>,
        run_fn: JobFn,
        run: JobRun,
        timeout: Duration,
    ) -> Result<Result<(), JobFailure>, RunError> {
        if self.tasks.send((app, run_fn, run)).is_err() {
            return Err(RunError::Panicked);
        }
        match self.results.recv_timeout(timeout) {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(RunError::Panicked),
            Err(RecvTimeoutError::Timeout) => Err(RunError::TimedOut),
            Err(RecvTimeoutError::Disconnected) => Err(RunError::Panicked),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: system admins see every job and schedule; a tenant's admins (settings_manage) their
// tenant's jobs.
// ---------------------------------------------------------------------------------------------

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("GET", "/api/admin/jobs", Route::Admin(admin_list));
    r.add("GET", "/api/admin/jobs/{id}", Route::Admin(admin_show));
    r.add(
        "POST",
        "/api/admin/jobs/{id}/retry",
        Route::Admin(admin_retry),
    );
    r.add(
        "POST",
        "/api/admin/jobs/{id}/discard",
        Route::Admin(admin_discard),
    );
    r.add("GET", "/api/admin/schedules", Route::Admin(schedules_list));
    r.add("POST", "/api/admin/schedules", Route::Admin(schedules_add));
    r.add(
        "DELETE",
        "/api/admin/schedules/{id}",
        Route::Admin(schedules_remove),
    );
    r.add("GET", "/api/jobs", Route::Tenant(tenant_list));
    r.add("POST", "/api/jobs/{id}/retry", Route::Tenant(tenant_retry));
}

/// The filters every listing shares: status, before (an id) and limit.
fn filter(ctx: &RequestCtx) -> Result<JobFilter, Error> {
    let q = |name: &str| ctx.req.query_param(name).filter(|v| !v.is_empty());
    let status = match q("status") {
        None => None,
        Some(s) => Some(JobStatus::parse(&s).ok_or_else(|| {
            Error::validation("status", "one of pending, running, done, failed, discarded")
        })?),
    };
    let number = |name: &str, max: i64| -> Result<Option<i64>, Error> {
        match q(name) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(Error::validation(
                    name,
                    format!("a whole number from 1 to {max}"),
                )),
            },
        }
    };
    Ok(JobFilter {
        status,
        before: number("before", i64::MAX)?,
        limit: number("limit", i64::from(MAX_JOB_LIMIT))?.map_or(100, |n| n as u32),
        ..JobFilter::default()
    })
}

fn page(jobs: Vec<JobRecord>, limit: u32) -> Response {
    let next = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| j.id))
        .flatten();
    Response::json(200, &json!({ "jobs": jobs, "next_before": next }))
}

fn admin_list(app: &App, ctx: &RequestCtx, _admin: &SignedInAdmin) -> Result<Response, Error> {
    let mut filter = filter(ctx)?;
    let q = |name: &str| ctx.req.query_param(name).filter(|v| !v.is_empty());
    filter.queue = q("queue");
    filter.kind = q("kind");
    if let Some(tenant) = q("tenant") {
        // An id is taken as it is (jobs outlive purged tenants); a slug must name a tenant.
        filter.tenant_id = Some(match uuid::Uuid::parse_str(&tenant) {
            Ok(id) => id.hyphenated().to_string(),
            Err(_) => tenant_by_key(&app.catalog, &tenant)?
                .ok_or(Error::TenantNotFound)?
                .id
                .clone(),
        });
    }
    let jobs = app.catalog.jobs(&filter)?;
    Ok(page(jobs, filter.limit))
}

fn admin_show(app: &App, ctx: &RequestCtx, _admin: &SignedInAdmin) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let job = app.catalog.job(id)?.ok_or(Error::NotFound)?;
    Ok(Response::json(200, &job))
}

/// The answer to a retry or a discard.
fn changed(app: &App, change: JobChange) -> Result<Response, Error> {
    match change {
        JobChange::Done(job) => {
            if job.status == JobStatus::Pending {
                app.jobs
                    .wake(job_kinds::kind(&job.kind).map_or("", |k| k.queue));
            }
            Ok(Response::json(200, &job))
        }
        JobChange::NotFound => Err(Error::NotFound),
        JobChange::WrongState(status) => Err(Error::Conflict {
            code: "job_state",
            message: format!("the job is {}", status.as_str()),
        }),
        JobChange::KeyTaken => Err(Error::Conflict {
            code: "job_duplicate",
            message: "a pending or running job has the same unique key".into(),
        }),
    }
}

fn admin_retry(app: &App, ctx: &RequestCtx, _admin: &SignedInAdmin) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    changed(app, app.catalog.retry_job(id, None, now_ms())?)
}

fn admin_discard(app: &App, ctx: &RequestCtx, _admin: &SignedInAdmin) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    changed(app, app.catalog.discard_job(id, None, now_ms())?)
}

fn schedules_list(app: &App, _ctx: &RequestCtx, _admin: &SignedInAdmin) -> Result<Response, Error> {
    let schedules = app.catalog.schedules()?;
    Ok(Response::json(200, &json!({ "schedules": schedules })))
}

/// A schedule as given: `{cron, kind, tenant?, payload?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    pub cron: String,
    pub kind: String,
    /// A tenant's id or slug; none for central work.
    pub tenant: Option<String>,
    pub payload: Option<serde_json::Value>,
}

/// Checks a schedule and stores it, due first at the expression's next time after `now`.
pub fn add_schedule(
    catalog: &Catalog,
    new: &NewSchedule,
    now: i64,
) -> Result<ScheduleRecord, Error> {
    let expr = parse_cron(&new.cron).map_err(|e| Error::validation("cron", e))?;
    if job_kinds::kind(&new.kind).is_none() {
        return Err(Error::validation(
            "kind",
            format!("no job kind {}", new.kind),
        ));
    }
    let tenant = match &new.tenant {
        None => None,
        Some(key) => Some(
            tenant_by_key(catalog, key)?
                .filter(|t| t.status != TenantStatus::Deleted)
                .ok_or_else(|| Error::validation("tenant", format!("no tenant {key}")))?,
        ),
    };
    let payload = new.payload.clone().unwrap_or_else(|| json!({}));
    if !payload.is_object() {
        return Err(Error::validation("payload", "a JSON object"));
    }
    let next = next_due(&expr, now)
        .ok_or_else(|| Error::validation("cron", "the expression names no future time"))?;
    Ok(catalog.add_schedule(
        tenant.as_ref().map(|t| t.id.as_str()),
        new.cron.trim(),
        &new.kind,
        &payload,
        next,
        now,
    )?)
}

fn schedules_add(app: &App, ctx: &RequestCtx, _admin: &SignedInAdmin) -> Result<Response, Error> {
    let new: NewSchedule = json_body(ctx.req)?;
    let schedule = add_schedule(&app.catalog, &new, now_ms())?;
    Ok(Response::json(201, &schedule))
}

fn schedules_remove(
    app: &App,
    ctx: &RequestCtx,
    _admin: &SignedInAdmin,
) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    if !app.catalog.remove_schedule(id)? {
        return Err(Error::NotFound);
    }
    Ok(Response::json(200, &json!({ "deleted": id })))
}

fn tenant_list(app: &App, ctx: &RequestCtx, member: &Member<'_>) -> Result<Response, Error> {
    member.require("settings_manage")?;
    let mut filter = filter(ctx)?;
    filter.tenant_id = Some(member.tenant.id().to_string());
    let jobs = app.catalog.jobs(&filter)?;
    Ok(page(jobs, filter.limit))
}

fn tenant_retry(app: &App, ctx: &RequestCtx, member: &Member<'_>) -> Result<Response, Error> {
    member.require("settings_manage")?;
    let id = id_param(ctx.params, "id")?;
    // Another tenant's job is not found, exactly like one that does not exist.
    changed(
        app,
        app.catalog
            .retry_job(id, Some(member.tenant.id()), now_ms())?,
    )
}
