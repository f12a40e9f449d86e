//! Pusher's signatures, as pure functions: channel authorization strings (what an auth endpoint
//! returns and what the event loop checks on subscribe), and the HTTP API's request signing
//! (what `POST /apps/{app_id}/events` must carry), plus that endpoint's body.
//!
//! Every comparison of a secret-derived value goes through `Mac::verify_slice`, which is
//! constant-time, so a forger learns nothing from how long a refusal took.

use std::fmt;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use super::protocol::{valid_channel_name, valid_socket_id};
use super::Publish;

type HmacSha256 = Hmac<Sha256>;

/// How far `auth_timestamp` may be from our clock, either way (Pusher's 600 s).
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;
/// Channels one event may go to (Pusher's limit).
pub const MAX_CHANNELS_PER_EVENT: usize = 100;
/// Longest event name (Pusher's limit).
pub const MAX_EVENT_NAME: usize = 200;

fn mac(secret: &str, message: &str) -> HmacSha256 {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(message.as_bytes());
    mac
}

/// The lowercase hex HMAC-SHA256 of `message` under `secret`.
pub fn hmac_sha256_hex(secret: &str, message: &str) -> String {
    hex::encode(mac(secret, message).finalize().into_bytes())
}

/// Whether `signature_hex` is [`hmac_sha256_hex`] of `message` (constant-time).
pub(super) fn verify_hmac_sha256_hex(secret: &str, message: &str, signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex) else {
        return false;
    };
    mac(secret, message).verify_slice(&signature).is_ok()
}

fn channel_string_to_sign(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// The `auth` string that lets `socket_id` subscribe to `channel`:
/// `key:hex(HMAC-SHA256(secret, "socket_id:channel[:channel_data]"))`. For presence channels,
/// `channel_data` must be the exact JSON text the client will send back.
pub fn sign_channel(
    secret: &str,
    key: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let message = channel_string_to_sign(socket_id, channel, channel_data);
    format!("{key}:{}", hmac_sha256_hex(secret, &message))
}

/// Whether `auth` is what [`sign_channel`] would give (hex case-insensitive, constant-time).
pub fn verify_channel_auth(
    auth: &str,
    secret: &str,
    key: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> bool {
    let Some((auth_key, signature)) = auth.split_once(':') else {
        return false;
    };
    if auth_key != key {
        return false;
    }
    let Ok(signature) = hex::decode(signature) else {
        return false;
    };
    mac(
        secret,
        &channel_string_to_sign(socket_id, channel, channel_data),
    )
    .verify_slice(&signature)
    .is_ok()
}

/// Why an HTTP API request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigError {
    /// A required query parameter is absent.
    Missing(&'static str),
    /// A parameter appears twice: which one was signed would be ambiguous.
    Duplicate(String),
    /// `auth_key` is not this app's key.
    UnknownKey,
    /// `auth_version` is not `1.0`.
    UnsupportedVersion(String),
    /// `auth_timestamp` is not a number of seconds.
    InvalidTimestamp,
    /// `auth_timestamp` is further than [`MAX_CLOCK_SKEW_SECS`] from now.
    Expired { timestamp: u64, now: u64 },
    /// `body_md5` does not match the body.
    BodyMd5Mismatch,
    /// `auth_signature` does not match.
    BadSignature,
}

impl fmt::Display for SigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigError::Missing(p) => write!(f, "missing query parameter {p}"),
            SigError::Duplicate(p) => write!(f, "query parameter {p} given more than once"),
            SigError::UnknownKey => f.write_str("unknown auth_key"),
            SigError::UnsupportedVersion(v) => write!(f, "unsupported auth_version {v:?}"),
            SigError::InvalidTimestamp => f.write_str("auth_timestamp is not a number"),
            SigError::Expired { timestamp, now } => write!(
                f,
                "auth_timestamp {timestamp} is more than {MAX_CLOCK_SKEW_SECS} s from server time {now}"
            ),
            SigError::BodyMd5Mismatch => f.write_str("body_md5 does not match the body"),
            SigError::BadSignature => f.write_str("invalid auth_signature"),
        }
    }
}

impl std::error::Error for SigError {}

