//! `tenantd plans list|edit` and `tenantd tenants plan <slug> <plan>`: plans and a tenant's
//! subscription from the shell, on the catalog functions the admin API uses (audited); and
//! `tenantd billing secret`, the secret of the billing webhook that changes subscriptions.

use std::path::Path;

use crate::catalog::{
    unix_now, ActorType, AuditEntry, CatalogError, PlanEdit, SubscriptionChange, SubscriptionStatus,
};
use crate::db::Create;
use crate::tenancy::lifecycle;

use super::tenants::{open_catalog, CommandError};
use super::{Args, CliError, Env};

pub const PLANS_HELP: &str = "\
tenantd plans: list and edit the plans tenants subscribe to

Usage: tenantd plans list [--data DIR] [--json]
       tenantd plans edit <plan> [--limit NAME=VALUE]... [--feature NAME=on|off]... [--data DIR] [--json]
       tenantd tenants plan <slug> <plan> [--status trialing|active|past_due|canceled]

Options:
  --limit NAME=VALUE   Set a limit (members, orders, chats, messages_per_day,
                       webhook_endpoints, api_requests_per_minute,
                       api_requests_per_member_per_minute); NAME=none removes it
                       (unlimited; for the two rates, serve's --tenant-rate and
                       --member-rate apply)
  --feature NAME=on|off  Switch a feature (webhooks, exports)
  --data DIR           Data directory [TENANTD_DATA, ./data]
  --json               Print JSON instead of text

Built-in plans: free, team, unlimited. A limit not named is unlimited; a feature not named
is on. Writes past a limit answer 403 quota_exceeded; a feature switched off answers 403
feature_not_in_plan; requests past a rate answer 429 rate_limited. Safe while a server runs:
it reads plans on each write, and a changed plan's rates count on a tenant's next request.
";

fn operation(e: CatalogError) -> CommandError {
    match e {
        CatalogError::Validation(v) => {
            CommandError::Usage(CliError(format!("--{}: {}", v.field, v.message)))
        }
        e => CommandError::Operation(e.to_string()),
    }
}

fn pair(option: &str, text: &str) -> Result<(String, String), CliError> {
    text.split_once('=')
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| CliError(format!("{option}: {text:?} is not NAME=VALUE")))
}

fn entry() -> AuditEntry {
    let mut entry = AuditEntry::new(ActorType::System, "plan.edited");
    entry.details = serde_json::json!({"via": "cli"});
    entry
}

pub fn plans(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let json = args.flag("--json");
    let sub = args
        .positional()
        .ok_or_else(|| CliError("missing a plans command (list, edit)".into()))?;
    match sub.as_str() {
        "list" => {
            args.finish_ref()?;
            let plans = open_catalog(&data, Create::Never)?
                .plans()
                .map_err(operation)?;
            if json {
                println!("{}", serde_json::json!({ "plans": plans }));
            }
            for p in plans.iter().filter(|_| !json) {
                let show = |m: &dyn Fn() -> Vec<String>| {
                    let v = m();
                    if v.is_empty() {
                        "-".to_string()
                    } else {
                        v.join(" ")
                    }
                };
                let limits = show(&|| p.limits.iter().map(|(k, v)| format!("{k}={v}")).collect());
                let features = show(&|| {
                    p.features
                        .iter()
                        .map(|(k, on)| format!("{k}={}", if *on { "on" } else { "off" }))
                        .collect()
                });
                println!(
                    "{}\t{}\t{} {}\tlimits: {limits}\tfeatures: {features}{}",
                    p.slug,
                    p.name,
                    p.price_minor,
                    p.currency,
                    if p.active { "" } else { "\t(inactive)" }
                );
            }
            Ok(())
        }
        "edit" => {
            let mut edit = PlanEdit::default();
            for text in args.values("--limit")? {
                let (name, value) = pair("--limit", &text)?;
                let value = match value.as_str() {
                    "none" | "unlimited" => None,
                    v => Some(v.parse::<i64>().map_err(|_| {
                        CliError(format!("--limit: {v:?} is not a number (or none)"))
                    })?),
                };
                edit.limits.push((name, value));
            }
            for text in args.values("--feature")? {
                let (name, value) = pair("--feature", &text)?;
                let on = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    v => return Err(CliError(format!("--feature: {v:?} is not on or off")).into()),
                };
                edit.features.push((name, on));
            }
            let plan = args
                .positional()
                .ok_or_else(|| CliError("missing the <plan> argument".into()))?;
            args.finish_ref()?;
            let plan = open_catalog(&data, Create::Never)?
                .edit_plan(&plan, &edit, entry())
                .map_err(operation)?;
            if json {
                println!("{}", serde_json::json!(plan));
            } else {
                println!("plan {} changed", plan.slug);
            }
            Ok(())
        }
        other => Err(CliError(format!("unknown plans command: {other}")).into()),
    }
}

