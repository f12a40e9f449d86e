//! The connection engine: one reactor thread and a bounded pool of workers.
//!
//! The reactor (mio, edge-triggered) accepts connections, enforces the connection cap, and reads
//! whole requests (head and body) without blocking. Only a connection that has delivered a whole
//! request is handed to a worker, so idle keep-alive connections and slow clients (slowloris, slow
//! bodies) cost a buffer, never a thread. The worker calls the handler, writes the answer and hands
//! the connection back; the reactor then serves whatever the client pipelined behind it. Sockets
//! stay non-blocking throughout; workers wait on them with poll(2) and a deadline.

use std::any::Any;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use super::body_stream::BodyStream;
use super::parse::{self, BodyFraming, ChunkedDecoder, Framing, HeadLimits, HeadScan, Reject};
use super::request::{self, log_safe, Request, Version};
use super::response::{self, Body, ChunkedWriter, ConnSlot, Delimit, Response, Upgraded};
use super::router::BodyLimit;

/// Every limit and timeout of the HTTP layer. The defaults are the documented ones.
#[derive(Clone, Debug)]
pub struct Config {
    /// Threads that run handlers.
    pub workers: usize,
    /// Open connections at most. At the cap an idle keep-alive connection, or else one still
    /// sending its head, is closed to make room; only when there is none is a new one
    /// answered `503` and closed.
    pub max_connections: usize,
    /// Connections one peer address may hold; `None`: [`Config::client_share`]. Trusted
    /// proxies are held to the cap alone (they carry many clients).
    pub max_per_client: Option<usize>,
    /// From the moment a connection is ready for a request (accepted, or its previous answer sent)
    /// to the end of the next request head. Covers idle keep-alive and trickling clients alike.
    pub head_timeout: Duration,
    /// The longest wait for a write to make progress while a response is sent.
    pub io_timeout: Duration,
    /// The whole body must arrive within this, counted from the end of the head.
    pub body_timeout: Duration,
    /// Default body limit; a route may set its own.
    pub max_body: usize,
    /// Streamed bodies (uploads) in progress at most: each holds a worker while its client
    /// sends, so they may not take every worker. One more is answered `503`. `None`: half
    /// the workers. One client address may hold half of these (at least one).
    pub max_streaming: Option<usize>,
    pub limits: HeadLimits,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 16,
            max_connections: 1024,
            max_per_client: None,
            head_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_body: 1024 * 1024,
            max_streaming: None,
            limits: HeadLimits {
                max_request_line: 8 * 1024,
                max_header_line: 8 * 1024,
                max_headers: 100,
                max_head_bytes: 64 * 1024,
            },
            trusted_proxies: Vec::new(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// The default share of one address: an eighth of the cap, and at least 64 (a browser opens
    /// 6 connections a host; an office behind one NAT address has many browsers).
    pub fn client_share(max_connections: usize) -> usize {
        (max_connections / 8).max(64)
    }

    fn per_client(&self) -> usize {
        self.max_per_client
            .unwrap_or_else(|| Config::client_share(self.max_connections))
    }
}

/// What the server calls for each request. Called from many worker threads at once.
pub trait Handler: Send + Sync + 'static {
    /// How this request's body is taken, decided from its head before any body byte is read;
    /// `None`: buffered, at most `Config::max_body`.
    fn body_limit(&self, _req: &Request) -> Option<BodyLimit> {
        None
    }

    /// What one worker thread keeps from a request to the next: made when the worker starts,
    /// passed to each of its `handle` calls, never seen by another thread (so it needs no
    /// lock, and its cache lines stay on one core). A handler keeps there only what a later
    /// request could have looked up itself, checked on every use.
    fn worker_state(&self) -> Box<dyn Any + Send> {
        Box::new(())
    }

    fn handle(&self, req: &Request, state: &mut dyn Any) -> Response;
}

/// The log target of the one line per request; a response's `log_note` is only worth making
/// while it is on.
pub const ACCESS_LOG: &str = "tenantd::access";

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// How often deadlines are checked; a timed-out connection is closed at most this late.
const SWEEP: Duration = Duration::from_millis(250);
/// How long a connection we are closing may keep sending. Reading (and dropping) what it still
/// sends lets our last answer arrive instead of being destroyed by a TCP reset.
const DRAIN: Duration = Duration::from_secs(2);

struct Conn {
    token: usize,
    stream: TcpStream,
    peer: SocketAddr,
    /// Received bytes not yet consumed: a partial head, or body bytes of the pending request.
    buf: Vec<u8>,
    /// When the connection became ready for its next request (accepted, or last answer sent).
    ready_at: Instant,
    /// The request whose head is complete and whose body is still arriving.
    pending: Option<Pending>,
    /// It has been answered at least once: with nothing buffered it is an idle keep-alive.
    served: bool,
}