/// Checks a Pusher HTTP API request: `auth_key` is ours, `auth_version=1.0`, `auth_timestamp`
/// within 600 s of `now` (Unix seconds), `body_md5` is the hex MD5 of a non-empty body, and
/// `auth_signature` is the hex HMAC-SHA256 under `secret` of
/// `"METHOD\nPATH\n" + the other parameters, keys lowercased, sorted, as k=v joined by &`
/// (values decoded, not re-escaped, as the Pusher libraries sign them).
pub fn verify_http_signature(
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
    key: &str,
    secret: &str,
    now: u64,
) -> Result<(), SigError> {
    let mut params: Vec<(String, &str)> = Vec::with_capacity(query.len());
    for (k, v) in query {
        let k = k.to_ascii_lowercase();
        if params.iter().any(|(seen, _)| *seen == k) {
            return Err(SigError::Duplicate(k));
        }
        params.push((k, v.as_str()));
    }
    let get = |name: &'static str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .ok_or(SigError::Missing(name))
    };
    if get("auth_key")? != key {
        return Err(SigError::UnknownKey);
    }
    let version = get("auth_version")?;
    if version != "1.0" {
        return Err(SigError::UnsupportedVersion(version.to_string()));
    }
    let timestamp: u64 = get("auth_timestamp")?
        .parse()
        .map_err(|_| SigError::InvalidTimestamp)?;
    if timestamp.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
        return Err(SigError::Expired { timestamp, now });
    }
    // An empty body may go unsigned; one that is signed must match either way.
    match get("body_md5") {
        Ok(md5) => {
            if !md5.eq_ignore_ascii_case(&hex::encode(Md5::digest(body))) {
                return Err(SigError::BodyMd5Mismatch);
            }
        }
        Err(missing) if !body.is_empty() => return Err(missing),
        Err(_) => {}
    }
    let signature = get("auth_signature")?;
    let signature = hex::decode(signature).map_err(|_| SigError::BadSignature)?;

    params.retain(|(k, _)| k != "auth_signature");
    let to_sign = http_string_to_sign(method, path, &mut params);
    mac(secret, &to_sign)
        .verify_slice(&signature)
        .map_err(|_| SigError::BadSignature)
}

/// What an HTTP API request's signature covers: `METHOD\npath\nk=v&...`, the parameters
/// (lower-case keys, `auth_signature` left out) sorted by key.
fn http_string_to_sign(method: &str, path: &str, params: &mut [(String, &str)]) -> String {
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let query_string = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        query_string
    )
}

/// The query parameters a client adds to sign a request (what the Pusher server libraries do);
/// for tests and for tenantd calling another Pusher-compatible server.
pub fn sign_http_request(
    method: &str,
    path: &str,
    extra: &[(String, String)],
    body: &[u8],
    key: &str,
    secret: &str,
    timestamp: u64,
) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = extra.to_vec();
    params.push(("auth_key".into(), key.into()));
    params.push(("auth_timestamp".into(), timestamp.to_string()));
    params.push(("auth_version".into(), "1.0".into()));
    if !body.is_empty() {
        params.push(("body_md5".into(), hex::encode(Md5::digest(body))));
    }
    let mut sorted: Vec<(String, &str)> = params
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    let to_sign = http_string_to_sign(method, path, &mut sorted);
    params.push(("auth_signature".into(), hmac_sha256_hex(secret, &to_sign)));
    params
}

/// Why a `POST /apps/{app_id}/events` body was refused (answer 400, or 413 for `DataTooLarge`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsBodyError {
    InvalidJson(String),
    /// Neither `channel` nor `channels`, both, or an empty list.
    Channels(&'static str),
    TooManyChannels(usize),
    InvalidChannel(String),
    InvalidName,
    InvalidSocketId,
    DataTooLarge {
        size: usize,
        max: usize,
    },
}

