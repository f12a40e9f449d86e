//! Orders of a tenant: their per-tenant numbers (`ORD-000123`), the status
//! workflow, the history of every change, and the shape each reader gets.
//!
//! Visibility is decided per order. Four permissions grant it, in two scopes
//! ("own": orders the reader created or is assigned to; "all") and two field
//! sets ([`SIMPLE_FIELDS`]; full = every field):
//!
//! | permission               | scope | fields |
//! |--------------------------|-------|--------|
//! | `orders_view`            | own   | full   |
//! | `orders_view_all`, admin | all   | full   |
//! | `orders_simple_view`     | own   | simple |
//! | `orders_simple_view_all` | all   | simple |
//!
//! Held together they give, for each order, the widest scope and the fullest
//! fields any of them grants for that order: `orders_view` +
//! `orders_simple_view_all` lists every order, full for own ones and simple
//! for the others. An order outside every scope is `NotFound`, like a missing
//! one; a list without any of the four is `Forbidden("orders_view")`.
//!
//! Writes: `orders_create`; `orders_edit` and `orders_delete` act only on
//! orders the reader sees (others are `NotFound`). Editing needs to see the
//! order at all for the simple fields (title, status, assignee), and full
//! fields of that order to change customer, amount, currency or notes
//! (`Forbidden` naming the permission that would give them). Text search and
//! history follow the same per-order rule: a customer name only matches where
//! the reader sees customer names, and a simple view's history holds only
//! events of simple fields.
//!
//! Beside this file: the field checks and currencies (`orders_validate`), list
//! cursors (`orders_cursor`) and the history (`orders_history`). Their SQL goes through the
//! store contract (`store`).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use super::orders_cursor::{decode_cursor, encode_cursor};
use super::orders_history::{changes, record_event};
use super::orders_validate::{
    check_amount, check_assignee, check_currency, check_customer_email, check_notes, check_phone,
};
use super::{now, Page, Problems, Reader, WorkspaceError};
use crate::args;
use crate::store::{RowRef, Sql, StoreError, Value as SqlValue};
use crate::tenancy::Tenant;

pub use super::orders_history::{order_history, OrderEvent};
pub use super::orders_validate::{valid_phone, CURRENCIES, DEFAULT_CURRENCY};

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_NOTES_CHARS: usize = 10_000;
pub const MAX_PHONE_CHARS: usize = 32;
/// Below 2^53, so an amount survives JSON clients that read numbers as
/// doubles.
pub const MAX_AMOUNT_MINOR: i64 = 999_999_999_999_999;

/// The fields of a simple view; a full view has these and [`FULL_ONLY_FIELDS`].
pub const SIMPLE_FIELDS: [&str; 7] = [
    "id",
    "number",
    "title",
    "status",
    "assigned_to",
    "created_at",
    "updated_at",
];
pub const FULL_ONLY_FIELDS: [&str; 7] = [
    "customer_name",
    "customer_email",
    "customer_phone",
    "amount_minor",
    "currency",
    "notes",
    "created_by",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    New,
    Confirmed,
    InProgress,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::New,
        OrderStatus::Confirmed,
        OrderStatus::InProgress,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "new",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::InProgress => "in_progress",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The workflow: one step forward along new → confirmed → in_progress →
    /// shipped → delivered, or to cancelled from any state before delivered.
    /// Staying put is no change, not a transition.
    pub fn can_become(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (New, Confirmed)
                | (Confirmed, InProgress)
                | (InProgress, Shipped)
                | (Shipped, Delivered)
                | (New | Confirmed | InProgress | Shipped, Cancelled)
        )
    }
}

/// `ORD-000123`: six digits at least, more when the numbers get there.
pub fn format_order_number(number: i64) -> String {
    format!("ORD-{number:06}")
}

/// `ORD-000123`, `ord-123` or `123` to 123.
pub fn parse_order_number(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits = match s.get(..4) {
        Some(prefix) if prefix.eq_ignore_ascii_case("ORD-") => &s[4..],
        _ => s,
    };
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0)
}

