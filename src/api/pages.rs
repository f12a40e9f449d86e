//! The web interface's one HTML page: which requests get it, the boot data it carries (the
//! area, the identified tenant, the real-time key) and its headers (CSP, no cache). The files
//! it loads are served by `crate::assets`.

use sha2::{Digest, Sha256};

use crate::assets;
use crate::error::Error;
use crate::http::{Match, Request, Response};
use crate::tenancy::identify::{self, Identified, Via};
use crate::tenancy::TenancyError;

use super::App;

/// First path segments that are never a page: the API, the Pusher endpoints, the assets and
/// the health check answer as they always did.
const RESERVED: [&str; 6] = ["api", "app", "apps", "broadcasting", "assets", "healthz"];

/// Where the portal's pages are when a default tenant has the central host's others.
const PORTAL_BASE: &str = "/admin";

/// Whether a request is a browser's navigation to a page: `GET`/`HEAD`, `Accept` naming
/// `text/html`, a path (without its `/t/{slug}` prefix) outside the reserved ones that no
/// route answers.
pub(super) fn wanted(app: &App, req: &Request, path: &str) -> bool {
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return false;
    }
    let html = req
        .header("accept")
        .is_some_and(|a| a.to_ascii_lowercase().contains("text/html"));
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    html && !RESERVED.contains(&first)
        && matches!(app.router.find(&req.method, path), Match::NotFound)
}

/// The page for an identified request: the workspace of its tenant, or the admin portal.
pub(super) fn page(app: &App, req: &Request, identified: &Identified) -> Response {
    let tenant = identified
        .tenant
        .as_ref()
        .map(|(record, via)| (record.slug.as_str(), *via == Via::Path));
    let area = if tenant.is_some() {
        "workspace"
    } else {
        "portal"
    };
    render(app, req, 200, area, tenant)
}

/// The workspace's maintenance screen, `503` with `Retry-After` when one was set.
pub(super) fn maintenance(
    app: &App,
    req: &Request,
    identified: &Identified,
    retry_after: Option<u32>,
) -> Response {
    let tenant = identified
        .tenant
        .as_ref()
        .map(|(record, via)| (record.slug.as_str(), *via == Via::Path));
    let page = render(app, req, 503, "maintenance", tenant);
    match retry_after {
        Some(secs) => page.with_header("Retry-After", secs.to_string()),
        None => page,
    }
}

/// The page for a request whose tenant could not be identified: `no_tenant` (404) when the
/// host or `/t/{slug}` names no company, the workspace (403; its API calls say why) when the
/// company is suspended. Any other failure is given back for the usual JSON answer.
pub(super) fn unidentified(
    app: &App,
    req: &Request,
    failure: TenancyError,
) -> Result<Response, TenancyError> {
    let (slug_in_path, path) = identify::strip_path_prefix(&req.path);
    if !wanted(app, req, path) {
        return Err(failure);
    }
    let (area, tenant) = match &failure {
        TenancyError::NotFound | TenancyError::Deleted { .. } => ("no_tenant", None),
        TenancyError::Suspended { tenant } => {
            let in_path = slug_in_path == Some(tenant.as_str());
            ("workspace", Some((tenant.clone(), in_path)))
        }
        _ => return Err(failure),
    };
    let status = Error::from(failure).into_response().status;
    let tenant = tenant
        .as_ref()
        .map(|(slug, in_path)| (slug.as_str(), *in_path));
    Ok(render(app, req, status, area, tenant))
}

