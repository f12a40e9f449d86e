//! The web interface's files (`assets/`, embedded with rust-embed) and how they are served:
//! the fingerprint of the whole set, content types, strong `ETag`s and `304`, long caching of
//! fingerprinted URLs, and gzip for clients that accept it. Knows nothing of tenants or pages;
//! `api::pages` builds the HTML page from `index.html`.
//!
//! In debug builds rust-embed reads the files from disk on every request, so an edited script
//! is served at once; the fingerprint is still computed once, so browsers that cached the old
//! one for a year see the new one only after a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::http::{Request, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "assets/"]
// The vendoring scripts are for maintainers, not browsers.
#[exclude = "*.sh"]
struct Files;

/// Where fingerprinted files are served: `/assets/<fingerprint>/<path>`.
pub const PREFIX: &str = "/assets/";

/// A year, the longest `max-age` caches are asked to honour (RFC 9111 does not cap it, but
/// older caches did at a year).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Smaller bodies gain less from gzip than its header and a round of work cost.
const GZIP_MIN: usize = 1024;

/// 16 hex characters of a SHA-256 over every embedded file's path and content hash, in path
/// order: it changes whenever any file does, so `/assets/<fingerprint>/...` URLs may be cached
/// for good.
pub fn fingerprint() -> &'static str {
    static FINGERPRINT: OnceLock<String> = OnceLock::new();
    FINGERPRINT.get_or_init(|| {
        let mut paths: Vec<_> = Files::iter().collect();
        paths.sort();
        let mut all = Sha256::new();
        for path in paths {
            if let Some(file) = Files::get(&path) {
                all.update(path.as_bytes());
                // A path cannot hold NUL: it keeps `ab`+`c` apart from `a`+`bc`.
                all.update([0]);
                all.update(file.metadata.sha256_hash());
            }
        }
        hex::encode(&all.finalize()[..8])
    })
}

/// The ES modules a page loads (the app's and the vendored `*.module.js`), in path order: the
/// page names them all for preloading, so the browser fetches them at once instead of one
/// level of imports after another.
pub fn modules() -> &'static [String] {
    static MODULES: OnceLock<Vec<String>> = OnceLock::new();
    MODULES.get_or_init(|| {
        let mut paths: Vec<String> = Files::iter()
            .filter(|p| (p.starts_with("app/") && p.ends_with(".js")) || p.ends_with(".module.js"))
            .map(|p| p.into_owned())
            .collect();
        paths.sort();
        paths
    })
}

/// The text of an embedded file (`index.html`, say), if there is one.
pub fn text(path: &str) -> Option<String> {
    Files::get(path).map(|f| String::from_utf8_lossy(&f.data).into_owned())
}

/// A file's type by its name (text types say UTF-8), and whether gzip shrinks such files.
fn content_type(path: &str) -> (&'static str, bool) {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" => ("text/html; charset=utf-8", true),
        "js" | "mjs" => ("text/javascript; charset=utf-8", true),
        "css" => ("text/css; charset=utf-8", true),
        "svg" => ("image/svg+xml", true),
        "json" => ("application/json", true),
        "txt" | "license" => ("text/plain; charset=utf-8", true),
        "png" => ("image/png", false),
        _ if name == "LICENSE" || name == "SHA256SUMS" => ("text/plain; charset=utf-8", true),
        _ => ("application/octet-stream", false),
    }
}

/// A file as it is sent: its bytes, gzipped too when that is worth it, and its content hash.
struct Encoded {
    hash: [u8; 32],
    identity: Arc<[u8]>,
    gzip: Option<Arc<[u8]>>,
}

/// Each file encoded once, kept by path; a changed hash (an edit, in debug builds) replaces it.
fn encoded(path: &str) -> Option<Arc<Encoded>> {
    static KEPT: OnceLock<Mutex<HashMap<String, Arc<Encoded>>>> = OnceLock::new();
    let kept = KEPT.get_or_init(Default::default);
    let file = Files::get(path)?;
    let hash = file.metadata.sha256_hash();
    if let Some(known) = lock(kept).get(path) {
        if known.hash == hash {
            return Some(known.clone());
        }
    }
    let (_, compressible) = content_type(path);
    let gzip = (compressible && file.data.len() > GZIP_MIN)
        .then(|| gzip(&file.data))
        .flatten()
        .filter(|z| z.len() < file.data.len());
    let made = Arc::new(Encoded {
        hash,
        identity: Arc::from(file.data.into_owned()),
        gzip: gzip.map(Arc::from),
    });
    lock(kept).insert(path.to_string(), made.clone());
    Some(made)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map is whole after any panic (an insert is one step): keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(data).ok()?;
    z.finish().ok()
}

