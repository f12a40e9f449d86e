//! Real-time across nodes (`--redis-url`): nodes in this process bridged by one real Redis
//! (Debian's `redis-server`, started on a free port and killed when the test ends). Events,
//! the HTTP API, isolation between apps and Redis outages are tried on whole apps, each with its
//! own data directory, given the same Pusher credentials (as nodes on one catalog will share
//! them) before they open. Private and presence channels are tried on hubs alone, behind the
//! HTTP layer: an app's watcher ends, within 2 s, any private subscription its own catalog does
//! not justify, and two apps' catalogs cannot yet hold the same company (no shared catalog).
//!
//! Without `redis-server` the tests print a note and pass, except under `CI=true`, where they
//! fail: `.ci/run` installs it.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tenantd::http::{Handler, Request, Response};
use tenantd::realtime::{ChannelFilter, Hub, HubConfig, Publish};

use crate::redis_support::Redis;
use crate::support::{frame_data, spawn_app_with, TestApp, TestServer, Ws, WS_WAIT};

/// A revocation must reach the socket on another node within this long.
const REVOKED_WITHIN: Duration = Duration::from_secs(5);
/// How long a node may take to (re)join Redis: a first connection, or the backoff after an
/// outage (capped at 2 s) and a reconnection.
const LINKED_WITHIN: Duration = Duration::from_secs(15);

/// What the tests need of a node: its hub, and a WebSocket to it.
trait Node {
    fn hub(&self) -> &Hub;
    fn ws(&self) -> Ws;
}

impl Node for TestApp {
    fn hub(&self) -> &Hub {
        &self.app.hub
    }
    fn ws(&self) -> Ws {
        TestApp::ws(self)
    }
}

/// A hub alone behind the HTTP layer (`GET /app/{key}`), on `redis`.
struct HubNode {
    hub: Hub,
    server: TestServer,
}

struct Upgrade(Hub);

impl Handler for Upgrade {
    fn handle(&self, req: &Request, _: &mut dyn std::any::Any) -> Response {
        if req.method == "GET" && req.path.starts_with("/app/") {
            self.0.upgrade_response(req)
        } else {
            Response::error(404, "not_found", "no such resource")
        }
    }
}

const HUB_APP: (&str, &str, &str) = ("4242", "hub-key", "hub-secret");

fn hub_node(redis: &Redis) -> HubNode {
    hub_node_with_secret(redis, HUB_APP.2)
}

fn hub_node_with_secret(redis: &Redis, secret: &str) -> HubNode {
    let (app_id, key, _) = HUB_APP;
    let mut config = HubConfig::new(app_id, key, secret);
    config.redis_url = Some(redis.url());
    config.require_recorded_grant = true;
    let hub = Hub::start(config).expect("start the hub");
    let http = tenantd::http::Config {
        workers: 2,
        ..Default::default()
    };
    let server = TestServer::start(http, std::sync::Arc::new(Upgrade(hub.clone())));
    HubNode { hub, server }
}

impl Node for HubNode {
    fn hub(&self) -> &Hub {
        &self.hub
    }
    fn ws(&self) -> Ws {
        let addr = self.server.addr;
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WS_WAIT)).unwrap();
        let url = format!(
            "ws://{addr}/app/{}?protocol=7&client=js&version=8.4.0",
            HUB_APP.1
        );
        let (ws, _) = tungstenite::client::client(url.as_str(), stream).expect("upgrade");
        let mut ws = Ws {
            ws,
            socket_id: String::new(),
        };
        let hello = ws.recv_event("pusher:connection_established", None);
        ws.socket_id = frame_data(&hello)["socket_id"]
            .as_str()
            .expect("a socket_id")
            .to_string();
        ws
    }
}

/// A node on `redis`: with the Pusher app of `same_app_as`, or a new app of its own.
fn node(redis: &Redis, same_app_as: Option<&TestApp>) -> TestApp {
    let url = redis.url();
    let credentials = same_app_as.map(|a| a.app.realtime_credentials());
    spawn_app_with(move |c| {
        c.realtime.redis_url = Some(url);
        if let Some((app_id, key, secret)) = credentials {
            let catalog =
                tenantd::catalog::Catalog::open(&c.data_dir, tenantd::db::Create::IfMissing)
                    .unwrap();
            catalog.meta_set("realtime_app_id", &app_id).unwrap();
            catalog.meta_set("realtime_key", &key).unwrap();
            catalog.meta_set("realtime_secret", &secret).unwrap();
        }
    })
}

