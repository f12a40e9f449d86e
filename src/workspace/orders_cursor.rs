//! Cursors of order lists: the keyset position after a page's last row, handed to the client
//! as opaque hex and checked when it comes back.

use crate::store::Value as SqlValue;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::orders::{OrderRow, OrderSort};
use super::Problems;

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

pub(super) fn encode_cursor(sort: OrderSort, order: &OrderRow) -> String {
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
pub(super) fn decode_cursor(
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