/// Answers `GET`/`HEAD /assets/<fingerprint>/<path>`. `None` when no such file is embedded
/// (the caller answers its usual 404). A fingerprint other than the current one still gets
/// the file, without the long cache: a page loaded before an upgrade keeps working.
pub fn serve(req: &Request) -> Option<Response> {
    let rest = req.path.strip_prefix(PREFIX)?;
    let (fp, path) = rest.split_once('/')?;
    // rust-embed refuses paths that leave the folder; this refuses them before any lookup.
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('\\'))
    {
        return None;
    }
    // The page's template is for `api::pages`, which fills it in and gives it its CSP.
    if path.ends_with(".html") {
        return None;
    }
    let file = encoded(path)?;
    let (content_type, _) = content_type(path);
    let tag = hex::encode(&file.hash[..16]);
    let cache = if fp == fingerprint() {
        IMMUTABLE
    } else {
        "no-cache"
    };
    let gzipped = file
        .gzip
        .as_ref()
        .filter(|_| accepts_gzip(req.header("accept-encoding")));
    let etag = match gzipped {
        // Another representation, so another strong validator (RFC 9110 8.8.3).
        Some(_) => format!("\"{tag}.gz\""),
        None => format!("\"{tag}\""),
    };
    let body = gzipped.unwrap_or(&file.identity).clone();
    let mut response = if none_match(req.header("if-none-match"), &etag) {
        Response::new(304, content_type, Vec::new())
    } else {
        Response::shared(200, content_type, body)
    };
    response = response
        .with_header("ETag", etag)
        .with_header("Cache-Control", cache);
    if file.gzip.is_some() {
        response = response.with_header("Vary", "Accept-Encoding");
    }
    if gzipped.is_some() {
        response = response.with_header("Content-Encoding", "gzip");
    }
    Some(response)
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 13.1.2) or is `*`.
pub fn none_match(header: Option<&str>, etag: &str) -> bool {
    header.is_some_and(|h| {
        h.split(',').map(str::trim).any(|t| {
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag.strip_prefix("W/").unwrap_or(etag)
        })
    })
}

/// Whether `Accept-Encoding` allows gzip: named (or `*`) with a non-zero weight, and not
/// refused by name.
fn accepts_gzip(header: Option<&str>) -> bool {
    let Some(header) = header else {
        return false;
    };
    let mut star = false;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            let q = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="));
            q.is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        match coding.as_str() {
            "gzip" | "x-gzip" => return !refused,
            "*" => star = !refused,
            _ => {}
        }
    }
    star
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_sixteen_hex_and_covers_the_files() {
        let fp = fingerprint();
        assert_eq!(fp.len(), 16);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(Files::get("index.html").is_some());
        assert!(
            Files::get("vendor/update.sh").is_none(),
            "scripts are not served"
        );
    }

    #[test]
    fn gzip_is_taken_only_when_allowed() {
        assert!(accepts_gzip(Some("gzip, deflate, br")));
        assert!(accepts_gzip(Some("br;q=1.0, gzip;q=0.8")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("*, gzip;q=0")));
        assert!(!accepts_gzip(Some("*;q=0")));
        assert!(!accepts_gzip(Some("br, deflate")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match(Some("\"a\""), "\"a\""));
        assert!(none_match(Some("W/\"a\""), "\"a\""));
        assert!(none_match(Some("\"b\", \"a\""), "\"a\""));
        assert!(none_match(Some("*"), "\"a\""));
        assert!(!none_match(Some("\"a.gz\""), "\"a\""));
        assert!(!none_match(None, "\"a\""));
    }

    #[test]
    fn types_follow_the_extension() {
        assert_eq!(
            content_type("app/main.js").0,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("x.mjs").0, "text/javascript; charset=utf-8");
        assert_eq!(content_type("app/style.css").0, "text/css; charset=utf-8");
        assert_eq!(content_type("app/icon.svg").0, "image/svg+xml");
        assert_eq!(content_type("a.png"), ("image/png", false));
        assert_eq!(
            content_type("vendor/preact.LICENSE").0,
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type("a.bin"), ("application/octet-stream", false));
    }
}
