//! The workspace of a tenant, in that tenant's own file: chats with their
//! participants and messages ([`chats`]), orders with their history
//! ([`orders`]), the files attached to either ([`files`]), and the demo data
//! ([`demo`]). Every function takes the
//! `&Tenant` it works on and the `&Reader` it works for, and shapes what it
//! returns by the reader's permissions. No HTTP here: `error.rs` maps
//! [`WorkspaceError`] to statuses.
//!
//! Rules shared by the whole module:
//! - Something outside the reader's scope answers `NotFound`, exactly like
//!   something that does not exist; `Forbidden` only ever concerns an object
//!   the reader can already see (or a permission-gated action with no object).
//! - Every write is one `BEGIN IMMEDIATE` transaction (`Tenant::write`), and
//!   the visibility and permission checks run inside it, on the rows it
//!   changes.
//! - A write that names a user (a participant, an assignee) asks the caller's
//!   `is_member` (a catalog lookup) first, outside the transaction, so that no
//!   catalog query runs while the tenant's write lock is held.
//! - Validation errors name every offending field at once.

pub(crate) mod chats;
pub mod demo;
pub mod files;
pub mod orders;
mod orders_cursor;
mod orders_history;
mod orders_validate;

#[cfg(test)]
mod chats_tests;
#[cfg(test)]
mod orders_tests;
#[cfg(test)]
mod test_support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::db::DbError;

pub use chats::{
    add_participant, create_chat, delete_message, edit_message, external_message_problems,
    get_chat, list_chats, list_messages, mark_read, participants, post_external_message,
    post_message, remove_participant, update_chat, Chat, ChatKind, ChatSummary, ChatUpdate,
    ExternalAuthor, Message, NewChat, Participant, EXTERNAL_USER_ID,
};
pub use demo::{is_demo, mark_demo, seed_demo, DemoSummary};
pub use orders::{
    create_order, delete_order, get_order, list_orders, order_history, update_order, NewOrder,
    OrderEvent, OrderPatch, OrderQuery, OrderSort, OrderStatus, ShapedOrder, CURRENCIES,
    DEFAULT_CURRENCY,
};

/// Who is reading or writing: built by the API layer from the membership read
/// on this request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reader {
    pub user_id: i64,
    /// Permission names of `catalog::permissions::PERMISSIONS`; shared with the membership.
    pub permissions: Arc<BTreeSet<String>>,
    /// The tenant's admin role: every permission, and every chat.
    pub admin: bool,
    /// The tenant plan's limits on what this writer may add (none: unlimited).
    pub limits: Limits,
}

/// A plan's limits by name (`orders`, `chats`, ...); a name not present is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits(pub Arc<BTreeMap<String, i64>>);

impl Limits {
    /// Counts with `count_sql` inside the write's own transaction (`BEGIN IMMEDIATE`: no
    /// other writer runs between this count and the insert that follows it), and refuses
    /// when one more would pass the limit `name`.
    pub(crate) fn check(
        &self,
        tx: &dyn crate::store::Sql,
        name: &'static str,
        count_sql: &str,
    ) -> Result<(), WorkspaceError> {
        self.check_counted(name, |_| tx.query_one(count_sql, &[], |r| r.get(0)))
    }

    /// As `check`, with the usage counted by `count`, which is given the limit (it need
    /// not count past it). Call it inside the write's transaction.
    pub(crate) fn check_counted(
        &self,
        name: &'static str,
        count: impl FnOnce(i64) -> Result<i64, crate::store::StoreError>,
    ) -> Result<(), WorkspaceError> {
        let Some(&limit) = self.0.get(name) else {
            return Ok(());
        };
        let usage = count(limit)?;
        if usage >= limit {
            return Err(WorkspaceError::Quota {
                limit_name: name,
                limit,
                usage,
            });
        }
        Ok(())
    }
}

impl Reader {
    pub fn new<I, S>(user_id: i64, permissions: I, admin: bool) -> Reader
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Reader {
            user_id,
            permissions: Arc::new(permissions.into_iter().map(Into::into).collect()),
            admin,
            limits: Limits::default(),
        }
    }

    /// Whether the reader holds `permission` (an admin holds them all).
    pub fn can(&self, permission: &str) -> bool {
        self.admin || self.permissions.contains(permission)
    }
}

/// What a workspace call can fail with.
#[derive(Debug)]
pub enum WorkspaceError {
    /// Field name → what is wrong with it; every offending field is listed.
    Validation(BTreeMap<String, String>),
    /// Missing, or outside the reader's scope (the two are never told apart).
    NotFound,
    /// The reader can see the object (or needs no object) but lacks what the
    /// action requires: a permission name, or a rule such as
    /// [`chats::PARTICIPANTS_ONLY`].
    Forbidden(String),
    /// One more would pass the plan's limit `limit_name`.
    Quota {
        limit_name: &'static str,
        limit: i64,
        usage: i64,
    },
    Db(DbError),
    /// A statement through the store contract failed (see `store`).
    Store(crate::store::StoreError),
}

impl WorkspaceError {
    /// A validation error on one field.
    pub fn field(field: &str, message: &str) -> WorkspaceError {
        WorkspaceError::Validation(BTreeMap::from([(field.to_string(), message.to_string())]))
    }

    pub(crate) fn forbidden(what: &str) -> WorkspaceError {
        WorkspaceError::Forbidden(what.to_string())
    }
}

