//! Invitations: how a tenant brings a person in by email (`POST /api/members`,
//! `/api/invitations`), and how that person accepts (`/api/invitations/lookup`, `/accept`).
//!
//! Nobody in a tenant learns, sets or chooses a credential of an account: an invitation is a
//! one-time token, shown once to the inviter, that the invitee accepts by setting the password
//! of a new account, or with the existing account's own password or session. Inviting answers
//! alike whether the email has an account or not, so it tells an admin nothing about accounts.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::principal::{self, Principal};
use crate::auth::token;
use crate::catalog::{
    unix_now, Accepted, Acceptor, ActorType, Invitation, NewInvitation, NewUser, SessionKind,
    TenantStatus, INVITATION_TTL_SECS,
};
use crate::error::Error;
use crate::http::{Response, Router};

use super::account::{admit, check_new_password};
use super::members::{member_entry, within_reach};
use super::{check_csrf, id_param, json_body, App, Member, RequestCtx, Route};

/// Where the invitee sends the token (the inviter passes it on with this path).
pub const ACCEPT_PATH: &str = "/api/invitations/accept";

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("GET", "/api/invitations", Route::Tenant(list));
    r.add("POST", "/api/invitations", Route::Tenant(invite));
    r.add("DELETE", "/api/invitations/{id}", Route::Tenant(revoke));
    // Public: the token is the credential. POST, so that no token lands in an access log.
    r.add("POST", "/api/invitations/lookup", Route::Public(lookup));
    r.add("POST", ACCEPT_PATH, Route::Public(accept));
}

/// An invitation as the tenant sees it: never the token (only its digest is kept).
pub(super) fn invitation_json(invitation: &Invitation, now: i64) -> Value {
    json!({
        "id": invitation.id,
        "email": invitation.email,
        "role": invitation.role,
        "status": invitation.status(now),
        "invited_by": invitation.invited_by,
        "created_at": invitation.created_at,
        "expires_at": invitation.expires_at,
    })
}

/// The tenant's invitations not yet accepted or revoked (an expired one says so).
pub(super) fn open_invitations(app: &App, member: &Member) -> Result<Vec<Value>, Error> {
    let now = unix_now();
    Ok(app
        .catalog
        .open_invitations(member.tenant.id())?
        .iter()
        .map(|i| invitation_json(i, now))
        .collect())
}

fn list(app: &App, _ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("members_manage")?;
    let invitations = open_invitations(app, member)?;
    Ok(Response::json(200, &json!({ "invitations": invitations })))
}

/// `POST /api/members` and `POST /api/invitations` `{email, role}`: the same answer, in status
/// and shape, whether the email has an account or not; nothing is created but the invitation.
pub(super) fn invite(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("members_manage")?;
    super::plans::writable(app, member.tenant.id())?;
    #[derive(Deserialize)]
    struct Invite {
        email: String,
        role: String,
    }
    let Invite { email, role } = json_body(ctx.req)?;
    let Some(granted) = app.catalog.role(member.tenant.id(), &role)? else {
        return Err(Error::validation("role", "no such role"));
    };
    within_reach(member, &granted.permissions)?;
    let token = token::generate();
    let now = unix_now();
    let (invitation, replaced) = app.catalog.create_invitation(
        &NewInvitation {
            tenant_id: member.tenant.id(),
            email: &email,
            role: &role,
            token_hash: token::digest(&token).as_str(),
            invited_by: Some(member.user.id),
            ttl_secs: INVITATION_TTL_SECS,
        },
        now,
    )?;
    let mut entry = member_entry(app, ctx, member, "invitation.created");
    entry.target_type = Some("invitation".into());
    entry.target_id = Some(invitation.id.to_string());
    entry.details = json!({
        "email": invitation.email,
        "role": invitation.role,
        "replaced": replaced,
    });
    app.audit(entry);
    let mut answer = invitation_json(&invitation, now);
    // Shown once: only its digest is kept.
    answer["token"] = Value::String(token);
    answer["accept_path"] = Value::String(ACCEPT_PATH.into());
    Ok(Response::json(201, &json!({ "invitation": answer })))
}

