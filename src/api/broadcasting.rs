//! Real-time channels as the API sees them: the WebSocket endpoint (`/app/{key}`), channel
//! authorization (`POST /broadcasting/auth`, as Laravel Echo calls it), the Pusher HTTP API
//! (`POST /apps/{app_id}/events`), the events the workspace publishes after its writes, and the
//! watcher that ends subscriptions their owner may no longer hold.
//!
//! Who may join which channel is decided here, in one function used both when a socket subscribes
//! and when the watcher re-checks it: a rule cannot drift between the two.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{json, Value};

use crate::catalog::{unix_now, Catalog, TenantStatus, User};
use crate::error::Error;
use crate::http::{log_safe, Request, Response, Router};
use crate::realtime::{self, Publish};
use crate::workspace;

use super::{Account, App, RequestCtx, Route};

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("GET", "/app/{key}", Route::Public(upgrade));
    r.add(
        "POST",
        "/broadcasting/auth",
        Route::Account(authorize_channel),
    );
    r.add("POST", "/apps/{app_id}/events", Route::Public(http_events));
    r.add(
        "POST",
        "/api/admin/broadcasting/auth",
        Route::Admin(authorize_admin_channel),
    );
}

/// A system admin's own channel: what background work they started tells them there
/// (`tenant.provisioned`, `tenant.provision_failed`).
pub(super) fn admin_channel(admin_id: i64) -> String {
    format!("private-admin.{admin_id}")
}

/// `POST /api/admin/broadcasting/auth` on the central host: a system admin may hold their own
/// `private-admin.<id>` and nothing else.
fn authorize_admin_channel(
    app: &App,
    ctx: &RequestCtx,
    signed_in: &super::SignedInAdmin,
) -> Result<Response, Error> {
    let refused = Err(Error::Refused("you may not subscribe to this channel"));
    let Some((socket_id, channel_name)) = auth_fields(ctx.req)? else {
        return refused;
    };
    if channel_name != admin_channel(signed_in.admin.id) {
        log::info!(
            "admin {} refused channel {}",
            signed_in.admin.id,
            log_safe(&channel_name)
        );
        return refused;
    }
    let owner = format!("admin-{}:{}", signed_in.admin.id, signed_in.session.id);
    if app
        .hub
        .record_authorization(&socket_id, &channel_name, &owner)
        .is_err()
    {
        return refused;
    }
    let auth = app.hub.sign(&socket_id, &channel_name, None);
    Ok(Response::json(200, &json!({ "auth": auth })))
}

/// Public channels whose names look like ours (`company.<id>.orders`, `App.Models.User.7`, in
/// any case) are refused by the hub: nothing is published there, and a client that subscribes to
/// one by mistake (a missing `private-`) should learn it, not wait for events that never come.
pub(super) fn reserved_public_name(name: &str) -> bool {
    ["company.", "app.models.user."].iter().any(|prefix| {
        name.get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    })
}

/// What a channel name says, once parsed. Anything else is refused.
#[derive(Debug, PartialEq, Eq)]
enum Channel {
    User(i64),
    Chat { company: String, chat: i64 },
    Orders { company: String },
    Presence { company: String },
}

fn parse_channel(name: &str) -> Option<Channel> {
    if let Some(id) = name.strip_prefix("private-App.Models.User.") {
        return digits(id).map(Channel::User);
    }
    if let Some(rest) = name.strip_prefix("presence-company.") {
        let company = rest.strip_suffix(".presence")?;
        return uuid(company).map(|company| Channel::Presence { company });
    }
    let rest = name.strip_prefix("private-company.")?;
    if let Some(company) = rest.strip_suffix(".orders") {
        return uuid(company).map(|company| Channel::Orders { company });
    }
    let (company, chat) = rest.split_once(".chat.")?;
    Some(Channel::Chat {
        company: uuid(company)?,
        chat: digits(chat)?,
    })
}

/// Only the canonical spelling, as for [`uuid`]: ids start at 1, so no leading zero. Otherwise
/// `User.07` would be a second, authorizable name for `User.7` (one the events never reach).
fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// Only the canonical spelling: a channel name is compared as text by the hub.
fn uuid(s: &str) -> Option<String> {
    let id = uuid::Uuid::parse_str(s).ok()?.hyphenated().to_string();
    (id == s).then_some(id)
}

/// Why a subscription is refused: always a 403 to the client, the reason only in the log.
struct Refused(String);

