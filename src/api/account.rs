//! A user's own account: login and logout, `/api/me`, password changes, personal API tokens, and
//! exchanging an impersonation ticket.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::principal::{self, Principal, Via};
use crate::auth::throttle::Attempt;
use crate::auth::token;
use crate::catalog::{
    normalize_email, unix_now, ActorType, MembershipPage, NewSession, PersonalToken, ProfileUpdate,
};
use crate::error::Error;
use crate::http::{Response, Router};
use crate::workspace::orders::present;

use super::{id_param, json_body, tenant_by_key, Account, App, RequestCtx, Route};

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("POST", "/api/auth/login", Route::Public(login));
    r.add("POST", "/api/auth/logout", Route::Signed(logout));
    r.add(
        "POST",
        "/api/auth/impersonate",
        Route::Public(exchange_ticket),
    );
    r.add("GET", "/api/me", Route::Account(me));
    r.add("PATCH", "/api/me", Route::Account(update_me));
    r.add("POST", "/api/me/password", Route::Account(change_password));
    r.add("GET", "/api/tokens", Route::Account(list_tokens));
    r.add("POST", "/api/tokens", Route::Account(create_token));
    r.add("DELETE", "/api/tokens/{id}", Route::Account(revoke_token));
}

/// How long a device cookie is kept: a device stays known for a year after its last login.
const DEVICE_COOKIE_SECS: u64 = 365 * 24 * 3600;

/// A login attempt the throttle let through, as it counts: against the client's known device,
/// or against the budgets the account's unknown clients share (see `auth::throttle`).
pub(super) struct Gate {
    realm: &'static str,
    account: String,
    attempt: Attempt,
}

/// The device cookie of each realm (`account` for users, `admin`): a browser keeps one of each.
fn device_cookie(realm: &str) -> &'static str {
    match realm {
        "admin" => "tenantd_admin_device",
        _ => "tenantd_device",
    }
}

/// Lets a login attempt on `email` in `realm` go on, or refuses it with `429`. The account is
/// the email as the lookup normalises it, so that no other spelling of the same account (case,
/// surrounding spaces) starts a fresh streak; a device cookie counts only if it was issued for
/// this account in this realm.
pub(super) fn admit(
    app: &App,
    ctx: &RequestCtx,
    realm: &'static str,
    email: &str,
) -> Result<Gate, Error> {
    let account = normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
    let device = principal::cookie_value(ctx.req.header("cookie"), device_cookie(realm))
        .and_then(|cookie| app.device_key.verify(realm, &account, cookie));
    let now = app.throttle.now();
    match app
        .throttle
        .admit(realm, &account, ctx.req.client_ip, device, now)
    {
        Ok(attempt) => Ok(Gate {
            realm,
            account,
            attempt,
        }),
        Err(wait) => Err({
            app.metrics().login_throttled(realm);
            Error::TooManyRequests {
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            }
        }),
    }
}

impl Gate {
    /// A wrong password (or code): counted against the attempt's budgets.
    pub(super) fn failed(&self, app: &App) {
        app.metrics().login_failed(self.realm);
        app.throttle.failure(&self.attempt, app.throttle.now());
    }

    /// A login that succeeded: the device's streak ends, and the client gets a new device
    /// cookie for the account (a new one each time, as OWASP advises).
    pub(super) fn passed(&self, app: &App, response: Response) -> Response {
        app.throttle.success(&self.attempt);
        let cookie = format!(
            "{}={}; HttpOnly; SameSite=Lax; Path=/; Max-Age={DEVICE_COOKIE_SECS}{}",
            device_cookie(self.realm),
            app.device_key.issue(self.realm, &self.account),
            if app.sessions.secure_cookie {
                "; Secure"
            } else {
                ""
            }
        );
        response.with_header("Set-Cookie", cookie)
    }
}

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

