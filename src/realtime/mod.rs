//! Real-time channels: WebSockets speaking the Pusher Channels protocol v7, so pusher-js and
//! Laravel Echo connect unchanged. This module owns the WebSocket connections after the HTTP
//! upgrade, channel subscriptions and their authorization, presence membership, client events,
//! server-side publishing, and the Pusher signature schemes.
//!
//! One event-loop thread ([`engine`]) owns every socket (mio, non-blocking tungstenite, small
//! buffers): a connection costs a few kilobytes, never a thread. Everything else talks to it
//! through the cloneable [`Hub`] handle, which sends commands over a channel and wakes the loop.
//!
//! Close and error codes are listed in [`codes`]. A revoked subscription (see [`Hub::revoke`])
//! is ended with a `pusher:subscription_error` (status 403) on that channel: Pusher has no event
//! for it, and this one reaches `channel.bind('pusher:subscription_error')` and Echo's
//! `.error()`. The socket stays open for its other channels.
//!
//! With a Redis URL ([`HubConfig::redis_url`]) the hub is one node of several: [`bridge`] sends
//! what is published here (and client events), revocations and presence changes to the other
//! nodes of the same app, and delivers theirs to this node's sockets; a presence channel's
//! members are every node's.

mod bridge;
mod credentials;
mod engine;
mod handshake;
pub(crate) mod protocol;
pub(crate) mod signature;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender};
use mio::Waker;

use crate::http::{Request, Response};

pub use bridge::{ChannelFilter, RedisUrl, Revocation};
pub use credentials::Credentials;
use engine::Command;
pub use protocol::codes;
pub use signature::{
    parse_events_body, sign_channel, sign_http_request, verify_channel_auth, verify_http_signature,
    EventsBodyError, SigError,
};

/// The app this hub serves and its limits. [`HubConfig::new`] gives Pusher's defaults.
#[derive(Clone)]
pub struct HubConfig {
    pub app_id: String,
    /// The public key clients connect with (`/app/{key}`).
    pub key: String,
    /// Signs channel authorizations and HTTP API requests. Never sent, never logged.
    pub secret: String,
    /// Silence after which we ping a client; also advertised to clients (rounded up to whole
    /// seconds) as the silence after which they should ping us. Pusher: 120 s.
    pub activity_timeout: Duration,
    /// How long a pinged client has to answer before we close with 4201. Pusher: 30 s.
    pub pong_timeout: Duration,
    /// A socket holding no subscription this long (from its connection, or from when its last
    /// subscription ended) is closed with 4202.
    pub subscribe_timeout: Duration,
    /// WebSockets open at most; the handshake of one more is answered `503`.
    pub max_connections: usize,
    /// WebSockets one client address (the forwarded one behind a trusted proxy) may hold.
    pub max_per_client: usize,
    /// Public channel names that may not be subscribed to (names that look like the
    /// application's private ones without their prefix): refused with status 403.
    pub reserved_public: fn(&str) -> bool,
    /// The largest message a client may send, in bytes. Pusher: 10 KB.
    pub max_message: usize,
    /// Client events a socket may send per second; the rest are dropped.
    pub client_events_per_sec: u32,
    /// Bytes waiting for a socket that does not read fast enough, beyond what the kernel holds;
    /// past this it is closed with 4100.
    pub outbound_queue_cap: usize,
    /// `Origin` values allowed to connect (e.g. `https://app.example.com`); `None` allows any.
    /// A request without `Origin` (not from a browser) is allowed either way: the allow-list
    /// protects browsers' cookies from other sites, and any other client can forge the header.
    pub allowed_origins: Option<Vec<String>>,
    /// How long a closing socket is kept for our close frame to reach the client.
    pub close_linger: Duration,
    /// Accept a private or presence subscription only against an authorization recorded with
    /// [`Hub::record_authorization`], each usable once. A signature never expires and a socket
    /// keeps its id, so without this a client could replay a saved `auth` after revocation.
    pub require_recorded_grant: bool,
    /// Redis, through which this hub's events, revocations and presence members reach the
    /// other nodes serving the same app (same `app_id`), and theirs reach it. `None`: this
    /// node alone.
    pub redis_url: Option<RedisUrl>,
}

