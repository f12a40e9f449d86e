//! The Redis bridge: this node's real-time traffic fanned out to the other tenantd nodes of the
//! same Pusher app, and theirs delivered to this node's sockets, over Redis pub/sub.
//!
//! One Redis channel per app, `tenantd:<app id>:realtime`, carries every kind of message (events,
//! revocations, presence) as JSON naming the node that sent it; a node skips its own. Each
//! message is signed with the app's secret (`<hex HMAC-SHA256>.<json>`): whoever may publish on
//! the Redis without knowing the secret cannot speak for the app, and a message signed for
//! another app is refused. One publisher connection and one channel for every kind: the others
//! read a node's messages in the order it sent them (a member's join before their leave, an
//! event before the revocation that follows it).
//!
//! Two threads. The publisher takes what the [`super::Hub`] and the event loop hand it through
//! [`Outbox`] (bounded; a full queue drops, never blocks the loop) and PUBLISHes it. The
//! subscriber SUBSCRIBEs and hands the other nodes' messages to the event loop as commands that
//! are delivered to local sockets only, never published again. While Redis is away each node
//! keeps serving its own sockets: what is published meanwhile reaches them and is lost for the
//! others (real-time is at most once, as Pusher's is). Either thread logs once when the link
//! goes and once when it is back, and reconnects with a backoff capped at [`MAX_BACKOFF`].

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::Waker;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::engine::Command;
use super::signature::{hmac_sha256_hex, verify_hmac_sha256_hex};
use super::{Publish, Subscription};

/// A Redis URL (`redis://[:password@]host:port[/db]`, `redis+unix:///path`). Its `Debug` hides
/// a password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks the URL's form (without connecting).
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(RedisUrl(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `scheme://user:secret@host` -> `scheme://***@host`.
        match (self.0.split_once("://"), self.0.rfind('@')) {
            (Some((scheme, _)), Some(at)) => write!(f, "{scheme}://***{}", &self.0[at..]),
            _ => f.write_str(&self.0),
        }
    }
}

/// Which channels a revocation of a user's subscriptions covers. A value, not a closure, so it
/// can travel to the other nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelFilter {
    Any,
    /// Exactly these names.
    Named(Vec<String>),
    /// Names starting with any of these.
    Prefixed(Vec<String>),
}

impl ChannelFilter {
    pub fn accepts(&self, channel: &str) -> bool {
        match self {
            ChannelFilter::Any => true,
            ChannelFilter::Named(names) => names.iter().any(|n| n == channel),
            ChannelFilter::Prefixed(prefixes) => prefixes.iter().any(|p| channel.starts_with(p)),
        }
    }
}

/// Subscriptions to end on every node (see [`super::Hub::revoke_everywhere`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// These `(socket id, channel)` subscriptions, wherever the socket is connected.
    Subscriptions(Vec<(String, String)>),
    /// Every subscription authorized for this owner (see [`Subscription::user_id`]) on the
    /// channels the filter accepts.
    User {
        user_id: String,
        channels: ChannelFilter,
    },
}

impl Revocation {
    pub fn matches(&self, s: &Subscription) -> bool {
        match self {
            Revocation::Subscriptions(targets) => targets
                .iter()
                .any(|(socket, channel)| *socket == s.socket_id && *channel == s.channel),
            Revocation::User { user_id, channels } => {
                s.user_id.as_deref() == Some(user_id.as_str()) && channels.accepts(&s.channel)
            }
        }
    }
}