impl fmt::Display for EventsBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventsBodyError::InvalidJson(e) => write!(f, "invalid JSON body: {e}"),
            EventsBodyError::Channels(why) => f.write_str(why),
            EventsBodyError::TooManyChannels(n) => write!(
                f,
                "{n} channels given, at most {MAX_CHANNELS_PER_EVENT} allowed"
            ),
            EventsBodyError::InvalidChannel(c) => write!(f, "invalid channel name {c:?}"),
            EventsBodyError::InvalidName => {
                write!(f, "name must be 1 to {MAX_EVENT_NAME} characters")
            }
            EventsBodyError::InvalidSocketId => f.write_str("invalid socket_id"),
            EventsBodyError::DataTooLarge { size, max } => {
                write!(f, "data is {size} bytes, at most {max} allowed")
            }
        }
    }
}

impl std::error::Error for EventsBodyError {}

#[derive(Deserialize)]
struct EventsBody {
    name: String,
    data: Value,
    channel: Option<String>,
    channels: Option<Vec<String>>,
    socket_id: Option<String>,
}

/// Reads the body of `POST /apps/{app_id}/events`: `{name, data, channel | channels,
/// socket_id?}`. `data` should be a string (the libraries JSON-encode it); any other JSON value
/// is taken as its JSON text. `max_data` is the data limit in bytes (Pusher's is 10 KB).
pub fn parse_events_body(body: &[u8], max_data: usize) -> Result<Publish, EventsBodyError> {
    let body: EventsBody =
        serde_json::from_slice(body).map_err(|e| EventsBodyError::InvalidJson(e.to_string()))?;
    let channels = match (body.channel, body.channels) {
        (Some(c), None) => vec![c],
        (None, Some(cs)) if !cs.is_empty() => cs,
        (None, Some(_)) => return Err(EventsBodyError::Channels("channels is empty")),
        (None, None) => return Err(EventsBodyError::Channels("channel or channels is required")),
        (Some(_), Some(_)) => {
            return Err(EventsBodyError::Channels(
                "give channel or channels, not both",
            ))
        }
    };
    if channels.len() > MAX_CHANNELS_PER_EVENT {
        return Err(EventsBodyError::TooManyChannels(channels.len()));
    }
    if let Some(bad) = channels.iter().find(|c| !valid_channel_name(c)) {
        return Err(EventsBodyError::InvalidChannel(bad.clone()));
    }
    if body.name.is_empty() || body.name.len() > MAX_EVENT_NAME {
        return Err(EventsBodyError::InvalidName);
    }
    let data = match body.data {
        Value::String(s) => s,
        other => other.to_string(),
    };
    if data.len() > max_data {
        return Err(EventsBodyError::DataTooLarge {
            size: data.len(),
            max: max_data,
        });
    }
    let except_socket = match body.socket_id {
        Some(id) if valid_socket_id(&id) => Some(id),
        Some(_) => return Err(EventsBodyError::InvalidSocketId),
        None => None,
    };
    Ok(Publish {
        channels,
        event: body.name,
        data,
        except_socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked examples of Pusher's "auth signatures" and "HTTP API reference" pages.
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn private_channel_signature_matches_pushers_example() {
        let auth = sign_channel(SECRET, KEY, "1234.1234", "private-foobar", None);
        assert_eq!(
            auth,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(verify_channel_auth(
            &auth,
            SECRET,
            KEY,
            "1234.1234",
            "private-foobar",
            None
        ));
        assert!(verify_channel_auth(
            &auth
                .to_ascii_uppercase()
                .replacen("278D425BDF160C739803", KEY, 1),
            SECRET,
            KEY,
            "1234.1234",
            "private-foobar",
            None
        ));
        // Another socket, channel, key or secret: refused.
        assert!(!verify_channel_auth(
            &auth,
            SECRET,
            KEY,
            "1234.1235",
            "private-foobar",
            None
        ));
        assert!(!verify_channel_auth(
            &auth,
            SECRET,
            KEY,
            "1234.1234",
            "private-foobaz",
            None
        ));
        assert!(!verify_channel_auth(
            &auth,
            SECRET,
            "otherkey",
            "1234.1234",
            "private-foobar",
            None
        ));
        assert!(!verify_channel_auth(
            &auth,
            "other",
            KEY,
            "1234.1234",
            "private-foobar",
            None
        ));
        assert!(!verify_channel_auth(
            "garbage",
            SECRET,
            KEY,
            "1234.1234",
            "private-foobar",
            None
        ));
        assert!(!verify_channel_auth(
            &format!("{KEY}:zz"),
            SECRET,
            KEY,
            "1234.1234",
            "private-foobar",
            None
        ));
    }

    #[test]
    fn presence_signature_covers_the_exact_channel_data() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let auth = sign_channel(SECRET, KEY, "1234.1234", "presence-foobar", Some(data));
        assert!(verify_channel_auth(
            &auth,
            SECRET,
            KEY,
            "1234.1234",
            "presence-foobar",
            Some(data)
        ));
        let respaced = r#"{"user_id": 10,"user_info":{"name":"Mr. Channels"}}"#;
        assert!(!verify_channel_auth(
            &auth,
            SECRET,
            KEY,
            "1234.1234",
            "presence-foobar",
            Some(respaced)
        ));
        assert!(!verify_channel_auth(
            &auth,
            SECRET,
            KEY,
            "1234.1234",
            "presence-foobar",
            None
        ));
    }

    fn example_query(signature: &str, md5: &str, timestamp: &str) -> Vec<(String, String)> {
        [
            ("auth_key", KEY),
            ("auth_timestamp", timestamp),
            ("auth_version", "1.0"),
            ("body_md5", md5),
            ("auth_signature", signature),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    const BODY: &str = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    const MD5: &str = "ec365a775a4cd0599faeb73354201b6f";
    const SIGNATURE: &str = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
    const TIMESTAMP: u64 = 1353088179;

    #[test]
    fn http_signature_matches_pushers_example() {
        let query = example_query(SIGNATURE, MD5, "1353088179");
        let ok = verify_http_signature(
            "POST",
            "/apps/3/events",
            &query,
            BODY.as_bytes(),
            KEY,
            SECRET,
            TIMESTAMP + 5,
        );
        assert_eq!(ok, Ok(()));
        // Our signer produces the same parameters.
        let signed = sign_http_request(
            "POST",
            "/apps/3/events",
            &[],
            BODY.as_bytes(),
            KEY,
            SECRET,
            TIMESTAMP,
        );
        let signature = signed.iter().find(|(k, _)| k == "auth_signature").unwrap();
        assert_eq!(signature.1, SIGNATURE);
    }

    #[test]
    fn http_signature_refusals() {
        let verify = |query: &[(String, String)], body: &str, now: u64| {
            verify_http_signature(
                "POST",
                "/apps/3/events",
                query,
                body.as_bytes(),
                KEY,
                SECRET,
                now,
            )
        };
        let bad_sig = example_query(&SIGNATURE.replace('d', "e"), MD5, "1353088179");
        assert_eq!(
            verify(&bad_sig, BODY, TIMESTAMP),
            Err(SigError::BadSignature)
        );
        let not_hex = example_query("xyz", MD5, "1353088179");
        assert_eq!(
            verify(&not_hex, BODY, TIMESTAMP),
            Err(SigError::BadSignature)
        );

        // The body was changed after signing.
        let good = example_query(SIGNATURE, MD5, "1353088179");
        let tampered = BODY.replace("project-3", "project-4");
        assert_eq!(
            verify(&good, &tampered, TIMESTAMP),
            Err(SigError::BodyMd5Mismatch)
        );

        // Too old, and too far in the future.
        assert!(matches!(
            verify(&good, BODY, TIMESTAMP + 601),
            Err(SigError::Expired { .. })
        ));
        assert!(matches!(
            verify(&good, BODY, TIMESTAMP - 601),
            Err(SigError::Expired { .. })
        ));
        assert_eq!(verify(&good, BODY, TIMESTAMP + 600), Ok(()));

        // Another path or method was signed.
        assert_eq!(
            verify_http_signature(
                "POST",
                "/apps/4/events",
                &good,
                BODY.as_bytes(),
                KEY,
                SECRET,
                TIMESTAMP
            ),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            verify_http_signature(
                "PUT",
                "/apps/3/events",
                &good,
                BODY.as_bytes(),
                KEY,
                SECRET,
                TIMESTAMP
            ),
            Err(SigError::BadSignature)
        );

        let mut dup = good.clone();
        dup.push(("AUTH_KEY".into(), KEY.into()));
        assert_eq!(
            verify(&dup, BODY, TIMESTAMP),
            Err(SigError::Duplicate("auth_key".into()))
        );

        let without = |name: &str| -> Vec<(String, String)> {
            good.iter().filter(|(k, _)| k != name).cloned().collect()
        };
        assert_eq!(
            verify(&without("body_md5"), BODY, TIMESTAMP),
            Err(SigError::Missing("body_md5"))
        );
        assert_eq!(
            verify(&without("auth_signature"), BODY, TIMESTAMP),
            Err(SigError::Missing("auth_signature"))
        );
        let mut wrong_version = without("auth_version");
        wrong_version.push(("auth_version".into(), "2.0".into()));
        assert_eq!(
            verify(&wrong_version, BODY, TIMESTAMP),
            Err(SigError::UnsupportedVersion("2.0".into()))
        );
        let mut other_key = without("auth_key");
        other_key.push(("auth_key".into(), "someone-else".into()));
        assert_eq!(
            verify(&other_key, BODY, TIMESTAMP),
            Err(SigError::UnknownKey)
        );
    }

    #[test]
    fn signed_get_requests_with_extra_parameters_verify() {
        let extra = vec![(
            "info".to_string(),
            "user_count,subscription_count".to_string(),
        )];
        let query = sign_http_request("GET", "/apps/3/channels", &extra, b"", KEY, SECRET, 1000);
        assert_eq!(
            verify_http_signature("get", "/apps/3/channels", &query, b"", KEY, SECRET, 1000),
            Ok(())
        );
        // A parameter changed after signing.
        let mut changed = query.clone();
        changed[0].1 = "user_count".into();
        assert_eq!(
            verify_http_signature("GET", "/apps/3/channels", &changed, b"", KEY, SECRET, 1000),
            Err(SigError::BadSignature)
        );
    }

    #[test]
    fn events_bodies() {
        let p = parse_events_body(BODY.as_bytes(), 10_240).unwrap();
        assert_eq!(p.channels, vec!["project-3".to_string()]);
        assert_eq!(p.event, "foo");
        assert_eq!(p.data, r#"{"some":"data"}"#);
        assert_eq!(p.except_socket, None);

        let single = br#"{"name":"e","channel":"private-a","data":{"x":1},"socket_id":"1.2"}"#;
        let p = parse_events_body(single, 10_240).unwrap();
        assert_eq!(p.channels, vec!["private-a".to_string()]);
        assert_eq!(p.data, r#"{"x":1}"#);
        assert_eq!(p.except_socket.as_deref(), Some("1.2"));

        let refuse = |body: &str| parse_events_body(body.as_bytes(), 16).unwrap_err();
        assert!(matches!(refuse("{"), EventsBodyError::InvalidJson(_)));
        assert!(matches!(
            refuse(r#"{"name":"e","data":"x"}"#),
            EventsBodyError::Channels(_)
        ));
        assert!(matches!(
            refuse(r#"{"name":"e","data":"x","channel":"a","channels":["b"]}"#),
            EventsBodyError::Channels(_)
        ));
        assert!(matches!(
            refuse(r#"{"name":"e","data":"x","channels":[]}"#),
            EventsBodyError::Channels(_)
        ));
        assert_eq!(
            refuse(r#"{"name":"e","data":"x","channel":"a b"}"#),
            EventsBodyError::InvalidChannel("a b".into())
        );
        assert_eq!(
            refuse(r#"{"name":"","data":"x","channel":"a"}"#),
            EventsBodyError::InvalidName
        );
        assert_eq!(
            refuse(r#"{"name":"e","data":"x","channel":"a","socket_id":"abc"}"#),
            EventsBodyError::InvalidSocketId
        );
        assert_eq!(
            refuse(r#"{"name":"e","data":"01234567890123456","channel":"a"}"#),
            EventsBodyError::DataTooLarge { size: 17, max: 16 }
        );
        let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
        let body = serde_json::json!({"name": "e", "data": "x", "channels": many}).to_string();
        assert_eq!(refuse(&body), EventsBodyError::TooManyChannels(101));
    }
}