impl HubConfig {
    pub fn new(
        app_id: impl Into<String>,
        key: impl Into<String>,
        secret: impl Into<String>,
    ) -> HubConfig {
        HubConfig {
            app_id: app_id.into(),
            key: key.into(),
            secret: secret.into(),
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            subscribe_timeout: Duration::from_secs(30),
            max_connections: usize::MAX,
            max_per_client: usize::MAX,
            reserved_public: |_| false,
            max_message: 10 * 1024,
            client_events_per_sec: 10,
            outbound_queue_cap: 1024 * 1024,
            allowed_origins: None,
            close_linger: Duration::from_secs(5),
            require_recorded_grant: false,
            redis_url: None,
        }
    }
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("app_id", &self.app_id)
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .field("activity_timeout", &self.activity_timeout)
            .field("pong_timeout", &self.pong_timeout)
            .field("subscribe_timeout", &self.subscribe_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_per_client", &self.max_per_client)
            .field("max_message", &self.max_message)
            .field("client_events_per_sec", &self.client_events_per_sec)
            .field("outbound_queue_cap", &self.outbound_queue_cap)
            .field("allowed_origins", &self.allowed_origins)
            .field("close_linger", &self.close_linger)
            .field("redis_url", &self.redis_url)
            .finish()
    }
}

/// An event to deliver to every socket subscribed to any of `channels`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub channels: Vec<String>,
    pub event: String,
    /// The event's data, usually JSON text; sent as the frame's `data` string.
    pub data: String,
    /// A socket that must not receive it (Laravel's `toOthers()`, via `X-Socket-ID`).
    pub except_socket: Option<String>,
}

/// One socket's subscription to one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub socket_id: String,
    pub channel: String,
    /// Who was authorized: the tag given to [`Hub::record_authorization`] for this socket and
    /// channel, else the presence `user_id`, else `None` (public channels, or a private channel
    /// signed without recording).
    pub user_id: Option<String>,
}

/// Why the hub could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// The event loop has stopped.
    Stopped,
    /// The event loop did not take or answer the command in time.
    Busy,
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::Stopped => f.write_str("the real-time hub has stopped"),
            HubError::Busy => f.write_str("the real-time hub did not answer in time"),
        }
    }
}

impl std::error::Error for HubError {}

/// WebSockets admitted and not yet dropped: in all, and per client address.
#[derive(Default)]
struct Admitted {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// One admitted WebSocket's place (see [`Hub::admit`]); given back when dropped.
pub(crate) struct Ticket {
    admitted: Arc<Mutex<Admitted>>,
    client: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut admitted = self.admitted.lock().unwrap_or_else(PoisonError::into_inner);
        admitted.total -= 1;
        if let Some(n) = admitted.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                admitted.per_client.remove(&self.client);
            }
        }
    }
}

/// Commands the loop has not taken yet, at most. A full queue makes callers wait up to
/// [`SEND_WAIT`], then fail with [`HubError::Busy`], rather than grow without bound.
const COMMAND_QUEUE: usize = 64 * 1024;
const SEND_WAIT: Duration = Duration::from_secs(2);
/// How long a caller waits for the loop's answer (revocations, listings).
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// The handle on the event loop. Cheap to clone; the loop stops (closing every socket with
/// 4200, "reconnect now") when the last clone is dropped.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<HubConfig>,
    admitted: Arc<Mutex<Admitted>>,
    tx: Sender<Command>,
    waker: Arc<Waker>,
    /// The other nodes' way, with a Redis URL.
    bridge: Option<bridge::Outbox>,
    /// Tells the bridge's subscriber to end.
    stopped: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        let _ = self.tx.send_timeout(Command::Stop, SEND_WAIT);
        let _ = self.waker.wake();
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