/// Input of [`create_order`]. Orders start as `new`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NewOrder {
    pub title: String,
    pub customer_name: String,
    #[serde(default)]
    pub customer_email: Option<String>,
    #[serde(default)]
    pub customer_phone: Option<String>,
    pub amount_minor: i64,
    /// Absent: the API fills in the tenant's default currency.
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub assigned_to: Option<i64>,
    #[serde(default)]
    pub notes: Option<String>,
}

/// Input of [`update_order`]: absent fields are left alone. For the nullable
/// ones, JSON `null` (or an empty string) clears and absent keeps.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OrderPatch {
    pub title: Option<String>,
    pub customer_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub customer_email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub customer_phone: Option<Option<String>>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub status: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub assigned_to: Option<Option<i64>>,
    pub notes: Option<String>,
}

/// A key that is present, `null` included, is `Some`; `default` covers absent.
pub(crate) fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl OrderPatch {
    /// Whether the patch touches a field only a full view may change.
    fn touches_full_fields(&self) -> bool {
        self.customer_name.is_some()
            || self.customer_email.is_some()
            || self.customer_phone.is_some()
            || self.amount_minor.is_some()
            || self.currency.is_some()
            || self.notes.is_some()
    }
}

/// Sort orders of [`list_orders`]; `-` means descending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderSort {
    CreatedAt,
    CreatedAtDesc,
    UpdatedAt,
    UpdatedAtDesc,
    Number,
    NumberDesc,
}

impl OrderSort {
    pub const DEFAULT: OrderSort = OrderSort::CreatedAtDesc;

    pub fn parse(s: &str) -> Option<OrderSort> {
        Some(match s {
            "created_at" => OrderSort::CreatedAt,
            "-created_at" => OrderSort::CreatedAtDesc,
            "updated_at" => OrderSort::UpdatedAt,
            "-updated_at" => OrderSort::UpdatedAtDesc,
            "number" => OrderSort::Number,
            "-number" => OrderSort::NumberDesc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderSort::CreatedAt => "created_at",
            OrderSort::CreatedAtDesc => "-created_at",
            OrderSort::UpdatedAt => "updated_at",
            OrderSort::UpdatedAtDesc => "-updated_at",
            OrderSort::Number => "number",
            OrderSort::NumberDesc => "-number",
        }
    }

    pub(super) fn column(self) -> &'static str {
        match self {
            OrderSort::CreatedAt | OrderSort::CreatedAtDesc => "created_at",
            OrderSort::UpdatedAt | OrderSort::UpdatedAtDesc => "updated_at",
            OrderSort::Number | OrderSort::NumberDesc => "number",
        }
    }

    fn descending(self) -> bool {
        matches!(
            self,
            OrderSort::CreatedAtDesc | OrderSort::UpdatedAtDesc | OrderSort::NumberDesc
        )
    }
}

/// Filters and paging of [`list_orders`]. Text fields so that bad values are
/// reported as validation errors with the others.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OrderQuery {
    pub status: Option<String>,
    pub assigned_to: Option<i64>,
    /// Matches the number (`ORD-000012` or `12`), the title, and the customer
    /// name where the reader sees customer names.
    pub q: Option<String>,
    /// `created_at`, `-created_at` (default), `updated_at`, `-updated_at`,
    /// `number`, `-number`.
    pub sort: Option<String>,
    /// 1..=100, default 50.
    pub limit: Option<u32>,
    /// The `next` of the previous page, with the same sort.
    pub cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct OrderRow {
    pub(super) id: i64,
    pub(super) number: i64,
    pub(super) title: String,
    pub(super) customer_name: String,
    pub(super) customer_email: Option<String>,
    pub(super) customer_phone: Option<String>,
    pub(super) amount_minor: i64,
    pub(super) currency: String,
    pub(super) status: OrderStatus,
    pub(super) assigned_to: Option<i64>,
    pub(super) created_by: i64,
    pub(super) notes: String,
    pub(super) created_at: String,
    pub(super) updated_at: String,
}