fn revoke(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("members_manage")?;
    let id = id_param(ctx.params, "id")?;
    let now = unix_now();
    let invitation = app.catalog.revoke_invitation(member.tenant.id(), id, now)?;
    let mut entry = member_entry(app, ctx, member, "invitation.revoked");
    entry.target_type = Some("invitation".into());
    entry.target_id = Some(id.to_string());
    entry.details = json!({ "email": invitation.email });
    app.audit(entry);
    Ok(Response::json(
        200,
        &json!({ "invitation": invitation_json(&invitation, now) }),
    ))
}

/// The invitation a token names, if it can still be accepted; with its tenant's name.
fn usable(app: &App, token: &str, now: i64) -> Result<(Invitation, Value), Error> {
    let invalid = || Error::from(crate::catalog::IdentityError::InvitationNotFound);
    if !token::well_formed(token) {
        return Err(invalid());
    }
    let invitation = app
        .catalog
        .invitation_by_token_hash(token::digest(&token.to_ascii_lowercase()).as_str())?
        .ok_or_else(invalid)?;
    invitation.check_usable(now)?;
    let tenant = app
        .catalog
        .by_id(&invitation.tenant_id)?
        .filter(|t| t.status != TenantStatus::Deleted)
        .ok_or_else(invalid)?;
    let tenant = json!({ "id": tenant.id, "slug": tenant.slug, "name": tenant.name });
    Ok((invitation, tenant))
}

/// What the token holder may know before accepting: which tenant, which email, which role.
/// Not whether the email has an account: the inviter has held the token too.
fn lookup(app: &App, ctx: &RequestCtx) -> Result<Response, Error> {
    #[derive(Deserialize)]
    struct Lookup {
        token: String,
    }
    let Lookup { token } = json_body(ctx.req)?;
    let now = unix_now();
    let (invitation, tenant) = usable(app, &token, now)?;
    Ok(Response::json(
        200,
        &json!({ "invitation": invitation_json(&invitation, now), "tenant": tenant }),
    ))
}

/// `{token, password, name?, surname?}`: the password of the account with the invitation's
/// email if there is one, else the new account's; answers a session like a login.
/// `{token}` alone: the signed-in user's own session, whose email must be the invitation's.
fn accept(app: &App, ctx: &RequestCtx) -> Result<Response, Error> {
    #[derive(Deserialize)]
    struct Accept {
        token: String,
        password: Option<String>,
        name: Option<String>,
        surname: Option<String>,
    }
    let Accept {
        token,
        password,
        name,
        surname,
    } = json_body(ctx.req)?;
    let now = unix_now();
    let (invitation, tenant) = usable(app, &token, now)?;
    let digest = token::digest(&token.to_ascii_lowercase());
    let Some(password) = password else {
        let user_id = signed_in_user(app, ctx)?;
        let accepted =
            app.catalog
                .accept_invitation(digest.as_str(), &Acceptor::Existing(user_id), now)?;
        audit_accepted(app, ctx, &accepted);
        return Ok(Response::json(200, &accepted_json(&accepted, tenant, now)));
    };
    // The same rules for both branches, first: a password too weak for a new account must not
    // be answered 422 for a new email and 401 for an existing one, which would tell the token's
    // holder whether the email has an account.
    check_new_password("password", &password)?;
    // The password of an existing account is a login: the same throttle, the same budgets.
    let gate = admit(app, ctx, "account", &invitation.email)?;
    let acceptor = match app.catalog.user_by_email(&invitation.email)? {
        Some(user) => {
            let verified = app.verify_password(&password, Some(&user.password_hash))?;
            if !verified.ok || user.disabled {
                gate.failed(app);
                let mut entry = app.audit_entry(ctx, ActorType::Anonymous, "auth.login_failed");
                entry.actor_email = Some(user.email.clone());
                entry.actor_id = Some(user.id);
                entry.tenant_id = None;
                entry.details = json!({ "invitation": invitation.id });
                app.audit(entry);
                return Err(Error::InvalidCredentials);
            }
            if let Some(stronger) = verified.rehash {
                app.catalog.set_password_hash(user.id, &stronger)?;
            }
            Acceptor::Existing(user.id)
        }
        None => {
            let name = name.unwrap_or_else(|| {
                let local = invitation.email.split('@').next().unwrap_or_default();
                local.to_string()
            });
            Acceptor::New(NewUser {
                email: invitation.email.clone(),
                name,
                surname: surname.unwrap_or_default(),
                photo_url: None,
                password_hash: app.hash_password(&password)?,
            })
        }
    };
    let accepted = app
        .catalog
        .accept_invitation(digest.as_str(), &acceptor, now)?;
    audit_accepted(app, ctx, &accepted);
    let response = app.start_session(
        |browser| crate::catalog::NewSession::Session {
            user_id: accepted.user.id,
            browser,
        },
        accepted_json(&accepted, tenant, now),
    )?;
    Ok(gate.passed(app, response))
}

