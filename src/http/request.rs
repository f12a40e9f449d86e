//! The request a handler sees: method, decoded path, query, headers, bounded body, client address.

use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The request target exactly as received.
    pub target: String,
    /// The percent-decoded path. Routing may rewrite it (the tenancy layer strips `/t/{slug}`).
    pub path: String,
    /// The raw query string, without the `?`.
    pub query: String,
    pub version: Version,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
    /// The body as it arrives, for routes that stream it (`body` is then empty).
    pub body_stream: Option<super::BodyStream>,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The peer, or the address `X-Forwarded-For` names when the peer is a trusted proxy.
    pub client_ip: IpAddr,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The decoded query parameters in order (`a=1&b=%20` gives `[("a","1"),("b"," ")]`).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Whether the `Content-Type` names exactly this media type (`type/subtype`, compared
    /// without regard to case; parameters such as `charset` allowed). `None` without the header.
    pub fn content_type_is(&self, essence: &str) -> Option<bool> {
        self.header("content-type")
            .map(|ct| media_type(ct).is_some_and(|m| m.eq_ignore_ascii_case(essence)))
    }

    /// The `Host` header without its port, lower-cased.
    pub fn host(&self) -> Option<String> {
        let host = self.header("host")?;
        let host = if let Some(rest) = host.strip_prefix('[') {
            // An IPv6 literal: `[::1]:8080`.
            rest.split(']').next().unwrap_or_default()
        } else {
            host.rsplit_once(':').map_or(host, |(h, _)| h)
        };
        Some(host.to_ascii_lowercase())
    }
}

/// Splits a request target into a decoded path and a raw query. `None` if the target is not a
/// usable origin-form (or absolute-form) path, or decodes to something unsafe to route on.
pub fn split_target(target: &str) -> Option<(String, String)> {
    let origin = if target.starts_with('/') {
        target
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        // absolute-form (RFC 9112 3.2.2): keep the path, the Host header still names the host.
        &rest[rest.find('/')?..]
    } else {
        return None;
    };
    let (raw_path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, q),
        None => (origin, ""),
    };
    let query = query.split('#').next().unwrap_or_default();
    let path = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8()
        .ok()?;
    if path.contains('\0') {
        return None;
    }
    Some((path.into_owned(), query.to_string()))
}

/// The client address: the peer, unless the peer is a trusted proxy, in which case the rightmost
/// `X-Forwarded-For` entry that is not itself a trusted proxy. An untrusted peer cannot choose
/// the address we log, throttle and audit.
pub fn client_ip(peer: IpAddr, headers: &[Header], trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .flat_map(|h| h.value.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer,
        }
    }
    peer
}

/// The `type/subtype` of a media type (RFC 9110 8.3.1), trimmed, if it has that shape: the
/// part before any `;` must be two non-empty tokens around one `/`, so `application/jsonx`,
/// `application/json x` or `application/json/x` never pass for `application/json`.
pub fn media_type(value: &str) -> Option<&str> {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let (kind, subtype) = essence.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    (token(kind) && token(subtype)).then_some(essence)
}

/// A value a client chose, made safe for one log line: control characters (a newline that
/// would forge a second line, an escape sequence for the terminal) and backslashes are written
/// as Rust escapes. Every value from a request that goes into the log goes through this.
pub fn log_safe(value: &str) -> LogSafe<'_> {
    LogSafe(value)
}

pub struct LogSafe<'a>(&'a str);

impl std::fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        let clean = |c: char| !c.is_control() && c != '\\' && c != '\u{2028}' && c != '\u{2029}';
        if self.0.chars().all(clean) {
            return f.write_str(self.0);
        }
        for c in self.0.chars() {
            if clean(c) {
                f.write_char(c)?;
            } else {
                write!(f, "{}", c.escape_default())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_decoded() {
        assert_eq!(
            split_target("/a%20b/c?x=1&y=%20"),
            Some(("/a b/c".into(), "x=1&y=%20".into()))
        );
        assert_eq!(
            split_target("http://h:1/p?q"),
            Some(("/p".into(), "q".into()))
        );
        assert_eq!(split_target("/%2e%2e/x"), Some(("/../x".into(), "".into())));
        assert_eq!(split_target("*"), None);
        assert_eq!(split_target("/a%00b"), None);
        assert_eq!(split_target("/%ff"), None);
    }

    #[test]
    fn media_types_match_exactly_with_parameters_allowed() {
        assert_eq!(media_type("application/json"), Some("application/json"));
        assert_eq!(
            media_type(" Application/JSON ; charset=utf-8"),
            Some("Application/JSON")
        );
        for bad in [
            "application",
            "/json",
            "application/",
            "application/json/x",
            "a b/c",
            "",
        ] {
            assert_eq!(media_type(bad), None, "{bad}");
        }
        let req = |ct: &str| Request {
            method: "POST".into(),
            target: "/".into(),
            path: "/".into(),
            query: String::new(),
            version: Version::Http11,
            headers: vec![Header {
                name: "Content-Type".into(),
                value: ct.into(),
            }],
            body: Vec::new(),
            body_stream: None,
            peer: "127.0.0.1:1".parse().unwrap(),
            client_ip: "127.0.0.1".parse().unwrap(),
        };
        assert_eq!(
            req("application/json; charset=utf-8").content_type_is("application/json"),
            Some(true)
        );
        for other in [
            "application/jsonx",
            "application/json-seq",
            "text/json",
            "application/json x",
        ] {
            assert_eq!(
                req(other).content_type_is("application/json"),
                Some(false),
                "{other}"
            );
        }
    }

    #[test]
    fn log_safe_escapes_control_characters() {
        assert_eq!(log_safe("plain ünïcode").to_string(), "plain ünïcode");
        assert_eq!(
            log_safe("a\nFAKE 200\r\u{1b}[31m\\x\u{85}").to_string(),
            "a\\nFAKE 200\\r\\u{1b}[31m\\\\x\\u{85}"
        );
    }

    #[test]
    fn forwarded_for_is_honoured_only_from_trusted_peers() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let headers = vec![Header {
            name: "X-Forwarded-For".into(),
            value: "203.0.113.9, 10.0.0.1".into(),
        }];
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(proxy, &headers, &[proxy]), client);
        assert_eq!(client_ip(proxy, &headers, &[]), proxy);
        let other: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_ip(other, &headers, &[proxy]), other);
        let junk = vec![Header {
            name: "x-forwarded-for".into(),
            value: "not-an-ip".into(),
        }];
        assert_eq!(client_ip(proxy, &junk, &[proxy]), proxy);
    }
}
