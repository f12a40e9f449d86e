//! Every kind of background job: ONE match from a kind's name to its queue, its timeout and
//! the function that runs it, plus what a run receives (`JobRun`) and how it fails
//! (`JobFailure`). The functions live with what they do; `noop` lives here.

use std::time::{Duration, Instant};

use crate::tenancy::Tenant;

use super::App;

/// The queues that have workers, and how many each gets unless configured otherwise.
pub const QUEUES: &[(&str, usize)] = &[
    ("default", 2),
    ("webhooks", 2),
    ("inbound", 1),
    ("exports", 1),
];

/// A kind of job: which queue runs it, how long an attempt may take, and what it does.
#[derive(Clone, Copy)]
pub struct Kind {
    pub queue: &'static str,
    pub timeout: Duration,
    pub run: fn(&App, &JobRun) -> Result<(), JobFailure>,
}

/// One attempt of a job, as its function sees it.
pub struct JobRun {
    pub id: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub max_attempts: u32,
    pub kind: String,
    pub payload: serde_json::Value,
    /// Opened by the worker from the tenant id stored in the job, for this job alone; `None`
    /// for central work.
    pub tenant: Option<Tenant>,
    /// When the worker stops waiting for this attempt (see the README's "Jobs").
    pub deadline: Instant,
}

/// Why an attempt failed: `Retry` backs off and tries again until the job's last attempt;
/// `Fatal` fails the job at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobFailure {
    Retry(String),
    Fatal(String),
}

/// The kind called `name`, if there is one.
pub fn kind(name: &str) -> Option<Kind> {
    let secs = Duration::from_secs;
    Some(match name {
        "noop" => Kind {
            queue: "default",
            timeout: secs(30),
            run: noop,
        },
        "tenant.provision" => Kind {
            queue: "default",
            timeout: secs(120),
            run: super::admin::provision_job,
        },
        super::backups::KIND => Kind {
            queue: "default",
            timeout: secs(600),
            run: super::backups::backup_job,
        },
        "webhook.deliver" => Kind {
            queue: "webhooks",
            timeout: secs(30),
            run: super::webhooks_out::deliver_job,
        },
        super::export::EXPORT_KIND => Kind {
            queue: super::export::EXPORT_QUEUE,
            timeout: super::export::EXPORT_TIMEOUT,
            run: super::export::export_job,
        },
        super::webhooks_in::MESSAGES_KIND => Kind {
            queue: super::webhooks_in::QUEUE,
            timeout: secs(30),
            run: super::webhooks_in::run_messages,
        },
        super::billing::KIND => Kind {
            queue: super::webhooks_in::QUEUE,
            timeout: secs(30),
            run: super::billing::run,
        },
        _ => return None,
    })
}

/// Does nothing, unless the payload asks it to prove where it runs:
/// - `"expect_tenant": "<id>"`: the tenant file's own `tenant_meta` id must be that id;
/// - `"record": true`: once per job (keyed by the job's id, so a rerun changes nothing) a
///   `tenant_meta` row `noop.<job id>` notes the run;
/// - `"fail": "<message>"`: fails the attempt (retried).
///
/// Harmless in production: it reads one row and writes at most one of its own per job. It
/// never waits: a payload that could hold a worker would let whoever writes a schedule stall
/// a queue (the timeout tests run a kind of their own through `jobs::run_next_with`).
fn noop(_app: &App, run: &JobRun) -> Result<(), JobFailure> {
    let p = &run.payload;
    if let Some(message) = p.get("fail").and_then(|v| v.as_str()) {
        return Err(JobFailure::Retry(message.to_string()));
    }
    let expect = p.get("expect_tenant").and_then(|v| v.as_str());
    let record = p.get("record").and_then(|v| v.as_bool()) == Some(true);
    if expect.is_none() && !record {
        return Ok(());
    }
    let tenant = run
        .tenant
        .as_ref()
        .ok_or_else(|| JobFailure::Fatal("this check needs a tenant job".into()))?;
    let retry = |e: &dyn std::fmt::Display| JobFailure::Retry(e.to_string());
    if let Some(expected) = expect {
        let seen: String = tenant
            .read(|db| -> Result<String, crate::error::Error> {
                Ok(
                    db.query_one("SELECT value FROM tenant_meta WHERE key = 'id'", &[], |r| {
                        r.get(0)
                    })?,
                )
            })
            .map_err(|e| retry(&e))?;
        if seen != expected {
            return Err(JobFailure::Fatal(format!(
                "ran in tenant {seen}, expected {expected}"
            )));
        }
    }
    if record {
        let key = format!("noop.{}", run.id);
        tenant
            .write_sql(|db| -> Result<(), crate::error::Error> {
                db.execute(
                    "INSERT INTO tenant_meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO NOTHING",
                    crate::args![&key, run.attempt.to_string()],
                )?;
                Ok(())
            })
            .map_err(|e| retry(&e))?;
    }
    Ok(())
}