const ORDER_COLUMNS: &str = "id, number, title, customer_name, customer_email, customer_phone, \
     amount_minor, currency, status, assigned_to, created_by, notes, created_at, updated_at";

fn order_from_row(row: &dyn RowRef) -> Result<OrderRow, StoreError> {
    let status: String = row.get(8)?;
    Ok(OrderRow {
        id: row.get(0)?,
        number: row.get(1)?,
        title: row.get(2)?,
        customer_name: row.get(3)?,
        customer_email: row.get(4)?,
        customer_phone: row.get(5)?,
        amount_minor: row.get(6)?,
        currency: row.get(7)?,
        // The CHECK constraint allows only known statuses.
        status: OrderStatus::parse(&status).unwrap_or(OrderStatus::New),
        assigned_to: row.get(9)?,
        created_by: row.get(10)?,
        notes: row.get(11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum View {
    Simple,
    Full,
}

/// What the reader's permissions grant over orders.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scope {
    user_id: i64,
    full_all: bool,
    full_own: bool,
    simple_all: bool,
    simple_own: bool,
}

impl Scope {
    pub(super) fn of(reader: &Reader) -> Scope {
        Scope {
            user_id: reader.user_id,
            full_all: reader.can("orders_view_all"),
            full_own: reader.can("orders_view"),
            simple_all: reader.can("orders_simple_view_all"),
            simple_own: reader.can("orders_simple_view"),
        }
    }

    fn any(&self) -> bool {
        self.full_all || self.full_own || self.simple_all || self.simple_own
    }

    fn own(&self, order: &OrderRow) -> bool {
        order.created_by == self.user_id || order.assigned_to == Some(self.user_id)
    }

    /// The fullest view any permission grants for this order, if any does.
    fn view(&self, order: &OrderRow) -> Option<View> {
        let own = self.own(order);
        if self.full_all || (self.full_own && own) {
            Some(View::Full)
        } else if self.simple_all || (self.simple_own && own) {
            Some(View::Simple)
        } else {
            None
        }
    }

    /// SQL condition (on `orders`) for "the reader sees this order"; binds
    /// the user id as `?1`.
    fn visible_sql(&self) -> &'static str {
        if self.full_all || self.simple_all {
            "1"
        } else if self.full_own || self.simple_own {
            "(created_by = ?1 OR assigned_to = ?1)"
        } else {
            "0"
        }
    }

    /// SQL condition for "the reader sees this order's full fields".
    fn full_sql(&self) -> &'static str {
        if self.full_all {
            "1"
        } else if self.full_own {
            "(created_by = ?1 OR assigned_to = ?1)"
        } else {
            "0"
        }
    }

    /// The permission that would show the full fields of this order.
    fn full_permission(&self, order: &OrderRow) -> &'static str {
        if self.own(order) {
            "orders_view"
        } else {
            "orders_view_all"
        }
    }
}

/// The order as this view shows it.
fn shape(order: &OrderRow, view: View) -> Value {
    serde_json::to_value(Shaped(order, view)).unwrap_or(Value::Null)
}

/// An order as one reader sees it, serialized straight to JSON: a page of fifty builds no
/// intermediate maps. The keys come in the order serde_json's own maps would give them
/// (alphabetical), so single orders and pages read alike.
struct Shaped<'a>(&'a OrderRow, View);

impl Serialize for Shaped<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Shaped(o, view) = *self;
        let full = view == View::Full;
        let mut m = s.serialize_map(Some(if full { 14 } else { 7 }))?;
        if full {
            m.serialize_entry("amount_minor", &o.amount_minor)?;
        }
        m.serialize_entry("assigned_to", &o.assigned_to)?;
        m.serialize_entry("created_at", &o.created_at)?;
        if full {
            m.serialize_entry("created_by", &o.created_by)?;
            m.serialize_entry("currency", &o.currency)?;
            m.serialize_entry("customer_email", &o.customer_email)?;
            m.serialize_entry("customer_name", &o.customer_name)?;
            m.serialize_entry("customer_phone", &o.customer_phone)?;
        }
        m.serialize_entry("id", &o.id)?;
        if full {
            m.serialize_entry("notes", &o.notes)?;
        }
        m.serialize_entry("number", &format_order_number(o.number))?;
        m.serialize_entry("status", o.status.as_str())?;
        m.serialize_entry("title", &o.title)?;
        m.serialize_entry("updated_at", &o.updated_at)?;
        m.end()
    }
}

