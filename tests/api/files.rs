//! Files: uploads to orders and chats read as they arrive, stored by content hash under the
//! tenant's own directory, downloads (ranges, attachment, nosniff) only for who may see the
//! order or message, per tenant; the plan's size and storage limits; removal of the bytes with
//! their last reference; a 200 MB upload through a real `tenantd serve` with its memory flat.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{expect, expect_error, spawn_app, Client, Reply, TestApp};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Some bytes that differ by `seed`.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// An upload: `bytes` as the body of `POST /t/{slug}{path}`.
fn upload(app: &TestApp, token: &str, slug: &str, path: &str, ty: &str, bytes: &[u8]) -> Reply {
    let mut c = app.server.connect();
    let head = format!(
        "POST /t/{slug}{path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {ty}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        bytes.len()
    );
    c.send(head.as_bytes());
    // The server may answer (a refusal) before taking the body.
    c.try_send(bytes);
    c.reply()
}

fn get(app: &TestApp, token: &str, slug: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    app.as_bearer(token, "GET", &format!("/t/{slug}{path}"), headers, None)
}

fn new_order(app: &TestApp, token: &str, slug: &str) -> i64 {
    let made = app.on(
        token,
        slug,
        "POST",
        "/api/orders",
        Some(json!({"title": "Boxes", "customer_name": "Ada", "amount_minor": 100})),
    );
    expect(&made, 201, "an order");
    made.json()["id"].as_i64().unwrap()
}

fn new_chat(app: &TestApp, token: &str, slug: &str, participants: &[i64]) -> i64 {
    let made = app.on(
        token,
        slug,
        "POST",
        "/api/chats",
        Some(json!({"title": "Team", "kind": "group", "participant_ids": participants})),
    );
    expect(&made, 201, "a chat");
    made.json()["id"].as_i64().unwrap()
}

fn tenant_dir(app: &TestApp, slug: &str) -> PathBuf {
    let id = app.app.catalog.by_slug(slug).unwrap().unwrap().id.clone();
    app.data.path().join("tenants").join(id)
}

fn blob(app: &TestApp, slug: &str, sha: &str) -> PathBuf {
    tenant_dir(app, slug)
        .join("files")
        .join(&sha[..2])
        .join(sha)
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn two_companies() -> TestApp {
    let app = spawn_app();
    app.create_tenant("acme", &[]);
    app.create_tenant("globex", &[]);
    app
}

#[test]
fn an_order_file_is_stored_by_its_hash_and_downloaded_whole_or_in_ranges() {
    let app = two_companies();
    let token = app.owner_token.clone();
    let order = new_order(&app, &token, "acme");
    let bytes = content(100_000, 7);
    let sha = sha256(&bytes);
    let up = upload(
        &app,
        &token,
        "acme",
        &format!("/api/orders/{order}/files?name=..%2F..%2Fetc%2Fpasswd"),
        "text/html; charset=utf-8",
        &bytes,
    );
    expect(&up, 201, "upload");
    let file = up.json();
    assert_eq!(file["sha256"], sha);
    assert_eq!(file["size"], 100_000);
    assert_eq!(file["order_id"], order);
    // The name keeps no path; nothing on the disk is named after it.
    assert_eq!(file["name"], "passwd");
    assert_eq!(file["content_type"], "text/html");
    assert_eq!(std::fs::read(blob(&app, "acme", &sha)).unwrap(), bytes);
    let on_disk = files_under(app.data.path());
    assert!(
        !on_disk
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "passwd")),
        "{on_disk:?}"
    );
    assert!(
        files_under(&tenant_dir(&app, "acme").join("files").join("tmp")).is_empty(),
        "nothing left behind in tmp"
    );

    let id = file["id"].as_i64().unwrap();
    let listed = get(
        &app,
        &token,
        "acme",
        &format!("/api/orders/{order}/files"),
        &[],
    );
    expect(&listed, 200, "the order's files");
    assert_eq!(listed.json()["files"][0]["id"], id);

    let whole = get(
        &app,
        &token,
        "acme",
        &format!("/api/files/{id}/download"),
        &[],
    );
    expect(&whole, 200, "download");
    assert_eq!(whole.body, bytes);
    assert_eq!(whole.header("content-type"), Some("text/html"));
    assert_eq!(whole.header("x-content-type-options"), Some("nosniff"));
    assert!(whole
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment; filename=\"passwd\""));
    assert!(whole
        .header("content-security-policy")
        .unwrap()
        .contains("sandbox"));
    let etag = whole.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{sha}\""));

    let part = get(
        &app,
        &token,
        "acme",
        &format!("/api/files/{id}/download"),
        &[("Range", "bytes=1000-1999")],
    );
    expect(&part, 206, "a range");
    assert_eq!(part.body, &bytes[1000..2000]);
    assert_eq!(part.header("content-range"), Some("bytes 1000-1999/100000"));
    let tail = get(
        &app,
        &token,
        "acme",
        &format!("/api/files/{id}/download"),
        &[("Range", "bytes=-10")],
    );
    assert_eq!((tail.status, &tail.body[..]), (206, &bytes[99_990..]));
    let outside = get(
        &app,
        &token,
        "acme",
        &format!("/api/files/{id}/download"),
        &[("Range", "bytes=100000-")],
    );
    expect(&outside, 416, "past the end");
    assert_eq!(outside.header("content-range"), Some("bytes */100000"));
    // A range of a version the client no longer has: the whole file.
    let stale = get(
        &app,
        &token,
        "acme",
        &format!("/api/files/{id}/download"),
        &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")],
    );
    assert_eq!((stale.status, stale.body.len()), (200, 100_000));
    let cached = get(
        &app,
        &token,
        "acme",
        &format!("/api/files/{id}/download"),
        &[("If-None-Match", &etag)],
    );
    assert_eq!((cached.status, cached.body.len()), (304, 0));

    let details = get(&app, &token, "acme", &format!("/api/files/{id}"), &[]);
    assert_eq!(details.json()["sha256"], sha);
}

