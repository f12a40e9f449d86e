//! The Pusher Channels protocol (version 7) on the wire: the close and error codes we use,
//! channel kinds and names, reading a client's JSON message and writing ours.
//!
//! Pusher's convention is kept throughout: an event's `data` is a JSON *string* (a JSON document
//! encoded once more), except `pusher:error`, whose `data` is an object. pusher-js accepts both,
//! but Laravel Echo and other clients expect exactly what Pusher sends.

use serde_json::{json, Map, Value};

/// Close and `pusher:error` codes. Pusher's ranges decide what a client does after a close:
/// 4000-4099 it does not reconnect, 4100-4199 it reconnects after backing off, 4200-4299 it
/// reconnects at once; 4300-4399 are other errors (pusher-js does not reconnect on those).
pub mod codes {
    /// Close: the app key in the URL is not ours (documented by Pusher).
    pub const APP_NOT_FOUND: u16 = 4001;
    /// Close: the `protocol` query parameter names a version we do not speak (documented).
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// Error, connection stays open: a client event the socket may not send (not subscribed,
    /// or not a private or presence channel). Pusher's "connection is unauthorized".
    pub const UNAUTHORIZED: u16 = 4009;
    /// Close: the socket fell so far behind that its outbound queue overflowed. Pusher's
    /// "over capacity": the client backs off, then reconnects.
    pub const OVER_CAPACITY: u16 = 4100;
    /// Error, then close: a message larger than the limit. Ours, in the back-off range: the
    /// oversized message is lost, the application reconnects without hammering us.
    pub const MESSAGE_TOO_LARGE: u16 = 4101;
    /// Close: the server is shutting down; reconnect at once (documented generic code).
    pub const GOING_AWAY: u16 = 4200;
    /// Close: we pinged and no pong came back in time (documented).
    pub const PONG_NOT_RECEIVED: u16 = 4201;
    /// Close: the socket held no subscription for the subscribe timeout (Pusher's "closed
    /// after inactivity"). An idle socket holds a place under the connection cap for nothing.
    pub const INACTIVE: u16 = 4202;
    /// Error, connection stays open: a message we cannot read (not JSON, no event, a binary
    /// frame, an unsupported `pusher:` event, an invalid channel name). Ours, in the "other" range.
    pub const INVALID_MESSAGE: u16 = 4300;
    /// Error, connection stays open: client events over the per-second limit were dropped
    /// (documented).
    pub const RATE_LIMITED: u16 = 4301;
}

/// What a channel's name prefix makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    Public,
    Private,
    /// `private-encrypted-`: authorized like a private channel; payloads are end-to-end
    /// encrypted by the clients, so client events are not allowed (as with Pusher).
    Encrypted,
    Presence,
}

impl ChannelKind {
    pub fn of(channel: &str) -> ChannelKind {
        if channel.starts_with("presence-") {
            ChannelKind::Presence
        } else if channel.starts_with("private-encrypted-") {
            ChannelKind::Encrypted
        } else if channel.starts_with("private-") {
            ChannelKind::Private
        } else {
            ChannelKind::Public
        }
    }

    pub fn needs_auth(self) -> bool {
        self != ChannelKind::Public
    }

    pub fn allows_client_events(self) -> bool {
        matches!(self, ChannelKind::Private | ChannelKind::Presence)
    }
}

/// Pusher's channel name rule: 1 to 164 characters of `A-Z a-z 0-9 _ - = @ , . ;`.
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 164
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b))
}

/// A socket id as we hand them out (and as Pusher does): `<digits>.<digits>`.
pub fn valid_socket_id(id: &str) -> bool {
    match id.split_once('.') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.len() <= 20
                && b.len() <= 20
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// A message from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    Ping,
    Pong,
    Subscribe {
        channel: String,
        auth: Option<String>,
        /// Exactly as received: the presence signature covers these bytes.
        channel_data: Option<String>,
    },
    Unsubscribe {
        channel: String,
    },
    ClientEvent {
        event: String,
        channel: String,
        /// The event's data as the JSON string we forward.
        data: String,
    },
    /// An event we do not serve (`pusher:signin`, a misspelt name...).
    Unsupported(String),
}

/// Why a client message could not be read; the text goes back in a `pusher:error`.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Malformed {}

fn malformed(message: impl Into<String>) -> Malformed {
    Malformed(message.into())
}

