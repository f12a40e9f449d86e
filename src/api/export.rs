//! Data portability: a company's archive (`GET /api/export` streamed; `POST /api/exports` as a
//! `tenant.export` job writing `data/exports/<tenant-uuid>/<export-id>.zip`, listed and
//! downloaded from there, removed after `EXPORT_RETENTION`), and a person's own data
//! (`GET /api/me/export`) and the end of their account (`DELETE /api/me`). The archive itself
//! is `tenancy::export`.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::catalog::{
    ActorType, Enqueued, JobFilter, JobRecord, JobStatus, SessionKind, ADMIN_ROLE,
};
use crate::error::Error;
use crate::http::{Response, Router};
use crate::tenancy::export::{self as archive, ExportError};

use super::job_kinds::{JobFailure, JobRun};
use super::{id_param, json_body, Account, App, Member, NewJob, RequestCtx, Route};

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("GET", "/api/export", Route::Tenant(download_now));
    r.add("POST", "/api/exports", Route::Tenant(request_export));
    r.add("GET", "/api/exports", Route::Tenant(list_exports));
    r.add(
        "GET",
        "/api/exports/{id}/download",
        Route::Tenant(download_export),
    );
    r.add("GET", "/api/me/export", Route::Account(my_data));
    r.add("DELETE", "/api/me", Route::Account(delete_me));
}

pub const EXPORT_KIND: &str = "tenant.export";

/// Export jobs' own queue: an archive of a large company takes long, and must not hold the
/// `default` queue's workers (backups, provisioning) meanwhile.
pub const EXPORT_QUEUE: &str = "exports";

/// Job archives kept per company: writing one removes the oldest past this many, so repeated
/// requests cannot fill the disk.
pub const MAX_KEPT_EXPORTS: usize = 5;

/// How long a job's archive is kept on disk after it was written.
pub const EXPORT_RETENTION: Duration = Duration::from_secs(3 * 24 * 3600);

/// How long one export job may take; also how old a `.tmp` must be before it counts as left
/// over by a run that died.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Streamed answers and files are written in pieces of this size (each write is one chunk).
const PIECE: usize = 64 * 1024;

/// Company archives streamed at once, by the whole server: each holds a worker thread and a
/// connection for as long as its client reads. Past it, `429`.
pub const MAX_EXPORT_STREAMS: usize = 2;

/// How long one streamed archive may take, whatever its client's pace: past it the stream is
/// cut and its read transaction ended. The I/O timeout bounds each wait for the client only,
/// so a client reading a few bytes at a time would otherwise hold a worker, a place among the
/// [`MAX_EXPORT_STREAMS`] and a snapshot that keeps the company's `-wal` from being reset, for
/// as long as it likes.
pub const MAX_EXPORT_STREAM_DURATION: Duration = Duration::from_secs(30 * 60);

/// The limits on streamed archives (`GET /api/export`).
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// Streams at once on the whole server; a company has one at most.
    pub max_streams: usize,
    /// See [`MAX_EXPORT_STREAM_DURATION`].
    pub max_stream_duration: Duration,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            max_streams: MAX_EXPORT_STREAMS,
            max_stream_duration: MAX_EXPORT_STREAM_DURATION,
        }
    }
}

/// The tenants streaming an archive now: one stream per tenant, so their number is the streams'.
pub struct Streams {
    config: ExportConfig,
    tenants: Arc<Mutex<HashSet<String>>>,
}

impl Streams {
    pub fn new(config: ExportConfig) -> Streams {
        Streams {
            config,
            tenants: Default::default(),
        }
    }
}

/// A tenant's place among the streams, given back when the stream ends or is dropped.
struct StreamPlace {
    tenants: Arc<Mutex<HashSet<String>>>,
    tenant_id: String,
}