#[test]
fn an_empty_file_is_a_file() {
    let app = two_companies();
    let token = app.owner_token.clone();
    let order = new_order(&app, &token, "acme");
    let up = upload(
        &app,
        &token,
        "acme",
        &format!("/api/orders/{order}/files?name=empty.txt"),
        "text/plain",
        b"",
    );
    expect(&up, 201, "an empty file");
    assert_eq!(up.json()["sha256"], sha256(b""));
    let id = up.json()["id"].as_i64().unwrap();
    let got = get(
        &app,
        &token,
        "acme",
        &format!("/api/files/{id}/download"),
        &[],
    );
    assert_eq!((got.status, got.body.len()), (200, 0));
}

#[test]
fn a_file_in_a_chat_is_a_message_seen_only_by_who_sees_the_chat() {
    let app = two_companies();
    let token = app.owner_token.clone();
    let (inside_id, inside) = app.member("inside@acme.test", "acme", "agent");
    let (_, outside) = app.member("outside@acme.test", "acme", "agent");
    let chat = new_chat(&app, &token, "acme", &[inside_id]);
    let bytes = content(5000, 1);
    let up = upload(
        &app,
        &inside,
        "acme",
        &format!("/api/chats/{chat}/files?name=plan.pdf&caption=the%20plan"),
        "application/pdf",
        &bytes,
    );
    expect(&up, 201, "a participant posts a file");
    let message = up.json();
    assert_eq!(message["body"], "the plan");
    let id = message["files"][0]["id"].as_i64().unwrap();
    let page = get(
        &app,
        &token,
        "acme",
        &format!("/api/chats/{chat}/messages"),
        &[],
    );
    let listed = &page.json()["messages"][0];
    assert_eq!(listed["files"][0]["name"], "plan.pdf", "{listed}");

    let download = format!("/api/files/{id}/download");
    assert_eq!(get(&app, &inside, "acme", &download, &[]).body, bytes);
    // An agent outside the chat cannot tell the file exists.
    expect_error(
        &get(&app, &outside, "acme", &download, &[]),
        404,
        "not_found",
        "not a participant",
    );
    expect_error(
        &upload(
            &app,
            &outside,
            "acme",
            &format!("/api/chats/{chat}/files?name=x.txt"),
            "text/plain",
            b"x",
        ),
        404,
        "not_found",
        "no upload into a chat one cannot see",
    );
    // The author deletes the message: its file goes with it.
    let sha = message["files"][0]["sha256"].as_str().unwrap().to_string();
    let mid = message["id"].as_i64().unwrap();
    let deleted = app.on(
        &inside,
        "acme",
        "DELETE",
        &format!("/api/chats/{chat}/messages/{mid}"),
        None,
    );
    assert!(deleted.status < 300, "{}", deleted.text());
    expect(&get(&app, &inside, "acme", &download, &[]), 404, "gone");
    assert!(!blob(&app, "acme", &sha).exists());
}

