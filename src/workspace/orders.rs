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

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use super::{now, row_cached, Page, Problems, Reader, WorkspaceError};
use crate::catalog::{check_email, EmailRule};
use crate::tenancy::Tenant;

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

/// History event field names a simple view may see. `created` is the event
/// recorded when the order is made.
const SIMPLE_EVENT_FIELDS: [&str; 4] = ["created", "title", "status", "assigned_to"];

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
    pub currency: String,
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
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
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

    fn column(self) -> &'static str {
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

#[derive(Clone, Debug, PartialEq, Eq)]
struct OrderRow {
    id: i64,
    number: i64,
    title: String,
    customer_name: String,
    customer_email: Option<String>,
    customer_phone: Option<String>,
    amount_minor: i64,
    currency: String,
    status: OrderStatus,
    assigned_to: Option<i64>,
    created_by: i64,
    notes: String,
    created_at: String,
    updated_at: String,
}

const ORDER_COLUMNS: &str = "id, number, title, customer_name, customer_email, customer_phone, \
     amount_minor, currency, status, assigned_to, created_by, notes, created_at, updated_at";

fn order_from_row(row: &Row<'_>) -> rusqlite::Result<OrderRow> {
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
enum View {
    Simple,
    Full,
}

/// What the reader's permissions grant over orders.
#[derive(Clone, Copy, Debug)]
struct Scope {
    user_id: i64,
    full_all: bool,
    full_own: bool,
    simple_all: bool,
    simple_own: bool,
}

impl Scope {
    fn of(reader: &Reader) -> Scope {
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

fn load(conn: &Connection, id: i64) -> rusqlite::Result<Option<OrderRow>> {
    row_cached(
        conn,
        &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"),
        [id],
        order_from_row,
    )
    .optional()
}

/// The order and the reader's view of it; `NotFound` if missing or hidden.
fn visible(conn: &Connection, scope: &Scope, id: i64) -> Result<(OrderRow, View), WorkspaceError> {
    let order = load(conn, id)?.ok_or(WorkspaceError::NotFound)?;
    let view = scope.view(&order).ok_or(WorkspaceError::NotFound)?;
    Ok((order, view))
}

/// The keyset position after the last row of a page. Hex of a small JSON
/// object: opaque to clients, checked on the way back in.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// The sort it was made for.
    s: String,
    /// The sort key of the last row (text for timestamps, integer for numbers).
    k: Value,
    /// Its id, the tie-break.
    i: i64,
}

fn encode_cursor(sort: OrderSort, order: &OrderRow) -> String {
    let k = match sort.column() {
        "created_at" => json!(order.created_at),
        "updated_at" => json!(order.updated_at),
        _ => json!(order.number),
    };
    let cursor = Cursor {
        s: sort.as_str().to_string(),
        k,
        i: order.id,
    };
    // Serialising a struct of strings and numbers cannot fail.
    let text = serde_json::to_string(&cursor).unwrap_or_default();
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The key and id a cursor carries, as SQL values.
fn decode_cursor(
    problems: &mut Problems,
    sort: OrderSort,
    cursor: &str,
) -> Option<(SqlValue, i64)> {
    let parsed = (|| {
        if !cursor.len().is_multiple_of(2) || cursor.len() > 2048 {
            return None;
        }
        let bytes = (0..cursor.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        serde_json::from_slice::<Cursor>(&bytes).ok()
    })();
    let Some(c) = parsed else {
        problems.add("cursor", "not a cursor of this list");
        return None;
    };
    if c.s != sort.as_str() {
        problems.add("cursor", "made for another sort order");
        return None;
    }
    let key = match (&c.k, sort.column()) {
        (Value::Number(n), "number") => n.as_i64().map(SqlValue::Integer),
        (Value::String(s), "created_at" | "updated_at") => Some(SqlValue::Text(s.clone())),
        _ => None,
    };
    match key {
        Some(key) => Some((key, c.i)),
        None => {
            problems.add("cursor", "not a cursor of this list");
            None
        }
    }
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

    let conn = tenant.conn()?;
    // The text varies with the scope, filters, sort and page size: common pages reuse theirs.
    let mut stmt = conn.prepare_cached(&sql)?;
    // ?1, the reader, goes unused when the scope is everything; with no other parameter
    // after it the statement has none to bind.
    let used = stmt.parameter_count().min(args.len());
    let mut rows = stmt
        .query_map(params_from_iter(args[..used].iter()), order_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
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
}

/// One order, shaped for the reader; `NotFound` if missing or out of scope.
pub fn get_order(tenant: &Tenant, reader: &Reader, id: i64) -> Result<Value, WorkspaceError> {
    let conn = tenant.conn()?;
    let (order, view) = visible(&conn, &Scope::of(reader), id)?;
    Ok(shape(&order, view))
}

/// Checked values of the full-view fields.
fn optional_text(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// A customer is written to: the stricter rule, which refuses a domain without a dot.
fn check_customer_email(problems: &mut Problems, email: Option<&str>) -> Option<String> {
    let email = optional_text(email)?;
    if check_email(&email, EmailRule::Mailbox).is_err() {
        problems.add("customer_email", "not an email address");
    }
    Some(email)
}

fn check_phone(problems: &mut Problems, phone: Option<&str>) -> Option<String> {
    let phone = optional_text(phone)?;
    if !valid_phone(&phone) {
        problems.add(
            "customer_phone",
            "4 to 20 digits, with optional leading +, spaces, dots, dashes and parentheses",
        );
    }
    Some(phone)
}

pub fn valid_phone(phone: &str) -> bool {
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    phone.len() <= MAX_PHONE_CHARS
        && (4..=20).contains(&digits)
        && phone.char_indices().all(|(i, c)| {
            c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')') || (c == '+' && i == 0)
        })
}

fn check_amount(problems: &mut Problems, amount: i64) {
    if amount < 0 {
        problems.add("amount_minor", "must not be negative");
    } else if amount > MAX_AMOUNT_MINOR {
        problems.add(
            "amount_minor",
            format!("must be at most {MAX_AMOUNT_MINOR}"),
        );
    }
}

fn check_currency(problems: &mut Problems, currency: &str) {
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        problems.add(
            "currency",
            "must be three upper-case letters (ISO 4217, e.g. EUR)",
        );
    } else if CURRENCIES.binary_search(&currency).is_err() {
        problems.add("currency", "unknown ISO 4217 currency code");
    }
}

fn check_notes(problems: &mut Problems, notes: &str) {
    if !problems.control_characters("notes", notes, true) {
        // Reported.
    } else if notes.chars().count() > MAX_NOTES_CHARS {
        problems.add(
            "notes",
            format!("must be at most {MAX_NOTES_CHARS} characters"),
        );
    }
}

fn check_assignee(problems: &mut Problems, assignee: Option<i64>, member: bool) {
    if assignee.is_some() && !member {
        problems.add("assigned_to", "not a member of this tenant");
    }
}

/// Takes the next order number inside the caller's IMMEDIATE transaction:
/// the write lock makes it unique and gap-free among committed orders, and a
/// rolled-back create gives its number back.
fn next_number(conn: &Connection) -> rusqlite::Result<i64> {
    row_cached(
        conn,
        "UPDATE counters SET value = value + 1 WHERE name = 'order_number' RETURNING value",
        [],
        |row| row.get(0),
    )
}

fn record_event(
    conn: &Connection,
    order_id: i64,
    user_id: i64,
    at: &str,
    field: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO order_events (order_id, user_id, at, field, from_value, to_value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![order_id, user_id, at, field, from, to])?;
    Ok(())
}

/// Inserts a checked order with its `created` event, inside the caller's
/// transaction; the demo seeder shares it.
fn insert_order(conn: &Connection, order: &OrderRow, user_id: i64) -> rusqlite::Result<OrderRow> {
    let number = next_number(conn)?;
    let id: i64 = row_cached(
        conn,
        "INSERT INTO orders (number, title, customer_name, customer_email, customer_phone,
                             amount_minor, currency, status, assigned_to, created_by, notes,
                             created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING id",
        params![
            number,
            order.title,
            order.customer_name,
            order.customer_email,
            order.customer_phone,
            order.amount_minor,
            order.currency,
            order.status.as_str(),
            order.assigned_to,
            order.created_by,
            order.notes,
            order.created_at,
            order.updated_at,
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
    check_currency(&mut problems, &new.currency);
    let notes = new.notes.clone().unwrap_or_default();
    check_notes(&mut problems, &notes);
    check_assignee(
        &mut problems,
        new.assigned_to,
        new.assigned_to.is_some_and(is_member),
    );
    problems.check()?;

    let scope = Scope::of(reader);
    tenant.write(|tx| {
        let now = now();
        let order = OrderRow {
            id: 0,
            number: 0,
            title,
            customer_name,
            customer_email,
            customer_phone,
            amount_minor: new.amount_minor,
            currency: new.currency.clone(),
            status: OrderStatus::New,
            assigned_to: new.assigned_to,
            created_by: reader.user_id,
            notes,
            created_at: now.clone(),
            updated_at: now,
        };
        let order = insert_order(tx, &order, reader.user_id)?;
        Ok(shape_after_write(&scope, &order))
    })
}

/// One changed field: name, old and new value as history text.
type Change = (&'static str, Option<String>, Option<String>);

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
    tenant.write(|tx| {
        let (old, view) = visible(tx, &scope, id)?;
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
        tx.execute(
            "UPDATE orders SET title = ?2, customer_name = ?3, customer_email = ?4,
                    customer_phone = ?5, amount_minor = ?6, currency = ?7, status = ?8,
                    assigned_to = ?9, notes = ?10, updated_at = ?11
             WHERE id = ?1",
            params![
                id,
                new.title,
                new.customer_name,
                new.customer_email,
                new.customer_phone,
                new.amount_minor,
                new.currency,
                new.status.as_str(),
                new.assigned_to,
                new.notes,
                now,
            ],
        )?;
        for (field, from, to) in &changes {
            record_event(
                tx,
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

fn changes(old: &OrderRow, new: &OrderRow) -> Vec<Change> {
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

/// Deletes an order the reader sees (needs `orders_delete`; a simple view is
/// enough, as deleting reveals nothing). Its history goes with it; its number
/// is never given out again.
pub fn delete_order(tenant: &Tenant, reader: &Reader, id: i64) -> Result<(), WorkspaceError> {
    let scope = Scope::of(reader);
    tenant.write(|tx| {
        visible(tx, &scope, id)?;
        if !reader.can("orders_delete") {
            return Err(WorkspaceError::forbidden("orders_delete"));
        }
        tx.execute("DELETE FROM orders WHERE id = ?1", [id])?;
        Ok(())
    })
}

/// The history of an order the reader sees, oldest first; a simple view
/// gets only the events of simple fields.
pub fn order_history(
    tenant: &Tenant,
    reader: &Reader,
    id: i64,
) -> Result<Vec<OrderEvent>, WorkspaceError> {
    let conn = tenant.conn()?;
    let (_, view) = visible(&conn, &Scope::of(reader), id)?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, order_id, user_id, at, field, from_value, to_value
         FROM order_events WHERE order_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([id], |row| {
        Ok(OrderEvent {
            id: row.get(0)?,
            order_id: row.get(1)?,
            user_id: row.get(2)?,
            at: row.get(3)?,
            field: row.get(4)?,
            from_value: row.get(5)?,
            to_value: row.get(6)?,
        })
    })?;
    let mut out = Vec::new();
    for event in rows {
        let event = event?;
        if view == View::Full || SIMPLE_EVENT_FIELDS.contains(&event.field.as_str()) {
            out.push(event);
        }
    }
    Ok(out)
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
pub(crate) fn insert_demo_order(conn: &Connection, demo: DemoOrder) -> rusqlite::Result<i64> {
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

/// Active ISO 4217 codes of money one can invoice in (no precious metals,
/// bond units, SDR, or the test and "no currency" codes), sorted for binary
/// search.
pub const CURRENCIES: [&str; 169] = [
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS",
    "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW",
    "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD",
    "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR",
    "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL",
    "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
];
