//! A tenant's people and roles, and its audit log: `/api/members`, `/api/roles`, `/api/audit`.
//! Adding a person is an invitation (see `invitations`).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::catalog::{ActorType, AuditFilter, Role, RoleUpdate, DEFAULT_AUDIT_LIMIT, PERMISSIONS};
use crate::error::Error;
use crate::http::{Response, Router};

use super::webhooks_out::emit;
use super::{id_param, invitations, json_body, App, Member, RequestCtx, Route};

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("GET", "/api/members", Route::Tenant(list_members));
    r.add("POST", "/api/members", Route::Tenant(invitations::invite));
    r.add(
        "PATCH",
        "/api/members/{user_id}",
        Route::Tenant(change_member),
    );
    r.add(
        "DELETE",
        "/api/members/{user_id}",
        Route::Tenant(remove_member),
    );
    r.add("GET", "/api/roles", Route::Tenant(list_roles));
    r.add("POST", "/api/roles", Route::Tenant(create_role));
    r.add("PATCH", "/api/roles/{id}", Route::Tenant(update_role));
    r.add("DELETE", "/api/roles/{id}", Route::Tenant(delete_role));
    r.add("GET", "/api/audit", Route::Tenant(tenant_audit));
}

/// An audit entry by this member, on this tenant.
pub(super) fn member_entry(
    app: &App,
    ctx: &RequestCtx,
    member: &Member,
    action: &str,
) -> crate::catalog::AuditEntry {
    let mut entry = app.audit_entry(ctx, ActorType::User, action);
    entry.actor_id = Some(member.user.id);
    entry.actor_email = Some(member.user.email.clone());
    entry.tenant_id = Some(member.tenant.id().to_string());
    entry
}

/// A member hands out only what they hold: granting a role, changing or removing a member who
/// holds it, or writing it into a role, is refused for any permission the member lacks (or a
/// `members_manage` member could make themselves admin). Names that are no permission are left
/// for the catalog to refuse as invalid.
pub(super) fn within_reach<'a>(
    member: &Member,
    permissions: impl IntoIterator<Item = &'a String>,
) -> Result<(), Error> {
    match permissions
        .into_iter()
        .find(|p| PERMISSIONS.contains(&p.as_str()) && !member.can(p))
    {
        Some(missing) => Err(Error::Forbidden(missing.clone())),
        None => Ok(()),
    }
}

/// The permissions the user now holds on the member's tenant, if they are a member.
fn held_by(app: &App, member: &Member, user_id: i64) -> Result<Vec<String>, Error> {
    Ok(app
        .catalog
        .membership(user_id, member.tenant.id())?
        .map(|m| m.permissions.iter().cloned().collect())
        .unwrap_or_default())
}

fn list_members(app: &App, _ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("members_view")?;
    let members = app.catalog.members(member.tenant.id())?;
    // Invited people are not members until they accept; shown beside them, never the token.
    let invitations = invitations::open_invitations(app, member)?;
    Ok(Response::json(
        200,
        &json!({ "members": members, "invitations": invitations }),
    ))
}

fn change_member(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("members_manage")?;
    let user_id = id_param(ctx.params, "user_id")?;
    #[derive(Deserialize)]
    struct Change {
        role: String,
    }
    let Change { role } = json_body(ctx.req)?;
    within_reach(member, &held_by(app, member, user_id)?)?;
    if let Some(granted) = app.catalog.role(member.tenant.id(), &role)? {
        within_reach(member, &granted.permissions)?;
    }
    let membership = app
        .catalog
        .set_member_role(member.tenant.id(), user_id, &role)?;
    let mut entry = member_entry(app, ctx, member, "member.role_changed");
    entry.target_type = Some("user".into());
    entry.target_id = Some(user_id.to_string());
    entry.details = json!({ "role": membership.role });
    app.audit(entry);
    emit(
        app,
        &member.tenant,
        "member.updated",
        || json!({ "user_id": user_id, "role": membership.role }),
    );
    Ok(Response::json(
        200,
        &json!({ "user_id": user_id, "role": membership.role }),
    ))
}

fn remove_member(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("members_manage")?;
    let user_id = id_param(ctx.params, "user_id")?;
    within_reach(member, &held_by(app, member, user_id)?)?;
    app.catalog.remove_member(member.tenant.id(), user_id)?;
    let mut entry = member_entry(app, ctx, member, "member.removed");
    entry.target_type = Some("user".into());
    entry.target_id = Some(user_id.to_string());
    app.audit(entry);
    emit(
        app,
        &member.tenant,
        "member.removed",
        || json!({ "user_id": user_id }),
    );
    Ok(Response::json(200, &json!({ "removed": user_id })))
}

