//! Reading the JSON request body: its media type checked, then parsed into the route's typed
//! struct, a wrongly typed or missing field reported under its own name.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;
use crate::http::Request;

/// The request body as JSON of the expected shape. It must say it is JSON: a body sent
/// without `Content-Type` is refused like any other type, not guessed at. Malformed JSON, or
/// JSON that is not an object, is a 400; a missing or wrongly typed field is a 422 naming it.
pub(super) fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, Error> {
    let Some(ct) = req.header("content-type") else {
        return Err(Error::UnsupportedMediaType(
            "send the body as Content-Type: application/json".into(),
        ));
    };
    if !is_json_media_type(ct) {
        return Err(Error::UnsupportedMediaType(format!(
            "expected Content-Type: application/json, got {ct}"
        )));
    }
    let body = match serde_json::from_slice::<Value>(&req.body) {
        Ok(body @ Value::Object(_)) => body,
        Ok(_) => return Err(Error::InvalidJson("expected a JSON object".into())),
        Err(e) => return Err(Error::InvalidJson(e.to_string())),
    };
    serde_path_to_error::deserialize(body).map_err(|e| {
        let top = e.path().iter().next().and_then(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
        let (field, message) = field_error(e.inner());
        Error::validation(&top.or(field).unwrap_or_else(|| "body".into()), message)
    })
}

/// The field a serde error names itself (only a missing one does: its path ends at the object
/// holding it), and what to tell the client, without echoing the value it sent.
fn field_error(e: &serde_json::Error) -> (Option<String>, String) {
    let text = e.to_string();
    if let Some(rest) = text.strip_prefix("missing field `") {
        let field = rest.split('`').next().map(String::from);
        return (field, "is required".into());
    }
    let Some((_, expected)) = text.split_once(", expected ") else {
        return (None, text);
    };
    let expected = match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number",
        "f32" | "f64" => "a number",
        "a sequence" => "a list",
        other => other,
    };
    (None, format!("must be {expected}"))
}

/// `application/json`, any case, with optional parameters (RFC 9110 8.3.1); a `charset`, if
/// given, must be UTF-8, the only encoding JSON has (RFC 8259 8.1).
fn is_json_media_type(value: &str) -> bool {
    let is_json = crate::http::media_type(value)
        .is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"));
    if !is_json {
        return false;
    }
    value
        .split(';')
        .skip(1)
        .all(|param| match param.split_once('=') {
            Some((name, v)) if name.trim().eq_ignore_ascii_case("charset") => {
                v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            }
            Some((name, _)) => !name.trim().is_empty(),
            // `application/json;` is tolerated; a bare word is not a parameter.
            None => param.trim().is_empty(),
        })
}
