//! Data portability: a company's archive holds exactly its own rows (streamed and as a job), only
//! settings_manage may take it, a person's own export holds their data across companies and
//! nothing of anyone else's, and deleting an account ends its sessions and memberships while
//! what it wrote stays, under "Deleted user".

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read};

use serde_json::{json, Value};
use tenantd::api::jobs;

use crate::support::*;

fn chat(app: &TestApp, token: &str, slug: &str, title: &str, others: &[i64]) -> i64 {
    let body = json!({"title": title, "kind": "group", "participant_ids": others});
    let reply = app.on(token, slug, "POST", "/api/chats", Some(body));
    expect(&reply, 201, "create chat");
    int(&reply.json()["id"])
}

fn say(app: &TestApp, token: &str, slug: &str, chat: i64, body: &str) -> i64 {
    let path = format!("/api/chats/{chat}/messages");
    let reply = app.on(token, slug, "POST", &path, Some(json!({ "body": body })));
    expect(&reply, 201, "post message");
    int(&reply.json()["id"])
}

fn order(app: &TestApp, token: &str, slug: &str, customer: &str) -> i64 {
    let body = json!({"title": format!("order for {customer}"), "customer_name": customer,
                      "amount_minor": 4200, "currency": "EUR"});
    let reply = app.on(token, slug, "POST", "/api/orders", Some(body));
    expect(&reply, 201, "create order");
    int(&reply.json()["id"])
}

/// A company with a member, a chat, messages and an order, every text carrying `marker`.
/// Returns the tenant id and the member's email.
fn seed(app: &TestApp, slug: &str, marker: &str) -> (String, String) {
    let tenant = app.create_tenant(slug, &[]);
    let email = format!("{marker}-member@example.test").to_lowercase();
    let (member_id, _) = app.member(&email, slug, "agent");
    let owner = app.owner_token.clone();
    let c = chat(app, &owner, slug, &format!("{marker} chat"), &[member_id]);
    say(app, &owner, slug, c, &format!("{marker} first message"));
    say(app, &owner, slug, c, &format!("{marker} second message"));
    order(app, &owner, slug, &format!("{marker} customer"));
    (id(&tenant), email)
}

/// Every entry of a zip, by name, decompressed.
pub(crate) fn unzip(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("a zip archive");
    let mut out = BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        out.insert(entry.name().unwrap().to_string(), text);
    }
    out
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The tenant file's tables and their row counts, read beside the server.
fn file_tables(app: &TestApp, tenant_id: &str) -> BTreeMap<String, u64> {
    let conn = rusqlite::Connection::open(app.tenant_file(tenant_id)).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|name| {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM \"{name}\""), [], |r| {
                    r.get(0)
                })
                .unwrap();
            (name, n as u64)
        })
        .collect()
}

/// The tables of the tenant's file with a time column for people (TEXT, `at` or `*_at`).
fn time_tables(app: &TestApp, tenant_id: &str) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(app.tenant_file(tenant_id)).unwrap();
    let names: Vec<String> = conn
        .prepare(
            "SELECT DISTINCT m.name FROM sqlite_schema m, pragma_table_info(m.name) c
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND c.type = 'TEXT'
               AND (c.name = 'at' OR c.name LIKE '%\\_at' ESCAPE '\\')",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names.into_iter().collect()
}

