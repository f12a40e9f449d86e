//! The WebSocket opening handshake on `GET /app/{key}` (RFC 6455 section 4.2): which requests
//! are upgraded, which are refused with a plain HTTP answer, and handing the upgraded socket to
//! the event loop.

use crate::http::{Request, Response, Upgraded};

use super::engine::{Command, Refusal};
use super::{codes, Hub};

/// Protocol versions we speak: pusher-js sends 7; 5 and 6 differ only in ways we do not use.
const PROTOCOLS: std::ops::RangeInclusive<u32> = 5..=7;

pub(super) fn upgrade_response(hub: &Hub, req: &Request) -> Response {
    if req.method != "GET" {
        return Response::error(405, "method_not_allowed", "a WebSocket handshake is a GET")
            .with_header("Allow", "GET");
    }
    if !has_token(req, "upgrade", "websocket") || !has_token(req, "connection", "upgrade") {
        return Response::error(
            400,
            "bad_request",
            "expected a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)",
        );
    }
    if req.header("sec-websocket-version").map(str::trim) != Some("13") {
        // RFC 6455 4.4: name the version we do support.
        return Response::error(
            426,
            "upgrade_required",
            "only WebSocket version 13 is supported",
        )
        .with_header("Sec-WebSocket-Version", "13");
    }
    let Some(ws_key) = req.header("sec-websocket-key").map(str::trim) else {
        return Response::error(400, "bad_request", "missing Sec-WebSocket-Key");
    };
    if !matches!(data_encoding::BASE64.decode(ws_key.as_bytes()), Ok(k) if k.len() == 16) {
        return Response::error(400, "bad_request", "invalid Sec-WebSocket-Key");
    }
    let config = hub.config();
    if let (Some(allowed), Some(origin)) = (&config.allowed_origins, req.header("origin")) {
        let origin = origin.trim();
        let ok = allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin));
        if !ok {
            log::warn!(
                "realtime: refused a WebSocket from origin {}",
                crate::http::log_safe(origin)
            );
            return Response::error(403, "forbidden", "this origin may not connect");
        }
    }

    let Some(ticket) = hub.admit(req.client_ip) else {
        log::warn!(
            "realtime: refused a WebSocket from {}: at the limit",
            req.client_ip
        );
        return Response::error(503, "over_capacity", "too many WebSockets open")
            .with_header("Retry-After", "5");
    };
    let key = req.path.rsplit_once("/app/").map_or("", |(_, k)| k);
    let refusal = if key != config.key {
        Some(Refusal {
            code: codes::APP_NOT_FOUND,
            message: format!("App key {key} not in this cluster"),
        })
    } else {
        match req.query_param("protocol").map(|p| p.parse::<u32>()) {
            Some(Ok(v)) if PROTOCOLS.contains(&v) => None,
            None => None,
            Some(_) => Some(Refusal {
                code: codes::UNSUPPORTED_PROTOCOL,
                message: "Unsupported protocol version".into(),
            }),
        }
    };

    let accept = tungstenite::handshake::derive_accept_key(ws_key.as_bytes());
    let hub = hub.clone();
    Response::upgrade(
        vec![
            ("Upgrade".into(), "websocket".into()),
            ("Connection".into(), "Upgrade".into()),
            ("Sec-WebSocket-Accept".into(), accept.into()),
        ],
        Box::new(move |upgraded: Upgraded| {
            let Upgraded {
                stream,
                leftover,
                slot,
            } = upgraded;
            // The loop never blocks on a socket; if this fails the socket is dropped (closed)
            // here and its slot freed.
            if let Err(e) = stream.set_nonblocking(true) {
                log::warn!("realtime: could not make an upgraded socket non-blocking: {e}");
                return;
            }
            if let Err(e) = hub.send(Command::Connect {
                stream,
                leftover,
                slot,
                ticket,
                refusal,
            }) {
                log::warn!("realtime: dropped an upgraded socket: {e}");
            }
        }),
    )
}

/// Whether a comma-separated header holds `token` (case-insensitive), in any of its instances.
fn has_token(req: &Request, header: &str, token: &str) -> bool {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(header))
        .flat_map(|h| h.value.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}
