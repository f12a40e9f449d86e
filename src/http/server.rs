//! The connection engine: one reactor thread and a bounded pool of workers.
//!
//! The reactor (mio, edge-triggered) accepts connections, enforces the connection cap, and reads
//! request heads without blocking. Only a connection that has delivered a whole head is handed to
//! a worker, so idle keep-alive connections and slowloris clients cost a buffer, never a thread.
//! The worker reads the body, calls the handler, writes the answer, serves any pipelined request
//! already received, and hands the connection back. Sockets stay non-blocking throughout; workers
//! wait on them with poll(2) and a deadline.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use super::parse::{self, BodyFraming, HeadLimits, HeadScan, Reject};
use super::request::{self, Request, Version};
use super::response::{self, Body, ChunkedWriter, Delimit, Response};

/// Every limit and timeout of the HTTP layer. The defaults are the documented ones.
#[derive(Clone, Debug)]
pub struct Config {
    /// Threads that run handlers.
    pub workers: usize,
    /// Open connections at most; one more is answered `503` and closed.
    pub max_connections: usize,
    /// From the moment a connection is ready for a request (accepted, or its previous answer sent)
    /// to the end of the next request head. Covers idle keep-alive and trickling clients alike.
    pub head_timeout: Duration,
    /// The longest wait for one read or write while a worker owns the connection.
    pub io_timeout: Duration,
    /// The whole body must arrive within this.
    pub body_timeout: Duration,
    /// Default body limit; a route may set its own.
    pub max_body: usize,
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
            head_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_body: 1024 * 1024,
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

/// What the server calls for each request. Called from many worker threads at once.
pub trait Handler: Send + Sync + 'static {
    /// The body limit for this request, decided from its head before any body byte is read.
    fn body_limit(&self, _req: &Request) -> Option<usize> {
        None
    }
    fn handle(&self, req: &Request) -> Response;
}

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// How often deadlines are checked; a timed-out connection is closed at most this late.
const SWEEP: Duration = Duration::from_millis(250);
/// How long a connection we refused may keep sending before we close it. Reading what it still
/// sends lets our error answer arrive instead of being destroyed by a TCP reset.
const DRAIN: Duration = Duration::from_secs(2);

struct Conn {
    token: usize,
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    ready_at: Instant,
}

enum Slot {
    Waiting(Conn),
    Busy,
    Draining(Conn, Instant),
}

/// A connection coming back from a worker.
enum Back {
    Idle(Conn),
    Drain(Conn),
    Closed(usize),
}

struct Shared {
    stopping: AtomicBool,
    waker: Waker,
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
    let addr = listener.local_addr()?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let shared = Arc::new(Shared {
        stopping: AtomicBool::new(false),
        waker: Waker::new(poll.registry(), WAKER)?,
    });
    let config = Arc::new(config);
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Conn>();
    let (back_tx, back_rx) = crossbeam_channel::unbounded::<Back>();
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
                while let Ok(conn) = jobs.recv() {
                    worker.run(conn);
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
        jobs: job_tx,
        back: back_rx,
        slots: Vec::new(),
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
    jobs: Sender<Conn>,
    back: Receiver<Back>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    open: usize,
    scratch: Vec<u8>,
}

enum HeadRead {
    Ready,
    Wait,
    Closed,
    Reject(Reject),
}

impl Reactor {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        // Set when accept failed for lack of descriptors: edge-triggered readiness will not repeat,
        // so we retry on the sweep.
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