#[test]
fn times_in_the_archive_follow_the_companys_settings_beside_the_raw_ones() {
    let app = spawn_app();
    let (acme, _) = seed(&app, "acmex", "AcmeMarker7f3");
    let (globex, _) = seed(&app, "globexq", "GlobexMarker9q2");
    let owner = app.owner_token.clone();
    for (slug, settings) in [
        (
            "acmex",
            json!({"timezone": "America/New_York", "date_format": "mdy", "locale": "en-US"}),
        ),
        (
            "globexq",
            json!({"timezone": "Asia/Tokyo", "date_format": "dmy"}),
        ),
    ] {
        let reply = app.on(&owner, slug, "PATCH", "/api/settings", Some(settings));
        expect(&reply, 200, "settings");
    }

    let reply = app.get("/t/acmex/api/export", &[]);
    expect(&reply, 200, "export");
    let entries = unzip(&reply.body);
    let manifest: Value = serde_json::from_str(&entries["manifest.json"]).unwrap();
    assert_eq!(manifest["timezone"], "America/New_York");
    assert_eq!(manifest["date_format"], "mdy");
    assert_eq!(manifest["locale"], "en-US");

    // The table keeps exactly its columns and raw values; local/ has the same rows' times
    // as a New Yorker writing month/day/year reads them.
    let conn = rusqlite::Connection::open(app.tenant_file(&acme)).unwrap();
    let columns: BTreeSet<String> = conn
        .prepare("SELECT name FROM pragma_table_info('messages')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let raw = lines(&entries["tables/messages.jsonl"]);
    let local = lines(&entries["local/messages.jsonl"]);
    assert_eq!(raw.len(), 2);
    assert_eq!(local.len(), raw.len());
    for row in &raw {
        let keys: BTreeSet<String> = row.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys, columns,
            "a table's rows are its columns, nothing more"
        );
        let created = row["created_at"].as_str().unwrap();
        let expected = chrono::DateTime::parse_from_rfc3339(created)
            .unwrap()
            .with_timezone(&chrono_tz::America::New_York)
            .format("%m/%d/%Y %H:%M:%S %Z")
            .to_string();
        let shown = local.iter().find(|l| l["id"] == row["id"]).unwrap();
        assert_eq!(shown["created_at"], json!(expected), "{row}");
        assert!(
            expected.ends_with(" EST") || expected.ends_with(" EDT"),
            "{expected}"
        );
        assert_eq!(shown["edited_at"], Value::Null, "no time, none shown");
        assert!(shown.get("body").is_none(), "only keys and times: {shown}");
    }
    // A table keyed by two columns (no id) is keyed the same way in local/.
    let participants = lines(&entries["local/chat_participants.jsonl"]);
    assert!(participants
        .iter()
        .all(|p| p["chat_id"].is_i64() && p["user_id"].is_i64() && p["joined_at"].is_string()));
    assert!(
        !entries["local/messages.jsonl"].contains("JST")
            && !entries.values().any(|e| e.contains(&globex)),
        "globex's settings and rows stay out of acme's archive"
    );
    let theirs = unzip(&app.get("/t/globexq/api/export", &[]).body);
    let manifest: Value = serde_json::from_str(&theirs["manifest.json"]).unwrap();
    assert_eq!(manifest["timezone"], "Asia/Tokyo");
    assert!(theirs["local/messages.jsonl"].contains(" JST\""));
    assert_eq!(manifest["locale"], "en-GB", "the default locale");
}

