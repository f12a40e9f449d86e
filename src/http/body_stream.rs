//! A request body its handler reads as it arrives, for routes declared with
//! [`BodyLimit::Streamed`](super::BodyLimit) (uploads): the body never sits in memory whole.
//!
//! Such a request goes to a worker as soon as its head is in, so the handler can authenticate
//! and judge `Content-Length` before a byte of the body is accepted; `100 Continue`, when the
//! client asked for it, goes out only on the first read. The worker holds the connection while
//! the handler reads, which is why the server caps how many streamed bodies are in progress
//! (`Config::max_streaming`). A handler that answers without reading the whole body gets its
//! connection closed after the answer (the rest of the body is drained, never parsed as a
//! request).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use super::parse::{BodyFraming, ChunkedDecoder, HeadLimits, Reject};

/// Bytes asked of the socket at a time.
const READ_SIZE: usize = 64 * 1024;

/// The slowest a body may arrive on average once the first idle timeout has passed: a client
/// trickling a byte now and then would otherwise hold a worker for as long as it likes.
pub const MIN_RATE: u64 = 4096;

pub struct BodyStream {
    inner: Mutex<Inner>,
}

struct Inner {
    /// A duplicate descriptor of the connection's (non-blocking) socket.
    stream: TcpStream,
    /// Wire bytes received and not yet consumed.
    wire: Vec<u8>,
    framing: Framing,
    limit: u64,
    limits: HeadLimits,
    /// The longest wait for the next bytes: a client that stops sending is dropped.
    idle: Duration,
    continue_due: bool,
    started: std::time::Instant,
    received: u64,
    done: bool,
    /// Once a read has failed, every later read fails the same way.
    failed: Option<Reject>,
}

enum Framing {
    Length {
        left: u64,
    },
    Chunked {
        decoder: ChunkedDecoder,
        decoded: Vec<u8>,
        at: usize,
    },
}

impl fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodyStream")
    }
}

/// Why a body could not be read, as an `io::Error`'s payload: see [`body_error`].
#[derive(Debug)]
struct BodyFailure(Reject);

impl fmt::Display for BodyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message())
    }
}

impl std::error::Error for BodyFailure {}

/// What the client did wrong when a read of a [`BodyStream`] failed (too large, malformed,
/// too slow, ended early), so the handler can answer with its status; `None` for other errors.
pub fn body_error(e: &io::Error) -> Option<&Reject> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<BodyFailure>())
        .map(|f| &f.0)
}

fn failure(reject: Reject) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, BodyFailure(reject))
}

impl BodyStream {
    pub(super) fn new(
        stream: TcpStream,
        wire: Vec<u8>,
        framing: BodyFraming,
        limit: u64,
        expect_continue: bool,
        limits: HeadLimits,
        idle: Duration,
    ) -> BodyStream {
        let framing = match framing {
            BodyFraming::Chunked => Framing::Chunked {
                decoder: ChunkedDecoder::default(),
                decoded: Vec::new(),
                at: 0,
            },
            BodyFraming::Length(n) => Framing::Length { left: n },
            BodyFraming::None => Framing::Length { left: 0 },
        };
        let done = matches!(framing, Framing::Length { left: 0 });
        BodyStream {
            inner: Mutex::new(Inner {
                stream,
                wire,
                framing,
                limit,
                limits,
                idle,
                continue_due: expect_continue,
                started: std::time::Instant::now(),
                received: 0,
                done,
                failed: None,
            }),
        }
    }

    /// Reads the next bytes of the body; `Ok(0)` at its end.
    pub fn read(&self, out: &mut [u8]) -> io::Result<usize> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = &inner.failed {
            return Err(failure(r.clone()));
        }
        let result = inner.read(out);
        if let Err(e) = &result {
            if let Some(r) = body_error(e) {
                inner.failed = Some(r.clone());
            }
        }
        result
    }

    /// Body bytes read so far.
    pub fn received(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .received
    }

    /// `Content-Length`, when the client sent one (not for a chunked body).
    pub fn declared_length(&self) -> Option<u64> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.framing {
            Framing::Length { left } => Some(left + inner.received),
            Framing::Chunked { .. } => None,
        }
    }

    /// The bytes that came after the body (a pipelined request) if the body was read to its
    /// end; `None` if it was not, and the connection must close.
    pub(super) fn finish(self) -> Option<Vec<u8>> {
        let inner = self.inner.into_inner().unwrap_or_else(|p| p.into_inner());
        (inner.done && inner.failed.is_none()).then_some(inner.wire)
    }
}

