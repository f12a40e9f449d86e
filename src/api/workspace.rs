//! The company workspace over HTTP: chats, participants, messages (`/api/chats...`) and orders
//! (`/api/orders...`). Handlers turn requests into calls on `workspace`, which shapes every read
//! by the member's permissions; nothing here decides who sees what.

use std::cell::Cell;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::catalog::{IdentityError, Membership};
use crate::error::Error;
use crate::http::{Request, Response, Router};
use crate::workspace::{
    self, ChatUpdate, NewChat, NewOrder, OrderPatch, OrderQuery, Reader, ShapedOrder,
    WorkspaceError,
};

use super::broadcasting::{chat_channel, except_socket, orders_channel, publish, user_channel};
use super::params::query_number;
use super::webhooks_out::{emit, order_data};
use super::{id_param, json_body, App, Member, RequestCtx, Route};

/// The orders channel is shared by every permission level: its events carry only what all of
/// them may see, and clients fetch the rest through the API, which applies their own scope.
fn order_event(app: &App, ctx: &RequestCtx, member: &Member, event: &'static str, order: &Value) {
    let pick = |k: &str| order.get(k).cloned().unwrap_or(Value::Null);
    emit(app, &member.tenant, event, || {
        order_data(&member.tenant, &pick("id"))
    });
    publish(
        app,
        vec![orders_channel(member.tenant.id())],
        event,
        json!({
            "id": pick("id"),
            "number": pick("number"),
            "status": pick("status"),
            "updated_at": pick("updated_at"),
        }),
        except_socket(ctx.req),
    );
}

fn notify_assigned(app: &App, ctx: &RequestCtx, member: &Member, user_id: i64, order: &Value) {
    publish(
        app,
        vec![user_channel(user_id)],
        "notification",
        json!({
            "type": "order.assigned",
            "tenant_id": member.tenant.id(),
            "order_id": order.get("id"),
            "number": order.get("number"),
        }),
        except_socket(ctx.req),
    );
}

/// People put in a chat learn it on their own channel, so their list shows it without a reload.
fn notify_chat_added(
    app: &App,
    ctx: &RequestCtx,
    member: &Member,
    chat_id: i64,
    users: impl IntoIterator<Item = i64>,
) {
    let channels: Vec<String> = users.into_iter().map(user_channel).collect();
    if channels.is_empty() {
        return;
    }
    publish(
        app,
        channels,
        "notification",
        json!({ "type": "chat.added", "tenant_id": member.tenant.id(), "chat_id": chat_id }),
        except_socket(ctx.req),
    );
}

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("GET", "/api/chats", Route::TenantRead(list_chats));
    r.add("POST", "/api/chats", Route::Tenant(create_chat));
    r.add("GET", "/api/chats/{id}", Route::TenantRead(get_chat));
    r.add("PATCH", "/api/chats/{id}", Route::Tenant(update_chat));
    r.add(
        "GET",
        "/api/chats/{id}/participants",
        Route::TenantRead(participants),
    );
    r.add(
        "POST",
        "/api/chats/{id}/participants",
        Route::Tenant(add_participant),
    );
    r.add(
        "DELETE",
        "/api/chats/{id}/participants/{user_id}",
        Route::Tenant(remove_participant),
    );
    r.add(
        "GET",
        "/api/chats/{id}/messages",
        Route::TenantRead(list_messages),
    );
    r.add(
        "POST",
        "/api/chats/{id}/messages",
        Route::Tenant(post_message),
    );
    r.add(
        "PATCH",
        "/api/chats/{id}/messages/{mid}",
        Route::Tenant(edit_message),
    );
    r.add(
        "DELETE",
        "/api/chats/{id}/messages/{mid}",
        Route::Tenant(delete_message),
    );
    r.add("POST", "/api/chats/{id}/read", Route::Tenant(mark_read));
    r.add("GET", "/api/orders", Route::TenantRead(list_orders));
    r.add("POST", "/api/orders", Route::Tenant(create_order));
    r.add("GET", "/api/orders/{id}", Route::TenantRead(get_order));
    r.add("PATCH", "/api/orders/{id}", Route::Tenant(update_order));
    r.add("DELETE", "/api/orders/{id}", Route::Tenant(delete_order));
    r.add(
        "GET",
        "/api/orders/{id}/history",
        Route::TenantRead(order_history),
    );
}

fn reader(member: &Member) -> Reader {
    reader_of(member.user.id, member.membership)
}

/// What the workspace lets a user with this membership see (also for channel authorization).
pub(super) fn reader_of(user_id: i64, membership: &Membership) -> Reader {
    Reader {
        user_id,
        permissions: std::sync::Arc::clone(&membership.permissions),
        admin: membership.all_permissions,
        limits: Default::default(),
    }
}

