//! The web interface as the server sends it: the page (its area and tenant in the boot data,
//! its headers) on the central host, on a tenant's subdomain, custom domain and `/t/{slug}`
//! path, and on a host that names no company; the embedded files (types, caching, ETag, gzip);
//! and the API answering JSON as before.

use std::io::Read;

use serde_json::{json, Value};

use crate::support::{
    raw_request, request_to, spawn_app, spawn_app_with, spawn_serve, Reply, TestApp,
};

const HTML: (&str, &str) = (
    "Accept",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
);

/// A browser's navigation to `path` on `host`.
fn open(app: &TestApp, host: &str, path: &str) -> Reply {
    app.call("GET", path, &[("Host", host), HTML], None)
}

/// The page's boot data, read back the way the browser reads the attribute.
pub(crate) fn boot(page: &Reply) -> Value {
    let text = page.text();
    let start = text
        .find(r#"<meta name="tenantd-boot" content=""#)
        .unwrap_or_else(|| panic!("no boot meta in {text}"));
    let rest = &text[start + r#"<meta name="tenantd-boot" content=""#.len()..];
    let attribute = &rest[..rest.find('"').expect("the attribute ends")];
    let json = attribute
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("boot is not JSON ({e}): {json}"))
}

fn assert_page(page: &Reply, status: u16) {
    assert_eq!(page.status, status, "{}", page.text());
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert!(page.header("etag").is_some_and(|t| t.starts_with('"')));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(page.header("referrer-policy").is_some());
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{part} missing from {csp}");
    }
    let text = page.text();
    assert!(
        !text.contains("%BOOT%") && !text.contains("%ASSETS%"),
        "{text}"
    );
    let fp = tenantd::assets::fingerprint();
    assert!(
        text.contains(&format!("src=\"/assets/{fp}/vendor/pusher.min.js\"")),
        "{text}"
    );
}

#[test]
fn the_central_host_gets_the_admin_portal() {
    let app = spawn_app();
    for host in ["localhost", "127.0.0.1:8080", "localhost:8080"] {
        for path in ["/", "/tenants/5", "/audit"] {
            let page = open(&app, host, path);
            assert_page(&page, 200);
            let boot = boot(&page);
            assert_eq!(boot["area"], "portal", "{host}{path}");
            assert_eq!(boot["tenant"], Value::Null);
            assert_eq!(boot["realtime"]["key"], app.app.realtime_credentials().1);
            assert_eq!(boot["version"], env!("CARGO_PKG_VERSION"));
            assert_eq!(boot["base_domain"], "localhost", "{host}{path}");
            let csp = page.header("content-security-policy").unwrap();
            assert!(
                csp.contains(&format!("connect-src 'self' ws://{host} wss://{host};")),
                "{csp}"
            );
        }
    }
}

/// The portal builds each company's workspace address from the configured base domain.
#[test]
fn the_portal_page_names_the_configured_base_domain() {
    let app = spawn_app_with(|c| c.identify.base_domain = "tenants.example".into());
    app.create_tenant("acme", &[]);
    let page = open(&app, "tenants.example", "/tenants");
    assert_page(&page, 200);
    assert_eq!(boot(&page)["area"], "portal");
    assert_eq!(boot(&page)["base_domain"], "tenants.example");
    // A workspace's page is about its own company only.
    let page = open(&app, "acme.tenants.example", "/");
    assert_eq!(boot(&page)["area"], "workspace");
    assert_eq!(boot(&page).get("base_domain"), None);
}

#[test]
fn a_company_gets_its_workspace_on_its_subdomain_domain_and_path() {
    let app = spawn_app();
    app.create_tenant("acme", &["acme.example"]);
    for (host, path, base) in [
        ("acme.localhost:8080", "/", ""),
        ("acme.localhost", "/chats/12", ""),
        ("acme.example", "/orders", ""),
        ("localhost:8080", "/t/acme/orders", "/t/acme"),
        ("127.0.0.1", "/t/acme/orders/5", "/t/acme"),
        ("localhost", "/t/acme", "/t/acme"),
    ] {
        let page = open(&app, host, path);
        assert_page(&page, 200);
        assert_eq!(
            boot(&page),
            json!({
                "area": "workspace",
                "tenant": {"slug": "acme", "base": base},
                "realtime": {"key": app.app.realtime_credentials().1},
                "version": env!("CARGO_PKG_VERSION"),
            }),
            "{host}{path}"
        );
    }
}

