//! The history of orders: an event per changed field, recorded in the writer's transaction,
//! and read back in the shape the reader may see.

use serde::Serialize;

use super::orders::{visible, OrderRow, Scope, View};
use super::{Reader, WorkspaceError};
use crate::args;
use crate::store::{Sql, StoreError};
use crate::tenancy::Tenant;

/// History event field names a simple view may see. `created` is the event
/// recorded when the order is made.
pub(super) const SIMPLE_EVENT_FIELDS: [&str; 4] = ["created", "title", "status", "assigned_to"];

/// One change of an order: who, when, which field, from what to what (text;
/// `None` for an empty nullable field).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OrderEvent {
    pub id: i64,
    pub order_id: i64,
    pub user_id: i64,
    pub at: String,
    pub field: String,
    pub from_value: Option<String>,
    pub to_value: Option<String>,
}

pub(super) fn record_event(
    db: &dyn Sql,
    order_id: i64,
    user_id: i64,
    at: &str,
    field: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO order_events (order_id, user_id, at, field, from_value, to_value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        args![order_id, user_id, at, field, from, to],
    )?;
    Ok(())
}

/// One changed field: name, old and new value as history text.
type Change = (&'static str, Option<String>, Option<String>);

pub(super) fn changes(old: &OrderRow, new: &OrderRow) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    let mut text = |field, a: &str, b: &str| {
        if a != b {
            out.push((field, Some(a.to_string()), Some(b.to_string())));
        }
    };
    text("title", &old.title, &new.title);
    text("customer_name", &old.customer_name, &new.customer_name);
    text("currency", &old.currency, &new.currency);
    text("status", old.status.as_str(), new.status.as_str());
    text("notes", &old.notes, &new.notes);
    let mut opt = |field, a: Option<String>, b: Option<String>| {
        if a != b {
            out.push((field, a, b));
        }
    };
    opt(
        "customer_email",
        old.customer_email.clone(),
        new.customer_email.clone(),
    );
    opt(
        "customer_phone",
        old.customer_phone.clone(),
        new.customer_phone.clone(),
    );
    opt(
        "amount_minor",
        Some(old.amount_minor.to_string()),
        Some(new.amount_minor.to_string()),
    );
    opt(
        "assigned_to",
        old.assigned_to.map(|u| u.to_string()),
        new.assigned_to.map(|u| u.to_string()),
    );
    out
}

/// The history of an order the reader sees, oldest first; a simple view
/// gets only the events of simple fields.
pub fn order_history(
    tenant: &Tenant,
    reader: &Reader,
    id: i64,
) -> Result<Vec<OrderEvent>, WorkspaceError> {
    tenant.read(|db| {
        let (_, view) = visible(db, &Scope::of(reader), id)?;
        let rows = db.query_map(
            "SELECT id, order_id, user_id, at, field, from_value, to_value
         FROM order_events WHERE order_id = ?1 ORDER BY id",
            args![id],
            |row| {
                Ok(OrderEvent {
                    id: row.get(0)?,
                    order_id: row.get(1)?,
                    user_id: row.get(2)?,
                    at: row.get(3)?,
                    field: row.get(4)?,
                    from_value: row.get(5)?,
                    to_value: row.get(6)?,
                })
            },
        )?;
        let mut out = Vec::new();
        for event in rows {
            if view == View::Full || SIMPLE_EVENT_FIELDS.contains(&event.field.as_str()) {
                out.push(event);
            }
        }
        Ok(out)
    })
}
