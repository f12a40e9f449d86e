//! `tenantd users ...`, `tenantd members ...` and `tenantd admin ...`: people from the shell, for
//! the first setup and for recovery (a forgotten admin password).

use serde_json::json;

use crate::auth::{password, token};
use crate::catalog::{
    unix_now, ActorType, AuditEntry, Catalog, NewInvitation, NewUser, INVITATION_TTL_SECS,
};
use crate::db::Create;

use super::tenants::CommandError;
use super::{Args, CliError, Env};

pub const USERS_HELP: &str = "\
tenantd users: manage user accounts

Usage:
  tenantd users create --email E --name N [--surname S] [--password P]

A random password is made and printed when none is given.
Options: --data DIR [TENANTD_DATA, ./data], --json; --store sqld with --sqld-url and
--sqld-admin-url [--sqld-auth-token] for a catalog kept on sqld, as `serve` takes them
";

pub const MEMBERS_HELP: &str = "\
tenantd members: put users in tenants

Usage:
  tenantd members add --tenant SLUG --email E --role ROLE
  tenantd members invite --tenant SLUG --email E --role ROLE

ROLE is a role of that tenant: admin, manager, agent, viewer, or one of its own.
add puts an existing user in at once. invite makes an invitation for anyone, with or without
an account, and prints its token once: the invitee sends it to POST /api/invitations/accept
with a new password (or their own, or their session) within 7 days.
Options: --data DIR [TENANTD_DATA, ./data], --json; --store sqld with --sqld-url and
--sqld-admin-url [--sqld-auth-token] for a catalog kept on sqld, as `serve` takes them
";

pub const ADMIN_HELP: &str = "\
tenantd admin: manage system admins

Usage:
  tenantd admin create --email E [--password P]
  tenantd admin reset-password --email E

A random password is made and printed when none is given. reset-password also ends the
admin's sessions and turns two-factor authentication off (re-enrol after logging in).
Options: --data DIR [TENANTD_DATA, ./data], --json; --store sqld with --sqld-url and
--sqld-admin-url [--sqld-auth-token] for a catalog kept on sqld, as `serve` takes them
";

/// The catalog where `serve` with the same options keeps it (`--store sqld` and the sqld
/// options: on sqld).
fn open(args: &mut Args, env: &Env, create: Create) -> Result<Catalog, CommandError> {
    let data = super::data_dir(args, env)?;
    let stores = super::tenant_stores(args, env)?;
    if stores.new_tenants == crate::catalog::TenantStore::Sqld {
        return super::tenants::open_catalog_in(&data, &stores);
    }
    super::tenants::open_catalog(&data, create)
}

fn op<E: std::fmt::Display>(e: E) -> CommandError {
    CommandError::Operation(e.to_string())
}

fn need(args: &mut Args, flag: &str) -> Result<String, CliError> {
    args.value(flag)?
        .ok_or_else(|| CliError(format!("{flag} is required")))
}

/// The password given, or a random one to print.
fn password_or_random(given: Option<String>) -> Result<(String, bool), CommandError> {
    match given {
        Some(p) if p.chars().count() >= 8 => Ok((p, false)),
        Some(_) => Err(CommandError::Usage(CliError(
            "--password must be at least 8 characters".into(),
        ))),
        None => Ok((password::random(), true)),
    }
}

fn audit(catalog: &Catalog, action: &str, target: (&str, String), tenant: Option<String>) {
    let mut entry = AuditEntry::new(ActorType::System, action);
    entry.target_type = Some(target.0.into());
    entry.target_id = Some(target.1);
    entry.tenant_id = tenant;
    entry.details = json!({ "via": "cli" });
    if let Err(e) = catalog.record_audit(&entry) {
        log::error!("audit entry {action} not recorded: {e}");
    }
}

pub fn users(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let json = args.flag("--json");
    let sub = args
        .positional()
        .ok_or_else(|| CliError("missing a users command".into()))?;
    if sub != "create" {
        return Err(CliError(format!("unknown users command: {sub}")).into());
    }
    let email = need(args, "--email")?;
    let name = need(args, "--name")?;
    let surname = args.value("--surname")?.unwrap_or_default();
    let (password, generated) = password_or_random(args.value("--password")?)?;
    let catalog = open(args, env, Create::Never)?;
    args.finish_ref()?;
    let user = catalog
        .create_user(&NewUser {
            email,
            name,
            surname,
            photo_url: None,
            password_hash: password::hash(&password).map_err(op)?,
        })
        .map_err(op)?;
    audit(
        &catalog,
        "user.created",
        ("user", user.id.to_string()),
        None,
    );
    if json {
        let mut out = json!({ "user": user });
        if generated {
            out["password"] = json!(password);
        }
        println!("{out}");
    } else {
        println!("user {} created (id {})", user.email, user.id);
        if generated {
            println!("password (shown once): {password}");
        }
    }
    Ok(())
}

