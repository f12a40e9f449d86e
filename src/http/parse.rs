//! Request-head scanning and message framing: the rules that decide where a request ends.
//!
//! Everything here works on bytes already received; nothing reads from a socket. The head is
//! scanned line by line before httparse sees it so that an over-long line is refused as soon as it
//! passes the limit, not when the client finally sends a newline.

use super::request::{Header, Version};

/// The limits a request head must respect.
#[derive(Clone, Debug)]
pub struct HeadLimits {
    pub max_request_line: usize,
    pub max_header_line: usize,
    pub max_headers: usize,
    pub max_head_bytes: usize,
}

/// Why a request was refused before a handler saw it. Each maps to one status and code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    BadRequest(&'static str),
    UriTooLong,
    HeadersTooLarge(&'static str),
    PayloadTooLarge,
    NotImplemented(&'static str),
    ExpectationFailed,
    VersionNotSupported,
    Timeout,
    /// Every place for a streamed body is taken (see `Config::max_streaming`).
    Busy,
    /// Our own failure while judging the request.
    Internal,
}

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::Timeout => 408,
            Reject::PayloadTooLarge => 413,
            Reject::UriTooLong => 414,
            Reject::ExpectationFailed => 417,
            Reject::HeadersTooLarge(_) => 431,
            Reject::NotImplemented(_) => 501,
            Reject::VersionNotSupported => 505,
            Reject::Busy => 503,
            Reject::Internal => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Reject::BadRequest(_) => "bad_request",
            Reject::Timeout => "request_timeout",
            Reject::PayloadTooLarge => "payload_too_large",
            Reject::UriTooLong => "uri_too_long",
            Reject::ExpectationFailed => "expectation_failed",
            Reject::HeadersTooLarge(_) => "header_fields_too_large",
            Reject::NotImplemented(_) => "not_implemented",
            Reject::VersionNotSupported => "http_version_not_supported",
            Reject::Busy => "server_busy",
            Reject::Internal => "internal_error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Reject::BadRequest(why) => format!("malformed request: {why}"),
            Reject::Timeout => "the request was not received in time".into(),
            Reject::PayloadTooLarge => "the request body exceeds the limit".into(),
            Reject::UriTooLong => "the request line exceeds the limit".into(),
            Reject::ExpectationFailed => "only Expect: 100-continue is supported".into(),
            Reject::HeadersTooLarge(why) => format!("request header fields too large: {why}"),
            Reject::NotImplemented(why) => format!("not implemented: {why}"),
            Reject::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported".into(),
            Reject::Busy => "too many uploads in progress: try again shortly".into(),
            Reject::Internal => "the server failed to handle the request".into(),
        }
    }
}

/// Where the head ends, if it has been received whole.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadScan {
    Incomplete,
    /// The head occupies `buf[..n]`, including the blank line.
    Complete(usize),
}

/// Checks the line limits over what has arrived so far and finds the end of the head.
pub fn scan_head(buf: &[u8], limits: &HeadLimits) -> Result<HeadScan, Reject> {
    // RFC 9112 2.2: a server should ignore empty lines received before the request line.
    let mut start = 0;
    while start < buf.len() && (buf[start] == b'\r' || buf[start] == b'\n') {
        start += 1;
    }
    let mut line_no = 0usize;
    loop {
        let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') else {
            let partial = buf.len() - start;
            check_line(line_no, partial, limits)?;
            if buf.len() > limits.max_head_bytes {
                return Err(Reject::HeadersTooLarge("the request head is too large"));
            }
            return Ok(HeadScan::Incomplete);
        };
        let end = start + nl;
        let len = if end > start && buf[end - 1] == b'\r' {
            end - start - 1
        } else {
            end - start
        };
        check_line(line_no, len, limits)?;
        if line_no > 0 && len == 0 {
            return Ok(HeadScan::Complete(end + 1));
        }
        if line_no > limits.max_headers {
            return Err(Reject::HeadersTooLarge("too many header fields"));
        }
        if end + 1 > limits.max_head_bytes {
            return Err(Reject::HeadersTooLarge("the request head is too large"));
        }
        line_no += 1;
        start = end + 1;
    }
}

fn check_line(line_no: usize, len: usize, limits: &HeadLimits) -> Result<(), Reject> {
    if line_no == 0 && len > limits.max_request_line {
        return Err(Reject::UriTooLong);
    }
    if line_no > 0 && len > limits.max_header_line {
        return Err(Reject::HeadersTooLarge("a header field is too long"));
    }
    Ok(())
}

/// Headers whose value decides where a message ends or where it goes.
const FRAMING_HEADERS: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "expect",
];