#[test]
fn files_are_reached_only_through_their_own_tenant_and_scope() {
    let app = two_companies();
    let token = app.owner_token.clone();
    let order = new_order(&app, &token, "acme");
    let bytes = content(2000, 3);
    let up = upload(
        &app,
        &token,
        "acme",
        &format!("/api/orders/{order}/files?name=a.bin"),
        "application/octet-stream",
        &bytes,
    );
    expect(&up, 201, "upload");
    let id = up.json()["id"].as_i64().unwrap();
    // Through globex, the same id is globex's (it has none): not found.
    expect(
        &get(
            &app,
            &token,
            "globex",
            &format!("/api/files/{id}/download"),
            &[],
        ),
        404,
        "another tenant's id space",
    );
    // A member of globex only is not a member of acme.
    let (_, globex_only) = app.member("g@globex.test", "globex", "admin");
    let refused = get(
        &app,
        &globex_only,
        "acme",
        &format!("/api/files/{id}/download"),
        &[],
    );
    assert_eq!(refused.status, 403, "{}", refused.text());
    // The same content uploaded in globex is stored in globex's own directory.
    let globex_order = new_order(&app, &token, "globex");
    let again = upload(
        &app,
        &token,
        "globex",
        &format!("/api/orders/{globex_order}/files?name=a.bin"),
        "application/octet-stream",
        &bytes,
    );
    expect(&again, 201, "globex upload");
    let sha = sha256(&bytes);
    assert!(blob(&app, "acme", &sha).exists() && blob(&app, "globex", &sha).exists());
    // An agent who sees only their own orders cannot see the file of one they have no part in.
    let (_, agent) = app.member("agent@acme.test", "acme", "agent");
    expect_error(
        &get(
            &app,
            &agent,
            "acme",
            &format!("/api/files/{id}/download"),
            &[],
        ),
        404,
        "not_found",
        "out of scope",
    );
    expect(
        &get(
            &app,
            &agent,
            "acme",
            &format!("/api/orders/{order}/files"),
            &[],
        ),
        404,
        "nor list its files",
    );
    // Bad input: a missing name, a broken type, a traversal that leaves no name.
    for (path, ty) in [
        (format!("/api/orders/{order}/files"), "text/plain"),
        (
            format!("/api/orders/{order}/files?name=a.txt"),
            "not a type",
        ),
        (
            format!("/api/orders/{order}/files?name=..%2F"),
            "text/plain",
        ),
    ] {
        let reply = upload(&app, &token, "acme", &path, ty, b"abc");
        assert_eq!(reply.status, 422, "{path} {ty}: {}", reply.text());
    }
    expect(
        &upload(
            &app,
            &token,
            "acme",
            "/api/orders/999/files?name=a",
            "text/plain",
            b"a",
        ),
        404,
        "no such order",
    );
}

/// Puts acme on `free` with these limits.
fn limits(app: &TestApp, limits: Value) {
    let edited = app.admin(
        "PATCH",
        "/api/admin/plans/free",
        Some(json!({"limits": limits})),
    );
    expect(&edited, 200, "edit the free plan");
    let put = app.admin(
        "PUT",
        "/api/admin/tenants/acme/subscription",
        Some(json!({"plan": "free", "status": "active"})),
    );
    expect(&put, 200, "acme on free");
}