/// One order of a page, as its reader sees it.
#[derive(Debug)]
pub struct ShapedOrder {
    order: OrderRow,
    view: View,
}

impl Serialize for ShapedOrder {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Shaped(&self.order, self.view).serialize(s)
    }
}

/// After a write: the order as the writer now sees it, or only its id and
/// number when the write took it out of their scope (an order created
/// without a view permission, an edit that reassigned it away).
fn shape_after_write(scope: &Scope, order: &OrderRow) -> Value {
    match scope.view(order) {
        Some(view) => shape(order, view),
        None => json!({"id": order.id, "number": format_order_number(order.number)}),
    }
}

fn load(db: &dyn Sql, id: i64) -> Result<Option<OrderRow>, StoreError> {
    db.query_row(
        &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"),
        args![id],
        order_from_row,
    )
}

/// The order and the reader's view of it; `NotFound` if missing or hidden.
pub(super) fn visible(
    conn: &dyn Sql,
    scope: &Scope,
    id: i64,
) -> Result<(OrderRow, View), WorkspaceError> {
    let order = load(conn, id)?.ok_or(WorkspaceError::NotFound)?;
    let view = scope.view(&order).ok_or(WorkspaceError::NotFound)?;
    Ok((order, view))
}

/// `%`, `_` and the escape itself taken literally in a LIKE pattern.
fn like_contains(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 2);
    out.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The orders the reader sees, shaped per order, one keyset page at a time.
/// The cursor holds the sort key and id of the last row, and the next page
/// starts strictly after that pair, so paging returns every row exactly
/// once, whatever is inserted meanwhile, for the immutable keys (`number`,
/// `created_at`). Under `updated_at` an order edited while paging moves, as
/// with any keyset.
pub fn list_orders(
    tenant: &Tenant,
    reader: &Reader,
    query: &OrderQuery,
) -> Result<Page<ShapedOrder>, WorkspaceError> {
    let scope = Scope::of(reader);
    if !scope.any() {
        return Err(WorkspaceError::forbidden("orders_view"));
    }
    let mut problems = Problems::default();
    let limit = problems.limit(query.limit);
    let sort = match query.sort.as_deref() {
        None | Some("") => OrderSort::DEFAULT,
        Some(s) => OrderSort::parse(s).unwrap_or_else(|| {
            problems.add(
                "sort",
                "must be one of created_at, -created_at, updated_at, -updated_at, number, -number",
            );
            OrderSort::DEFAULT
        }),
    };
    let status = query.status.as_deref().and_then(|s| {
        let parsed = OrderStatus::parse(s);
        if parsed.is_none() {
            problems.add("status", "unknown status");
        }
        parsed
    });
    let after = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .and_then(|c| decode_cursor(&mut problems, sort, c));
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.chars().count() > 200) {
        problems.add("q", "must be at most 200 characters");
    }
    problems.check()?;

    // ?1 is the reader (used by the scope conditions); the rest are numbered
    // as they are pushed.
    let mut args: Vec<SqlValue> = vec![SqlValue::Integer(reader.user_id)];
    let mut arg = |v: SqlValue| {
        args.push(v);
        format!("?{}", args.len())
    };
    let mut sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE {}",
        scope.visible_sql()
    );
    if let Some(status) = status {
        sql += &format!(
            " AND status = {}",
            arg(SqlValue::Text(status.as_str().into()))
        );
    }
    if let Some(user) = query.assigned_to {
        sql += &format!(" AND assigned_to = {}", arg(SqlValue::Integer(user)));
    }
    if let Some(q) = q {
        let pattern = arg(SqlValue::Text(like_contains(q)));
        let number = parse_order_number(q).unwrap_or(0);
        let number = arg(SqlValue::Integer(number));
        sql += &format!(
            " AND (number = {number} OR title LIKE {pattern} ESCAPE '\\'
                   OR ({} AND customer_name LIKE {pattern} ESCAPE '\\'))",
            scope.full_sql()
        );
    }
    let column = sort.column();
    let (cmp, dir) = if sort.descending() {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((key, id)) = after {
        let key = arg(key);
        let id = arg(SqlValue::Integer(id));
        sql += &format!(" AND ({column}, id) {cmp} ({key}, {id})");
    }
    // A literal, not a parameter: SQLite plans a LIMIT from its bound value and then
    // re-prepares the statement whenever that parameter is bound again, which here was on
    // every page. `limit` is a checked 1..=100.
    let fetch = i64::from(limit) + 1;
    sql += &format!(" ORDER BY {column} {dir}, id {dir} LIMIT {fetch}");

    tenant.read(|db| {
        // ?1, the reader, goes unused when the scope is everything; with no other parameter
        // after it the statement has none to bind. (With others after it, ?1 is only unbound
        // by position, which SQLite allows.)
        if !sql.contains('?') {
            args.clear();
        }
        // The text varies with the scope, filters, sort and page size: common pages reuse theirs
        // (the local backend's statement cache).
        let mut rows = db.query_map(&sql, &args, order_from_row)?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|o| encode_cursor(sort, o))
        } else {
            None
        };
        let items = rows
            .into_iter()
            .filter_map(|order| scope.view(&order).map(|view| ShapedOrder { order, view }))
            .collect();
        Ok(Page { items, next })
    })
}

