//! The first run as a newcomer meets it: the command line (global options, `--version`, usage
//! errors, the one rule for a directory without a catalog), the demo beside one's own tenants,
//! orphan tenant files, and the API's rules for JSON bodies, client text and `/healthz`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::support::{request_to, spawn_app, spawn_serve, Reply, TestApp};

fn tenantd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("TENANTD_DATA")
        .output()
        .expect("run tenantd")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// A data directory as the first `tenantd serve` leaves it: the catalog, `tenants/`, the
/// first system admin. (The server is killed once it has said it listens.)
pub fn init_data_dir(data: &Path) {
    drop(spawn_serve(data, &[], 1));
    assert!(data.join("central.db").exists());
}

fn d(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

#[test]
fn version_prints_the_version_and_exits_0() {
    for flag in ["--version", "-V"] {
        let out = tenantd(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", stderr(&out));
        assert_eq!(
            stdout(&out).trim(),
            format!("tenantd {}", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
}

#[test]
fn each_command_has_its_own_help_and_usage_errors_show_that_commands_usage() {
    for command in [
        "serve", "tenants", "migrate", "users", "members", "admin", "realtime",
    ] {
        for help in [vec![command, "--help"], vec!["help", command]] {
            let out = ok(tenantd(&help));
            assert!(
                out.starts_with(&format!("tenantd {command}")),
                "{help:?}: {out}"
            );
            assert!(
                out.contains("--data"),
                "{help:?} does not mention --data: {out}"
            );
        }
    }

    // A missing slug is named as such (it used to say "--name is required").
    let out = tenantd(&["tenants", "create", "--name", "Acme"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("missing the <slug> argument"), "{err}");
    assert!(err.contains("tenantd tenants create <slug>"), "{err}");
    assert!(err.contains("tenantd tenants --help"), "{err}");
    let out = tenantd(&["tenants", "create", "acme"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--name is required"),
        "{}",
        stderr(&out)
    );

    // A bare port says what --bind wants, before anything is opened.
    let data = tempfile::tempdir().unwrap();
    let out = tenantd(&["serve", "--bind", "8080", "--data", d(data.path())]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--bind takes an address with a port, such as 127.0.0.1:8080"),
        "{err}"
    );
    assert!(err.contains("Usage: tenantd serve"), "{err}");
    assert!(!data.path().join("central.db").exists());

    let out = tenantd(&["members", "add", "--tenant", "acme"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("tenantd members add --tenant SLUG"),
        "{}",
        stderr(&out)
    );
    let out = tenantd(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown command: frobnicate"));
}

#[test]
fn global_options_come_before_the_command_too() {
    let data = tempfile::tempdir().unwrap();
    init_data_dir(data.path());
    let dir = d(data.path());
    ok(tenantd(&[
        "--data", dir, "tenants", "create", "initech", "--name", "Initech",
    ]));
    ok(tenantd(&[
        "--data",
        dir,
        "users",
        "create",
        "--email",
        "ann@initech.test",
        "--name",
        "Ann",
    ]));
    let out = ok(tenantd(&[
        "--data",
        dir,
        "--json",
        "members",
        "add",
        "--tenant",
        "initech",
        "--email",
        "ann@initech.test",
        "--role",
        "admin",
    ]));
    let added: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(added["role"], "admin");
    let listed = ok(tenantd(&[
        &format!("--data={dir}"),
        "tenants",
        "list",
        "--json",
    ]));
    assert!(listed.contains("\"initech\""), "{listed}");
}

#[test]
fn only_serve_starts_a_data_directory_and_the_others_say_where_they_looked() {
    let parent = tempfile::tempdir().unwrap();
    let nowhere = parent.path().join("typo");
    let dir = d(&nowhere);
    for args in [
        vec!["tenants", "create", "acme", "--name", "Acme", "--data", dir],
        vec!["tenants", "list", "--data", dir],
        vec![
            "users", "create", "--email", "a@b.test", "--name", "A", "--data", dir,
        ],
        vec!["admin", "create", "--email", "root@b.test", "--data", dir],
        vec![
            "members", "add", "--tenant", "acme", "--email", "a@b.test", "--role", "admin",
        ],
        vec!["migrate", "--data", dir],
        vec!["realtime", "credentials", "--data", dir],
    ] {
        let mut args = args;
        if !args.contains(&"--data") {
            args.extend(["--data", dir]);
        }
        let out = tenantd(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("no tenantd catalog in {dir}")),
            "{args:?}: {err}"
        );
        assert!(err.contains("tenantd serve --data"), "{args:?}: {err}");
        assert!(!nowhere.exists(), "{args:?} made the directory");
    }
}

/// A directory with a user's own `acme`: `serve --demo` must not put its people (with their
/// public password) into it, nor its chats and orders.
#[test]
fn the_demo_never_adds_people_to_a_tenant_it_did_not_create() {
    let data = tempfile::tempdir().unwrap();
    init_data_dir(data.path());
    let dir = d(data.path());
    ok(tenantd(&[
        "tenants", "create", "acme", "--name", "Our Acme", "--data", dir,
    ]));
    ok(tenantd(&[
        "users",
        "create",
        "--email",
        "me@ours.test",
        "--name",
        "Me",
        "--password",
        "our-password-1",
        "--data",
        dir,
    ]));
    ok(tenantd(&[
        "members",
        "add",
        "--tenant",
        "acme",
        "--email",
        "me@ours.test",
        "--role",
        "admin",
        "--data",
        dir,
    ]));

    for run in 0..2 {
        let server = spawn_serve(data.path(), &["--demo"], 6);
        let said = server.lines.join("\n");
        assert!(
            said.contains(
                "demo: skipped acme (a tenant with this slug exists that the demo did not create)"
            ),
            "run {run}: {said}"
        );
        assert!(said.contains("demo: companies globex"), "run {run}: {said}");

        // Only our own member in our acme; alice cannot get in with the demo password.
        let central = rusqlite::Connection::open(data.path().join("central.db")).unwrap();
        let members: Vec<String> = central
            .prepare(
                "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id
                 JOIN tenants t ON t.id = m.tenant_id WHERE t.slug = 'acme' ORDER BY 1",
            )
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(members, ["me@ours.test"], "run {run}");
        let alice: i64 = central
            .query_row(
                "SELECT count(*) FROM users WHERE email = 'alice@acme.test'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(
            alice, 0,
            "run {run}: a demo account whose only company was skipped"
        );

        let login = |email: &str, password: &str| {
            let reply = request_to(
                server.addr,
                "POST",
                "/api/auth/login",
                &[],
                Some(&json!({"email": email, "password": password})),
            );
            assert_eq!(reply.status, 200, "{email}: {}", reply.text());
            reply.json()["token"].as_str().unwrap().to_string()
        };
        // Our acme has no demo orders; the demo's globex has its 200.
        let mine = login("me@ours.test", "our-password-1");
        let auth = format!("Bearer {mine}");
        let orders = request_to(
            server.addr,
            "GET",
            "/t/acme/api/orders?limit=1",
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(orders.status, 200, "{}", orders.text());
        assert_eq!(orders.json()["orders"], json!([]), "run {run}");
        let gina = login("gina@globex.test", "demo-password");
        let auth = format!("Bearer {gina}");
        let orders = request_to(
            server.addr,
            "GET",
            "/t/globex/api/orders?limit=1",
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(orders.json()["orders"].as_array().map(Vec::len), Some(1));
    }
}

/// The demo's own companies, on the other hand, are its to complete on every start.
#[test]
fn the_demo_completes_its_own_companies_when_run_again() {
    let data = tempfile::tempdir().unwrap();
    let first = spawn_serve(data.path(), &["--demo"], 12);
    assert!(
        first.lines.iter().any(|l| l.contains("alice@acme.test")),
        "{:?}",
        first.lines
    );
    drop(first);
    let central = rusqlite::Connection::open(data.path().join("central.db")).unwrap();
    central
        .execute(
            "DELETE FROM memberships WHERE user_id =
                 (SELECT id FROM users WHERE email = 'mike@acme.test')",
            [],
        )
        .unwrap();
    let again = spawn_serve(data.path(), &["--demo"], 4);
    let said = again.lines.join("\n");
    assert!(!said.contains("skipped"), "{said}");
    assert!(
        said.contains("demo: companies acme (acme.test) and globex"),
        "{said}"
    );
    let back: i64 = central
        .query_row(
            "SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE u.email = 'mike@acme.test'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(back, 1);
}

#[test]
fn the_first_start_shows_the_admin_password_apart_and_later_starts_the_way_in() {
    let data = tempfile::tempdir().unwrap();
    let first = spawn_serve(data.path(), &[], 8);
    let said = first.lines.join("\n");
    assert!(
        said.contains("first system admin, shown this once"),
        "{said}"
    );
    assert!(said.contains("  email:    admin@localhost"), "{said}");
    let password = first
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("  password: "))
        .expect("the password line")
        .to_string();
    assert!(said.contains("tenantd admin reset-password --email admin@localhost"));
    drop(first);

    let second = spawn_serve(data.path(), &[], 3);
    let said = second.lines.join("\n");
    assert!(!said.contains(&password), "{said}");
    assert!(
        said.contains("no system admin has logged in yet: `tenantd admin reset-password --email admin@localhost"),
        "{said}"
    );
    let login = request_to(
        second.addr,
        "POST",
        "/api/admin/auth/login",
        &[],
        Some(&json!({"email": "admin@localhost", "password": password})),
    );
    assert_eq!(login.status, 200, "{}", login.text());
    drop(second);

    // Once someone has got in, the hint is no longer needed: the demo's lines come next.
    let third = spawn_serve(data.path(), &["--demo"], 3);
    assert!(third.lines[2].starts_with("demo: "), "{:?}", third.lines);
}

/// A create killed between making the file and inserting the row leaves an orphan: kill -9 of
/// a server with open tenants leaves `-wal` and `-shm` beside it. `tenants gc` removes it with
/// them, and never a file that a row names.
#[test]
fn orphan_tenant_files_are_removed_with_their_wal_and_shm_and_named_ones_never() {
    let data = tempfile::tempdir().unwrap();
    let dir = d(data.path());
    // The demo opens and writes acme and globex; the kill leaves their -wal and -shm.
    drop(spawn_serve(data.path(), &["--demo"], 12));
    let central = rusqlite::Connection::open(data.path().join("central.db")).unwrap();
    central.pragma_update(None, "foreign_keys", true).unwrap();
    let id_of = |slug: &str| -> String {
        central
            .query_row("SELECT id FROM tenants WHERE slug = ?1", [slug], |row| {
                row.get(0)
            })
            .unwrap()
    };
    let (acme, globex) = (id_of("acme"), id_of("globex"));
    let files = |id: &str| -> Vec<bool> {
        ["", "-wal", "-shm"]
            .iter()
            .map(|s| {
                data.path()
                    .join("tenants")
                    .join(format!("{id}.db{s}"))
                    .exists()
            })
            .collect()
    };
    assert_eq!(
        files(&globex),
        [true, true, true],
        "the kill left -wal and -shm"
    );
    assert_eq!(files(&acme), [true, true, true]);
    // A deleted tenant keeps its row: its file is named too.
    ok(tenantd(&["tenants", "delete", "acme", "--data", dir]));
    central
        .execute("DELETE FROM tenants WHERE id = ?1", [&globex])
        .unwrap();

    // Just made: it could be a create in progress in another process, so it stays.
    let out = ok(tenantd(&["tenants", "gc", "--data", dir]));
    assert!(out.contains("left alone"), "{out}");
    assert_eq!(files(&globex), [true, true, true]);
    let status = ok(tenantd(&["migrate", "--status", "--data", dir]));
    assert!(
        status.contains(&format!("orphan file (no catalog row): {globex}.db")),
        "{status}"
    );
    assert!(
        !status.contains(&format!("orphan file (no catalog row): {acme}")),
        "{status}"
    );

    let before = files(&acme);
    assert!(before[0]);
    let out = ok(tenantd(&[
        "tenants",
        "gc",
        "--older-than",
        "0",
        "--data",
        dir,
    ]));
    assert!(out.contains(&format!("removed {globex}.db")), "{out}");
    assert_eq!(files(&globex), [false, false, false]);
    assert_eq!(files(&acme), before, "a named file was touched");
    let status = ok(tenantd(&["migrate", "--status", "--data", dir]));
    assert!(!status.contains("orphan"), "{status}");
    ok(tenantd(&["tenants", "restore", "acme", "--data", dir]));
    let shown = ok(tenantd(&["tenants", "show", "acme", "--data", dir]));
    assert!(shown.contains("active"), "{shown}");
}

/// The age rule, with the clock passed in: an orphan is removed only once it has been left
/// unchanged for `ORPHAN_MIN_AGE`.
#[test]
fn orphans_younger_than_the_minimum_age_are_left_for_a_create_in_progress() {
    use tenantd::tenancy::lifecycle::{orphans, remove_orphans, ORPHAN_MIN_AGE};

    let data = tempfile::tempdir().unwrap();
    init_data_dir(data.path());
    let dir = d(data.path());
    ok(tenantd(&[
        "tenants", "create", "kept", "--name", "Kept", "--data", dir,
    ]));
    ok(tenantd(&[
        "tenants", "create", "lost", "--name", "Lost", "--data", dir,
    ]));
    let central = rusqlite::Connection::open(data.path().join("central.db")).unwrap();
    central.pragma_update(None, "foreign_keys", true).unwrap();
    let lost: String = central
        .query_row("SELECT id FROM tenants WHERE slug = 'lost'", [], |row| {
            row.get(0)
        })
        .unwrap();
    central
        .execute("DELETE FROM tenants WHERE id = ?1", [&lost])
        .unwrap();

    let catalog = tenantd::catalog::Catalog::open(data.path(), tenantd::db::Create::Never).unwrap();
    let now = SystemTime::now();
    assert!(remove_orphans(&catalog, ORPHAN_MIN_AGE, now)
        .unwrap()
        .is_empty());
    let found = orphans(&catalog, ORPHAN_MIN_AGE, now).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].file, format!("{lost}.db"));
    assert!(!found[0].removable);

    let later = now + ORPHAN_MIN_AGE + Duration::from_secs(60);
    let removed = remove_orphans(&catalog, ORPHAN_MIN_AGE, later).unwrap();
    assert_eq!(removed.len(), 1);
    assert!(!data.path().join("tenants").join(&removed[0].file).exists());
    assert!(orphans(&catalog, ORPHAN_MIN_AGE, later).unwrap().is_empty());
    let kept = catalog.by_slug("kept").unwrap().expect("kept");
    assert!(data
        .path()
        .join("tenants")
        .join(format!("{}.db", kept.id))
        .exists());
}

/// A raw request with an exact set of headers (no Content-Type added for us).
fn raw(app: &TestApp, method: &str, path: &str, headers: &[&str], body: &str) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    app.server.request(&req)
}

#[test]
fn json_bodies_need_an_application_json_content_type() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let auth = format!("Authorization: Bearer {}", app.owner_token);
    let order =
        json!({"title": "Desk", "customer_name": "Ada", "amount_minor": 100, "currency": "EUR"})
            .to_string();
    for (content_type, status) in [
        (None, 415),
        (Some("text/plain"), 415),
        (Some("application/jsonx"), 415),
        (Some("application/json-patch+json"), 415),
        (Some("application/json; charset=latin1"), 415),
        (Some("application/json"), 201),
        (Some("application/json; charset=utf-8"), 201),
        (Some("Application/JSON;charset=\"UTF-8\""), 201),
    ] {
        let ct = content_type.map(|c| format!("Content-Type: {c}"));
        let mut headers = vec![auth.as_str()];
        headers.extend(ct.as_deref());
        let reply = raw(&app, "POST", "/t/acme/api/orders", &headers, &order);
        assert_eq!(reply.status, status, "{content_type:?}: {}", reply.text());
        if status == 415 {
            assert_eq!(reply.error_code(), "unsupported_media_type");
        }
    }
    // Central routes too, the login first of all.
    let login = json!({"email": "nobody@x.test", "password": "whatever-1"}).to_string();
    let reply = raw(&app, "POST", "/api/auth/login", &[], &login);
    assert_eq!(reply.status, 415, "{}", reply.text());
    let admin = format!("Authorization: Bearer {}", app.admin_token);
    let tenant = json!({"slug": "initech", "name": "Initech"}).to_string();
    let reply = raw(&app, "POST", "/api/admin/tenants", &[&admin], &tenant);
    assert_eq!(reply.status, 415, "{}", reply.text());
}

#[test]
fn control_characters_follow_one_rule_in_every_text_field() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let token = app.owner_token.clone();
    let order = |extra: serde_json::Value| {
        let mut body = json!({"title": "Desk", "customer_name": "Ada", "amount_minor": 100, "currency": "EUR"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        app.on(&token, "acme", "POST", "/api/orders", Some(body))
    };
    let refused = |reply: Reply, field: &str| {
        assert_eq!(reply.status, 422, "{field}: {}", reply.text());
        assert!(
            reply.json()["error"]["fields"][field].is_string(),
            "{field}: {}",
            reply.text()
        );
    };
    // Single-line text: no control character at all.
    refused(order(json!({"title": "a\u{0}b"})), "title");
    refused(order(json!({"title": "a\tb"})), "title");
    refused(order(json!({"customer_name": "a\nb"})), "customer_name");
    // Multi-line text: tab and line breaks (LF, and CR as in Windows' CR LF), nothing else;
    // NUL no more than in a title.
    refused(order(json!({"notes": "a\u{0}b"})), "notes");
    refused(order(json!({"notes": "\u{1b}[31mred"})), "notes");
    refused(order(json!({"notes": "a\u{8}b"})), "notes");
    let crlf = order(json!({"notes": "line one\r\nline two"}));
    assert_eq!(crlf.status, 201, "{}", crlf.text());
    let made = order(json!({"notes": "line one\n\tline two"}));
    assert_eq!(made.status, 201, "{}", made.text());
    let id = made.json()["id"].as_i64().unwrap();
    let patch = app.on(
        &token,
        "acme",
        "PATCH",
        &format!("/api/orders/{id}"),
        Some(json!({"notes": "bell\u{7}"})),
    );
    refused(patch, "notes");

    let chat = app.on(
        &token,
        "acme",
        "POST",
        "/api/chats",
        Some(json!({"title": "General", "kind": "group", "participant_ids": []})),
    );
    assert_eq!(chat.status, 201, "{}", chat.text());
    let messages = format!("/api/chats/{}/messages", chat.json()["id"]);
    let post = |body: &str| {
        app.on(
            &token,
            "acme",
            "POST",
            &messages,
            Some(json!({"body": body})),
        )
    };
    refused(post("ding\u{7}"), "body");
    refused(post("a\u{0}"), "body");
    refused(post("\u{85}next line"), "body");
    assert_eq!(post("two\nlines\twith a tab").status, 201);
    refused(
        app.on(
            &token,
            "acme",
            "POST",
            "/api/chats",
            Some(json!({"title": "a\u{0}", "kind": "group", "participant_ids": []})),
        ),
        "title",
    );
}

#[test]
fn healthz_answers_get_and_head_and_405_with_allow_otherwise() {
    let app = spawn_app();
    assert_eq!(app.call("GET", "/healthz", &[], None).status, 200);
    let mut head = app.server.connect();
    head.send(b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(head.reply_to("HEAD").status, 200);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let reply = app.call(method, "/healthz", &[], Some("{}"));
        assert_eq!(reply.status, 405, "{method}: {}", reply.text());
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method}");
    }
}

#[test]
fn an_admin_route_on_a_tenant_is_404_whoever_asks() {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    let user = format!("Bearer {}", app.owner_token);
    let admin = format!("Bearer {}", app.admin_token);
    for auth in [None, Some(user.as_str()), Some(admin.as_str())] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let reply = app.call("GET", "/t/acme/api/admin/tenants", &headers, None);
        assert_eq!(
            (reply.status, reply.error_code()),
            (404, "not_found".to_string()),
            "{auth:?}"
        );
    }
}

/// A data directory `serve` started, with one tenant made by the CLI.
fn data_dir_with_initech() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    init_data_dir(data.path());
    ok(tenantd(&[
        "tenants",
        "create",
        "initech",
        "--name",
        "Initech",
        "--data",
        d(data.path()),
    ]));
    data
}

/// `tenantd tenants list | head -1`: a reader that goes away ends the command quietly, as it
/// would end `ls`, instead of a panic about failing to print.
#[test]
fn a_closed_stdout_ends_a_command_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let data = data_dir_with_initech();
    // The read end is closed before the command starts, so its first write meets no reader.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["tenants", "list", "--data", d(data.path())])
        .env("RUST_LOG", "warn")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}

/// Sets a file's times an hour back by its path (no descriptor of a database file opened).
fn an_hour_old(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let then = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let times = [libc::timespec {
        tv_sec: then as libc::time_t,
        tv_nsec: 0,
    }; 2];
    // SAFETY: a NUL-terminated path and two timespecs that live across the call.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat {path:?}");
}

/// A catalog that went missing is made anew by `serve`, empty: every tenant file then has no
/// row. Start must not take that for a crash's leftovers and remove them.
#[test]
fn serve_never_removes_tenant_files_at_start() {
    let data = data_dir_with_initech();
    let tenants = data.path().join("tenants");
    let files: Vec<_> = std::fs::read_dir(&tenants)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    for file in &files {
        an_hour_old(file);
    }
    for name in ["central.db", "central.db-wal", "central.db-shm"] {
        let _ = std::fs::rename(
            data.path().join(name),
            data.path().join(format!("{name}.away")),
        );
    }
    drop(spawn_serve(data.path(), &[], 1));
    for file in &files {
        assert!(file.exists(), "{file:?} was removed at start");
    }
}