impl StreamPlace {
    /// `None` when the tenant streams already, or the server has no place left: one tenant
    /// cannot take every place and keep the others' exports out.
    fn take(streams: &Streams, tenant_id: &str) -> Option<StreamPlace> {
        let mut tenants = streams.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if tenants.contains(tenant_id) || tenants.len() >= streams.config.max_streams {
            return None;
        }
        tenants.insert(tenant_id.to_string());
        Some(StreamPlace {
            tenants: streams.tenants.clone(),
            tenant_id: tenant_id.to_string(),
        })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants.remove(&self.tenant_id);
    }
}

const PERMISSION: &str = "settings_manage";

/// `data/exports/<tenant-uuid>/`: never reachable from another tenant's routes, since every
/// path below is built from the requesting member's own tenant id.
fn exports_dir(app: &App, tenant_id: &str) -> PathBuf {
    app.catalog.data_dir().join("exports").join(tenant_id)
}

fn attachment(file_name: &str) -> String {
    format!("attachment; filename=\"{file_name}\"")
}

fn audit_export(app: &App, ctx: &RequestCtx, member: &Member<'_>, action: &str, details: Value) {
    let mut entry = app.audit_entry(ctx, ActorType::User, action);
    entry.actor_id = Some(member.user.id);
    entry.actor_email = Some(member.user.email.clone());
    entry.tenant_id = Some(member.tenant.id().to_string());
    entry.details = details;
    app.audit(entry);
}

/// The archive, made while it is sent. A write error (the client went away) ends it: the
/// read transaction is rolled back and the connection goes back to the pool.
fn download_now(app: &App, ctx: &RequestCtx, member: &Member<'_>) -> Result<Response, Error> {
    member.require(PERMISSION)?;
    super::plans::require_feature(app, member.tenant.id(), "exports")?;
    let place = StreamPlace::take(&app.export_streams, member.tenant.id()).ok_or(
        Error::TooManyRequests {
            retry_after_secs: 10,
        },
    )?;
    let until = Instant::now() + app.export_streams.config.max_stream_duration;
    // A HEAD gets the head alone: nothing is exported.
    if ctx.req.method != "HEAD" {
        audit_export(
            app,
            ctx,
            member,
            "tenant.exported",
            json!({"via": "download"}),
        );
    }
    let tenant = member.tenant.clone();
    let catalog = app.catalog.clone();
    let name = archive::file_name(tenant.slug(), chrono::Utc::now());
    Ok(Response::stream(
        200,
        "application/zip",
        Box::new(move |out| {
            let _place = place;
            let buffered = BufWriter::with_capacity(PIECE, out);
            archive::write_archive(&catalog, &tenant, buffered)
                .map(|_| ())
                .map_err(|e| match e {
                    ExportError::Io(e) => e,
                    other => {
                        log::error!("export of {} failed: {other}", tenant.slug());
                        io::Error::other(other)
                    }
                })
        }),
    )
    .with_deadline(until)
    .with_header("Content-Disposition", attachment(&name))
    .with_header("Cache-Control", "no-store"))
}

/// One export job per company at a time: while one is pending or running, asking again answers
/// it (`200`) rather than queueing another.
fn request_export(app: &App, ctx: &RequestCtx, member: &Member<'_>) -> Result<Response, Error> {
    member.require(PERMISSION)?;
    super::plans::require_feature(app, member.tenant.id(), "exports")?;
    let mut job = NewJob::new(
        Some(member.tenant.id().to_string()),
        EXPORT_QUEUE,
        EXPORT_KIND,
        json!({ "requested_by": member.user.id }),
    );
    job.unique_key = Some(format!("{EXPORT_KIND}:{}", member.tenant.id()));
    let (id, status) = match app.enqueue(job)? {
        Enqueued::New(id) => (id, 202),
        Enqueued::Duplicate(id) => (id, 200),
    };
    if status == 202 {
        audit_export(
            app,
            ctx,
            member,
            "tenant.export_requested",
            json!({"export_id": id}),
        );
    }
    let job = app.catalog.job(id)?.ok_or(Error::NotFound)?;
    Ok(Response::json(status, &shown(app, &job)))
}

