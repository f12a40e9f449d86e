//! `tenantd jobs ...` and `tenantd schedules ...`: the job queue from the shell, on the same
//! catalog functions as the admin API. Safe beside a running server: a job retried here is
//! found by the server's slow poll.

use crate::api::jobs::{self as queue, now_ms, NewSchedule};
use crate::catalog::{Catalog, JobChange, JobFilter, JobRecord, JobStatus, MAX_JOB_LIMIT};
use crate::db::Create;

use super::tenants::{open_catalog, CommandError};
use super::{Args, CliError, Env};

pub const JOBS_HELP: &str = "\
tenantd jobs: see and steer background jobs

Usage:
  tenantd jobs list [--status S] [--queue Q] [--kind K] [--tenant SLUG] [--limit N]
  tenantd jobs show <id>
  tenantd jobs retry|discard <id>
  tenantd jobs tick

Options:
  --data DIR     Data directory [TENANTD_DATA, ./data]
  --json         Print JSON instead of text
  --status S     pending, running, done, failed or discarded
  --limit N      Newest N jobs [100, at most 500]
  -h, --help     Show this help

retry runs a failed or discarded job again from its first attempt; discard keeps a pending
or failed job without running it. tick enqueues the jobs of every due schedule, as a running
server does every second (each due time is enqueued once, whoever ticks).
";

pub const SCHEDULES_HELP: &str = "\
tenantd schedules: recurring jobs

Usage:
  tenantd schedules list
  tenantd schedules add --cron EXPR --kind KIND [--tenant SLUG] [--payload JSON]
  tenantd schedules remove <id>

Options:
  --data DIR     Data directory [TENANTD_DATA, ./data]
  --json         Print JSON instead of text
  --cron EXPR    Five fields (minute hour day month weekday) or six with seconds first; UTC
  -h, --help     Show this help
";

fn op(e: impl std::fmt::Display) -> CommandError {
    CommandError::Operation(e.to_string())
}

fn id_arg(args: &mut Args) -> Result<i64, CommandError> {
    let id = args
        .positional()
        .ok_or_else(|| CliError("missing the <id> argument".into()))?;
    Ok(id
        .parse()
        .map_err(|_| CliError(format!("not a job id: {id}")))?)
}

fn print_job(job: &JobRecord, json: bool) {
    if json {
        println!("{}", serde_json::to_string(job).unwrap_or_default());
        return;
    }
    println!(
        "{:>6}  {:<9}  {:<8}  {:<18}  {}/{}  {}  {}",
        job.id,
        job.status.as_str(),
        job.queue,
        job.kind,
        job.attempts,
        job.max_attempts,
        job.tenant_id.as_deref().unwrap_or("-"),
        job.last_error.as_deref().unwrap_or("")
    );
}

fn tenant_id(catalog: &Catalog, key: &str) -> Result<String, CommandError> {
    if let Ok(id) = uuid::Uuid::parse_str(key) {
        return Ok(id.hyphenated().to_string());
    }
    Ok(catalog
        .by_slug(key)
        .map_err(op)?
        .ok_or_else(|| op(format!("no tenant {key}")))?
        .id
        .clone())
}