/// The reader for a write that adds something the plan counts: the tenant's limits, and
/// refused outright when the subscription leaves the tenant read-only.
pub(super) fn writer(app: &App, member: &Member) -> Result<Reader, Error> {
    let plan = super::plans::writable(app, member.tenant.id())?;
    let mut reader = reader(member);
    reader.limits = crate::workspace::Limits(std::sync::Arc::new(plan.plan.limits));
    Ok(reader)
}

/// Whether users belong to the member's tenant: writes that name a user ask it. A catalog
/// failure answers "no", so that nothing is written, and is kept: `settle` then answers it in
/// place of the refusal it caused, as a server fault is never the client's error.
struct MemberCheck<'a> {
    app: &'a App,
    tenant_id: &'a str,
    fault: Cell<Option<IdentityError>>,
}

impl<'a> MemberCheck<'a> {
    fn new(app: &'a App, member: &'a Member) -> MemberCheck<'a> {
        MemberCheck {
            app,
            tenant_id: member.tenant.id(),
            fault: Cell::new(None),
        }
    }

    fn is_member(&self, user_id: i64) -> bool {
        match self.app.catalog.membership(user_id, self.tenant_id) {
            Ok(found) => found.is_some(),
            Err(e) => {
                self.fault.set(Some(e));
                false
            }
        }
    }

    fn settle<T>(&self, result: Result<T, WorkspaceError>) -> Result<T, Error> {
        match (result, self.fault.take()) {
            (Err(WorkspaceError::Validation(_)), Some(fault)) => Err(fault.into()),
            (result, _) => result.map_err(Error::from),
        }
    }
}

fn list_chats(_app: &App, _ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let chats = workspace::list_chats(&member.tenant, &reader(member))?;
    Ok(Response::json(200, &json!({ "chats": chats })))
}

fn create_chat(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let new: NewChat = json_body(ctx.req)?;
    let members = MemberCheck::new(app, member);
    let chat = members.settle(workspace::create_chat(
        &member.tenant,
        &writer(app, member)?,
        &new,
        &|user| members.is_member(user),
    ))?;
    let others: BTreeSet<i64> = new
        .participant_ids
        .iter()
        .copied()
        .filter(|&user| user != member.user.id)
        .collect();
    notify_chat_added(app, ctx, member, chat.chat.id, others);
    emit(
        app,
        &member.tenant,
        "chat.created",
        || json!({ "chat": chat }),
    );
    Ok(Response::json(201, &chat))
}

fn get_chat(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let chat = workspace::get_chat(&member.tenant, &reader(member), id)?;
    Ok(Response::json(200, &chat))
}

fn update_chat(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let update: ChatUpdate = json_body(ctx.req)?;
    let chat = workspace::update_chat(&member.tenant, &writer(app, member)?, id, &update)?;
    Ok(Response::json(200, &chat))
}

fn participants(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let list = workspace::participants(&member.tenant, &reader(member), id)?;
    Ok(Response::json(200, &json!({ "participants": list })))
}

fn add_participant(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    #[derive(Deserialize)]
    struct Participant {
        user_id: i64,
    }
    let Participant { user_id } = json_body(ctx.req)?;
    let members = MemberCheck::new(app, member);
    let added = members.settle(workspace::add_participant(
        &member.tenant,
        &writer(app, member)?,
        id,
        user_id,
        &|user| members.is_member(user),
    ))?;
    publish(
        app,
        vec![chat_channel(member.tenant.id(), id)],
        "participant.added",
        json!({ "chat_id": id, "user_id": user_id }),
        except_socket(ctx.req),
    );
    notify_chat_added(app, ctx, member, id, [user_id]);
    Ok(Response::json(201, &added))
}

fn remove_participant(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let user_id = id_param(ctx.params, "user_id")?;
    workspace::remove_participant(&member.tenant, &writer(app, member)?, id, user_id)?;
    publish(
        app,
        vec![chat_channel(member.tenant.id(), id)],
        "participant.removed",
        json!({ "chat_id": id, "user_id": user_id }),
        except_socket(ctx.req),
    );
    Ok(Response::json(200, &json!({ "removed": user_id })))
}

fn list_messages(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let before = query_number(ctx.req, "before")?;
    let limit = query_number(ctx.req, "limit")?;
    let page = workspace::list_messages(&member.tenant, &reader(member), id, before, limit)?;
    Ok(Response::json(
        200,
        &json!({ "messages": page.items, "next": page.next }),
    ))
}

fn body_field(req: &Request) -> Result<String, Error> {
    #[derive(Deserialize)]
    struct Message {
        body: String,
    }
    json_body(req).map(|m: Message| m.body)
}

fn post_message(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let message = workspace::post_message(
        &member.tenant,
        &writer(app, member)?,
        id,
        &body_field(ctx.req)?,
    )?;
    Ok(message_created(app, ctx, member, id, &message))
}

