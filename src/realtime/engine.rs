//! The event loop: the one thread that owns every WebSocket after the upgrade, every channel and
//! presence roster, and the timers (pings, pong deadlines, closing sockets).
//!
//! Sockets are non-blocking and registered edge-triggered with mio; tungstenite frames them. A
//! socket is read until it would block (at most a few dozen messages per turn, so one busy client
//! cannot starve the rest) and written until it would block. What the kernel will not take waits
//! in a per-socket queue of whole messages, shared (`Utf8Bytes` is reference-counted) between
//! every subscriber of a publish; past `outbound_queue_cap` bytes the socket is closed with 4100.
//!
//! Commands from [`super::Hub`] are taken before socket events each turn: an authorization the
//! auth endpoint recorded before answering is therefore always known when the client's
//! `pusher:subscribe` (sent after that answer) is read.
//!
//! Closing: we queue a close frame, and once it is written shut our side for writing and keep
//! reading (discarding) until the client closes or `close_linger` passes. Dropping a socket that
//! still has unread input would make the kernel send a reset, which can destroy the close frame
//! (and its code) before the client reads it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read};
use std::mem;
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use rand::Rng;
use serde_json::{json, Map, Value};
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes, WebSocket};

use crate::http::ConnSlot;

use super::bridge::{Flip, Message as NodeMessage, Outbox, RemotePresence, EXPIRY, HEARTBEAT};
use super::protocol::{self, codes, ChannelKind, Inbound};
use super::signature::verify_channel_auth;
use super::{HubConfig, Publish, Subscription, Ticket};

const WAKER: Token = Token(usize::MAX);
/// tungstenite's read buffer per socket. Client messages are small; bigger ones grow it
/// (bounded by `max_message`).
const READ_BUFFER: usize = 4096;
/// tungstenite gathers frames up to this size before writing them out; the turn ends with a
/// flush, so small events to one socket in one turn go out in one write.
const WRITE_BUFFER: usize = 16 * 1024;
/// Messages read from one socket per turn before the others get theirs.
const MESSAGES_PER_TURN: usize = 64;
/// Commands taken per turn before sockets get attention again.
const COMMANDS_PER_TURN: usize = 4096;
/// Recorded authorizations a socket keeps while it has not subscribed yet.
const MAX_GRANTS: usize = 16;

/// What the [`super::Hub`] handle asks of the loop.
pub(super) enum Command {
    /// An upgraded socket, already non-blocking. With a refusal it is told why and closed.
    Connect {
        stream: std::net::TcpStream,
        leftover: Vec<u8>,
        slot: ConnSlot,
        ticket: Ticket,
        refusal: Option<Refusal>,
    },
    Publish(Publish),
    /// Another node's publish or client event (through the bridge): for local sockets only.
    Relayed {
        publish: Publish,
        user_id: Option<String>,
    },
    /// Another node's presence news, roster or hello (through the bridge).
    FromNode {
        node: String,
        message: NodeMessage,
    },
    /// The bridge has (re)joined Redis: say hello, and send our roster.
    Linked,
    Authorized {
        socket_id: String,
        channel: String,
        owner: String,
    },
    Revoke {
        predicate: Box<dyn Fn(&Subscription) -> bool + Send>,
        reply: Sender<usize>,
    },
    Subscriptions {
        reply: Sender<Vec<Subscription>>,
    },
    Stop,
}

/// Why an upgraded socket is closed at once (unknown app key, unsupported protocol).
pub(super) struct Refusal {
    pub code: u16,
    pub message: String,
}

/// Why a socket must go, found while doing something else (so it is handled after).
enum Trouble {
    /// The socket failed or the peer is gone: drop it now.
    Dead,
    /// Its outbound queue overflowed: close it with 4100.
    Overflow,
}

struct Sub {
    /// Who was authorized: a recorded authorization, else the presence user.
    owner: Option<String>,
    /// The presence member this socket counts for.
    presence_user: Option<String>,
}