fn login(app: &App, ctx: &RequestCtx) -> Result<Response, Error> {
    let LoginBody { email, password } = json_body(ctx.req)?;
    let gate = admit(app, ctx, "account", &email)?;
    // A malformed email is just an unknown one: the same answer, the same work. A catalog that
    // cannot answer is our fault: a 5xx, and no failure counted against anyone.
    let user = app.catalog.user_by_email(&email)?;
    let verified =
        app.verify_password(&password, user.as_ref().map(|u| u.password_hash.as_str()))?;
    let user = match user {
        Some(user) if verified.ok && !user.disabled => user,
        found => {
            gate.failed(app);
            let mut entry = app.audit_entry(ctx, ActorType::Anonymous, "auth.login_failed");
            entry.actor_email = Some(email.trim().to_ascii_lowercase());
            entry.actor_id = found.map(|u| u.id);
            app.audit(entry);
            return Err(Error::InvalidCredentials);
        }
    };
    if let Some(stronger) = verified.rehash {
        // The stored hash predates our parameters: replace it now that we know the password.
        app.catalog.set_password_hash(user.id, &stronger)?;
    }
    let mut entry = app.audit_entry(ctx, ActorType::User, "auth.login");
    entry.actor_id = Some(user.id);
    entry.actor_email = Some(user.email.clone());
    app.audit(entry);
    let response = app.start_session(
        |browser| NewSession::Session {
            user_id: user.id,
            browser,
        },
        json!({ "user": user }),
    )?;
    Ok(gate.passed(app, response))
}

fn logout(app: &App, ctx: &RequestCtx, principal: &Principal) -> Result<Response, Error> {
    let session = principal.session();
    app.catalog.revoke_session(session.id)?;
    let (actor, id) = match principal {
        Principal::User { user, .. } => (ActorType::User, user.id),
        Principal::Admin { admin, .. } => (ActorType::Admin, admin.id),
    };
    let mut entry = app.audit_entry(ctx, actor, "auth.logout");
    entry.actor_id = Some(id);
    app.audit(entry);
    let clear = format!(
        "{}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0",
        crate::auth::principal::COOKIE
    );
    Ok(Response::json(200, &json!({ "logged_out": true })).with_header("Set-Cookie", clear))
}

/// Memberships in one answer of `/api/me` at most, and by default.
const MAX_MEMBERSHIPS_PAGE: usize = 200;
const DEFAULT_MEMBERSHIPS_PAGE: usize = 100;

/// The `after` of the next page: the last tenant's (name, slug) as hex of a JSON pair, opaque
/// to clients and safe in a URL.
fn memberships_cursor(name: &str, slug: &str) -> String {
    hex::encode(json!([name, slug]).to_string())
}

fn memberships_after(cursor: &str) -> Result<(String, String), Error> {
    let invalid = || Error::validation("after", "not a cursor of this list");
    let bytes = hex::decode(cursor).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

fn me(app: &App, ctx: &RequestCtx, account: &Account) -> Result<Response, Error> {
    let limit = match ctx.req.query_param("limit") {
        None => DEFAULT_MEMBERSHIPS_PAGE,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_MEMBERSHIPS_PAGE).contains(&n) => n,
            _ => return Err(Error::validation("limit", "must be 1 to 200")),
        },
    };
    let page = MembershipPage {
        // A session bound to one tenant sees only that tenant.
        tenant_id: account.session.tenant_id.clone(),
        after: ctx
            .req
            .query_param("after")
            .map(|c| memberships_after(&c))
            .transpose()?,
        // One more than the page, to know whether there is a next one.
        limit: Some(limit + 1),
    };
    let mut memberships = app.catalog.memberships_page(account.user.id, &page)?;
    let next = (memberships.len() > limit).then(|| {
        memberships.truncate(limit);
        memberships
            .last()
            .map(|m| memberships_cursor(&m.name, &m.slug))
    });
    let memberships: Vec<Value> = memberships
        .iter()
        .map(|m| {
            json!({
                "tenant_id": m.tenant_id,
                "slug": m.slug,
                "name": m.name,
                "role": m.role,
                "permissions": m.permissions,
            })
        })
        .collect();
    let impersonated_by = match account.session.impersonated_by {
        Some(admin_id) => {
            let admin = app.catalog.admin_by_id(admin_id)?;
            json!({ "admin_id": admin_id, "email": admin.map(|a| a.email) })
        }
        None => Value::Null,
    };
    let mut body = json!({
        "user": account.user,
        "memberships": memberships,
        "next": next.flatten(),
        "impersonated": account.session.impersonated_by.is_some(),
        "impersonated_by": impersonated_by,
    });
    if account.via == Via::Cookie {
        // The page needs it for the X-CSRF-Token header and cannot read the HttpOnly cookie.
        body["csrf_token"] = json!(account.session.csrf_token);
    }
    Ok(Response::json(200, &body))
}