#[test]
fn a_host_or_path_that_names_no_company_gets_the_page_with_404() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    for (host, path) in [
        ("nope.localhost:8080", "/"),
        ("nope.localhost", "/orders"),
        ("localhost", "/t/nope/orders"),
        ("a.b.localhost", "/"),
    ] {
        let page = open(&app, host, path);
        assert_page(&page, 404);
        let boot = boot(&page);
        assert_eq!(boot["area"], "no_tenant", "{host}{path}");
        assert_eq!(boot["tenant"], Value::Null);
    }
    // The API there answers as before.
    let api = app.call(
        "GET",
        "/api/orders",
        &[("Host", "nope.localhost"), HTML],
        None,
    );
    assert_eq!(api.status, 404);
    assert_eq!(api.error_code(), "tenant_not_found");
}

#[test]
fn a_suspended_company_gets_its_workspace_page_and_files_while_its_api_says_why() {
    let app = spawn_app();
    let acme = app.create_tenant("acme", &[]);
    let id = acme["id"].as_str().unwrap();
    let reply = app.admin("POST", &format!("/api/admin/tenants/{id}/suspend"), None);
    assert_eq!(reply.status, 200, "{}", reply.text());

    let page = open(&app, "acme.localhost", "/chats");
    assert_page(&page, 403);
    assert_eq!(boot(&page)["area"], "workspace");
    assert_eq!(boot(&page)["tenant"], json!({"slug": "acme", "base": ""}));
    let page = open(&app, "localhost", "/t/acme/");
    assert_page(&page, 403);
    assert_eq!(
        boot(&page)["tenant"],
        json!({"slug": "acme", "base": "/t/acme"})
    );

    let fp = tenantd::assets::fingerprint();
    for host in ["acme.localhost", "nope.localhost"] {
        let file = app.call(
            "GET",
            &format!("/assets/{fp}/vendor/echo.iife.js"),
            &[("Host", host)],
            None,
        );
        assert_eq!(file.status, 200, "{host}: {}", file.text());
    }
    let api = app.get("/api/orders", &[("Host", "acme.localhost"), HTML]);
    assert_eq!(api.status, 403);
    assert_eq!(api.error_code(), "tenant_suspended");
}

/// The boot data holds the identified tenant and nothing of any other.
#[test]
fn a_page_never_names_another_company() {
    let app = spawn_app();
    let acme = app.create_tenant("acme", &["acme.example"]);
    let globex = app.create_tenant("globex", &["globex.example"]);
    let them = [(&acme, "acme", &globex), (&globex, "globex", &acme)];
    for (own, slug, other) in them {
        let other_slug = other["slug"].as_str().unwrap();
        for (host, path) in [
            (format!("{slug}.localhost"), "/".to_string()),
            (format!("{slug}.example"), "/orders".to_string()),
            ("localhost".to_string(), format!("/t/{slug}/chats")),
        ] {
            let page = open(&app, &host, &path);
            assert_eq!(page.status, 200, "{host}{path}");
            let text = page.text();
            assert_eq!(boot(&page)["tenant"]["slug"], slug);
            for leak in [
                other_slug,
                other["id"].as_str().unwrap(),
                other["name"].as_str().unwrap(),
            ] {
                assert!(!text.contains(leak), "{host}{path} names {leak}: {text}");
            }
            assert!(!text.contains(own["id"].as_str().unwrap()), "no ids at all");
        }
    }
}

#[test]
fn api_paths_keep_answering_json_whatever_the_accept_header() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    for (host, path) in [
        ("localhost", "/api/nothing"),
        ("localhost", "/api"),
        ("acme.localhost", "/api/nothing"),
        ("localhost", "/t/acme/api/nothing"),
        ("localhost", "/broadcasting/nothing"),
        ("localhost", "/apps/1/nothing"),
    ] {
        let reply = open(&app, host, path);
        assert_eq!(reply.status, 404, "{host}{path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.error_code(), "not_found");
    }
    // A client that does not ask for HTML gets the JSON 404 it always got.
    let reply = app.call("GET", "/", &[("Accept", "application/json")], None);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_code(), "not_found");
    let reply = app.call("GET", "/orders", &[("Host", "acme.localhost")], None);
    assert_eq!(reply.error_code(), "not_found");
    // Only GET and HEAD are pages.
    let reply = app.call("POST", "/", &[HTML], Some("{}"));
    assert_eq!(reply.error_code(), "not_found");
    // A tenant route answers its JSON to a browser too.
    let orders = app.get("/api/orders", &[("Host", "acme.localhost"), HTML]);
    assert_eq!(orders.status, 200, "{}", orders.text());
    assert!(orders.json()["orders"].is_array());
    let health = open(&app, "localhost", "/healthz");
    assert_eq!(health.json(), json!({"status": "ok"}));
}