fn publish(node: &impl Node, channel: &str, event: &str, data: Value, except: Option<&Ws>) {
    node.hub()
        .publish(Publish {
            channels: vec![channel.to_string()],
            event: event.to_string(),
            data: data.to_string(),
            except_socket: except.map(|ws| ws.socket_id.clone()),
        })
        .unwrap();
}

fn subscribed(node: &impl Node, channel: &str) -> Ws {
    let mut ws = node.ws();
    let ok = ws.subscribe(channel, None, None);
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    ws
}

/// Subscribed to a private channel with an authorization recorded for `owner`, as
/// `/broadcasting/auth` records it.
fn subscribed_private(node: &impl Node, channel: &str, owner: &str) -> Ws {
    let mut ws = node.ws();
    let hub = node.hub();
    hub.record_authorization(&ws.socket_id, channel, owner)
        .unwrap();
    let auth = hub.sign(&ws.socket_id, channel, None);
    let ok = ws.subscribe(channel, Some(&auth), None);
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    ws
}

/// Joined a presence channel as `user_id`; returns the socket and the roster it was given.
fn joined_presence(node: &impl Node, channel: &str, user_id: &str, info: Value) -> (Ws, Value) {
    let mut ws = node.ws();
    let hub = node.hub();
    hub.record_authorization(&ws.socket_id, channel, user_id)
        .unwrap();
    let channel_data = json!({ "user_id": user_id, "user_info": info }).to_string();
    let auth = hub.sign(&ws.socket_id, channel, Some(&channel_data));
    let ok = ws.subscribe(channel, Some(&auth), Some(&channel_data));
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    let roster = frame_data(&ok)["presence"].clone();
    (ws, roster)
}