/// One order, shaped for the reader; `NotFound` if missing or out of scope.
pub fn get_order(tenant: &Tenant, reader: &Reader, id: i64) -> Result<Value, WorkspaceError> {
    tenant.read(|db| {
        let (order, view) = visible(db, &Scope::of(reader), id)?;
        Ok(shape(&order, view))
    })
}

/// Takes the next order number inside the caller's IMMEDIATE transaction:
/// the write lock makes it unique and gap-free among committed orders, and a
/// rolled-back create gives its number back.
fn next_number(db: &dyn Sql) -> Result<i64, StoreError> {
    db.query_one(
        "UPDATE counters SET value = value + 1 WHERE name = 'order_number' RETURNING value",
        &[],
        |row| row.get(0),
    )
}

/// Inserts a checked order with its `created` event, inside the caller's
/// transaction; the demo seeder shares it.
fn insert_order(conn: &dyn Sql, order: &OrderRow, user_id: i64) -> Result<OrderRow, StoreError> {
    let number = next_number(conn)?;
    let id: i64 = conn.query_one(
        "INSERT INTO orders (number, title, customer_name, customer_email, customer_phone,
                             amount_minor, currency, status, assigned_to, created_by, notes,
                             created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING id",
        args![
            number,
            &order.title,
            &order.customer_name,
            order.customer_email.as_deref(),
            order.customer_phone.as_deref(),
            order.amount_minor,
            &order.currency,
            order.status.as_str(),
            order.assigned_to,
            order.created_by,
            &order.notes,
            &order.created_at,
            &order.updated_at,
        ],
        |row| row.get(0),
    )?;
    let number_text = format_order_number(number);
    record_event(
        conn,
        id,
        user_id,
        &order.created_at,
        "created",
        None,
        Some(&number_text),
    )?;
    Ok(OrderRow {
        id,
        number,
        ..order.clone()
    })
}