impl Hub {
    /// Starts the event loop thread.
    pub fn start(config: HubConfig) -> io::Result<Hub> {
        let config = Arc::new(config);
        let connections = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = crossbeam_channel::bounded(COMMAND_QUEUE);
        let (mut engine, waker) = engine::Engine::new(config.clone(), rx, connections.clone())?;
        let waker = Arc::new(waker);
        let stopped = Arc::new(AtomicBool::new(false));
        let bridge = match &config.redis_url {
            Some(url) => {
                let inbox = bridge::Inbox {
                    tx: tx.clone(),
                    waker: waker.clone(),
                    stopped: stopped.clone(),
                };
                let outbox = bridge::start(url, &config.app_id, &config.secret, inbox)?;
                engine.bridge = Some(outbox.clone());
                Some(outbox)
            }
            None => None,
        };
        let count = connections.clone();
        let thread = std::thread::Builder::new()
            .name("realtime".into())
            .spawn(move || {
                // A bug must not take the process down; unwinding drops (closes) every socket,
                // and the handle then reports `HubError::Stopped`.
                if catch_unwind(AssertUnwindSafe(|| engine.run())).is_err() {
                    log::error!("realtime: the event loop panicked; every WebSocket was closed");
                    count.store(0, Ordering::Relaxed);
                }
            })?;
        Ok(Hub {
            inner: Arc::new(Inner {
                config,
                admitted: Arc::default(),
                tx,
                waker,
                bridge,
                stopped,
                connections,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Answers `GET /app/{key}`: validates the WebSocket handshake and the `Origin`, and returns
    /// the `101` whose takeover hands the socket to the event loop. An unknown key is still
    /// upgraded, then told `pusher:error` 4001 and closed with 4001, as Pusher does.
    pub fn upgrade_response(&self, req: &Request) -> Response {
        handshake::upgrade_response(self, req)
    }

    /// The `auth` string for a subscription, signed with this app's key and secret.
    pub fn sign(&self, socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
        let c = &self.inner.config;
        sign_channel(&c.secret, &c.key, socket_id, channel, channel_data)
    }

    /// Delivers an event to every socket subscribed to its channels, except `except_socket`,
    /// on this node and (with Redis) on the others.
    pub fn publish(&self, publish: Publish) -> Result<(), HubError> {
        if let Some(bridge) = &self.inner.bridge {
            bridge.send(bridge::Message::event(&publish, None));
        }
        self.send(Command::Publish(publish))
    }

    /// Remembers who was authorized for `socket_id` on `channel` (called by the auth endpoint
    /// when it signs), so revocation and [`Hub::subscriptions`] can name them. Kept until the
    /// socket subscribes or closes; a socket keeps only its latest few unused authorizations.
    pub fn record_authorization(
        &self,
        socket_id: &str,
        channel: &str,
        owner: &str,
    ) -> Result<(), HubError> {
        self.send(Command::Authorized {
            socket_id: socket_id.to_string(),
            channel: channel.to_string(),
            owner: owner.to_string(),
        })
    }

    /// Ends the given `(socket_id, channel)` subscriptions, on every node; returns how many
    /// there were on this one.
    pub fn revoke(&self, targets: Vec<(String, String)>) -> Result<usize, HubError> {
        self.revoke_everywhere(Revocation::Subscriptions(targets))
    }

    /// Ends every subscription authorized for `user_id` on a channel `channels` accepts, on
    /// every node; returns how many there were on this one.
    pub fn unsubscribe_user(
        &self,
        user_id: &str,
        channels: ChannelFilter,
    ) -> Result<usize, HubError> {
        self.revoke_everywhere(Revocation::User {
            user_id: user_id.to_string(),
            channels,
        })
    }

    /// Ends the subscriptions `revocation` names here and (with Redis) on the other nodes,
    /// which apply it when it reaches them; returns how many there were on this node.
    pub fn revoke_everywhere(&self, revocation: Revocation) -> Result<usize, HubError> {
        if let Some(bridge) = &self.inner.bridge {
            bridge.send(bridge::Message::Revoke {
                revocation: revocation.clone(),
            });
        }
        self.revoke_where(move |s| revocation.matches(s))
    }

    /// Ends every subscription the predicate accepts, on this node only: a closure cannot
    /// travel ([`Hub::revoke_everywhere`] takes a value that can). Each affected socket gets a
    /// `pusher:subscription_error` (status 403) for that channel and stops receiving its
    /// events; presence members are removed as on an unsubscribe. Returns once done.
    pub fn revoke_where(
        &self,
        predicate: impl Fn(&Subscription) -> bool + Send + 'static,
    ) -> Result<usize, HubError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(Command::Revoke {
            predicate: Box::new(predicate),
            reply,
        })?;
        answer.recv_timeout(REPLY_WAIT).map_err(|_| HubError::Busy)
    }

    /// Every current subscription, for periodic re-checks of authorization.
    pub fn subscriptions(&self) -> Result<Vec<Subscription>, HubError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(Command::Subscriptions { reply })?;
        answer.recv_timeout(REPLY_WAIT).map_err(|_| HubError::Busy)
    }

    /// Open WebSocket connections (including ones being closed).
    pub fn connection_count(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// A place for one more WebSocket from `client`, or `None` when the hub or that client is
    /// at its limit. The place is held until the ticket is dropped (with the socket).
    pub(crate) fn admit(&self, client: IpAddr) -> Option<Ticket> {
        let c = &self.inner.config;
        let mut admitted = self
            .inner
            .admitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = admitted.per_client.get(&client).copied().unwrap_or(0);
        if admitted.total >= c.max_connections || held >= c.max_per_client {
            return None;
        }
        admitted.total += 1;
        *admitted.per_client.entry(client).or_insert(0) += 1;
        Some(Ticket {
            admitted: self.inner.admitted.clone(),
            client,
        })
    }

    fn send(&self, command: Command) -> Result<(), HubError> {
        match self.inner.tx.send_timeout(command, SEND_WAIT) {
            Ok(()) => {
                let _ = self.inner.waker.wake();
                Ok(())
            }
            Err(SendTimeoutError::Timeout(_)) => Err(HubError::Busy),
            Err(SendTimeoutError::Disconnected(_)) => Err(HubError::Stopped),
        }
    }
}