fn role_json(role: &Role) -> Value {
    json!({
        "id": role.id,
        "name": role.name,
        "builtin": role.builtin,
        "permissions": role.permissions,
        "member_count": role.member_count,
    })
}

/// The role with this id on the member's tenant: an id of another tenant's role names nothing.
fn role_by_id(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Role, Error> {
    let id = id_param(ctx.params, "id")?;
    app.catalog
        .roles(member.tenant.id())?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or(Error::NotFound)
}

fn list_roles(app: &App, _ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("roles_manage")?;
    let roles: Vec<Value> = app
        .catalog
        .roles(member.tenant.id())?
        .iter()
        .map(role_json)
        .collect();
    Ok(Response::json(200, &json!({ "roles": roles })))
}

fn create_role(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("roles_manage")?;
    #[derive(Deserialize)]
    struct NewRole {
        name: String,
        permissions: Option<Vec<String>>,
    }
    let NewRole { name, permissions } = json_body(ctx.req)?;
    let permissions = permissions.unwrap_or_default();
    within_reach(member, &permissions)?;
    let role = app
        .catalog
        .create_role(member.tenant.id(), &name, &permissions)?;
    let mut entry = member_entry(app, ctx, member, "role.created");
    entry.target_type = Some("role".into());
    entry.target_id = Some(role.id.to_string());
    entry.details = json!({ "name": role.name, "permissions": role.permissions });
    app.audit(entry);
    Ok(Response::json(201, &role_json(&role)))
}

fn update_role(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("roles_manage")?;
    let role = role_by_id(app, ctx, member)?;
    #[derive(Deserialize)]
    struct Update {
        name: Option<String>,
        permissions: Option<Vec<String>>,
    }
    let Update { name, permissions } = json_body(ctx.req)?;
    let update = RoleUpdate { name, permissions };
    within_reach(member, &role.permissions)?;
    within_reach(member, update.permissions.iter().flatten())?;
    let updated = app
        .catalog
        .update_role(member.tenant.id(), &role.name, &update)?;
    let mut entry = member_entry(app, ctx, member, "role.updated");
    entry.target_type = Some("role".into());
    entry.target_id = Some(role.id.to_string());
    entry.details = json!({ "name": updated.name, "permissions": updated.permissions });
    app.audit(entry);
    Ok(Response::json(200, &role_json(&updated)))
}

fn delete_role(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("roles_manage")?;
    let role = role_by_id(app, ctx, member)?;
    app.catalog.delete_role(member.tenant.id(), &role.name)?;
    let mut entry = member_entry(app, ctx, member, "role.deleted");
    entry.target_type = Some("role".into());
    entry.target_id = Some(role.id.to_string());
    entry.details = json!({ "name": role.name });
    app.audit(entry);
    Ok(Response::json(200, &json!({ "deleted": role.id })))
}

/// Reads the audit query parameters shared by the tenant and admin listings.
pub(super) fn audit_filter(ctx: &RequestCtx) -> Result<AuditFilter, Error> {
    let number = |name: &str| -> Result<Option<i64>, Error> {
        match ctx.req.query_param(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Error::validation(name, "must be a whole number")),
        }
    };
    let limit = match number("limit")? {
        None => DEFAULT_AUDIT_LIMIT,
        Some(n) if (1..=200).contains(&n) => n as usize,
        Some(_) => return Err(Error::validation("limit", "must be 1 to 200")),
    };
    Ok(AuditFilter {
        action: ctx.req.query_param("action"),
        since: number("since")?,
        before_id: number("before")?,
        limit,
        ..AuditFilter::default()
    })
}

/// One page of the audit log; `next` is the `before` of the following page, if there may be one.
pub(super) fn audit_page(app: &App, filter: &AuditFilter) -> Result<Response, Error> {
    let entries = app.catalog.audit_query(filter)?;
    let next = (entries.len() == filter.limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Response::json(
        200,
        &json!({ "entries": entries, "next": next }),
    ))
}

fn tenant_audit(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("audit_view")?;
    let mut filter = audit_filter(ctx)?;
    filter.tenant_id = Some(member.tenant.id().to_string());
    if let Some(actor) = ctx.req.query_param("actor") {
        filter.actor = Some(crate::catalog::AuditActor::Email(actor));
    }
    audit_page(app, &filter)
}