pub fn jobs(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let json = args.flag("--json");
    let sub = args
        .positional()
        .ok_or_else(|| CliError("missing a jobs command".into()))?;
    match sub.as_str() {
        "list" => {
            let status = args.value("--status")?;
            let queue = args.value("--queue")?;
            let kind = args.value("--kind")?;
            let tenant = args.value("--tenant")?;
            let limit = args.value("--limit")?;
            args.finish_ref()?;
            let catalog = open_catalog(&data, Create::Never)?;
            let filter = JobFilter {
                status: status
                    .map(|s| JobStatus::parse(&s).ok_or_else(|| CliError(format!("no status {s}"))))
                    .transpose()?,
                queue,
                kind,
                tenant_id: tenant.map(|t| tenant_id(&catalog, &t)).transpose()?,
                before: None,
                limit: match limit {
                    None => 100,
                    Some(n) => n
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_JOB_LIMIT).contains(n))
                        .ok_or_else(|| CliError(format!("--limit: 1 to {MAX_JOB_LIMIT}")))?,
                },
            };
            let jobs = catalog.jobs(&filter).map_err(op)?;
            if json {
                println!("{}", serde_json::json!({ "jobs": jobs }));
            } else {
                for job in &jobs {
                    print_job(job, false);
                }
            }
        }
        "show" => {
            let id = id_arg(args)?;
            args.finish_ref()?;
            let catalog = open_catalog(&data, Create::Never)?;
            let job = catalog
                .job(id)
                .map_err(op)?
                .ok_or_else(|| op(format!("no job {id}")))?;
            if json {
                print_job(&job, true);
            } else {
                println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
            }
        }
        "retry" | "discard" => {
            let id = id_arg(args)?;
            args.finish_ref()?;
            let catalog = open_catalog(&data, Create::Never)?;
            let change = if sub == "retry" {
                catalog.retry_job(id, None, now_ms())
            } else {
                catalog.discard_job(id, None, now_ms())
            }
            .map_err(op)?;
            match change {
                JobChange::Done(job) => print_job(&job, json),
                JobChange::NotFound => return Err(op(format!("no job {id}"))),
                JobChange::WrongState(s) => return Err(op(format!("job {id} is {}", s.as_str()))),
                JobChange::KeyTaken => {
                    return Err(op(format!(
                        "job {id}: a pending or running job has the same unique key"
                    )))
                }
            }
        }
        "tick" => {
            args.finish_ref()?;
            let catalog = open_catalog(&data, Create::Never)?;
            let fired = queue::fire_schedules(&catalog, now_ms()).map_err(op)?;
            let ids: Vec<i64> = fired.iter().map(|(id, _)| *id).collect();
            if json {
                println!("{}", serde_json::json!({ "enqueued": ids }));
            } else {
                println!("{} jobs enqueued", ids.len());
            }
        }
        other => return Err(CliError(format!("unknown jobs command: {other}")).into()),
    }
    Ok(())
}

pub fn schedules(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let json = args.flag("--json");
    let sub = args
        .positional()
        .ok_or_else(|| CliError("missing a schedules command".into()))?;
    match sub.as_str() {
        "list" => {
            args.finish_ref()?;
            let catalog = open_catalog(&data, Create::Never)?;
            let schedules = catalog.schedules().map_err(op)?;
            if json {
                println!("{}", serde_json::json!({ "schedules": schedules }));
            } else {
                for s in &schedules {
                    println!(
                        "{:>4}  {:<20}  {:<18}  next {}  {}",
                        s.id,
                        s.cron,
                        s.kind,
                        crate::db::format_unix_ms(s.next_run_at),
                        s.tenant_id.as_deref().unwrap_or("central")
                    );
                }
            }
        }
        "add" => {
            let cron = args.value("--cron")?;
            let kind = args.value("--kind")?;
            let tenant = args.value("--tenant")?;
            let payload = args.value("--payload")?;
            args.finish_ref()?;
            let new = NewSchedule {
                cron: cron.ok_or_else(|| CliError("--cron is required".into()))?,
                kind: kind.ok_or_else(|| CliError("--kind is required".into()))?,
                tenant,
                payload: payload
                    .map(|p| {
                        serde_json::from_str(&p)
                            .map_err(|e| CliError(format!("--payload: not JSON: {e}")))
                    })
                    .transpose()?,
            };
            let catalog = open_catalog(&data, Create::Never)?;
            let s = queue::add_schedule(&catalog, &new, now_ms()).map_err(|e| match e {
                // What was given is wrong: a usage error naming the option and the problem.
                crate::error::Error::Validation(fields) => CliError(
                    fields
                        .iter()
                        .map(|(field, message)| format!("--{field}: {message}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
                .into(),
                other => op(other),
            })?;
            if json {
                println!("{}", serde_json::to_string(&s).unwrap_or_default());
            } else {
                println!(
                    "schedule {} added; first due {}",
                    s.id,
                    crate::db::format_unix_ms(s.next_run_at)
                );
            }
        }
        "remove" => {
            let id = id_arg(args)?;
            args.finish_ref()?;
            let catalog = open_catalog(&data, Create::Never)?;
            if !catalog.remove_schedule(id).map_err(op)? {
                return Err(op(format!("no schedule {id}")));
            }
            if !json {
                println!("schedule {id} removed");
            }
        }
        other => return Err(CliError(format!("unknown schedules command: {other}")).into()),
    }
    Ok(())
}