#[test]
fn the_archive_holds_exactly_its_companys_rows_and_nothing_of_another() {
    let app = spawn_app();
    let (acme, acme_email) = seed(&app, "acmex", "AcmeMarker7f3");
    let (globex, globex_email) = seed(&app, "globexq", "GlobexMarker9q2");

    let reply = app.get("/t/acmex/api/export", &[]);
    expect(&reply, 200, "export");
    assert_eq!(reply.header("content-type"), Some("application/zip"));
    assert_eq!(
        reply.header("transfer-encoding"),
        Some("chunked"),
        "streamed"
    );
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    assert_eq!(
        reply.header("content-disposition"),
        Some(format!("attachment; filename=\"acmex-{today}.zip\"").as_str())
    );
    let entries = unzip(&reply.body);

    let tables = file_tables(&app, &acme);
    assert!(
        tables["messages"] >= 2 && tables["orders"] >= 1,
        "{tables:?}"
    );
    let mut expected: BTreeSet<String> = [
        "README.md",
        "schema.sql",
        "manifest.json",
        "catalog/tenant.json",
        "catalog/domains.jsonl",
        "catalog/members.jsonl",
        "catalog/roles.jsonl",
        "catalog/audit.jsonl",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.extend(tables.keys().map(|t| format!("tables/{t}.jsonl")));
    expected.extend(
        time_tables(&app, &acme)
            .iter()
            .map(|t| format!("local/{t}.jsonl")),
    );
    assert_eq!(entries.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (table, rows) in &tables {
        let got = lines(&entries[&format!("tables/{table}.jsonl")]);
        assert_eq!(got.len() as u64, *rows, "rows of {table}");
    }
    let manifest: Value = serde_json::from_str(&entries["manifest.json"]).unwrap();
    assert_eq!(manifest["tenant_id"], json!(acme));
    assert_eq!(manifest["tables"]["messages"], json!(tables["messages"]));

    // Values as the file holds them, column names as keys.
    let conn = rusqlite::Connection::open(app.tenant_file(&acme)).unwrap();
    let (id, body, created_at): (i64, String, String) = conn
        .query_row(
            "SELECT id, body, created_at FROM messages ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let messages = lines(&entries["tables/messages.jsonl"]);
    let first = messages.iter().find(|m| m["id"] == json!(id)).unwrap();
    assert_eq!(first["body"], json!(body));
    assert_eq!(first["created_at"], json!(created_at));
    assert!(entries["schema.sql"].contains("CREATE TABLE messages"));

    let tenant: Value = serde_json::from_str(&entries["catalog/tenant.json"]).unwrap();
    assert_eq!(tenant["slug"], "acmex");
    let members = lines(&entries["catalog/members.jsonl"]);
    let member = members
        .iter()
        .find(|m| m["user"]["email"] == json!(acme_email))
        .expect("the member is listed");
    assert_eq!(member["role"], "agent");
    assert!(!entries["catalog/members.jsonl"].contains("password"));
    let roles = lines(&entries["catalog/roles.jsonl"]);
    assert!(roles.iter().any(|r| r["name"] == "viewer"));
    let audit = lines(&entries["catalog/audit.jsonl"]);
    assert!(!audit.is_empty());
    assert!(audit.iter().all(|e| e["tenant_id"] == json!(acme)));

    // Nothing of the other company anywhere: its texts, id, member, slug.
    let everything: String = entries.values().cloned().collect();
    assert!(everything.contains("AcmeMarker7f3"));
    for foreign in [
        "GlobexMarker9q2",
        globex.as_str(),
        globex_email.as_str(),
        "globexq",
    ] {
        assert!(
            !everything.contains(foreign),
            "{foreign} is in acme's archive"
        );
    }
}

#[test]
fn only_settings_manage_may_export() {
    let app = spawn_app();
    app.create_tenant("acmex", &[]);
    let (_, viewer) = app.member("viewer@example.test", "acmex", "viewer");
    let (_, manager) = app.member("manager@example.test", "acmex", "manager");
    for token in [&viewer, &manager] {
        for (method, path) in [
            ("GET", "/api/export"),
            ("POST", "/api/exports"),
            ("GET", "/api/exports"),
            ("GET", "/api/exports/1/download"),
        ] {
            let reply = app.on(token, "acmex", method, path, None);
            expect_error(&reply, 403, "forbidden", &format!("{method} {path}"));
        }
    }
    let role = app.create_role("acmex", "settings", &["settings_manage"]);
    assert!(role > 0);
    let id = app.user("settings@example.test", "member-password-1");
    app.join(id, "acmex", "settings");
    let token = app.token("settings@example.test", "member-password-1");
    expect(
        &app.on(&token, "acmex", "GET", "/api/export", None),
        200,
        "with settings_manage",
    );
    // A HEAD exports nothing, so it is not audited as an export.
    assert_eq!(head_export(&app, &token), 200);
    let audit = app.on(
        &app.owner_token.clone(),
        "acmex",
        "GET",
        "/api/audit?action=tenant.exported",
        None,
    );
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{}", audit.text());
    assert_eq!(entries[0]["actor_email"], "settings@example.test");
}

/// Asks `client` for the company's export, as the bearer of `token`.
pub(crate) fn send_export(client: &mut Client, method: &str, slug: &str, token: &str) {
    let auth = format!("Bearer {token}");
    let path = format!("/t/{slug}/api/export");
    let request = raw_request(method, &path, &[("Authorization", auth.as_str())], None);
    client.send(request.as_bytes());
}

/// The status of a HEAD of acmex's export: the answer's head, its stream dropped unread.
fn head_export(app: &TestApp, token: &str) -> u16 {
    let mut client = app.server.connect();
    send_export(&mut client, "HEAD", "acmex", token);
    client.reply_to("HEAD").status
}

pub(crate) fn run_jobs(app: &TestApp) {
    let mut runner = None;
    while jobs::run_next(
        &app.app,
        "exports",
        "serve:test",
        &mut runner,
        jobs::now_ms(),
    )
    .unwrap()
    {}
}

#[test]
fn an_export_job_is_downloadable_once_ready_and_only_by_its_company() {
    let app = spawn_app();
    let (acme, _) = seed(&app, "acmex", "AcmeMarker7f3");
    let (_, _) = seed(&app, "globexq", "GlobexMarker9q2");
    let owner = app.owner_token.clone();
    // Admin of globexq only.
    let (_, globex_admin) = app.member("gadmin@example.test", "globexq", "admin");

    let reply = app.on(&owner, "acmex", "POST", "/api/exports", None);
    expect(&reply, 202, "request an export");
    assert_eq!(reply.json()["status"], "pending");
    let export = int(&reply.json()["id"]);
    let download = format!("/api/exports/{export}/download");
    expect_error(
        &app.on(&owner, "acmex", "GET", &download, None),
        409,
        "export_not_ready",
        "before the job ran",
    );

    run_jobs(&app);
    let file = app
        .data
        .path()
        .join("exports")
        .join(&acme)
        .join(format!("{export}.zip"));
    assert!(file.exists(), "{} written", file.display());
    let listed = app.on(&owner, "acmex", "GET", "/api/exports", None).json();
    let shown = &listed["exports"][0];
    assert_eq!(
        (int(&shown["id"]), shown["status"].as_str()),
        (export, Some("ready"))
    );
    assert_eq!(
        shown["bytes"],
        json!(std::fs::metadata(&file).unwrap().len())
    );

    let reply = app.on(&owner, "acmex", "GET", &download, None);
    expect(&reply, 200, "download");
    let entries = unzip(&reply.body);
    let manifest: Value = serde_json::from_str(&entries["manifest.json"]).unwrap();
    assert_eq!(manifest["tenant_id"], json!(acme));
    assert!(entries["tables/messages.jsonl"].contains("AcmeMarker7f3"));
    assert!(!entries.values().any(|t| t.contains("GlobexMarker9q2")));

    // Another company's admin, and the owner through the other company: not found, not listed.
    for token in [&globex_admin, &owner] {
        let reply = app.on(token, "globexq", "GET", &download, None);
        expect_error(&reply, 404, "not_found", "acme's export from globex");
        let listed = app.on(token, "globexq", "GET", "/api/exports", None).json();
        assert_eq!(listed["exports"], json!([]), "globex lists acme's export");
    }
}

#[test]
fn my_export_holds_my_messages_and_orders_across_companies_and_nothing_of_others() {
    let app = spawn_app();
    app.create_tenant("acmex", &[]);
    app.create_tenant("globexq", &[]);
    app.create_tenant("initechz", &[]);
    let (pat, pat_token) = app.member("pat@example.test", "acmex", "agent");
    app.join(pat, "globexq", "agent");
    let (other, other_token) = app.member("other@example.test", "acmex", "agent");
    app.join(other, "initechz", "agent");
    let a = chat(&app, &pat_token, "acmex", "pat in acme", &[other]);
    say(&app, &pat_token, "acmex", a, "PatSaysInAcme");
    say(&app, &other_token, "acmex", a, "OtherSaysInAcme");
    let g = chat(&app, &pat_token, "globexq", "pat in globex", &[]);
    say(&app, &pat_token, "globexq", g, "PatSaysInGlobex");
    order(&app, &pat_token, "acmex", "PatsCustomer");
    order(&app, &other_token, "acmex", "OthersCustomer");
    let i = chat(&app, &other_token, "initechz", "other alone", &[]);
    say(&app, &other_token, "initechz", i, "OtherSaysInInitech");

    let reply = app.as_bearer(&pat_token, "GET", "/api/me/export", &[], None);
    expect(&reply, 200, "my export");
    let body = reply.json();
    assert_eq!(body["account"]["email"], "pat@example.test");
    let slugs: BTreeSet<&str> = body["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, BTreeSet::from(["acmex", "globexq"]));
    assert!(body["memberships"][0]["role"] == "agent");
    let text = reply.text();
    for mine in ["PatSaysInAcme", "PatSaysInGlobex", "PatsCustomer"] {
        assert!(text.contains(mine), "{mine} missing");
    }
    for theirs in [
        "OtherSaysInAcme",
        "OthersCustomer",
        "OtherSaysInInitech",
        "initechz",
        "password",
    ] {
        assert!(!text.contains(theirs), "{theirs} is in pat's export");
    }
}

#[test]
fn deleting_my_account_ends_its_credentials_and_memberships_and_keeps_what_it_wrote() {
    let app = spawn_app();
    app.create_tenant("acmex", &[]);
    app.create_tenant("globexq", &[]);
    let (pat, pat_token) = app.member("pat@example.test", "acmex", "agent");
    app.join(pat, "globexq", "viewer");
    let owner = app.owner_token.clone();
    let c = chat(&app, &owner, "acmex", "with pat", &[pat]);
    let said = say(&app, &pat_token, "acmex", c, "PatWasHere");
    let (_, personal) = app.personal_token(&pat_token, "script", "acmex");

    let wrong = app.as_bearer(
        &pat_token,
        "DELETE",
        "/api/me",
        &[],
        Some(json!({"password": "not-the-password"})),
    );
    expect_error(&wrong, 422, "validation_failed", "wrong password");
    expect(
        &app.as_bearer(&pat_token, "GET", "/api/me", &[], None),
        200,
        "still signed in",
    );

    let reply = app.as_bearer(
        &pat_token,
        "DELETE",
        "/api/me",
        &[],
        Some(json!({"password": "member-password-1"})),
    );
    expect(&reply, 200, "delete my account");
    assert_eq!(reply.json()["memberships_ended"], 2);
    let live: i64 = app
        .central_db()
        .query_row(
            "SELECT count(*) FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL",
            [pat],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(live, 0, "sessions and tokens left unrevoked");

    for token in [&pat_token, &personal] {
        let reply = app.as_bearer(token, "GET", "/api/me", &[], None);
        assert_eq!(reply.status, 401, "an old credential still works");
    }
    assert_eq!(
        app.login("pat@example.test", "member-password-1").status,
        401
    );
    let members = app.on(&owner, "acmex", "GET", "/api/members", None).json();
    assert!(!members.to_string().contains("pat@example.test"));
    assert!(app.app.catalog.memberships_of(pat).unwrap().is_empty());

    // The message stays, by the same user id, whose name is now "Deleted user".
    let path = format!("/api/chats/{c}/messages");
    let messages = app.on(&owner, "acmex", "GET", &path, None).json();
    let kept = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| int(&m["id"]) == said)
        .expect("the message is kept")
        .clone();
    assert_eq!(
        (kept["body"].as_str(), int(&kept["user_id"])),
        (Some("PatWasHere"), pat)
    );
    let user = app
        .app
        .catalog
        .user_by_id(pat)
        .unwrap()
        .expect("the row stays");
    assert_eq!(format!("{} {}", user.name, user.surname), "Deleted user");
    assert!(user.disabled && !user.email.contains("pat"));

    let audit = app.on(
        &owner,
        "acmex",
        "GET",
        "/api/audit?action=account.deleted",
        None,
    );
    expect(&audit, 200, "audit");
    assert!(!audit.text().contains("pat@example.test"));
    assert_eq!(
        audit.json()["entries"].as_array().map(Vec::len),
        Some(1),
        "{}",
        audit.text()
    );
}

#[test]
fn the_last_admin_of_a_company_cannot_delete_their_account() {
    let app = spawn_app();
    app.create_tenant("acmex", &[]);
    let owner = app.owner_token.clone();
    let delete = |token: &str| {
        app.as_bearer(
            token,
            "DELETE",
            "/api/me",
            &[],
            Some(json!({"password": OWNER_PASSWORD})),
        )
    };
    let refused = delete(&owner);
    expect_error(&refused, 409, "last_admin", "the last admin");
    assert!(refused.text().contains("acmex"));
    expect(
        &app.as_bearer(&owner, "GET", "/api/me", &[], None),
        200,
        "still there",
    );

    app.member("second@example.test", "acmex", "admin");
    expect(&delete(&owner), 200, "with another admin");

    // System admins are not users: their accounts are not ended here.
    let admin = app.admin("DELETE", "/api/me", Some(json!({"password": "x"})));
    expect_error(&admin, 403, "forbidden", "a system admin");
}

/// A company whose archive is far larger than the socket buffers hold: bodies that do not
/// compress.
pub(crate) fn big_company(app: &TestApp, slug: &str) -> String {
    let (acme, _) = seed(app, slug, &format!("{slug}Marker7f3"));
    let conn = rusqlite::Connection::open(app.tenant_file(&acme)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
         INSERT INTO messages (chat_id, user_id, body, created_at)
         SELECT (SELECT min(id) FROM chats), 1, hex(randomblob(480)), '2026-01-01T00:00:00.000Z'
         FROM n",
        [],
    )
    .unwrap();
    acme
}

/// An export whose client reads its head and then nothing more: the stream waits for room.
/// The client's receive buffer is kept small (the kernel would otherwise grow it to tens of
/// MiB on loopback), so what the server can have sent is bounded by its own send buffer
/// (4 MiB at most), far below the archive: the stream stalls whatever the machine's speed.
pub(crate) fn stalled_export(app: &TestApp, slug: &str) -> Client {
    let stream = std::net::TcpStream::connect(app.server.addr).unwrap();
    let size: libc::c_int = 64 * 1024;
    // SAFETY: a valid socket and an int option of the size given.
    let set = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_RCVBUF");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut client = Client::from_stream(stream);
    send_export(&mut client, "GET", slug, &app.owner_token);
    let head = client.head();
    assert_eq!(head.status, 200, "a stalled export starts");
    client
}

/// Whether the company's pool can be closed (within a minute): nothing holds it any more.
pub(crate) fn let_go(app: &TestApp, tenant: &str) -> bool {
    eventually(std::time::Duration::from_secs(60), || {
        app.app.registry.evict(tenant).is_ok()
    })
}

/// The I/O timeout is set far beyond any wait here, so only a client leaving ends a stream.
pub(crate) fn app_for_streams() -> TestApp {
    spawn_app_full(
        |config| {
            // Two connections: streams that took them from the pool would leave none.
            config.registry.pool_max_size = 2;
            config.registry.connection_timeout = std::time::Duration::from_secs(1);
        },
        |http| http.io_timeout = std::time::Duration::from_secs(600),
    )
}

/// A client that goes away mid-download ends the archive: the stream stops writing, its read
/// transaction and connection go, and nothing holds the company's pool any more.
#[test]
fn a_client_leaving_mid_download_ends_the_export() {
    let app = app_for_streams();
    let acme = big_company(&app, "acmex");
    let client = stalled_export(&app, "acmex");
    assert!(
        app.app.registry.evict(&acme).is_err(),
        "the export in flight holds the company"
    );
    drop(client);
    assert!(
        let_go(&app, &acme),
        "the export went on after its client left"
    );
    let reply = app.get("/t/acmex/api/chats", &[]);
    expect(&reply, 200, "the company after it");
}

/// Slow downloads take no connection from the company's pool, and at most two stream at once
/// on the server (each holds a worker thread): a third is 429 until one ends.
#[test]
fn streamed_exports_are_few_at_once_and_keep_no_pool_connection() {
    let app = app_for_streams();
    big_company(&app, "acmex");
    big_company(&app, "globexq");
    let first = stalled_export(&app, "acmex");
    let second = stalled_export(&app, "globexq");
    for path in [
        "/t/acmex/api/chats",
        "/t/acmex/api/orders",
        "/t/acmex/api/tenant",
    ] {
        expect(&app.get(path, &[]), 200, path);
    }
    let third = app.get("/t/acmex/api/export", &[]);
    expect_error(&third, 429, "too_many_requests", "a third stream");
    assert!(third.header("retry-after").is_some());
    drop(first);
    let owner = app.owner_token.clone();
    assert!(
        eventually(std::time::Duration::from_secs(60), || head_export(
            &app, &owner
        ) == 200),
        "a place is free again once a stream ended"
    );
    drop(second);
}

/// `tenantd export` beside the running server: the same archive in a file (through FILE.tmp,
/// none left behind), audited; an unknown company exits 1 and writes nothing.
#[test]
fn the_command_line_writes_the_archive_to_a_file() {
    let app = spawn_app();
    let (acme, _) = seed(&app, "acmex", "AcmeMarker7f3");
    seed(&app, "globexq", "GlobexMarker9q2");
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("acme.zip");
    let run = app.cli(&["export", "acmex", "--to", file.to_str().unwrap(), "--json"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let said: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(said["manifest"]["tenant_id"], json!(acme));
    let entries = unzip(&std::fs::read(&file).unwrap());
    assert!(entries["tables/messages.jsonl"].contains("AcmeMarker7f3"));
    assert!(!entries.values().any(|t| t.contains("GlobexMarker9q2")));
    let names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["acme.zip"], "only the archive is left");
    let audit = app.on(
        &app.owner_token.clone(),
        "acmex",
        "GET",
        "/api/audit?action=tenant.exported",
        None,
    );
    assert!(audit.text().contains("\"via\":\"cli\""), "{}", audit.text());

    let missing = out.path().join("nope.zip");
    let run = app.cli(&["export", "nosuchco", "--to", missing.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    assert!(!missing.exists());
}

/// The tables are one snapshot: a message and an order written while the archive is being sent
/// (after its first piece arrived, so after its read transaction began; orders are read after
/// the long messages table) are not in it, and the tables have the rows they had before.
#[test]
fn the_archive_is_one_snapshot_while_writes_go_on() {
    let app = app_for_streams();
    let acme = big_company(&app, "acmex");
    let before = file_tables(&app, &acme);
    let chat_id: i64 = rusqlite::Connection::open(app.tenant_file(&acme))
        .unwrap()
        .query_row("SELECT min(id) FROM chats", [], |r| r.get(0))
        .unwrap();
    let mut client = stalled_export(&app, "acmex");
    let owner = app.owner_token.clone();
    let mut written = false;
    let body = client.chunked_body(|_| {
        if !written {
            written = true;
            say(&app, &owner, "acmex", chat_id, "WrittenMidExport");
            order(&app, &owner, "acmex", "OrderedMidExport");
        }
    });
    assert!(written);
    let after = file_tables(&app, &acme);
    assert_eq!(
        after["messages"],
        before["messages"] + 1,
        "the message landed"
    );
    assert_eq!(after["orders"], before["orders"] + 1, "the order landed");
    let entries = unzip(&body);
    for (table, marker) in [
        ("messages", "WrittenMidExport"),
        ("orders", "OrderedMidExport"),
    ] {
        let text = &entries[&format!("tables/{table}.jsonl")];
        assert_eq!(lines(text).len() as u64, before[table], "rows of {table}");
        assert!(!text.contains(marker), "{marker} is in the archive");
    }
}