/// Whether `user` may hold `channel`; for presence, the member data to announce.
fn may_join(
    app: &App,
    user: &User,
    channel: &Channel,
    request_tenant: Option<&str>,
) -> Result<Option<Value>, Refused> {
    let company = match channel {
        Channel::User(id) => {
            return if *id == user.id {
                Ok(None)
            } else {
                Err(Refused("another user's channel".into()))
            };
        }
        Channel::Chat { company, .. }
        | Channel::Orders { company }
        | Channel::Presence { company } => company,
    };
    if request_tenant.is_some_and(|t| t != company) {
        return Err(Refused(
            "a channel of another company than the request's".into(),
        ));
    }
    let catalog = &app.catalog;
    let record = catalog
        .by_id(company)
        .map_err(|e| Refused(e.to_string()))?
        .ok_or_else(|| Refused("unknown company".into()))?;
    if record.status != TenantStatus::Active {
        return Err(Refused(format!("company is {}", record.status)));
    }
    let membership = catalog
        .membership(user.id, company)
        .map_err(|e| Refused(e.to_string()))?
        .ok_or_else(|| Refused("not a member".into()))?;
    match channel {
        Channel::Orders { .. } => {
            let sees = [
                "orders_view",
                "orders_view_all",
                "orders_simple_view",
                "orders_simple_view_all",
            ]
            .iter()
            .any(|p| membership.can(p));
            if sees {
                Ok(None)
            } else {
                Err(Refused("no order permission".into()))
            }
        }
        Channel::Chat { chat, .. } => {
            // The chat must exist in that company's own file and be visible to the user:
            // a participant, or admin / chats_view_all. The workspace answers exactly that.
            let tenant = app
                .registry
                .open(record)
                .map_err(|e| Refused(e.to_string()))?;
            let reader = super::workspace::reader_of(user.id, &membership);
            workspace::get_chat(&tenant, &reader, *chat)
                .map(|_| None)
                .map_err(|e| Refused(format!("chat: {e}")))
        }
        Channel::Presence { .. } => Ok(Some(json!({
            "user_id": user.id.to_string(),
            "user_info": {
                "id": user.id,
                "name": user.name,
                "surname": user.surname,
                "email": user.email,
                "photo": user.photo_url,
            },
        }))),
        Channel::User(_) => unreachable!("answered above"),
    }
}

fn upgrade(app: &App, ctx: &RequestCtx) -> Result<Response, Error> {
    if let Some(origin) = ctx.req.header("origin") {
        if !app.origin_allowed(origin) {
            log::warn!("websocket from origin {} refused", log_safe(origin));
            return Err(Error::Refused(
                "this page's origin may not open a WebSocket here",
            ));
        }
    }
    Ok(app.hub.upgrade_response(ctx.req))
}

/// The form Echo and pusher-js post: `socket_id=...&channel_name=...` (or the same as JSON).
/// `None` when a field is missing or malformed; `Err` for a body of another media type.
fn auth_fields(req: &Request) -> Result<Option<(String, String)>, Error> {
    let json = match req.content_type_is("application/json") {
        Some(true) => true,
        // Without a Content-Type the form is assumed, as before.
        None => false,
        Some(false) if req.content_type_is("application/x-www-form-urlencoded") == Some(true) => {
            false
        }
        Some(false) => {
            return Err(Error::UnsupportedMediaType(
                "expected application/x-www-form-urlencoded or application/json".into(),
            ))
        }
    };
    Ok(auth_fields_of(req, json))
}

fn auth_fields_of(req: &Request, json: bool) -> Option<(String, String)> {
    let (socket, channel) = if json {
        let v: Value = serde_json::from_slice(&req.body).ok()?;
        (
            v.get("socket_id")?.as_str()?.to_string(),
            v.get("channel_name")?.as_str()?.to_string(),
        )
    } else {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(&req.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        (get("socket_id")?, get("channel_name")?)
    };
    let (a, b) = socket.split_once('.')?;
    let well_formed = [a, b]
        .iter()
        .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|c| c.is_ascii_digit()));
    (well_formed && channel.len() <= 200).then_some((socket, channel))
}