struct Pending {
    req: Request,
    framing: Framing,
    limit: usize,
    /// The handler reads the body itself, up to this many bytes.
    streamed: Option<u64>,
    chunked: ChunkedDecoder,
    deadline: Instant,
}

enum Slot {
    Waiting(Conn),
    Busy,
    Draining(Conn, Instant),
}

/// A connection, or news of one, coming back from a worker.
enum FromWorker {
    Idle(Conn),
    /// Our side is shut for writing: read what the client still sends, then close.
    Drain(Conn),
    /// The slot is free: the connection was closed, or an upgraded connection was dropped.
    Closed(usize),
}

/// The places for streamed bodies (see `Config::max_streaming`): taken by the reactor when it
/// hands such a request to a worker, given back by the worker. A client address may hold half
/// of them at most, so that one client cannot keep every upload waiting behind its own.
#[derive(Default)]
struct Streaming {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl Streaming {
    /// Takes a place for `client` unless the server's or the client's share is full.
    fn take(&mut self, client: IpAddr, cap: usize) -> bool {
        let cap = cap.max(1);
        let share = (cap / 2).max(1);
        let held = self.per_client.get(&client).copied().unwrap_or(0);
        if self.total >= cap || held >= share {
            return false;
        }
        self.total += 1;
        *self.per_client.entry(client).or_insert(0) += 1;
        true
    }

    fn give_back(&mut self, client: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }
}

impl Shared {
    fn streaming(&self) -> std::sync::MutexGuard<'_, Streaming> {
        self.streaming.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Shared {
    stopping: AtomicBool,
    waker: Waker,
    /// Mirrors of the reactor's own counts, for [`ServerHandle::counts`].
    open: AtomicUsize,
    handed_back: AtomicU64,
    /// Streamed bodies being read by workers now, in all and per client.
    streaming: std::sync::Mutex<Streaming>,
}

/// Stops the server from any thread (a signal handler thread, a test).
#[derive(Clone)]
pub struct Stopper(Arc<Shared>);

impl Stopper {
    pub fn stop(&self) {
        self.0.stopping.store(true, Ordering::SeqCst);
        let _ = self.0.waker.wake();
    }
}

pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    reactor: Option<JoinHandle<()>>,
    workers_done: Receiver<()>,
    grace: Duration,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open now, and how many times a connection has come back from a worker to
    /// wait for its next request, as the reactor last saw them. Tests wait on these where the
    /// reactor's order of events is the subject (which connection is idle, which has closed).
    pub fn counts(&self) -> (usize, u64) {
        (
            self.shared.open.load(Ordering::SeqCst),
            self.shared.handed_back.load(Ordering::SeqCst),
        )
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.shared.clone())
    }

    /// Stops accepting, lets requests in flight finish (bounded by the grace period) and returns
    /// whether they all did.
    pub fn shutdown(self) -> bool {
        self.stopper().stop();
        self.wait()
    }

    /// Blocks until the server is stopped (see [`Stopper`]), then drains as [`Self::shutdown`] does.
    pub fn wait(mut self) -> bool {
        if let Some(reactor) = self.reactor.take() {
            let _ = reactor.join();
        }
        let deadline = Instant::now() + self.grace;
        loop {
            match self
                .workers_done
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(()) => continue,
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.reactor.is_some() {
            self.stopper().stop();
        }
    }
}

/// Starts serving on a bound listener.
pub fn serve(
    listener: TcpListener,
    config: Config,
    handler: Arc<dyn Handler>,
) -> io::Result<ServerHandle> {
    listener.set_nonblocking(true)?;
    // The standard library listens with a backlog of 128: a burst of new connections while the
    // reactor is busy would overflow it and make clients wait a second to retry. Calling
    // listen(2) again on a listening socket only raises the backlog (capped by somaxconn).
    // SAFETY: listen on a descriptor we own.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    let addr = listener.local_addr()?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let shared = Arc::new(Shared {
        stopping: AtomicBool::new(false),
        waker: Waker::new(poll.registry(), WAKER)?,
        open: AtomicUsize::new(0),
        handed_back: AtomicU64::new(0),
        streaming: std::sync::Mutex::new(Streaming::default()),
    });
    let config = Arc::new(config);
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Conn>();
    let (back_tx, back_rx) = crossbeam_channel::unbounded::<FromWorker>();
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);

    for i in 0..config.workers.max(1) {
        let worker = Worker {
            config: config.clone(),
            handler: handler.clone(),
            shared: shared.clone(),
            registry: poll.registry().try_clone()?,
            back: back_tx.clone(),
        };
        let jobs = job_rx.clone();
        let done = done_tx.clone();
        std::thread::Builder::new()
            .name(format!("http-worker-{i}"))
            .spawn(move || {
                let mut state = worker.handler.worker_state();
                while let Ok(conn) = jobs.recv() {
                    worker.run(conn, &mut *state);
                }
                drop(done);
            })?;
    }
    drop(done_tx);

    let reactor = Reactor {
        poll,
        listener,
        shared: shared.clone(),
        config: config.clone(),
        handler,
        jobs: job_tx,
        back: back_rx,
        slots: Vec::new(),
        peers: Vec::new(),
        per_ip: HashMap::new(),
        free: Vec::new(),
        open: 0,
        scratch: vec![0; 16 * 1024],
    };
    let reactor = std::thread::Builder::new()
        .name("http-reactor".into())
        .spawn(move || reactor.run())?;

    Ok(ServerHandle {
        addr,
        shared,
        reactor: Some(reactor),
        workers_done: done_rx,
        grace: config.shutdown_grace,
    })
}