/// A parsed request head, still undecoded.
pub struct Head {
    pub method: String,
    pub target: String,
    pub version: Version,
    pub headers: Vec<Header>,
}

/// Header slots `parse_head` keeps on the stack (the server's default limit is 100).
const STACK_HEADERS: usize = 128;

pub fn parse_head(buf: &[u8], limits: &HeadLimits) -> Result<Head, Reject> {
    // On the stack for the usual limit: a heap block of this size on every request made the
    // allocator consolidate its free lists on the reactor thread.
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap = Vec::new();
    let storage = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(storage);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Reject::BadRequest("incomplete head")),
        Err(httparse::Error::Version) => return Err(Reject::VersionNotSupported),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject::HeadersTooLarge("too many header fields"))
        }
        Err(_) => return Err(Reject::BadRequest("invalid request head")),
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(Reject::VersionNotSupported),
    };
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        // A proxy in front of us must read the framing headers exactly as we do: refuse anything
        // but plain ASCII there rather than guess.
        if FRAMING_HEADERS
            .iter()
            .any(|f| h.name.eq_ignore_ascii_case(f))
            && !h
                .value
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(Reject::BadRequest(
                "a framing header carries non-ASCII bytes",
            ));
        }
        let value = String::from_utf8_lossy(trim_ascii_ws(h.value)).into_owned();
        headers.push(Header {
            name: h.name.to_string(),
            value,
        });
    }
    Ok(Head {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        version,
        headers,
    })
}

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Framing {
    pub body: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// Applies the framing rules of RFC 9112 section 6, refusing every ambiguity a proxy in front of us
/// could read differently (the root of request smuggling).
pub fn framing(version: Version, headers: &[Header]) -> Result<Framing, Reject> {
    let all = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    };

    let hosts = all("host").count();
    if version == Version::Http11 && hosts == 0 {
        return Err(Reject::BadRequest("HTTP/1.1 requires a Host header"));
    }
    if hosts > 1 {
        return Err(Reject::BadRequest("more than one Host header"));
    }

    let mut length: Option<u64> = None;
    for value in all("content-length") {
        if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Reject::BadRequest("Content-Length is not a plain number"));
        }
        let n: u64 = value
            .parse()
            .map_err(|_| Reject::BadRequest("Content-Length is not a plain number"))?;
        if length.is_some_and(|prev| prev != n) {
            return Err(Reject::BadRequest("conflicting Content-Length headers"));
        }
        length = Some(n);
    }

    let codings: Vec<String> = all("transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let body = if !codings.is_empty() {
        if version == Version::Http10 {
            // RFC 9112 6.1: HTTP/1.0 has no chunked framing; a proxy may not decode it.
            return Err(Reject::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if length.is_some() {
            return Err(Reject::BadRequest(
                "Content-Length together with Transfer-Encoding",
            ));
        }
        if codings.len() != 1 || codings[0] != "chunked" {
            return Err(Reject::NotImplemented(
                "the only transfer coding accepted is chunked",
            ));
        }
        BodyFraming::Chunked
    } else {
        match length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };

    let mut keep_alive = version == Version::Http11;
    for token in all("connection").flat_map(|v| v.split(',')) {
        let token = token.trim();
        if token.eq_ignore_ascii_case("close") {
            keep_alive = false;
            break;
        }
        if token.eq_ignore_ascii_case("keep-alive") {
            keep_alive = true;
        }
    }

    let mut expect_continue = false;
    for value in all("expect") {
        if value.eq_ignore_ascii_case("100-continue") {
            expect_continue = true;
        } else {
            return Err(Reject::ExpectationFailed);
        }
    }
    Ok(Framing {
        body,
        keep_alive,
        expect_continue,
    })
}

/// Parses a chunk-size line (without its CRLF): hex digits, optionally followed by extensions.
pub fn chunk_size(line: &[u8]) -> Result<u64, Reject> {
    let digits = match line.iter().position(|&b| b == b';') {
        // RFC 9112 7.1.1 allows whitespace before the `;` of an extension, never before the size.
        Some(i) => trim_ascii_ws(&line[..i]),
        None => line,
    };
    if line.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(Reject::BadRequest("invalid chunk size"));
    }
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(Reject::BadRequest("invalid chunk size"));
    }
    let text = std::str::from_utf8(digits).map_err(|_| Reject::BadRequest("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| Reject::BadRequest("invalid chunk size"))
}

fn trim_ascii_ws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The longest chunk-size line (size and extensions) we accept. Extensions carry nothing we use;
/// a long one is only a way to make us buffer wire bytes for few body bytes.
const MAX_CHUNK_LINE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailer(usize),
    Done,
}

