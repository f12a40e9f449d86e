//! `tenantd tenants down|up <slug>` and `tenantd down|up`: maintenance mode from the shell,
//! written to the catalog, so a running server holds or releases requests on its next one.

use crate::catalog::{
    ActorType, AuditEntry, Catalog, CatalogError, DownRequest, MAINTENANCE_SERVER,
};
use crate::db::Create;
use crate::tenancy::lifecycle;

use super::tenants::{audit_with, open_catalog, CommandError};
use super::{Args, CliError, Env};

pub const DOWN_HELP: &str = "\
tenantd down: put the whole server in maintenance mode (`tenantd up` ends it)

Usage: tenantd down [--retry-after S] [--allow-ip IP]... [--secret S] [--data DIR] [--json]
       tenantd up [--data DIR] [--json]

Options:
  --retry-after S  Seconds clients are told to wait (Retry-After) [none]
  --allow-ip IP    A client address that passes anyway (repeatable)
  --secret S       Visiting /S on a tenant's host sets a cookie that passes (16 to 128 of
                   letters, digits, '-', '_')
  --data DIR       Data directory [TENANTD_DATA, ./data]
  --json           Print JSON instead of text

Every tenant's requests answer 503 {\"error\":{\"code\":\"maintenance\"}} (a page in a
browser); their jobs wait and their channels take no new subscriptions. The central host
(admin API, portal) keeps working. Safe while a server runs: it sees the change on its
next request. For one tenant: `tenantd tenants down <slug>`.
";

/// The options of `down`, checked by the catalog (as for the admin API).
struct Options {
    retry_after: Option<i64>,
    allow_ips: Vec<String>,
    secret: Option<String>,
}

fn options(args: &mut Args) -> Result<Options, CliError> {
    let retry_after = args
        .value("--retry-after")?
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| CliError(format!("--retry-after: {s:?} is not a number of seconds")))
        })
        .transpose()?;
    Ok(Options {
        retry_after,
        allow_ips: args.values("--allow-ip")?,
        secret: args.value("--secret")?,
    })
}

fn set(
    catalog: &Catalog,
    scope: &str,
    down: Option<&Options>,
    json: bool,
    what: &str,
) -> Result<serde_json::Value, CommandError> {
    let Some(o) = down else {
        let was_down = catalog
            .maintenance_up(scope)
            .map_err(|e| CommandError::Operation(e.to_string()))?;
        if !json {
            println!(
                "{what} is up{}",
                if was_down { "" } else { " (it was not down)" }
            );
        }
        return Ok(serde_json::json!({ "up": true, "was_down": was_down }));
    };
    let request = DownRequest {
        retry_after: o.retry_after,
        allow_ips: &o.allow_ips,
        secret: o.secret.as_deref(),
    };
    let m = catalog
        .maintenance_down(scope, &request)
        .map_err(|e| match e {
            // Bad option values are the command line's mistake.
            CatalogError::Validation(v) => CommandError::Usage(CliError(format!(
                "--{}: {}",
                v.field.replace('_', "-"),
                v.message
            ))),
            e => CommandError::Operation(e.to_string()),
        })?;
    if !json {
        println!("{what} is down for maintenance");
    }
    Ok(serde_json::json!({ "maintenance": m, "secret": m.bypass.is_some() }))
}

/// `tenantd tenants down|up <slug>`.
pub(super) fn tenant(
    sub: &str,
    args: &mut Args,
    data: &std::path::Path,
    stores: &crate::catalog::TenantStores,
    json: bool,
) -> Result<(), CommandError> {
    let down = (sub == "down").then(|| options(args)).transpose()?;
    let slug = args
        .positional()
        .ok_or_else(|| CliError("missing the <slug> argument".into()))?;
    args.finish_ref()?;
    let catalog = super::tenants::open_catalog_in(data, stores)?;
    let record = lifecycle::show(&catalog, &slug)?;
    let shown = set(
        &catalog,
        &record.id,
        down.as_ref(),
        json,
        &format!("tenant {slug}"),
    )?;
    let action = if down.is_some() {
        "maintenance.down"
    } else {
        "maintenance.up"
    };
    let mut details = shown.clone();
    details["via"] = "cli".into();
    audit_with(&catalog, action, &record, details);
    if json {
        println!("{shown}");
    }
    Ok(())
}

/// `tenantd down` and `tenantd up`.
pub fn server(down: bool, args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let json = args.flag("--json");
    let options = down.then(|| options(args)).transpose()?;
    args.finish_ref()?;
    let catalog = open_catalog(&data, Create::Never)?;
    let shown = set(
        &catalog,
        MAINTENANCE_SERVER,
        options.as_ref(),
        json,
        "the server",
    )?;
    let action = if down {
        "maintenance.down"
    } else {
        "maintenance.up"
    };
    let mut entry = AuditEntry::new(ActorType::System, action);
    entry.details = shown.clone();
    entry.details["via"] = "cli".into();
    if let Err(e) = catalog.record_audit(&entry) {
        log::error!("audit entry {action} not recorded: {e}");
    }
    if json {
        println!("{shown}");
    }
    Ok(())
}
