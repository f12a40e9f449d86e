//! SQLite's five kinds of value, as this crate holds them and as Hrana's JSON carries them:
//! integers as decimal strings (a JSON number would lose precision past 2^53), floats as
//! numbers, blobs as base64, text as text, null as a type alone.

use data_encoding::{BASE64, BASE64_NOPAD};
use serde_json::{json, Value as Json};

use super::SqldError;

/// One SQLite value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Real(r) => Some(*r),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_blob(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(b) => Some(b),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The Hrana JSON form of an argument. SQLite stores a NaN as NULL, so NaN goes as null;
    /// an infinity cannot be written in JSON at all and is refused rather than altered.
    pub(super) fn to_wire(&self) -> Result<Json, SqldError> {
        Ok(match self {
            Value::Null => json!({"type": "null"}),
            Value::Integer(i) => json!({"type": "integer", "value": i.to_string()}),
            Value::Real(r) if r.is_nan() => json!({"type": "null"}),
            Value::Real(r) if r.is_infinite() => {
                return Err(SqldError::BadArgument(format!(
                    "{r} (Hrana's JSON carries no infinities)"
                )))
            }
            Value::Real(r) => json!({"type": "float", "value": r}),
            Value::Text(s) => json!({"type": "text", "value": s}),
            Value::Blob(b) => json!({"type": "blob", "base64": BASE64.encode(b)}),
        })
    }

    /// A value of a row as the server sent it.
    pub(super) fn from_wire(wire: &Json) -> Result<Value, SqldError> {
        let bad = || SqldError::Protocol(format!("not a Hrana value: {wire}"));
        let kind = wire.get("type").and_then(Json::as_str).ok_or_else(bad)?;
        let field = |name: &str| wire.get(name).ok_or_else(bad);
        Ok(match kind {
            "null" => Value::Null,
            "integer" => match field("value")? {
                Json::String(s) => Value::Integer(s.parse().map_err(|_| bad())?),
                // The spec says a string; a number that fits is read all the same.
                Json::Number(n) => Value::Integer(n.as_i64().ok_or_else(bad)?),
                _ => return Err(bad()),
            },
            "float" => match field("value")? {
                Json::Number(n) => Value::Real(n.as_f64().ok_or_else(bad)?),
                // sqld writes an infinity as null: which one is lost, so say so.
                _ => {
                    return Err(SqldError::Protocol(format!(
                        "a float JSON cannot carry (an infinity?): {wire}"
                    )))
                }
            },
            "text" => Value::Text(field("value")?.as_str().ok_or_else(bad)?.to_string()),
            "blob" => {
                let text = field("base64")?.as_str().ok_or_else(bad)?;
                // sqld sends base64 without padding; accept both.
                let bytes = BASE64_NOPAD
                    .decode(text.trim_end_matches('=').as_bytes())
                    .map_err(|_| bad())?;
                Value::Blob(bytes)
            }
            _ => return Err(bad()),
        })
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Integer(v.into())
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Integer(v.into())
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Integer(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_their_wire_form() {
        for v in [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Real(-0.5),
            Value::Real(f64::MAX),
            Value::Text("ünï\u{0}😀".into()),
            Value::Blob(vec![]),
            Value::Blob(vec![0, 255, 1]),
        ] {
            assert_eq!(Value::from_wire(&v.to_wire().unwrap()).unwrap(), v);
        }
    }

    #[test]
    fn integers_travel_as_strings_and_blobs_without_padding_are_read() {
        assert_eq!(
            Value::Integer(7).to_wire().unwrap(),
            json!({"type": "integer", "value": "7"})
        );
        assert_eq!(
            Value::from_wire(&json!({"type": "blob", "base64": "AP8"})).unwrap(),
            Value::Blob(vec![0, 255])
        );
    }

    #[test]
    fn what_the_wire_cannot_carry_is_refused_not_altered() {
        assert!(matches!(
            Value::Real(f64::INFINITY).to_wire(),
            Err(SqldError::BadArgument(_))
        ));
        assert_eq!(
            Value::Real(f64::NAN).to_wire().unwrap(),
            json!({"type": "null"})
        );
        for bad in [
            json!({"type": "float", "value": null}),
            json!({"type": "integer", "value": "12x"}),
            json!({"type": "integer", "value": "9223372036854775808"}),
            json!({"type": "blob", "base64": "!!"}),
            json!({"type": "date", "value": "2026"}),
            json!("7"),
        ] {
            assert!(
                matches!(Value::from_wire(&bad), Err(SqldError::Protocol(_))),
                "{bad}"
            );
        }
    }
}