/// `POST /broadcasting/auth`: `{"auth": ...}` (and `channel_data` on presence channels) or 403.
/// Any failure while checking is a refusal, logged: never a 500, never an open door.
fn authorize_channel(app: &App, ctx: &RequestCtx, account: &Account) -> Result<Response, Error> {
    let refuse = |why: &str| {
        log::info!(
            "channel authorization refused for user {}: {}",
            account.user.id,
            log_safe(why)
        );
        Err(Error::Refused("you may not subscribe to this channel"))
    };
    let Some((socket_id, channel_name)) = auth_fields(ctx.req)? else {
        return refuse("malformed socket_id or channel_name");
    };
    let Some(channel) = parse_channel(&channel_name) else {
        return refuse(&format!("unknown channel {channel_name}"));
    };
    let request_tenant = ctx.tenant.as_ref().map(|t| t.id.as_str());
    // A token bound to one tenant authorizes nothing of another.
    let bound = account.session.tenant_id.as_deref();
    let company = match &channel {
        Channel::User(_) => None,
        Channel::Chat { company, .. }
        | Channel::Orders { company }
        | Channel::Presence { company } => Some(company.as_str()),
    };
    match (bound, company) {
        (Some(bound), Some(company)) if bound != company => {
            return refuse("a token bound to another company");
        }
        // The user's own channel carries notifications from all their companies.
        (Some(_), None) => return refuse("a token bound to one company, on the user's channel"),
        _ => {}
    }
    // A company in maintenance takes no new subscriptions, unless this request may pass. Not in
    // `may_join`: the watcher leaves the subscriptions made before in place (they wait, as jobs
    // do; clients do not subscribe again after an error, so ending them would leave open pages
    // deaf once maintenance is over).
    if let Some(company) = company {
        let snapshot = app.catalog.snapshot()?;
        if let Some(held) = super::maintenance::refusal(&snapshot, company, ctx.req) {
            return Err(held);
        }
    }
    let presence = match may_join(app, &account.user, &channel, request_tenant) {
        Ok(presence) => presence,
        Err(Refused(why)) => return refuse(&why),
    };
    let owner = format!("{}:{}", account.user.id, account.session.id);
    if app
        .hub
        .record_authorization(&socket_id, &channel_name, &owner)
        .is_err()
    {
        return refuse("the real-time hub is unavailable");
    }
    let body = match presence {
        Some(member) => {
            let channel_data = member.to_string();
            let auth = app.hub.sign(&socket_id, &channel_name, Some(&channel_data));
            json!({ "auth": auth, "channel_data": channel_data })
        }
        None => json!({ "auth": app.hub.sign(&socket_id, &channel_name, None) }),
    };
    Ok(Response::json(200, &body))
}

/// `POST /apps/{app_id}/events`, signed as Pusher signs it, for existing publishers.
fn http_events(app: &App, ctx: &RequestCtx) -> Result<Response, Error> {
    let (app_id, key, secret) = app.realtime_credentials();
    if ctx.params.get("app_id") != Some(app_id.as_str()) {
        return Err(Error::NotFound);
    }
    let path = ctx.req.path.clone();
    let verified = realtime::verify_http_signature(
        &ctx.req.method,
        &path,
        &ctx.req.query_pairs(),
        &ctx.req.body,
        &key,
        &secret,
        unix_now() as u64,
    );
    if let Err(e) = verified {
        log::info!("events API request refused: {}", log_safe(&e.to_string()));
        return Err(Error::Unauthorized);
    }
    // Pusher's answers, which its publishers expect: 400 for a body it cannot use, 413 for data
    // over the limit.
    let publish = match realtime::parse_events_body(&ctx.req.body, 10 * 1024) {
        Ok(publish) => publish,
        Err(e @ realtime::EventsBodyError::DataTooLarge { .. }) => {
            return Err(Error::PayloadTooLarge(e.to_string()))
        }
        Err(e) => return Err(Error::BadRequest(e.to_string())),
    };
    app.hub.publish(publish)?;
    Ok(Response::json(200, &json!({})))
}

/// The socket that caused a write (Laravel's `toOthers()`), so it is not sent its own event.
pub(super) fn except_socket(req: &Request) -> Option<String> {
    req.header("x-socket-id").map(String::from)
}

/// Publishes after a write has committed. A hub that cannot take it is logged: the write stands.
pub(super) fn publish(
    app: &App,
    channels: Vec<String>,
    event: &str,
    data: Value,
    except: Option<String>,
) {
    let publish = Publish {
        channels,
        event: event.to_string(),
        data: data.to_string(),
        except_socket: except,
    };
    if let Err(e) = app.hub.publish(publish) {
        log::warn!("event {} not published: {e:?}", log_safe(event));
    }
}

pub(super) fn chat_channel(tenant_id: &str, chat_id: i64) -> String {
    format!("private-company.{tenant_id}.chat.{chat_id}")
}

pub(super) fn orders_channel(tenant_id: &str) -> String {
    format!("private-company.{tenant_id}.orders")
}

pub(super) fn user_channel(user_id: i64) -> String {
    format!("private-App.Models.User.{user_id}")
}

/// How often subscriptions are re-authorized: revocations take effect within this (plus the
/// time one pass takes).
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Starts the thread that re-checks every authorized subscription against the catalog and the
/// tenant files, and ends those whose owner was removed from the company, lost the permission,
/// logged out or had the session revoked. Stops when the app is dropped.
pub fn spawn_watcher(app: &Arc<App>) {
    let weak: Weak<App> = Arc::downgrade(app);
    let started = std::thread::Builder::new()
        .name("realtime-watch".into())
        .spawn(move || loop {
            std::thread::sleep(WATCH_EVERY);
            let Some(app) = weak.upgrade() else {
                return;
            };
            if let Err(e) = recheck(&app) {
                log::warn!("real-time re-authorization pass failed: {e}");
            }
        });
    if let Err(e) = started {
        log::error!("cannot start the real-time watcher: {e}");
    }
}

