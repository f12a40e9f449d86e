//! `tenantd tenants ...` and `tenantd migrate`: the tenant lifecycle from the shell, on the same
//! functions as the admin API. Safe beside a running server on the same data directory: the
//! server notices catalog changes on its next request.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::catalog::{ActorType, AuditEntry, Catalog, TenantRecord, TenantStore};
use crate::db::Create;
use crate::tenancy::lifecycle::{self, LifecycleError, MigrateConfig, NewTenant, Rename};
use crate::tenancy::{moves, Registry, RegistryConfig};

use super::{Args, CliError, Env};

pub const TENANTS_HELP: &str = "\
tenantd tenants: manage tenants

Usage:
  tenantd tenants create <slug> --name <name> [--domain <domain>]...
  tenantd tenants list
  tenantd tenants show <slug>
  tenantd tenants suspend|activate|delete|restore|purge <slug>
  tenantd tenants rename <slug> [<new-slug>] [--name <name>]
  tenantd tenants move <slug> --to local|sqld
  tenantd tenants domains add|remove <slug> <domain>
  tenantd tenants gc [--older-than MINUTES]
  tenantd tenants import <slug> --from FILE [--name <name>]
  tenantd tenants exec --all|--tenant <slug>... \"SELECT ...\"
  tenantd tenants down <slug> [--retry-after S] [--allow-ip IP]... [--secret S]
  tenantd tenants up <slug>
  tenantd tenants plan <slug> <plan> [--status trialing|active|past_due|canceled]

Options:
  --data DIR             Data directory [TENANTD_DATA, ./data]
  --json                 Print JSON instead of text
  --name NAME            create: the display name; rename: a new one; import: instead
                         of the one in the file
  --from FILE            import: a tenant database file, a backup, or an export .zip
  --retry-after S        down: seconds clients are told to wait (Retry-After)
  --allow-ip IP          down: a client address that passes anyway (repeatable)
  --secret S             down: visiting /S on the tenant's host sets a cookie that passes
  --older-than MINUTES   gc: remove only files unchanged this long [10]
  --to local|sqld        move: where the tenant's database goes
  --store local|sqld     as `serve` takes it: sqld keeps the catalog (the namespace central)
                         and new tenants on sqld [TENANTD_STORE, local]
  --sqld-url URL         the libSQL server of tenants kept on sqld, as `serve` takes it
  --sqld-admin-url URL   its admin API (namespaces are made and deleted there)
  --sqld-auth-token T    its bearer token [TENANTD_SQLD_URL, _ADMIN_URL, _AUTH_TOKEN]
  -h, --help             Show this help