    /// Accepts until the backlog is empty. Returns true when it had to stop early.
    fn accept(&mut self) -> bool {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return true;
                }
            };
            let stream = TcpStream::from(stream);
            if self.open >= self.config.max_connections {
                let mut out = Vec::new();
                error_bytes(&mut out, 503, "over_capacity", "too many open connections");
                let _ = (&stream).write(&out);
                let _ = stream.shutdown(Shutdown::Both);
                log::warn!("{peer} refused: {} connections open", self.open);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let token = match self.free.pop() {
                Some(t) => t,
                None => {
                    self.slots.push(None);
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
            let conn = Conn {
                token,
                stream,
                peer,
                buf: Vec::new(),
                ready_at: Instant::now(),
            };
            self.slots[token] = Some(Slot::Waiting(conn));
            // Data may have arrived before registration; edge-triggered readiness would not say.
            self.service(token);
        }
    }

    fn take_back(&mut self) {
        while let Ok(back) = self.back.try_recv() {
            match back {
                Back::Idle(mut conn) => {
                    let token = conn.token;
                    conn.ready_at = Instant::now();
                    if conn.buf.is_empty() {
                        conn.buf = Vec::new();
                    }
                    self.slots[token] = Some(Slot::Waiting(conn));
                    // The worker read until WouldBlock, but bytes that arrived since raised an
                    // edge while the slot was busy: read now so none is left unnoticed.
                    self.service(token);
                }
                Back::Drain(conn) => {
                    let token = conn.token;
                    self.slots[token] = Some(Slot::Draining(conn, Instant::now() + DRAIN));
                    self.service(token);
                }
                Back::Closed(token) => self.close(token),
            }
        }
    }

    fn service(&mut self, token: usize) {
        let read = match self.slots.get_mut(token) {
            Some(Some(Slot::Waiting(conn))) => {
                read_head(conn, &mut self.scratch, &self.config.limits)
            }
            Some(Some(Slot::Draining(conn, _))) => {
                if !drain(conn, &mut self.scratch) {
                    self.close(token);
                }
                return;
            }
            _ => return,
        };
        match read {
            HeadRead::Wait => {}
            HeadRead::Closed => self.close(token),
            HeadRead::Ready => {
                let Some(Slot::Waiting(conn)) = self.slots[token].replace(Slot::Busy) else {
                    unreachable!("the slot was waiting")
                };
                if self.jobs.send(conn).is_err() {
                    self.close(token);
                }
            }
            HeadRead::Reject(reject) => {
                let Some(Slot::Waiting(conn)) = &self.slots[token] else {
                    unreachable!("the slot was waiting")
                };
                log::info!(
                    target: "tenantd::access",
                    "{} - - {} {}",
                    conn.peer.ip(),
                    reject.status(),
                    reject.code()
                );
                let mut out = Vec::new();
                error_bytes(&mut out, reject.status(), reject.code(), &reject.message());
                let _ = (&conn.stream).write(&out);
                let _ = conn.stream.shutdown(Shutdown::Write);
                let Some(Slot::Waiting(conn)) = self.slots[token].take() else {
                    unreachable!("the slot was waiting")
                };
                self.slots[token] = Some(Slot::Draining(conn, Instant::now() + DRAIN));
                self.service(token);
            }
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        for token in 0..self.slots.len() {
            let expired = match &self.slots[token] {
                Some(Slot::Waiting(conn)) => {
                    let expired = now.duration_since(conn.ready_at) >= self.config.head_timeout;
                    if expired && !conn.buf.is_empty() {
                        // A client in the middle of a request is told why; an idle one is not.
                        let mut out = Vec::new();
                        let r = Reject::Timeout;
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
    }
}

/// Reads and drops what a refused client still sends. False once the client has closed.
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

/// Reads what the socket has until the head is complete or the socket is drained.
fn read_head(conn: &mut Conn, scratch: &mut [u8], limits: &HeadLimits) -> HeadRead {
    loop {
        match parse::scan_head(&conn.buf, limits) {
            Ok(HeadScan::Complete(_)) => return HeadRead::Ready,
            Ok(HeadScan::Incomplete) => {}
            Err(reject) => return HeadRead::Reject(reject),
        }
        match (&conn.stream).read(scratch) {
            Ok(0) => return HeadRead::Closed,
            Ok(n) => conn.buf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HeadRead::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return HeadRead::Closed,
        }
    }
}

fn error_bytes(out: &mut Vec<u8>, status: u16, code: &str, message: &str) {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let headers = [("Content-Type".to_string(), "application/json".to_string())];
    response::write_head(out, status, &headers, &Delimit::Length(body.len()), true);
    out.extend_from_slice(body.as_bytes());
}

struct Worker {
    config: Arc<Config>,
    handler: Arc<dyn Handler>,
    shared: Arc<Shared>,
    registry: Registry,
    back: Sender<Back>,
}

/// What happens to a connection after one request.
enum Next {
    KeepAlive,
    /// Refused: the answer is sent and our side is shut; drain what the client still sends.
    Drain,
    Close,
    /// A handler owns the socket now.
    Upgraded,
}

/// Why a request's body could not be read.
enum BodyError {
    Reject(Reject),
    Io,
}

impl Worker {
    fn run(&self, mut conn: Conn) {
        let token = conn.token;
        loop {
            let next = match catch_unwind(AssertUnwindSafe(|| self.serve_one(&mut conn))) {
                Ok(next) => next,
                Err(_) => {
                    log::error!("the HTTP layer panicked serving {}", conn.peer);
                    Next::Close
                }
            };
            let next = match next {
                Next::KeepAlive if self.shared.stopping.load(Ordering::SeqCst) => Next::Close,
                Next::KeepAlive => match self.fill_nonblocking(&mut conn) {
                    Ok(true) => continue,
                    Ok(false) => Next::KeepAlive,
                    Err(reject) => self.refuse(&mut conn, reject),
                },
                other => other,
            };
            let back = match next {
                Next::KeepAlive => Back::Idle(conn),
                Next::Drain => Back::Drain(conn),
                Next::Close => {
                    let fd = conn.stream.as_raw_fd();
                    let _ = self.registry.deregister(&mut SourceFd(&fd));
                    let _ = conn.stream.shutdown(Shutdown::Both);
                    Back::Closed(token)
                }
                Next::Upgraded => Back::Closed(token),
            };
            if self.back.send(back).is_ok() {
                let _ = self.shared.waker.wake();
            }
            return;
        }
    }

    /// Reads what the socket holds without waiting. True when another whole head is buffered, so
    /// pipelined requests are answered here, in order, without a trip through the reactor.
    fn fill_nonblocking(&self, conn: &mut Conn) -> Result<bool, Reject> {
        let mut chunk = [0u8; 4096];
        loop {
            if let HeadScan::Complete(_) = parse::scan_head(&conn.buf, &self.config.limits)? {
                return Ok(true);
            }
            match (&conn.stream).read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Ok(false),
            }
        }
    }

    /// Answers a request the layer refuses, shuts our side, and lets the reactor drain the rest.
    fn refuse(&self, conn: &mut Conn, reject: Reject) -> Next {
        log::info!(
            target: "tenantd::access",
            "{} - - {} {}",
            conn.peer.ip(),
            reject.status(),
            reject.code()
        );
        let mut out = Vec::new();
        error_bytes(&mut out, reject.status(), reject.code(), &reject.message());
        let deadline = Instant::now() + self.config.io_timeout;
        if write_all(&conn.stream, &out, deadline).is_err() {
            return Next::Close;
        }
        let _ = conn.stream.shutdown(Shutdown::Write);
        conn.buf.clear();
        Next::Drain
    }

    fn serve_one(&self, conn: &mut Conn) -> Next {
        let started = Instant::now();
        let limits = &self.config.limits;
        let head_len = match parse::scan_head(&conn.buf, limits) {
            Ok(HeadScan::Complete(n)) => n,
            Ok(HeadScan::Incomplete) => return Next::Close,
            Err(reject) => return self.refuse(conn, reject),
        };
        let head = match parse::parse_head(&conn.buf[..head_len], limits) {
            Ok(head) => head,
            Err(reject) => return self.refuse(conn, reject),
        };
        let framing = match parse::framing(head.version, &head.headers) {
            Ok(f) => f,
            Err(reject) => return self.refuse(conn, reject),
        };
        let Some((path, query)) = request::split_target(&head.target) else {
            return self.refuse(conn, Reject::BadRequest("invalid request target"));
        };
        let client_ip =
            request::client_ip(conn.peer.ip(), &head.headers, &self.config.trusted_proxies);
        let mut req = Request {
            method: head.method,
            target: head.target,
            path,
            query,
            version: head.version,
            headers: head.headers,
            body: Vec::new(),
            peer: conn.peer,
            client_ip,
        };

        let limit = self
            .handler
            .body_limit(&req)
            .unwrap_or(self.config.max_body);
        if let BodyFraming::Length(n) = framing.body {
            if n > limit as u64 {
                return self.refuse(conn, Reject::PayloadTooLarge);
            }
        }
        if framing.expect_continue
            && framing.body != BodyFraming::None
            && req.version == Version::Http11
        {
            let deadline = Instant::now() + self.config.io_timeout;
            if write_all(&conn.stream, b"HTTP/1.1 100 Continue\r\n\r\n", deadline).is_err() {
                return Next::Close;
            }
        }
        let mut reader = BodyReader {
            conn,
            pos: head_len,
            deadline: Instant::now() + self.config.body_timeout,
            io_timeout: self.config.io_timeout,
        };
        let body = match framing.body {
            BodyFraming::None => Ok(Vec::new()),
            BodyFraming::Length(n) => reader.exact(n as usize),
            BodyFraming::Chunked => reader.chunked(limit, limits),
        };
        let consumed = reader.pos;
        match body {
            Ok(body) => req.body = body,
            Err(BodyError::Reject(reject)) => return self.refuse(conn, reject),
            Err(BodyError::Io) => return Next::Close,
        }
        conn.buf.drain(..consumed);
        if conn.buf.capacity() > 64 * 1024 {
            conn.buf.shrink_to(conn.buf.len().max(4096));
        }

        let response = match catch_unwind(AssertUnwindSafe(|| self.handler.handle(&req))) {
            Ok(response) => response,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::error!("handler panicked on {} {}: {what}", req.method, req.path);
                Response::error(
                    500,
                    "internal_error",
                    "the server failed to handle the request",
                )
            }
        };
        let keep_alive = framing.keep_alive && !self.shared.stopping.load(Ordering::SeqCst);
        self.respond(conn, &req, response, keep_alive, started)
    }

    fn respond(
        &self,
        conn: &mut Conn,
        req: &Request,
        response: Response,
        keep_alive: bool,
        started: Instant,
    ) -> Next {
        let Response {
            status,
            headers,
            body,
            log_note,
        } = response;
        let head_only = req.method == "HEAD";
        let no_body = head_only || status == 204 || status == 304 || status < 200;
        let mut out = Vec::with_capacity(512);
        let mut sent = 0usize;
        let (next, ok) = match body {
            Body::Full(bytes) => {
                let delimit = if status == 204 || status == 304 || status < 200 {
                    Delimit::NoBody
                } else {
                    Delimit::Length(bytes.len())
                };
                response::write_head(&mut out, status, &headers, &delimit, !keep_alive);
                if !no_body {
                    out.extend_from_slice(&bytes);
                    sent = bytes.len();
                }
                let deadline = Instant::now() + self.config.io_timeout;
                let ok = write_all(&conn.stream, &out, deadline).is_ok();
                let next = if !ok {
                    Next::Close
                } else if keep_alive {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
                (next, ok)
            }
            Body::Stream(produce) => {
                let chunked = req.version == Version::Http11;
                let keep_alive = keep_alive && chunked;
                let delimit = match (head_only, chunked) {
                    (true, _) => Delimit::NoBody,
                    (false, true) => Delimit::Chunked,
                    (false, false) => Delimit::Close,
                };
                response::write_head(&mut out, status, &headers, &delimit, !keep_alive);
                let deadline = Instant::now() + self.config.io_timeout;
                let mut ok = write_all(&conn.stream, &out, deadline).is_ok();
                if ok && !head_only {
                    let mut sink = StreamSink {
                        stream: &conn.stream,
                        io_timeout: self.config.io_timeout,
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
                let next = if ok && keep_alive {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
                (next, ok)
            }
            Body::Upgrade(take_over) => {
                response::write_head(&mut out, status, &headers, &Delimit::NoBody, false);
                let deadline = Instant::now() + self.config.io_timeout;
                let ok = write_all(&conn.stream, &out, deadline).is_ok();
                if ok {
                    let fd = conn.stream.as_raw_fd();
                    let _ = self.registry.deregister(&mut SourceFd(&fd));
                    match conn.stream.try_clone() {
                        Ok(stream) if stream.set_nonblocking(false).is_ok() => {
                            let leftover = std::mem::take(&mut conn.buf);
                            // The clone shares the socket; ours is dropped by the caller
                            // without shutting it down.
                            let _ = catch_unwind(AssertUnwindSafe(|| take_over(stream, leftover)));
                            (Next::Upgraded, true)
                        }
                        _ => (Next::Close, false),
                    }
                } else {
                    (Next::Close, false)
                }
            }
        };
        let note = log_note.map(|n| format!(" {n}")).unwrap_or_default();
        log::info!(
            target: "tenantd::access",
            "{} {} {} {} {} {:.2}ms{}{}",
            req.client_ip,
            req.method,
            req.target,
            status,
            sent,
            started.elapsed().as_secs_f64() * 1000.0,
            note,
            if ok { "" } else { " (write failed)" }
        );
        next
    }
}

/// Reads a request body out of the connection buffer, pulling more from the socket as needed.
struct BodyReader<'a> {
    conn: &'a mut Conn,
    pos: usize,
    deadline: Instant,
    io_timeout: Duration,
}

impl BodyReader<'_> {
    /// Makes sure `n` bytes past `pos` are buffered.
    fn want(&mut self, n: usize) -> Result<(), BodyError> {
        while self.conn.buf.len() < self.pos + n {
            self.more()?;
        }
        Ok(())
    }

    fn more(&mut self) -> Result<(), BodyError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match (&self.conn.stream).read(&mut chunk) {
                Ok(0) => return Err(BodyError::Io),
                Ok(n) => {
                    self.conn.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    if now >= self.deadline {
                        return Err(BodyError::Io);
                    }
                    let wait = self.io_timeout.min(self.deadline - now);
                    if !wait_fd(&self.conn.stream, libc::POLLIN, wait).map_err(|_| BodyError::Io)? {
                        return Err(BodyError::Io);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(BodyError::Io),
            }
        }
    }

    fn exact(&mut self, n: usize) -> Result<Vec<u8>, BodyError> {
        self.want(n)?;
        let body = self.conn.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(body)
    }

    /// One line without its line ending; longer than `max` is malformed.
    fn line(&mut self, max: usize) -> Result<Vec<u8>, BodyError> {
        let mut searched = 0;
        loop {
            let tail = &self.conn.buf[self.pos + searched..];
            if let Some(i) = tail.iter().position(|&b| b == b'\n') {
                let end = self.pos + searched + i;
                let mut line = self.conn.buf[self.pos..end].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.pos = end + 1;
                return Ok(line);
            }
            searched += tail.len();
            if searched > max {
                return Err(BodyError::Reject(Reject::BadRequest("chunk line too long")));
            }
            self.more()?;
        }
    }

    fn chunked(&mut self, limit: usize, limits: &HeadLimits) -> Result<Vec<u8>, BodyError> {
        let mut body = Vec::new();
        loop {
            let size = parse::chunk_size(&self.line(1024)?).map_err(BodyError::Reject)?;
            if size == 0 {
                break;
            }
            if body.len() as u64 + size > limit as u64 {
                return Err(BodyError::Reject(Reject::PayloadTooLarge));
            }
            let size = size as usize;
            self.want(size + 2)?;
            body.extend_from_slice(&self.conn.buf[self.pos..self.pos + size]);
            self.pos += size;
            if &self.conn.buf[self.pos..self.pos + 2] != b"\r\n" {
                return Err(BodyError::Reject(Reject::BadRequest(
                    "chunk not followed by CRLF",
                )));
            }
            self.pos += 2;
        }
        // Trailer fields are read and dropped, under the same limits as header fields.
        for _ in 0..=limits.max_headers {
            if self.line(limits.max_header_line)?.is_empty() {
                return Ok(body);
            }
        }
        Err(BodyError::Reject(Reject::HeadersTooLarge(
            "too many trailer fields",
        )))
    }
}

/// Writes to the non-blocking socket, waiting for room at most until the deadline.
fn write_all(stream: &TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        match (&*stream).write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !wait_fd(stream, libc::POLLOUT, left)? {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits until the socket is ready for `events` or the timeout passes (false).
fn wait_fd(stream: &TcpStream, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
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

/// The socket side of a streamed body: every write goes out at once, each wait bounded.
struct StreamSink<'a> {
    stream: &'a TcpStream,
    io_timeout: Duration,
    sent: usize,
}

impl Write for StreamSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_all(self.stream, buf, Instant::now() + self.io_timeout)?;
        self.sent += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