fn recheck(app: &App) -> Result<(), String> {
    let subscriptions = app.hub.subscriptions().map_err(|e| format!("{e:?}"))?;
    let now = unix_now();
    let mut ended = Vec::new();
    // Many sockets of one session often hold the same channel (tabs, a fan-out): judge each
    // (user, session, channel) once per pass.
    let mut verdicts: HashMap<(i64, i64, String), bool> = HashMap::new();
    for s in subscriptions {
        // Subscriptions we authorized carry an owner `user:session`; public ones none.
        let owner = s
            .user_id
            .as_deref()
            .and_then(|o| o.split_once(':'))
            .and_then(|(u, s)| Some((u.parse::<i64>().ok()?, s.parse::<i64>().ok()?)));
        let admin = s
            .user_id
            .as_deref()
            .and_then(|o| o.strip_prefix("admin-")?.split_once(':'))
            .and_then(|(a, s)| Some((a.parse::<i64>().ok()?, s.parse::<i64>().ok()?)));
        let allowed = match (owner, admin) {
            (_, Some((admin_id, session_id))) => {
                s.channel == admin_channel(admin_id)
                    && matches!(app.catalog.session_is_live(session_id, now), Ok(true))
            }
            (Some((user_id, session_id)), None) => *verdicts
                .entry((user_id, session_id, s.channel.clone()))
                .or_insert_with(|| {
                    still_allowed(app, &app.catalog, user_id, session_id, &s.channel, now)
                }),
            // A private or presence subscription with no owner cannot be re-checked: its
            // signature was replayed (subscribe, unsubscribe, subscribe again) or its recorded
            // authorization was pushed out by later ones. The signature never expires, so
            // keeping it would let it outlive any revocation.
            (None, None) => {
                !(s.channel.starts_with("private-") || s.channel.starts_with("presence-"))
            }
        };
        if !allowed {
            ended.push((s.socket_id, s.channel));
        }
    }
    if !ended.is_empty() {
        log::info!(
            "ending {} real-time subscriptions no longer authorized",
            ended.len()
        );
        app.hub.revoke(ended).map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

fn still_allowed(
    app: &App,
    catalog: &Catalog,
    user_id: i64,
    session_id: i64,
    channel: &str,
    now: i64,
) -> bool {
    let Ok(true) = catalog.session_is_live(session_id, now) else {
        return false;
    };
    let Ok(Some(user)) = catalog.user_by_id(user_id) else {
        return false;
    };
    let Some(channel) = parse_channel(channel) else {
        return false;
    };
    may_join(app, &user, &channel, None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        let id = "6f1c2a7e-0b3d-4c5e-8f9a-1b2c3d4e5f60";
        assert_eq!(
            parse_channel("private-App.Models.User.17"),
            Some(Channel::User(17))
        );
        assert_eq!(
            parse_channel(&format!("private-company.{id}.chat.9")),
            Some(Channel::Chat {
                company: id.into(),
                chat: 9
            })
        );
        assert_eq!(
            parse_channel(&format!("private-company.{id}.orders")),
            Some(Channel::Orders { company: id.into() })
        );
        assert_eq!(
            parse_channel(&format!("presence-company.{id}.presence")),
            Some(Channel::Presence { company: id.into() })
        );
        for bad in [
            "private-App.Models.User.",
            "private-App.Models.User.1x",
            "private-App.Models.User.017",
            &format!("private-company.{id}.chat.09"),
            "private-company.nope.orders",
            &format!("private-company.{}.orders", id.to_uppercase()),
            &format!("private-company.{id}.chat."),
            &format!("private-company.{id}.chat.-1"),
            &format!("private-company.{id}.secrets"),
            &format!("presence-company.{id}.orders"),
            "public",
            "",
        ] {
            assert_eq!(parse_channel(bad), None, "{bad}");
        }
    }

    #[test]
    fn public_names_that_look_like_ours_are_reserved() {
        let id = "6f1c2a7e-0b3d-4c5e-8f9a-1b2c3d4e5f60";
        for ours in [
            format!("company.{id}.orders"),
            format!("company.{id}.chat.1"),
            format!("COMPANY.{id}.presence"),
            "App.Models.User.7".to_string(),
            "company.".to_string(),
        ] {
            assert!(reserved_public_name(&ours), "{ours}");
        }
        for free in ["news", "companyx", "my-company.orders", "App.Models", "é"] {
            assert!(!reserved_public_name(free), "{free}");
        }
    }
}