/// `tenantd tenants plan <slug> <plan> [--status S]`.
pub(super) fn tenant_plan(
    args: &mut Args,
    data: &Path,
    stores: &crate::catalog::TenantStores,
    json: bool,
) -> Result<(), CommandError> {
    let status = args
        .value("--status")?
        .map(|s| {
            SubscriptionStatus::parse(&s).ok_or_else(|| {
                CliError(format!(
                    "--status: {s:?} is not trialing, active, past_due or canceled"
                ))
            })
        })
        .transpose()?;
    let slug = args
        .positional()
        .ok_or_else(|| CliError("missing the <slug> argument".into()))?;
    let plan = args
        .positional()
        .ok_or_else(|| CliError("missing the <plan> argument".into()))?;
    args.finish_ref()?;
    let catalog = super::tenants::open_catalog_in(data, stores)?;
    let record = lifecycle::show(&catalog, &slug)?;
    let change = SubscriptionChange {
        plan: Some(plan),
        status,
        ..SubscriptionChange::default()
    };
    let s = catalog
        .change_subscription(&record.id, &change, unix_now(), entry())
        .map_err(operation)?;
    if json {
        println!("{}", serde_json::json!(s));
    } else {
        println!(
            "tenant {slug} is on plan {} ({})",
            s.plan,
            s.status.as_str()
        );
    }
    Ok(())
}

pub const BILLING_HELP: &str = "\
tenantd billing: the secret of the billing inbound webhook (a payment provider's)

Usage: tenantd billing secret [--rotate] [--data DIR] [--json]

Options:
  --rotate     Replace the secret (the old one stops working at once)
  --data DIR   Data directory [TENANTD_DATA, ./data]
  --json       Print JSON instead of text

Makes the server's secret for POST /api/webhooks/billing, which sets any tenant's plan and
subscription status, and prints it: this once only. With a secret already made it prints
when, not the secret, unless --rotate. Tenants' admins can neither see nor make it. Safe
while a server runs: each delivery reads it from the catalog.
";

/// `tenantd billing secret [--rotate]`.
pub fn billing(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let data = super::data_dir(args, env)?;
    let json = args.flag("--json");
    let rotate = args.flag("--rotate");
    match args.positional().as_deref() {
        Some("secret") => {}
        Some(other) => return Err(CliError(format!("unknown billing command: {other}")).into()),
        None => return Err(CliError("missing a billing command (secret)".into()).into()),
    }
    args.finish_ref()?;
    let catalog = open_catalog(&data, Create::Never)?;
    let existing = catalog.billing_secret_info().map_err(operation)?;
    if let (Some(info), false) = (&existing, rotate) {
        if json {
            println!(
                "{}",
                serde_json::json!({"secret_set": true, "created_at": info.created_at,
                    "rotated_at": info.rotated_at})
            );
        } else {
            println!(
                "the billing secret is set (made at {}{}); --rotate replaces it",
                info.created_at,
                info.rotated_at
                    .map(|r| format!(", replaced at {r}"))
                    .unwrap_or_default()
            );
        }
        return Ok(());
    }
    let secret = crate::api::webhook_verify::Secret::generate().to_text();
    let info = catalog
        .set_billing_secret(&secret, unix_now())
        .map_err(operation)?;
    let action = if info.rotated_at.is_none() {
        "billing.secret_created"
    } else {
        "billing.secret_rotated"
    };
    let mut entry = AuditEntry::new(ActorType::System, action);
    entry.target_type = Some("webhook_source".into());
    entry.target_id = Some("billing".into());
    entry.details = serde_json::json!({"via": "cli"});
    if let Err(e) = catalog.record_audit(&entry) {
        log::error!("audit entry {action} not recorded: {e}");
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"secret": secret, "secret_set": true,
                "created_at": info.created_at, "rotated_at": info.rotated_at,
                "path": "/api/webhooks/billing"})
        );
    } else {
        println!("{secret}");
    }
    Ok(())
}