fn list_exports(app: &App, _ctx: &RequestCtx, member: &Member<'_>) -> Result<Response, Error> {
    member.require(PERMISSION)?;
    let jobs = app.catalog.jobs(&JobFilter {
        kind: Some(EXPORT_KIND.to_string()),
        tenant_id: Some(member.tenant.id().to_string()),
        limit: 100,
        ..JobFilter::default()
    })?;
    let exports: Vec<Value> = jobs.iter().map(|job| shown(app, job)).collect();
    Ok(Response::json(200, &json!({ "exports": exports })))
}

/// The job's archive, if it is this tenant's export job. Another tenant's id is not found,
/// exactly like one that does not exist.
fn export_file(app: &App, member: &Member<'_>, id: i64) -> Result<(JobRecord, PathBuf), Error> {
    let job = app
        .catalog
        .job(id)?
        .filter(|job| {
            job.kind == EXPORT_KIND && job.tenant_id.as_deref() == Some(member.tenant.id())
        })
        .ok_or(Error::NotFound)?;
    let path = exports_dir(app, member.tenant.id()).join(format!("{id}.zip"));
    Ok((job, path))
}

/// An export job as the API shows it. `status`: `pending`, `running`, `ready` (downloadable),
/// `failed`, or `expired` (done, its file removed after the retention).
fn shown(app: &App, job: &JobRecord) -> Value {
    let tenant_id = job.tenant_id.as_deref().unwrap_or_default();
    let path = exports_dir(app, tenant_id).join(format!("{}.zip", job.id));
    let file = fs::metadata(&path).ok();
    let status = match job.status {
        JobStatus::Pending => "pending",
        JobStatus::Running => "running",
        JobStatus::Done if file.is_some() => "ready",
        JobStatus::Done => "expired",
        JobStatus::Failed | JobStatus::Discarded => "failed",
    };
    let expires_at = file
        .as_ref()
        .and_then(|m| m.modified().ok())
        .map(|t| unix_ms(t + EXPORT_RETENTION))
        .map(crate::db::format_unix_ms);
    json!({
        "id": job.id,
        "status": status,
        "created_at": crate::db::format_unix_ms(job.created_at),
        "finished_at": job.finished_at.map(crate::db::format_unix_ms),
        "bytes": file.map(|m| m.len()),
        "expires_at": expires_at,
        "error": job.last_error.as_ref().filter(|_| status == "failed"),
    })
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn download_export(app: &App, ctx: &RequestCtx, member: &Member<'_>) -> Result<Response, Error> {
    member.require(PERMISSION)?;
    let id = id_param(ctx.params, "id")?;
    let (job, path) = export_file(app, member, id)?;
    // An archive, not a database: plain file reads are fine here.
    let mut file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(match job.status {
                JobStatus::Pending | JobStatus::Running => Error::Conflict {
                    code: "export_not_ready",
                    message: "the export is still being made".into(),
                },
                _ => Error::NotFound,
            })
        }
        Err(e) => return Err(Error::Internal(format!("{}: {e}", path.display()))),
    };
    audit_export(
        app,
        ctx,
        member,
        "tenant.export_downloaded",
        json!({"export_id": id}),
    );
    let day = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(job.created_at)
        .unwrap_or_else(chrono::Utc::now);
    let name = archive::file_name(member.tenant.slug(), day);
    Ok(Response::stream(
        200,
        "application/zip",
        Box::new(move |out| {
            let mut piece = vec![0; PIECE];
            loop {
                let n = file.read(&mut piece)?;
                if n == 0 {
                    return Ok(());
                }
                out.write_all(&piece[..n])?;
            }
        }),
    )
    .with_header("Content-Disposition", attachment(&name))
    .with_header("Cache-Control", "no-store"))
}

