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

/// A parsed request head, still undecoded.
pub struct Head {
    pub method: String,
    pub target: String,
    pub version: Version,
    pub headers: Vec<Header>,
}

pub fn parse_head(buf: &[u8], limits: &HeadLimits) -> Result<Head, Reject> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut storage);
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
    let headers = req
        .headers
        .iter()
        .map(|h| Header {
            name: h.name.to_string(),
            value: String::from_utf8_lossy(h.value).trim().to_string(),
        })
        .collect();
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
        Some(i) => &line[..i],
        None => line,
    };
    let digits = trim_ascii_ws(digits);
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

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a"), Ok(26));
        assert_eq!(chunk_size(b"0"), Ok(0));
        assert_eq!(chunk_size(b"5;name=value"), Ok(5));
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"-1").is_err());
        assert!(chunk_size(b"0x5").is_err());
        assert!(chunk_size(b"ffffffffffffffffff").is_err());
    }
}