/// What one node tells the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Message {
    /// A server-side publish, or a client event (with its presence `user_id`, which the frame
    /// carries on presence channels).
    Event {
        channels: Vec<String>,
        event: String,
        data: String,
        except_socket: Option<String>,
        user_id: Option<String>,
    },
    Revoke {
        revocation: Revocation,
    },
    /// A presence member's first socket on the sending node joined the channel.
    MemberAdded {
        channel: String,
        user_id: String,
        user_info: Value,
    },
    /// A presence member's last socket on the sending node left the channel.
    MemberRemoved {
        channel: String,
        user_id: String,
    },
    /// Every presence member the sending node holds (channel -> user id -> user info). Sent
    /// every [`HEARTBEAT`], in answer to [`Message::Hello`], and empty when the node stops: the
    /// others replace their view of that node with it, and drop the view of a node not heard
    /// from for [`EXPIRY`].
    Roster {
        members: HashMap<String, HashMap<String, Value>>,
    },
    /// The sending node has (re)joined Redis and may have missed changes: the others answer
    /// with their rosters.
    Hello,
}

impl Message {
    pub(super) fn event(p: &Publish, user_id: Option<String>) -> Message {
        Message::Event {
            channels: p.channels.clone(),
            event: p.event.clone(),
            data: p.data.clone(),
            except_socket: p.except_socket.clone(),
            user_id,
        }
    }
}

/// A message on the wire: who sent it, for which app.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    node: String,
    app: String,
    #[serde(flatten)]
    message: Message,
}

/// How often a node sends its roster (its heartbeat), and how long after the last message of a
/// node its presence members are dropped (a node that died without a word).
pub(super) const HEARTBEAT: Duration = Duration::from_secs(5);
pub(super) const EXPIRY: Duration = Duration::from_secs(15);

/// Messages waiting for the publisher, at most; beyond, new ones are dropped.
const OUTBOX: usize = 16 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The subscriber's read timeout: how soon it notices its hub stopped.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// Silence after which the subscriber pings Redis, so a link that died without a word is found.
const PING_AFTER: Duration = Duration::from_secs(10);

/// The hub's and the event loop's way to the publisher thread. Cheap to clone.
#[derive(Clone)]
pub(super) struct Outbox {
    tx: Sender<Message>,
    dropped_warned: Arc<AtomicBool>,
}

