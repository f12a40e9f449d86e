//! What a handler answers: a status, headers, and a body that is either whole, streamed as it is
//! produced, a part of a file, or a takeover of the connection after `101 Switching Protocols`.

use std::borrow::Cow;
use std::io::{self, Write};
use std::net::TcpStream;

/// Writes a streamed body. Each `write` goes out as one chunk at once, so server-sent events are
/// delivered as they are produced.
pub type StreamFn = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send>;

/// Takes over the raw connection after the 101 head was written. It runs on a worker thread, so a
/// long-lived protocol should hand the connection to a thread or event loop of its own and return.
pub type UpgradeFn = Box<dyn FnOnce(Upgraded) + Send>;

/// A connection handed over after `101 Switching Protocols`.
pub struct Upgraded {
    /// The socket, in blocking mode.
    pub stream: TcpStream,
    /// Bytes the client sent after its request head: they belong to the new protocol.
    pub leftover: Vec<u8>,
    /// Keeps the connection counted against the server's connection cap until dropped: keep it
    /// as long as the stream.
    pub slot: ConnSlot,
}

/// Frees a place under the connection cap when dropped.
pub struct ConnSlot(pub(super) Option<Box<dyn FnOnce() + Send>>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

pub enum Body {
    Full(Vec<u8>),
    /// A whole body shared with whoever keeps it (a cache): sent without a copy.
    Shared(std::sync::Arc<[u8]>),
    /// Produced as it is sent; past the instant given, if any, the next write (or a wait for
    /// the client to take more) fails and the answer is cut short.
    Stream(StreamFn, Option<std::time::Instant>),
    /// `len` bytes of an open file from `offset`, sent with a `Content-Length` (downloads,
    /// ranges of them): never read whole into memory.
    File {
        file: std::fs::File,
        offset: u64,
        len: u64,
    },
    Upgrade(UpgradeFn),
}

/// A header's name or value: most are fixed text, which costs no allocation.
pub type HeaderText = Cow<'static, str>;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(HeaderText, HeaderText)>,
    pub body: Body,
    /// Extra words for this request's log line (the tenant, for example).
    pub log_note: Option<String>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![(CONTENT_TYPE, content_type.into())],
            body: Body::Full(body.into()),
            log_note: None,
        }
    }

    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        // Serializing our own values cannot fail; fall back to an error body rather than panic.
        let body = serde_json::to_vec(value).unwrap_or_else(|_| {
            error_body("internal_error", "response serialization failed", None)
        });
        Response::new(status, "application/json", body)
    }

    /// An error answer, its body written by [`error_body`].
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response::new(status, "application/json", error_body(code, message, None))
    }

    pub fn shared(status: u16, content_type: &'static str, body: std::sync::Arc<[u8]>) -> Response {
        Response {
            status,
            headers: vec![(CONTENT_TYPE, content_type.into())],
            body: Body::Shared(body),
            log_note: None,
        }
    }

    pub fn stream(status: u16, content_type: &'static str, f: StreamFn) -> Response {
        Response {
            status,
            headers: vec![(CONTENT_TYPE, content_type.into())],
            body: Body::Stream(f, None),
            log_note: None,
        }
    }

    /// `len` bytes of `file` from `offset`.
    pub fn file(
        status: u16,
        content_type: impl Into<HeaderText>,
        file: std::fs::File,
        offset: u64,
        len: u64,
    ) -> Response {
        Response {
            status,
            headers: vec![(CONTENT_TYPE, content_type.into())],
            body: Body::File { file, offset, len },
            log_note: None,
        }
    }

    /// A `101 Switching Protocols` answer; `headers` carries `Upgrade`, `Connection` and any
    /// protocol-specific header (e.g. `Sec-WebSocket-Accept`).
    pub fn upgrade(headers: Vec<(HeaderText, HeaderText)>, f: UpgradeFn) -> Response {
        Response {
            status: 101,
            headers,
            body: Body::Upgrade(f),
            log_note: None,
        }
    }

    /// A streamed body may be sent until `deadline` only, however its client reads: the I/O
    /// timeout bounds each wait for the client, not their sum.
    pub fn with_deadline(mut self, deadline: std::time::Instant) -> Response {
        if let Body::Stream(_, until) = &mut self.body {
            *until = Some(deadline);
        }
        self
    }

    pub fn with_header(
        mut self,
        name: impl Into<HeaderText>,
        value: impl Into<HeaderText>,
    ) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

/// The one JSON error body: `{"error":{"code":"...","message":"..."}}`, with `fields` (field ->
/// message) when a request's values were refused.
pub fn error_body(
    code: &str,
    message: &str,
    fields: Option<&std::collections::BTreeMap<String, String>>,
) -> Vec<u8> {
    let mut body = serde_json::json!({"error": {"code": code, "message": message}});
    if let Some(fields) = fields {
        body["error"]["fields"] = serde_json::json!(fields);
    }
    body.to_string().into_bytes()
}

const CONTENT_TYPE: HeaderText = Cow::Borrowed("Content-Type");

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// How the body follows the head on the wire.
pub enum Delimit {
    Length(usize),
    Chunked,
    /// HTTP/1.0 streaming: the end of the body is the end of the connection.
    Close,
    NoBody,
}

/// Serializes a response head. Framing headers are ours alone: any the handler set are dropped,
/// so a handler cannot desynchronize the connection.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(HeaderText, HeaderText)],
    delimit: &Delimit,
    close: bool,
) {
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status, reason(status));
    for (name, value) in headers {
        let ours =
            is_framing_header(name) || (status != 101 && name.eq_ignore_ascii_case("connection"));
        if ours {
            continue;
        }
        // A control character in a value, or a name that is not a token, would corrupt or split
        // the head: such a header is dropped, never sent.
        if !is_token(name) || value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            log::warn!("dropped an invalid response header {name:?}");
            continue;
        }
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if status != 101 {
        let _ = write!(
            out,
            "Date: {}\r\n",
            httpdate::fmt_http_date(std::time::SystemTime::now())
        );
        out.extend_from_slice(SECURITY_HEADERS);
    }
    match delimit {
        Delimit::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Delimit::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Delimit::Close | Delimit::NoBody => {}
    }
    if status != 101 {
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// On every answer, errors of the HTTP layer included: no content sniffing (a JSON answer is
/// never run as a script or page), no referrer leaks from our URLs, no framing by other sites.
const SECURITY_HEADERS: &[u8] = b"X-Content-Type-Options: nosniff\r\n\
Referrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n";

fn is_framing_header(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "date",
        "x-content-type-options",
        "referrer-policy",
        "x-frame-options",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Frames each write as one chunk of `Transfer-Encoding: chunked`.
pub struct ChunkedWriter<W: Write> {
    pub inner: W,
}

impl<W: Write> Write for ChunkedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut frame = Vec::with_capacity(buf.len() + 16);
        let _ = write!(frame, "{:x}\r\n", buf.len());
        frame.extend_from_slice(buf);
        frame.extend_from_slice(b"\r\n");
        self.inner.write_all(&frame)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> ChunkedWriter<W> {
    pub fn finish(mut self) -> io::Result<()> {
        self.inner.write_all(b"0\r\n\r\n")
    }
}
