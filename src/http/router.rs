//! The route table: method + path pattern (`/api/orders/{id}`) to a handler of any type.
//!
//! Generic over the handler so the API layer can choose what a handler receives (the tenant, the
//! principal) without this layer knowing about them.

use std::collections::BTreeSet;

/// Values captured by `{name}` segments, in pattern order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

pub struct Route<H> {
    method: String,
    /// As written, for listings (`/api/orders/{id}`).
    path: String,
    pattern: Vec<Segment>,
    pub handler: H,
    /// How this route takes its body, when it differs from the server default (buffered, at
    /// most `Config::max_body`).
    pub body_limit: Option<BodyLimit>,
}

/// How a request's body reaches its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLimit {
    /// Read whole before the handler runs (`Request::body`), at most this many bytes.
    Buffered(usize),
    /// Read by the handler as it arrives (`Request::body_stream`), at most this many bytes.
    Streamed(u64),
}

pub enum Match<'a, H> {
    Found(&'a Route<H>, Params),
    /// The path exists under other methods: the `Allow` header value.
    MethodNotAllowed(String),
    NotFound,
}

pub struct Router<H> {
    routes: Vec<Route<H>>,
}

impl<H> Default for Router<H> {
    fn default() -> Self {
        Router { routes: Vec::new() }
    }
}

impl<H> Router<H> {
    pub fn new() -> Router<H> {
        Router::default()
    }

    pub fn add(&mut self, method: &str, pattern: &str, handler: H) -> &mut Route<H> {
        let pattern_text = pattern;
        let pattern = split(pattern)
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Param(name.to_string()),
                    None => Segment::Literal(s.to_string()),
                },
            )
            .collect::<Vec<_>>();
        // `find` looks at no more segments than this; a longer route could never match.
        assert!(
            pattern.len() <= MAX_SEGMENTS,
            "route {pattern_text} has more than {MAX_SEGMENTS} segments"
        );
        self.routes.push(Route {
            method: method.to_ascii_uppercase(),
            path: pattern_text.to_string(),
            pattern,
            handler,
            body_limit: None,
        });
        self.routes.last_mut().expect("just pushed")
    }

    /// Finds the route for a request. `HEAD` falls back to the `GET` route of the same path.
    pub fn find(&self, method: &str, path: &str) -> Match<'_, H> {
        // On the stack: this runs for every request. No route has this many segments.
        let mut buf = [""; MAX_SEGMENTS];
        let mut n = 0;
        for segment in split(path) {
            if n == MAX_SEGMENTS {
                return Match::NotFound;
            }
            buf[n] = segment;
            n += 1;
        }
        let segments = &buf[..n];
        let mut allowed = BTreeSet::new();
        let mut head_fallback = None;
        for route in &self.routes {
            let Some(params) = match_pattern(&route.pattern, segments) else {
                continue;
            };
            if route.method == method {
                return Match::Found(route, params);
            }
            if method == "HEAD" && route.method == "GET" && head_fallback.is_none() {
                head_fallback = Some((route, params));
            }
            allowed.insert(route.method.as_str());
            if route.method == "GET" {
                allowed.insert("HEAD");
            }
        }
        if let Some((route, params)) = head_fallback {
            return Match::Found(route, params);
        }
        if allowed.is_empty() {
            Match::NotFound
        } else {
            Match::MethodNotAllowed(allowed.into_iter().collect::<Vec<_>>().join(", "))
        }
    }
}

impl<H> Router<H> {
    /// Every route, in the order added.
    pub fn routes(&self) -> impl Iterator<Item = &Route<H>> {
        self.routes.iter()
    }
}

impl<H> Route<H> {
    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn body_limit(&mut self, bytes: usize) -> &mut Self {
        self.body_limit = Some(BodyLimit::Buffered(bytes));
        self
    }

    /// The handler reads the body itself as it arrives, up to `bytes` (see `BodyStream`).
    pub fn streamed_body(&mut self, bytes: u64) -> &mut Self {
        self.body_limit = Some(BodyLimit::Streamed(bytes));
        self
    }
}

const MAX_SEGMENTS: usize = 16;

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn match_pattern(pattern: &[Segment], segments: &[&str]) -> Option<Params> {
    if pattern.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (want, got) in pattern.iter().zip(segments) {
        match want {
            Segment::Literal(lit) if lit == got => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => params.push((name.clone(), got.to_string())),
        }
    }
    Some(Params(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_longer_than_any_route_is_not_found() {
        let mut r = Router::new();
        let longest = "/a".repeat(MAX_SEGMENTS);
        r.add("GET", &longest, 1);
        assert!(matches!(r.find("GET", &longest), Match::Found(..)));
        assert!(matches!(
            r.find("GET", &format!("{longest}/a")),
            Match::NotFound
        ));
    }

    #[test]
    #[should_panic(expected = "segments")]
    fn a_route_longer_than_find_looks_is_refused() {
        Router::new().add("GET", &"/a".repeat(MAX_SEGMENTS + 1), 1);
    }

    #[test]
    fn routes_match_by_method_and_pattern() {
        let mut r = Router::new();
        r.add("GET", "/api/orders", 1);
        r.add("POST", "/api/orders", 2);
        r.add("GET", "/api/orders/{id}", 3);
        r.add("DELETE", "/api/orders/{id}", 4);

        let Match::Found(route, params) = r.find("GET", "/api/orders/17") else {
            panic!("expected a match");
        };
        assert_eq!((route.handler, params.get("id")), (3, Some("17")));
        assert!(
            matches!(r.find("HEAD", "/api/orders"), Match::Found(route, _) if route.handler == 1)
        );
        match r.find("PUT", "/api/orders/1") {
            Match::MethodNotAllowed(allow) => assert_eq!(allow, "DELETE, GET, HEAD"),
            _ => panic!("expected 405"),
        }
        assert!(matches!(r.find("GET", "/api/order"), Match::NotFound));
        assert!(matches!(r.find("GET", "/api/orders/1/x"), Match::NotFound));
    }
}