/// Decodes a chunked body incrementally as bytes arrive, consuming them from the front of the
/// buffer so that only the undecoded tail is ever held twice.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Wire bytes consumed so far, bounded so that tiny chunks cannot cost unbounded input.
    wire: usize,
    /// Body bytes decoded so far: the limit counts these, not what `body` holds now, because a
    /// streamed body is taken out of `body` as it is decoded.
    data: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            wire: 0,
            data: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Consumes what it can of `buf` into `body`. True once the last chunk and trailers are in;
    /// whatever follows in `buf` is the next request.
    pub fn advance(
        &mut self,
        buf: &mut Vec<u8>,
        body: &mut Vec<u8>,
        limit: usize,
        limits: &HeadLimits,
    ) -> Result<bool, Reject> {
        let mut pos = 0;
        let result = loop {
            match self.state {
                ChunkState::Size => match crlf_line(&buf[pos..], MAX_CHUNK_LINE)? {
                    None => break Ok(false),
                    Some(len) => {
                        let size = chunk_size(&buf[pos..pos + len])?;
                        pos += len + 2;
                        if size == 0 {
                            self.state = ChunkState::Trailer(0);
                        } else if self.data.saturating_add(size) > limit as u64 {
                            break Err(Reject::PayloadTooLarge);
                        } else {
                            self.state = ChunkState::Data(size);
                        }
                    }
                },
                ChunkState::Data(left) => {
                    let take = left.min((buf.len() - pos) as u64) as usize;
                    body.extend_from_slice(&buf[pos..pos + take]);
                    pos += take;
                    self.data += take as u64;
                    if take as u64 == left {
                        self.state = ChunkState::DataEnd;
                    } else {
                        self.state = ChunkState::Data(left - take as u64);
                        break Ok(false);
                    }
                }
                ChunkState::DataEnd => {
                    if buf.len() - pos < 2 {
                        break Ok(false);
                    }
                    if &buf[pos..pos + 2] != b"\r\n" {
                        break Err(Reject::BadRequest("chunk data not followed by CRLF"));
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer(count) => match crlf_line(&buf[pos..], limits.max_header_line)?
                {
                    None => break Ok(false),
                    Some(0) => {
                        pos += 2;
                        self.state = ChunkState::Done;
                    }
                    Some(len) => {
                        if count >= limits.max_headers {
                            break Err(Reject::HeadersTooLarge("too many trailer fields"));
                        }
                        pos += len + 2;
                        self.state = ChunkState::Trailer(count + 1);
                    }
                },
                ChunkState::Done => break Ok(true),
            }
        };
        buf.drain(..pos);
        self.wire += pos;
        if self.wire > limit.saturating_mul(2) + 64 * 1024 {
            return Err(Reject::PayloadTooLarge);
        }
        result
    }
}

/// The length of the CRLF-terminated line at the start of `buf`, without the CRLF; `None` if it
/// has not all arrived. A bare CR or LF is refused: lone line feeds are how one parser is made to
/// see a different message than another.
fn crlf_line(buf: &[u8], max: usize) -> Result<Option<usize>, Reject> {
    match buf.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if buf[i] == b'\n' => Err(Reject::BadRequest("bare LF in chunked framing")),
        Some(i) if i > max => Err(Reject::BadRequest("chunk line too long")),
        Some(i) if i + 1 < buf.len() => {
            if buf[i + 1] == b'\n' {
                Ok(Some(i))
            } else {
                Err(Reject::BadRequest("bare CR in chunked framing"))
            }
        }
        Some(_) => Ok(None),
        None if buf.len() > max => Err(Reject::BadRequest("chunk line too long")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_request_line: 8192,
            max_header_line: 8192,
            max_headers: 100,
            max_head_bytes: 64 * 1024,
        }
    }

    fn h(name: &str, value: &str) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn scan_finds_the_end_of_the_head() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        assert_eq!(scan_head(buf, &limits()), Ok(HeadScan::Complete(27)));
        assert_eq!(
            scan_head(b"GET / HTTP/1.1\r\nHost: a\r\n", &limits()),
            Ok(HeadScan::Incomplete)
        );
        assert_eq!(
            scan_head(b"\r\nGET / HTTP/1.1\r\n\r\n", &limits()),
            Ok(HeadScan::Complete(20))
        );
    }

    #[test]
    fn scan_refuses_long_lines_before_they_end() {
        let long = vec![b'a'; 8193];
        assert_eq!(scan_head(&long, &limits()), Err(Reject::UriTooLong));
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend(vec![b'b'; 8200]);
        assert!(matches!(
            scan_head(&head, &limits()),
            Err(Reject::HeadersTooLarge(_))
        ));
    }

    #[test]
    fn framing_table() {
        use BodyFraming::*;
        let v11 = Version::Http11;
        let host = h("Host", "x");
        let cases: Vec<(Vec<Header>, Result<BodyFraming, u16>)> = vec![
            (vec![host.clone()], Ok(None)),
            (vec![host.clone(), h("Content-Length", "5")], Ok(Length(5))),
            (
                vec![
                    host.clone(),
                    h("Content-Length", "5"),
                    h("content-length", "5"),
                ],
                Ok(Length(5)),
            ),
            (
                vec![
                    host.clone(),
                    h("Content-Length", "5"),
                    h("content-length", "6"),
                ],
                Err(400),
            ),
            (vec![host.clone(), h("Content-Length", "4x")], Err(400)),
            (vec![host.clone(), h("Content-Length", "+4")], Err(400)),
            (vec![host.clone(), h("Content-Length", "4, 4")], Err(400)),
            (vec![host.clone(), h("Content-Length", "")], Err(400)),
            (
                vec![host.clone(), h("Transfer-Encoding", "chunked")],
                Ok(Chunked),
            ),
            (
                vec![host.clone(), h("Transfer-Encoding", "Chunked")],
                Ok(Chunked),
            ),
            (vec![host.clone(), h("Transfer-Encoding", "gzip")], Err(501)),
            (
                vec![host.clone(), h("Transfer-Encoding", "gzip, chunked")],
                Err(501),
            ),
            (
                vec![
                    host.clone(),
                    h("Transfer-Encoding", "chunked"),
                    h("Content-Length", "3"),
                ],
                Err(400),
            ),
            (vec![], Err(400)),
            (vec![host.clone(), h("host", "y")], Err(400)),
            (vec![host.clone(), h("Expect", "something")], Err(417)),
        ];
        let te10 = framing(Version::Http10, &[h("Transfer-Encoding", "chunked")]);
        assert_eq!(te10.map_err(|r| r.status()).map(|f| f.body), Err(400));
        for (headers, want) in cases {
            let got = framing(v11, &headers)
                .map(|f| f.body)
                .map_err(|r| r.status());
            assert_eq!(got, want, "headers {headers:?}");
        }
    }

    #[test]
    fn keep_alive_defaults_follow_the_version() {
        let host = h("Host", "x");
        assert!(
            framing(Version::Http11, std::slice::from_ref(&host))
                .unwrap()
                .keep_alive
        );
        assert!(!framing(Version::Http10, &[]).unwrap().keep_alive);
        assert!(
            framing(Version::Http10, &[h("Connection", "keep-alive")])
                .unwrap()
                .keep_alive
        );
        assert!(
            !framing(Version::Http11, &[host, h("Connection", "close")])
                .unwrap()
                .keep_alive
        );
    }

    fn decode(wire: &[u8], limit: usize) -> Result<(Vec<u8>, Vec<u8>), Reject> {
        // Feed one byte at a time: the decoder must not depend on how bytes are split.
        let mut dec = ChunkedDecoder::default();
        let mut buf = Vec::new();
        let mut body = Vec::new();
        for &b in wire {
            buf.push(b);
            if dec.advance(&mut buf, &mut body, limit, &limits())? {
                return Ok((body, buf));
            }
        }
        Err(Reject::BadRequest("incomplete"))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let (body, rest) = decode(b"5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n", 100).unwrap();
        assert_eq!(body, b"hello!");
        assert!(rest.is_empty());
        assert_eq!(
            decode(b"5\r\nhello\r\n0\r\n\r\n", 4),
            Err(Reject::PayloadTooLarge)
        );
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\rhello",
        ] {
            assert!(
                matches!(decode(bad, 100), Err(Reject::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = format!("1;{}\r\nX\r\n0\r\n\r\n", "a".repeat(300));
        assert!(decode(long_ext.as_bytes(), 100).is_err());
    }

    #[test]
    fn tiny_chunks_cannot_cost_unbounded_wire_bytes() {
        let mut wire = Vec::new();
        for _ in 0..30_000 {
            wire.extend_from_slice(b"1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nX\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decode(&wire, 32 * 1024), Err(Reject::PayloadTooLarge));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a"), Ok(26));
        assert_eq!(chunk_size(b"0"), Ok(0));
        assert_eq!(chunk_size(b"5;name=value"), Ok(5));
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"-1").is_err());
        assert!(chunk_size(b"0x5").is_err());
        assert!(chunk_size(b"ffffffffffffffffff").is_err());
        assert!(chunk_size(b" 5").is_err());
        assert_eq!(chunk_size(b"5 ;ext"), Ok(5));
    }
}
