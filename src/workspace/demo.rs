//! Demo data for `tenantd serve --demo`: a few chats with messages and 200
//! orders (every status among them) over the last 60 days, with their
//! history. Written directly (no reader, no permission checks) in one
//! transaction, and only into a workspace that is still empty, so starting
//! the demo twice does not double it.

use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use super::orders::{insert_demo_order, DemoOrder, OrderStatus};
use super::{format_unix_ms, unix_ms_now, WorkspaceError};
use crate::args;
use crate::tenancy::Tenant;

pub const DEMO_ORDERS: usize = 200;
const SPAN_MS: i64 = 60 * 24 * 3600 * 1000;

/// What [`seed_demo`] wrote; all zero when the workspace already had data.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DemoSummary {
    pub chats: usize,
    pub messages: usize,
    pub orders: usize,
}

const CUSTOMERS: [&str; 12] = [
    "Ada Lovelace",
    "Grace Hopper",
    "Alan Turing",
    "Katherine Johnson",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Donald Knuth",
    "Margaret Hamilton",
    "Ken Thompson",
    "Frances Allen",
    "Niklaus Wirth",
    "Radia Perlman",
];

const PRODUCTS: [&str; 10] = [
    "Oak desk",
    "Standing desk",
    "Office chair",
    "Bookshelf",
    "Monitor arm",
    "Desk lamp",
    "Filing cabinet",
    "Whiteboard",
    "Meeting table",
    "Sofa",
];

const LINES: [&str; 12] = [
    "Good morning!",
    "Has the Liskov order shipped yet?",
    "Tracking number is in the notes.",
    "The customer asked to move delivery to Friday.",
    "I'll take that one.",
    "Can someone confirm the new orders from yesterday?",
    "Done, thanks.",
    "We are out of oak, expect a week's delay.",
    "Lunch at 12?",
    "Invoice sent.",
    "Please double-check the amount on the last one.",
    "👍",
];

const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

/// The `tenant_meta` key that says the demo made this tenant. Kept in the tenant's own file,
/// beside its id and slug, so the mark goes wherever the file goes.
const DEMO_MARK: &str = "demo_created_at";

/// Marks a tenant the demo has just created as the demo's own.
pub fn mark_demo(tenant: &Tenant) -> Result<(), WorkspaceError> {
    tenant.write_sql(|db| {
        db.execute(
            "INSERT OR IGNORE INTO tenant_meta (key, value) VALUES (?1, ?2)",
            args![DEMO_MARK, format_unix_ms(unix_ms_now())],
        )?;
        Ok(())
    })
}

/// Whether the demo made this tenant. A tenant someone made with the same slug is not the
/// demo's to fill with people, chats and orders.
pub fn is_demo(tenant: &Tenant) -> Result<bool, WorkspaceError> {
    tenant.read(|db| {
        Ok(db.query_one(
            "SELECT EXISTS (SELECT 1 FROM tenant_meta WHERE key = ?1)",
            args![DEMO_MARK],
            |row| row.get(0),
        )?)
    })
}