#[test]
fn the_plan_limits_each_file_and_the_storage_of_all() {
    let app = two_companies();
    let token = app.owner_token.clone();
    let order = new_order(&app, &token, "acme");
    limits(&app, json!({"file_size_mb": 1, "storage_mb": 2}));
    let path = format!("/api/orders/{order}/files?name=big.bin");
    // Declared too large: refused before the body, without 100 Continue.
    let mut c = app.server.connect();
    c.send(
        format!(
            "POST /t/acme{path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            (1 << 20) + 1
        )
        .as_bytes(),
    );
    let reply = c.reply();
    expect_error(&reply, 413, "payload_too_large", "over file_size_mb");
    assert!(reply.text().contains("1 MiB"), "{}", reply.text());
    // Sent chunked, it is stopped as it passes the limit, and nothing stays behind.
    let mut c = app.server.connect();
    c.send(
        format!(
            "POST /t/acme{path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
    );
    let piece = content(300_000, 9);
    for _ in 0..5 {
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(&piece);
        chunk.extend_from_slice(b"\r\n");
        if !c.try_send(&chunk) {
            break;
        }
    }
    expect_error(
        &c.reply(),
        413,
        "payload_too_large",
        "chunked over file_size_mb",
    );
    assert!(files_under(&tenant_dir(&app, "acme").join("files").join("tmp")).is_empty());
    // Exactly 1 MiB is a file of 1 MiB.
    let first = content(1 << 20, 1);
    expect(
        &upload(
            &app,
            &token,
            "acme",
            &path,
            "application/octet-stream",
            &first,
        ),
        201,
        "at the limit",
    );
    // The same bytes again take no more room.
    expect(
        &upload(
            &app,
            &token,
            "acme",
            &path,
            "application/octet-stream",
            &first,
        ),
        201,
        "the same content",
    );
    // A second content passes 2 MiB with the database file counted: quota_exceeded.
    let second = content(1 << 20, 2);
    let over = upload(
        &app,
        &token,
        "acme",
        &path,
        "application/octet-stream",
        &second,
    );
    expect_error(&over, 403, "quota_exceeded", "storage_mb");
    assert_eq!(over.json()["error"]["limit_name"], "storage_mb");
    let usage = get(&app, &token, "acme", "/api/subscription", &[]);
    assert_eq!(usage.json()["usage"]["storage_mb"], 2, "{}", usage.text());
    // globex, unlimited, takes it.
    let globex_order = new_order(&app, &token, "globex");
    expect(
        &upload(
            &app,
            &token,
            "globex",
            &format!("/api/orders/{globex_order}/files?name=big.bin"),
            "application/octet-stream",
            &second,
        ),
        201,
        "globex is unlimited",
    );
}

#[test]
fn concurrent_uploads_never_pass_the_storage_limit() {
    // Room for all eight uploads at once, from one client (whose share is half the places).
    let app = crate::support::spawn_app_full(
        |_| {},
        |http| {
            http.workers = 10;
            http.max_streaming = Some(16);
        },
    );
    app.create_tenant("acme", &[]);
    let app = std::sync::Arc::new(app);
    let token = app.owner_token.clone();
    let order = new_order(&app, &token, "acme");
    // Room, beside the tenant's database file, for 3 files of 900 KiB, never 4.
    limits(&app, json!({"storage_mb": 3}));
    let threads: Vec<_> = (0..8u8)
        .map(|seed| {
            let (app, token) = (app.clone(), token.clone());
            std::thread::spawn(move || {
                let bytes = content(900 << 10, seed + 10);
                let path = format!("/api/orders/{order}/files?name=f{seed}");
                upload(
                    &app,
                    &token,
                    "acme",
                    &path,
                    "application/octet-stream",
                    &bytes,
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let stored = statuses.iter().filter(|&&s| s == 201).count();
    assert!(
        stored == 3 && statuses.iter().all(|&s| s == 201 || s == 403),
        "{statuses:?}"
    );
    let conn = rusqlite::Connection::open(app.data.path().join("tenants").join(format!(
        "{}.db",
        app.app.catalog.by_slug("acme").unwrap().unwrap().id
    )))
    .unwrap();
    let used: i64 = conn
        .query_row(
            "SELECT (SELECT coalesce(sum(size), 0) FROM files)
                    + (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size())",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(used <= 3 << 20, "{used} bytes in use");
}

#[test]
fn removing_the_last_reference_removes_the_bytes() {
    let app = two_companies();
    let token = app.owner_token.clone();
    let (one, two) = (
        new_order(&app, &token, "acme"),
        new_order(&app, &token, "acme"),
    );
    let bytes = content(3000, 5);
    let sha = sha256(&bytes);
    let ids: Vec<i64> = [one, two]
        .iter()
        .map(|o| {
            let up = upload(
                &app,
                &token,
                "acme",
                &format!("/api/orders/{o}/files?name=same.bin"),
                "application/octet-stream",
                &bytes,
            );
            expect(&up, 201, "upload");
            up.json()["id"].as_i64().unwrap()
        })
        .collect();
    // Another member may not remove the owner's file without orders_edit.
    let (_, viewer) = app.member("viewer@acme.test", "acme", "viewer");
    let refused = app.on(
        &viewer,
        "acme",
        "DELETE",
        &format!("/api/files/{}", ids[0]),
        None,
    );
    assert!(matches!(refused.status, 403 | 404), "{}", refused.text());
    let removed = app.on(
        &token,
        "acme",
        "DELETE",
        &format!("/api/files/{}", ids[0]),
        None,
    );
    expect(&removed, 200, "delete one reference");
    assert!(
        blob(&app, "acme", &sha).exists(),
        "the other still refers to it"
    );
    let gone = app.on(
        &token,
        "acme",
        "DELETE",
        &format!("/api/orders/{two}"),
        None,
    );
    assert!(gone.status < 300, "{}", gone.text());
    assert!(
        !blob(&app, "acme", &sha).exists(),
        "the order took its file along"
    );
    expect(
        &get(&app, &token, "acme", &format!("/api/files/{}", ids[1]), &[]),
        404,
        "its row went by cascade",
    );
}

#[test]
fn purging_a_tenant_removes_its_files() {
    let app = two_companies();
    let token = app.owner_token.clone();
    let order = new_order(&app, &token, "acme");
    expect(
        &upload(
            &app,
            &token,
            "acme",
            &format!("/api/orders/{order}/files?name=a.txt"),
            "text/plain",
            b"hello",
        ),
        201,
        "upload",
    );
    let dir = tenant_dir(&app, "acme");
    assert!(dir.join("files").is_dir());
    expect(
        &app.admin("DELETE", "/api/admin/tenants/acme", None),
        200,
        "delete",
    );
    let purged = app.admin("POST", "/api/admin/tenants/acme/purge", None);
    expect(&purged, 200, "purge");
    assert!(!dir.exists(), "{} remains", dir.display());
}

/// VmRSS or VmHWM of a process, in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_200_mb_upload_leaves_the_servers_memory_flat() {
    use crate::backups_cli::{setup, EMAIL, PASSWORD};
    let data = setup(&["acme"]);
    let server = crate::support::spawn_serve(data.path(), &[], 1);
    let auth = crate::support::bearer_on(server.addr, EMAIL, PASSWORD);
    let made = crate::support::request_to(
        server.addr,
        "POST",
        "/t/acme/api/orders",
        &[("Authorization", &auth)],
        Some(&json!({"title": "Big", "customer_name": "B", "amount_minor": 1})),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let order = made.json()["id"].as_i64().unwrap();
    let pid = server.child.id();
    let send = |len: usize| -> (Reply, String) {
        let mut c = Client::connect(server.addr);
        c.send(
            format!(
                "POST /t/acme/api/orders/{order}/files?name=big.bin HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: {auth}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let mut hasher = Sha256::new();
        let mut block = vec![0u8; 1 << 20];
        let mut left = len;
        let mut n = 0u8;
        while left > 0 {
            let take = left.min(block.len());
            block.iter_mut().for_each(|b| *b = b.wrapping_add(n));
            n = n.wrapping_add(1);
            hasher.update(&block[..take]);
            c.send(&block[..take]);
            left -= take;
        }
        (c.reply(), hex::encode(hasher.finalize()))
    };
    // Warm up: the first upload opens the pool, makes the directories.
    let (warm, _) = send(1 << 20);
    assert_eq!(warm.status, 201, "{}", warm.text());
    let before = memory_kib(pid, "VmRSS:");
    let (reply, sha) = send(200 << 20);
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.json()["sha256"], sha);
    let peak = memory_kib(pid, "VmHWM:");
    // A buffered body would have taken 200 MB more; a streamed one takes a buffer.
    assert!(
        peak < before + 48 * 1024,
        "RSS {before} KiB before, peak {peak} KiB"
    );
    let stored = data
        .path()
        .join("tenants")
        .read_dir()
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path()
        .join("files")
        .join(&sha[..2])
        .join(&sha);
    assert_eq!(std::fs::metadata(stored).unwrap().len(), 200 << 20);
    let _ = std::io::stdout().flush();
}

#[test]
fn a_tenants_export_carries_its_files_and_no_others() {
    use std::io::Read;
    let app = two_companies();
    let token = app.owner_token.clone();
    let acme_bytes = content(4000, 21);
    let globex_bytes = content(4000, 22);
    for (slug, bytes) in [("acme", &acme_bytes), ("globex", &globex_bytes)] {
        let order = new_order(&app, &token, slug);
        let path = format!("/api/orders/{order}/files?name=scan.bin");
        expect(
            &upload(&app, &token, slug, &path, "application/octet-stream", bytes),
            201,
            "upload",
        );
    }
    let export = get(&app, &token, "acme", "/api/export", &[]);
    expect(&export, 200, "export");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(export.body)).unwrap();
    let mut entry = |name: &str| -> Option<Vec<u8>> {
        let mut e = archive.by_name(name).ok()?;
        let mut out = Vec::new();
        e.read_to_end(&mut out).unwrap();
        Some(out)
    };
    assert_eq!(
        entry(&format!("files/{}", sha256(&acme_bytes))),
        Some(acme_bytes.clone())
    );
    assert_eq!(entry(&format!("files/{}", sha256(&globex_bytes))), None);
    let manifest: Value = serde_json::from_slice(&entry("manifest.json").unwrap()).unwrap();
    assert_eq!(
        (
            manifest["files"].clone(),
            manifest["tables"]["files"].clone()
        ),
        (json!(1), json!(1))
    );
    let rows = String::from_utf8(entry("tables/files.jsonl").unwrap()).unwrap();
    assert!(rows.contains(&sha256(&acme_bytes)) && !rows.contains(&sha256(&globex_bytes)));
}

#[test]
fn a_backup_keeps_the_files_and_a_restore_brings_them_back() {
    use crate::backups::{back_up, restore};
    let app = two_companies();
    let token = app.owner_token.clone();
    let order = new_order(&app, &token, "acme");
    let bytes = content(6000, 31);
    let sha = sha256(&bytes);
    let up = upload(
        &app,
        &token,
        "acme",
        &format!("/api/orders/{order}/files?name=kept.bin"),
        "application/octet-stream",
        &bytes,
    );
    expect(&up, 201, "upload");
    let id = up.json()["id"].as_i64().unwrap();
    let backup = back_up(&app, "acme");
    assert_eq!(backup["files"], 1, "{backup}");
    let acme_id = app.app.catalog.by_slug("acme").unwrap().unwrap().id.clone();
    let kept = app
        .data
        .path()
        .join("backups")
        .join(&acme_id)
        .join("files")
        .join(&sha[..2])
        .join(&sha);
    assert_eq!(std::fs::read(&kept).unwrap(), bytes);
    // The file is deleted: its bytes leave the tenant, not the backup.
    expect(
        &app.on(&token, "acme", "DELETE", &format!("/api/files/{id}"), None),
        200,
        "delete",
    );
    assert!(!blob(&app, "acme", &sha).exists() && kept.exists());
    let restored = restore(&app, "acme", backup["file"].as_str().unwrap());
    expect(&restored, 200, "restore");
    let again = get(
        &app,
        &token,
        "acme",
        &format!("/api/files/{id}/download"),
        &[],
    );
    expect(&again, 200, "the file is back");
    assert_eq!(again.body, bytes);
    // globex never sees it.
    assert!(!blob(&app, "globex", &sha).exists());

    // Deleted again, and a later backup without it: retention that drops the first backup
    // drops the bytes no kept backup names.
    expect(
        &app.on(&token, "acme", "DELETE", &format!("/api/files/{id}"), None),
        200,
        "delete again",
    );
    use tenantd::tenancy::backup;
    let record = app.app.catalog.by_slug("acme").unwrap().unwrap();
    let later = backup["created_at"].as_i64().unwrap() + 3600;
    let newer = backup::backup_tenant(app.data.path(), &record, None, later).unwrap();
    assert_eq!(newer.files, 0);
    let policy = backup::Retention {
        keep: 1,
        ..Default::default()
    };
    let gone = backup::prune(app.data.path(), &acme_id, policy, later).unwrap();
    assert_eq!(gone, [backup["file"].as_str().unwrap()]);
    assert!(!kept.exists(), "no kept backup names the file");
}

#[test]
fn an_imported_export_brings_its_files_and_a_forged_one_is_refused() {
    let app = two_companies();
    let token = app.owner_token.clone();
    let order = new_order(&app, &token, "acme");
    let bytes = content(5000, 41);
    let sha = sha256(&bytes);
    let path = format!("/api/orders/{order}/files?name=kept.bin");
    expect(
        &upload(
            &app,
            &token,
            "acme",
            &path,
            "application/octet-stream",
            &bytes,
        ),
        201,
        "upload",
    );
    let export = get(&app, &token, "acme", "/api/export", &[]);
    expect(&export, 200, "export");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("acme.zip");
    std::fs::write(&archive, &export.body).unwrap();
    let out = app.cli(&[
        "tenants",
        "import",
        "copied",
        "--from",
        archive.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied = app.app.catalog.by_slug("copied").unwrap().unwrap();
    let kept = app
        .data
        .path()
        .join("tenants")
        .join(&copied.id)
        .join("files")
        .join(&sha[..2])
        .join(&sha);
    assert_eq!(std::fs::read(&kept).unwrap(), bytes);

    // The same archive with other bytes under the file's name: refused, nothing left behind.
    let forged = work.path().join("forged.zip");
    {
        use std::io::{Read, Write};
        let mut src = zip::ZipArchive::new(std::fs::File::open(&archive).unwrap()).unwrap();
        let mut dst = zip::ZipWriter::new(std::fs::File::create(&forged).unwrap());
        for i in 0..src.len() {
            let mut entry = src.by_index(i).unwrap();
            let name = entry.name().unwrap().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            if name.starts_with("files/") {
                // As long as the real file, other bytes.
                data = vec![b'x'; data.len()];
            }
            dst.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            dst.write_all(&data).unwrap();
        }
        dst.finish().unwrap();
    }
    let out = app.cli(&[
        "tenants",
        "import",
        "forged",
        "--from",
        forged.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("do not hash to its name"), "{stderr}");
    assert!(app.app.catalog.by_slug("forged").unwrap().is_none());
    let leftovers: Vec<_> = std::fs::read_dir(app.data.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("import-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn what_a_dead_process_left_in_tmp_goes_with_the_next_upload() {
    let app = two_companies();
    let token = app.owner_token.clone();
    let order = new_order(&app, &token, "acme");
    let path = format!("/api/orders/{order}/files?name=a.txt");
    expect(
        &upload(&app, &token, "acme", &path, "text/plain", b"one"),
        201,
        "upload",
    );
    let tmp = tenant_dir(&app, "acme").join("files").join("tmp");
    let stale = tmp.join("0123.part");
    let fresh = tmp.join("4567.part");
    for p in [&stale, &fresh] {
        std::fs::write(p, b"left behind").unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    expect(
        &upload(&app, &token, "acme", &path, "text/plain", b"two"),
        201,
        "upload",
    );
    assert!(!stale.exists(), "an hour old: a dead process's");
    assert!(fresh.exists(), "recent: perhaps an upload in progress");
}