impl Outbox {
    /// Queues a message for the other nodes; never waits.
    pub(super) fn send(&self, message: Message) {
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if !self.dropped_warned.swap(true, Ordering::Relaxed) {
                    log::warn!("realtime bridge: queue full, messages for other nodes dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The event loop's command queue, as the subscriber sees it.
pub(super) struct Inbox {
    pub tx: Sender<Command>,
    pub waker: Arc<Waker>,
    /// Set when the hub stops: the subscriber ends within [`READ_TIMEOUT`].
    pub stopped: Arc<AtomicBool>,
}

/// Starts the publisher and the subscriber for `app_id`; returns the publisher's queue.
pub(super) fn start(
    url: &RedisUrl,
    app_id: &str,
    secret: &str,
    inbox: Inbox,
) -> std::io::Result<Outbox> {
    let client = redis::Client::open(url.as_str())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let node = hex::encode(rand::random::<[u8; 8]>());
    let channel = format!("tenantd:{app_id}:realtime");
    let (tx, rx) = crossbeam_channel::bounded(OUTBOX);
    log::info!("realtime bridge: node {node} on {url:?}, Redis channel {channel}");
    let publisher = Publisher {
        client: client.clone(),
        channel: channel.clone(),
        node: node.clone(),
        app: app_id.to_string(),
        secret: secret.to_string(),
        rx,
    };
    std::thread::Builder::new()
        .name("realtime-redis-pub".into())
        .spawn(move || publisher.run())?;
    let subscriber = Subscriber {
        client,
        channel,
        node,
        app: app_id.to_string(),
        secret: secret.to_string(),
        inbox,
        warned_bad: Cell::new(false),
        warned_busy: Cell::new(false),
    };
    std::thread::Builder::new()
        .name("realtime-redis-sub".into())
        .spawn(move || subscriber.run())?;
    Ok(Outbox {
        tx,
        dropped_warned: Arc::default(),
    })
}

/// Reconnection attempts: doubling waits, and one log line per outage.
struct Link {
    what: &'static str,
    backoff: Duration,
    next_attempt: Instant,
    down: bool,
}

impl Link {
    fn new(what: &'static str) -> Link {
        Link {
            what,
            backoff: FIRST_BACKOFF,
            next_attempt: Instant::now(),
            down: false,
        }
    }

    fn failed(&mut self, e: &redis::RedisError) {
        if !self.down {
            self.down = true;
            log::warn!(
                "realtime bridge ({}): Redis unreachable, serving this node's sockets only \
                 and retrying: {e}",
                self.what
            );
        }
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn up(&mut self) {
        if self.down {
            self.down = false;
            log::info!("realtime bridge ({}): Redis reachable again", self.what);
        }
        self.backoff = FIRST_BACKOFF;
    }
}

struct Publisher {
    client: redis::Client,
    channel: String,
    node: String,
    app: String,
    secret: String,
    rx: Receiver<Message>,
}

impl Publisher {
    /// Ends when the hub and its event loop have both dropped their queues.
    fn run(self) {
        let mut link = Link::new("publisher");
        let mut conn: Option<redis::Connection> = None;
        while let Ok(message) = self.rx.recv() {
            let payload = match serde_json::to_string(&Envelope {
                node: self.node.clone(),
                app: self.app.clone(),
                message,
            }) {
                Ok(json) => signed(&self.secret, &json),
                Err(e) => {
                    log::error!("realtime bridge: cannot encode a message: {e}");
                    continue;
                }
            };
            // While Redis is away, messages are dropped until the next attempt is due: the
            // queue must not fill up behind connection timeouts. A connection that fails is
            // replaced at once, once (Redis restarted since it was last used).
            let mut retried = false;
            for _ in 0..2 {
                if conn.is_none() && Instant::now() >= link.next_attempt {
                    match self.client.get_connection_with_timeout(CONNECT_TIMEOUT) {
                        Ok(c) => {
                            let _ = c.set_write_timeout(Some(CONNECT_TIMEOUT));
                            let _ = c.set_read_timeout(Some(CONNECT_TIMEOUT));
                            conn = Some(c);
                        }
                        Err(e) => link.failed(&e),
                    }
                }
                let Some(c) = conn.as_mut() else {
                    break;
                };
                let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(&payload)
                    .query(c);
                match sent {
                    Ok(_) => {
                        link.up();
                        break;
                    }
                    // The connection was fine when last used: try a new one before saying so.
                    Err(_) if !retried => {
                        conn = None;
                        retried = true;
                    }
                    Err(e) => {
                        conn = None;
                        link.failed(&e);
                    }
                }
            }
        }
    }
}

struct Subscriber {
    client: redis::Client,
    channel: String,
    node: String,
    app: String,
    secret: String,
    inbox: Inbox,
    /// Messages dropped are logged once of each kind: whoever can publish on the Redis must
    /// not be able to fill the log.
    warned_bad: Cell<bool>,
    warned_busy: Cell<bool>,
}

impl Subscriber {
    fn run(self) {
        let mut link = Link::new("subscriber");
        while !self.inbox.stopped.load(Ordering::Relaxed) {
            let wait = link.next_attempt.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait.min(READ_TIMEOUT));
                continue;
            }
            match self.listen(&mut link) {
                Ok(()) => return,
                Err(e) => link.failed(&e),
            }
        }
    }

    /// Subscribes and delivers until the hub stops (`Ok`) or the link fails.
    fn listen(&self, link: &mut Link) -> redis::RedisResult<()> {
        let mut conn = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        conn.set_write_timeout(Some(CONNECT_TIMEOUT))?;
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe(&self.channel)?;
        pubsub.set_read_timeout(Some(READ_TIMEOUT))?;
        link.up();
        // Changes may have been missed while away (or before this node started): ask.
        if !self.deliver(Command::Linked) {
            return Ok(());
        }
        let mut last_heard = Instant::now();
        loop {
            if self.inbox.stopped.load(Ordering::Relaxed) {
                return Ok(());
            }
            let msg = match pubsub.get_message() {
                Ok(msg) => msg,
                Err(e) if e.is_timeout() => {
                    if last_heard.elapsed() >= PING_AFTER {
                        pubsub.ping::<redis::Value>()?;
                        last_heard = Instant::now();
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            last_heard = Instant::now();
            if let Some(command) = self.command(msg.get_payload_bytes()) {
                if !self.deliver(command) {
                    return Ok(());
                }
            }
        }
    }

    /// The command for another node's message, or `None` for ours, another app's or garbage.
    fn command(&self, payload: &[u8]) -> Option<Command> {
        let Some(json) = verified(&self.secret, payload) else {
            if !self.warned_bad.replace(true) {
                log::warn!(
                    "realtime bridge: a message on {} not signed with this app's secret, \
                     dropped (and any more, unlogged)",
                    self.channel
                );
            }
            return None;
        };
        let envelope: Envelope = match serde_json::from_str(json) {
            Ok(e) => e,
            // Another version's message kinds among them (a rolling upgrade).
            Err(e) => {
                if !self.warned_bad.replace(true) {
                    log::warn!(
                        "realtime bridge: unreadable message on {}, dropped (and any more, \
                         unlogged): {e}",
                        self.channel
                    );
                }
                return None;
            }
        };
        if envelope.node == self.node || envelope.app != self.app {
            return None;
        }
        Some(match envelope.message {
            Message::Event {
                channels,
                event,
                data,
                except_socket,
                user_id,
            } => Command::Relayed {
                publish: Publish {
                    channels,
                    event,
                    data,
                    except_socket,
                },
                user_id,
            },
            Message::Revoke { revocation } => {
                // Nobody waits for the count of another node's revocation.
                let (reply, _) = crossbeam_channel::bounded(1);
                Command::Revoke {
                    predicate: Box::new(move |s| revocation.matches(s)),
                    reply,
                }
            }
            message => Command::FromNode {
                node: envelope.node,
                message,
            },
        })
    }

    /// Hands a command to the event loop; `false` once the loop is gone.
    fn deliver(&self, command: Command) -> bool {
        match self.inbox.tx.try_send(command) {
            Ok(()) => {
                let _ = self.inbox.waker.wake();
                true
            }
            Err(TrySendError::Full(_)) => {
                if !self.warned_busy.replace(true) {
                    log::warn!(
                        "realtime bridge: the hub is busy, a message from another node dropped \
                         (and any more, unlogged)"
                    );
                }
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Signatures are over this prefix and the JSON, so that no other signed string of the app
/// (channel authorizations, HTTP API requests) can pass for a message.
const SIGNED_AS: &str = "tenantd-bridge:";

/// `<hex HMAC-SHA256(secret, SIGNED_AS + json)>.<json>`
fn signed(secret: &str, json: &str) -> String {
    let signature = hmac_sha256_hex(secret, &format!("{SIGNED_AS}{json}"));
    format!("{signature}.{json}")
}

/// The JSON of a payload [`signed`] with `secret`, or `None`.
fn verified<'a>(secret: &str, payload: &'a [u8]) -> Option<&'a str> {
    let text = std::str::from_utf8(payload).ok()?;
    let (signature, json) = text.split_once('.')?;
    verify_hmac_sha256_hex(secret, &format!("{SIGNED_AS}{json}"), signature).then_some(json)
}

/// A change in who is present on a channel on the other nodes taken together.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Flip {
    pub channel: String,
    pub user_id: String,
    /// Present now (with this info), or gone from every other node (`Null`).
    pub present: bool,
    pub info: Value,
}

/// What each other node last said of its presence members.
#[derive(Default)]
pub(super) struct RemotePresence {
    nodes: HashMap<String, NodeView>,
}

struct NodeView {
    heard: Instant,
    channels: HashMap<String, HashMap<String, Value>>,
}

impl RemotePresence {
    /// Whether `user_id` is on `channel` on some other node.
    pub(super) fn has(&self, channel: &str, user_id: &str) -> bool {
        self.info(channel, user_id).is_some()
    }

    fn info(&self, channel: &str, user_id: &str) -> Option<&Value> {
        self.nodes
            .values()
            .find_map(|n| n.channels.get(channel)?.get(user_id))
    }

    /// The other nodes' members of `channel`, each once.
    pub(super) fn members(&self, channel: &str) -> HashMap<&str, &Value> {
        let mut all = HashMap::new();
        for node in self.nodes.values() {
            for (user, info) in node.channels.get(channel).into_iter().flatten() {
                all.entry(user.as_str()).or_insert(info);
            }
        }
        all
    }

    /// Takes a presence message (or a `Hello`) from `node`; returns what it changed.
    pub(super) fn apply(&mut self, node: &str, message: Message, now: Instant) -> Vec<Flip> {
        let view = self.nodes.entry(node.to_string()).or_insert(NodeView {
            heard: now,
            channels: HashMap::new(),
        });
        view.heard = now;
        let keys: Vec<(String, String)> = match &message {
            Message::MemberAdded {
                channel, user_id, ..
            }
            | Message::MemberRemoved { channel, user_id } => {
                vec![(channel.clone(), user_id.clone())]
            }
            Message::Roster { members } => {
                keys_of(&view.channels).chain(keys_of(members)).collect()
            }
            _ => return Vec::new(),
        };
        self.change(keys, |nodes| {
            let Some(view) = nodes.get_mut(node) else {
                return;
            };
            match message {
                Message::MemberAdded {
                    channel,
                    user_id,
                    user_info,
                } => {
                    view.channels
                        .entry(channel)
                        .or_default()
                        .insert(user_id, user_info);
                }
                Message::MemberRemoved { channel, user_id } => {
                    if let Some(members) = view.channels.get_mut(&channel) {
                        members.remove(&user_id);
                        if members.is_empty() {
                            view.channels.remove(&channel);
                        }
                    }
                }
                Message::Roster { members } => view.channels = members,
                _ => {}
            }
        })
    }

    /// Forgets the nodes not heard from since `since`; returns what that changed.
    pub(super) fn expire(&mut self, since: Instant) -> Vec<Flip> {
        let keys: Vec<(String, String)> = self
            .nodes
            .values()
            .filter(|n| n.heard < since)
            .flat_map(|n| keys_of(&n.channels))
            .collect();
        // Views with no member go too, so the map does not keep every node ever seen.
        self.change(keys, |nodes| nodes.retain(|_, n| n.heard >= since))
    }

    /// Applies `mutate`; returns the `(channel, user)` pairs of `keys` whose presence it
    /// turned on or off.
    fn change(
        &mut self,
        keys: Vec<(String, String)>,
        mutate: impl FnOnce(&mut HashMap<String, NodeView>),
    ) -> Vec<Flip> {
        let before: Vec<bool> = keys.iter().map(|(c, u)| self.has(c, u)).collect();
        mutate(&mut self.nodes);
        let mut flips = Vec::new();
        for ((channel, user_id), was) in keys.into_iter().zip(before) {
            let info = self.info(&channel, &user_id).cloned();
            if info.is_some() != was
                && !flips
                    .iter()
                    .any(|f: &Flip| f.channel == channel && f.user_id == user_id)
            {
                flips.push(Flip {
                    channel,
                    user_id,
                    present: info.is_some(),
                    info: info.unwrap_or(Value::Null),
                });
            }
        }
        flips
    }
}

fn keys_of(
    channels: &HashMap<String, HashMap<String, Value>>,
) -> impl Iterator<Item = (String, String)> + '_ {
    channels
        .iter()
        .flat_map(|(c, users)| users.keys().map(move |u| (c.clone(), u.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_password_is_not_shown() {
        let url = RedisUrl::parse("redis://:hunter2@cache.internal:6379/0").unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(shown, "redis://***@cache.internal:6379/0");
        assert!(RedisUrl::parse("http://example.com").is_err());
    }

    #[test]
    fn only_messages_signed_with_the_apps_secret_are_read() {
        let json = r#"{"node":"n1","app":"1","kind":"hello"}"#;
        let payload = signed("secret", json);
        assert_eq!(verified("secret", payload.as_bytes()), Some(json));
        assert_eq!(verified("other secret", payload.as_bytes()), None);
        let forged = payload.replace("n1", "n2");
        assert_eq!(verified("secret", forged.as_bytes()), None);
        assert_eq!(verified("secret", json.as_bytes()), None);
        assert_eq!(verified("secret", b"\xff.{}"), None);
    }

    #[test]
    fn revocations_travel_and_match_as_given() {
        let r = Revocation::User {
            user_id: "17:4".into(),
            channels: ChannelFilter::Prefixed(vec!["private-company.".into()]),
        };
        let wire = serde_json::to_string(&Message::Revoke {
            revocation: r.clone(),
        })
        .unwrap();
        let back: Message = serde_json::from_str(&wire).unwrap();
        assert_eq!(
            back,
            Message::Revoke {
                revocation: r.clone()
            }
        );
        let sub = |user: Option<&str>, channel: &str| Subscription {
            socket_id: "1.2".into(),
            channel: channel.into(),
            user_id: user.map(String::from),
        };
        assert!(r.matches(&sub(Some("17:4"), "private-company.x.orders")));
        assert!(!r.matches(&sub(Some("17:5"), "private-company.x.orders")));
        assert!(!r.matches(&sub(Some("17:4"), "private-App.Models.User.17")));
        assert!(!r.matches(&sub(None, "private-company.x.orders")));
        let exact = Revocation::Subscriptions(vec![("1.2".into(), "news".into())]);
        assert!(exact.matches(&sub(None, "news")));
        assert!(!exact.matches(&sub(None, "news2")));
    }

    #[test]
    fn the_other_nodes_members_count_once_and_a_silent_node_expires() {
        let room = || "presence-room".to_string();
        let added = |user: &str| Message::MemberAdded {
            channel: room(),
            user_id: user.into(),
            user_info: serde_json::json!({ "name": user }),
        };
        let flip = |user: &str, present: bool| Flip {
            channel: room(),
            user_id: user.into(),
            present,
            info: if present {
                serde_json::json!({ "name": user })
            } else {
                Value::Null
            },
        };
        let t0 = Instant::now();
        let mut r = RemotePresence::default();
        assert_eq!(r.apply("n1", added("ann"), t0), [flip("ann", true)]);
        assert!(
            r.apply("n2", added("ann"), t0).is_empty(),
            "already present"
        );
        let removed = Message::MemberRemoved {
            channel: room(),
            user_id: "ann".into(),
        };
        assert!(r.apply("n1", removed, t0).is_empty(), "still on n2");
        assert!(r.has("presence-room", "ann"));

        // A roster replaces what the node said before.
        let bob = HashMap::from([("bob".to_string(), serde_json::json!({ "name": "bob" }))]);
        let roster = Message::Roster {
            members: HashMap::from([(room(), bob)]),
        };
        let mut flips = r.apply("n2", roster, t0 + Duration::from_secs(1));
        flips.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        assert_eq!(flips, [flip("ann", false), flip("bob", true)]);
        assert_eq!(r.members("presence-room").len(), 1);

        // n1 (no members left) was last heard at t0, n2 a second later.
        assert!(r.expire(t0 + Duration::from_millis(500)).is_empty());
        assert!(r.has("presence-room", "bob"));
        assert_eq!(r.expire(t0 + Duration::from_secs(2)), [flip("bob", false)]);
        assert!(r.members("presence-room").is_empty());
        assert!(r.nodes.is_empty());
    }
}