delete is soft (status deleted, file kept); restore undoes it; purge removes a deleted
tenant's file (with its -wal and -shm) and then its catalog row.
rename changes the slug (the workspace's address), the display name, or both.
move copies an active tenant's database to the other store while it keeps serving, pauses
its writes briefly to copy the last changes, and flips the catalog: a file becomes a
namespace (the old file is kept as <uuid>.db.moved-<unix>), a namespace a file (the old
namespace is deleted). Needs the --sqld-* options either way.
gc removes tenant files that no catalog row names (left by a create that was killed
before it inserted the row), with their -wal and -shm; `serve` does the same at start.
Files changed in the last 10 minutes are left alone: they may be a create in progress.
import makes a new tenant <slug> (a new id, no domains, no members) from FILE, a SQLite
file with this server's tenant schema (another install's tenant file, a backup), or an
archive of `tenantd export` (FILE.zip: its tables/*.jsonl rebuilt on this binary's own
migrations). Checked as a restore checks it: integrity_check and a schema version not
newer than this binary's. Nothing is left behind when it is refused.
exec runs one read-only query over each tenant's database (--all: every active and
suspended tenant), four at a time, and prints one JSON line per tenant, in order:
{\"tenant\":..., \"tenant_id\":..., \"rows\":[{column: value, ...}]} or {..., \"error\":...}.
Anything but one statement that reads (a write, a PRAGMA that sets, ATTACH, several
statements) is refused before any tenant is touched; the exit status is 1 if any tenant
failed. Safe while a server runs: the files are opened read-only.
down puts one tenant in maintenance mode: its requests answer 503 (code maintenance) with
Retry-After, its jobs wait, its channels take no new subscriptions; up ends it. The whole
server: `tenantd down`.
";

pub const MIGRATE_HELP: &str = "\
tenantd migrate: bring the catalog and every tenant database to this binary's schema

Usage: tenantd migrate [--tenant SLUG] [--workers N] [--status] [--data DIR] [--json]

Options:
  --tenant SLUG  Migrate only this tenant
  --workers N    Tenants migrated in parallel [4]
  --status       Show each database's version next to the binary's; migrate nothing
  --data DIR     Data directory [TENANTD_DATA, ./data]
  --json         Print JSON instead of text

Failures are reported one line per tenant and do not stop the others; the exit status
is 1 if any tenant failed. Safe while a server runs on the same data directory.
";

/// What a command failed on: an error of the operation (exit 1) or of the command line (exit 2).
pub enum CommandError {
    Usage(CliError),
    Operation(String),
}

impl From<CliError> for CommandError {
    fn from(e: CliError) -> Self {
        CommandError::Usage(e)
    }
}

impl From<LifecycleError> for CommandError {
    fn from(e: LifecycleError) -> Self {
        CommandError::Operation(e.to_string())
    }
}

/// Opens the catalog for a command. Only `tenantd serve` starts a new data directory: a
/// command run on a directory without a catalog has most likely been given the wrong one
/// (a mistyped `--data`, another working directory), and an empty installation made there
/// would only hide that.
pub(super) fn open_catalog(data: &Path, create: Create) -> Result<Catalog, CommandError> {
    if create == Create::Never && !data.join("central.db").exists() {
        let shown = std::path::absolute(data).unwrap_or_else(|_| data.to_path_buf());
        return Err(CommandError::Operation(format!(
            "no tenantd catalog in {dir} (looked for {dir}/central.db). `tenantd serve --data {given}` \
             makes one on its first start; if your data is elsewhere, pass --data DIR or set \
             TENANTD_DATA",
            dir = shown.display(),
            given = data.display(),
        )));
    }
    Catalog::open(data, create).map_err(|e| {
        CommandError::Operation(format!(
            "cannot open the catalog in {}: {e}",
            data.display()
        ))
    })
}

/// [`open_catalog`] where `serve` with the same options keeps it: on sqld with `--store sqld`
/// (the namespace `central`, shared with the servers), else the data directory's file; and
/// with the sqld server known, for the tenants kept there.
pub(super) fn open_catalog_in(
    data: &Path,
    stores: &crate::catalog::TenantStores,
) -> Result<Catalog, CommandError> {
    let catalog = match (&stores.sqld, stores.new_tenants) {
        (Some(sqld), crate::catalog::TenantStore::Sqld) => {
            Catalog::open_sqld(data, Arc::clone(sqld)).map_err(|e| {
                CommandError::Operation(format!("cannot open the catalog on sqld: {e}"))
            })?
        }
        _ => open_catalog(data, Create::Never)?,
    };
    catalog.set_stores(stores.clone());
    Ok(catalog)
}

fn required(args: &mut Args, what: &str) -> Result<String, CliError> {
    args.positional()
        .ok_or_else(|| CliError(format!("missing the <{what}> argument")))
}

pub fn tenants(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let stores = super::tenant_stores(args, env)?;
    let json = args.flag("--json");
    let sub = args
        .positional()
        .ok_or_else(|| CliError("missing a tenants command".into()))?;
    let catalog = || open_catalog_in(&data, &stores);
    match sub.as_str() {
        "create" => {
            // Options first, so that `--name shop acme` cannot take `shop` for the slug.
            let name = args.value("--name")?;
            let domains = args.values("--domain")?;
            let slug = required(args, "slug")?;
            let name = name.ok_or_else(|| CliError("--name is required".into()))?;
            args.finish_ref()?;
            let catalog = catalog()?;
            let record = lifecycle::create(
                &catalog,
                &NewTenant {
                    slug,
                    name,
                    domains,
                },
            )?;
            audit(&catalog, "tenant.created", &record);
            print_record(&record, json);
        }
        "list" => {
            args.finish_ref()?;
            let tenants = lifecycle::list(&catalog()?)?;
            if json {
                println!("{}", serde_json::json!({ "tenants": tenants }));
            } else if tenants.is_empty() {
                println!("no tenants");
            } else {
                for t in &tenants {
                    println!("{}", line(t));
                }
            }
        }
        "show" | "suspend" | "activate" | "delete" | "restore" => {
            let slug = required(args, "slug")?;
            args.finish_ref()?;
            let catalog = catalog()?;
            let (record, action) = match sub.as_str() {
                "show" => (lifecycle::show(&catalog, &slug)?, None),
                "suspend" => (
                    lifecycle::suspend(&catalog, &slug)?,
                    Some("tenant.suspended"),
                ),
                "activate" => (
                    lifecycle::activate(&catalog, &slug)?,
                    Some("tenant.activated"),
                ),
                "delete" => (lifecycle::delete(&catalog, &slug)?, Some("tenant.deleted")),
                _ => (
                    lifecycle::restore(&catalog, &slug)?,
                    Some("tenant.restored"),
                ),
            };
            if let Some(action) = action {
                audit(&catalog, action, &record);
            }
            print_record(&record, json);
        }
        "purge" => {
            let slug = required(args, "slug")?;
            args.finish_ref()?;
            let catalog = catalog()?;
            // This process has no pools open; a server holding one keeps its descriptor to the
            // removed file until it closes the pool, and answers the tenant 404 meanwhile.
            let registry = Registry::new(&data, RegistryConfig::default());
            let record = lifecycle::show(&catalog, &slug)?;
            lifecycle::purge(&catalog, &registry, &slug)?;
            audit(&catalog, "tenant.purged", &record);
            if json {
                println!("{}", serde_json::json!({ "purged": slug }));
            } else {
                println!("purged {slug}");
            }
        }
        "move" => {
            // Options first, as for create.
            let to = args.value("--to")?;
            let slug = required(args, "slug")?;
            args.finish_ref()?;
            let to = to.ok_or_else(|| CliError("--to local|sqld is required".into()))?;
            let to = TenantStore::parse(&to)
                .ok_or_else(|| CliError(format!("--to {to}: give local or sqld")))?;
            let catalog = catalog()?;
            // This process's own registry: a server on the same data directory sees the flip in
            // the catalog and reopens the tenant where it now is; its writes to the old copy
            // fail meanwhile, and are retried by their clients.
            let registry = Registry::new(
                &data,
                RegistryConfig {
                    sqld: stores.sqld.clone(),
                    ..RegistryConfig::default()
                },
            );
            let moved = moves::move_tenant(&catalog, &registry, &slug, to)?;
            let details = serde_json::json!({ "via": "cli", "from": moved.from, "to": moved.to });
            audit_with(&catalog, "tenant.moved", &moved.tenant, details);
            if json {
                println!("{}", serde_json::json!(moved));
            } else {
                println!(
                    "moved {slug} from {} to {}: {} rows copied, {} caught up, writes paused {} ms{}",
                    moved.from,
                    moved.to,
                    moved.rows_copied,
                    moved.rows_caught_up,
                    moved.pause_ms,
                    moved
                        .old_copy
                        .as_deref()
                        .map(|c| format!("; the old copy is kept as {c}"))
                        .unwrap_or_default()
                );
            }
        }
        "rename" => {
            // Options first, as for create.
            let name = args.value("--name")?;
            let slug = required(args, "slug")?;
            let change = Rename {
                slug: args.positional(),
                name,
            };
            if change.slug.is_none() && change.name.is_none() {
                return Err(CliError("give a <new-slug>, --name <name>, or both".into()).into());
            }
            args.finish_ref()?;
            let catalog = catalog()?;
            let renamed = lifecycle::rename(&catalog, None, &slug, &change)?;
            let changes = renamed.changes();
            if !changes.is_empty() {
                let mut details = serde_json::Value::Object(changes);
                details["via"] = "cli".into();
                audit_with(&catalog, "tenant.renamed", &renamed.after, details);
            }
            print_record(&renamed.after, json);
        }
        "domains" => {
            let action = required(args, "add|remove")?;
            let slug = required(args, "slug")?;
            let domain = required(args, "domain")?;
            args.finish_ref()?;
            let catalog = catalog()?;
            let record = match action.as_str() {
                "add" => lifecycle::add_domain(&catalog, &slug, &domain)?,
                "remove" => lifecycle::remove_domain(&catalog, &slug, &domain)?,
                other => return Err(CliError(format!("unknown domains command: {other}")).into()),
            };
            audit(&catalog, &format!("tenant.domain_{action}"), &record);
            print_record(&record, json);
        }
        "gc" => {
            let min_age = match args.value("--older-than")? {
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|m| *m <= 366 * 24 * 60)
                    .map(|m| Duration::from_secs(m * 60))
                    .ok_or_else(|| {
                        CliError(format!("--older-than: expected whole minutes, got {v:?}"))
                    })?,
                None => lifecycle::ORPHAN_MIN_AGE,
            };
            args.finish_ref()?;
            let catalog = catalog()?;
            let now = SystemTime::now();
            let removed = lifecycle::remove_orphans(&catalog, min_age, now)?;
            let left = lifecycle::orphans(&catalog, min_age, now)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "removed": removed, "left": left })
                );
            } else {
                for orphan in &removed {
                    println!("removed {} (no catalog row)", orphan.file);
                }
                for orphan in &left {
                    println!("{}", orphan_line(orphan));
                }
                if removed.is_empty() && left.is_empty() {
                    println!("no orphan tenant files");
                }
            }
        }
        "exec" => return exec(args, &data),
        "down" | "up" => return super::maintenance::tenant(&sub, args, &data, &stores, json),
        "plan" => return super::plans::tenant_plan(args, &data, &stores, json),
        "import" => {
            // Options first, as for create.
            let from = args
                .value("--from")?
                .ok_or_else(|| CliError("--from FILE is required".into()))?;
            let name = args.value("--name")?;
            let slug = required(args, "slug")?;
            args.finish_ref()?;
            let catalog = catalog()?;
            let from = std::path::PathBuf::from(from);
            let record = super::import::import(&catalog, &slug, &from, name.as_deref())?;
            audit_with(
                &catalog,
                "tenant.imported",
                &record,
                serde_json::json!({"via": "cli", "slug": record.slug, "from": from.display().to_string()}),
            );
            print_record(&record, json);
        }
        other => return Err(CliError(format!("unknown tenants command: {other}")).into()),
    }
    Ok(())
}

/// `tenants exec --all|--tenant SLUG... "SELECT ..."`.
fn exec(args: &mut Args, data: &Path) -> Result<(), CommandError> {
    let all = args.flag("--all");
    let slugs = args.values("--tenant")?;
    let sql = required(args, "query")?;
    args.finish_ref()?;
    if all != slugs.is_empty() {
        return Err(CliError("give either --all or --tenant SLUG (repeatable)".into()).into());
    }
    super::exec::check_query(&sql)
        .map_err(|e| CommandError::Operation(format!("query refused: {e}")))?;
    let catalog = open_catalog(data, Create::Never)?;
    let tenants = if all {
        lifecycle::list(&catalog)?
            .into_iter()
            .filter(|r| super::exec::queried_by_all(r))
            .collect()
    } else {
        slugs
            .iter()
            .map(|slug| lifecycle::show(&catalog, slug))
            .collect::<Result<Vec<_>, _>>()?
    };
    let count = tenants.len();
    let failed = super::exec::run(data, tenants, &sql);
    if failed > 0 {
        return Err(CommandError::Operation(format!(
            "the query failed on {failed} of {count} tenants"
        )));
    }
    Ok(())
}

/// Every lifecycle change is audited, from the shell too (the actor is `system`).
pub(super) fn audit(catalog: &Catalog, action: &str, record: &TenantRecord) {
    let details = serde_json::json!({ "via": "cli", "slug": record.slug });
    audit_with(catalog, action, record, details);
}

pub(super) fn audit_with(
    catalog: &Catalog,
    action: &str,
    record: &TenantRecord,
    details: serde_json::Value,
) {
    let mut entry = AuditEntry::new(ActorType::System, action);
    entry.tenant_id = Some(record.id.clone());
    entry.target_type = Some("tenant".into());
    entry.target_id = Some(record.id.clone());
    entry.details = details;
    if let Err(e) = catalog.record_audit(&entry) {
        log::error!("audit entry {action} not recorded: {e}");
    }
}

fn orphan_line(orphan: &lifecycle::Orphan) -> String {
    let minutes = orphan.age_secs / 60;
    let note = if orphan.removable {
        "`tenantd tenants gc` removes it"
    } else {
        "left alone: it may be a create still in progress"
    };
    format!(
        "orphan file (no catalog row): {}, unchanged for {minutes} min; {note}",
        orphan.file
    )
}

fn line(t: &TenantRecord) -> String {
    let domains: Vec<&str> = t.domains.iter().map(|d| d.domain.as_str()).collect();
    format!(
        "{:<24} {:<10} {}  {}{}",
        t.slug,
        t.status.as_str(),
        t.id,
        t.name,
        if domains.is_empty() {
            String::new()
        } else {
            format!("  [{}]", domains.join(", "))
        }
    )
}

fn print_record(record: &Arc<TenantRecord>, json: bool) {
    if json {
        println!("{}", serde_json::to_string(record).unwrap_or_default());
    } else {
        println!("{}", line(record));
    }
}

pub fn migrate(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let stores = super::tenant_stores(args, env)?;
    let json = args.flag("--json");
    let status_only = args.flag("--status");
    let only = args.value("--tenant")?;
    let workers = match args.value("--workers")? {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=256).contains(n))
            .ok_or_else(|| CliError(format!("--workers: expected 1 to 256, got {v:?}")))?,
        None => MigrateConfig::default().workers,
    };
    args.finish_ref()?;
    // Opening the catalog migrates it.
    let catalog = open_catalog_in(&data, &stores)?;
    if status_only {
        let status = lifecycle::status(&catalog)?;
        if json {
            println!("{}", serde_json::to_string(&status).unwrap_or_default());
            return Ok(());
        }
        println!(
            "catalog: version {} (binary {})",
            status.central, status.central_target
        );
        for t in &status.tenants {
            let version = t.version.map_or_else(|| "?".to_string(), |v| v.to_string());
            let note = t
                .error
                .as_deref()
                .map(|e| format!("  {e}"))
                .unwrap_or_default();
            println!(
                "{:<24} {:<10} version {} (binary {}){}",
                t.slug,
                t.status.as_str(),
                version,
                status.tenant_target,
                note
            );
        }
        for orphan in &status.orphans {
            println!("{}", orphan_line(orphan));
        }
        return Ok(());
    }
    if let Some(slug) = &only {
        lifecycle::show(&catalog, slug)?;
    }
    let config = MigrateConfig {
        workers,
        only,
        ..MigrateConfig::default()
    };
    let summary = lifecycle::migrate_all(&catalog, &config)?;
    if json {
        println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    } else {
        for failed in summary.failed() {
            println!(
                "FAILED {} ({}): {}",
                failed.slug,
                failed.id,
                failed.error.as_deref().unwrap_or_default()
            );
        }
        println!(
            "{} tenants at target version {}: {} migrated, {} already current, {} failed",
            summary.results.len(),
            summary.target,
            summary.migrated_count(),
            summary.results.len() - summary.migrated_count() - summary.failed_count(),
            summary.failed_count()
        );
    }
    if summary.failed_count() > 0 {
        return Err(CommandError::Operation(format!(
            "{} tenants failed to migrate",
            summary.failed_count()
        )));
    }
    Ok(())
}