/// A request on its own connection, read as an answer to `method`.
fn send(app: &TestApp, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut client = app.server.connect();
    client.send(raw_request(method, path, headers, None).as_bytes());
    client.reply_to(method)
}

#[test]
fn a_page_is_revalidated_with_its_etag_and_head_has_no_body() {
    let app = spawn_app();
    let page = open(&app, "localhost", "/");
    let etag = page.header("etag").unwrap().to_string();
    let again = app.call("GET", "/", &[HTML, ("If-None-Match", &etag)], None);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    // Another area is another page.
    let other = app.call(
        "GET",
        "/",
        &[("Host", "nope.localhost"), HTML, ("If-None-Match", &etag)],
        None,
    );
    assert_eq!(other.status, 404);

    let head = send(&app, "HEAD", "/", &[HTML]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(page.body.len().to_string().as_str())
    );
    assert!(head.header("content-security-policy").is_some());
}

fn on_disk(path: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join(path),
    )
    .unwrap()
}

#[test]
fn files_are_served_with_their_type_a_long_cache_and_an_etag() {
    let app = spawn_app();
    let fp = tenantd::assets::fingerprint();
    let url = format!("/assets/{fp}/vendor/pusher.min.js");
    let file = app.call("GET", &url, &[], None);
    assert_eq!(file.status, 200);
    assert_eq!(
        file.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        file.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(file.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(file.header("vary"), Some("Accept-Encoding"));
    assert_eq!(file.header("content-encoding"), None);
    assert_eq!(file.body, on_disk("vendor/pusher.min.js"));
    let etag = file.header("etag").unwrap().to_string();

    let again = app.call("GET", &url, &[("If-None-Match", &etag)], None);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert!(again.header("cache-control").unwrap().contains("immutable"));
    let other = app.call("GET", &url, &[("If-None-Match", "\"0000\"")], None);
    assert_eq!(other.status, 200);

    let head = send(&app, "HEAD", &url, &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(file.body.len().to_string().as_str())
    );

    let license = app.call(
        "GET",
        &format!("/assets/{fp}/vendor/preact.LICENSE"),
        &[],
        None,
    );
    assert_eq!(license.status, 200);
    assert_eq!(
        license.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    // The page's template is served only filled in, as a page with its CSP.
    let template = app.call("GET", &format!("/assets/{fp}/index.html"), &[], None);
    assert_eq!(template.status, 404);
}

#[test]
fn files_are_gzipped_for_clients_that_accept_it() {
    let app = spawn_app();
    let fp = tenantd::assets::fingerprint();
    let url = format!("/assets/{fp}/vendor/pusher.min.js");
    let plain = app.call("GET", &url, &[], None);
    let zipped = app.call(
        "GET",
        &url,
        &[("Accept-Encoding", "gzip, deflate, br")],
        None,
    );
    assert_eq!(zipped.status, 200);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("vary"), Some("Accept-Encoding"));
    assert!(zipped.body.len() < plain.body.len() / 2);
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&zipped.body[..])
        .read_to_end(&mut decoded)
        .expect("a gzip body");
    assert_eq!(decoded, plain.body);
    // Another representation, another validator; each revalidates itself.
    let etag = zipped.header("etag").unwrap();
    assert_ne!(Some(etag), plain.header("etag"));
    let again = app.call(
        "GET",
        &url,
        &[("Accept-Encoding", "gzip"), ("If-None-Match", etag)],
        None,
    );
    assert_eq!(again.status, 304);
    // Refused by weight: sent as it is.
    let refused = app.call("GET", &url, &[("Accept-Encoding", "gzip;q=0")], None);
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.body, plain.body);
}

#[test]
fn an_old_fingerprint_still_gets_the_file_without_the_long_cache() {
    let app = spawn_app();
    let fp = tenantd::assets::fingerprint();
    let old = if fp == "0123456789abcdef" {
        "fedcba9876543210"
    } else {
        "0123456789abcdef"
    };
    let file = app.call(
        "GET",
        &format!("/assets/{old}/vendor/echo.iife.js"),
        &[],
        None,
    );
    assert_eq!(file.status, 200);
    assert_eq!(file.header("cache-control"), Some("no-cache"));
    assert_eq!(file.body, on_disk("vendor/echo.iife.js"));
}