struct Conn {
    token: usize,
    socket_id: String,
    ws: WebSocket<TcpStream>,
    /// Holds the connection's place under the HTTP server's connection cap.
    _slot: ConnSlot,
    /// Holds its place under the hub's own caps.
    _ticket: Ticket,
    /// Since when it has held no subscription (from its connection on).
    lonely_since: Option<Instant>,
    subs: HashMap<String, Sub>,
    /// Authorizations recorded for channels not subscribed yet: (channel, owner).
    grants: VecDeque<(String, String)>,
    /// Whole messages waiting because the socket would block.
    queue: VecDeque<Utf8Bytes>,
    queued_bytes: usize,
    /// tungstenite holds bytes the socket would not take; wait for writability.
    blocked: bool,
    /// tungstenite may hold buffered bytes: flush at the end of the turn.
    dirty: bool,
    last_seen: Instant,
    ping_sent: Option<Instant>,
    window_start: Instant,
    events_in_window: u32,
    rate_warned: bool,
    /// Set once closing: when the socket is dropped regardless.
    closing: Option<Instant>,
    /// Our close frame is fully written (and our side shut for writing).
    close_sent: bool,
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

impl Conn {
    /// Sends a message, or queues it while the socket is blocked.
    fn send(&mut self, msg: Utf8Bytes, cap: usize, dirty: &mut Vec<usize>) -> Result<(), Trouble> {
        if self.closing.is_some() {
            return Ok(());
        }
        if self.blocked || !self.queue.is_empty() {
            if self.queued_bytes + msg.len() > cap {
                return Err(Trouble::Overflow);
            }
            self.queued_bytes += msg.len();
            self.queue.push_back(msg);
            return Ok(());
        }
        match self.ws.write(Message::Text(msg)) {
            Ok(()) => {
                self.mark_dirty(dirty);
                Ok(())
            }
            // tungstenite kept the frame; the rest waits for writability.
            Err(e) if would_block(&e) => {
                self.blocked = true;
                Ok(())
            }
            Err(_) => Err(Trouble::Dead),
        }
    }

    fn mark_dirty(&mut self, dirty: &mut Vec<usize>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(self.token);
        }
    }

    /// Writes out what tungstenite holds, then the queue, until done or the socket blocks.
    fn pump(&mut self) -> Result<(), Trouble> {
        loop {
            match self.ws.flush() {
                Ok(()) => self.blocked = false,
                Err(e) if would_block(&e) => {
                    self.blocked = true;
                    return Ok(());
                }
                Err(_) => return Err(Trouble::Dead),
            }
            if self.queue.is_empty() {
                return Ok(());
            }
            while let Some(msg) = self.queue.pop_front() {
                self.queued_bytes -= msg.len();
                match self.ws.write(Message::Text(msg)) {
                    Ok(()) => {}
                    Err(e) if would_block(&e) => {
                        self.blocked = true;
                        return Ok(());
                    }
                    Err(_) => return Err(Trouble::Dead),
                }
            }
        }
    }
}

#[derive(Default)]
struct Channel {
    subscribers: HashSet<usize>,
    /// Presence channels: user id -> member.
    members: HashMap<String, Member>,
}

struct Member {
    info: Value,
    /// Subscribed sockets of this user: added on the first, removed after the last.
    sockets: usize,
}

pub(super) struct Engine {
    poll: Poll,
    config: Arc<HubConfig>,
    rx: Receiver<Command>,
    ws_config: WebSocketConfig,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    by_id: HashMap<String, usize>,
    channels: HashMap<String, Channel>,
    /// Sockets with buffered output to flush at the end of the turn.
    dirty: Vec<usize>,
    /// Sockets whose input was not read to the end this turn.
    again: Vec<usize>,
    troubles: Vec<(usize, Trouble)>,
    count: Arc<AtomicUsize>,
    /// With Redis: where client events and presence changes go for the other nodes.
    pub(super) bridge: Option<Outbox>,
    /// With Redis: the other nodes' presence members. A presence channel's members are those
    /// of this node and these together.
    remote: RemotePresence,
    /// When this node's roster (its heartbeat) is next sent.
    next_roster: Instant,
}

impl Engine {
    pub(super) fn new(
        config: Arc<HubConfig>,
        rx: Receiver<Command>,
        count: Arc<AtomicUsize>,
    ) -> io::Result<(Engine, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let max = config.max_message.max(1);
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let engine = Engine {
            poll,
            config,
            rx,
            ws_config,
            conns: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            channels: HashMap::new(),
            dirty: Vec::new(),
            again: Vec::new(),
            troubles: Vec::new(),
            count,
            bridge: None,
            remote: RemotePresence::default(),
            next_roster: Instant::now(),
        };
        Ok((engine, waker))
    }

