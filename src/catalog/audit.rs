//! The audit log: who did what, where, from which address. Append-only from the code's point of
//! view; read newest first with a keyset cursor. Rows name users, admins and tenants without
//! foreign keys, so the log outlives them. `at` is unix seconds.

use std::fmt;

use serde::Serialize;

use super::identity::IdentityError;
use super::sessions::unix_now;
use super::Catalog;
use crate::args;
use crate::store::{RowRef, StoreError, Value};

pub const MAX_AUDIT_LIMIT: usize = 200;
pub const DEFAULT_AUDIT_LIMIT: usize = 50;
const MAX_ACTION_LEN: usize = 100;
const MAX_DETAILS_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorType {
    User,
    Admin,
    System,
    Anonymous,
}

impl ActorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorType::User => "user",
            ActorType::Admin => "admin",
            ActorType::System => "system",
            ActorType::Anonymous => "anonymous",
        }
    }

    pub fn parse(s: &str) -> Option<ActorType> {
        match s {
            "user" => Some(ActorType::User),
            "admin" => Some(ActorType::Admin),
            "system" => Some(ActorType::System),
            "anonymous" => Some(ActorType::Anonymous),
            _ => None,
        }
    }
}

impl fmt::Display for ActorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event to record. Start from [`AuditEntry::new`] and set what applies.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// Unix seconds; `new` sets now.
    pub at: i64,
    pub actor_type: ActorType,
    /// A user id or an admin id, as `actor_type` says.
    pub actor_id: Option<i64>,
    /// Also for actors without an id, like the email of a failed login.
    pub actor_email: Option<String>,
    pub tenant_id: Option<String>,
    /// Dotted, of `[a-z0-9_.]`: `auth.login`, `member.added`.
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: serde_json::Value,
}