/// Creates an order (status `new`) with the next number. Needs
/// `orders_create`; the assignee must be a member of the tenant. Returns the
/// order as the creator now sees it.
pub fn create_order(
    tenant: &Tenant,
    reader: &Reader,
    new: &NewOrder,
    is_member: &dyn Fn(i64) -> bool,
) -> Result<Value, WorkspaceError> {
    if !reader.can("orders_create") {
        return Err(WorkspaceError::forbidden("orders_create"));
    }
    let mut problems = Problems::default();
    let title = problems.text("title", &new.title, MAX_TITLE_CHARS);
    let customer_name = problems.text("customer_name", &new.customer_name, MAX_NAME_CHARS);
    let customer_email = check_customer_email(&mut problems, new.customer_email.as_deref());
    let customer_phone = check_phone(&mut problems, new.customer_phone.as_deref());
    check_amount(&mut problems, new.amount_minor);
    let currency = new
        .currency
        .clone()
        .unwrap_or_else(|| DEFAULT_CURRENCY.into());
    check_currency(&mut problems, &currency);
    let notes = new.notes.clone().unwrap_or_default();
    check_notes(&mut problems, &notes);
    check_assignee(
        &mut problems,
        new.assigned_to,
        new.assigned_to.is_some_and(is_member),
    );
    problems.check()?;

    let scope = Scope::of(reader);
    tenant.write_sql(|db| {
        reader
            .limits
            .check(db, "orders", "SELECT count(*) FROM orders")?;
        let now = now();
        let order = OrderRow {
            id: 0,
            number: 0,
            title,
            customer_name,
            customer_email,
            customer_phone,
            amount_minor: new.amount_minor,
            currency,
            status: OrderStatus::New,
            assigned_to: new.assigned_to,
            created_by: reader.user_id,
            notes,
            created_at: now.clone(),
            updated_at: now,
        };
        let order = insert_order(db, &order, reader.user_id)?;
        Ok(shape_after_write(&scope, &order))
    })
}

/// Applies a patch to an order the reader sees: `orders_edit`, and full-field
/// visibility of this order for customer, amount, currency and notes. Every
/// changed field is recorded in the history with the reader, the time and
/// both values; a patch that changes nothing writes nothing.
pub fn update_order(
    tenant: &Tenant,
    reader: &Reader,
    id: i64,
    patch: &OrderPatch,
    is_member: &dyn Fn(i64) -> bool,
) -> Result<Value, WorkspaceError> {
    // Asked before the write lock; only reported once the order is known to
    // be visible and editable.
    let assignee_member = match patch.assigned_to {
        Some(Some(user)) => is_member(user),
        _ => true,
    };
    let scope = Scope::of(reader);
    tenant.write_sql(|db| {
        let (old, view) = visible(db, &scope, id)?;
        if !reader.can("orders_edit") {
            return Err(WorkspaceError::forbidden("orders_edit"));
        }
        if view == View::Simple && patch.touches_full_fields() {
            return Err(WorkspaceError::forbidden(scope.full_permission(&old)));
        }

        let mut problems = Problems::default();
        let mut new = old.clone();
        if let Some(title) = &patch.title {
            new.title = problems.text("title", title, MAX_TITLE_CHARS);
        }
        if let Some(name) = &patch.customer_name {
            new.customer_name = problems.text("customer_name", name, MAX_NAME_CHARS);
        }
        if let Some(email) = &patch.customer_email {
            new.customer_email = check_customer_email(&mut problems, email.as_deref());
        }
        if let Some(phone) = &patch.customer_phone {
            new.customer_phone = check_phone(&mut problems, phone.as_deref());
        }
        if let Some(amount) = patch.amount_minor {
            check_amount(&mut problems, amount);
            new.amount_minor = amount;
        }
        if let Some(currency) = &patch.currency {
            check_currency(&mut problems, currency);
            new.currency = currency.clone();
        }
        if let Some(notes) = &patch.notes {
            check_notes(&mut problems, notes);
            new.notes = notes.clone();
        }
        if let Some(status) = &patch.status {
            match OrderStatus::parse(status) {
                None => problems.add("status", "unknown status"),
                Some(to) if to != old.status && !old.status.can_become(to) => problems.add(
                    "status",
                    format!("cannot go from {} to {}", old.status.as_str(), to.as_str()),
                ),
                Some(to) => new.status = to,
            }
        }
        if let Some(assignee) = patch.assigned_to {
            // Only a new assignee is checked: keeping someone who has since
            // left the tenant is not this patch's doing.
            if assignee != old.assigned_to {
                check_assignee(&mut problems, assignee, assignee_member);
            }
            new.assigned_to = assignee;
        }
        problems.check()?;

        let changes = changes(&old, &new);
        if changes.is_empty() {
            return Ok(shape(&old, view));
        }
        let now = now();
        new.updated_at = now.clone();
        db.execute(
            "UPDATE orders SET title = ?2, customer_name = ?3, customer_email = ?4,
                    customer_phone = ?5, amount_minor = ?6, currency = ?7, status = ?8,
                    assigned_to = ?9, notes = ?10, updated_at = ?11
             WHERE id = ?1",
            args![
                id,
                &new.title,
                &new.customer_name,
                new.customer_email.as_deref(),
                new.customer_phone.as_deref(),
                new.amount_minor,
                &new.currency,
                new.status.as_str(),
                new.assigned_to,
                &new.notes,
                &now,
            ],
        )?;
        for (field, from, to) in &changes {
            record_event(
                db,
                id,
                reader.user_id,
                &now,
                field,
                from.as_deref(),
                to.as_deref(),
            )?;
        }
        Ok(shape_after_write(&scope, &new))
    })
}