    /// How often timers are checked: often enough that a deadline is late by a quarter of the
    /// shortest timeout at most.
    fn tick(&self) -> Duration {
        let c = &self.config;
        let shortest = c.activity_timeout.min(c.pong_timeout).min(c.close_linger);
        (shortest.min(c.subscribe_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let tick = self.tick();
        let mut next_sweep = Instant::now() + tick;
        let mut more_commands = false;
        loop {
            let timeout = if more_commands || !self.again.is_empty() {
                Duration::ZERO
            } else {
                next_sweep.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("realtime: poll failed, closing every WebSocket: {e}");
                    self.shutdown();
                    return;
                }
            }
            match self.take_commands() {
                Taken::Stop => {
                    self.shutdown();
                    return;
                }
                Taken::More => more_commands = true,
                Taken::All => more_commands = false,
            }
            for event in events.iter() {
                let t = event.token().0;
                if event.token() == WAKER {
                    continue;
                }
                if event.is_writable() || event.is_error() {
                    self.on_writable(t);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(t);
                }
                self.settle();
            }
            for t in mem::take(&mut self.again) {
                self.on_readable(t);
                self.settle();
            }
            if Instant::now() >= next_sweep {
                self.sweep();
                self.settle();
                next_sweep = Instant::now() + tick;
            }
            while !self.dirty.is_empty() {
                self.flush_dirty();
                self.settle();
            }
        }
    }

    fn take_commands(&mut self) -> Taken {
        for _ in 0..COMMANDS_PER_TURN {
            let command = match self.rx.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => return Taken::All,
                // Every handle is gone.
                Err(TryRecvError::Disconnected) => return Taken::Stop,
            };
            match command {
                Command::Stop => return Taken::Stop,
                Command::Connect {
                    stream,
                    leftover,
                    slot,
                    ticket,
                    refusal,
                } => self.connect(stream, leftover, slot, ticket, refusal),
                Command::Publish(p) => self.publish(&p, None),
                Command::Relayed { publish, user_id } => self.publish(&publish, user_id.as_deref()),
                Command::FromNode { node, message } => self.node_said(&node, message),
                Command::Linked => {
                    self.tell_nodes(NodeMessage::Hello);
                    self.send_roster();
                }
                Command::Authorized {
                    socket_id,
                    channel,
                    owner,
                } => self.authorized(&socket_id, channel, owner),
                Command::Revoke { predicate, reply } => {
                    let n = self.revoke(&*predicate);
                    let _ = reply.send(n);
                }
                Command::Subscriptions { reply } => {
                    let _ = reply.send(self.subscriptions());
                }
            }
            self.settle();
        }
        Taken::More
    }

    // ---- connections -------------------------------------------------------------------------