impl AuditEntry {
    pub fn new(actor_type: ActorType, action: &str) -> AuditEntry {
        AuditEntry {
            at: unix_now(),
            actor_type,
            actor_id: None,
            actor_email: None,
            tenant_id: None,
            action: action.to_string(),
            target_type: None,
            target_id: None,
            ip: None,
            user_agent: None,
            details: serde_json::json!({}),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor_type: ActorType,
    pub actor_id: Option<i64>,
    pub actor_email: Option<String>,
    pub tenant_id: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: serde_json::Value,
}

/// Whose events. User and admin ids are separate spaces, hence the two variants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditActor {
    User(i64),
    Admin(i64),
    /// Matched case-insensitively against `actor_email`.
    Email(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditFilter {
    pub tenant_id: Option<String>,
    pub actor: Option<AuditActor>,
    /// Exact, or every action under a prefix when it ends with `.` (`auth.`).
    pub action: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Keyset cursor: only rows older than this id (the last id of the previous page).
    pub before_id: Option<i64>,
    /// Clamped to 1..=200.
    pub limit: usize,
}

impl Default for AuditFilter {
    fn default() -> Self {
        AuditFilter {
            tenant_id: None,
            actor: None,
            action: None,
            since: None,
            before_id: None,
            limit: DEFAULT_AUDIT_LIMIT,
        }
    }
}

fn valid_action(action: &str) -> bool {
    !action.is_empty()
        && action.len() <= MAX_ACTION_LEN
        && action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

/// Client-supplied text (user agents, emails of failed logins) is kept, not refused: cut to
/// `max` characters with control characters dropped, so that the event is still recorded.
fn clip(value: Option<&str>, max: usize) -> Option<String> {
    let value = value?.trim();
    let clipped: String = value
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect();
    (!clipped.is_empty()).then_some(clipped)
}

/// The outer error is the store's; the inner one a row the schema should have prevented.
fn record_from_row(row: &dyn RowRef) -> Result<Result<AuditRecord, IdentityError>, StoreError> {
    let id: i64 = row.get(0)?;
    let corrupt = |message: String| IdentityError::Corrupt {
        table: "audit_log",
        id: id.to_string(),
        message,
    };
    let actor: String = row.get(2)?;
    let Some(actor_type) = ActorType::parse(&actor) else {
        return Ok(Err(corrupt(format!("unknown actor {actor:?}"))));
    };
    let details: String = row.get(11)?;
    let details = match serde_json::from_str(&details) {
        Ok(details) => details,
        Err(e) => return Ok(Err(corrupt(format!("details: {e}")))),
    };
    Ok(Ok(AuditRecord {
        id,
        at: row.get(1)?,
        actor_type,
        actor_id: row.get(3)?,
        actor_email: row.get(4)?,
        tenant_id: row.get(5)?,
        action: row.get(6)?,
        target_type: row.get(7)?,
        target_id: row.get(8)?,
        ip: row.get(9)?,
        user_agent: row.get(10)?,
        details,
    }))
}

impl Catalog {
    /// Appends one event; returns its id. `action` and `target_type` must be dotted names of
    /// `[a-z0-9_.]` (they come from code); free text is clipped, never refused.
    pub fn record_audit(&self, entry: &AuditEntry) -> Result<i64, IdentityError> {
        if !valid_action(&entry.action) {
            return Err(IdentityError::invalid(
                "action",
                "must be 1 to 100 characters of a-z, 0-9, '_' and '.'",
            ));
        }
        if let Some(target) = &entry.target_type {
            if !valid_action(target) {
                return Err(IdentityError::invalid(
                    "target_type",
                    "must be 1 to 100 characters of a-z, 0-9, '_' and '.'",
                ));
            }
        }
        let details = entry.details.to_string();
        if details.len() > MAX_DETAILS_BYTES {
            return Err(IdentityError::invalid("details", "must be at most 64 KiB"));
        }
        let email = clip(entry.actor_email.as_deref(), 254).map(|e| e.to_lowercase());
        // An audit entry changes nothing kept (see `write_uncounted_sql`).
        self.write_uncounted_sql(|db| {
            Ok(db.query_one(
                "INSERT INTO audit_log (at, actor_type, actor_id, actor_email, tenant_id, action,
                     target_type, target_id, ip, user_agent, details)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 RETURNING id",
                args![
                    entry.at,
                    entry.actor_type.as_str(),
                    entry.actor_id,
                    email,
                    clip(entry.tenant_id.as_deref(), 64),
                    &entry.action,
                    entry.target_type.as_deref(),
                    clip(entry.target_id.as_deref(), 200),
                    clip(entry.ip.as_deref(), 64),
                    clip(entry.user_agent.as_deref(), 512),
                    details,
                ],
                |row| row.get(0),
            )?)
        })
    }

    /// Matching events, newest first. For the next page pass the last id as `before_id`.
    pub fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, IdentityError> {
        let mut conditions: Vec<&str> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(tenant) = &filter.tenant_id {
            conditions.push("tenant_id = ?");
            values.push(Value::Text(tenant.clone()));
        }
        match &filter.actor {
            Some(AuditActor::User(id)) => {
                conditions.push("actor_type = 'user' AND actor_id = ?");
                values.push(Value::Integer(*id));
            }
            Some(AuditActor::Admin(id)) => {
                conditions.push("actor_type = 'admin' AND actor_id = ?");
                values.push(Value::Integer(*id));
            }
            Some(AuditActor::Email(email)) => {
                conditions.push("actor_email = ?");
                values.push(Value::Text(email.trim().to_lowercase()));
            }
            None => {}
        }
        if let Some(action) = &filter.action {
            if let Some(prefix) = action.strip_suffix('.') {
                // A range on the index: '/' is the byte after '.'.
                conditions.push("action >= ? AND action < ?");
                values.push(Value::Text(format!("{prefix}.")));
                values.push(Value::Text(format!("{prefix}/")));
            } else {
                conditions.push("action = ?");
                values.push(Value::Text(action.clone()));
            }
        }
        if let Some(since) = filter.since {
            conditions.push("at >= ?");
            values.push(Value::Integer(since));
        }
        if let Some(before) = filter.before_id {
            conditions.push("id < ?");
            values.push(Value::Integer(before));
        }
        // A literal, not a parameter: SQLite re-prepares a statement whose bound LIMIT changed.
        let limit = filter.limit.clamp(1, MAX_AUDIT_LIMIT);
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT id, at, actor_type, actor_id, actor_email, tenant_id, action, target_type,
                    target_id, ip, user_agent, details
             FROM audit_log {filter_sql} ORDER BY id DESC LIMIT {limit}"
        );
        self.read(|db| {
            db.query_map(&sql, &values, record_from_row)?
                .into_iter()
                .collect()
        })
    }
}