impl Read for &BodyStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        BodyStream::read(self, out)
    }
}

impl Inner {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.done {
                if let Framing::Chunked { decoded, at, .. } = &mut self.framing {
                    if *at < decoded.len() {
                        return Ok(take(decoded, at, out, &mut self.received));
                    }
                }
                return Ok(0);
            }
            match &mut self.framing {
                Framing::Length { left } => {
                    let want = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = if self.wire.is_empty() {
                        self.fill(Some(&mut out[..want]))?
                    } else {
                        let n = want.min(self.wire.len());
                        out[..n].copy_from_slice(&self.wire[..n]);
                        self.wire.drain(..n);
                        n
                    };
                    if let Framing::Length { left } = &mut self.framing {
                        *left -= n as u64;
                        self.done = *left == 0;
                    }
                    self.received += n as u64;
                    return Ok(n);
                }
                Framing::Chunked {
                    decoder,
                    decoded,
                    at,
                } => {
                    if *at < decoded.len() {
                        return Ok(take(decoded, at, out, &mut self.received));
                    }
                    decoded.clear();
                    *at = 0;
                    let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
                    self.done = decoder
                        .advance(&mut self.wire, decoded, limit, &self.limits)
                        .map_err(failure)?;
                    if decoded.is_empty() && !self.done {
                        self.fill(None)?;
                    }
                }
            }
        }
    }

    /// Reads from the socket into `direct`, or else onto the end of `wire`, waiting up to the
    /// idle timeout for bytes. Never returns 0: a closed connection is a body cut short.
    fn fill(&mut self, direct: Option<&mut [u8]>) -> io::Result<usize> {
        if std::mem::take(&mut self.continue_due) {
            // Tiny, and the first bytes we send on this request: it fits the send buffer.
            let _ = (&self.stream).write(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        if too_slow(self.started.elapsed(), self.idle, self.received) {
            return Err(failure(Reject::Timeout));
        }
        match direct {
            Some(out) => self.read_socket(out),
            None => {
                let start = self.wire.len();
                self.wire.resize(start + READ_SIZE, 0);
                let mut wire = std::mem::take(&mut self.wire);
                let result = self.read_socket(&mut wire[start..]);
                wire.truncate(start + *result.as_ref().unwrap_or(&0));
                self.wire = wire;
                result
            }
        }
    }

    fn read_socket(&self, into: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&self.stream).read(into) {
                Ok(0) => {
                    return Err(failure(Reject::BadRequest(
                        "the connection closed before the body ended",
                    )))
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !wait_readable(&self.stream, self.idle)? {
                        return Err(failure(Reject::Timeout));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether `done` bytes in `elapsed` fall short of [`MIN_RATE`] once `grace` has passed.
pub(super) fn too_slow(elapsed: Duration, grace: Duration, done: u64) -> bool {
    let Some(over) = elapsed.checked_sub(grace) else {
        return false;
    };
    done < (over.as_millis() as u64).saturating_mul(MIN_RATE) / 1000
}

/// Copies decoded bytes out, from `at` on.
fn take(decoded: &[u8], at: &mut usize, out: &mut [u8], received: &mut u64) -> usize {
    let n = out.len().min(decoded.len() - *at);
    out[..n].copy_from_slice(&decoded[*at..*at + n]);
    *at += n;
    *received += n as u64;
    n
}

/// Waits until the socket has bytes (or is closed), or the timeout passes (false).
fn wait_readable(stream: &TcpStream, timeout: Duration) -> io::Result<bool> {
    super::server::wait_for(stream, libc::POLLIN, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_rate_counts_only_after_the_grace() {
        let s = Duration::from_secs;
        assert!(!too_slow(s(29), s(30), 0));
        assert!(!too_slow(s(30), s(30), 0));
        assert!(too_slow(s(31), s(30), MIN_RATE - 1));
        assert!(!too_slow(s(31), s(30), MIN_RATE));
        assert!(too_slow(s(130), s(30), 100 * MIN_RATE - 1));
    }
}