/// The user of the request's own session (not a personal token, not an impersonation: those
/// act for a user within limits, and joining a tenant is not among them).
fn signed_in_user(app: &App, ctx: &RequestCtx) -> Result<i64, Error> {
    let (token, via) =
        principal::credentials(ctx.req.header("authorization"), ctx.req.header("cookie"))
            .filter(|(t, _)| token::well_formed(t))
            .ok_or_else(|| Error::validation("password", "is required unless signed in"))?;
    let fresh = app.catalog.view()?;
    // The clock every other session check reads (tests move it).
    let now = app.sessions.clock.now();
    let principal = principal::authenticate(&fresh, &token::digest(token), via, now)?
        .ok_or(Error::Unauthorized)?;
    check_csrf(ctx.req, via, principal.session())?;
    match principal {
        Principal::User { user, session, .. }
            if session.kind == SessionKind::Session && session.impersonated_by.is_none() =>
        {
            Ok(user.id)
        }
        _ => Err(Error::Refused(
            "accepting an invitation needs the user's own session or password",
        )),
    }
}

fn accepted_json(accepted: &Accepted, tenant: Value, now: i64) -> Value {
    json!({
        "user": accepted.user,
        "tenant": tenant,
        "role": accepted.membership.role,
        "invitation": invitation_json(&accepted.invitation, now),
    })
}

fn audit_accepted(app: &App, ctx: &RequestCtx, accepted: &Accepted) {
    let user = &accepted.user;
    if accepted.new_user {
        // Not under the tenant: whether the email had an account is no tenant's business.
        let mut entry = app.audit_entry(ctx, ActorType::User, "user.created");
        entry.actor_id = Some(user.id);
        entry.actor_email = Some(user.email.clone());
        entry.tenant_id = None;
        entry.target_type = Some("user".into());
        entry.target_id = Some(user.id.to_string());
        entry.details = json!({ "via": "invitation" });
        app.audit(entry);
    }
    let mut entry = app.audit_entry(ctx, ActorType::User, "invitation.accepted");
    entry.actor_id = Some(user.id);
    entry.actor_email = Some(user.email.clone());
    entry.tenant_id = Some(accepted.invitation.tenant_id.clone());
    entry.target_type = Some("invitation".into());
    entry.target_id = Some(accepted.invitation.id.to_string());
    entry.details = json!({ "role": accepted.membership.role });
    app.audit(entry);
    // Every acceptance is audited here: the one place that tells the tenant's endpoints too.
    super::webhooks_out::emit_in(
        app,
        &accepted.invitation.tenant_id,
        "member.added",
        || json!({ "user_id": user.id, "email": user.email, "role": accepted.membership.role }),
    );
}