#[derive(Deserialize)]
struct ProfileBody {
    name: Option<String>,
    surname: Option<String>,
    /// Absent: unchanged; null: removed.
    #[serde(default, deserialize_with = "present")]
    photo_url: Option<Option<String>>,
    /// The older name of `photo_url`; `photo_url` wins when both are sent.
    #[serde(default, deserialize_with = "present")]
    photo: Option<Option<String>>,
}

fn update_me(app: &App, ctx: &RequestCtx, account: &Account) -> Result<Response, Error> {
    let body: ProfileBody = json_body(ctx.req)?;
    let update = ProfileUpdate {
        name: body.name,
        surname: body.surname,
        // Null removes the photo.
        photo_url: body.photo_url.or(body.photo).map(Option::unwrap_or_default),
    };
    let user = app.catalog.update_profile(account.user.id, &update)?;
    Ok(Response::json(200, &json!({ "user": user })))
}

/// Passwords we accept: long enough to mean something, short enough to hash.
pub(super) fn check_new_password(field: &str, password: &str) -> Result<(), Error> {
    let len = password.chars().count();
    if len < 8 {
        return Err(Error::validation(field, "must be at least 8 characters"));
    }
    if len > 256 {
        return Err(Error::validation(field, "must be at most 256 characters"));
    }
    Ok(())
}

fn change_password(app: &App, ctx: &RequestCtx, account: &Account) -> Result<Response, Error> {
    if account.session.impersonated_by.is_some() {
        return Err(Error::Refused(
            "an impersonation cannot do this: it needs the user's own session",
        ));
    }
    #[derive(Deserialize)]
    struct PasswordChange {
        current_password: String,
        new_password: String,
    }
    let PasswordChange {
        current_password: current,
        new_password: new,
    } = json_body(ctx.req)?;
    check_new_password("new_password", &new)?;
    if !app
        .verify_password(&current, Some(&account.user.password_hash))?
        .ok
    {
        return Err(Error::validation("current_password", "is wrong"));
    }
    let hash = app.hash_password(&new)?;
    app.catalog.set_password_hash(account.user.id, &hash)?;
    // Whoever else holds a session of this user (a stolen cookie, say) is out now.
    let revoked = app
        .catalog
        .revoke_user_sessions(account.user.id, Some(account.session.id))?;
    let mut entry = app.audit_entry(ctx, ActorType::User, "auth.password_changed");
    entry.actor_id = Some(account.user.id);
    entry.details = json!({ "sessions_revoked": revoked });
    app.audit(entry);
    Ok(Response::json(
        200,
        &json!({ "changed": true, "sessions_revoked": revoked }),
    ))
}

/// The user's personal tokens that this credential may see: a credential bound to one tenant
/// sees that tenant's only.
fn visible_tokens(app: &App, account: &Account) -> Result<Vec<PersonalToken>, Error> {
    let mut tokens = app.catalog.personal_tokens(account.user.id)?;
    if let Some(tenant) = &account.session.tenant_id {
        tokens.retain(|t| t.tenant_id == *tenant);
    }
    Ok(tokens)
}

fn list_tokens(app: &App, _ctx: &RequestCtx, account: &Account) -> Result<Response, Error> {
    let tokens = visible_tokens(app, account)?;
    Ok(Response::json(200, &json!({ "tokens": tokens })))
}