    fn connect(
        &mut self,
        stream: std::net::TcpStream,
        leftover: Vec<u8>,
        slot: ConnSlot,
        ticket: Ticket,
        refusal: Option<Refusal>,
    ) {
        let mut stream = TcpStream::from_std(stream);
        let t = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(t),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("realtime: could not register a WebSocket: {e}");
            self.free.push(t);
            return;
        }
        let socket_id = self.new_socket_id();
        let now = Instant::now();
        let ws =
            WebSocket::from_partially_read(stream, leftover, Role::Server, Some(self.ws_config));
        self.conns[t] = Some(Conn {
            token: t,
            socket_id: socket_id.clone(),
            ws,
            _slot: slot,
            _ticket: ticket,
            lonely_since: Some(now),
            subs: HashMap::new(),
            grants: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            blocked: false,
            dirty: false,
            last_seen: now,
            ping_sent: None,
            window_start: now,
            events_in_window: 0,
            rate_warned: false,
            closing: None,
            close_sent: false,
        });
        self.by_id.insert(socket_id.clone(), t);
        self.count.fetch_add(1, Ordering::Relaxed);
        match refusal {
            None => {
                let secs = self.config.activity_timeout.as_secs_f64().ceil().max(1.0) as u64;
                self.send_to(t, protocol::connection_established(&socket_id, secs));
                // Bytes that came with the upgrade request may already hold whole messages,
                // and edge-triggered readiness would not announce them.
                self.on_readable(t);
            }
            Some(refusal) => {
                self.send_to(t, protocol::error_frame(refusal.code, &refusal.message));
                self.close(t, refusal.code, &refusal.message);
            }
        }
    }

    fn new_socket_id(&self) -> String {
        let mut rng = rand::thread_rng();
        loop {
            let id = format!(
                "{}.{}",
                rng.gen_range(1..=u32::MAX),
                rng.gen_range(1..=u32::MAX)
            );
            if !self.by_id.contains_key(&id) {
                return id;
            }
        }
    }

    /// Starts closing: leaves every channel (telling presence rosters), drops what was queued,
    /// and sends a close frame.
    fn close(&mut self, t: usize, code: u16, reason: &str) {
        match self.conns.get_mut(t).and_then(Option::as_mut) {
            Some(conn) if conn.closing.is_none() => {}
            _ => return,
        }
        let Some(conn) = self.start_closing(t) else {
            return;
        };
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let result = conn.ws.close(Some(frame));
        self.close_written(t, result);
    }

    /// Leaves every channel, drops what was still queued, and gives the socket `close_linger`
    /// to finish the closing handshake.
    fn start_closing(&mut self, t: usize) -> Option<&mut Conn> {
        self.unsubscribe_all(t);
        let linger = self.config.close_linger;
        let conn = self.conns.get_mut(t).and_then(Option::as_mut)?;
        conn.queue.clear();
        conn.queued_bytes = 0;
        conn.closing = Some(Instant::now() + linger);
        Some(conn)
    }

    /// The client sent a close frame: leave every channel, answer it, then wait for its EOF.
    fn closed_by_peer(&mut self, t: usize) {
        let Some(conn) = self.start_closing(t) else {
            return;
        };
        // tungstenite queued the reply; flushing a server socket whose peer closed ends with
        // `ConnectionClosed` once it is written.
        let result = conn.ws.flush();
        self.close_written(t, result);
    }

    fn close_written(&mut self, t: usize, result: tungstenite::Result<()>) {
        match result {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
                    return;
                };
                conn.close_sent = true;
                let _ = conn.ws.get_mut().shutdown(Shutdown::Write);
                self.drain_closing(t);
            }
            Err(e) if would_block(&e) => {}
            Err(_) => self.troubles.push((t, Trouble::Dead)),
        }
    }

    /// Reads and discards what a closing client still sends, until its EOF.
    fn drain_closing(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return;
        };
        if !conn.close_sent {
            return;
        }
        let mut buf = [0u8; 4096];
        for _ in 0..MESSAGES_PER_TURN {
            match conn.ws.get_mut().read(&mut buf) {
                Ok(0) => {
                    self.troubles.push((t, Trouble::Dead));
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.troubles.push((t, Trouble::Dead));
                    return;
                }
            }
        }
        self.again.push(t);
    }

    /// Forgets a socket: closes it and frees its place under the HTTP connection cap.
    fn drop_conn(&mut self, t: usize) {
        if self.conns.get_mut(t).and_then(Option::as_mut).is_none() {
            return;
        }
        self.unsubscribe_all(t);
        let Some(mut conn) = self.conns.get_mut(t).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(conn.ws.get_mut());
        self.by_id.remove(&conn.socket_id);
        self.free.push(t);
        self.count.fetch_sub(1, Ordering::Relaxed);
    }

    /// Handles the troubles found meanwhile; closing a socket may find more (a presence
    /// broadcast to a socket that overflows), hence the loop.
    fn settle(&mut self) {
        while let Some((t, trouble)) = self.troubles.pop() {
            match trouble {
                Trouble::Dead => self.drop_conn(t),
                Trouble::Overflow => {
                    log::info!("realtime: closing a WebSocket that fell behind");
                    self.close(t, codes::OVER_CAPACITY, "Over capacity: client too slow")
                }
            }
        }
    }

    fn shutdown(&mut self) {
        // An empty roster: the other nodes drop our members now rather than at expiry.
        self.tell_nodes(NodeMessage::Roster {
            members: HashMap::new(),
        });
        for slot in self.conns.iter_mut() {
            if let Some(mut conn) = slot.take() {
                if conn.closing.is_none() {
                    let frame = CloseFrame {
                        code: CloseCode::from(codes::GOING_AWAY),
                        reason: "server shutting down".into(),
                    };
                    let _ = conn.ws.close(Some(frame));
                }
                let _ = self.poll.registry().deregister(conn.ws.get_mut());
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.by_id.clear();
        self.channels.clear();
    }

    // ---- I/O ---------------------------------------------------------------------------------

    fn on_writable(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return;
        };
        if conn.closing.is_some() {
            if !conn.close_sent {
                let result = conn.ws.flush();
                self.close_written(t, result);
            }
            return;
        }
        if let Err(trouble) = conn.pump() {
            self.troubles.push((t, trouble));
        }
    }

    fn on_readable(&mut self, t: usize) {
        for _ in 0..MESSAGES_PER_TURN {
            let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
                return;
            };
            if conn.closing.is_some() {
                self.drain_closing(t);
                return;
            }
            match conn.ws.read() {
                Ok(message) => {
                    conn.last_seen = Instant::now();
                    conn.ping_sent = None;
                    self.on_message(t, message);
                }
                Err(e) => {
                    self.on_read_error(t, e);
                    return;
                }
            }
        }
        // More may be waiting; readiness will not be announced again for it.
        self.again.push(t);
    }

    fn on_read_error(&mut self, t: usize, e: tungstenite::Error) {
        use tungstenite::Error as E;
        match e {
            e if would_block(&e) => {
                // tungstenite may have queued a pong or close reply while reading.
                if let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) {
                    conn.mark_dirty(&mut self.dirty);
                }
            }
            E::Capacity(_) => {
                let max = self.config.max_message;
                let message = format!("Message too large: the limit is {max} bytes");
                self.send_to(t, protocol::error_frame(codes::MESSAGE_TOO_LARGE, &message));
                self.close(t, codes::MESSAGE_TOO_LARGE, "Message too large");
            }
            E::Utf8(_) => self.close(t, CloseCode::Invalid.into(), "invalid UTF-8"),
            E::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                self.troubles.push((t, Trouble::Dead))
            }
            E::Protocol(p) => {
                log::debug!("realtime: WebSocket protocol error: {p}");
                self.close(t, CloseCode::Protocol.into(), "protocol error")
            }
            _ => self.troubles.push((t, Trouble::Dead)),
        }
    }

    fn on_message(&mut self, t: usize, message: Message) {
        match message {
            Message::Text(text) => self.on_text(t, text.as_str()),
            Message::Binary(_) => self.send_to(
                t,
                protocol::error_frame(codes::INVALID_MESSAGE, "Binary frames are not supported"),
            ),
            // tungstenite answers pings itself; the answer goes out with the flush.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                if let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) {
                    conn.mark_dirty(&mut self.dirty);
                }
            }
            Message::Close(_) => self.closed_by_peer(t),
        }
    }

    fn flush_dirty(&mut self) {
        for t in mem::take(&mut self.dirty) {
            let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
                continue;
            };
            conn.dirty = false;
            if conn.closing.is_some() {
                continue;
            }
            if let Err(trouble) = conn.pump() {
                self.troubles.push((t, trouble));
            }
        }
    }

    fn send_to(&mut self, t: usize, text: String) {
        let cap = self.config.outbound_queue_cap;
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return;
        };
        if let Err(trouble) = conn.send(text.into(), cap, &mut self.dirty) {
            self.troubles.push((t, trouble));
        }
    }

    /// Sends one message to every subscriber of `channel` but `except`.
    fn broadcast(&mut self, channel: &str, msg: Utf8Bytes, except: Option<usize>) {
        let cap = self.config.outbound_queue_cap;
        let Some(ch) = self.channels.get(channel) else {
            return;
        };
        for &t in &ch.subscribers {
            if Some(t) == except {
                continue;
            }
            let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
                continue;
            };
            if let Err(trouble) = conn.send(msg.clone(), cap, &mut self.dirty) {
                self.troubles.push((t, trouble));
            }
        }
    }

    // ---- timers ------------------------------------------------------------------------------

    fn sweep(&mut self) {
        let now = Instant::now();
        if self.bridge.is_some() && now >= self.next_roster {
            self.send_roster();
            if let Some(since) = now.checked_sub(EXPIRY) {
                let flips = self.remote.expire(since);
                self.remote_flips(flips);
            }
        }
        let activity = self.config.activity_timeout;
        let pong = self.config.pong_timeout;
        let cap = self.config.outbound_queue_cap;
        let lonely = self.config.subscribe_timeout;
        let mut silent = Vec::new();
        let mut inactive = Vec::new();
        for (t, slot) in self.conns.iter_mut().enumerate() {
            let Some(conn) = slot else { continue };
            if let Some(deadline) = conn.closing {
                if now >= deadline {
                    self.troubles.push((t, Trouble::Dead));
                }
                continue;
            }
            if conn
                .lonely_since
                .is_some_and(|at| now.duration_since(at) >= lonely)
            {
                inactive.push(t);
                continue;
            }
            match conn.ping_sent {
                Some(at) if now.duration_since(at) >= pong => silent.push(t),
                Some(_) => {}
                None if now.duration_since(conn.last_seen) >= activity => {
                    conn.ping_sent = Some(now);
                    if let Err(trouble) =
                        conn.send(protocol::ping_frame().into(), cap, &mut self.dirty)
                    {
                        self.troubles.push((t, trouble));
                    }
                }
                None => {}
            }
        }
        for t in silent {
            self.close(t, codes::PONG_NOT_RECEIVED, "Pong reply not received");
        }
        for t in inactive {
            self.close(
                t,
                codes::INACTIVE,
                "Closed after inactivity: no channel subscribed",
            );
        }
    }

    // ---- the protocol ------------------------------------------------------------------------

    fn on_text(&mut self, t: usize, text: &str) {
        let inbound = match protocol::parse_inbound(text) {
            Ok(i) => i,
            Err(e) => {
                self.send_to(t, protocol::error_frame(codes::INVALID_MESSAGE, &e.0));
                return;
            }
        };
        match inbound {
            Inbound::Ping => self.send_to(t, protocol::pong_frame()),
            Inbound::Pong => {}
            Inbound::Subscribe {
                channel,
                auth,
                channel_data,
            } => self.subscribe(t, channel, auth, channel_data),
            Inbound::Unsubscribe { channel } => {
                self.unsubscribe(t, &channel);
            }
            Inbound::ClientEvent {
                event,
                channel,
                data,
            } => self.client_event(t, &event, &channel, &data),
            Inbound::Unsupported(event) => self.send_to(
                t,
                protocol::error_frame(
                    codes::INVALID_MESSAGE,
                    &format!("Unsupported event {event:?}"),
                ),
            ),
        }
    }

    fn subscribe(
        &mut self,
        t: usize,
        channel: String,
        auth: Option<String>,
        channel_data: Option<String>,
    ) {
        if !protocol::valid_channel_name(&channel) {
            let message = format!("Invalid channel name {channel:?}");
            self.send_to(t, protocol::error_frame(codes::INVALID_MESSAGE, &message));
            return;
        }
        let Some(conn) = self.conns.get(t).and_then(Option::as_ref) else {
            return;
        };
        let kind = ChannelKind::of(&channel);
        if kind == ChannelKind::Public && (self.config.reserved_public)(&channel) {
            let message = "Reserved channel name: subscribe with its private- or presence- prefix";
            self.send_to(t, protocol::subscription_error(&channel, message, 403));
            return;
        }
        let mut presence_user = None;
        if kind.needs_auth() {
            let data = if kind == ChannelKind::Presence {
                channel_data.as_deref()
            } else {
                None
            };
            let refusal = match (&auth, kind, data) {
                (None, _, _) => Some("Missing auth for a private or presence channel"),
                (Some(_), ChannelKind::Presence, None) => Some("Missing channel_data"),
                (Some(auth), _, _) => {
                    let c = &self.config;
                    (!verify_channel_auth(auth, &c.secret, &c.key, &conn.socket_id, &channel, data))
                        .then_some("Invalid signature")
                }
            };
            if let Some(error) = refusal {
                self.send_to(t, protocol::subscription_error(&channel, error, 401));
                return;
            }
            if let Some(data) = data {
                match protocol::parse_channel_data(data) {
                    Ok(user) => presence_user = Some(user),
                    Err(e) => {
                        self.send_to(t, protocol::subscription_error(&channel, &e.0, 400));
                        return;
                    }
                }
            }
        }

        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return;
        };
        if !conn.subs.contains_key(&channel) {
            let grant = conn
                .grants
                .iter()
                .position(|(c, _)| *c == channel)
                .and_then(|i| conn.grants.remove(i))
                .map(|(_, owner)| owner);
            if grant.is_none() && self.config.require_recorded_grant && kind != ChannelKind::Public
            {
                self.send_to(
                    t,
                    protocol::subscription_error(
                        &channel,
                        "No current authorization: ask the auth endpoint again",
                        403,
                    ),
                );
                return;
            }
            let owner = grant.or_else(|| presence_user.as_ref().map(|u| u.id.clone()));
            conn.lonely_since = None;
            conn.subs.insert(
                channel.clone(),
                Sub {
                    owner,
                    presence_user: presence_user.as_ref().map(|u| u.id.clone()),
                },
            );
            let ch = self.channels.entry(channel.clone()).or_default();
            ch.subscribers.insert(t);
            if let Some(user) = presence_user {
                let member = ch.members.entry(user.id.clone()).or_insert(Member {
                    info: user.info.clone(),
                    sockets: 0,
                });
                member.sockets += 1;
                if member.sockets == 1 {
                    // Already present through another node: nothing changes for the others.
                    if !self.remote.has(&channel, &user.id) {
                        let added = protocol::member_added(&channel, &user.id, &user.info);
                        self.broadcast(&channel, added.into(), Some(t));
                    }
                    self.tell_nodes(NodeMessage::MemberAdded {
                        channel: channel.clone(),
                        user_id: user.id.clone(),
                        user_info: user.info.clone(),
                    });
                }
            }
        }
        // A repeated subscribe is answered again, with the current roster.
        let presence = (kind == ChannelKind::Presence).then(|| self.roster(&channel));
        self.send_to(t, protocol::subscription_succeeded(&channel, presence));
    }

    /// `{"ids": [...], "hash": {id: info}, "count": n}` of a presence channel: its members on
    /// this node and on the others.
    fn roster(&self, channel: &str) -> Value {
        let mut ids = Vec::new();
        let mut hash = Map::new();
        if let Some(ch) = self.channels.get(channel) {
            for (id, member) in &ch.members {
                ids.push(Value::String(id.clone()));
                hash.insert(id.clone(), member.info.clone());
            }
        }
        for (id, info) in self.remote.members(channel) {
            if !hash.contains_key(id) {
                ids.push(Value::String(id.to_string()));
                hash.insert(id.to_string(), info.clone());
            }
        }
        json!({"count": ids.len(), "ids": ids, "hash": hash})
    }

    // ---- other nodes -------------------------------------------------------------------------

    fn tell_nodes(&self, message: NodeMessage) {
        if let Some(bridge) = &self.bridge {
            bridge.send(message);
        }
    }

    /// Every presence member of this node, for the others (also our heartbeat).
    fn send_roster(&mut self) {
        if self.bridge.is_none() {
            return;
        }
        self.next_roster = Instant::now() + HEARTBEAT;
        let members = self
            .channels
            .iter()
            .filter(|(_, ch)| !ch.members.is_empty())
            .map(|(name, ch)| {
                let users = ch
                    .members
                    .iter()
                    .map(|(id, m)| (id.clone(), m.info.clone()))
                    .collect();
                (name.clone(), users)
            })
            .collect();
        self.tell_nodes(NodeMessage::Roster { members });
    }

    fn node_said(&mut self, node: &str, message: NodeMessage) {
        if message == NodeMessage::Hello {
            self.send_roster();
        }
        let flips = self.remote.apply(node, message, Instant::now());
        self.remote_flips(flips);
    }

    /// Tells this node's subscribers of a presence channel who came or went through the other
    /// nodes, unless the member is present here as well (then nothing changed for them).
    fn remote_flips(&mut self, flips: Vec<Flip>) {
        for flip in flips {
            let Some(ch) = self.channels.get(&flip.channel) else {
                continue;
            };
            if ch.members.contains_key(&flip.user_id) {
                continue;
            }
            let frame = if flip.present {
                protocol::member_added(&flip.channel, &flip.user_id, &flip.info)
            } else {
                protocol::member_removed(&flip.channel, &flip.user_id)
            };
            self.broadcast(&flip.channel, frame.into(), None);
        }
    }

    /// Leaves a channel; the last socket of a presence member out announces its removal.
    fn unsubscribe(&mut self, t: usize, channel: &str) -> bool {
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return false;
        };
        let Some(sub) = conn.subs.remove(channel) else {
            return false;
        };
        if conn.subs.is_empty() {
            conn.lonely_since = Some(Instant::now());
        }
        let Some(ch) = self.channels.get_mut(channel) else {
            return true;
        };
        ch.subscribers.remove(&t);
        let mut gone = None;
        if let Some(user) = sub.presence_user {
            if let Some(member) = ch.members.get_mut(&user) {
                member.sockets -= 1;
                if member.sockets == 0 {
                    ch.members.remove(&user);
                    gone = Some(user);
                }
            }
        }
        if ch.subscribers.is_empty() {
            self.channels.remove(channel);
        } else if let Some(user) = gone.as_ref().filter(|u| !self.remote.has(channel, u)) {
            self.broadcast(
                channel,
                protocol::member_removed(channel, user).into(),
                None,
            );
        }
        if let Some(user_id) = gone {
            self.tell_nodes(NodeMessage::MemberRemoved {
                channel: channel.to_string(),
                user_id,
            });
        }
        true
    }

    fn unsubscribe_all(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return;
        };
        let channels: Vec<String> = conn.subs.keys().cloned().collect();
        for channel in channels {
            self.unsubscribe(t, &channel);
        }
    }

    fn client_event(&mut self, t: usize, event: &str, channel: &str, data: &str) {
        let limit = self.config.client_events_per_sec;
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return;
        };
        if !ChannelKind::of(channel).allows_client_events() {
            let message = "Client events are only allowed on private and presence channels";
            self.send_to(t, protocol::error_frame(codes::UNAUTHORIZED, message));
            return;
        }
        let Some(sub) = conn.subs.get(channel) else {
            let message = format!("Subscribe to {channel} before sending client events on it");
            self.send_to(t, protocol::error_frame(codes::UNAUTHORIZED, &message));
            return;
        };
        let user_id = sub.presence_user.clone();
        let now = Instant::now();
        if now.duration_since(conn.window_start) >= Duration::from_secs(1) {
            conn.window_start = now;
            conn.events_in_window = 0;
            conn.rate_warned = false;
        }
        conn.events_in_window = conn.events_in_window.saturating_add(1);
        if conn.events_in_window > limit {
            // One error per window: a flood must not be answered with a flood.
            if !conn.rate_warned {
                conn.rate_warned = true;
                let message = format!("Client event rejected: at most {limit} per second");
                self.send_to(t, protocol::error_frame(codes::RATE_LIMITED, &message));
            }
            return;
        }
        let frame = protocol::event_frame(event, channel, data, user_id.as_deref());
        self.broadcast(channel, frame.into(), Some(t));
        if let Some(bridge) = &self.bridge {
            let socket_id = self.conns[t].as_ref().map(|c| c.socket_id.clone());
            let publish = Publish {
                channels: vec![channel.to_string()],
                event: event.to_string(),
                data: data.to_string(),
                except_socket: socket_id,
            };
            bridge.send(NodeMessage::event(&publish, user_id));
        }
    }

    // ---- commands ----------------------------------------------------------------------------

    fn publish(&mut self, p: &Publish, user_id: Option<&str>) {
        let except = p
            .except_socket
            .as_deref()
            .and_then(|id| self.by_id.get(id))
            .copied();
        for channel in &p.channels {
            if !self.channels.contains_key(channel) {
                continue;
            }
            // One frame per channel, shared by every subscriber.
            let frame: Utf8Bytes =
                protocol::event_frame(&p.event, channel, &p.data, user_id).into();
            self.broadcast(channel, frame, except);
        }
    }

    fn authorized(&mut self, socket_id: &str, channel: String, owner: String) {
        let Some(&t) = self.by_id.get(socket_id) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return;
        };
        if let Some(sub) = conn.subs.get_mut(&channel) {
            sub.owner = Some(owner.clone());
            // Kept as a grant too: a client that leaves and joins again (Echo's leave, then
            // private() on the next screen) sends its unsubscribe before asking for this, but
            // the frame can be read after it; the subscribe that follows must not be refused.
        }
        conn.grants.retain(|(c, _)| *c != channel);
        if conn.grants.len() >= MAX_GRANTS {
            conn.grants.pop_front();
        }
        conn.grants.push_back((channel, owner));
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        let mut all = Vec::new();
        for conn in self.conns.iter().flatten() {
            if conn.closing.is_some() {
                continue;
            }
            for (channel, sub) in &conn.subs {
                all.push(Subscription {
                    socket_id: conn.socket_id.clone(),
                    channel: channel.clone(),
                    user_id: sub.owner.clone(),
                });
            }
        }
        all
    }

    fn revoke(&mut self, predicate: &dyn Fn(&Subscription) -> bool) -> usize {
        let mut hits = Vec::new();
        for conn in self.conns.iter().flatten() {
            for (channel, sub) in &conn.subs {
                let s = Subscription {
                    socket_id: conn.socket_id.clone(),
                    channel: channel.clone(),
                    user_id: sub.owner.clone(),
                };
                if predicate(&s) {
                    hits.push((conn.token, s.channel));
                }
            }
        }
        for (t, channel) in &hits {
            let error = protocol::subscription_error(channel, "Authorization revoked", 403);
            self.send_to(*t, error);
            self.unsubscribe(*t, channel);
        }
        hits.len()
    }
}

enum Taken {
    All,
    More,
    Stop,
}