struct Reactor {
    poll: Poll,
    listener: mio::net::TcpListener,
    shared: Arc<Shared>,
    config: Arc<Config>,
    handler: Arc<dyn Handler>,
    jobs: Sender<Conn>,
    back: Receiver<FromWorker>,
    slots: Vec<Option<Slot>>,
    /// The peer address of each occupied slot (busy and upgraded ones included).
    peers: Vec<IpAddr>,
    /// Open connections per peer address.
    per_ip: HashMap<IpAddr, usize>,
    free: Vec<usize>,
    open: usize,
    scratch: Vec<u8>,
}

/// Where a waiting connection stands after reading what the socket had.
enum ReadOutcome {
    /// A whole request is buffered.
    Ready,
    Wait,
    Closed,
    Reject(Reject),
}

impl Reactor {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        // Set when accept failed for lack of resources: edge-triggered readiness will not repeat
        // for connections already in the backlog, so we retry on the sweep.
        let mut accept_pending = false;
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(SWEEP)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("http reactor poll failed: {e}");
                break;
            }
            if self.shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => accept_pending = self.accept(),
                    WAKER => self.take_back(),
                    Token(t) => self.service(t),
                }
            }
            if last_sweep.elapsed() >= SWEEP {
                last_sweep = Instant::now();
                self.sweep();
                if accept_pending {
                    accept_pending = self.accept();
                }
            }
        }
        // Stop accepting and drop every connection no worker holds; busy ones end with their
        // answer, which says `Connection: close`.
        let _ = self.poll.registry().deregister(&mut self.listener);
        for slot in self.slots.iter_mut() {
            if let Some(Slot::Waiting(conn) | Slot::Draining(conn, _)) = slot.take() {
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Accepts until the backlog is empty. True when it had to stop early for lack of resources.
    fn accept(&mut self) -> bool {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        log::warn!("accept failed: {e}");
                        return true;
                    }
                    // A client that gave up before we accepted it, or a signal: the next one.
                    _ => continue,
                },
            };
            let stream = TcpStream::from(stream);
            let ip = peer.ip();
            let held = self.per_ip.get(&ip).copied().unwrap_or(0);
            if held >= self.config.per_client() && !self.config.trusted_proxies.contains(&ip) {
                refuse(
                    &stream,
                    "too_many_connections",
                    "too many open connections from your address",
                );
                log::debug!("{peer} refused: {held} connections open from that address");
                continue;
            }
            if self.open >= self.config.max_connections && !self.make_room() {
                refuse(&stream, "over_capacity", "too many open connections");
                log::warn!("{peer} refused: {} connections open", self.open);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let token = match self.free.pop() {
                Some(t) => t,
                None => {
                    self.slots.push(None);
                    self.peers.push(ip);
                    self.slots.len() - 1
                }
            };
            let fd = stream.as_raw_fd();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
            {
                log::warn!("cannot watch connection from {peer}: {e}");
                self.free.push(token);
                continue;
            }
            self.open += 1;
            self.shared.open.store(self.open, Ordering::SeqCst);
            self.peers[token] = ip;
            *self.per_ip.entry(ip).or_insert(0) += 1;
            let conn = Conn {
                token,
                stream,
                peer,
                buf: Vec::new(),
                ready_at: Instant::now(),
                pending: None,
                served: false,
            };
            self.slots[token] = Some(Slot::Waiting(conn));
            // Data may have arrived before registration; edge-triggered readiness would not say.
            self.service(token);
        }
    }

    fn take_back(&mut self) {
        while let Ok(back) = self.back.try_recv() {
            match back {
                FromWorker::Idle(mut conn) => {
                    let token = conn.token;
                    conn.ready_at = Instant::now();
                    conn.served = true;
                    if conn.buf.is_empty() {
                        conn.buf = Vec::new();
                    }
                    self.slots[token] = Some(Slot::Waiting(conn));
                    self.shared.handed_back.fetch_add(1, Ordering::SeqCst);
                    // Bytes that arrived while a worker held the connection raised their edge
                    // then; reading now serves them, pipelined requests included.
                    self.service(token);
                }
                FromWorker::Drain(conn) => {
                    let token = conn.token;
                    self.slots[token] = Some(Slot::Draining(conn, Instant::now() + DRAIN));
                    self.service(token);
                }
                FromWorker::Closed(token) => self.close(token),
            }
        }
    }

    fn service(&mut self, token: usize) {
        let progress = match self.slots.get_mut(token) {
            Some(Some(Slot::Waiting(conn))) => {
                read_request(conn, &mut self.scratch, &self.config, &*self.handler)
            }
            Some(Some(Slot::Draining(conn, _))) => {
                if !drain(conn, &mut self.scratch) {
                    self.close(token);
                }
                return;
            }
            _ => return,
        };
        match progress {
            ReadOutcome::Wait => {}
            ReadOutcome::Closed => self.close(token),
            ReadOutcome::Ready if self.over_streaming(token) => {
                self.refuse_request(token, Reject::Busy)
            }
            ReadOutcome::Ready => {
                let Some(Slot::Waiting(conn)) = self.slots[token].replace(Slot::Busy) else {
                    unreachable!("the slot was waiting")
                };
                let streamed = conn
                    .pending
                    .as_ref()
                    .filter(|p| p.streamed.is_some())
                    .map(|p| p.req.client_ip);
                if self.jobs.send(conn).is_err() {
                    if let Some(client) = streamed {
                        self.shared.streaming().give_back(client);
                    }
                    self.close(token);
                }
            }
            ReadOutcome::Reject(reject) => self.refuse_request(token, reject),
        }
    }

    /// Whether the request waiting in `token` streams its body and every place for one is
    /// taken; if not, and it streams, it takes a place (given back by its worker).
    fn over_streaming(&self, token: usize) -> bool {
        let Some(Some(Slot::Waiting(conn))) = self.slots.get(token) else {
            return false;
        };
        let Some(pending) = conn.pending.as_ref().filter(|p| p.streamed.is_some()) else {
            return false;
        };
        let cap = self.config.max_streaming.unwrap_or(self.config.workers / 2);
        !self.shared.streaming().take(pending.req.client_ip, cap)
    }

    /// Answers the waiting request in `token` with an error and closes the connection.
    fn refuse_request(&mut self, token: usize, reject: Reject) {
        let Some(Some(Slot::Waiting(conn))) = self.slots.get_mut(token).map(Option::take) else {
            unreachable!("the slot was waiting")
        };
        log_reject(conn.peer, &reject);
        let mut out = Vec::new();
        error_bytes(&mut out, reject.status(), reject.code(), &reject.message());
        // Best effort: the socket is new or has just been answered, so a short error
        // fits its send buffer.
        let _ = (&conn.stream).write(&out);
        let _ = conn.stream.shutdown(Shutdown::Write);
        self.slots[token] = Some(Slot::Draining(conn, Instant::now() + DRAIN));
        self.service(token);
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let head_timeout = self.config.head_timeout;
        for token in 0..self.slots.len() {
            let expired = match &self.slots[token] {
                Some(Slot::Waiting(conn)) => {
                    let deadline = match &conn.pending {
                        Some(p) => p.deadline,
                        None => conn.ready_at + head_timeout,
                    };
                    let expired = now >= deadline;
                    if expired && (conn.pending.is_some() || !conn.buf.is_empty()) {
                        // A client in the middle of a request is told why; an idle one is not.
                        let r = Reject::Timeout;
                        log_reject(conn.peer, &r);
                        let mut out = Vec::new();
                        error_bytes(&mut out, r.status(), r.code(), &r.message());
                        let _ = (&conn.stream).write(&out);
                    }
                    expired
                }
                Some(Slot::Draining(_, until)) => now >= *until,
                _ => false,
            };
            if expired {
                self.close(token);
            }
        }
    }

    /// Frees a slot, closing the connection if the reactor holds it.
    fn close(&mut self, token: usize) {
        match self.slots.get_mut(token).and_then(Option::take) {
            Some(Slot::Waiting(conn) | Slot::Draining(conn, _)) => {
                let fd = conn.stream.as_raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
            Some(Slot::Busy) => {}
            None => return,
        }
        self.free.push(token);
        self.open -= 1;
        self.shared.open.store(self.open, Ordering::SeqCst);
        let ip = self.peers[token];
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// At the cap: closes connections that cost their owner little to lose, so a new client
    /// gets in. First those we are closing anyway (draining after an answer), then idle
    /// keep-alive ones (idle longest first), then ones whose request head is unfinished, from
    /// the address holding the most first, oldest first. Never a request in progress (a body
    /// arriving, a handler running) nor an upgraded connection. A scan costs one pass over
    /// the slots, so it takes a batch (1/256 of the cap) at a time. False if none was found.
    fn make_room(&mut self) -> bool {
        let now = Instant::now();
        // (class, -share of its address, age), smallest first.
        let mut candidates: Vec<((u8, isize, Duration), usize)> = Vec::new();
        for (token, slot) in self.slots.iter().enumerate() {
            let rank = match slot {
                Some(Slot::Draining(..)) => (0, 0, Duration::ZERO),
                Some(Slot::Waiting(conn)) if conn.pending.is_none() => {
                    let idle = now.saturating_duration_since(conn.ready_at);
                    if conn.served && conn.buf.is_empty() {
                        (1, 0, Duration::MAX - idle)
                    } else {
                        let held = self.per_ip.get(&self.peers[token]).copied().unwrap_or(0);
                        (2, -(held as isize), Duration::MAX - idle)
                    }
                }
                _ => continue,
            };
            candidates.push((rank, token));
        }
        if candidates.is_empty() {
            return false;
        }
        let batch = (self.config.max_connections / 256).clamp(1, candidates.len());
        if batch < candidates.len() {
            candidates.select_nth_unstable(batch - 1);
        }
        for &(_, token) in &candidates[..batch] {
            if let Some(Slot::Waiting(conn)) = &self.slots[token] {
                if !conn.buf.is_empty() {
                    // A client in the middle of a head is told why it goes.
                    let mut out = Vec::new();
                    error_bytes(&mut out, 503, "over_capacity", "closed to make room");
                    let _ = (&conn.stream).write(&out);
                }
            }
            self.close(token);
        }
        log::debug!("closed {batch} connections to make room");
        true
    }
}

/// Answers a connection we will not serve, and closes it.
fn refuse(stream: &TcpStream, code: &str, message: &str) {
    let mut out = Vec::new();
    error_bytes(&mut out, 503, code, message);
    let _ = (&*stream).write(&out);
    let _ = stream.shutdown(Shutdown::Both);
}

/// Reads what the socket has and advances the request: head first, then its body.
fn read_request(
    conn: &mut Conn,
    scratch: &mut [u8],
    config: &Config,
    handler: &dyn Handler,
) -> ReadOutcome {
    loop {
        match advance(conn, config, handler) {
            Ok(true) => return ReadOutcome::Ready,
            Ok(false) => {}
            Err(reject) => return ReadOutcome::Reject(reject),
        }
        match (&conn.stream).read(scratch) {
            Ok(0) => return ReadOutcome::Closed,
            Ok(n) => conn.buf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return ReadOutcome::Closed,
        }
    }
}

/// Consumes buffered bytes into the pending request. True when the request is whole.
fn advance(conn: &mut Conn, config: &Config, handler: &dyn Handler) -> Result<bool, Reject> {
    if conn.pending.is_none() {
        let head_len = match parse::scan_head(&conn.buf, &config.limits)? {
            HeadScan::Incomplete => return Ok(false),
            HeadScan::Complete(n) => n,
        };
        let pending = start_request(&conn.buf[..head_len], conn.peer, config, handler)?;
        conn.buf.drain(..head_len);
        if pending.streamed.is_some() {
            // The handler reads the body (and sends any 100 Continue) itself.
            conn.pending = Some(pending);
            return Ok(true);
        }
        let expects = pending.framing.expect_continue
            && pending.framing.body != BodyFraming::None
            && pending.req.version == Version::Http11;
        conn.pending = Some(pending);
        if expects && conn.buf.is_empty() {
            // Tiny, and the first bytes we send on this request: it fits the send buffer.
            let _ = (&conn.stream).write(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
    }
    let pending = conn.pending.as_mut().expect("set above");
    match pending.framing.body {
        BodyFraming::None => Ok(true),
        BodyFraming::Length(n) => {
            let n = n as usize;
            if conn.buf.len() < n {
                return Ok(false);
            }
            pending.req.body = conn.buf.drain(..n).collect();
            Ok(true)
        }
        BodyFraming::Chunked => pending.chunked.advance(
            &mut conn.buf,
            &mut pending.req.body,
            pending.limit,
            &config.limits,
        ),
    }
}

/// Parses a complete head into a request waiting for its body, refusing what breaks the rules.
fn start_request(
    head: &[u8],
    peer: SocketAddr,
    config: &Config,
    handler: &dyn Handler,
) -> Result<Pending, Reject> {
    let head = parse::parse_head(head, &config.limits)?;
    let framing = parse::framing(head.version, &head.headers)?;
    let (path, query) =
        request::split_target(&head.target).ok_or(Reject::BadRequest("invalid request target"))?;
    let client_ip = request::client_ip(peer.ip(), &head.headers, &config.trusted_proxies);
    let req = Request {
        method: head.method,
        target: head.target,
        path,
        query,
        version: head.version,
        headers: head.headers,
        body: Vec::new(),
        body_stream: None,
        peer,
        client_ip,
    };
    // Asked only when there is a body: most requests have none, and the question costs a
    // route lookup on the reactor thread.
    let rule = match framing.body {
        BodyFraming::None | BodyFraming::Length(0) => None,
        _ => catch_unwind(AssertUnwindSafe(|| handler.body_limit(&req)))
            .map_err(|_| Reject::Internal)?,
    };
    let (limit, streamed) = match rule {
        None => (config.max_body, None),
        Some(BodyLimit::Buffered(n)) => (n, None),
        Some(BodyLimit::Streamed(n)) => (usize::try_from(n).unwrap_or(usize::MAX), Some(n)),
    };
    if let BodyFraming::Length(n) = framing.body {
        if n > limit as u64 {
            return Err(Reject::PayloadTooLarge);
        }
    }
    Ok(Pending {
        req,
        framing,
        limit,
        streamed,
        chunked: ChunkedDecoder::default(),
        deadline: Instant::now() + config.body_timeout,
    })
}

/// Reads and drops what a client still sends. False once the client has closed.
fn drain(conn: &mut Conn, scratch: &mut [u8]) -> bool {
    loop {
        match (&conn.stream).read(scratch) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// A response's `log_note` (`key=value` words) as structured fields of the access line too,
/// for a logger that writes them apart (JSON lines).
struct NoteFields<'a>(&'a str);

impl log::kv::Source for NoteFields<'_> {
    fn visit<'kvs>(
        &'kvs self,
        visitor: &mut dyn log::kv::VisitSource<'kvs>,
    ) -> Result<(), log::kv::Error> {
        for (key, value) in self.0.split_whitespace().filter_map(|w| w.split_once('=')) {
            visitor.visit_pair(log::kv::Key::from_str(key), log::kv::Value::from(value))?;
        }
        Ok(())
    }
}

fn log_reject(peer: SocketAddr, reject: &Reject) {
    log::info!(
        target: ACCESS_LOG,
        "{} - - {} {}",
        peer.ip(),
        reject.status(),
        reject.code()
    );
}

fn error_bytes(out: &mut Vec<u8>, status: u16, code: &str, message: &str) {
    let body = response::error_body(code, message, None);
    let headers = [("Content-Type".into(), "application/json".into())];
    response::write_head(out, status, &headers, &Delimit::Length(body.len()), true);
    out.extend_from_slice(&body);
}

struct Worker {
    config: Arc<Config>,
    handler: Arc<dyn Handler>,
    shared: Arc<Shared>,
    registry: Registry,
    back: Sender<FromWorker>,
}

/// What happens to a connection after its answer.
enum AfterAnswer {
    KeepAlive,
    /// Close gracefully: our side is shut; the reactor drains the rest.
    Close,
    /// The write failed: nothing more can be said.
    Abort,
    /// A handler owns the socket now; the slot is released when it drops it.
    Upgraded,
}

impl Worker {
    fn run(&self, mut conn: Conn, state: &mut dyn Any) {
        let token = conn.token;
        let next = match catch_unwind(AssertUnwindSafe(|| self.serve(&mut conn, state))) {
            Ok(next) => next,
            Err(_) => {
                log::error!("the HTTP layer panicked serving {}", conn.peer);
                AfterAnswer::Abort
            }
        };
        let back = match next {
            AfterAnswer::KeepAlive => FromWorker::Idle(conn),
            AfterAnswer::Close => {
                let _ = conn.stream.shutdown(Shutdown::Write);
                FromWorker::Drain(conn)
            }
            AfterAnswer::Abort => {
                let fd = conn.stream.as_raw_fd();
                let _ = self.registry.deregister(&mut SourceFd(&fd));
                let _ = conn.stream.shutdown(Shutdown::Both);
                FromWorker::Closed(token)
            }
            AfterAnswer::Upgraded => return,
        };
        if self.back.send(back).is_ok() {
            let _ = self.shared.waker.wake();
        }
    }

    fn serve(&self, conn: &mut Conn, state: &mut dyn Any) -> AfterAnswer {
        let started = Instant::now();
        let Some(Pending {
            mut req,
            framing,
            streamed,
            ..
        }) = conn.pending.take()
        else {
            return AfterAnswer::Abort;
        };
        if let Some(limit) = streamed {
            let stream = match conn.stream.try_clone() {
                Ok(s) => s,
                Err(_) => {
                    self.shared.streaming().give_back(req.client_ip);
                    return AfterAnswer::Abort;
                }
            };
            req.body_stream = Some(BodyStream::new(
                stream,
                std::mem::take(&mut conn.buf),
                framing.body,
                limit,
                framing.expect_continue && req.version == Version::Http11,
                self.config.limits.clone(),
                self.config.body_timeout,
            ));
        }
        if conn.buf.capacity() > 64 * 1024 {
            conn.buf.shrink_to(conn.buf.len().max(4096));
        }
        let response = catch_unwind(AssertUnwindSafe(|| self.handler.handle(&req, state)));
        // A body the handler did not read to its end leaves the connection unusable: what the
        // client still sends is drained after the answer, never parsed as a request.
        let mut body_whole = true;
        if let Some(body) = req.body_stream.take() {
            self.shared.streaming().give_back(req.client_ip);
            match body.finish() {
                Some(after) => conn.buf = after,
                None => body_whole = false,
            }
        }
        let response = match response {
            Ok(r) if r.status < 200 && !matches!(r.body, Body::Upgrade(_)) => {
                log::error!("handler answered {} without an upgrade", r.status);
                internal_error()
            }
            Ok(response) => response,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::error!(
                    "handler panicked on {} {}: {}",
                    req.method,
                    log_safe(&req.path),
                    log_safe(&what)
                );
                internal_error()
            }
        };
        let keep_alive =
            framing.keep_alive && body_whole && !self.shared.stopping.load(Ordering::SeqCst);
        self.respond(conn, &req, response, keep_alive, started)
    }

    fn respond(
        &self,
        conn: &mut Conn,
        req: &Request,
        response: Response,
        keep_alive: bool,
        started: Instant,
    ) -> AfterAnswer {
        let Response {
            status,
            headers,
            body,
            log_note,
        } = response;
        let head_only = req.method == "HEAD";
        // RFC 9110 6.4.1: these never carry content, whatever the handler produced.
        let bodiless = status == 204 || status == 304;
        let timeout = self.config.io_timeout;
        let mut out = Vec::with_capacity(512);
        let mut sent = 0usize;
        let mut write_whole = |bytes: &[u8]| {
            let delimit = if bodiless {
                Delimit::NoBody
            } else {
                Delimit::Length(bytes.len())
            };
            response::write_head(&mut out, status, &headers, &delimit, !keep_alive);
            if !head_only && !bodiless {
                out.extend_from_slice(bytes);
                sent = bytes.len();
            }
            match write_all(&conn.stream, &out, timeout) {
                Ok(()) if keep_alive => AfterAnswer::KeepAlive,
                Ok(()) => AfterAnswer::Close,
                Err(_) => AfterAnswer::Abort,
            }
        };
        let next = match body {
            Body::Full(bytes) => write_whole(&bytes),
            Body::Shared(bytes) => write_whole(&bytes),
            Body::Stream(produce, deadline) => {
                let chunked = req.version == Version::Http11;
                let keep_alive = keep_alive && (chunked || bodiless || head_only);
                let delimit = match (bodiless, chunked) {
                    (true, _) => Delimit::NoBody,
                    (false, true) => Delimit::Chunked,
                    (false, false) => Delimit::Close,
                };
                response::write_head(&mut out, status, &headers, &delimit, !keep_alive);
                let mut ok = write_all(&conn.stream, &out, timeout).is_ok();
                if ok && !head_only && !bodiless {
                    let mut sink = StreamSink {
                        stream: &conn.stream,
                        timeout,
                        deadline,
                        sent: 0,
                    };
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        if chunked {
                            let mut w = ChunkedWriter { inner: &mut sink };
                            produce(&mut w)?;
                            w.finish()
                        } else {
                            produce(&mut sink)
                        }
                    }));
                    ok = matches!(result, Ok(Ok(())));
                    sent = sink.sent;
                }
                match (ok, keep_alive) {
                    (true, true) => AfterAnswer::KeepAlive,
                    (true, false) => AfterAnswer::Close,
                    // A stream cut short cannot be ended cleanly: the client must see the close.
                    (false, _) => AfterAnswer::Abort,
                }
            }
            Body::File { file, offset, len } => {
                let delimit = if bodiless {
                    Delimit::NoBody
                } else {
                    Delimit::Length(len as usize)
                };
                response::write_head(&mut out, status, &headers, &delimit, !keep_alive);
                let mut ok = write_all(&conn.stream, &out, timeout).is_ok();
                if ok && !head_only && !bodiless {
                    let copied = send_file(&conn.stream, &file, offset, len, timeout);
                    sent = copied.as_ref().map_or(0, |n| *n as usize);
                    ok = matches!(copied, Ok(n) if n == len);
                }
                match (ok, keep_alive) {
                    (true, true) => AfterAnswer::KeepAlive,
                    (true, false) => AfterAnswer::Close,
                    // Fewer bytes than the head announced: only a close tells the client.
                    (false, _) => AfterAnswer::Abort,
                }
            }
            Body::Upgrade(take_over) => {
                response::write_head(&mut out, status, &headers, &Delimit::NoBody, false);
                if write_all(&conn.stream, &out, timeout).is_err() {
                    AfterAnswer::Abort
                } else {
                    self.hand_over(conn, take_over)
                }
            }
        };
        if log::log_enabled!(target: ACCESS_LOG, log::Level::Info) {
            let fields = NoteFields(log_note.as_deref().unwrap_or_default());
            log::logger().log(
                &log::Record::builder()
                    .level(log::Level::Info)
                    .target(ACCESS_LOG)
                    .module_path_static(Some(module_path!()))
                    .key_values(&fields)
                    .args(format_args!(
                        "{} {} {} {} {} {:.2}ms{}{}{}",
                        req.client_ip,
                        log_safe(&req.method),
                        log_safe(&req.target),
                        status,
                        sent,
                        started.elapsed().as_secs_f64() * 1000.0,
                        if log_note.is_some() { " " } else { "" },
                        log_note.as_deref().unwrap_or_default(),
                        if matches!(next, AfterAnswer::Abort) {
                            " (aborted)"
                        } else {
                            ""
                        }
                    ))
                    .build(),
            );
        }
        next
    }

    /// Gives the socket to an upgrade handler. The connection keeps its place under the cap until
    /// the handler drops the [`ConnSlot`].
    fn hand_over(&self, conn: &mut Conn, take_over: response::UpgradeFn) -> AfterAnswer {
        let fd = conn.stream.as_raw_fd();
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        let stream = match conn.stream.try_clone() {
            Ok(s) if s.set_nonblocking(false).is_ok() => s,
            _ => return AfterAnswer::Abort,
        };
        let token = conn.token;
        let back = self.back.clone();
        let shared = self.shared.clone();
        let slot = ConnSlot(Some(Box::new(move || {
            if back.send(FromWorker::Closed(token)).is_ok() {
                let _ = shared.waker.wake();
            }
        })));
        let upgraded = Upgraded {
            stream,
            leftover: std::mem::take(&mut conn.buf),
            slot,
        };
        // Our descriptor is a duplicate: dropping it with `conn` leaves the socket to the handler.
        if catch_unwind(AssertUnwindSafe(|| take_over(upgraded))).is_err() {
            log::error!("upgrade handler panicked");
        }
        AfterAnswer::Upgraded
    }
}