fn create_token(app: &App, ctx: &RequestCtx, account: &Account) -> Result<Response, Error> {
    // A token minted during an impersonation would outlive it and the admin's revocation.
    if account.session.impersonated_by.is_some() {
        return Err(Error::Refused(
            "an impersonation cannot do this: it needs the user's own session",
        ));
    }
    #[derive(Deserialize)]
    struct NewKey {
        name: String,
        tenant: String,
        expires_in_days: Option<i64>,
    }
    let NewKey {
        name,
        tenant: tenant_key,
        expires_in_days,
    } = json_body(ctx.req)?;
    let record = tenant_by_key(&app.catalog, &tenant_key)?
        .ok_or_else(|| Error::validation("tenant", "no such tenant"))?;
    // A credential bound to one tenant (a personal token, an impersonation) mints keys to that
    // tenant only, or it would be a key to all of the user's tenants after all.
    if account
        .session
        .tenant_id
        .as_ref()
        .is_some_and(|t| *t != record.id)
    {
        return Err(Error::NotAMember);
    }
    if app
        .catalog
        .membership(account.user.id, &record.id)?
        .is_none()
    {
        return Err(Error::validation(
            "tenant",
            "you are not a member of this tenant",
        ));
    }
    let now = unix_now();
    let expires_at = match expires_in_days {
        None => None,
        Some(days) if (1..=3650).contains(&days) => Some(now + days * 86_400),
        Some(_) => return Err(Error::validation("expires_in_days", "must be 1 to 3650")),
    };
    let token = token::generate();
    let id = app.catalog.create_session(
        &NewSession::Personal {
            token_hash: token::digest(&token).to_string(),
            user_id: account.user.id,
            tenant_id: record.id.clone(),
            name: name.clone(),
            expires_at,
        },
        now,
    )?;
    let mut entry = app.audit_entry(ctx, ActorType::User, "token.created");
    entry.actor_id = Some(account.user.id);
    entry.tenant_id = Some(record.id.clone());
    entry.target_type = Some("token".into());
    entry.target_id = Some(id.to_string());
    app.audit(entry);
    Ok(Response::json(
        201,
        &json!({
            "id": id,
            "name": name,
            "tenant_id": record.id,
            "expires_at": expires_at,
            "token": token,
        }),
    ))
}

fn revoke_token(app: &App, ctx: &RequestCtx, account: &Account) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    if !visible_tokens(app, account)?.iter().any(|t| t.id == id)
        || !app.catalog.revoke_personal_token(account.user.id, id)?
    {
        return Err(Error::NotFound);
    }
    let mut entry = app.audit_entry(ctx, ActorType::User, "token.revoked");
    entry.actor_id = Some(account.user.id);
    entry.target_type = Some("token".into());
    entry.target_id = Some(id.to_string());
    app.audit(entry);
    Ok(Response::json(200, &json!({ "revoked": id })))
}

/// Trades a one-time impersonation ticket for a session, on the ticket's tenant only.
fn exchange_ticket(app: &App, ctx: &RequestCtx) -> Result<Response, Error> {
    #[derive(Deserialize)]
    struct Ticket {
        ticket: String,
    }
    let Ticket { ticket } = json_body(ctx.req)?;
    let tenant = ctx.tenant.as_ref().ok_or(Error::NoTenant)?;
    if !token::well_formed(&ticket) {
        return Err(Error::Unauthorized);
    }
    // Consumed whatever happens next: a ticket presented on the wrong tenant is spent.
    let session = app
        .catalog
        .consume_ticket(token::digest(&ticket).as_str(), unix_now())?
        .ok_or(Error::Unauthorized)?;
    if session.tenant_id.as_deref() != Some(tenant.id.as_str()) {
        return Err(Error::NotAMember);
    }
    let (Some(user_id), Some(admin_id)) = (session.user_id, session.impersonated_by) else {
        return Err(Error::Unauthorized);
    };
    if app.catalog.membership(user_id, &tenant.id)?.is_none() {
        return Err(Error::NotAMember);
    }
    let mut entry = app.audit_entry(ctx, ActorType::Admin, "impersonation.exchanged");
    entry.actor_id = Some(admin_id);
    entry.target_type = Some("user".into());
    entry.target_id = Some(user_id.to_string());
    app.audit(entry);
    app.start_session(
        |browser| NewSession::ImpersonatedSession {
            user_id,
            tenant_id: tenant.id.clone(),
            impersonated_by: admin_id,
            browser,
        },
        json!({ "user_id": user_id, "impersonated_by": admin_id }),
    )
}