pub fn members(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let json = args.flag("--json");
    let sub = args
        .positional()
        .ok_or_else(|| CliError("missing a members command".into()))?;
    if sub != "add" && sub != "invite" {
        return Err(CliError(format!("unknown members command: {sub}")).into());
    }
    let slug = need(args, "--tenant")?;
    let email = need(args, "--email")?;
    let role = need(args, "--role")?;
    let catalog = open(args, env, Create::Never)?;
    args.finish_ref()?;
    let tenant = catalog
        .by_slug(&slug)
        .map_err(op)?
        .ok_or_else(|| CommandError::Operation(format!("no tenant {slug}")))?;
    if sub == "invite" {
        return invite(&catalog, &tenant.id, &slug, &email, &role, json);
    }
    let user = catalog.user_by_email(&email).map_err(op)?.ok_or_else(|| {
        CommandError::Operation(format!("no user {email} (tenantd users create)"))
    })?;
    let membership = catalog.add_member(&tenant.id, user.id, &role).map_err(op)?;
    audit(
        &catalog,
        "member.added",
        ("user", user.id.to_string()),
        Some(tenant.id.clone()),
    );
    if json {
        println!(
            "{}",
            json!({ "tenant": slug, "user_id": user.id, "role": membership.role })
        );
    } else {
        println!("{} is now {} of {slug}", user.email, membership.role);
    }
    Ok(())
}

/// `members invite`: an invitation like `POST /api/members` makes, its token printed once.
fn invite(
    catalog: &Catalog,
    tenant_id: &str,
    slug: &str,
    email: &str,
    role: &str,
    json: bool,
) -> Result<(), CommandError> {
    let token = token::generate();
    let (invitation, replaced) = catalog
        .create_invitation(
            &NewInvitation {
                tenant_id,
                email,
                role,
                token_hash: token::digest(&token).as_str(),
                invited_by: None,
                ttl_secs: INVITATION_TTL_SECS,
            },
            unix_now(),
        )
        .map_err(op)?;
    audit(
        catalog,
        "invitation.created",
        ("invitation", invitation.id.to_string()),
        Some(tenant_id.to_string()),
    );
    if json {
        println!(
            "{}",
            json!({
                "tenant": slug,
                "invitation": invitation,
                "replaced": replaced,
                "token": token,
            })
        );
    } else {
        println!(
            "{} is invited to {slug} as {} (invitation {}, until {})",
            invitation.email,
            invitation.role,
            invitation.id,
            crate::db::format_unix_ms(invitation.expires_at.saturating_mul(1000))
        );
        println!("token (shown once): {token}");
    }
    Ok(())
}

pub fn admin(args: &mut Args, env: &Env) -> Result<(), CommandError> {
    let json = args.flag("--json");
    let sub = args
        .positional()
        .ok_or_else(|| CliError("missing an admin command".into()))?;
    if !matches!(sub.as_str(), "create" | "reset-password") {
        return Err(CliError(format!("unknown admin command: {sub}")).into());
    }
    let email = need(args, "--email")?;
    let given = if sub == "create" {
        args.value("--password")?
    } else {
        None
    };
    let catalog = open(args, env, Create::Never)?;
    args.finish_ref()?;
    let (password, generated) = password_or_random(given)?;
    let hash = password::hash(&password).map_err(op)?;
    let admin = match sub.as_str() {
        "create" => catalog.create_admin(&email, &hash).map_err(op)?,
        "reset-password" => {
            let admin = catalog
                .admin_by_email(&email)
                .map_err(op)?
                .ok_or_else(|| CommandError::Operation(format!("no system admin {email}")))?;
            catalog
                .set_admin_password_hash(admin.id, &hash)
                .map_err(op)?;
            // Whoever lost the password may have lost the authenticator too.
            catalog.set_admin_totp(admin.id, None, false).map_err(op)?;
            catalog.revoke_admin_sessions(admin.id, None).map_err(op)?;
            admin
        }
        other => return Err(CliError(format!("unknown admin command: {other}")).into()),
    };
    let action = if sub == "create" {
        "admin.created"
    } else {
        "admin.password_reset"
    };
    audit(&catalog, action, ("admin", admin.id.to_string()), None);
    if json {
        let mut out = json!({ "admin": { "id": admin.id, "email": admin.email } });
        if generated {
            out["password"] = json!(password);
        }
        println!("{out}");
    } else {
        println!("system admin {} ({})", admin.email, sub);
        if generated {
            println!("password (shown once): {password}");
        }
    }
    Ok(())
}