/// Seeds the demo workspace for `users` (member ids; at least one). Does
/// nothing if the tenant already has chats or orders.
pub fn seed_demo<R: Rng + ?Sized>(
    tenant: &Tenant,
    users: &[i64],
    rng: &mut R,
) -> Result<DemoSummary, WorkspaceError> {
    if users.is_empty() {
        return Err(WorkspaceError::field("users", "at least one user"));
    }
    let start = unix_ms_now() - SPAN_MS;
    tenant.write_sql(|db| {
        let used: bool = db.query_one(
            "SELECT EXISTS (SELECT 1 FROM chats) OR EXISTS (SELECT 1 FROM orders)",
            &[],
            |row| row.get(0),
        )?;
        if used {
            return Ok(DemoSummary::default());
        }
        let mut summary = DemoSummary::default();
        let pick = |rng: &mut R| users[rng.gen_range(0..users.len())];

        // Chats: everyone in "General", a random half in "Orders desk", and
        // a direct chat between the first two users.
        let mut half = users.to_vec();
        half.shuffle(rng);
        half.truncate(users.len().div_ceil(2));
        let mut chats: Vec<(&str, &str, Vec<i64>)> = vec![
            ("General", "group", users.to_vec()),
            ("Orders desk", "group", half),
        ];
        if users.len() >= 2 {
            chats.push(("Direct", "direct", users[..2].to_vec()));
        }
        for (title, kind, members) in chats {
            let created = format_unix_ms(start);
            let chat_id: i64 = db.query_one(
                "INSERT INTO chats (title, kind, created_by, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
                args![title, kind, members[0], &created],
                |row| row.get(0),
            )?;
            for user in &members {
                db.execute(
                    "INSERT INTO chat_participants (chat_id, user_id, joined_at)
                     VALUES (?1, ?2, ?3)",
                    args![chat_id, *user, &created],
                )?;
            }
            let count = rng.gen_range(8..=20);
            let mut at = start;
            for _ in 0..count {
                at += rng.gen_range(1..SPAN_MS / 25);
                let author = members[rng.gen_range(0..members.len())];
                let body = LINES[rng.gen_range(0..LINES.len())];
                db.execute(
                    "INSERT INTO messages (chat_id, user_id, body, created_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    args![chat_id, author, body, format_unix_ms(at)],
                )?;
            }
            summary.chats += 1;
            summary.messages += count;
        }

        // Orders in creation order, so numbers follow time; the first six
        // cover every status, the rest lean towards the finished ones as
        // real order books do.
        let step = SPAN_MS / DEMO_ORDERS as i64;
        for i in 0..DEMO_ORDERS {
            let status = if i < OrderStatus::ALL.len() {
                OrderStatus::ALL[i]
            } else {
                let weights = [3, 2, 2, 2, 6, 1];
                let roll = rng.gen_range(0..weights.iter().sum::<usize>());
                let mut acc = 0;
                let mut chosen = OrderStatus::New;
                for (status, w) in OrderStatus::ALL.iter().zip(weights) {
                    acc += w;
                    if roll < acc {
                        chosen = *status;
                        break;
                    }
                }
                chosen
            };
            let created = start + step * i as i64 + rng.gen_range(0..step);
            let updated = if status == OrderStatus::New {
                created
            } else {
                (created + rng.gen_range(0..3 * 24 * 3600 * 1000)).min(unix_ms_now())
            };
            let customer = CUSTOMERS[rng.gen_range(0..CUSTOMERS.len())];
            let product = PRODUCTS[rng.gen_range(0..PRODUCTS.len())];
            let qty = rng.gen_range(1..=4);
            let email = customer.to_lowercase().replace(' ', ".") + "@example.com";
            insert_demo_order(
                db,
                DemoOrder {
                    title: if qty == 1 {
                        product.to_string()
                    } else {
                        format!("{product} ×{qty}")
                    },
                    customer_name: customer.to_string(),
                    customer_email: rng.gen_bool(0.8).then_some(email),
                    customer_phone: rng
                        .gen_bool(0.6)
                        .then(|| format!("+1 555 {:04}", rng.gen_range(0..10_000))),
                    amount_minor: rng.gen_range(1_000..500_000),
                    currency: CURRENCIES[rng.gen_range(0..CURRENCIES.len())].to_string(),
                    status,
                    assigned_to: rng.gen_bool(0.75).then(|| pick(rng)),
                    created_by: pick(rng),
                    notes: if rng.gen_bool(0.3) {
                        "Call before delivery.".to_string()
                    } else {
                        String::new()
                    },
                    created_at: format_unix_ms(created),
                    updated_at: format_unix_ms(updated),
                },
            )?;
            summary.orders += 1;
        }
        Ok(summary)
    })
}