/// Reads one text message. `data` may be an object (pusher-js sends objects) or a string holding
/// JSON (other clients): both are accepted.
pub fn parse_inbound(text: &str) -> Result<Inbound, Malformed> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    let Value::Object(mut message) = value else {
        return Err(malformed("a message must be a JSON object"));
    };
    let event = match message.remove("event") {
        Some(Value::String(e)) => e,
        _ => return Err(malformed("a message needs an \"event\" string")),
    };
    match event.as_str() {
        "pusher:ping" => Ok(Inbound::Ping),
        "pusher:pong" => Ok(Inbound::Pong),
        "pusher:subscribe" => {
            let mut data = data_object(message.remove("data"))?;
            let channel = take_string(&mut data, "channel")?
                .ok_or_else(|| malformed("pusher:subscribe needs data.channel"))?;
            let auth = take_string(&mut data, "auth")?;
            let channel_data = take_string(&mut data, "channel_data")?;
            Ok(Inbound::Subscribe {
                channel,
                auth,
                channel_data,
            })
        }
        "pusher:unsubscribe" => {
            let mut data = data_object(message.remove("data"))?;
            let channel = take_string(&mut data, "channel")?
                .ok_or_else(|| malformed("pusher:unsubscribe needs data.channel"))?;
            Ok(Inbound::Unsubscribe { channel })
        }
        e if e.starts_with("client-") => {
            let channel = match message.remove("channel") {
                Some(Value::String(c)) => c,
                _ => return Err(malformed("a client event needs a \"channel\" string")),
            };
            let data = match message.remove("data") {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => "null".to_string(),
            };
            Ok(Inbound::ClientEvent {
                event,
                channel,
                data,
            })
        }
        _ => Ok(Inbound::Unsupported(event)),
    }
}

fn data_object(data: Option<Value>) -> Result<Map<String, Value>, Malformed> {
    match data {
        Some(Value::Object(map)) => Ok(map),
        Some(Value::String(text)) => match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(malformed("\"data\" must be a JSON object")),
        },
        _ => Err(malformed("\"data\" must be a JSON object")),
    }
}

fn take_string(map: &mut Map<String, Value>, field: &str) -> Result<Option<String>, Malformed> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(format!("data.{field} must be a string"))),
    }
}

/// A presence member as the channel data names it.
#[derive(Debug, PartialEq)]
pub struct PresenceUser {
    pub id: String,
    pub info: Value,
}

/// Reads the presence `channel_data`: an object with `user_id` (a string, or a number as Laravel
/// sends it) and optional `user_info`.
pub fn parse_channel_data(channel_data: &str) -> Result<PresenceUser, Malformed> {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(channel_data) else {
        return Err(malformed("channel_data must be a JSON object"));
    };
    let id = match map.remove("user_id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(malformed("channel_data needs a user_id")),
    };
    let info = map.remove("user_info").unwrap_or(Value::Null);
    Ok(PresenceUser { id, info })
}

/// `{"event": ..., "channel": ..., "data": "<string>"}`, plus `user_id` for client events on
/// presence channels.
pub fn event_frame(event: &str, channel: &str, data: &str, user_id: Option<&str>) -> String {
    let mut frame = json!({"event": event, "channel": channel, "data": data});
    if let Some(user_id) = user_id {
        frame["user_id"] = Value::String(user_id.to_string());
    }
    frame.to_string()
}

pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> String {
    let data = json!({"socket_id": socket_id, "activity_timeout": activity_timeout_secs});
    json!({"event": "pusher:connection_established", "data": data.to_string()}).to_string()
}

pub fn error_frame(code: u16, message: &str) -> String {
    json!({"event": "pusher:error", "data": {"code": code, "message": message}}).to_string()
}

pub fn ping_frame() -> String {
    json!({"event": "pusher:ping", "data": "{}"}).to_string()
}

pub fn pong_frame() -> String {
    json!({"event": "pusher:pong", "data": "{}"}).to_string()
}

/// A refused (or revoked) subscription, in the shape pusher-js itself emits when its authorizer
/// fails, so `channel.bind('pusher:subscription_error', ...)` and Echo's `.error()` see it.
pub fn subscription_error(channel: &str, error: &str, status: u16) -> String {
    let data = json!({"type": "AuthError", "error": error, "status": status});
    json!({"event": "pusher:subscription_error", "channel": channel, "data": data.to_string()})
        .to_string()
}