/// Deletes an order the reader sees (needs `orders_delete`; a simple view is
/// enough, as deleting reveals nothing). Its history goes with it; its number
/// is never given out again.
pub fn delete_order(tenant: &Tenant, reader: &Reader, id: i64) -> Result<(), WorkspaceError> {
    let scope = Scope::of(reader);
    let mut trash = super::files::Trash::new(tenant);
    let result = tenant.write_sql(|db| {
        visible(db, &scope, id)?;
        if !reader.can("orders_delete") {
            return Err(WorkspaceError::forbidden("orders_delete"));
        }
        let hashes = super::files::hashes_of(db, None, Some(id))?;
        // Its files' rows go by cascade.
        db.execute("DELETE FROM orders WHERE id = ?1", args![id])?;
        trash.release(db, &hashes)
    });
    trash.settle(result.is_ok());
    result
}

/// Field → value of an order for the demo seeder, which writes rows that no
/// reader typed.
pub(crate) struct DemoOrder {
    pub title: String,
    pub customer_name: String,
    pub customer_email: Option<String>,
    pub customer_phone: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub status: OrderStatus,
    pub assigned_to: Option<i64>,
    pub created_by: i64,
    pub notes: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Inserts a demo order with its `created` event and the status events of
/// the way it took to its status (all at `updated_at`). Returns its id.
pub(crate) fn insert_demo_order(conn: &dyn Sql, demo: DemoOrder) -> Result<i64, StoreError> {
    let row = OrderRow {
        id: 0,
        number: 0,
        title: demo.title,
        customer_name: demo.customer_name,
        customer_email: demo.customer_email,
        customer_phone: demo.customer_phone,
        amount_minor: demo.amount_minor,
        currency: demo.currency,
        status: demo.status,
        assigned_to: demo.assigned_to,
        created_by: demo.created_by,
        notes: demo.notes,
        created_at: demo.created_at,
        updated_at: demo.updated_at,
    };
    let order = insert_order(conn, &row, row.created_by)?;
    let path: &[OrderStatus] = &OrderStatus::ALL[..4];
    let mut from = OrderStatus::New;
    let steps: Vec<OrderStatus> = match order.status {
        OrderStatus::Cancelled => {
            // Cancelled somewhere along the way.
            let upto = (order.id as usize) % path.len();
            path[1..=upto]
                .iter()
                .copied()
                .chain([OrderStatus::Cancelled])
                .collect()
        }
        to => OrderStatus::ALL[1..=OrderStatus::ALL.iter().position(|&s| s == to).unwrap_or(0)]
            .to_vec(),
    };
    for to in steps {
        record_event(
            conn,
            order.id,
            order.created_by,
            &order.updated_at,
            "status",
            Some(from.as_str()),
            Some(to.as_str()),
        )?;
        from = to;
    }
    Ok(order.id)
}