fn internal_error() -> Response {
    Response::error(
        500,
        "internal_error",
        "the server failed to handle the request",
    )
}

/// Writes to the non-blocking socket; each wait for room may last `timeout`, so a client that
/// reads steadily gets any size of answer while one that stops reading is dropped.
fn write_all(stream: &TcpStream, data: &[u8], timeout: Duration) -> io::Result<()> {
    write_all_until(stream, data, timeout, None)
}

/// [`write_all`], failing too once `deadline` has passed: before writing, and in place of a
/// wait that would go past it.
fn write_all_until(
    stream: &TcpStream,
    mut data: &[u8],
    timeout: Duration,
    deadline: Option<Instant>,
) -> io::Result<()> {
    let left = || match deadline {
        None => Ok(timeout),
        Some(at) => match at.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left.min(timeout)),
            _ => Err(io::Error::from(io::ErrorKind::TimedOut)),
        },
    };
    left()?;
    while !data.is_empty() {
        match (&*stream).write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_writable(stream, left()?)? {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends `len` bytes of `file` from `offset` (positioned reads: the file's own offset is not
/// used), each wait for the client bounded by `timeout`, and the whole by the minimum rate of
/// a streamed body once `timeout` has passed. Returns how many went out; fewer than
/// `len` when the file turned out shorter.
fn send_file(
    stream: &TcpStream,
    file: &std::fs::File,
    offset: u64,
    len: u64,
    timeout: Duration,
) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    let started = Instant::now();
    while done < len {
        // A reader taking a few bytes now and then would hold the worker for as long as it
        // likes: past one timeout, it must keep up an average of `MIN_RATE`.
        if super::body_stream::too_slow(started.elapsed(), timeout, done) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = match file.read_at(&mut buf[..want], offset + done) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        write_all(stream, &buf[..n], timeout)?;
        done += n as u64;
    }
    Ok(done)
}

/// Waits until the socket can take more bytes, or the timeout passes (false).
fn wait_writable(stream: &TcpStream, timeout: Duration) -> io::Result<bool> {
    wait_for(stream, libc::POLLOUT, timeout)
}

/// Waits until the socket is ready for `events` (POLLIN, POLLOUT), or the timeout passes
/// (false).
pub(super) fn wait_for(
    stream: &TcpStream,
    events: libc::c_short,
    timeout: Duration,
) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The socket side of a streamed body: every write goes out at once.
struct StreamSink<'a> {
    stream: &'a TcpStream,
    timeout: Duration,
    deadline: Option<Instant>,
    sent: usize,
}

impl Write for StreamSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_all_until(self.stream, buf, self.timeout, self.deadline)?;
        self.sent += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that reads nothing: a write waiting for room gives up at the deadline, long
    /// before the I/O timeout (ten minutes), so a trickling client cannot stretch a stream.
    #[test]
    fn a_write_waiting_for_room_stops_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        // Fill both sides' buffers until the kernel takes no more.
        let piece = vec![0u8; 64 * 1024];
        while (&server).write(&piece).is_ok() {}
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_millis(50);
            let written =
                write_all_until(&server, &piece, Duration::from_secs(600), Some(deadline));
            let _ = tx.send(written.map_err(|e| e.kind()));
        });
        let answer = rx.recv_timeout(Duration::from_secs(60));
        assert_eq!(answer, Ok(Err(io::ErrorKind::TimedOut)));
        drop(client);
    }
}