fn ids(roster: &Value) -> Vec<String> {
    let mut ids: Vec<String> = roster["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids in {roster}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// The next frame is `event` on `channel` with this data.
fn expect(ws: &mut Ws, channel: &str, event: &str, data: Value) {
    let frame = ws.recv_event(event, Some(channel));
    assert_eq!(frame_data(&frame), data, "{frame}");
}

/// Waits until what `from` publishes reaches `to`'s sockets (both nodes have joined Redis, or
/// joined it again), and until nothing published meanwhile is still on its way.
fn wait_for_link(from: &impl Node, to: &impl Node) {
    let channel = format!("link-{:x}", rand::random::<u64>());
    let mut ws = subscribed(to, &channel);
    let mut n = 0;
    let deadline = Instant::now() + LINKED_WITHIN;
    loop {
        n += 1;
        publish(from, &channel, "link", json!({ "n": n }), None);
        if let Some(frame) = ws.recv_within(Duration::from_millis(200)) {
            // In order: once the last one arrives, none is left behind it.
            let mut seen = frame_data(&frame)["n"].as_i64().unwrap();
            while seen != n {
                seen = frame_data(&ws.recv_event("link", Some(&channel)))["n"]
                    .as_i64()
                    .unwrap();
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no event crossed between the nodes within {LINKED_WITHIN:?}"
        );
    }
}

#[test]
fn an_event_published_on_one_node_reaches_the_others_once_and_never_another_app() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let a = node(&redis, None);
    let b = node(&redis, Some(&a));
    // Another app on the same Redis, on two nodes too.
    let c = node(&redis, None);
    let d = node(&redis, Some(&c));
    assert_ne!(
        a.app.realtime_credentials().0,
        c.app.realtime_credentials().0
    );
    wait_for_link(&a, &b);
    wait_for_link(&b, &a);
    wait_for_link(&d, &c);

    let mut on_a = subscribed(&a, "news");
    let mut on_b = subscribed(&b, "news");
    let mut on_c = subscribed(&c, "news");

    publish(&a, "news", "e1", json!({"from": "a"}), None);
    expect(&mut on_a, "news", "e1", json!({"from": "a"}));
    expect(&mut on_b, "news", "e1", json!({"from": "a"}));

    // B's publish reaches A after A's own e1 went round through Redis: an echo of e1 would come
    // first.
    publish(&b, "news", "e2", json!({"from": "b"}), None);
    expect(&mut on_b, "news", "e2", json!({"from": "b"}));
    expect(&mut on_a, "news", "e2", json!({"from": "b"}));
    publish(&a, "news", "e3", json!({"from": "a"}), None);
    expect(&mut on_a, "news", "e3", json!({"from": "a"}));
    expect(&mut on_b, "news", "e3", json!({"from": "a"}));

    // `toOthers()`: the socket named is skipped on whichever node it is connected to.
    publish(&b, "news", "e4", json!({}), Some(&on_a));
    expect(&mut on_b, "news", "e4", json!({}));
    publish(&b, "news", "e5", json!({}), None);
    expect(&mut on_b, "news", "e5", json!({}));
    expect(&mut on_a, "news", "e5", json!({}));

    // Through the Pusher HTTP API of B, as an existing publisher would.
    let (app_id, key, secret) = b.app.realtime_credentials();
    let body = json!({"name": "e6", "channels": ["news"], "data": "{\"via\":\"http\"}"});
    let path = format!("/apps/{app_id}/events");
    let body = body.to_string();
    let params = tenantd::realtime::sign_http_request(
        "POST",
        &path,
        &[],
        body.as_bytes(),
        &key,
        &secret,
        tenantd::catalog::unix_now() as u64,
    );
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let reply = b.call("POST", &format!("{path}?{query}"), &[], Some(&body));
    assert_eq!(reply.status, 200, "{}", reply.text());
    expect(&mut on_b, "news", "e6", json!({"via": "http"}));
    expect(&mut on_a, "news", "e6", json!({"via": "http"}));

    // The other app saw none of it: its own nodes' event is the first thing its socket gets.
    publish(&d, "news", "f1", json!({"from": "d"}), None);
    expect(&mut on_c, "news", "f1", json!({"from": "d"}));
    on_a.assert_nothing_pending();
    on_b.assert_nothing_pending();
    on_c.assert_nothing_pending();
}

#[test]
fn client_events_cross_and_a_revocation_on_one_node_ends_the_subscription_on_another() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let a = hub_node(&redis);
    let b = hub_node(&redis);
    wait_for_link(&a, &b);
    wait_for_link(&b, &a);
    let room = "private-room";
    let mut ann = subscribed_private(&a, room, "7:1");
    let mut ann_tab = subscribed_private(&a, room, "7:2");
    let mut bob = subscribed_private(&b, room, "8:3");

    ann.send(json!({"event": "client-typing", "channel": room, "data": {"who": "ann"}}));
    expect(&mut bob, room, "client-typing", json!({"who": "ann"}));
    expect(&mut ann_tab, room, "client-typing", json!({"who": "ann"}));

    // Revoked through B, by owner: Ann's first socket, on A, loses the channel.
    let here = b
        .hub
        .unsubscribe_user("7:1", ChannelFilter::Named(vec![room.into()]))
        .unwrap();
    assert_eq!(here, 0, "nothing of 7:1 on B");
    let error = ann
        .recv_within(REVOKED_WITHIN)
        .expect("a subscription error on A within 5 s");
    assert_eq!(error["event"], "pusher:subscription_error", "{error}");
    assert_eq!(error["channel"], room);
    assert_eq!(frame_data(&error)["status"], 403);

    // Revoked through B, by socket: Ann's other tab, on A.
    b.hub
        .revoke(vec![(ann_tab.socket_id.clone(), room.to_string())])
        .unwrap();
    let error = ann_tab
        .recv_within(REVOKED_WITHIN)
        .expect("a subscription error on A within 5 s");
    assert_eq!(error["event"], "pusher:subscription_error", "{error}");

    // Bob keeps the channel; Ann's sockets get nothing more on it.
    publish(&a, room, "after", json!({}), None);
    expect(&mut bob, room, "after", json!({}));
    ann.assert_nothing_pending();
    ann_tab.assert_nothing_pending();
    bob.assert_nothing_pending();
}

#[test]
fn nodes_start_without_redis_and_fan_out_resumes_after_it_restarts() {
    let Some(mut redis) = Redis::start_or_skip() else {
        return;
    };
    // Redis away when the nodes start: they start anyway and serve their own sockets.
    redis.stop();
    let a = node(&redis, None);
    let b = node(&redis, Some(&a));
    let mut on_a = subscribed(&a, "news");
    publish(&a, "news", "alone", json!({}), None);
    expect(&mut on_a, "news", "alone", json!({}));

    redis.restart();
    wait_for_link(&a, &b);
    wait_for_link(&b, &a);
    publish(&b, "news", "linked", json!({}), None);
    expect(&mut on_a, "news", "linked", json!({}));

    // Redis goes away under them, and comes back.
    redis.stop();
    publish(&a, "news", "alone again", json!({}), None);
    expect(&mut on_a, "news", "alone again", json!({}));
    redis.restart();
    wait_for_link(&a, &b);
    wait_for_link(&b, &a);
    publish(&b, "news", "back", json!({}), None);
    expect(&mut on_a, "news", "back", json!({}));
    on_a.assert_nothing_pending();
}

#[test]
fn presence_members_are_the_union_across_nodes() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let a = hub_node(&redis);
    let b = hub_node(&redis);
    wait_for_link(&a, &b);
    wait_for_link(&b, &a);
    let room = "presence-room";

    let (mut ann, roster) = joined_presence(&a, room, "1", json!({"name": "Ann"}));
    assert_eq!(ids(&roster), ["1"]);
    // Ann's arrival went to Redis before this link's events: B knows of her once they arrive.
    wait_for_link(&a, &b);
    let (mut bob, roster) = joined_presence(&b, room, "2", json!({"name": "Bob"}));
    assert_eq!(ids(&roster), ["1", "2"]);
    assert_eq!(roster["count"], 2);
    assert_eq!(roster["hash"]["1"], json!({"name": "Ann"}));
    expect(
        &mut ann,
        room,
        "pusher_internal:member_added",
        json!({"user_id": "2", "user_info": {"name": "Bob"}}),
    );

    // Ann in a second tab, on B: one member still; nobody is told she came or went.
    let (mut ann_on_b, roster) = joined_presence(&b, room, "1", json!({"name": "Ann"}));
    assert_eq!(ids(&roster), ["1", "2"]);
    ann_on_b.send(json!({"event": "pusher:unsubscribe", "data": {"channel": room}}));
    ann_on_b.assert_nothing_pending();
    bob.assert_nothing_pending();

    // Bob leaves: Ann, on A, is told.
    bob.send(json!({"event": "pusher:unsubscribe", "data": {"channel": room}}));
    expect(
        &mut ann,
        room,
        "pusher_internal:member_removed",
        json!({"user_id": "2"}),
    );

    // Carol is on B when B stops: her membership ends on A too (B says so as it stops; had it
    // died, A would drop B's members 15 s after it was last heard from).
    let (_carol, _) = joined_presence(&b, room, "3", json!({"name": "Carol"}));
    expect(
        &mut ann,
        room,
        "pusher_internal:member_added",
        json!({"user_id": "3", "user_info": {"name": "Carol"}}),
    );
    drop(b);
    let gone = ann
        .recv_within(Duration::from_secs(20))
        .expect("Carol's departure within 20 s");
    assert_eq!(gone["event"], "pusher_internal:member_removed", "{gone}");
    assert_eq!(frame_data(&gone), json!({"user_id": "3"}));
    ann.assert_nothing_pending();
}