/// A new message told to the chat's channel and to webhooks, and answered `201`: a posted
/// message and one that carries a file alike.
pub(super) fn message_created(
    app: &App,
    ctx: &RequestCtx,
    member: &Member,
    chat_id: i64,
    message: &workspace::Message,
) -> Response {
    publish(
        app,
        vec![chat_channel(member.tenant.id(), chat_id)],
        "message.created",
        json!({ "message": message }),
        except_socket(ctx.req),
    );
    emit(
        app,
        &member.tenant,
        "message.created",
        || json!({ "chat_id": chat_id, "message": message }),
    );
    Response::json(201, message)
}

fn edit_message(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let mid = id_param(ctx.params, "mid")?;
    let message = workspace::edit_message(
        &member.tenant,
        &writer(app, member)?,
        id,
        mid,
        &body_field(ctx.req)?,
    )?;
    publish(
        app,
        vec![chat_channel(member.tenant.id(), id)],
        "message.updated",
        json!({ "message": message }),
        except_socket(ctx.req),
    );
    emit(
        app,
        &member.tenant,
        "message.updated",
        || json!({ "chat_id": id, "message": message }),
    );
    Ok(Response::json(200, &message))
}

fn delete_message(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let mid = id_param(ctx.params, "mid")?;
    workspace::delete_message(&member.tenant, &writer(app, member)?, id, mid)?;
    publish(
        app,
        vec![chat_channel(member.tenant.id(), id)],
        "message.deleted",
        json!({ "id": mid, "chat_id": id }),
        except_socket(ctx.req),
    );
    emit(
        app,
        &member.tenant,
        "message.deleted",
        || json!({ "id": mid, "chat_id": id }),
    );
    Ok(Response::json(200, &json!({ "deleted": mid })))
}

fn mark_read(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    #[derive(Deserialize)]
    struct Read {
        message_id: i64,
    }
    let Read { message_id } = json_body(ctx.req)?;
    let mark = workspace::mark_read(&member.tenant, &reader(member), id, message_id)?;
    Ok(Response::json(
        200,
        &json!({ "last_read_message_id": mark }),
    ))
}

fn list_orders(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let req = ctx.req;
    let query = OrderQuery {
        status: req.query_param("status").filter(|s| !s.is_empty()),
        assigned_to: query_number(req, "assigned_to")?,
        q: req.query_param("q").filter(|s| !s.is_empty()),
        sort: req.query_param("sort").filter(|s| !s.is_empty()),
        limit: query_number(req, "limit")?,
        cursor: req.query_param("cursor").filter(|s| !s.is_empty()),
    };
    let page = workspace::list_orders(&member.tenant, &reader(member), &query)?;
    #[derive(serde::Serialize)]
    struct Body<'a> {
        next: &'a Option<String>,
        orders: &'a [ShapedOrder],
    }
    Ok(Response::json(
        200,
        &Body {
            next: &page.next,
            orders: &page.items,
        },
    ))
}

fn create_order(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let mut new: NewOrder = json_body(ctx.req)?;
    if new.currency.is_none() {
        let record = app.catalog.by_id(member.tenant.id())?;
        let record = record.as_deref().unwrap_or(member.tenant.record());
        new.currency = Some(super::settings::default_currency(record));
    }
    let members = MemberCheck::new(app, member);
    let order = members.settle(workspace::create_order(
        &member.tenant,
        &writer(app, member)?,
        &new,
        &|user| members.is_member(user),
    ))?;
    order_event(app, ctx, member, "order.created", &order);
    if let Some(user_id) = new.assigned_to {
        notify_assigned(app, ctx, member, user_id, &order);
    }
    Ok(Response::json(201, &order))
}

fn get_order(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    Ok(Response::json(
        200,
        &workspace::get_order(&member.tenant, &reader(member), id)?,
    ))
}

fn update_order(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let patch: OrderPatch = json_body(ctx.req)?;
    let members = MemberCheck::new(app, member);
    let order = members.settle(workspace::update_order(
        &member.tenant,
        &writer(app, member)?,
        id,
        &patch,
        &|user| members.is_member(user),
    ))?;
    order_event(app, ctx, member, "order.updated", &order);
    if let Some(Some(user_id)) = patch.assigned_to {
        notify_assigned(app, ctx, member, user_id, &order);
    }
    Ok(Response::json(200, &order))
}

fn delete_order(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    workspace::delete_order(&member.tenant, &writer(app, member)?, id)?;
    publish(
        app,
        vec![orders_channel(member.tenant.id())],
        "order.deleted",
        json!({ "id": id }),
        except_socket(ctx.req),
    );
    emit(app, &member.tenant, "order.deleted", || json!({ "id": id }));
    Ok(Response::json(200, &json!({ "deleted": id })))
}

fn order_history(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    let id = id_param(ctx.params, "id")?;
    let events = workspace::order_history(&member.tenant, &reader(member), id)?;
    Ok(Response::json(200, &json!({ "history": events })))
}