#[test]
fn what_is_not_an_embedded_file_is_the_usual_json_404() {
    let app = spawn_app();
    let fp = tenantd::assets::fingerprint();
    for path in [
        format!("/assets/{fp}/nothing.js"),
        format!("/assets/{fp}/vendor/update.sh"),
        format!("/assets/{fp}/vendor"),
        format!("/assets/{fp}/vendor/"),
        format!("/assets/{fp}/../Cargo.toml"),
        format!("/assets/{fp}/vendor/../../Cargo.toml"),
        format!("/assets/{fp}/%2e%2e/Cargo.toml"),
        format!("/assets/{fp}"),
        "/assets/".to_string(),
    ] {
        let reply = app.call("GET", &path, &[HTML], None);
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
        assert_eq!(reply.error_code(), "not_found", "{path}");
    }
    let post = app.call(
        "POST",
        &format!("/assets/{fp}/vendor/echo.iife.js"),
        &[],
        Some("{}"),
    );
    assert!(post.status >= 400 && post.status < 500, "{}", post.status);
    assert!(post.json()["error"].is_object());
}

/// `serve --demo` says where to point a browser, and each URL it prints opens its page.
#[test]
fn serve_demo_prints_urls_that_open_the_portal_and_each_workspace() {
    let data = tempfile::tempdir().unwrap();
    // The listening line, the data directory, the first admin (6), the demo (2 + 8 people),
    // the curl hint (4), then the web interface (4).
    let server = spawn_serve(data.path(), &["--demo"], 26);
    let port = server.addr.port();
    let at = server
        .lines
        .iter()
        .position(|l| l == "web interface, open in a browser:")
        .unwrap_or_else(|| panic!("{:?}", server.lines));
    let urls: Vec<&str> = server.lines[at + 1..at + 4]
        .iter()
        .flat_map(|l| l.split_whitespace().filter(|w| w.starts_with("http://")))
        .collect();
    assert_eq!(
        urls,
        [
            format!("http://127.0.0.1:{port}/"),
            format!("http://acme.localhost:{port}/"),
            format!("http://127.0.0.1:{port}/t/acme/"),
            format!("http://globex.localhost:{port}/"),
            format!("http://127.0.0.1:{port}/t/globex/"),
        ]
    );
    let expected = [
        json!({"area": "portal", "tenant": null}),
        json!({"area": "workspace", "tenant": {"slug": "acme", "base": ""}}),
        json!({"area": "workspace", "tenant": {"slug": "acme", "base": "/t/acme"}}),
        json!({"area": "workspace", "tenant": {"slug": "globex", "base": ""}}),
        json!({"area": "workspace", "tenant": {"slug": "globex", "base": "/t/globex"}}),
    ];
    for (url, want) in urls.iter().zip(expected) {
        // As a browser would: *.localhost resolves to loopback, the Host names the URL's host.
        let (host, path) = url["http://".len()..].split_once('/').unwrap();
        let page = request_to(
            server.addr,
            "GET",
            &format!("/{path}"),
            &[("Host", host), HTML],
            None,
        );
        assert_page(&page, 200);
        let boot = boot(&page);
        assert_eq!(boot["area"], want["area"], "{url}");
        assert_eq!(boot["tenant"], want["tenant"], "{url}");
    }
}

/// Every module the app imports is named for preloading, each link is served, and none is
/// missing: a module found only through an import costs a round trip per level of imports.
#[test]
fn a_page_names_every_module_for_preloading_and_each_is_served() {
    let app = spawn_app();
    let page = open(&app, "127.0.0.1", "/");
    let html = String::from_utf8(page.body.clone()).unwrap();
    let links: Vec<&str> = html
        .split("<link rel=\"modulepreload\" href=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    let fp = tenantd::assets::fingerprint();
    for module in [
        "app/main.js",
        "app/workspace/shell.js",
        "vendor/htm-preact.module.js",
    ] {
        let url = format!("/assets/{fp}/{module}");
        assert!(links.contains(&url.as_str()), "{url} in {links:?}");
    }
    let mut on_disk_modules = Vec::new();
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/app")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "js") {
                on_disk_modules.push(path);
            }
        }
    }
    // The vendored module is the one outside app/.
    assert_eq!(links.len(), on_disk_modules.len() + 1, "{links:?}");
    for url in links {
        let file = app.call("GET", url, &[], None);
        assert_eq!(file.status, 200, "{url}");
        assert_eq!(
            file.header("content-type"),
            Some("text/javascript; charset=utf-8"),
            "{url}"
        );
    }
}