/// `index.html` with the asset prefix and the boot data filled in. `tenant` is the slug and
/// whether the request named it in its path (then every link and API path goes under
/// `/t/{slug}`).
fn render(
    app: &App,
    req: &Request,
    status: u16,
    area: &str,
    tenant: Option<(&str, bool)>,
) -> Response {
    let Some(template) = assets::text("index.html") else {
        return Error::Internal("assets/index.html is not embedded".into()).into_response();
    };
    let boot = boot(app, area, tenant);
    let prefix = format!("{}{}", assets::PREFIX, assets::fingerprint());
    // Every module at once: without this the browser finds them one import level at a time.
    let preload: String = assets::modules()
        .iter()
        .map(|m| format!("<link rel=\"modulepreload\" href=\"{prefix}/{m}\">\n"))
        .collect();
    let body = template
        .replace("%PRELOAD%\n", &preload)
        .replace("%ASSETS%", &prefix)
        .replace("%BOOT%", &escape_attribute(&boot));
    let etag = format!(
        "\"{}\"",
        hex::encode(&Sha256::digest(body.as_bytes())[..16])
    );
    let response = if status == 200 && assets::none_match(req.header("if-none-match"), &etag) {
        Response::new(304, "text/html; charset=utf-8", Vec::new())
    } else {
        Response::new(status, "text/html; charset=utf-8", body)
    };
    // X-Content-Type-Options, X-Frame-Options and a Referrer-Policy (no-referrer, stricter
    // than same-origin) are on every answer of the HTTP layer.
    response
        .with_header("ETag", etag)
        .with_header("Cache-Control", "no-cache")
        .with_header("Content-Security-Policy", csp(req.header("host")))
}

/// The boot data the page's script reads from `<meta name="tenantd-boot">`. Only the
/// identified tenant is in it: nothing of any other.
fn boot(app: &App, area: &str, tenant: Option<(&str, bool)>) -> String {
    let tenant = tenant.map(|(slug, in_path)| {
        let base = if in_path {
            format!("/t/{slug}")
        } else {
            String::new()
        };
        serde_json::json!({"slug": slug, "base": base})
    });
    let mut boot = serde_json::json!({
        "area": area,
        "tenant": tenant,
        "realtime": {"key": app.realtime_credentials().1},
        "version": env!("CARGO_PKG_VERSION"),
    });
    // The portal links to each company's workspace at `<slug>.<base_domain>`; a workspace
    // has no use for it.
    if area == "portal" {
        boot["base_domain"] = serde_json::json!(app.identify.base_domain);
        // With a default tenant the central host's pages are its workspace; the portal's
        // are under /admin (see `identify::stays_central`).
        if app.identify.default_tenant.is_some() {
            boot["base"] = serde_json::json!(PORTAL_BASE);
        }
    }
    boot.to_string()
}

/// No inline script or style; WebSockets to this host only. `ws:`/`wss:` sources are named
/// for browsers whose `'self'` does not cover them, and left out when the `Host` header is not
/// a plausible host, so nothing a client sends can add a source.
fn csp(host: Option<&str>) -> String {
    let connect = match host.filter(|h| plausible_host(h)) {
        Some(h) => format!("'self' ws://{h} wss://{h}"),
        None => "'self'".to_string(),
    };
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

/// `name[:port]` or `[v6]:port`: letters, digits, `-` and `.` in a name; hex digits, `:` and
/// `.` in brackets; a port of digits.
fn plausible_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && !port.contains(']') => (name, Some(port)),
        _ => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    port_ok && name_ok
}

/// Text made safe inside a double- or single-quoted HTML attribute.
fn escape_attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_text_cannot_end_the_attribute_or_open_a_tag() {
        let hostile = r#"{"slug":"a\"><script>alert('x')</script>&amp;"}"#;
        let escaped = escape_attribute(hostile);
        assert_eq!(
            escaped,
            "{&quot;slug&quot;:&quot;a\\&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;\
             &amp;amp;&quot;}"
        );
        for c in ['"', '\'', '<', '>'] {
            assert!(!escaped.contains(c), "{c} left in {escaped}");
        }
    }

    #[test]
    fn only_plausible_hosts_reach_the_policy() {
        for good in [
            "localhost:8080",
            "acme.localhost",
            "127.0.0.1:1",
            "[::1]:8080",
            "a-b.test",
        ] {
            assert!(plausible_host(good), "{good}");
            assert!(csp(Some(good)).contains(&format!("ws://{good} wss://{good}")));
        }
        for bad in [
            "",
            "a b",
            "a;script-src *",
            "x:80:80",
            "a:",
            "a:123456",
            "[]:80",
            "a/b",
            "'unsafe-inline'",
        ] {
            assert!(!plausible_host(bad), "{bad:?}");
            assert!(!csp(Some(bad)).contains("ws:"), "{bad:?}");
        }
        assert!(!csp(None).contains("ws:"));
    }
}
