//! The hub behind the real HTTP server on a loopback port, driven by a real WebSocket client
//! (tungstenite over a blocking socket), as pusher-js would drive it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

use super::{codes, ChannelFilter, Hub, HubConfig, Publish};
use crate::http::{self, Match, Request, Response, Router, ServerHandle};

const APP_ID: &str = "1";
const KEY: &str = "app-key";
const SECRET: &str = "app-secret";
/// How long a test waits for any one message before failing.
const WAIT: Duration = Duration::from_secs(5);

/// The route the API layer adds, on the real router.
struct App {
    hub: Hub,
    router: Router<()>,
}

impl http::Handler for App {
    fn handle(&self, req: &Request, _: &mut dyn std::any::Any) -> Response {
        match self.router.find(&req.method, &req.path) {
            Match::Found(..) => self.hub.upgrade_response(req),
            _ => Response::error(404, "not_found", "no such resource"),
        }
    }
}

struct Server {
    addr: SocketAddr,
    hub: Hub,
    handle: Option<ServerHandle>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

fn config() -> HubConfig {
    HubConfig::new(APP_ID, KEY, SECRET)
}

fn start(config: HubConfig) -> Server {
    start_with(config, http::Config::default())
}

fn start_with(config: HubConfig, http_config: http::Config) -> Server {
    let hub = Hub::start(config).expect("start the hub");
    let mut router = Router::new();
    router.add("GET", "/app/{key}", ());
    let app = App {
        hub: hub.clone(),
        router,
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let handle = http::serve(
        listener,
        http::Config {
            workers: 4,
            ..http_config
        },
        Arc::new(app),
    )
    .expect("start the server");
    Server {
        addr: handle.local_addr(),
        hub,
        handle: Some(handle),
    }
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Client {
    ws: WebSocket<TcpStream>,
    socket_id: String,
}

/// Opens a WebSocket; `Err(status)` if the server answered the handshake with an HTTP error.
fn open(addr: SocketAddr, key: &str, origin: Option<&str>) -> Result<WebSocket<TcpStream>, u16> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let uri: tungstenite::http::Uri =
        format!("ws://{addr}/app/{key}?protocol=7&client=js&version=8.4.0")
            .parse()
            .unwrap();
    let mut request = ClientRequestBuilder::new(uri);
    if let Some(origin) = origin {
        request = request.with_header("Origin", origin);
    }
    match tungstenite::client::client(request, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

/// The `data` string of a frame, parsed.
fn data(frame: &Value) -> Value {
    let text = frame["data"]
        .as_str()
        .unwrap_or_else(|| panic!("data is not a string in {frame}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("data is not JSON ({e}) in {frame}"))
}

impl Client {
    fn connect(server: &Server) -> Client {
        let ws = open(server.addr, KEY, None).expect("upgrade");
        let mut client = Client {
            ws,
            socket_id: String::new(),
        };
        let hello = client.recv();
        assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
        client.socket_id = data(&hello)["socket_id"].as_str().unwrap().to_string();
        client
    }

    fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .expect("send");
    }

    /// The next text message; fails on a close or a timeout.
    fn recv(&mut self) -> Value {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
                }
                Ok(Message::Close(frame)) => panic!("closed by the server: {frame:?}"),
                Ok(_) => continue,
                Err(e) => panic!("no message: {e}"),
            }
        }
    }

    fn recv_event(&mut self, event: &str) -> Value {
        let frame = self.recv();
        assert_eq!(frame["event"], event, "unexpected frame {frame}");
        frame
    }

    /// Reads until the server's close frame and returns its code; text messages before it are
    /// counted.
    fn close_code(&mut self) -> (u16, usize) {
        let mut texts = 0;
        loop {
            match self.ws.read() {
                Ok(Message::Text(_)) => texts += 1,
                Ok(Message::Close(Some(frame))) => return (frame.code.into(), texts),
                Ok(Message::Close(None)) => panic!("closed without a code"),
                Ok(_) => {}
                Err(e) => panic!("no close frame: {e} (after {texts} messages)"),
            }
        }
    }

    /// A round trip: everything the server sent this socket before the pong is read before it.
    fn assert_next_is_pong(&mut self) {
        self.send(json!({"event": "pusher:ping", "data": {}}));
        self.recv_event("pusher:pong");
    }

    fn subscribe(
        &mut self,
        channel: &str,
        auth: Option<&str>,
        channel_data: Option<&str>,
    ) -> Value {
        let mut data = json!({ "channel": channel });
        if let Some(auth) = auth {
            data["auth"] = json!(auth);
        }
        if let Some(cd) = channel_data {
            data["channel_data"] = json!(cd);
        }
        self.send(json!({"event": "pusher:subscribe", "data": data}));
        self.recv()
    }

    fn subscribe_ok(
        &mut self,
        channel: &str,
        auth: Option<&str>,
        channel_data: Option<&str>,
    ) -> Value {
        let reply = self.subscribe(channel, auth, channel_data);
        assert_eq!(
            reply["event"], "pusher_internal:subscription_succeeded",
            "{reply}"
        );
        assert_eq!(reply["channel"], channel);
        data(&reply)
    }

    fn subscribe_private(&mut self, hub: &Hub, channel: &str) {
        let auth = hub.sign(&self.socket_id, channel, None);
        self.subscribe_ok(channel, Some(&auth), None);
    }

    fn subscribe_presence(&mut self, hub: &Hub, channel: &str, user: &str, name: &str) -> Value {
        let channel_data = json!({"user_id": user, "user_info": {"name": name}}).to_string();
        let auth = hub.sign(&self.socket_id, channel, Some(&channel_data));
        self.subscribe_ok(channel, Some(&auth), Some(&channel_data))
    }

    fn client_event(&mut self, event: &str, channel: &str, data: Value) {
        self.send(json!({"event": event, "channel": channel, "data": data}));
    }
}

fn publish(hub: &Hub, channel: &str, event: &str, data: &str, except: Option<&str>) {
    hub.publish(Publish {
        channels: vec![channel.to_string()],
        event: event.to_string(),
        data: data.to_string(),
        except_socket: except.map(str::to_string),
    })
    .expect("publish");
}

#[test]
fn connection_established_names_a_socket_and_the_activity_timeout() {
    let server = start(config());
    let mut ws = open(server.addr, KEY, None).unwrap();
    let Message::Text(text) = ws.read().unwrap() else {
        panic!("expected a text frame")
    };
    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!(frame["event"], "pusher:connection_established");
    // Pusher sends data as a JSON string, not an object.
    let inner = data(&frame);
    assert_eq!(inner["activity_timeout"], 120);
    let socket_id = inner["socket_id"].as_str().unwrap();
    let (a, b) = socket_id.split_once('.').expect("a dot in the socket id");
    assert!(
        !a.is_empty() && !b.is_empty() && (a.to_string() + b).bytes().all(|c| c.is_ascii_digit()),
        "socket id {socket_id:?}"
    );
    eventually("the connection to count", || {
        server.hub.connection_count() == 1
    });

    let mut other = Client::connect(&server);
    assert_ne!(other.socket_id, socket_id);
    other.send(json!({"event": "pusher:ping", "data": {}}));
    let pong = other.recv();
    assert_eq!(pong["event"], "pusher:pong");

    drop(ws);
    drop(other);
    eventually("closed sockets to be forgotten", || {
        server.hub.connection_count() == 0
    });
}

#[test]
fn silent_clients_are_pinged_then_closed_with_4201() {
    let mut c = config();
    c.activity_timeout = Duration::from_millis(300);
    c.pong_timeout = Duration::from_millis(300);
    let server = start(c);
    let mut client = Client::connect(&server);

    // Answering keeps the connection.
    let started = Instant::now();
    client.recv_event("pusher:ping");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "pinged too early"
    );
    client.send(json!({"event": "pusher:pong", "data": {}}));
    // Silent again: another ping, and this time no answer.
    client.recv_event("pusher:ping");
    let (code, others) = client.close_code();
    assert_eq!((code, others), (codes::PONG_NOT_RECEIVED, 0));
    drop(client);
    eventually("the socket to be dropped", || {
        server.hub.connection_count() == 0
    });
}

#[test]
fn an_unknown_app_key_is_told_4001_and_closed() {
    let server = start(config());
    let mut ws = open(server.addr, "not-our-key", None).expect("Pusher upgrades, then refuses");
    let Message::Text(text) = ws.read().unwrap() else {
        panic!("expected pusher:error first")
    };
    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!(frame["event"], "pusher:error");
    assert_eq!(frame["data"]["code"], 4001);
    let mut client = Client {
        ws,
        socket_id: String::new(),
    };
    assert_eq!(client.close_code(), (codes::APP_NOT_FOUND, 0));
}

#[test]
fn origins_outside_the_allow_list_get_403() {
    let mut c = config();
    c.allowed_origins = Some(vec!["https://app.example.com".into()]);
    let server = start(c);
    assert_eq!(
        open(server.addr, KEY, Some("https://evil.example.com")).err(),
        Some(403)
    );
    assert!(open(server.addr, KEY, Some("https://app.example.com")).is_ok());
    // Not a browser: nothing to protect, nothing to check.
    assert!(open(server.addr, KEY, None).is_ok());
}

#[test]
fn handshakes_that_are_not_websocket_13_are_refused() {
    let server = start(config());
    let raw = |head: &str| {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let plain = raw("GET /app/app-key HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    let old = raw("GET /app/app-key HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n");
    assert!(old.starts_with("HTTP/1.1 426"), "{old}");
    assert!(old.contains("Sec-WebSocket-Version: 13"), "{old}");
    let bad_key = raw("GET /app/app-key HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n");
    assert!(bad_key.starts_with("HTTP/1.1 400"), "{bad_key}");
    // RFC 6455's own example key and accept value.
    let good = raw("GET /app/app-key HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    assert!(good.starts_with("HTTP/1.1 101"), "{good}");
    assert!(
        good.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{good}"
    );
}

#[test]
fn public_channels_need_no_auth_and_receive_publishes() {
    let server = start(config());
    let mut client = Client::connect(&server);
    assert_eq!(client.subscribe_ok("news", None, None), json!({}));
    publish(&server.hub, "news", "story", r#"{"title":"hi"}"#, None);
    let frame = client.recv_event("story");
    assert_eq!(frame["channel"], "news");
    assert_eq!(data(&frame), json!({"title": "hi"}));

    // Unsubscribed: nothing more from that channel.
    client.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}));
    client.assert_next_is_pong();
    client.subscribe_ok("other", None, None);
    publish(&server.hub, "news", "story", "{}", None);
    publish(&server.hub, "other", "marker", "{}", None);
    client.recv_event("marker");
}

#[test]
fn private_channels_need_a_signature_for_this_socket() {
    let server = start(config());
    let mut client = Client::connect(&server);
    let mut other = Client::connect(&server);

    let refusals = [
        None,
        Some(format!("{KEY}:{}", "0".repeat(64))),
        // Signed for another socket.
        Some(server.hub.sign(&other.socket_id, "private-orders", None)),
        // Signed with another secret.
        Some(super::sign_channel(
            "guess",
            KEY,
            &client.socket_id,
            "private-orders",
            None,
        )),
    ];
    for auth in refusals {
        let reply = client.subscribe("private-orders", auth.as_deref(), None);
        assert_eq!(reply["event"], "pusher:subscription_error", "{reply}");
        assert_eq!(reply["channel"], "private-orders");
        let error = data(&reply);
        assert_eq!(error["type"], "AuthError");
        assert_eq!(error["status"], 401);
        assert!(error["error"].is_string());
    }
    // Refused subscriptions receive nothing.
    other.subscribe_private(&server.hub, "private-orders");
    publish(&server.hub, "private-orders", "paid", "{}", None);
    other.recv_event("paid");
    client.assert_next_is_pong();

    client.subscribe_private(&server.hub, "private-orders");
    publish(&server.hub, "private-orders", "paid", "{}", None);
    client.recv_event("paid");
}

#[test]
fn presence_members_are_announced_once_per_user() {
    let server = start(config());
    let hub = &server.hub;
    let room = "presence-room";
    let mut bob = Client::connect(&server);
    let roster = bob.subscribe_presence(hub, room, "b", "Bob");
    assert_eq!(
        roster,
        json!({"presence": {"count": 1, "ids": ["b"], "hash": {"b": {"name": "Bob"}}}})
    );

    let mut ann1 = Client::connect(&server);
    let roster = ann1.subscribe_presence(hub, room, "a", "Ann");
    assert_eq!(roster["presence"]["count"], 2);
    let mut ids: Vec<&str> = roster["presence"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(roster["presence"]["hash"]["a"], json!({"name": "Ann"}));
    let added = bob.recv_event("pusher_internal:member_added");
    assert_eq!(added["channel"], room);
    assert_eq!(
        data(&added),
        json!({"user_id": "a", "user_info": {"name": "Ann"}})
    );
    // Not to the socket that joined.
    ann1.assert_next_is_pong();

    // Ann's second tab: already a member, nobody is told.
    let mut ann2 = Client::connect(&server);
    let roster = ann2.subscribe_presence(hub, room, "a", "Ann");
    assert_eq!(roster["presence"]["count"], 2);
    publish(hub, room, "marker", "1", None);
    bob.recv_event("marker");
    ann1.recv_event("marker");
    ann2.recv_event("marker");

    // One tab leaves: Ann is still there.
    ann1.send(json!({"event": "pusher:unsubscribe", "data": {"channel": room}}));
    ann1.assert_next_is_pong();
    publish(hub, room, "marker", "2", None);
    bob.recv_event("marker");

    // The last one goes (the connection drops): now she has left.
    drop(ann2);
    let removed = bob.recv_event("pusher_internal:member_removed");
    assert_eq!(data(&removed), json!({"user_id": "a"}));

    // A presence subscription needs the signed channel_data, byte for byte.
    let mut eve = Client::connect(&server);
    let signed = json!({"user_id": "e"}).to_string();
    let auth = hub.sign(&eve.socket_id, room, Some(&signed));
    let forged = json!({"user_id": "b"}).to_string();
    let reply = eve.subscribe(room, Some(&auth), Some(&forged));
    assert_eq!(reply["event"], "pusher:subscription_error");
    let reply = eve.subscribe(room, Some(&auth), None);
    assert_eq!(reply["event"], "pusher:subscription_error");
    publish(hub, room, "marker", "3", None);
    bob.recv_event("marker");
}

#[test]
fn client_events_follow_pushers_rules() {
    let server = start(config());
    let hub = &server.hub;
    let mut alice = Client::connect(&server);
    let mut bob = Client::connect(&server);

    // Not on public channels.
    alice.subscribe_ok("lobby", None, None);
    bob.subscribe_ok("lobby", None, None);
    alice.client_event("client-hello", "lobby", json!({}));
    let error = alice.recv_event("pusher:error");
    assert_eq!(error["data"]["code"], codes::UNAUTHORIZED);

    // Not on a channel the sender has not joined.
    bob.subscribe_private(hub, "private-chat");
    alice.client_event("client-hello", "private-chat", json!({}));
    let error = alice.recv_event("pusher:error");
    assert_eq!(error["data"]["code"], codes::UNAUTHORIZED);

    // Delivered to the others, never echoed.
    alice.subscribe_private(hub, "private-chat");
    alice.client_event("client-typing", "private-chat", json!({"who": "alice"}));
    let typing = bob.recv_event("client-typing");
    assert_eq!(typing["channel"], "private-chat");
    assert_eq!(data(&typing), json!({"who": "alice"}));
    assert!(typing.get("user_id").is_none());
    alice.assert_next_is_pong();
    // The earlier refused events never reached Bob either.
    publish(hub, "lobby", "marker", "{}", None);
    bob.recv_event("marker");
    alice.recv_event("marker");

    // On presence channels the sender's user id is added.
    alice.subscribe_presence(hub, "presence-room", "a", "Alice");
    bob.subscribe_presence(hub, "presence-room", "b", "Bob");
    alice.recv_event("pusher_internal:member_added");
    alice.client_event("client-typing", "presence-room", json!("raw string"));
    let typing = bob.recv_event("client-typing");
    assert_eq!(typing["user_id"], "a");
    assert_eq!(typing["data"], "raw string");
}

#[test]
fn client_events_over_the_rate_are_dropped_with_one_error() {
    let mut c = config();
    c.client_events_per_sec = 10;
    let server = start(c);
    let mut alice = Client::connect(&server);
    let mut bob = Client::connect(&server);
    alice.subscribe_private(&server.hub, "private-chat");
    bob.subscribe_private(&server.hub, "private-chat");
    for i in 0..15 {
        alice.client_event("client-n", "private-chat", json!({ "i": i }));
    }
    let error = alice.recv_event("pusher:error");
    assert_eq!(error["data"]["code"], codes::RATE_LIMITED);
    alice.assert_next_is_pong();
    for i in 0..10 {
        assert_eq!(data(&bob.recv_event("client-n")), json!({ "i": i }));
    }
    publish(&server.hub, "private-chat", "marker", "{}", None);
    bob.recv_event("marker");
}

#[test]
fn a_message_over_the_limit_closes_the_socket() {
    let server = start(config());
    let mut client = Client::connect(&server);
    client.subscribe_ok("lobby", None, None);
    let big = json!({"event": "client-x", "channel": "private-a", "data": "x".repeat(11 * 1024)});
    client.send(big);
    let error = client.recv_event("pusher:error");
    assert_eq!(error["data"]["code"], codes::MESSAGE_TOO_LARGE);
    assert_eq!(client.close_code(), (codes::MESSAGE_TOO_LARGE, 0));
    drop(client);
    eventually("the socket to be dropped", || {
        server.hub.connection_count() == 0
    });
}

#[test]
fn malformed_messages_get_an_error_and_the_socket_stays() {
    let server = start(config());
    let mut client = Client::connect(&server);
    for bad in [
        "not json",
        "[1,2]",
        r#"{"data":{}}"#,
        r#"{"event":"pusher:subscribe","data":{"channel":"a b"}}"#,
        r#"{"event":"pusher:nonsense"}"#,
    ] {
        client.ws.send(Message::text(bad)).unwrap();
        let error = client.recv_event("pusher:error");
        assert_eq!(error["data"]["code"], codes::INVALID_MESSAGE, "for {bad}");
        assert!(error["data"]["message"].is_string());
    }
    client.ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    let error = client.recv_event("pusher:error");
    assert_eq!(error["data"]["code"], codes::INVALID_MESSAGE);
    client.assert_next_is_pong();
    // WebSocket-level pings are answered too.
    client.ws.send(Message::Ping(vec![7u8].into())).unwrap();
    match client.ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], &[7u8]),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[test]
fn publishes_skip_the_excepted_socket() {
    let server = start(config());
    let mut first = Client::connect(&server);
    let mut second = Client::connect(&server);
    first.subscribe_ok("news", None, None);
    second.subscribe_ok("news", None, None);
    publish(
        &server.hub,
        "news",
        "one",
        "{}",
        Some(&first.socket_id.clone()),
    );
    publish(&server.hub, "news", "two", "{}", None);
    second.recv_event("one");
    second.recv_event("two");
    first.recv_event("two");

    // Several channels at once; sockets on none of them get nothing.
    first.subscribe_ok("sports", None, None);
    server
        .hub
        .publish(Publish {
            channels: vec!["sports".into(), "weather".into()],
            event: "multi".into(),
            data: "{}".into(),
            except_socket: None,
        })
        .unwrap();
    let frame = first.recv_event("multi");
    assert_eq!(frame["channel"], "sports");
    second.assert_next_is_pong();
}

#[test]
fn revoked_subscriptions_are_ended() {
    let server = start(config());
    let hub = &server.hub;
    let mut client = Client::connect(&server);
    let mut watcher = Client::connect(&server);
    client.subscribe_ok("lobby", None, None);

    let channel = "private-orders";
    hub.record_authorization(&client.socket_id, channel, "user-7")
        .unwrap();
    client.subscribe_private(hub, channel);
    watcher.subscribe_presence(hub, "presence-room", "w", "Watcher");
    client.subscribe_presence(hub, "presence-room", "7", "Seven");
    watcher.recv_event("pusher_internal:member_added");

    let subs = hub.subscriptions().unwrap();
    let mine: Vec<_> = subs
        .iter()
        .filter(|s| s.socket_id == client.socket_id)
        .map(|s| (s.channel.as_str(), s.user_id.as_deref()))
        .collect();
    assert_eq!(mine.len(), 3, "{subs:?}");
    assert!(mine.contains(&("private-orders", Some("user-7"))));
    assert!(mine.contains(&("presence-room", Some("7"))));
    assert!(mine.contains(&("lobby", None)));

    let started = Instant::now();
    let revoked = hub
        .unsubscribe_user("user-7", ChannelFilter::Prefixed(vec!["private-".into()]))
        .unwrap();
    assert_eq!(revoked, 1);
    let error = client.recv_event("pusher:subscription_error");
    assert_eq!(error["channel"], channel);
    assert_eq!(data(&error)["status"], 403);
    assert!(started.elapsed() < Duration::from_secs(5));
    publish(hub, channel, "paid", "{}", None);
    publish(hub, "lobby", "marker", "{}", None);
    client.recv_event("marker");

    // A presence subscription revoked by socket and channel: the others see the member leave.
    let revoked = hub
        .revoke(vec![(client.socket_id.clone(), "presence-room".into())])
        .unwrap();
    assert_eq!(revoked, 1);
    client.recv_event("pusher:subscription_error");
    let removed = watcher.recv_event("pusher_internal:member_removed");
    assert_eq!(data(&removed), json!({"user_id": "7"}));

    let left: Vec<_> = hub
        .subscriptions()
        .unwrap()
        .into_iter()
        .filter(|s| s.socket_id == client.socket_id)
        .map(|s| s.channel)
        .collect();
    assert_eq!(left, ["lobby"]);
    assert_eq!(hub.revoke(vec![("1.2".into(), "lobby".into())]).unwrap(), 0);
}

#[test]
fn a_consumer_that_falls_behind_is_closed_with_4100() {
    let mut c = config();
    c.outbound_queue_cap = 64 * 1024;
    c.close_linger = Duration::from_secs(20);
    let server = start(c);
    let mut slow = Client::connect(&server);
    let mut fast = Client::connect(&server);
    slow.subscribe_ok("firehose", None, None);

    let payload = json!("x".repeat(8 * 1024)).to_string();
    let total = 4000;
    for _ in 0..total {
        publish(&server.hub, "firehose", "chunk", &payload, None);
    }
    // Commands are handled in order: once this answers, every publish has been.
    let subs = server.hub.subscriptions().unwrap();
    assert!(
        subs.iter().all(|s| s.socket_id != slow.socket_id),
        "the slow socket should have been dropped from its channels"
    );
    let (code, received) = slow.close_code();
    assert_eq!(code, codes::OVER_CAPACITY);
    assert!(received < total, "received all {received} events");
    // Others are unaffected.
    fast.assert_next_is_pong();
    drop(slow);
    eventually("the slow socket to be dropped", || {
        server.hub.connection_count() == 1
    });
}

#[test]
fn websockets_hold_their_place_under_the_connection_cap() {
    let server = start_with(
        config(),
        http::Config {
            max_connections: 2,
            ..http::Config::default()
        },
    );
    let first = Client::connect(&server);
    let _second = Client::connect(&server);
    assert_eq!(open(server.addr, KEY, None).err(), Some(503));
    drop(first);
    eventually("the slot to be released", || {
        server.hub.connection_count() == 1
    });
    let mut third = None;
    eventually("a new connection to be accepted", || {
        third = open(server.addr, KEY, None).ok();
        third.is_some()
    });
}

#[test]
fn stopping_the_hub_closes_sockets_with_4200() {
    let mut server = start(config());
    let mut client = Client::connect(&server);
    let handle = server.handle.take();
    drop(server);
    // The HTTP handler still holds a clone; shutting the server down drops the last one.
    if let Some(h) = handle {
        h.shutdown();
    }
    let (code, _) = client.close_code();
    assert_eq!(code, u16::from(CloseCode::from(codes::GOING_AWAY)));
}