/// The `tenant.export` job: the archive into `<id>.zip.<attempt>.tmp`, synced, then renamed, so a
/// listed file is always whole.
pub(super) fn export_job(app: &App, run: &JobRun) -> Result<(), JobFailure> {
    let tenant = run
        .tenant
        .as_ref()
        .ok_or_else(|| JobFailure::Fatal("an export needs a tenant".into()))?;
    let retry = |e: &dyn std::fmt::Display| JobFailure::Retry(e.to_string());
    let dir = exports_dir(app, tenant.id());
    fs::create_dir_all(&dir).map_err(|e| retry(&e))?;
    let done = dir.join(format!("{}.zip", run.id));
    // One per attempt: an attempt past its timeout may still be writing its own.
    let tmp = dir.join(format!("{}.zip.{}.tmp", run.id, run.attempt));
    let written = (|| -> Result<(), ExportError> {
        let file = fs::File::create(&tmp)?;
        let mut out = BufWriter::with_capacity(PIECE, file);
        archive::write_archive(&app.catalog, tenant, &mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, &done)?;
        // The rename itself survives a crash once the directory is synced.
        fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(retry(&e));
    }
    keep_newest(&dir, MAX_KEPT_EXPORTS);
    Ok(())
}

/// Removes a company's job archives but the `keep` newest (by export id, which grows); returns
/// how many went.
fn keep_newest(dir: &Path, keep: usize) -> usize {
    let Ok(files) = fs::read_dir(dir) else {
        return 0;
    };
    let mut ids: Vec<i64> = files
        .flatten()
        .filter_map(|f| {
            let name = f.file_name();
            name.to_str()?.strip_suffix(".zip")?.parse().ok()
        })
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.iter()
        .skip(keep)
        .filter(|id| fs::remove_file(dir.join(format!("{id}.zip"))).is_ok())
        .count()
}

/// Removes job archives older than [`EXPORT_RETENTION`] and temporary files older than
/// [`EXPORT_TIMEOUT`] (left by a run that died); returns how many. The clock thread calls it.
pub fn prune_exports(data_dir: &Path, now: SystemTime) -> usize {
    let Ok(tenants) = fs::read_dir(data_dir.join("exports")) else {
        return 0;
    };
    let mut removed = 0;
    for dir in tenants.flatten() {
        let Ok(files) = fs::read_dir(dir.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name();
            let name = name.to_string_lossy();
            let keep_for = if name.ends_with(".zip") {
                EXPORT_RETENTION
            } else if name.ends_with(".tmp") {
                EXPORT_TIMEOUT
            } else {
                continue;
            };
            let old = file
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > keep_for));
            if old && fs::remove_file(file.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// What the product holds about the signed-in person: their account, memberships with roles,
/// and in each of their companies the messages they wrote and the orders they created. A
/// credential bound to one company (a personal token) sees that company only.
fn my_data(app: &App, _ctx: &RequestCtx, account: &Account) -> Result<Response, Error> {
    let user = &account.user;
    let mut memberships = app.catalog.memberships_of(user.id)?;
    if let Some(only) = &account.session.tenant_id {
        memberships.retain(|m| &m.tenant_id == only);
    }
    let mut companies = Vec::new();
    for m in &memberships {
        let Some(record) = app.catalog.by_id(&m.tenant_id)? else {
            continue;
        };
        // One company that cannot be read now (suspended, its file unavailable) is said so;
        // the others are still given.
        let rows = app
            .registry
            .open(record)
            .map_err(|e| e.to_string())
            .and_then(|tenant| archive::personal_rows(&tenant, user.id).map_err(|e| e.to_string()));
        companies.push(match rows {
            Ok((messages, orders)) => json!({
                "tenant_id": m.tenant_id,
                "slug": m.slug,
                "messages": messages,
                "orders": orders,
            }),
            Err(e) => {
                log::warn!("personal export of user {} in {}: {e}", user.id, m.slug);
                json!({ "tenant_id": m.tenant_id, "slug": m.slug, "unavailable": true })
            }
        });
    }
    let body = json!({
        "format": "tenantd-personal-export-1",
        "exported_at": crate::db::now_rfc3339(),
        "account": user,
        "memberships": memberships,
        "companies": companies,
    });
    let name = format!("my-data-{}.json", chrono::Utc::now().format("%Y%m%d"));
    Ok(Response::json(200, &body)
        .with_header("Content-Disposition", attachment(&name))
        .with_header("Cache-Control", "no-store"))
}

#[derive(Deserialize)]
struct DeleteMe {
    password: String,
}

/// Ends the account: see `Catalog::erase_user`. Refused while the person is a company's last
/// admin (409 `last_admin`, naming the companies).
fn delete_me(app: &App, ctx: &RequestCtx, account: &Account) -> Result<Response, Error> {
    // What a personal token or an impersonator may do, ending the account may not.
    if account.session.kind != SessionKind::Session || account.session.impersonated_by.is_some() {
        return Err(Error::SessionRequired("deleting your account"));
    }
    let DeleteMe { password } = json_body(ctx.req)?;
    if !app
        .verify_password(&password, Some(&account.user.password_hash))?
        .ok
    {
        return Err(Error::validation("password", "is wrong"));
    }
    let user = &account.user;
    let mut last_admin_of = Vec::new();
    for m in app.catalog.memberships_of(user.id)? {
        if m.role == ADMIN_ROLE
            && app
                .catalog
                .members(&m.tenant_id)?
                .iter()
                .filter(|other| other.role == ADMIN_ROLE)
                .count()
                <= 1
        {
            last_admin_of.push(m.slug);
        }
    }
    let last_admin = |slugs: &[String]| Error::Conflict {
        code: "last_admin",
        message: format!(
            "you are the last admin of {}: make someone else admin there (or have the company \
             deleted) first",
            slugs.join(", ")
        ),
    };
    if !last_admin_of.is_empty() {
        return Err(last_admin(&last_admin_of));
    }
    let tenants = match app.catalog.erase_user(user.id) {
        Ok(tenants) => tenants,
        // Someone else stepped down meanwhile.
        Err(crate::catalog::IdentityError::LastAdmin) => {
            return Err(last_admin(&["one of your companies".to_string()]))
        }
        Err(e) => return Err(e.into()),
    };
    // The email is personal data: the entries name the account by id alone.
    for tenant_id in tenants.iter().map(Some).chain([None]) {
        let mut entry = app.audit_entry(ctx, ActorType::User, "account.deleted");
        entry.actor_id = Some(user.id);
        entry.tenant_id = tenant_id.cloned();
        entry.target_type = Some("user".into());
        entry.target_id = Some(user.id.to_string());
        app.audit(entry);
    }
    let clear = format!(
        "{}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0",
        crate::auth::principal::COOKIE
    );
    Ok(Response::json(
        200,
        &json!({ "deleted": true, "memberships_ended": tenants.len() }),
    )
    .with_header("Set-Cookie", clear))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest archives by export id stay (id 10 is newer than 9, whatever the names' order);
    /// temporary files and anything else are left alone.
    #[test]
    fn only_the_newest_archives_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "8.zip",
            "9.zip",
            "10.zip",
            "11.zip",
            "12.zip.1.tmp",
            "notes.txt",
        ] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(keep_newest(dir.path(), 2), 2);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["10.zip", "11.zip", "12.zip.1.tmp", "notes.txt"]);
    }

    /// Kept archives go after the retention, temporary files of dead runs after the timeout,
    /// anything else stays; measured against the `now` given, not the clock.
    #[test]
    fn prune_removes_old_archives_and_left_over_temporary_files_only() {
        let data = tempfile::tempdir().unwrap();
        let dir = data
            .path()
            .join("exports")
            .join("4b0e7c2e-0000-4000-8000-000000000001");
        fs::create_dir_all(&dir).unwrap();
        for name in ["1.zip", "2.zip.1.tmp", "notes.txt"] {
            fs::write(dir.join(name), b"x").unwrap();
        }
        let now = SystemTime::now();
        assert_eq!(prune_exports(data.path(), now), 0);
        assert_eq!(prune_exports(data.path(), now + EXPORT_TIMEOUT * 2), 1);
        assert!(dir.join("1.zip").exists() && !dir.join("2.zip.1.tmp").exists());
        assert_eq!(prune_exports(data.path(), now + EXPORT_RETENTION * 2), 1);
        assert!(!dir.join("1.zip").exists() && dir.join("notes.txt").exists());
    }
}
