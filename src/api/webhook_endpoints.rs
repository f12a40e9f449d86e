//! A tenant's outbound webhook endpoints over HTTP (`/api/webhook-endpoints...`, all needing
//! `settings_manage`) and their rows in the tenant's own file: the endpoints and the log of
//! delivery attempts. An id names an endpoint of the request's tenant only, since the query
//! runs on that tenant's file. What is delivered, and how, is in `webhooks_out`.

use std::collections::BTreeMap;

use crate::args;
use crate::store::{RowRef, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::catalog::unix_now;
use crate::db::format_unix_ms;
use crate::error::Error;
use crate::http::{Response, Router};
use crate::tenancy::Tenant;

use super::members::member_entry;
use super::params::query_number;
use super::webhooks_guard::check_url;
use super::webhooks_out::{new_secret, EVENTS};
use super::{id_param, json_body, App, Member, RequestCtx, Route};

/// Endpoints a tenant may hold: each event is one job per endpoint.
pub(super) const MAX_ENDPOINTS: i64 = 50;
/// Delivery attempts kept per endpoint; older ones are dropped as new ones come.
const KEPT_DELIVERIES: i64 = 1000;

pub(super) fn routes(r: &mut Router<Route>) {
    r.add("GET", "/api/webhook-endpoints", Route::Tenant(list));
    r.add("POST", "/api/webhook-endpoints", Route::Tenant(create));
    r.add("GET", "/api/webhook-endpoints/{id}", Route::Tenant(show));
    r.add(
        "PATCH",
        "/api/webhook-endpoints/{id}",
        Route::Tenant(update),
    );
    r.add(
        "DELETE",
        "/api/webhook-endpoints/{id}",
        Route::Tenant(delete),
    );
    r.add(
        "GET",
        "/api/webhook-endpoints/{id}/deliveries",
        Route::Tenant(deliveries),
    );
    r.add(
        "POST",
        "/api/webhook-endpoints/{id}/rotate-secret",
        Route::Tenant(rotate_secret),
    );
}

/// One endpoint as stored.
pub(super) struct Endpoint {
    pub id: i64,
    pub url: String,
    pub description: String,
    pub events: Vec<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failures: i64,
    pub failing_since: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

impl Endpoint {
    /// Whether `event` is one this endpoint asked for.
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == event)
    }

    /// The secrets that sign a delivery at `now`: the current one, and the one before a
    /// rotation while its grace lasts.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(old), Some(until)) = (&self.previous_secret, self.previous_secret_until) {
            if now < until {
                secrets.push(old);
            }
        }
        secrets
    }

    /// What the API shows: never a secret (that is answered once, when made).
    fn json(&self, now: i64) -> Value {
        let rotating = self
            .previous_secret_until
            .filter(|&until| self.previous_secret.is_some() && now < until);
        json!({
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "events": self.events,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "consecutive_failures": self.failures,
            "failing_since": self.failing_since.map(|s| format_unix_ms(s * 1000)),
            "previous_secret_expires_at": rotating.map(|s| format_unix_ms(s * 1000)),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

const COLUMNS: &str = "id, url, description, events, secret, previous_secret, \
     previous_secret_until, enabled, disabled_reason, failures, failing_since, created_at, \
     updated_at";

fn endpoint_row(row: &dyn RowRef) -> Result<Endpoint, StoreError> {
    let events: String = row.get(3)?;
    Ok(Endpoint {
        id: row.get(0)?,
        url: row.get(1)?,
        description: row.get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        secret: row.get(4)?,
        previous_secret: row.get(5)?,
        previous_secret_until: row.get(6)?,
        enabled: row.get::<bool>(7)?,
        disabled_reason: row.get(8)?,
        failures: row.get(9)?,
        failing_since: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
    })
}

/// Every endpoint of the tenant, oldest first.
pub(super) fn all_endpoints(tenant: &Tenant) -> Result<Vec<Endpoint>, Error> {
    tenant.read(|db| {
        Ok(db.query_map(
            &format!("SELECT {COLUMNS} FROM webhook_endpoints ORDER BY id"),
            &[],
            endpoint_row,
        )?)
    })
}

pub(super) fn endpoint(tenant: &Tenant, id: i64) -> Result<Option<Endpoint>, Error> {
    tenant.read(|db| {
        Ok(db.query_row(
            &format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = ?1"),
            args![id],
            endpoint_row,
        )?)
    })
}

/// One delivery attempt, as the log keeps it.
pub(super) struct Delivery<'a> {
    pub endpoint_id: i64,
    pub event: &'a str,
    pub webhook_id: &'a str,
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    pub response_excerpt: &'a str,
    pub error: Option<&'a str>,
}

/// What a recorded attempt did to its endpoint.
pub(super) enum AfterAttempt {
    /// The endpoint was deleted meanwhile: nothing recorded.
    Gone,
    Kept,
    /// This failure disabled the endpoint, for this reason.
    Disabled(String),
}

/// Records an attempt and, in the same transaction, the endpoint's run of failures: a success
/// ends it; a failure that makes it `max_failures` long, or older than `max_failing_secs`,
/// disables the endpoint.
pub(super) fn record_attempt(
    tenant: &Tenant,
    delivery: &Delivery,
    now: i64,
    max_failures: u32,
    max_failing_secs: i64,
) -> Result<AfterAttempt, Error> {
    let ok = delivery
        .status_code
        .is_some_and(|s| (200..300).contains(&s));
    tenant.write_sql(|db| {
        let found: Option<(i64, Option<i64>, bool)> = db.query_row(
            "SELECT failures, failing_since, enabled FROM webhook_endpoints WHERE id = ?1",
            args![delivery.endpoint_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let Some((failures, failing_since, enabled)) = found else {
            return Ok(AfterAttempt::Gone);
        };
        db.execute(
            "INSERT INTO webhook_deliveries (endpoint_id, event, webhook_id, attempt, \
             status_code, duration_ms, response_excerpt, error, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            args![
                delivery.endpoint_id,
                delivery.event,
                delivery.webhook_id,
                i64::from(delivery.attempt),
                delivery.status_code.map(i64::from),
                delivery.duration_ms as i64,
                delivery.response_excerpt,
                delivery.error,
                format_unix_ms(now * 1000),
            ],
        )?;
        db.execute(
            "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1 AND id <= \
             (SELECT id FROM webhook_deliveries WHERE endpoint_id = ?1 \
              ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            args![delivery.endpoint_id, KEPT_DELIVERIES],
        )?;
        if ok {
            db.execute(
                "UPDATE webhook_endpoints SET failures = 0, failing_since = NULL WHERE id = ?1",
                args![delivery.endpoint_id],
            )?;
            return Ok(AfterAttempt::Kept);
        }
        let failures = failures + 1;
        let since = failing_since.unwrap_or(now);
        let reason = if !enabled {
            None
        } else if failures >= i64::from(max_failures) {
            Some(format!("{failures} failed delivery attempts in a row"))
        } else if now - since >= max_failing_secs {
            Some(format!(
                "failing without a success for {} hours",
                (now - since) / 3600
            ))
        } else {
            None
        };
        db.execute(
            "UPDATE webhook_endpoints SET failures = ?2, failing_since = ?3, \
             enabled = enabled AND ?4 IS NULL, disabled_reason = COALESCE(?4, disabled_reason), \
             updated_at = CASE WHEN ?4 IS NULL THEN updated_at ELSE ?5 END WHERE id = ?1",
            args![
                delivery.endpoint_id,
                failures,
                since,
                reason.as_deref(),
                format_unix_ms(now * 1000)
            ],
        )?;
        Ok(reason.map_or(AfterAttempt::Kept, AfterAttempt::Disabled))
    })
}

/// The fields of a POST or PATCH, checked together so that every bad one is named at once.
#[derive(Deserialize)]
struct Fields {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
}

fn check(app: &App, fields: &Fields) -> Result<Option<String>, Error> {
    let mut bad = BTreeMap::new();
    if let Some(url) = &fields.url {
        if let Err(e) = check_url(url.trim(), app.webhooks.config.allow_private) {
            bad.insert("url".to_string(), e);
        }
    }
    let events = match &fields.events {
        None => None,
        Some(events) if events.is_empty() => {
            bad.insert(
                "events".into(),
                "must name at least one event, or \"*\"".into(),
            );
            None
        }
        Some(events) => match events
            .iter()
            .find(|e| *e != "*" && !EVENTS.contains(&e.as_str()))
        {
            Some(unknown) => {
                bad.insert(
                    "events".into(),
                    format!(
                        "unknown event {unknown:?}; known: \"*\", {}",
                        EVENTS.join(", ")
                    ),
                );
                None
            }
            None => {
                let mut events = events.clone();
                events.sort();
                events.dedup();
                Some(serde_json::to_string(&events).unwrap_or_default())
            }
        },
    };
    if fields
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 500)
    {
        bad.insert(
            "description".into(),
            "must be at most 500 characters".into(),
        );
    }
    if bad.is_empty() {
        Ok(events)
    } else {
        Err(Error::Validation(bad))
    }
}

fn now_text(now: i64) -> String {
    format_unix_ms(now * 1000)
}

fn audit(app: &App, ctx: &RequestCtx, member: &Member, action: &str, id: i64, details: Value) {
    let mut entry = member_entry(app, ctx, member, action);
    entry.target_type = Some("webhook_endpoint".into());
    entry.target_id = Some(id.to_string());
    entry.details = details;
    app.audit(entry);
}

fn found(member: &Member, ctx: &RequestCtx) -> Result<Endpoint, Error> {
    let id = id_param(ctx.params, "id")?;
    endpoint(&member.tenant, id)?.ok_or(Error::NotFound)
}

fn list(_app: &App, _ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("settings_manage")?;
    let now = unix_now();
    let endpoints: Vec<Value> = all_endpoints(&member.tenant)?
        .iter()
        .map(|e| e.json(now))
        .collect();
    Ok(Response::json(
        200,
        &json!({ "endpoints": endpoints, "events": EVENTS }),
    ))
}

fn create(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("settings_manage")?;
    let plan = super::plans::writable(app, member.tenant.id())?;
    if !plan.feature("webhooks") {
        return Err(Error::FeatureNotInPlan("webhooks"));
    }
    let fields: Fields = json_body(ctx.req)?;
    let mut missing = BTreeMap::new();
    if fields.url.is_none() {
        missing.insert("url".to_string(), "is required".to_string());
    }
    if fields.events.is_none() {
        missing.insert("events".to_string(), "is required".to_string());
    }
    if !missing.is_empty() {
        return Err(Error::Validation(missing));
    }
    let events = check(app, &fields)?.unwrap_or_default();
    let url = fields.url.unwrap_or_default().trim().to_string();
    let secret = new_secret();
    let now = unix_now();
    let id = member.tenant.write_sql(|db| -> Result<i64, Error> {
        let count: i64 =
            db.query_one("SELECT count(*) FROM webhook_endpoints", &[], |r| r.get(0))?;
        plan.check("webhook_endpoints", count, 1)
            .map_err(super::plans::quota_error)?;
        if count >= MAX_ENDPOINTS {
            return Err(Error::Conflict {
                code: "too_many_endpoints",
                message: format!("a company holds at most {MAX_ENDPOINTS} webhook endpoints"),
            });
        }
        Ok(db.query_one(
            "INSERT INTO webhook_endpoints (url, description, events, secret, enabled, \
             created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING id",
            args![
                &url,
                fields.description.as_deref().unwrap_or_default(),
                &events,
                &secret,
                fields.enabled.unwrap_or(true),
                now_text(now),
            ],
            |r| r.get(0),
        )?)
    })?;
    let created = endpoint(&member.tenant, id)?.ok_or(Error::NotFound)?;
    audit(
        app,
        ctx,
        member,
        "webhook_endpoint.created",
        id,
        json!({ "url": created.url, "events": created.events }),
    );
    let mut body = created.json(now);
    body["secret"] = Value::String(secret);
    Ok(Response::json(201, &body))
}

fn show(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("settings_manage")?;
    Ok(Response::json(200, &found(member, ctx)?.json(unix_now())))
}

fn update(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("settings_manage")?;
    super::plans::writable(app, member.tenant.id())?;
    let id = found(member, ctx)?.id;
    let fields: Fields = json_body(ctx.req)?;
    let events = check(app, &fields)?;
    let now = unix_now();
    member.tenant.write_sql(|db| -> Result<(), Error> {
        // Enabling again starts the run of failures over; disabling by hand gives no reason.
        db.execute(
            "UPDATE webhook_endpoints SET url = COALESCE(?2, url), events = COALESCE(?3, events), \
             description = COALESCE(?4, description), \
             enabled = COALESCE(?5, enabled), \
             disabled_reason = CASE WHEN ?5 IS NULL THEN disabled_reason ELSE NULL END, \
             failures = CASE WHEN ?5 = 1 THEN 0 ELSE failures END, \
             failing_since = CASE WHEN ?5 = 1 THEN NULL ELSE failing_since END, \
             updated_at = ?6 WHERE id = ?1",
            args![
                id,
                fields.url.as_deref().map(str::trim),
                events.as_deref(),
                fields.description.as_deref(),
                fields.enabled,
                now_text(now),
            ],
        )?;
        Ok(())
    })?;
    let updated = endpoint(&member.tenant, id)?.ok_or(Error::NotFound)?;
    audit(
        app,
        ctx,
        member,
        "webhook_endpoint.updated",
        id,
        json!({ "url": updated.url, "events": updated.events, "enabled": updated.enabled }),
    );
    Ok(Response::json(200, &updated.json(now)))
}

fn delete(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("settings_manage")?;
    super::plans::writable(app, member.tenant.id())?;
    let gone = found(member, ctx)?;
    member.tenant.write_sql(|db| -> Result<(), Error> {
        db.execute(
            "DELETE FROM webhook_endpoints WHERE id = ?1",
            args![gone.id],
        )?;
        Ok(())
    })?;
    audit(
        app,
        ctx,
        member,
        "webhook_endpoint.deleted",
        gone.id,
        json!({ "url": gone.url }),
    );
    Ok(Response::json(200, &json!({ "deleted": gone.id })))
}

fn deliveries(_app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("settings_manage")?;
    let id = found(member, ctx)?.id;
    let number = |name: &str| query_number::<i64>(ctx.req, name);
    let limit = match number("limit")? {
        None => 50,
        Some(n) if (1..=200).contains(&n) => n,
        Some(_) => return Err(Error::validation("limit", "must be 1 to 200")),
    };
    let before = number("before")?.unwrap_or(i64::MAX);
    let items: Vec<Value> = member.tenant.read(|db| -> Result<_, Error> {
        Ok(db.query_map(
            "SELECT id, event, webhook_id, attempt, status_code, duration_ms, response_excerpt, \
             error, at FROM webhook_deliveries WHERE endpoint_id = ?1 AND id < ?2 \
             ORDER BY id DESC LIMIT ?3",
            args![id, before, limit],
            |r| {
                Ok(json!({
                    "id": r.get::<i64>(0)?,
                    "event": r.get::<String>(1)?,
                    "webhook_id": r.get::<String>(2)?,
                    "attempt": r.get::<i64>(3)?,
                    "status_code": r.get::<Option<i64>>(4)?,
                    "duration_ms": r.get::<i64>(5)?,
                    "response_excerpt": r.get::<String>(6)?,
                    "error": r.get::<Option<String>>(7)?,
                    "at": r.get::<String>(8)?,
                }))
            },
        )?)
    })?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|d| d["id"].clone()))
        .flatten();
    Ok(Response::json(
        200,
        &json!({ "deliveries": items, "next": next }),
    ))
}

fn rotate_secret(app: &App, ctx: &RequestCtx, member: &Member) -> Result<Response, Error> {
    member.require("settings_manage")?;
    super::plans::writable(app, member.tenant.id())?;
    let id = found(member, ctx)?.id;
    let secret = new_secret();
    let now = unix_now();
    let until = now + app.webhooks.config.rotation_grace.as_secs() as i64;
    member.tenant.write_sql(|db| -> Result<(), Error> {
        db.execute(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = ?2, \
             secret = ?3, updated_at = ?4 WHERE id = ?1",
            args![id, until, &secret, now_text(now)],
        )?;
        Ok(())
    })?;
    audit(
        app,
        ctx,
        member,
        "webhook_endpoint.secret_rotated",
        id,
        json!({ "previous_secret_expires_at": now_text(until) }),
    );
    let rotated = endpoint(&member.tenant, id)?.ok_or(Error::NotFound)?;
    let mut body = rotated.json(now);
    body["secret"] = Value::String(secret);
    Ok(Response::json(200, &body))
}