pub fn subscription_succeeded(channel: &str, presence: Option<Value>) -> String {
    let data = match presence {
        Some(p) => json!({ "presence": p }).to_string(),
        None => "{}".to_string(),
    };
    json!({"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": data})
        .to_string()
}

pub fn member_added(channel: &str, user_id: &str, user_info: &Value) -> String {
    let data = json!({"user_id": user_id, "user_info": user_info});
    json!({"event": "pusher_internal:member_added", "channel": channel, "data": data.to_string()})
        .to_string()
}

pub fn member_removed(channel: &str, user_id: &str) -> String {
    let data = json!({ "user_id": user_id });
    json!({"event": "pusher_internal:member_removed", "channel": channel, "data": data.to_string()})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_accepts_object_and_string_data() {
        let from_object = parse_inbound(
            r#"{"event":"pusher:subscribe","data":{"channel":"private-a","auth":"k:s"}}"#,
        );
        let from_string = parse_inbound(
            r#"{"event":"pusher:subscribe","data":"{\"channel\":\"private-a\",\"auth\":\"k:s\"}"}"#,
        );
        let want = Inbound::Subscribe {
            channel: "private-a".into(),
            auth: Some("k:s".into()),
            channel_data: None,
        };
        assert_eq!(from_object, Ok(want));
        assert_eq!(from_string, from_object);
    }

    #[test]
    fn channel_data_is_kept_byte_for_byte() {
        let raw = r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"x","channel_data":"{\"user_id\": 7 ,\"user_info\":{}}"}}"#;
        match parse_inbound(raw) {
            Ok(Inbound::Subscribe { channel_data, .. }) => {
                assert_eq!(
                    channel_data.as_deref(),
                    Some(r#"{"user_id": 7 ,"user_info":{}}"#)
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_messages_are_refused_not_panicked_on() {
        for raw in [
            "",
            "[]",
            "null",
            "{}",
            r#"{"event":3}"#,
            r#"{"event":"pusher:subscribe"}"#,
            r#"{"event":"pusher:subscribe","data":"nope"}"#,
            r#"{"event":"pusher:subscribe","data":{"channel":5}}"#,
            r#"{"event":"pusher:subscribe","data":{"channel":"a","channel_data":{}}}"#,
            r#"{"event":"client-x","data":"{}"}"#,
        ] {
            assert!(parse_inbound(raw).is_err(), "{raw:?} was accepted");
        }
        assert_eq!(
            parse_inbound(r#"{"event":"pusher:signin","data":{}}"#),
            Ok(Inbound::Unsupported("pusher:signin".into()))
        );
    }

    #[test]
    fn client_event_data_is_forwarded_as_a_string() {
        let parsed =
            parse_inbound(r#"{"event":"client-typing","channel":"private-c","data":{"a":1}}"#);
        assert_eq!(
            parsed,
            Ok(Inbound::ClientEvent {
                event: "client-typing".into(),
                channel: "private-c".into(),
                data: r#"{"a":1}"#.into()
            })
        );
    }

    #[test]
    fn names_and_kinds() {
        assert!(valid_channel_name("private-App.Models.User.1"));
        assert!(valid_channel_name("presence-chat;room=@a,b"));
        assert!(!valid_channel_name(""));
        assert!(!valid_channel_name("a b"));
        assert!(!valid_channel_name(&"a".repeat(165)));
        assert_eq!(
            ChannelKind::of("private-encrypted-x"),
            ChannelKind::Encrypted
        );
        assert_eq!(ChannelKind::of("presence-x"), ChannelKind::Presence);
        assert_eq!(ChannelKind::of("privatex"), ChannelKind::Public);
        assert!(valid_socket_id("123.456"));
        assert!(!valid_socket_id("123."));
        assert!(!valid_socket_id("1a.2"));
        assert!(!valid_socket_id("12"));
    }

    #[test]
    fn presence_user_ids_may_be_numbers() {
        let user = parse_channel_data(r#"{"user_id":10,"user_info":{"name":"Ann"}}"#).unwrap();
        assert_eq!(user.id, "10");
        assert_eq!(user.info, json!({"name": "Ann"}));
        assert!(parse_channel_data(r#"{"user_info":{}}"#).is_err());
        assert!(parse_channel_data(r#"{"user_id":""}"#).is_err());
        assert!(parse_channel_data("[1]").is_err());
    }
}