impl fmt::Display for WorkspaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkspaceError::Validation(fields) => {
                f.write_str("invalid input:")?;
                for (field, message) in fields {
                    write!(f, " {field}: {message};")?;
                }
                Ok(())
            }
            WorkspaceError::NotFound => f.write_str("not found"),
            WorkspaceError::Forbidden(what) => write!(f, "forbidden: {what}"),
            WorkspaceError::Quota {
                limit_name,
                limit,
                usage,
            } => write!(
                f,
                "the plan's limit {limit_name} of {limit} is reached ({usage})"
            ),
            WorkspaceError::Db(e) => e.fmt(f),
            WorkspaceError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for WorkspaceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkspaceError::Db(e) => Some(e),
            WorkspaceError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::store::StoreError> for WorkspaceError {
    fn from(e: crate::store::StoreError) -> Self {
        WorkspaceError::Store(e)
    }
}

impl From<DbError> for WorkspaceError {
    fn from(e: DbError) -> Self {
        WorkspaceError::Db(e)
    }
}

impl From<rusqlite::Error> for WorkspaceError {
    fn from(e: rusqlite::Error) -> Self {
        WorkspaceError::Db(DbError::Sqlite(e))
    }
}

/// One page of a keyset-paginated list. `next` is what to pass for the
/// following page (a message id for messages, an opaque cursor for orders);
/// `None` on the last page.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Page<T, C = String> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

pub const DEFAULT_PAGE_LIMIT: u32 = 50;
pub const MAX_PAGE_LIMIT: u32 = 100;

/// Collects validation problems so that one answer names them all.
#[derive(Debug, Default)]
pub(crate) struct Problems(BTreeMap<String, String>);

impl Problems {
    pub(crate) fn add(&mut self, field: &str, message: impl Into<String>) {
        // The first problem of a field is the one reported.
        self.0
            .entry(field.to_string())
            .or_insert_with(|| message.into());
    }

    pub(crate) fn check(self) -> Result<(), WorkspaceError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WorkspaceError::Validation(self.0))
        }
    }

    /// A page size: default when absent, otherwise 1..=MAX_PAGE_LIMIT.
    pub(crate) fn limit(&mut self, limit: Option<u32>) -> u32 {
        match limit {
            None => DEFAULT_PAGE_LIMIT,
            Some(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => n,
            Some(_) => {
                self.add("limit", format!("must be between 1 and {MAX_PAGE_LIMIT}"));
                DEFAULT_PAGE_LIMIT
            }
        }
    }

    /// A required single-line text: trimmed, then 1..=max characters.
    pub(crate) fn text(&mut self, field: &str, value: &str, max: usize) -> String {
        let value = value.trim();
        if value.is_empty() {
            self.add(field, "must not be empty");
        } else if value.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        } else {
            self.control_characters(field, value, false);
        }
        value.to_string()
    }

    /// The one rule for text a client sends: no control characters (NUL among them, which
    /// SQLite's `length()` stops at), except tab and newline in text that may run over several
    /// lines (message bodies, notes). Returns whether the text passed.
    pub(crate) fn control_characters(&mut self, field: &str, value: &str, multiline: bool) -> bool {
        // A carriage return too: Windows clients end lines with CR LF.
        let allowed = |c: char| multiline && matches!(c, '\t' | '\n' | '\r');
        if value.chars().any(|c| c.is_control() && !allowed(c)) {
            self.add(
                field,
                if multiline {
                    "must not contain control characters other than tab and line breaks"
                } else {
                    "must not contain control characters"
                },
            );
            return false;
        }
        true
    }
}

/// Now as RFC 3339 UTC with milliseconds, the form of every workspace
/// timestamp. (`db::now_rfc3339` has whole seconds; messages and keyset
/// sorting want finer order, with ids breaking the remaining ties.)
pub(crate) fn now() -> String {
    format_unix_ms(unix_ms_now())
}

pub(crate) fn unix_ms_now() -> i64 {
    // A clock before 1970 is a broken host; the epoch is a harmless stand-in.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Workspace timestamps carry milliseconds, so that keyset pages and history order well.
pub(crate) use crate::db::format_unix_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds_and_sort() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_unix_ms(1_709_210_096_007),
            "2024-02-29T12:34:56.007Z"
        );
        assert!(format_unix_ms(1_709_210_096_007) < format_unix_ms(1_709_210_096_010));
        assert_eq!(now().len(), "1970-01-01T00:00:00.000Z".len());
    }

    #[test]
    fn reader_permissions() {
        let r = Reader::new(1, ["orders_view"], false);
        assert!(r.can("orders_view"));
        assert!(!r.can("orders_view_all"));
        assert!(Reader::new(1, Vec::<String>::new(), true).can("orders_view_all"));
    }

    #[test]
    fn problems_list_every_field_once() {
        let mut p = Problems::default();
        assert_eq!(p.text("title", "  ", 10), "");
        p.text("name", &"x".repeat(11), 10);
        p.add("title", "second problem is not reported");
        assert_eq!(p.limit(Some(0)), DEFAULT_PAGE_LIMIT);
        match p.check() {
            Err(WorkspaceError::Validation(fields)) => {
                assert_eq!(
                    fields.keys().collect::<Vec<_>>(),
                    ["limit", "name", "title"]
                );
                assert_eq!(fields["title"], "must not be empty");
            }
            other => panic!("{other:?}"),
        }
    }
}