#[test]
fn presence_forgets_an_unheard_node_and_learns_it_again_when_redis_is_back() {
    let Some(mut redis) = Redis::start_or_skip() else {
        return;
    };
    let a = hub_node(&redis);
    let b = hub_node(&redis);
    wait_for_link(&a, &b);
    wait_for_link(&b, &a);
    let lobby = "presence-lobby";
    let (mut ann, _) = joined_presence(&a, lobby, "1", json!({"name": "Ann"}));
    let (_bob, _) = joined_presence(&b, lobby, "2", json!({"name": "Bob"}));
    let bob_added = json!({"user_id": "2", "user_info": {"name": "Bob"}});
    expect(
        &mut ann,
        lobby,
        "pusher_internal:member_added",
        bob_added.clone(),
    );

    // Nothing heard from B for 15 s (its roster comes every 5 s): Bob is gone for Ann.
    redis.stop();
    let gone = ann
        .recv_within(Duration::from_secs(25))
        .expect("Bob's departure once B went unheard");
    assert_eq!(gone["event"], "pusher_internal:member_removed", "{gone}");
    assert_eq!(frame_data(&gone), json!({"user_id": "2"}));

    // Redis back: the nodes say hello and send their rosters; Bob is back for Ann.
    redis.restart();
    let back = ann
        .recv_within(LINKED_WITHIN)
        .expect("Bob back once Redis is");
    assert_eq!(back["event"], "pusher_internal:member_added", "{back}");
    assert_eq!(frame_data(&back), bob_added);
    ann.assert_nothing_pending();
}

#[test]
fn a_node_without_the_apps_secret_is_not_heard() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let a = hub_node(&redis);
    let b = hub_node(&redis);
    // Same app id, so the same Redis channel, but not the app's secret.
    let mallory = hub_node_with_secret(&redis, "not the secret");
    let mallory_too = hub_node_with_secret(&redis, "not the secret");
    wait_for_link(&b, &a);
    wait_for_link(&mallory, &mallory_too);
    let mut on_a = subscribed(&a, "news");
    let mut on_mallory_too = subscribed(&mallory_too, "news");

    publish(&mallory, "news", "forged", json!({}), None);
    // Through Redis, so on its way to A's subscription too, before anything published after.
    expect(&mut on_mallory_too, "news", "forged", json!({}));
    publish(&b, "news", "genuine", json!({}), None);
    expect(&mut on_a, "news", "genuine", json!({}));
    on_a.assert_nothing_pending();
}
